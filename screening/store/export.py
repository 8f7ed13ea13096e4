"""Exports of one score of a result store to genome-browser tracks (bedGraph, bigWig).

Both writers go through a temporary file in the destination directory that is renamed
into place, so a failed export never leaves a half-written file behind. Rows whose chunk is
not computed yet (NaN) are skipped.

bigWig zoom levels are written here (:func:`write_zoom_levels`), not by pyBigWig: its
libBigWig drops every zoom level after the first unless the levels differ in how many
1,024-record buffers they fill, so an export of fewer than ~16,000 intervals got a single
zoom level and genome-wide views read every value; and its whole-file summary keeps a wrong
maximum when every value is negative.

The bigWig export streams (bounded memory for whole-genome screens): blocks of ``_ROWS``
perturbations in centre order give exactly the intervals of the whole chromosome
(:class:`_IntervalStream`), are written and spooled to disk, and the zoom levels are summarised
from the spool block by block (:class:`_ZoomLevel`). Rows not in centre order (uneven widths) add
one 8-byte index per perturbation of the chromosome being read.
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import pyBigWig

from screening.io.paths import OutputPathError, check_output_file, is_disk_full
from screening.core.regions import Region
from screening.store.reader import Results, open_results

__all__ = [
    "atomic_path",
    "bigwig_intervals",
    "export_format",
    "to_bedgraph",
    "to_bigwig",
    "write_zoom_levels",
    "zoom_records",
]

BIGWIG_SUFFIXES = frozenset({".bw", ".bigwig"})


def export_format(path: str | os.PathLike, requested: str | None = None) -> str:
    """``requested`` (``bedgraph`` or ``bigwig``), else the format of ``path``'s extension:
    ``bigwig`` for ``.bw``/``.bigwig`` (any case), ``bedgraph`` otherwise."""
    return requested or ("bigwig" if Path(path).suffix.lower() in BIGWIG_SUFFIXES else "bedgraph")


_BATCH = 200_000  # bigWig entries handed to pyBigWig per call


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of ``path``, renamed onto it only if the block succeeds.

    The path is checked and the temporary file created here, so an unwritable destination
    is refused by name before a writer (pyBigWig crashes on some) opens it.

    Raises
    ------
    OutputPathError
        If ``path`` is a directory or cannot be written; or the disk fills up while writing.
    """
    path = check_output_file(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.touch(exist_ok=False)
    except OSError as err:
        raise OutputPathError(f"output {path} cannot be written: {err.strerror or err}") from None
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if is_disk_full(err):
            raise OutputPathError(
                f"disk full while writing {path}; free space and export again (nothing was written)"
            ) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _prepare(
    results: Results | str | os.PathLike, score: str, analysis: str | None, region: str | Region | None
) -> tuple[Results, str, list[Region]]:
    if not isinstance(results, Results):
        results = open_results(results)
    analysis = results.resolve_analysis(analysis)
    results.check_score(score, analysis)
    if region is None:
        regions = [results.resolve_region(chrom) for chrom in results.chromosomes]
    else:
        regions = [results.resolve_region(region)]
    return results, analysis, regions


def _one_value_per_row(ds, score: str) -> np.ndarray:
    """Per-base scores ``[n, 4]`` become one track: the value at the reference base (score × one-hot
    input, as an attribution or a mutagenesis track is usually shown); when no reference base is
    stored, the largest absolute value over the bases, with its sign."""
    values = ds[score].values
    if values.ndim == 1:
        return values
    if "ref_base" in ds.coords:
        ref = np.array(["ACGT".find(b) for b in ds["ref_base"].values])
        picked = values[np.arange(len(ref)), np.maximum(ref, 0)]
        if np.isnan(picked[ref >= 0]).all() and np.isfinite(values).any():
            # mutagenesis: the reference base is NaN by definition; use the strongest alternative
            return np.nanmax(values, axis=1)
        return np.where(ref >= 0, picked, np.nan)
    strongest = np.nanargmax(np.nan_to_num(np.abs(values), nan=-1), axis=1)
    return values[np.arange(len(values)), strongest]


def _rows(results: Results, region: Region, analysis: str, score: str) -> tuple[np.ndarray, ...]:
    """``start, end, value`` of every perturbation overlapping ``region``, sorted by (start, end)."""
    ds = results.query(region, analysis)
    start, end = ds["start"].values, ds["end"].values
    values = _one_value_per_row(ds, score)
    order = np.lexsort((end, start))
    return start[order], end[order], values[order]


def to_bedgraph(
    results: Results | str | os.PathLike,
    path: str | os.PathLike,
    score: str,
    analysis: str | None = None,
    region: str | Region | None = None,
) -> Path:
    """Write one score as a bedGraph: ``chrom  start  end  score``, tab-separated, no header.

    One line per computed perturbation, over its perturbed interval (as the original
    C.Origami screening output; intervals overlap when the step is smaller than the width).
    Lines are sorted like ``sort -k1,1 -k2,2n`` (chromosomes in byte order); NaN
    (not yet computed) rows are skipped.

    Parameters
    ----------
    results
        :class:`~screening.store.reader.Results` or the path of a result store.
    path
        Output file; written through a temporary file and renamed.
    score
        Score name.
    analysis
        Analysis name; may be left out when the store holds only one.
    region
        Limit to perturbations overlapping this region; default everything.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ResultsError
        Unknown score or analysis.
    RegionError
        Malformed region, or one on a chromosome without results.
    OutputPathError
        ``path`` is a directory or cannot be written, or the disk filled up (nothing is left behind).
    """
    results, analysis, regions = _prepare(results, score, analysis, region)
    regions.sort(key=lambda r: r.chrom.encode())
    with atomic_path(path) as tmp, open(tmp, "w") as out:
        for reg in regions:
            start, end, values = _rows(results, reg, analysis, score)
            keep = ~np.isnan(values)
            rows = pd.DataFrame({"chrom": reg.chrom, "start": start[keep], "end": end[keep], "score": values[keep]})
            # pandas writes float32 as its shortest exact repr (0.1, not 0.10000000149).
            rows.to_csv(out, sep="\t", header=False, index=False, lineterminator="\n")
    return Path(path)


def bigwig_intervals(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted, non-overlapping intervals, one per perturbation, for a bigWig.

    Rule: perturbations are taken in order of their centres. Each covers its own
    ``[start, end)``, except where it overlaps the next one: that overlap is split at the
    midpoint between the two centres (rounded down, clipped into the overlap). So
    non-overlapping perturbations keep their exact intervals, and overlapping ones of width
    *w* at step *s* < *w* get a step-wide interval ``[centre - s/2, centre + s/2)`` around
    their centre ``start + w/2``, the first and last reaching their own start and end.
    Overlaps left between non-neighbours (only with very uneven widths) go to the earlier
    perturbation; perturbations left with an empty interval are dropped.

    Parameters
    ----------
    start, end
        Perturbed intervals (any order).

    Returns
    -------
    lo, hi : numpy.ndarray
        The intervals, sorted and disjoint.
    index : numpy.ndarray
        For each interval, the index of its perturbation in the input.
    """
    start = np.asarray(start, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    centre2 = start + end  # twice the centre: stays integral
    order = np.lexsort((end, centre2))
    s, e, c2 = start[order], end[order], centre2[order]
    mid = (c2[:-1] + c2[1:]) // 4
    lo, hi = s.copy(), e.copy()
    # Where neighbours overlap (s[i+1] < e[i]) both ends meet at mid clipped into the overlap;
    # where they do not, these leave e[i] and s[i+1] unchanged.
    hi[:-1] = np.minimum(e[:-1], np.maximum(mid, s[1:]))
    lo[1:] = np.maximum(s[1:], np.minimum(mid, e[:-1]))
    if lo.size > 1:  # never start before anything earlier ends
        lo[1:] = np.maximum(lo[1:], np.maximum.accumulate(hi[:-1]))
    keep = lo < hi
    return lo[keep], hi[keep], order[keep]


def to_bigwig(
    results: Results | str | os.PathLike,
    path: str | os.PathLike,
    score: str,
    analysis: str | None = None,
    region: str | Region | None = None,
) -> Path:
    """Write one score as a bigWig over the store's chromosome sizes, in bounded memory.

    bigWig needs sorted, non-overlapping intervals, so each perturbation's value covers the
    interval given by :func:`bigwig_intervals` (its own interval where perturbations do not
    overlap; otherwise a step-wide interval around its centre). Intervals are computed over
    every perturbation, computed or not, then NaN values are skipped, so not-yet-computed
    perturbations leave gaps rather than being filled by their neighbours.

    The export streams: chromosome by chromosome, ``_ROWS`` perturbations at a time, each block's
    intervals are written as they are computed and spooled (12 bytes each) to a temporary file
    beside the output, from which the zoom levels are then summarised block by block. Peak memory
    is one block plus the reader's coordinates of one chromosome, whatever the store's size.

    Parameters
    ----------
    results
        :class:`~screening.store.reader.Results` or the path of a result store.
    path
        Output file; written through a temporary file and renamed.
    score
        Score name.
    analysis
        Analysis name; may be left out when the store holds only one.
    region
        Limit to perturbations overlapping this region; default everything. The header still
        lists every chromosome of the store.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ResultsError
        Unknown score or analysis.
    RegionError
        Malformed region, or one on a chromosome without results.
    OutputPathError
        ``path`` is a directory or cannot be written, or the disk filled up (nothing is left behind).
    """
    results, analysis, regions = _prepare(results, score, analysis, region)
    header = list(results.chromosomes.items())
    rank = {chrom: i for i, (chrom, _) in enumerate(header)}
    regions.sort(key=lambda r: rank[r.chrom])  # pyBigWig wants entries in header order
    with atomic_path(path) as tmp:
        spool = _Spool(tmp.with_name(tmp.name + ".spool"))
        try:
            _write_bigwig(tmp, path, header, rank, regions, results, analysis, score, spool)
        finally:
            spool.close()
            spool.path.unlink(missing_ok=True)
    return Path(path)


def _write_bigwig(
    tmp: Path,
    path: str | os.PathLike,
    header: list[tuple[str, int]],
    rank: dict[str, int],
    regions: list[Region],
    results: Results,
    analysis: str,
    score: str,
    spool: _Spool,
) -> None:
    bw = pyBigWig.open(str(tmp), "w")
    if bw is None:  # pyBigWig reports no error of its own
        raise OutputPathError(f"output {path}: pyBigWig cannot open {tmp} for writing")
    try:
        bw.addHeader(header, maxZooms=_MAX_ZOOMS)  # reserves the zoom headers that write_zoom_levels fills
        for reg in regions:
            for lo, hi, vals in _region_intervals(results, reg, analysis, score):
                for i in range(0, lo.size, _BATCH):
                    part = slice(i, i + _BATCH)
                    bw.addEntries(
                        [reg.chrom] * lo[part].size,
                        lo[part].tolist(),
                        ends=hi[part].tolist(),
                        values=vals[part].tolist(),
                    )
                spool.add(rank[reg.chrom], lo, hi, vals)
    finally:
        bw.close()
        spool.close()
    _write_zoom_levels(tmp, [length for _, length in header], spool.stats, spool.blocks)


_ROWS = 1 << 18  # perturbations read, and spooled intervals summarised, per block (bounds the memory)


def _region_intervals(results: Results, region: Region, analysis: str, score: str) -> Iterator[tuple[np.ndarray, ...]]:
    """``lo, hi, values`` (values as stored, float32 in float64; NaN and empty intervals dropped) of
    the region's perturbations in blocks of about ``_ROWS``; together exactly :func:`bigwig_intervals`
    over the whole region."""
    ds = results.query(region, analysis)
    start, end = ds["start"].values, ds["end"].values
    order = _centre_order(start, end)
    stream = _IntervalStream()
    for i in range(0, start.size, _ROWS):
        if order is None:  # the rows are in centre order already: read contiguous blocks
            rows: Any = slice(i, i + _ROWS)
            block = ds.isel(perturbation=rows)
            values = _one_value_per_row(block, score)
        else:
            rows = np.sort(order[i : i + _ROWS])
            block = ds.isel(perturbation=rows)
            back = np.argsort(np.argsort(order[i : i + _ROWS], kind="stable"), kind="stable")
            values = _one_value_per_row(block, score)[back]
            rows = order[i : i + _ROWS]
        yield stream.push(start[rows], end[rows], values)
    yield stream.finish()


def _centre_order(start: np.ndarray, end: np.ndarray) -> np.ndarray | None:
    """The order of :func:`bigwig_intervals` (by centre, then end), or None when the rows are in
    it already (tiled screens: no index array is allocated)."""
    for i in range(0, start.size, _ROWS):
        s, e = start[i : i + _ROWS + 1].astype(np.int64), end[i : i + _ROWS + 1].astype(np.int64)
        c2 = s + e
        ok = (c2[1:] > c2[:-1]) | ((c2[1:] == c2[:-1]) & (e[1:] >= e[:-1]))
        if not ok.all():
            return np.lexsort((np.asarray(end, np.int64), np.asarray(start, np.int64) + end))
    return None


class _IntervalStream:
    """:func:`bigwig_intervals` over perturbations given in centre order, block by block.

    Every interval is final once its successor is known, so each block's last perturbation is held
    back (its ``lo`` computed) until the next block, with the largest ``hi`` given out before it."""

    def __init__(self) -> None:
        self.held: tuple[int, int, int, float] | None = None  # start, end, lo, value of the last one
        self.max_hi = np.iinfo(np.int64).min

    def push(self, start: np.ndarray, end: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, ...]:
        s, e = np.asarray(start, np.int64), np.asarray(end, np.int64)
        v = np.asarray(values, np.float64)
        if not s.size:
            return _empty_intervals()
        if self.held is not None:
            s, e, v = np.r_[self.held[0], s], np.r_[self.held[1], e], np.r_[self.held[3], v]
        c2 = s + e
        mid = (c2[:-1] + c2[1:]) // 4
        lo, hi = s.copy(), e.copy()
        hi[:-1] = np.minimum(e[:-1], np.maximum(mid, s[1:]))
        lo[1:] = np.maximum(s[1:], np.minimum(mid, e[:-1]))
        if self.held is not None:
            lo[0] = self.held[2]
        if lo.size > 1:
            lo[1:] = np.maximum(lo[1:], np.maximum(self.max_hi, np.maximum.accumulate(hi[:-1])))
            self.max_hi = max(self.max_hi, int(hi[:-1].max()))
        self.held = (int(s[-1]), int(e[-1]), int(lo[-1]), float(v[-1]))
        return _final(lo[:-1], hi[:-1], v[:-1])

    def finish(self) -> tuple[np.ndarray, ...]:
        if self.held is None:
            return _empty_intervals()
        _, end, lo, value = self.held
        self.held = None
        return _final(np.array([lo]), np.array([end]), np.array([value]))


def _final(lo: np.ndarray, hi: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, ...]:
    keep = (lo < hi) & ~np.isnan(values)
    return lo[keep], hi[keep], values[keep].astype(np.float32).astype(np.float64)  # the values as stored


def _empty_intervals() -> tuple[np.ndarray, ...]:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)


_SPOOL = np.dtype([("lo", "<u4"), ("hi", "<u4"), ("value", "<f4")])


class _Spool:
    """Intervals as written, on disk (12 bytes each), with the totals the zoom levels need."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "wb")
        self.stats = _Stats()
        self.chroms: list[tuple[int, int, int]] = []  # chrom id, first record, record count

    def add(self, chrom: int, lo: np.ndarray, hi: np.ndarray, values: np.ndarray) -> None:
        if not lo.size:
            return
        records = np.empty(lo.size, _SPOOL)
        records["lo"], records["hi"], records["value"] = lo, hi, values
        self.file.write(records.tobytes())
        first = sum(n for *_, n in self.chroms)
        if self.chroms and self.chroms[-1][0] == chrom:
            chrom_id, at, n = self.chroms[-1]
            self.chroms[-1] = (chrom_id, at, n + lo.size)
        else:
            self.chroms.append((chrom, first, lo.size))
        self.stats.add(chrom, lo, hi, values)

    def close(self) -> None:
        self.file.close()  # idempotent

    def blocks(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """``(chrom id, lo, hi, values)`` in blocks of at most ``_ROWS``, in the order written."""
        with open(self.path, "rb") as f:
            for chrom, at, n in self.chroms:
                f.seek(at * _SPOOL.itemsize)
                for i in range(0, n, _ROWS):
                    records = np.fromfile(f, dtype=_SPOOL, count=min(_ROWS, n - i))
                    yield (
                        chrom,
                        records["lo"].astype(np.int64),
                        records["hi"].astype(np.int64),
                        records["value"].astype(np.float64),
                    )


class _Stats:
    """Running totals over the intervals written: the whole-file summary and what the zoom
    reductions depend on (interval count, bases covered, each chromosome's first and last base)."""

    def __init__(self) -> None:
        self.n = self.covered = 0
        self.low, self.high, self.total, self.squares = np.inf, -np.inf, 0.0, 0.0
        self.extent: dict[int, list[int]] = {}

    def add(self, chrom: int, lo: np.ndarray, hi: np.ndarray, values: np.ndarray) -> None:
        if not lo.size:
            return
        widths = (hi - lo).astype(np.float64)
        self.n += lo.size
        self.covered += int((hi - lo).sum())
        self.low, self.high = min(self.low, float(values.min())), max(self.high, float(values.max()))
        self.total += float(widths @ values)
        self.squares += float(widths @ (values * values))
        extent = self.extent.setdefault(chrom, [int(lo[0]), int(hi[-1])])
        extent[1] = int(hi[-1])


# --------------------------------------------------------------------------- bigWig zoom levels
#
# The format (UCSC's bbi files; Kent et al. 2010): a fixed header (zoom level count at 0x06,
# total-summary offset at 0x2C, uncompressed block size at 0x34), one 24-byte zoom header per
# level from 0x40 (reduction, reserved, data offset, index offset), the data, and per zoom level
# a block of 32-byte summary records (chrom id, start, end, bases covered, min, max, sum, sum of
# squares; zlib-compressed like the data) followed by an R-tree (cirTree) over the blocks.

_MAX_ZOOMS = 10  # zoom header slots pyBigWig reserves (addHeader's maxZooms)
_BIGWIG_MAGIC = 0x888FFC26
_CIRTREE_MAGIC = 0x2468ACE0
_ZOOM_RECORDS_PER_BLOCK = 512  # as UCSC's writers; 16 KiB uncompressed, within pyBigWig's 32 KiB buffer
_CIRTREE_BLOCK = 256  # children per R-tree node
_ZOOM_RECORD = np.dtype(
    [
        ("chrom", "<u4"),
        ("start", "<u4"),
        ("end", "<u4"),
        ("valid", "<u4"),
        ("min", "<f4"),
        ("max", "<f4"),
        ("sum", "<f4"),
        ("sumsq", "<f4"),
    ]
)


def zoom_records(lo: np.ndarray, hi: np.ndarray, values: np.ndarray, reduction: int) -> dict[str, np.ndarray]:
    """Summaries of sorted, disjoint intervals over the bins ``[k·reduction, (k+1)·reduction)``.

    An interval that crosses a bin border is split there. One record per bin that holds data:
    ``start``/``end`` (the extent of the data in that bin), ``valid`` (bases covered),
    ``min``, ``max``, ``sum`` and ``sumsq`` (base-weighted sum of values and of squares), as
    bigWig zoom records hold them.
    """
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    first, last = lo // reduction, (hi - 1) // reduction
    pieces = last - first + 1
    owner = np.repeat(np.arange(lo.size), pieces)
    within = np.arange(owner.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    bins = first[owner] + within
    start = np.maximum(lo[owner], bins * reduction)
    end = np.minimum(hi[owner], (bins + 1) * reduction)
    width = (end - start).astype(np.float64)
    value = values[owner]
    if not bins.size:
        empty = np.zeros(0)
        return {
            "start": empty.astype(np.int64),
            "end": empty.astype(np.int64),
            "valid": empty.astype(np.int64),
            "min": empty,
            "max": empty,
            "sum": empty,
            "sumsq": empty,
        }
    heads = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    tails = np.r_[heads[1:], bins.size] - 1
    return {
        "start": start[heads],
        "end": end[tails],
        "valid": np.add.reduceat(end - start, heads),
        "min": np.minimum.reduceat(value, heads),
        "max": np.maximum.reduceat(value, heads),
        "sum": np.add.reduceat(width * value, heads),
        "sumsq": np.add.reduceat(width * value * value, heads),
    }


def _zoom_reductions(chrom_lengths: list[int], stats: _Stats, slots: int) -> list[int]:
    """Bin sizes of the zoom levels: 16 × the mean interval width, then × 4 (as libBigWig and
    UCSC's tools), up to the longest chromosome, at most ``slots``, stopping after the first
    level that has a single record per chromosome (coarser ones would repeat it)."""
    longest = max(chrom_lengths)
    reduction = min(max(16 * (stats.covered // stats.n), 16), longest)
    out: list[int] = []
    while len(out) < slots:
        out.append(reduction)
        single = all((last - 1) // reduction == first // reduction for first, last in stats.extent.values())
        if single or reduction * 4 > longest:
            break
        reduction *= 4
    return out


def _cirtree(entries: list[tuple[int, int, int, int, int, int]], offset: int, end_of_data: int, per_slot: int) -> bytes:
    """An R-tree index (cirTree) over data blocks ``(chrom0, start, chrom1, end, offset, size)``
    (sorted), to be written at ``offset``; the root node follows the 48-byte header, each level
    after the one above it, the leaves last."""
    levels: list[list[Any]] = [[entries[i : i + _CIRTREE_BLOCK] for i in range(0, len(entries), _CIRTREE_BLOCK)]]
    while len(levels[0]) > 1:  # group nodes under parents until one root is left
        levels.insert(0, [levels[0][i : i + _CIRTREE_BLOCK] for i in range(0, len(levels[0]), _CIRTREE_BLOCK)])
    sizes = [
        [4 + (32 if depth == len(levels) - 1 else 24) * len(node) for node in level]
        for depth, level in enumerate(levels)
    ]
    starts, position = [], offset + 48
    for level_sizes in sizes:
        starts.append(np.cumsum([position, *level_sizes[:-1]]).tolist())
        position += sum(level_sizes)

    def bounds(node, depth):  # (chrom0, start, chrom1, end) covered by a node: its first and last block's
        first = last = node
        for _ in range(depth, len(levels) - 1):
            first, last = first[0], last[-1]
        return first[0][0], first[0][1], last[-1][2], last[-1][3]

    out = bytearray(
        struct.pack(
            "<IIQIIIIQII",
            _CIRTREE_MAGIC,
            _CIRTREE_BLOCK,
            len(entries),
            *entries[0][:2],
            *entries[-1][2:4],
            end_of_data,
            per_slot,
            0,
        )
    )
    for depth, level in enumerate(levels):
        leaf = depth == len(levels) - 1
        child = 0
        for node in level:
            out += struct.pack("<BBH", int(leaf), 0, len(node))
            for item in node:
                if leaf:
                    out += struct.pack("<IIIIQQ", *item)
                else:
                    out += struct.pack("<IIIIQ", *bounds(item, depth + 1), starts[depth + 1][child])
                    child += 1
    return bytes(out)


def write_zoom_levels(
    path: str | os.PathLike, chrom_lengths: list[int], parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]
) -> list[int]:
    """Add zoom levels (and an exact whole-file summary) to a bigWig that pyBigWig has closed.

    The levels are appended (before the closing magic number) into the zoom header slots
    pyBigWig reserved; whatever zoom level it wrote itself is left unreferenced.

    Parameters
    ----------
    path
        The bigWig, written with ``addHeader(..., maxZooms=N)`` (N > 0 slots).
    chrom_lengths
        Chromosome lengths in header order (chromosome id = index).
    parts
        ``(chrom_id, lo, hi, values)`` of every interval written, chromosomes in header order,
        intervals sorted and disjoint, values as stored.

    Returns
    -------
    list of int
        The zoom levels' bin sizes (empty when nothing was written).
    """
    parts = [part for part in parts if part[1].size]
    stats = _Stats()
    for part in parts:
        stats.add(*part)
    return _write_zoom_levels(path, chrom_lengths, stats, lambda: iter(parts))


def _write_zoom_levels(
    path: str | os.PathLike,
    chrom_lengths: list[int],
    stats: _Stats,
    blocks: Callable[[], Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]],
) -> list[int]:
    """:func:`write_zoom_levels` from running totals and a source of the intervals, read once per
    zoom level: ``blocks()`` yields ``(chrom_id, lo, hi, values)``, chromosomes in header order,
    a chromosome possibly over several consecutive blocks."""
    with open(path, "r+b") as f:
        head = f.read(0x40)
        if struct.unpack_from("<I", head, 0)[0] != _BIGWIG_MAGIC:
            raise ValueError(f"{path} is not a little-endian bigWig")
        summary_offset = struct.unpack_from("<Q", head, 0x2C)[0]
        slots = (summary_offset - 0x40) // 24
        buffer_size = struct.unpack_from("<I", head, 0x34)[0]
        if not stats.n or not slots or not buffer_size:  # no data, no reserved slots, or uncompressed blocks
            return []
        f.seek(summary_offset)
        f.write(struct.pack("<Qdddd", stats.covered, stats.low, stats.high, stats.total, stats.squares))
        f.seek(-4, os.SEEK_END)
        if struct.unpack("<I", f.read(4))[0] == _BIGWIG_MAGIC:
            f.seek(-4, os.SEEK_END)  # the closing magic is written again at the new end
        else:
            f.seek(0, os.SEEK_END)
        per_block = min(_ZOOM_RECORDS_PER_BLOCK, buffer_size // _ZOOM_RECORD.itemsize)
        reductions = _zoom_reductions(chrom_lengths, stats, slots)
        headers = []
        for reduction in reductions:
            data_offset = f.tell()
            f.write(struct.pack("<I", 0))  # record count, filled in below
            level = _ZoomLevel(f, reduction, per_block)
            for chrom, lo, hi, vals in blocks():
                level.add(chrom, lo, hi, vals)
            level.flush()
            index_offset = f.tell()
            f.write(_cirtree(level.entries, index_offset, index_offset, per_block))
            end = f.tell()
            f.seek(data_offset)
            f.write(struct.pack("<I", level.n_records))
            f.seek(end)
            headers.append(struct.pack("<IIQQ", reduction, 0, data_offset, index_offset))
        f.write(struct.pack("<I", _BIGWIG_MAGIC))
        f.truncate()
        f.seek(0x40)
        f.write(b"".join(headers) + bytes(24 * (slots - len(headers))))
        f.seek(0x06)
        f.write(struct.pack("<H", len(headers)))
    return reductions


class _ZoomLevel:
    """One zoom level's records, summarised block by block and written in compressed blocks of
    ``per_block`` records (a block never spans chromosomes). A block's last record is held back
    until the next block, which may add to the same bin."""

    def __init__(self, f: Any, reduction: int, per_block: int) -> None:
        self.f, self.reduction, self.per_block = f, reduction, per_block
        self.chrom: int | None = None
        self.pending: list[np.ndarray] = []  # records not yet written (the last one maybe unfinished)
        self.n_pending = 0
        self.entries: list[tuple[int, int, int, int, int, int]] = []
        self.n_records = 0

    def add(self, chrom: int, lo: np.ndarray, hi: np.ndarray, values: np.ndarray) -> None:
        if chrom != self.chrom:
            self.flush()
            self.chrom = chrom
        summary = zoom_records(lo, hi, values, self.reduction)
        records = np.zeros(summary["start"].size, dtype=_ZOOM_RECORD)
        if not records.size:
            return
        records["chrom"] = chrom
        for name, column in summary.items():
            records[name] = column
        if self.pending:
            last = self.pending[-1][-1:]
            if last["start"][0] // self.reduction == records["start"][0] // self.reduction:  # one bin across blocks
                first = records[0:1]
                first["start"], first["valid"] = last["start"], last["valid"] + first["valid"]
                first["min"], first["max"] = (
                    np.minimum(last["min"], first["min"]),
                    np.maximum(last["max"], first["max"]),
                )
                first["sum"], first["sumsq"] = last["sum"] + first["sum"], last["sumsq"] + first["sumsq"]
                self.pending[-1] = self.pending[-1][:-1]
                self.n_pending -= 1
        self.pending.append(records)
        self.n_pending += records.size
        self._write(keep_last=True)

    def flush(self) -> None:
        """Write everything pending (at the end of a chromosome)."""
        self._write(keep_last=False)

    def _write(self, keep_last: bool) -> None:
        ready = self.n_pending - 1 if keep_last else self.n_pending
        if ready < (self.per_block if keep_last else 1):
            return
        records = np.concatenate(self.pending)
        n_full = ready - ready % self.per_block if keep_last else ready
        for i in range(0, n_full, self.per_block):
            block = records[i : min(i + self.per_block, n_full)]
            packed = zlib.compress(block.tobytes())
            self.entries.append(
                (
                    int(block["chrom"][0]),
                    int(block["start"][0]),
                    int(block["chrom"][0]),
                    int(block["end"][-1]),
                    self.f.tell(),
                    len(packed),
                )
            )
            self.f.write(packed)
        self.n_records += n_full
        self.pending = [records[n_full:]] if n_full < records.size else []
        self.n_pending = records.size - n_full
