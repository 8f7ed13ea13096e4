"""The one base of the package's user-facing errors.

Every error that means "the input (spec, region, genome, tracks, VCF, model, store, query, service
request, client setup) is wrong" derives from :class:`ScreeningError` as well as from the built-in
type it always had (``ValueError``, ``RuntimeError``, …), so existing ``except ValueError`` code
keeps working. The CLI reports :data:`USER_ERRORS` as ``screening: error: <message>`` with exit
code 2, and the service answers them as the client's fault (4xx, or a failed job whose message is
the error's), without a traceback.
"""

from __future__ import annotations

__all__ = ["USER_ERRORS", "ScreeningError"]


class ScreeningError(Exception):
    """Base of every user-facing error of the package (bad input, not a bug)."""


#: What the CLI and the service report as the user's fault: the package's errors, and a missing file.
USER_ERRORS: tuple[type[BaseException], ...] = (ScreeningError, FileNotFoundError)
