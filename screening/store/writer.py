"""The result store, writer side: one Zarr v3 store per screen.

The layout is specified in ``docs/store.md``. In short: the driver builds every group,
array and coordinate up front (locally into a temporary sibling path that is renamed into
place; on an object store such as ``s3://`` in place, with the root attributes written last).
A *work unit* is one chunk ``(chrom, analysis, k)``. In a format 3 store workers write nothing:
they hand each unit's scores (and kept maps) to the driver's :class:`BlockWriter`, the one writer
of every shard; in stores of formats 1-2 each unit writes its own objects. No two writers ever
touch the same object.

All coordinates are 0-based, half-open.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
import warnings
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import zarr
import zarr.errors
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import MemoryStore

from screening.store.layout import (
    ATTRS_KEY,
    BUILDING_KEY,
    CHUNK_DIM,
    COORD_CHUNK,
    COORDS,
    DIGEST,
    DIM,
    DONE,
    FORMAT_VERSION,
    HIT_INDEX,
    HIT_K,
    HIT_VALUE,
    TOP_DELTA,
    TOP_INDEX,
    DamagedChunkError,
    GroupLayout,
    StoreError,
    StoreNotFoundError,
    _check_layouts,
    _chunk_slice,
    _is_damage,
    _remote,
    _remote_root,
    screening_attrs,
    as_location,
    block_units,
    check_format,
    coord_index,
    inner_units,
    map_units,
    regular_coords,
    read_checked,
    read_store_attrs,
    stored_chunks,
    zarr_store,
)
from screening.store.blocks import FLUSH_S, MAP_FLUSH_S, BlockWriter, UnitRecord, _Group
from screening.store.location import Location, redact_options

__all__ = [
    "FORMAT_VERSION",
    "BlockWriter",
    "DamagedChunkError",
    "GroupLayout",
    "ResultStore",
    "UnitRecord",
    "StoreError",
    "StoreNotFoundError",
    "create_store",
    "open_or_create_store",
    "read_checked",
    "read_store_attrs",
]  # the layout's names (GroupLayout, errors, FORMAT_VERSION, read_store_attrs …) live in screening.store.layout


def _codecs() -> tuple:
    """Compressors of every array of a new store: zarr's default zstd, then a crc32c checksum that
    zarr verifies whenever it decodes a chunk (so a flipped bit is an error, not a wrong value)."""
    return (ZstdCodec(level=0), Crc32cCodec())


def _jsonable(value: Any, what: str) -> Any:
    """Round-trip through JSON so attrs hold plain types (numpy scalars and paths allowed)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    try:
        return json.loads(json.dumps(value, default=default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} cannot be stored as JSON: {exc}") from exc


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _state(path: Path | Location) -> str:
    """``absent``, ``empty`` (an empty directory), ``screening``, ``partial`` (a remote build that
    never finished) or ``foreign``."""
    if isinstance(path, Location):
        if path.remote:
            return _remote_state(path)
        path = path.local_path
    if not path.exists() and not path.is_symlink():
        return "absent"
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return "empty"
    return "screening" if path.is_dir() and read_store_attrs(path) is not None else "foreign"


def _remote_state(location: Location) -> str:
    try:
        meta = _remote_root(location)
    except StoreNotFoundError:
        return "absent"
    if meta is None:
        return "foreign"
    attrs = meta.get("attributes") or {}
    if screening_attrs(attrs) is not None:
        return "screening"
    return "partial" if BUILDING_KEY in attrs else "foreign"


# --------------------------------------------------------------------------- creation


def _build(
    target: Path | Location | Store, spec: dict, spec_sha256: str, provenance: dict, layouts: list[GroupLayout]
) -> None:
    chromosomes: dict[str, int] = {}
    analyses: list[str] = []
    for layout in layouts:
        chromosomes.setdefault(layout.chrom, layout.chrom_length)
        if layout.analysis not in analyses:
            analyses.append(layout.analysis)
    attrs = {
        "format_version": FORMAT_VERSION,
        "spec": _jsonable(_redacted_spec(spec), "spec"),
        "spec_sha256": str(spec_sha256),
        "provenance": _jsonable(provenance, "provenance"),
        "analyses": analyses,
        "chromosomes": chromosomes,
        "complete": False,
    }
    building = {BUILDING_KEY: {"started": _now(), "id": uuid.uuid4().hex}}
    store = target if isinstance(target, Store) else zarr_store(target, read_only=False)
    root = zarr.open_group(store, mode="w-", attributes=building)
    for chrom, length in chromosomes.items():
        root.create_group(chrom, attributes={"chrom": chrom, "length": length})
    for layout in layouts:
        _write_layout(root, layout)
    if FORMAT_VERSION >= 3:
        # Group and array metadata never change after creation, so the root's zarr.json can hold them
        # all: one read opens the store (xarray.open_zarr does not warn), and on an object store
        # it saves a request per node. Reopened so that the attributes below keep them.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)  # "not part of the v3 spec" note
            zarr.consolidate_metadata(root.store_path.store)
        root = zarr.open_group(store, mode="r+")
    # Last: the root attributes turn the prefix into a result store. On an object store (no
    # rename) this one PUT of zarr.json is what makes the store appear, complete.
    root.attrs.put({ATTRS_KEY: attrs})


def _redacted_spec(spec: dict) -> dict:
    """The spec with secret-looking ``output.storage_options`` values hidden (it is stored)."""
    output = spec.get("output") if isinstance(spec, dict) else None
    if not isinstance(output, dict) or not output.get("storage_options"):
        return spec
    return {**spec, "output": {**output, "storage_options": redact_options(output["storage_options"])}}


def _coord_chunk(layout: GroupLayout) -> int:
    """Perturbations per chunk of a coordinate (and label) array: whole work units, about
    ``COORD_CHUNK`` rows, no more than the group holds.

    Coordinates are written once, by the driver, and read whole (a query's binary search, a
    resume's layout check), so they need no chunk per unit: chr1's 246,858 1-kb deletions are
    2 chunks per array instead of 15,429 16-row chunks inside shards (whose decoding made every
    cold query cost seconds).
    """
    units = min(max(1, layout.n_chunks), max(1, COORD_CHUNK // layout.chunk_size))
    return layout.chunk_size * units


def _write_layout(root: zarr.Group, layout: GroupLayout) -> None:
    attrs = layout.group_attrs()
    maps = 0  # format 3 with kept maps: units per top_delta shard (0: each unit writes its own chunks)
    if FORMAT_VERSION >= 3:
        attrs.update(block_units=block_units(layout), hit_k=HIT_K)
        maps = map_units(layout, attrs["block_units"])
        if maps:
            attrs["map_units"] = maps
        regular = regular_coords(layout.start, layout.end)
        if regular is not None:  # tiled kinds: readers compute start/end instead of reading them
            attrs["regular"] = regular
        elif layout.n:  # irregular (variants …): a query reads only the coordinate chunks it overlaps
            attrs["coord_index"] = coord_index(layout.start, layout.end, _coord_chunk(layout))
    attrs = _jsonable(attrs, f"params of {layout.chrom}/{layout.analysis}")
    group = root[layout.chrom].create_group(layout.analysis, attributes=attrs)
    checksums = FORMAT_VERSION >= 2  # a format 1 store (tests of old stores) has neither
    codecs = {"compressors": _codecs()} if checksums else {}  # format 1 stores: zarr's default zstd
    # Coordinates and labels are written once, here, in large chunks of whole units: a
    # genome-scale screen needs a few objects per coordinate, and reading one whole is fast.
    # (Stores of earlier releases hold them in shards of unit-sized chunks; read the same way.)
    coord_chunks = (_coord_chunk(layout),)
    for name in COORDS:
        arr = group.create_array(
            name,
            shape=(layout.n,),
            chunks=coord_chunks,
            dtype="int64",
            fill_value=0,
            dimension_names=[DIM],
            **codecs,
        )
        if layout.n:
            arr[:] = getattr(layout, name)
    for name, values in layout.labels.items():
        text = values.dtype.kind in "USO"
        arr = group.create_array(
            name,
            shape=(layout.n,),
            chunks=coord_chunks,
            dtype=str if text else values.dtype,
            fill_value="" if text else 0,
            dimension_names=[DIM],
            **codecs,
        )
        if layout.n:
            arr[:] = values.astype(str) if text else values
    grouped = FORMAT_VERSION >= 3
    block = block_units(layout) if grouped else 1
    if grouped:  # plain xarray.open_zarr then shows start/end/labels as coordinates of every score
        score_attrs = {"coordinates": " ".join([*COORDS, *sorted(layout.labels)])}
    for score in layout.scores:
        dims = layout.dims_of(score)
        extra = tuple(layout.extra_dims[d] for d in dims)
        # Format 3: one shard per block of units (an object-store-sized object), written whole by the
        # driver alone; inner chunks of up to INNER_UNITS units, so a small query decodes little.
        rows = layout.chunk_size * (inner_units(block) if grouped else 1)
        sharding = {"shards": (layout.chunk_size * block, *extra), "attributes": score_attrs} if grouped else {}
        group.create_array(
            score,
            shape=(layout.n, *extra),
            chunks=(rows, *extra),
            dtype="float32",
            fill_value=np.nan,
            dimension_names=[DIM, *dims],
            **codecs,
            **sharding,
        )
    keep, n_bins = layout.top_maps
    if keep:  # chunk k's top-K maps are rows [k·K, (k+1)·K)
        # With map_units (format 3) the driver writes them: top_index one chunk per block (with the
        # block's scores), top_delta one shard of `maps` units (inner chunks of one unit, read by range).
        # Otherwise the unit that owns chunk k writes its own chunks.
        rows = layout.n_chunks * keep
        group.create_array(
            TOP_INDEX,
            shape=(rows,),
            chunks=(keep * block if maps else keep,),
            dtype="int64",
            fill_value=-1,
            dimension_names=["top"],
            **codecs,
        )
        group.create_array(
            TOP_DELTA,
            shape=(rows, n_bins, n_bins),
            chunks=(keep, n_bins, n_bins),
            dtype="float32",
            fill_value=np.nan,
            dimension_names=["top", "row", "col"],
            **codecs,
            **({"shards": (keep * maps, n_bins, n_bins)} if maps else {}),
        )
    # Format 3: one chunk of flags (and digests) per block, written by the driver alone; earlier
    # formats: one chunk per flag, so that each unit (worker) writes its own.
    group.create_array(
        DONE,
        shape=(layout.n_chunks,),
        chunks=(block,),
        dtype="uint8",
        fill_value=0,
        dimension_names=[CHUNK_DIM],
        **codecs,
    )
    if checksums:  # each unit's digest, next to its flag (see ResultStore.verify)
        group.create_array(
            DIGEST,
            shape=(layout.n_chunks,),
            chunks=(block,),
            dtype="uint32",
            fill_value=0,
            dimension_names=[CHUNK_DIM],
            **codecs,
        )
    if grouped:  # each block's HIT_K largest values per score, written with its flags
        rows, width = -(-layout.n_chunks // block) * HIT_K, len(layout.scores)
        group.create_array(
            HIT_INDEX,
            shape=(rows, width),
            chunks=(HIT_K, width),
            dtype="int64",
            fill_value=-1,
            dimension_names=["hit", "score"],
            **codecs,
        )
        group.create_array(
            HIT_VALUE,
            shape=(rows, width),
            chunks=(HIT_K, width),
            dtype="float32",
            fill_value=np.nan,
            dimension_names=["hit", "score"],
            **codecs,
        )


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f"{path.name}.{tag}-{uuid.uuid4().hex[:12]}")


def _upload(location: Location, spec: dict, spec_sha256: str, provenance: dict, layouts: list[GroupLayout]) -> None:
    """Build the store in memory, then PUT its objects: the building marker's root first, every other
    object next (concurrently), the real root last. Building through zarr on the object store itself
    costs several existence checks per node (hundreds of requests for a small store); this costs one
    PUT per object."""
    memory = MemoryStore()
    _build(memory, spec, spec_sha256, provenance, layouts)
    remote = location.zarr_store(read_only=False)
    prototype = default_buffer_prototype()

    async def copy() -> None:
        keys = [key async for key in memory.list()]
        blobs = {key: await memory.get(key, prototype) for key in keys}
        root = blobs.pop("zarr.json")
        marker = {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {BUILDING_KEY: {"started": _now(), "id": uuid.uuid4().hex}},
        }
        await remote.set("zarr.json", prototype.buffer.from_bytes(json.dumps(marker).encode()))
        pending = list(blobs.items())
        for i in range(0, len(pending), 64):  # bounded concurrency
            await asyncio.gather(*(remote.set(key, blob) for key, blob in pending[i : i + 64]))
        await remote.set("zarr.json", root)

    sync(copy())


def _create_remote(
    location: Location, spec: dict, spec_sha256: str, provenance: dict, layouts: list[GroupLayout], state: str
) -> ResultStore:
    """Build in place on an object store (no rename there); the root attributes go last.

    A replaced store or the leftovers of a build that never finished are deleted first; a
    failed build deletes what it wrote.
    """
    if state in {"screening", "partial"}:
        _remote(location, "delete the old result store", location.remove)
    try:
        _remote(location, "write the result store", lambda: _upload(location, spec, spec_sha256, provenance, layouts))
    except BaseException:
        try:
            location.remove()
        except Exception:  # noqa: BLE001  best effort: the build error is the one to report
            pass
        raise
    return ResultStore(location)


def _create(
    path: Path | Location,
    spec: dict,
    spec_sha256: str,
    provenance: dict,
    layouts: list[GroupLayout],
    replace: bool,
) -> ResultStore:
    """Build into a sibling temp path, then rename; ``replace`` swaps out an existing store."""
    layouts = _check_layouts(layouts)
    if isinstance(path, Location):
        if path.remote:
            return _create_remote(path, spec, spec_sha256, provenance, layouts, _state(path))
        path = path.local_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "partial")
    old: Path | None = None
    try:
        _build(tmp, spec, spec_sha256, provenance, layouts)
        if replace and _state(path) == "screening":
            old = _sibling(path, "old")
            os.rename(path, old)
        try:
            # Atomic on POSIX; succeeds over an empty directory, fails over a non-empty one.
            os.rename(tmp, path)
        except OSError as exc:
            if old is not None:
                os.rename(old, path)
                old = None
            raise StoreError(f"{path} appeared while the result store was being created: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return ResultStore(path)


def create_store(
    path: str | os.PathLike,
    spec: dict,
    spec_sha256: str,
    provenance: dict,
    layouts: list[GroupLayout],
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> ResultStore:
    """Create a new result store with every group, array and coordinate in place.

    A local store is built at ``<path>.partial-<id>`` and renamed to ``path`` at the end, so a
    failure never leaves a half-built store at ``path``. On an object store (any fsspec URL,
    e.g. ``s3://bucket/screen.zarr``) it is built in place and its root attributes are written
    last: until then readers do not see a result store there.

    Parameters
    ----------
    path
        Where the store goes (a local path or an fsspec URL); must not exist (an empty
        directory is fine).
    spec
        The validated screen spec, as JSON-compatible data.
    spec_sha256
        Hash of the spec's science fields; decides whether a later run may resume.
    provenance
        Versions, model, genome and track checksums (see ``docs/store.md``).
    layouts
        One :class:`GroupLayout` per ``(chrom, analysis)``; order sets the order of
        ``chromosomes`` and ``analyses`` in the root attributes.
    storage_options
        fsspec options for a URL (credentials and endpoint otherwise come from the environment).

    Returns
    -------
    ResultStore

    Raises
    ------
    StoreError
        If ``path`` exists (and is not an empty directory), a layout is invalid or the object
        store cannot be written (the message names the URL).
    """
    location = as_location(path, storage_options)
    state = _state(location)
    if state not in {"absent", "empty", "partial"}:
        raise StoreError(f"{location} already exists; use open_or_create_store to resume or overwrite it")
    return _create(location, spec, spec_sha256, provenance, layouts, replace=False)


def open_or_create_store(
    path: str | os.PathLike,
    spec: dict,
    spec_sha256: str,
    provenance: dict,
    layouts: list[GroupLayout],
    *,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    verify: bool = False,
) -> tuple[ResultStore, bool]:
    """Create a result store, or reopen one written by the same spec to resume it.

    Parameters
    ----------
    path, spec, spec_sha256, provenance, layouts
        As for :func:`create_store`.
    overwrite
        Replace an existing *result store* (never any other directory). A local store is
        built first, so a failure leaves the old one in place; on an object store the old one
        is deleted first (there is no rename).
    storage_options
        fsspec options for a URL.
    verify
        When resuming, first check every done unit with :meth:`ResultStore.verify` (damaged ones
        lose their flag and are recomputed; what was found is in ``store.damaged``).

    Returns
    -------
    store : ResultStore
    resumed : bool
        ``True`` when an existing store of the same spec was reopened.

    Raises
    ------
    StoreError
        If ``path`` holds something that is not a result store, a store of another spec, or a
        store of the same spec whose layout differs. The existing store is never modified.
    """
    local = as_location(path, storage_options)
    state = _state(local)
    if state == "foreign":
        raise StoreError(
            f"{local} exists and is not a screening result store; refusing to touch it (choose another output path)"
        )
    if state in {"absent", "empty", "partial"}:  # partial: a remote build that died; rebuilt
        return _create(local, spec, spec_sha256, provenance, layouts, replace=False), False
    if overwrite:
        return _create(local, spec, spec_sha256, provenance, layouts, replace=True), False
    attrs = read_store_attrs(local)
    assert attrs is not None  # _state said "screening"
    check_format(attrs, local)
    if attrs.get("spec_sha256") != spec_sha256:
        stored_name = (attrs.get("spec") or {}).get("name", "?")
        raise StoreError(
            f"{local} belongs to another screen spec (stored spec {stored_name!r}, "
            f"sha256 {attrs.get('spec_sha256')}; this spec {spec.get('name', '?')!r}, sha256 {spec_sha256}). "
            "Write to another output path, or pass --overwrite to replace it."
        )
    store = ResultStore(local)
    layouts = _check_layouts(layouts)
    if verify:  # before the layout check, which reads coordinates that verify may rewrite
        store.damaged = store.verify(layouts)
    store.check_layouts(layouts)
    return store, True


# --------------------------------------------------------------------------- the store handle


def _digest(parts: Iterable[np.ndarray]) -> int:
    """crc32 over the bytes of a unit's arrays, in order: the unit's record of what it wrote."""
    value = 0
    for part in parts:
        value = zlib.crc32(np.ascontiguousarray(part).tobytes(), value)
    return value


def _read_flags(flags: zarr.Array) -> tuple[np.ndarray, set[int]]:
    """``chunk_done`` as booleans, and the chunks whose flag cannot be decoded (read as not done)."""
    try:
        return flags[:] != 0, set()
    except Exception as err:  # noqa: BLE001
        if not _is_damage(err):
            raise
    done, damaged = np.zeros(flags.shape[0], dtype=bool), set()
    for k in range(flags.shape[0]):
        try:
            done[k] = bool(flags[k])
        except Exception as err:  # noqa: BLE001
            if not _is_damage(err):
                raise
            damaged.add(k)
    return done, damaged


def _delete_chunk(array: zarr.Array, k: int) -> None:
    """Remove chunk ``k`` (along the first dimension) of ``array`` without reading it; it then reads
    as the fill value, and a later partial write of it does not have to decode damaged bytes."""
    key = array.metadata.encode_chunk_key((k, *[0] * (array.ndim - 1)))
    sync(array.store_path.store.delete(f"{array.store_path.path}/{key}"))


def _delete_chunks(array: zarr.Array) -> None:
    """Remove every chunk (or shard) object of ``array``, keeping its metadata."""
    prefix = array.metadata.encode_chunk_key((0,) * array.ndim).split("/")[0]
    sync(array.store_path.store.delete_dir(f"{array.store_path.path}/{prefix}"))


class ResultStore:
    """Picklable handle on a result store, for the driver and for Ray workers.

    Holds only the path; Zarr handles are opened lazily in each process and dropped when
    pickled. Workers call :meth:`write_chunk` only; root attributes are written by the
    driver alone (:meth:`mark_complete`).

    Parameters
    ----------
    path
        A result store made by :func:`create_store` / :func:`open_or_create_store` (a local
        path or an fsspec URL).
    storage_options
        fsspec options of a URL; each process adds its own environment's (see
        :mod:`screening.store.location`).
    """

    def __init__(self, path: str | os.PathLike | Location, storage_options: Mapping[str, Any] | None = None) -> None:
        self._location = as_location(path, storage_options)
        self.path = str(self._location)
        self.storage_options = dict(self._location.storage_options)
        self._root: zarr.Group | None = None
        self._groups: dict[tuple[str, str], _Group] = {}
        self._attrs: dict[str, Any] | None = None
        self._group_keys: list[tuple[str, str]] | None = None
        self.damaged: list[str] = []  # what the last verify() found and cleared

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state.get("storage_options"))

    def __repr__(self) -> str:
        return f"ResultStore({self.path!r})"

    # -- internals
    def _open_root(self) -> zarr.Group:
        if self._root is None:
            path = self._location
            attrs = read_store_attrs(path)
            if attrs is None:
                raise StoreError(f"{path} is not a screening result store")
            check_format(attrs, path)
            self._root = zarr.open_group(zarr_store(path, read_only=False), mode="r+", zarr_format=3)
            self._attrs = attrs
        return self._root

    def _group(self, chrom: str, analysis: str) -> _Group:
        key = (chrom, analysis)
        if key not in self._groups:
            root = self._open_root()
            try:
                group = root[f"{chrom}/{analysis}"]
            except KeyError:
                raise StoreError(
                    f"{self.path} has no group {chrom}/{analysis} "
                    f"(chromosomes: {list(self._static_attrs['chromosomes'])}, "
                    f"analyses: {self._static_attrs['analyses']})"
                ) from None
            self._groups[key] = _Group(group, list(group.attrs["scores"]))
        return self._groups[key]

    @property
    def _static_attrs(self) -> dict[str, Any]:
        self._open_root()
        assert self._attrs is not None
        return self._attrs

    # -- public
    @property
    def attrs(self) -> dict[str, Any]:
        """The root ``screening`` attributes, read fresh."""
        self._open_root()
        attrs = read_store_attrs(self._location)
        assert attrs is not None
        return attrs

    def groups(self) -> list[tuple[str, str]]:
        """Every ``(chrom, analysis)`` group, in chromosome then analysis order."""
        if self._group_keys is None:
            root = self._open_root()
            attrs = self._static_attrs
            self._group_keys = [
                (chrom, analysis)
                for chrom in attrs["chromosomes"]
                for analysis in attrs["analyses"]
                if analysis in root[chrom]
            ]
        return list(self._group_keys)

    def layout(self, chrom: str, analysis: str) -> GroupLayout:
        """The :class:`GroupLayout` of one group, read back from the store."""
        group = self._group(chrom, analysis)
        coords = {name: group.arrays[name][:] for name in COORDS}
        return GroupLayout(
            chrom=chrom,
            chrom_length=int(self._static_attrs["chromosomes"][chrom]),
            analysis=analysis,
            kind=group.attrs["kind"],
            params=group.attrs["params"],
            scores=group.scores,
            chunk_size=group.chunk_size,
            **coords,
        )

    def unit_coords(self, chrom: str, analysis: str, k: int) -> dict[str, np.ndarray]:
        """``start``, ``end`` and ``window_start`` of the perturbations of chunk ``k``."""
        group = self._group(chrom, analysis)
        sl = _chunk_slice(k, group.n, group.chunk_size)
        return {name: group.arrays[name][sl] for name in COORDS}

    def check_layouts(self, layouts: Iterable[GroupLayout]) -> None:
        """Raise :class:`StoreError` unless the store was laid out exactly as ``layouts``."""
        layouts = list(layouts)
        want = {(lay.chrom, lay.analysis) for lay in layouts}
        have = set(self.groups())
        if want != have:
            raise StoreError(
                f"{self.path} was created by the same spec but holds different groups "
                f"(missing: {sorted(want - have)}, unexpected: {sorted(have - want)}); "
                "pass --overwrite to start again"
            )
        for lay in layouts:
            group = self._group(lay.chrom, lay.analysis)
            stored = (group.n, group.chunk_size, group.scores)
            regular = group.attrs.get("regular")
            if regular is not None and stored == (lay.n, lay.chunk_size, lay.scores):
                if regular == regular_coords(lay.start, lay.end):
                    continue  # the same regular coordinates: nothing to read
            if stored != (lay.n, lay.chunk_size, lay.scores) or not (
                np.array_equal(self._coord(lay, "start"), lay.start)
                and np.array_equal(self._coord(lay, "end"), lay.end)
            ):
                raise StoreError(
                    f"{self.path}: group {lay.chrom}/{lay.analysis} does not match this run's layout "
                    f"(stored n={group.n}, chunk_size={group.chunk_size}, scores={group.scores}; "
                    f"now n={lay.n}, chunk_size={lay.chunk_size}, scores={lay.scores}, or different "
                    "coordinates); pass --overwrite to start again"
                )

    def _coord(self, lay: GroupLayout, name: str) -> np.ndarray:
        """A whole coordinate array; an undecodable chunk raises :class:`DamagedChunkError`."""
        group = self._group(lay.chrom, lay.analysis)
        return read_checked(group.arrays[name], slice(None), self.path, f"{lay.chrom}/{lay.analysis}/{name}")

    @property
    def format_version(self) -> int:
        """The store's format version (3: units written a block at a time by one :class:`BlockWriter`)."""
        return int(self._static_attrs["format_version"])

    def unit_record(
        self,
        chrom: str,
        analysis: str,
        k: int,
        values: Mapping[str, np.ndarray],
        top: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> UnitRecord:
        """A worker's part of writing unit ``k`` of a format 3 store: check its values and return what the
        driver's :class:`BlockWriter` folds into the block's shards, digests, summary and flags (and, with
        ``map_units``, into the group's kept-map shard). Kept maps of a group without ``map_units`` (stores
        written before it) are the unit's own chunks, written here.

        Parameters and errors are those of :meth:`write_chunk`.
        """
        group = self._group(chrom, analysis)
        parts = self._unit_parts(group, chrom, analysis, k, values, top)
        digest = _digest(parts.values()) if group.checksums else 0
        kept = None
        if group.keep and group.map_units:
            kept = (parts[TOP_INDEX], parts[TOP_DELTA])
        elif group.keep:
            for name in (TOP_INDEX, TOP_DELTA):
                group.arrays[name][group.rows(name, k)] = parts[name]
        return UnitRecord(chrom, analysis, int(k), {s: parts[s] for s in group.scores}, digest, kept)

    def _unit_parts(self, group: _Group, chrom: str, analysis: str, k: int, values, top) -> dict[str, np.ndarray]:
        """Unit ``k``'s arrays in digest order, checked (nothing written)."""
        sl = _chunk_slice(k, group.n, group.chunk_size)
        missing = [s for s in group.scores if s not in values]
        extra = [s for s in values if s not in group.scores]
        if missing or extra:
            raise StoreError(
                f"{chrom}/{analysis} chunk {k}: scores must be exactly {group.scores} "
                f"(missing {missing}, unexpected {extra})"
            )
        parts = {}
        for score in group.scores:
            expected = (sl.stop - sl.start, *group.score_shapes[score])
            arr = np.asarray(values[score], dtype=np.float32)
            if arr.shape != expected:
                raise StoreError(
                    f"{chrom}/{analysis} chunk {k}: score {score!r} has shape {arr.shape}, expected {expected}"
                )
            parts[score] = arr
        if group.keep:
            parts[TOP_INDEX], parts[TOP_DELTA] = self._top_chunk(group, chrom, analysis, k, top)
        elif top is not None:
            raise StoreError(f"{chrom}/{analysis} keeps no top maps (top_maps is 0)")
        return parts

    def block_writer(self, flush_s: float | None = None, map_flush_s: float | None = None) -> BlockWriter:
        """The one writer of a format 3 store's blocks (the driver's): see :class:`BlockWriter`."""
        return BlockWriter(
            self, FLUSH_S if flush_s is None else flush_s, MAP_FLUSH_S if map_flush_s is None else map_flush_s
        )

    def write_chunk(
        self,
        chrom: str,
        analysis: str,
        k: int,
        values: Mapping[str, np.ndarray],
        top: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Write every score of chunk ``k`` (and its kept maps), its digest, then its ``chunk_done`` flag.

        Format 1-2 stores: each unit's objects are its own, so workers may call this concurrently.
        Format 3 stores: the unit is folded into its block at once (:meth:`unit_record`, then a
        :class:`BlockWriter` flush), which reads and rewrites the block's objects: one process at a
        time only (tests, tools, benchmarks); a screen's workers use :meth:`unit_record` and leave the
        block to the driver.

        Parameters
        ----------
        chrom, analysis
            The group.
        k
            Chunk index; the unit covers :meth:`GroupLayout.chunk_slice` ``(k)``.
        values
            One 1-D array per score name of the group, each as long as the chunk.
        top
            ``(index, delta)`` of the chunk's kept Δ maps (groups with ``top_maps``), at most K.

        Raises
        ------
        StoreError
            On an unknown group, chunk index, score name set or array length; nothing is written.
        """
        group = self._group(chrom, analysis)
        if group.grouped:
            writer = self.block_writer()
            writer.add(self.unit_record(chrom, analysis, k, values, top))
            writer.flush()
            return
        parts = self._unit_parts(group, chrom, analysis, k, values, top)
        for name, arr in parts.items():
            group.arrays[name][group.rows(name, k)] = arr
        if group.checksums:
            group.arrays[DIGEST][k] = _digest(parts.values())
        # The flag goes last: a unit without it is recomputed on resume.
        group.arrays[DONE][k] = 1

    @staticmethod
    def _top_chunk(group: _Group, chrom: str, analysis: str, k: int, top) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ``k`` of ``top_index`` and ``top_delta`` in full (unused rows -1 / NaN, the fill
        values), so writing it never reads the chunk already there."""
        keep, n_bins = group.keep, group.arrays[TOP_DELTA].shape[1]
        index, delta = top if top is not None else (None, None)
        index = np.zeros(0, np.int64) if index is None else np.asarray(index, np.int64)
        delta = np.zeros((0, n_bins, n_bins), np.float32) if delta is None else np.asarray(delta, np.float32)
        if len(index) > keep or delta.shape[0] != len(index):
            raise StoreError(f"{chrom}/{analysis} chunk {k}: at most {keep} top maps, got {len(index)}")
        full = np.full((keep, n_bins, n_bins), np.nan, np.float32)
        full[: len(index)] = delta
        return np.pad(index, (0, keep - len(index)), constant_values=-1), full

    def done_mask(self, chrom: str, analysis: str) -> np.ndarray:
        """Boolean array over the chunks of a group: ``True`` once chunk *k* is complete.

        A flag object that cannot be decoded counts as not done (its unit is recomputed).
        """
        group = self._group(chrom, analysis)
        flags = group.arrays[DONE]
        if group.n_chunks == 0:
            return np.zeros(0, dtype=bool)
        if group.grouped:  # one object per block: read them all
            return _read_flags(flags)[0]
        # Flags equal to the fill value are never stored, so a listing settles the common
        # all-done / none-done cases without reading thousands of one-byte objects.
        present = stored_chunks(flags)
        if not present:
            return np.zeros(group.n_chunks, dtype=bool)
        if len(present) == group.n_chunks:
            return np.ones(group.n_chunks, dtype=bool)
        # Only the stored flags are decoded (a missing one is 0): half the reads of a half-done store.
        index = np.fromiter(sorted(present), dtype=np.int64, count=len(present))
        try:
            values = flags.get_coordinate_selection(index)
        except Exception as err:  # noqa: BLE001  a damaged flag: read them one by one
            if not _is_damage(err):
                raise
            return _read_flags(flags)[0]
        mask = np.zeros(group.n_chunks, dtype=bool)
        mask[index] = values != 0
        return mask

    def _span(self, chrom: str, analysis: str, k: int) -> str:
        """``chrom:start-end`` of chunk ``k``'s perturbations (best effort: coordinates may be damaged)."""
        group = self._group(chrom, analysis)
        try:
            sl = _chunk_slice(k, group.n, group.chunk_size)
            start, end = group.arrays["start"][sl], group.arrays["end"][sl]
            return f"{chrom}:{int(start.min()):,}-{int(end.max()):,}"
        except Exception:  # noqa: BLE001  a message detail only
            return ""

    def verify(self, layouts: Iterable[GroupLayout] | None = None) -> list[str]:
        """Check every done work unit and clear the flag of damaged ones so that they are recomputed
        (driver only, under the store's lease).

        Every array chunk of a done unit is decoded (format 2: crc32c-checked) and, where the store
        records them, compared with the unit's digest (which also catches a missing chunk object).
        A damaged unit loses its flag first, then its chunk objects. Coordinate arrays that cannot
        be decoded are rewritten from ``layouts`` when given and of the same size.

        Returns
        -------
        list of str
            One line per damaged chunk or coordinate array found (empty when all is well).
        """
        by_key = {(lay.chrom, lay.analysis): lay for lay in layouts or ()}
        problems: list[str] = []
        for chrom, analysis in self.groups():
            group = self._group(chrom, analysis)
            problems += self._repair_coords(group, chrom, analysis, by_key.get((chrom, analysis)))
            done, damaged = _read_flags(group.arrays[DONE])
            cleared = []
            for k in range(group.n_chunks):
                if k in damaged:
                    detail = "its chunk_done flag cannot be decoded"
                else:
                    detail = self._check_unit(group, k) if done[k] else None
                if detail:
                    cleared.append(k)
                    if not group.grouped:
                        self._clear_unit(group, k)
                    where = self._span(chrom, analysis, k)
                    problems.append(f"{chrom}/{analysis} chunk {k}{f' ({where})' if where else ''}: {detail}")
            if group.grouped and cleared:
                # Format 3: the flags are rewritten whole (no damaged flag block is read back); the
                # cleared units' rows stay in their shards, masked by their flags, until recomputed.
                done[cleared] = False
                group.arrays[DONE][:] = done.astype(np.uint8)
        if problems:
            self._set_complete(False)
        return problems

    @staticmethod
    def _check_unit(group: _Group, k: int) -> str | None:
        """Why done unit ``k`` is damaged, or ``None``."""
        parts = []
        for name in group.unit_arrays:
            try:
                parts.append(group.arrays[name][group.rows(name, k)])
            except Exception as err:  # noqa: BLE001
                if not _is_damage(err):
                    raise
                return f"array {name} cannot be decoded ({type(err).__name__}: {err})"
        if not group.checksums:
            return None
        try:
            stored = int(group.arrays[DIGEST][k])
        except Exception as err:  # noqa: BLE001
            if not _is_damage(err):
                raise
            return f"its digest cannot be decoded ({type(err).__name__}: {err})"
        computed = _digest(parts)
        if stored != computed:
            return f"digest mismatch (recorded {stored:#010x}, data {computed:#010x}): a chunk object is missing or was replaced"
        return None

    @staticmethod
    def _clear_unit(group: _Group, k: int) -> None:
        _delete_chunk(group.arrays[DONE], k)  # the flag first: an interrupted clear leaves the unit to redo
        for name in (*group.unit_arrays, *((DIGEST,) if group.checksums else ())):
            _delete_chunk(group.arrays[name], k)

    def _repair_coords(self, group: _Group, chrom: str, analysis: str, layout: GroupLayout | None) -> list[str]:
        problems = []
        fits = layout is not None and (layout.n, layout.chunk_size) == (group.n, group.chunk_size)
        for name in (*COORDS, *group.attrs.get("labels", [])):
            array = group.arrays[name]
            try:
                array[:]
                continue
            except Exception as err:  # noqa: BLE001
                if not _is_damage(err):
                    raise
                detail = f"{type(err).__name__}: {err}"
            if not fits:
                problems.append(f"{chrom}/{analysis} array {name}: damaged ({detail}); no layout to rewrite it from")
                continue
            _delete_chunks(array)
            values = getattr(layout, name) if name in COORDS else layout.labels[name]
            if group.n:
                array[:] = values.astype(str) if values.dtype.kind in "USO" else values
            problems.append(f"{chrom}/{analysis} array {name}: damaged ({detail}); rewritten from the plan")
        return problems

    def _set_complete(self, complete: bool) -> None:
        root = self._open_root()
        attrs = dict(root.attrs[ATTRS_KEY])
        attrs["complete"] = complete
        if complete:
            attrs["finished"] = _now()
        else:
            attrs.pop("finished", None)
        root.attrs[ATTRS_KEY] = attrs
        self._attrs = attrs

    def pending_units(self) -> list[tuple[str, str, int]]:
        """Every ``(chrom, analysis, k)`` whose ``chunk_done`` flag is not set yet."""
        units = []
        for chrom, analysis in self.groups():
            mask = self.done_mask(chrom, analysis)
            units.extend((chrom, analysis, int(k)) for k in np.flatnonzero(~mask))
        return units

    def progress(self) -> tuple[int, int]:
        """``(done, total)`` work units over the whole store."""
        done = total = 0
        for chrom, analysis in self.groups():
            group = self._group(chrom, analysis)
            total += group.n_chunks
            if group.grouped:
                done += int(self.done_mask(chrom, analysis).sum())
            elif group.n_chunks:
                done += len(stored_chunks(group.arrays[DONE]))
        return done, total

    def mark_complete(self) -> None:
        """Record in the root attributes that every unit is done (driver only).

        Raises
        ------
        StoreError
            If some unit has no ``chunk_done`` flag yet.
        """
        done, total = self.progress()
        if done != total:
            raise StoreError(f"{self.path}: {total - done} of {total} work units are not done yet")
        self._set_complete(True)
