"""Checks of output paths before anything is opened or written.

A file written to a folder that is read-only, that is a file itself, or that does not
exist fails late and in unhelpful ways (a C library given an unwritable path may even
crash the process), so every output path is checked first and refused with a message
that names it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from screening.core.errors import ScreeningError
from screening.core.urls import is_url

__all__ = ["OutputPathError", "check_output_file", "check_store_path", "is_disk_full"]


class OutputPathError(ScreeningError, ValueError):
    """An output path that cannot be written; the message names it (and the spec field)."""


def _writable_dir(directory: Path) -> bool:
    """Whether files can be created in ``directory``.

    Root passes ``os.access`` everywhere but on a read-only mount, so for root the mode bits
    decide too: a folder chmod-ed read-only (or ``/proc``) is treated as read-only.
    """
    if not os.access(directory, os.W_OK | os.X_OK):
        return False
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return False
    except OSError:
        return False
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return bool(stat.S_IMODE(directory.stat().st_mode) & 0o222)
    return True


def _existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of ``path`` that exists (``path``'s parents are created later)."""
    for candidate in path.parents:
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def _check_folder(path: Path, what: str) -> None:
    """The folder ``path`` goes in exists (or can be created) and can be written."""
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise OutputPathError(f"{what} {path}: {ancestor} is a file, so nothing can be created under it")
    if not _writable_dir(ancestor):
        raise OutputPathError(f"{what} {path}: folder {ancestor} is not writable (read-only file system or permissions)")


def check_output_file(path: str | os.PathLike, what: str = "output") -> Path:
    """Refuse an output file path that cannot be written, before anything opens it.

    Parameters
    ----------
    path
        The file to write (through a temporary sibling, then renamed).
    what
        How messages name the path, e.g. ``"output"`` or ``"export output"``.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OutputPathError
        If the path is a directory, or its folder is a file, read-only or not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a directory; give a file name (e.g. {path / 'scores.bw'})")
    if path.exists() and not path.is_file():
        raise OutputPathError(f"{what} {path} exists and is not a regular file")
    _check_folder(path, what)
    return path


def check_store_path(store: str, what: str = "output.store") -> None:
    """Refuse a local result-store path that cannot be created or written (URLs are left alone).

    Raises
    ------
    OutputPathError
        If the store path is a file, lies under a file, or its folder is read-only.
    """
    if is_url(store):
        return
    path = Path(store)
    if path.exists():
        if not path.is_dir():
            raise OutputPathError(f"{what} {path} is a file, not a result store (a folder); choose another path")
        if not _writable_dir(path):
            raise OutputPathError(f"{what} {path} is not writable (read-only file system or permissions)")
        return
    _check_folder(path, what)


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or what it wraps: a Ray task error's cause, a chained exception) is ENOSPC/EDQUOT."""
    seen: set[int] = set()
    todo: list[BaseException] = [err]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        linked = (getattr(current, "cause", None), current.__cause__, current.__context__)
        todo += [e for e in linked if isinstance(e, BaseException)]
    return False
