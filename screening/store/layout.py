"""The result store's layout: what the writer (:mod:`screening.store.writer`) and the reader
(:mod:`screening.store.reader`) share.

The format version, the names of the arrays and dimensions, :class:`GroupLayout` (one
``(chrom, analysis)`` group, known up front), the store errors, and the few helpers both sides
use to find a store (:func:`as_location`, :func:`zarr_store`), read its root attributes
(:func:`read_store_attrs`) and check its format (:func:`check_format`). The layout is specified
in ``docs/store.md``. All coordinates are 0-based, half-open.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import zarr
import zarr.errors
from zarr.core.sync import sync
from zarr.storage import LocalStore

from screening.core.errors import ScreeningError
from screening.store.location import Location

__all__ = [
    "ATTRS_KEY",
    "BLOCK_BYTES",
    "BLOCK_UNITS",
    "BUILDING_KEY",
    "CHUNK_DIM",
    "COORDS",
    "COORD_CHUNK",
    "COORD_SHARD",
    "DIGEST",
    "DIM",
    "DONE",
    "FORMAT_VERSION",
    "HIT_INDEX",
    "HIT_K",
    "HIT_VALUE",
    "MAP_SHARD_BYTES",
    "READABLE_VERSIONS",
    "RESERVED_NAMES",
    "SHARD_CHUNKS",
    "TOP_DELTA",
    "TOP_INDEX",
    "DamagedChunkError",
    "GroupLayout",
    "StoreError",
    "StoreNotFoundError",
    "as_location",
    "block_units",
    "check_format",
    "coord_index",
    "coords_from",
    "indexed_chunks",
    "inner_units",
    "map_units",
    "read_checked",
    "read_store_attrs",
    "regular_coords",
    "regular_overlap",
    "screening_attrs",
    "stored_chunks",
    "zarr_store",
]

# 3: units grouped in blocks (one score shard, one flag/digest chunk and one top-k summary per block,
# written by the driver alone), consolidated metadata; 2: crc32c on every chunk and a per-unit digest
# (chunk_digest), one object per unit; 1: neither.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
ATTRS_KEY = "screening"
DIM = "perturbation"
CHUNK_DIM = "chunk"
COORDS = ("start", "end", "window_start")
DONE = "chunk_done"
DIGEST = "chunk_digest"  # crc32 of a unit's written values, set just before its flag (format 2)
# Names a score may not take: they are arrays of the layout or variables of a query result.
TOP_DELTA, TOP_INDEX = "top_delta", "top_index"
# Format 3: each block's HIT_K largest values of every score (value, and position row·width + column).
HIT_INDEX, HIT_VALUE = "hit_index", "hit_value"
HIT_K = 64
RESERVED_NAMES = frozenset({*COORDS, DONE, DIGEST, "done", DIM, "chrom", TOP_DELTA, TOP_INDEX, HIT_INDEX, HIT_VALUE})
# Format 3 blocks: at most BLOCK_UNITS work units, and about BLOCK_BYTES of each score, per block.
BLOCK_UNITS = 1024
BLOCK_BYTES = 1 << 22
# Units per inner chunk of a format 3 score shard: few chunks to encode per block write (zarr encodes
# inner chunks one by one), small ranged reads for small queries.
INNER_UNITS = 64
# Format 3 kept maps (keep_maps): about this many bytes of Δ maps per top_delta shard, each shard written
# whole by the driver; bounds the driver's memory per open shard and the objects per unit.
MAP_SHARD_BYTES = 1 << 26
BUILDING_KEY = "screening_building"  # root attribute of a store still being built (remote stores)
COORD_CHUNK = 1 << 17  # about this many perturbations (whole units) per chunk of a coordinate array
# Earlier format 2 stores hold coordinates in shards of unit-sized chunks, at most COORD_SHARD
# perturbations and SHARD_CHUNKS chunks a shard (read like any other chunking; no longer written).
COORD_SHARD = 1 << 20
SHARD_CHUNKS = 4096


class StoreError(ScreeningError, RuntimeError):
    """A result store that cannot be created, opened, resumed or written as asked."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No result store at the given path."""


class DamagedChunkError(StoreError):
    """A chunk of a result store that cannot be decoded or fails its checksum or digest.

    Attributes ``store``, ``array`` (``chrom/analysis/name``) and ``chunk`` name it.
    """

    def __init__(self, store: str, array: str, chunk: int, detail: str, span: str = "") -> None:
        where = f" ({span})" if span else ""
        super().__init__(
            f"{store}: chunk {chunk} of array {array}{where} is damaged: {detail}. "
            "Run the screen again with `screening run SPEC --verify` to recompute damaged chunks."
        )
        self.store, self.array, self.chunk, self.detail, self.span = store, array, chunk, detail, span

    def __reduce__(self):  # picklable across processes (Ray), like the plain errors
        return type(self), (self.store, self.array, self.chunk, self.detail, self.span)


def _is_damage(err: BaseException) -> bool:
    """Whether an error from decoding a chunk means damaged bytes (checksum, zstd, shard index …)
    rather than an unreachable store: I/O errors are reported as they are."""
    return isinstance(err, Exception) and not isinstance(err, (OSError, StoreError))


def read_checked(
    array: zarr.Array,
    key: Any,
    store: str,
    name: str,
    span: Callable[[int], str] | None = None,
    unit: int | None = None,
) -> np.ndarray:
    """``array[key]``; a chunk that cannot be decoded raises :class:`DamagedChunkError` naming the
    store, the array and the chunk (along the first dimension, which every array is chunked along).

    Parameters
    ----------
    array
        A zarr array.
    key
        A slice of the first dimension, or a tuple of slices starting with one.
    store, name
        The store (for messages) and the array's ``chrom/analysis/name``.
    span
        Optional ``span(k) -> str``: the genomic range of chunk ``k`` for the message.
    unit
        Rows per work unit when the array's chunks hold several (format 3 scores): the damaged
        chunk is then named by its unit.
    """
    try:
        return array[key]
    except Exception as err:  # noqa: BLE001  sorted by _is_damage below
        if not _is_damage(err):
            raise
        first = key[0] if isinstance(key, tuple) else key
        size, length = unit or array.chunks[0], array.shape[0]
        start, stop, _ = first.indices(length)
        for k in range(start // size, -(-stop // size)):  # find the chunk to name
            try:
                array[k * size : min((k + 1) * size, length)]
            except Exception as inner:  # noqa: BLE001
                if not _is_damage(inner):
                    raise
                raise DamagedChunkError(
                    store, name, k, f"{type(inner).__name__}: {inner}", span(k) if span else ""
                ) from inner
        raise DamagedChunkError(store, name, start // size, f"{type(err).__name__}: {err}") from err


def stored_chunks(array: zarr.Array) -> set[int]:
    """Indices of the stored chunk objects of a 1-D, unsharded array, from one listing.

    ``array.nchunks_initialized`` (zarr 3.1) compares every possible key with a list of the stored
    ones, which is quadratic: 1.7 s for chr1's 15,429 flags, minutes at genome scale. This is linear.
    """
    prefix = array.store_path.path.rstrip("/")
    prefix = f"{prefix}/" if prefix else ""
    keys = {array.metadata.encode_chunk_key((k,)): k for k in range(array.cdata_shape[0])}

    async def listing() -> list[str]:
        return [key async for key in array.store_path.store.list_prefix(prefix)]

    return {keys[key[len(prefix) :]] for key in sync(listing()) if key[len(prefix) :] in keys}


# --------------------------------------------------------------------------- layout


def _check_name(name: str, what: str) -> None:
    # Zarr v3 node names: no "/", not "." / "..", no leading "__" (reserved by the spec).
    if not isinstance(name, str) or not name or "/" in name or name in {".", ".."} or name.startswith("__"):
        raise StoreError(f"{what} name {name!r} cannot be used as a Zarr group/array name")


@dataclass(eq=False)  # numpy fields: compare with check_layouts, not ==
class GroupLayout:
    """Everything the driver knows up front about one ``(chrom, analysis)`` group.

    Parameters
    ----------
    chrom, chrom_length
        Chromosome name and length.
    analysis, kind, params
        Analysis name (one per perturbation entry of the spec), its kind and parameters.
    start, end
        Perturbed intervals, 0-based half-open, sorted by ``start``.
    window_start
        Start of the model window used for each perturbation (may be negative with padding).
    scores
        Names of the score arrays, one float32 value per perturbation each (times
        ``extra_dims``).
    chunk_size
        Perturbations per chunk, i.e. per work unit.
    extra_dims
        Trailing dimensions of every score array, e.g. ``{"base": 4}`` for saturation
        mutagenesis stored as ``[position, 4]``.
    labels
        Extra per-perturbation coordinates (integers or strings), e.g. a variant's
        ``id``, ``ref`` and ``alt``.
    score_dims
        Trailing dimensions of particular scores (names from ``extra_dims``); scores not
        listed have all of ``extra_dims``.
    top_maps
        ``(K, n_bins)``: keep the Δ maps (perturbed − reference) of the K strongest
        perturbations of every chunk; ``(0, 0)`` keeps none.
    """

    chrom: str
    chrom_length: int
    analysis: str
    kind: str
    params: dict
    start: np.ndarray
    end: np.ndarray
    window_start: np.ndarray
    scores: list[str]
    chunk_size: int
    extra_dims: dict[str, int] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    top_maps: tuple[int, int] = (0, 0)
    score_dims: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start = np.ascontiguousarray(self.start, dtype=np.int64)
        self.end = np.ascontiguousarray(self.end, dtype=np.int64)
        self.window_start = np.ascontiguousarray(self.window_start, dtype=np.int64)
        self.scores = list(self.scores)
        self.chrom_length = int(self.chrom_length)
        self.chunk_size = int(self.chunk_size)
        self.params = dict(self.params)
        self.extra_dims = {str(k): int(v) for k, v in self.extra_dims.items()}
        self.labels = {str(k): np.asarray(v) for k, v in self.labels.items()}
        self.top_maps = (int(self.top_maps[0]), int(self.top_maps[1]))
        self._validate()

    def _validate(self) -> None:
        where = f"layout {self.chrom}/{self.analysis}"
        _check_name(self.chrom, "chromosome")
        _check_name(self.analysis, "analysis")
        if self.chunk_size < 1:
            raise StoreError(f"{where}: chunk_size must be >= 1, got {self.chunk_size}")
        if self.chrom_length < 1:
            raise StoreError(f"{where}: chromosome length must be >= 1, got {self.chrom_length}")
        arrays = {"start": self.start, "end": self.end, "window_start": self.window_start}
        for name, arr in arrays.items():
            if arr.ndim != 1 or arr.shape != self.start.shape:
                raise StoreError(f"{where}: {name} must be 1-D with the length of start ({self.start.shape})")
        if self.n:
            if np.any(np.diff(self.start) < 0):
                raise StoreError(f"{where}: start must be sorted ascending")
            if np.any(self.end <= self.start):
                raise StoreError(f"{where}: every perturbation needs end > start")
            if self.start[0] < 0 or self.end.max() > self.chrom_length:
                raise StoreError(f"{where}: perturbations must lie within [0, {self.chrom_length:,})")
        for name, values in self.labels.items():
            _check_name(name, "label")
            if name in RESERVED_NAMES or name in self.scores or values.shape != self.start.shape:
                raise StoreError(f"{where}: label {name!r} must be a new name with one value per perturbation")
        if any(size < 1 for size in self.extra_dims.values()):
            raise StoreError(f"{where}: extra dimensions need positive sizes, got {self.extra_dims}")
        if not self.scores:
            raise StoreError(f"{where}: at least one score is needed")
        if len(set(self.scores)) != len(self.scores):
            raise StoreError(f"{where}: duplicate score names in {self.scores}")
        for score in self.scores:
            _check_name(score, "score")
            if score in RESERVED_NAMES:
                raise StoreError(f"{where}: score name {score!r} is reserved ({sorted(RESERVED_NAMES)})")

    @property
    def score_shape(self) -> tuple[int, ...]:
        """Trailing shape of every score array (``()`` for one value per perturbation)."""
        return tuple(self.extra_dims.values())

    def dims_of(self, score: str) -> list[str]:
        """Trailing dimension names of one score array."""
        return list(self.score_dims.get(score, list(self.extra_dims)))

    @property
    def n(self) -> int:
        """Number of perturbations."""
        return int(self.start.shape[0])

    @property
    def n_chunks(self) -> int:
        """Number of chunks, i.e. of work units, of this group."""
        return math.ceil(self.n / self.chunk_size)

    def chunk_slice(self, k: int) -> slice:
        """Perturbations ``[k·chunk_size, min((k+1)·chunk_size, n))`` of chunk ``k``."""
        return _chunk_slice(k, self.n, self.chunk_size)

    def group_attrs(self) -> dict[str, Any]:
        """Attributes of the analysis group (see ``docs/store.md``)."""
        return {
            "kind": self.kind,
            "params": self.params,
            "scores": self.scores,
            "dim": DIM,
            "extra_dims": self.extra_dims,
            "labels": sorted(self.labels),
            "top_maps": list(self.top_maps),
            "score_dims": {score: self.dims_of(score) for score in self.scores},
            "chunk_size": self.chunk_size,
            "n_chunks": self.n_chunks,
            "n": self.n,
        }


def block_units(layout: GroupLayout) -> int:
    """Work units per block of a format 3 group: one score shard, one chunk of ``chunk_done`` and
    ``chunk_digest`` and one top-k summary each; at most :data:`BLOCK_UNITS`, about :data:`BLOCK_BYTES`
    of the widest score, no more than the group holds."""
    width = max((math.prod(layout.extra_dims[d] for d in layout.dims_of(s)) for s in layout.scores), default=1)
    by_bytes = BLOCK_BYTES // (4 * layout.chunk_size * max(1, width))
    units = max(1, min(BLOCK_UNITS, by_bytes, layout.n_chunks))
    return units if units <= INNER_UNITS else -(-units // INNER_UNITS) * INNER_UNITS  # whole inner chunks


def map_units(layout: GroupLayout, block: int) -> int:
    """Work units per ``top_delta`` shard of a format 3 group with kept maps (0 without): the largest
    divisor of ``block`` whose units' maps fit :data:`MAP_SHARD_BYTES` (at least 1), so that a map
    shard lies inside one block and the driver holds at most that much per open shard."""
    keep, n_bins = layout.top_maps
    if not keep:
        return 0
    fit = max(1, MAP_SHARD_BYTES // (4 * keep * n_bins * n_bins))
    return max(d for d in range(1, block + 1) if block % d == 0 and d <= fit)


def regular_coords(start: np.ndarray, end: np.ndarray) -> dict[str, int] | None:
    """``{"start", "step", "width", "n"}`` when ``start = start₀ + k·step`` and ``end = start + width``
    (tiled kinds without gaps), else ``None``: format 3 groups record it, so readers compute their
    coordinates instead of reading them (the arrays stay, for plain zarr/xarray readers)."""
    n = int(start.shape[0])
    if n < 2:
        return None
    step, width = int(start[1] - start[0]), int(end[0] - start[0])
    if step <= 0 or np.any(np.diff(start) != step) or np.any(end - start != width):
        return None
    return {"start": int(start[0]), "step": step, "width": width, "n": n}


def coords_from(regular: Mapping[str, int], lo: int = 0, hi: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``start``, ``end`` of rows ``[lo, hi)`` (default: all) of a group from its :func:`regular_coords`
    attribute."""
    hi = int(regular["n"]) if hi is None else hi
    start = int(regular["start"]) + int(regular["step"]) * np.arange(lo, hi, dtype=np.int64)
    return start, start + int(regular["width"])


def regular_overlap(regular: Mapping[str, int], start: int, end: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of a regular group whose ``[start, end)`` overlaps ``[start, end)``, by arithmetic."""
    s0, step, width, n = (int(regular[key]) for key in ("start", "step", "width", "n"))
    hi = min(n, max(0, -(-(end - s0) // step)))  # rows with s0 + k·step < end
    lo = min(n, max(0, (start - s0 - width) // step + 1))  # rows with s0 + k·step + width > start
    return lo, max(lo, hi)


def coord_index(start: np.ndarray, end: np.ndarray, rows: int) -> dict[str, Any]:
    """``{"rows", "start", "end"}``: per chunk of ``rows`` coordinates, its first ``start`` and its
    largest ``end``. Format 3 groups of irregular coordinates record it (a few numbers per 131,072
    perturbations), so a query reads only the coordinate chunks that can overlap its region."""
    bounds = np.arange(0, len(start), rows)
    return {"rows": int(rows), "start": start[bounds].tolist(), "end": np.maximum.reduceat(end, bounds).tolist()}


def indexed_chunks(index: Mapping[str, Any], start: int, end: int) -> np.ndarray:
    """Chunks (ascending) of a :func:`coord_index` that may hold a row overlapping ``[start, end)``:
    first start before ``end`` and largest end after ``start``."""
    first, last = np.asarray(index["start"], np.int64), np.asarray(index["end"], np.int64)
    return np.flatnonzero((first < end) & (last > start))


def inner_units(block: int) -> int:
    """Units per inner chunk of a format 3 score shard of ``block`` units (divides ``block``)."""
    return block if block <= INNER_UNITS else INNER_UNITS


def _chunk_slice(k: int, n: int, chunk_size: int) -> slice:
    n_chunks = math.ceil(n / chunk_size)
    if not isinstance(k, (int, np.integer)) or not 0 <= k < n_chunks:
        raise StoreError(f"chunk index {k!r} out of range (group has {n_chunks} chunks)")
    return slice(int(k) * chunk_size, min((int(k) + 1) * chunk_size, n))


def _check_layouts(layouts: Iterable[GroupLayout]) -> list[GroupLayout]:
    layouts = list(layouts)
    if not layouts:
        raise StoreError("a result store needs at least one (chromosome, analysis) layout")
    seen: set[tuple[str, str]] = set()
    lengths: dict[str, int] = {}
    for layout in layouts:
        if not isinstance(layout, GroupLayout):
            raise StoreError(f"expected GroupLayout, got {type(layout).__name__}")
        key = (layout.chrom, layout.analysis)
        if key in seen:
            raise StoreError(f"duplicate layout for {layout.chrom}/{layout.analysis}")
        seen.add(key)
        if lengths.setdefault(layout.chrom, layout.chrom_length) != layout.chrom_length:
            raise StoreError(f"layouts disagree on the length of {layout.chrom}")
    return layouts


# --------------------------------------------------------------------------- paths & attrs


def as_location(path: str | os.PathLike | Location, storage_options: Mapping[str, Any] | None = None) -> Location:
    """The one place store paths are interpreted: a local directory or an fsspec URL."""
    return path if isinstance(path, Location) else Location(path, storage_options)


def zarr_store(path: Path | Location, read_only: bool):
    if isinstance(path, Location):
        return path.zarr_store(read_only)
    return LocalStore(path, read_only=read_only)


def _remote(location: Location, what: str, action):
    """Run ``action()`` against an object store, turning its errors into a StoreError naming the URL.

    fsspec backends raise many types (OSError subclasses, botocore errors for missing
    credentials or an unreachable endpoint), so everything but our own errors is caught here.
    """
    try:
        return action()
    except StoreError:
        raise
    except Exception as err:  # noqa: BLE001  (see docstring)
        raise StoreError(f"{location}: cannot {what}: {type(err).__name__}: {err}") from err


def read_store_attrs(
    path: str | os.PathLike | Location, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The root ``screening`` attributes of a result store, or ``None`` if ``path`` is not one.

    Parameters
    ----------
    path
        A local path or an fsspec URL (``s3://bucket/screen.zarr``).
    storage_options
        fsspec options of a URL (see :mod:`screening.store.location`).

    Raises
    ------
    StoreNotFoundError
        If nothing exists at ``path``.
    StoreError
        If the object store cannot be read (missing bucket, bad credentials, no endpoint).
    """
    location = as_location(path, storage_options)
    if location.remote:
        meta = _remote_root(location)
        return None if meta is None else screening_attrs(meta.get("attributes"))
    local = location.local_path
    if not local.exists():
        raise StoreNotFoundError(f"no result store at {local}")
    try:
        root = zarr.open_group(zarr_store(local, read_only=True), mode="r")
    except (FileNotFoundError, ValueError, zarr.errors.BaseZarrError):
        return None
    return screening_attrs(root.attrs.asdict())


def screening_attrs(root_attrs: Any) -> dict[str, Any] | None:
    """The package's attributes among a root group's (``None`` when they are not a result store's)."""
    attrs = root_attrs.get(ATTRS_KEY) if isinstance(root_attrs, dict) else None
    if not isinstance(attrs, dict) or "format_version" not in attrs:
        return None
    return attrs


def _remote_root(location: Location) -> dict[str, Any] | None:
    """The root ``zarr.json`` of a remote store; ``None`` when the prefix holds something else.

    Raises StoreNotFoundError when nothing at all is under the prefix (or the bucket is missing).
    """

    def read():
        meta = location.read_json("zarr.json")
        if meta is None and not location.has_objects():
            raise StoreNotFoundError(f"no result store at {location} (nothing under that prefix, or no such bucket)")
        return meta

    return _remote(location, "read the object store", read)


def check_format(attrs: Mapping[str, Any], path: Path | Location) -> None:
    version = attrs.get("format_version")
    if version not in READABLE_VERSIONS:
        raise StoreError(
            f"{path}: result store format version {version!r}, this package reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
