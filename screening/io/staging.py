"""Stage remote inputs (genome FASTA, bigWig tracks) once per node into a local cache.

pyfaidx and pyBigWig read local files, so an input given as a URL (``s3://``, ``gs://``,
``http(s)://``, ``file://``, any fsspec URL) is downloaded once per node into
``$SCREENING_CACHE_DIR/staged/<key>/<file name>`` (default ``~/.cache/screening``). The key
hashes the URL and the remote object's identity (ETag, size, modification time), so a
changed object is downloaded again and an unchanged one never is.

Concurrent workers on one node download once: the first takes an exclusive ``flock`` on
the entry's lock file (released by the kernel even if its process dies), downloads to a
temporary name, checks the size and renames it into place, then writes ``staged.json``
last; the others wait for the lock and find the entry complete. Plain local paths are
used where they are.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

from screening.store.location import resolve_storage_options

__all__ = ["CACHE_ENV", "StagingError", "stage", "staged_root"]

CACHE_ENV = "SCREENING_CACHE_DIR"
FASTA_SIDECARS = (".fai", ".gzi")
_BLOCK = 1 << 24  # 16 MiB copy buffer
_META = "staged.json"


class StagingError(OSError):
    """A remote input that cannot be found or downloaded; the message names the URL."""


def staged_root() -> Path:
    """The node-local folder of staged inputs: ``$SCREENING_CACHE_DIR/staged``.

    Without ``SCREENING_CACHE_DIR``, the package's other caches' root is used
    (``$SCREENING_CACHE``, else ``$XDG_CACHE_HOME/screening``, else ``~/.cache/screening``).
    """
    root = os.environ.get(CACHE_ENV) or os.environ.get("SCREENING_CACHE")
    if not root:
        root = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "screening")
    return Path(root).expanduser() / "staged"


def _identity(info: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies one version of a remote object, from an fsspec ``info`` record."""
    keys = {
        "etag": ("ETag", "etag", "md5Hash", "content_md5"),
        "size": ("size", "Size"),
        "mtime": ("LastModified", "last_modified", "mtime", "updated", "modified", "created"),
    }
    identity = {}
    for field, names in keys.items():
        value = next((info[name] for name in names if info.get(name) is not None), None)
        if value is not None:
            identity[field] = str(value)
    return identity


def _filesystem(url: str, storage_options: Mapping[str, Any] | None):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **resolve_storage_options(url, storage_options))
    except (ValueError, ImportError) as err:
        raise StagingError(f"{url}: cannot open this URL: {err}") from None


def _info(fs, path: str, url: str) -> dict[str, Any]:
    try:
        return fs.info(path)
    except FileNotFoundError:
        raise StagingError(f"{url} does not exist") from None
    except Exception as err:  # noqa: BLE001  (fsspec backends raise many types: name the URL)
        raise StagingError(f"{url}: cannot reach it: {type(err).__name__}: {err}") from None


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on one cache entry, across processes and threads of this node."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _download(fs, path: str, target: Path, url: str, size: int | None) -> None:
    """Copy one remote object to ``target`` through a temporary name (never half a file there)."""
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        with fs.open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, _BLOCK)
        if size is not None and tmp.stat().st_size != size:
            raise StagingError(f"{url}: downloaded {tmp.stat().st_size:,} bytes, expected {size:,}")
        os.replace(tmp, target)
    except StagingError:
        raise
    except FileNotFoundError:
        raise StagingError(f"{url} does not exist") from None
    except Exception as err:  # noqa: BLE001
        raise StagingError(f"{url}: download failed: {type(err).__name__}: {err}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _entry(url: str, identity: Mapping[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps([url, identity], sort_keys=True).encode()).hexdigest()[:24]
    return staged_root() / key


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] or "input"


def _size(info: Mapping[str, Any]) -> int | None:
    size = info.get("size")
    return int(size) if isinstance(size, (int, float)) else None


def stage(url: str, storage_options: Mapping[str, Any] | None = None, sidecars: tuple[str, ...] = ()) -> Path:
    """The local copy of ``url``, downloaded into the node cache on first use.

    Parameters
    ----------
    url
        Any fsspec URL of a file, or of a folder (its files are staged, not sub-folders).
    storage_options
        fsspec options; S3 credentials and ``AWS_ENDPOINT_URL`` otherwise come from the
        environment.
    sidecars
        Suffixes of companion files fetched too when they exist (``.fai``, ``.gzi`` of a
        FASTA), into the same folder so readers find them beside the file.

    Returns
    -------
    pathlib.Path
        The staged file (or folder).

    Raises
    ------
    StagingError
        If the object does not exist or cannot be downloaded (the message names the URL).
    """
    fs, path = _filesystem(url, storage_options)
    info = _info(fs, path, url)
    folder = info.get("type") == "directory"
    files = _folder_listing(fs, path, url) if folder else {_name(path): info}
    identity = {name: _identity(item) for name, item in files.items()}
    entry = _entry(url, identity)
    target = entry / _name(path) if folder else entry / next(iter(files))
    if (entry / _META).is_file():
        return target
    with _locked(entry):
        if not (entry / _META).is_file():  # another process may have finished while we waited
            _fill(fs, path, url, entry, target, files, folder, sidecars)
    return target


def _folder_listing(fs, path: str, url: str) -> dict[str, dict[str, Any]]:
    try:
        listing = fs.ls(path, detail=True)
    except Exception as err:  # noqa: BLE001
        raise StagingError(f"{url}: cannot list the folder: {type(err).__name__}: {err}") from None
    files = {_name(item["name"]): item for item in listing if item.get("type") == "file"}
    if not files:
        raise StagingError(f"{url} is an empty folder")
    return dict(sorted(files.items()))


def _fill(fs, path: str, url: str, entry: Path, target: Path, files, folder: bool, sidecars) -> None:
    """Download into the locked entry; ``staged.json`` is written last and marks it complete."""
    if folder:
        target.mkdir(parents=True, exist_ok=True)
        for name, item in files.items():
            _download(fs, item["name"], target / name, f"{url.rstrip('/')}/{name}", _size(item))
    else:
        _download(fs, path, target, url, _size(files[target.name]))
    fetched = []
    for suffix in sidecars:  # after the file: an index must not be older than its data
        try:
            side_info = fs.info(path + suffix)
        except FileNotFoundError:
            continue  # built locally by the reader
        except Exception as err:  # noqa: BLE001
            raise StagingError(f"{url}{suffix}: cannot reach it: {type(err).__name__}: {err}") from None
        _download(fs, path + suffix, target.with_name(target.name + suffix), url + suffix, _size(side_info))
        fetched.append(suffix)
    meta = {"url": url, "files": {name: _identity(item) for name, item in files.items()}, "sidecars": fetched}
    tmp = entry / f"{_META}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, entry / _META)
