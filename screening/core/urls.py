"""The one definition of "is this a URL" (rather than a local path).

A URL is ``scheme://…``. Whether ``file://`` counts depends on the question, so it is explicit:

* ``is_url(text)`` (``include_file=True``): any ``scheme://`` text, ``file://`` included - it is
  not a plain path (an input to stage through fsspec, a store path not to resolve against the
  working directory, a Ray address that already has a scheme);
* ``is_url(text, include_file=False)``: a *remote* location, one that needs fsspec or an object
  store (``s3://``, ``gs://``, ``https://``, …); ``file://`` is local.
"""

from __future__ import annotations

import os

__all__ = ["is_url"]


def is_url(text: str | os.PathLike, *, include_file: bool = True) -> bool:
    """Whether ``text`` is a URL (``scheme://…``); with ``include_file=False``, ``file://`` is not one."""
    text = os.fspath(text)
    return "://" in text and (include_file or not text.startswith("file://"))
