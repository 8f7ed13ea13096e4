"""The driver's one writer of a format 3 result store (:class:`BlockWriter`), and the open handles of
an analysis group that it and :class:`~screening.store.writer.ResultStore` write through.

Zarr 3 writes a shard as one object, read-modify-write, so in a format 3 store every shard (scores,
flags, digests, top-k summaries, kept maps) has one writer: the driver. Workers compute units and
hand their :class:`UnitRecord` s over (``ResultStore.unit_record``); the driver folds them into
blocks held in memory and writes each block whole, flags last. The rules (what is written when,
what a killed driver loses) are in ``docs/store.md``, *Who writes what*.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import zarr

from screening.store.layout import (
    COORDS,
    DIGEST,
    DONE,
    HIT_INDEX,
    HIT_K,
    HIT_VALUE,
    TOP_DELTA,
    TOP_INDEX,
    StoreError,
    _chunk_slice,
    _is_damage,
)

__all__ = [
    "FLUSH_S",
    "MAP_FLUSH_S",
    "MAP_MEMORY_BYTES",
    "MAP_WRITE_SHARE",
    "BlockWriter",
    "GroupSource",
    "UnitRecord",
    "largest_first",
]


class _Group:
    """Open array handles and attrs of one analysis group (metadata never changes)."""

    def __init__(self, group: zarr.Group, scores: list[str]) -> None:
        self.attrs = group.attrs.asdict()
        self.n = int(self.attrs["n"])
        self.chunk_size = int(self.attrs["chunk_size"])
        self.n_chunks = int(self.attrs["n_chunks"])
        self.scores = list(self.attrs["scores"])
        extra = {k: int(v) for k, v in self.attrs.get("extra_dims", {}).items()}
        dims = self.attrs.get("score_dims", {})
        self.score_shapes = {s: tuple(extra[d] for d in dims.get(s, list(extra))) for s in self.scores}
        self.arrays = {name: group[name] for name in (*COORDS, *scores, DONE)}
        self.keep = int(self.attrs.get("top_maps", [0, 0])[0])
        optional = (TOP_INDEX, TOP_DELTA, DIGEST, HIT_INDEX, HIT_VALUE, *self.attrs.get("labels", []))
        self.arrays.update({name: group[name] for name in optional if name in group})
        self.checksums = DIGEST in self.arrays  # format 2: every chunk crc32c-checked, units digested
        self.block = int(self.attrs.get("block_units", 0))  # format 3: units per block; 0: one object per unit
        # format 3 with kept maps: units per top_delta shard, written by the driver; 0: each unit writes its own
        self.map_units = int(self.attrs.get("map_units", 0))

    @property
    def grouped(self) -> bool:
        """Format 3: scores, flags and digests are written a block at a time, by one process."""
        return self.block > 0

    def block_of(self, b: int) -> tuple[int, int]:
        """Units ``[k0, k1)`` of block ``b``."""
        return b * self.block, min((b + 1) * self.block, self.n_chunks)

    @property
    def unit_arrays(self) -> list[str]:
        """Arrays a work unit writes, in digest order."""
        return [*self.scores, *((TOP_INDEX, TOP_DELTA) if self.keep else ())]

    def rows(self, name: str, k: int) -> slice:
        """Rows of array ``name`` that chunk ``k`` (one work unit) owns."""
        if name in (TOP_INDEX, TOP_DELTA):
            return slice(k * self.keep, (k + 1) * self.keep)
        return _chunk_slice(k, self.n, self.chunk_size)


class GroupSource(Protocol):
    """What a :class:`BlockWriter` needs of its store (a :class:`~screening.store.writer.ResultStore`)."""

    path: str

    @property
    def format_version(self) -> int: ...

    def _group(self, chrom: str, analysis: str) -> _Group: ...


#: Seconds a format 3 block with new units may wait before the driver writes it (a block is also
#: written as soon as its last unit is in): what a killed driver may lose, besides its units in flight.
FLUSH_S = 2.0
#: Shortest wait, in seconds, before a kept-map shard (``top_delta``, ``map_units`` units) with new units is
#: rewritten (it is also written as soon as its last unit is in, and when a run ends); its units' flags
#: wait for it. The wait is also at least 1 / :data:`MAP_WRITE_SHARE` times the group's last map-shard
#: write: a map shard is large (up to ``MAP_SHARD_BYTES``), and rewriting it at every block flush would
#: write it O(units²) times over, so rewrites take at most that share of the driver's time.
MAP_FLUSH_S = 2.0
MAP_WRITE_SHARE = 0.05
#: Bytes of kept maps the driver holds in open map shards at most: past it, the least recently filled
#: open shard is written early and dropped from memory (read back if more of its units arrive, e.g.
#: retried units at the end of a run).
MAP_MEMORY_BYTES = 1 << 28


@dataclass(eq=False)
class UnitRecord:
    """One computed unit of a format 3 store, as a worker hands it to the driver's :class:`BlockWriter`:
    its scores (one array per score, the unit's rows) and the digest of everything it computed."""

    chrom: str
    analysis: str
    k: int
    values: dict[str, np.ndarray]
    digest: int
    top: tuple[np.ndarray, np.ndarray] | None = None  # its K kept (index, Δ map) rows, where the driver writes them


@dataclass(eq=False)
class _Block:
    """A block being filled in memory: the block's rows of every score, its flags and digests.

    ``done``: units computed (in memory or stored); ``durable``: units whose kept maps are stored (all,
    without driver-written maps). A unit's flag is written only when both hold."""

    values: dict[str, np.ndarray]
    done: np.ndarray
    digests: np.ndarray
    durable: np.ndarray
    top_index: np.ndarray | None = None  # the block's top_index rows (driver-written maps)
    dirty: bool = False

    @property
    def complete(self) -> bool:
        return bool(self.done.all() and self.durable.all())


@dataclass(eq=False)
class _MapShard:
    """A ``top_delta`` shard being filled: Δ maps of its units by unit index, those not written yet,
    and when it was last written (or opened)."""

    units: range
    maps: dict[int, np.ndarray]
    new: set[int]
    written: float

    @property
    def full(self) -> bool:
        return len(self.maps) == len(self.units)


class BlockWriter:
    """The one writer of a format 3 store's blocks (score shards, ``chunk_done``, ``chunk_digest``, hits,
    and kept maps where the group has ``map_units``).

    Workers compute units and hand :class:`UnitRecord` s to the driver, which :meth:`add` s them here:
    a block is held in memory (its stored values read back first when some of its units were done
    by an earlier run) and written whole, so no object is ever written by two processes and no
    shard is read back while being filled. A block is written once its last unit is in, and every
    ``flush_s`` seconds while it has new units (and by :meth:`flush`). Each write puts the block's
    score shards, digests and top-k summary first and its flag chunk last: a unit is done only once
    its scores are durable. Units added after the last write of their block are lost if the process
    dies, and recomputed by the next run (their flags are 0).

    Kept maps (``keep_maps``, groups with ``map_units``): a unit's Δ maps go into its ``top_delta``
    shard (``map_units`` units, inside one block), held in memory and written whole once its last unit
    is in, while it has new units every ``map_flush_s`` seconds or 1 / :data:`MAP_WRITE_SHARE` times
    the group's last map-shard write, whichever is longer, and by :meth:`flush`; the unit's
    ``top_index`` rows and flag are written with its block only after its map shard was written.

    Parameters
    ----------
    store
        The format 3 store (opened by the driver, under its lease).
    flush_s
        Longest wait, in seconds, before a block with new units is written.
    map_flush_s
        Shortest wait, in seconds, before a kept-map shard with new units is rewritten.
    """

    def __init__(self, store: GroupSource, flush_s: float = FLUSH_S, map_flush_s: float = MAP_FLUSH_S) -> None:
        self.store = store
        self.flush_s = float(flush_s)
        self.map_flush_s = float(map_flush_s)
        self._open: dict[tuple[str, str, int], _Block] = {}
        self._maps: dict[tuple[str, str, int], _MapShard] = {}
        self._map_write_s: dict[tuple[str, str], float] = {}  # each group's last map-shard write, in seconds
        self._flushed = time.monotonic()
        self.blocks_written = 0
        self.map_shards_written = 0

    def add(self, record: UnitRecord) -> None:
        """Fold one finished unit into its block; writes the block when complete or when a flush is due."""
        group = self.store._group(record.chrom, record.analysis)
        if not group.grouped:
            raise StoreError(
                f"{self.store.path} is a format {self.store.format_version} store: its units write themselves"
            )
        if group.map_units and record.top is None:  # checked before the block changes
            raise StoreError(f"{record.chrom}/{record.analysis} chunk {record.k}: the unit's kept maps are missing")
        b = record.k // group.block
        key = (record.chrom, record.analysis, b)
        block = self._open.get(key) or self._load(group, key)
        self._open[key] = block
        k0, _ = group.block_of(b)
        rows = group.rows(group.scores[0], record.k)
        local = slice(rows.start - k0 * group.chunk_size, rows.stop - k0 * group.chunk_size)
        for score in group.scores:
            block.values[score][local] = record.values[score]
        block.done[record.k - k0] = True
        block.digests[record.k - k0] = record.digest
        block.dirty = True
        if group.map_units:
            self._add_maps(group, record, block)
        if block.complete:
            self._write(group, key, block)
            del self._open[key]
        elif time.monotonic() - self._flushed >= self.flush_s:
            self._flush(all_maps=False)

    def flush(self) -> None:
        """Write every kept-map shard and block holding units not written yet (the end of a run)."""
        self._flush(all_maps=True)

    def _flush(self, all_maps: bool) -> None:
        now = time.monotonic()
        for (chrom, analysis, s), shard in list(self._maps.items()):  # first: they make flags writable
            wait = max(self.map_flush_s, self._map_write_s.get((chrom, analysis), 0.0) / MAP_WRITE_SHARE)
            if shard.new and (all_maps or now - shard.written >= wait):
                self._write_maps(self.store._group(chrom, analysis), (chrom, analysis, s), shard)
        for (chrom, analysis, b), block in list(self._open.items()):
            if block.dirty:
                self._write(self.store._group(chrom, analysis), (chrom, analysis, b), block)
                if block.complete:
                    del self._open[(chrom, analysis, b)]
        self._flushed = time.monotonic()

    @property
    def pending(self) -> int:
        """Blocks held in memory (some units done, not all)."""
        return len(self._open)

    def _load(self, group: _Group, key: tuple[str, str, int]) -> _Block:
        """Block ``b`` as stored: values of its done units (others NaN), flags and digests. Units whose
        values, flag or digest cannot be decoded count as not done (recomputed)."""
        k0, k1 = group.block_of(key[2])
        r0, r1 = k0 * group.chunk_size, min(k1 * group.chunk_size, group.n)
        values = {s: np.full((r1 - r0, *group.score_shapes[s]), np.nan, np.float32) for s in group.scores}
        done, damaged = _read_flags_range(group.arrays[DONE], k0, k1)
        done[list(damaged)] = False
        digests = np.zeros(k1 - k0, np.uint32)
        if done.any():
            try:
                digests = np.asarray(group.arrays[DIGEST][k0:k1], np.uint32) if group.checksums else digests
            except Exception as err:  # noqa: BLE001
                if not _is_damage(err):
                    raise
                done[:] = False
        top_index = None
        if group.map_units:
            top_index = self._load_top_index(group, k0, k1, done)
        if done.any():
            for score in group.scores:
                values[score][:] = self._read_block(group, score, k0, k1, done)
        for i in np.flatnonzero(~done):  # rows a dead run wrote without their flag: not results
            for score in group.scores:
                values[score][(i * group.chunk_size) : ((i + 1) * group.chunk_size)] = np.nan
        durable = done.copy() if group.map_units else np.ones(k1 - k0, bool)
        return _Block(values, done, digests, durable, top_index)

    @staticmethod
    def _load_top_index(group: _Group, k0: int, k1: int, done: np.ndarray) -> np.ndarray:
        """The block's stored ``top_index`` rows (-1 for units not done); undecodable: none done."""
        keep = group.keep
        index = np.full((k1 - k0) * keep, -1, np.int64)
        if done.any():
            try:
                index[:] = group.arrays[TOP_INDEX][k0 * keep : k1 * keep]
            except Exception as err:  # noqa: BLE001
                if not _is_damage(err):
                    raise
                done[:] = False
        index.reshape(k1 - k0, keep)[~done] = -1
        return index

    def _add_maps(self, group: _Group, record: UnitRecord, block: _Block) -> None:
        """Put a unit's kept maps into its map shard (written at once when that fills it); its flag waits."""
        k0, _ = group.block_of(record.k // group.block)
        i, keep = record.k - k0, group.keep
        block.durable[i] = False
        block.top_index[i * keep : (i + 1) * keep] = record.top[0]
        key = (record.chrom, record.analysis, record.k // group.map_units)
        shard = self._maps.get(key) or self._load_maps(group, key, block)
        self._maps[key] = shard
        shard.maps[record.k] = np.asarray(record.top[1], np.float32)
        shard.new.add(record.k)
        if shard.full:
            self._write_maps(group, key, shard)
        else:
            self._maps[key] = self._maps.pop(key)  # most recently filled last
        self._bound_map_memory()

    def _bound_map_memory(self) -> None:
        """Write (and drop) the least recently filled open map shards while they hold more than
        :data:`MAP_MEMORY_BYTES`."""
        held = sum(m.nbytes for shard in self._maps.values() for m in shard.maps.values())
        while held > MAP_MEMORY_BYTES and len(self._maps) > 1:
            key, shard = next(iter(self._maps.items()))
            held -= sum(m.nbytes for m in shard.maps.values())
            if shard.new:
                self._write_maps(self.store._group(key[0], key[1]), key, shard)
            self._maps.pop(key, None)

    def _load_maps(self, group: _Group, key: tuple[str, str, int], block: _Block) -> _MapShard:
        """Map shard ``s`` with the maps of its units that an earlier run stored (read back once, so that
        writing the shard whole keeps them); undecodable: those units are recomputed."""
        m = group.map_units
        units = range(key[2] * m, min((key[2] + 1) * m, group.n_chunks))
        k0, _ = group.block_of(units.start // group.block)
        stored = [k for k in units if block.durable[k - k0]]
        shard = _MapShard(units, {}, set(), time.monotonic())
        if not stored:
            return shard
        keep = group.keep
        try:
            data = np.asarray(group.arrays[TOP_DELTA][units.start * keep : units.stop * keep])
        except Exception as err:  # noqa: BLE001
            if not _is_damage(err):
                raise
            for k in stored:
                block.done[k - k0] = block.durable[k - k0] = False
                block.top_index[(k - k0) * keep : (k - k0 + 1) * keep] = -1
            block.dirty = True
            return shard
        for k in stored:
            j = k - units.start
            shard.maps[k] = data[j * keep : (j + 1) * keep]
        return shard

    def _write_maps(self, group: _Group, key: tuple[str, str, int], shard: _MapShard) -> None:
        """Write map shard ``s`` whole (units without maps yet NaN), then let its new units' flags go out
        with their block."""
        began = time.monotonic()
        keep, n_bins = group.keep, group.arrays[TOP_DELTA].shape[1]
        units = shard.units
        full = np.full((len(units) * keep, n_bins, n_bins), np.nan, np.float32)
        for k, maps in shard.maps.items():
            j = k - units.start
            full[j * keep : (j + 1) * keep] = maps
        group.arrays[TOP_DELTA][units.start * keep : units.stop * keep] = full
        self.map_shards_written += 1
        self._map_write_s[key[:2]] = time.monotonic() - began
        b = units.start // group.block
        block = self._open[(key[0], key[1], b)]
        k0, _ = group.block_of(b)
        for k in shard.new:
            block.durable[k - k0] = True
        block.dirty = True
        shard.new.clear()
        shard.written = time.monotonic()
        if shard.full:
            del self._maps[key]

    @staticmethod
    def _read_block(group: _Group, score: str, k0: int, k1: int, done: np.ndarray) -> np.ndarray:
        array = group.arrays[score]
        r0, r1 = k0 * group.chunk_size, min(k1 * group.chunk_size, group.n)
        try:
            return array[r0:r1]
        except Exception as err:  # noqa: BLE001  a damaged unit chunk: read the others one by one
            if not _is_damage(err):
                raise
        out = np.full((r1 - r0, *group.score_shapes[score]), np.nan, np.float32)
        for i in np.flatnonzero(done):
            rows = group.rows(score, k0 + int(i))
            try:
                out[rows.start - r0 : rows.stop - r0] = array[rows]
            except Exception as err:  # noqa: BLE001
                if not _is_damage(err):
                    raise
                done[i] = False
        return out

    def _write(self, group: _Group, key: tuple[str, str, int], block: _Block) -> None:
        b = key[2]
        k0, k1 = group.block_of(b)
        r0, r1 = k0 * group.chunk_size, min(k1 * group.chunk_size, group.n)
        flags = block.done & block.durable
        for score in group.scores:  # whole shards: zarr encodes them without reading what is there
            group.arrays[score][r0:r1] = block.values[score]
        if group.checksums:
            group.arrays[DIGEST][k0:k1] = block.digests
        if block.top_index is not None:  # indices only of units whose maps are stored
            index = block.top_index.reshape(k1 - k0, group.keep).copy()
            index[~flags] = -1
            group.arrays[TOP_INDEX][k0 * group.keep : k1 * group.keep] = index.reshape(-1)
        index, value = _block_hits(group, block, r0)
        group.arrays[HIT_INDEX][b * HIT_K : (b + 1) * HIT_K] = index
        group.arrays[HIT_VALUE][b * HIT_K : (b + 1) * HIT_K] = value
        # The flags go last: a unit is done only once its scores, digest, summary (and maps) are written.
        group.arrays[DONE][k0:k1] = flags.astype(np.uint8)
        block.dirty = False
        self.blocks_written += 1


def _block_hits(group: _Group, block: _Block, r0: int) -> tuple[np.ndarray, np.ndarray]:
    """Each score's :data:`HIT_K` largest values in a block, largest first, ties in row order (as
    ``pandas.Series.nlargest(keep="first")``), with their positions ``row·width + column`` in the group."""
    index = np.full((HIT_K, len(group.scores)), -1, np.int64)
    value = np.full((HIT_K, len(group.scores)), np.nan, np.float32)
    for j, score in enumerate(group.scores):
        flat = block.values[score].reshape(-1)
        width = int(np.prod(group.score_shapes[score], dtype=np.int64))
        top = largest_first(flat, HIT_K)
        index[: len(top), j] = r0 * width + top
        value[: len(top), j] = flat[top]
    return index, value


def largest_first(values: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` largest non-NaN ``values``, largest first, ties by position."""
    valid = np.flatnonzero(~np.isnan(values))
    order = np.lexsort((valid, -values[valid].astype(np.float64)))
    return valid[order[:n]]


def _read_flags_range(flags: zarr.Array, k0: int, k1: int) -> tuple[np.ndarray, set[int]]:
    """Flags ``[k0, k1)`` as booleans, and the positions (from ``k0``) that cannot be decoded."""
    try:
        return np.asarray(flags[k0:k1]) != 0, set()
    except Exception as err:  # noqa: BLE001
        if not _is_damage(err):
            raise
    return np.zeros(k1 - k0, bool), set(range(k1 - k0))
