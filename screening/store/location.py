"""Where a result store lives: a local directory or any fsspec URL (``s3://``, ``gs://``, …).

:class:`Location` is the one place a store path is interpreted. Local paths (and
``file://`` URLs) are served by zarr's ``LocalStore``; every other URL by zarr's
``FsspecStore``. Object stores have no rename, so the store module builds remote stores
in place and writes the root attributes last (see ``docs/store.md``).

Storage options come from, in increasing priority: the environment (credentials, region
and ``AWS_ENDPOINT_URL`` are read by botocore itself on every node; ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL`` are also passed explicitly so that every fsspec S3 client agrees) and
the spec's ``output.storage_options``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from screening.core.urls import is_url

__all__ = ["Location", "is_remote", "redact_options", "resolve_storage_options"]

_SECRET_WORDS = ("key", "secret", "token", "password", "credential")


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URL other than ``file://`` (so it needs fsspec)."""
    return is_url(path, include_file=False)


def resolve_storage_options(url: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """fsspec storage options of ``url``: the environment's S3 endpoint under the given ones.

    Parameters
    ----------
    url
        An fsspec URL.
    options
        Explicit options (``output.storage_options``); they win over the environment.
    """
    resolved = json.loads(json.dumps(dict(options or {})))  # deep copy, plain types
    if url.split("://", 1)[0] in {"s3", "s3a"}:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        client_kwargs = resolved.setdefault("client_kwargs", {})
        if endpoint and "endpoint_url" not in resolved and "endpoint_url" not in client_kwargs:
            client_kwargs["endpoint_url"] = endpoint
        if not client_kwargs:
            del resolved["client_kwargs"]
    return resolved


def redact_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of storage options with secret-looking values replaced by ``"***"`` (for provenance)."""

    def redact(value: Any, key: str = "") -> Any:
        if isinstance(value, Mapping):
            return {k: redact(v, str(k)) for k, v in value.items()}
        if any(word in key.lower() for word in _SECRET_WORDS) and value is not None:
            return "***"
        return value

    return redact(dict(options or {}))


class Location:
    """A store's place: a local directory or a remote fsspec prefix.

    Parameters
    ----------
    path
        A local path, a ``file://`` URL or any fsspec URL.
    storage_options
        Options for the fsspec filesystem (ignored for local paths).
    """

    def __init__(self, path: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> None:
        text = os.fspath(path)
        self.remote = is_remote(text)
        if self.remote:
            self.url = text.rstrip("/")
            self.storage_options = resolve_storage_options(self.url, storage_options)
        else:
            text = text[len("file://") :] if text.startswith("file://") else text
            self.url = str(Path(text).expanduser().absolute())
            self.storage_options = {}
        self._fs = None

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Location({self.url!r})"

    @property
    def local_path(self) -> Path:
        """The directory of a local store."""
        assert not self.remote, "local_path of a remote location"
        return Path(self.url)

    @property
    def fs(self):
        """The synchronous fsspec filesystem of a remote location (listing, reading, deleting)."""
        if self._fs is None:
            import fsspec

            self._fs, self._root = fsspec.core.url_to_fs(self.url, **self._options())
        return self._fs

    @property
    def root(self) -> str:
        """The remote prefix without the protocol, as the filesystem names it."""
        self.fs  # noqa: B018  (sets _root)
        return self._root

    def zarr_store(self, read_only: bool):
        """A zarr store on this location: ``LocalStore`` or ``FsspecStore``."""
        from zarr.storage import FsspecStore, LocalStore

        if not self.remote:
            return LocalStore(self.local_path, read_only=read_only)
        return FsspecStore.from_url(self.url, storage_options=self._options(), read_only=read_only)

    def _options(self) -> dict[str, Any]:
        """The filesystem's options: :attr:`storage_options`, and for S3 one GET per whole-object read."""
        options = dict(self.storage_options)
        if self.url.split("://", 1)[0] in {"s3", "s3a"}:
            # s3fs asks an object's size (a HEAD) before every whole-object GET, to split objects larger
            # than its block size (50 MB) into concurrent ranged GETs; a store's objects are far smaller
            # (shards of about 4 MiB), so that HEAD doubled the requests of every read.
            options.setdefault("max_concurrency", 1)
        return options

    def read_json(self, name: str) -> Any | None:
        """The JSON object ``<location>/<name>``, or ``None`` when it does not exist (remote only)."""
        fs = self.fs
        fs.invalidate_cache()
        try:
            raw = fs.cat_file(f"{self.root}/{name}")
        except FileNotFoundError:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def has_objects(self) -> bool:
        """Whether anything exists under the remote prefix."""
        fs = self.fs
        fs.invalidate_cache()
        try:
            return bool(fs.ls(self.root, detail=False))
        except FileNotFoundError:
            return False

    def remove(self) -> None:
        """Delete everything under the remote prefix (missing prefix: nothing to do)."""
        fs = self.fs
        fs.invalidate_cache()
        try:
            fs.rm(self.root, recursive=True)
        except FileNotFoundError:
            pass
        fs.invalidate_cache()
