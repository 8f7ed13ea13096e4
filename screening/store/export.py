"""Exports of one score of a result store to genome-browser tracks (bedGraph, bigWig).

Both writers go through a temporary file in the destination directory that is renamed
into place, so a failed export never leaves a half-written file behind. Rows whose chunk is
not computed yet (NaN) are skipped.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyBigWig

from screening.io.paths import OutputPathError, check_output_file, is_disk_full
from screening.core.regions import Region
from screening.store.reader import Results, open_results

__all__ = ["atomic_path", "bigwig_intervals", "export_format", "to_bedgraph", "to_bigwig"]

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
            raise OutputPathError(f"disk full while writing {path}; free space and export again (nothing was written)") from None
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
            rows = pd.DataFrame(
                {"chrom": reg.chrom, "start": start[keep], "end": end[keep], "score": values[keep]}
            )
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
    """Write one score as a bigWig over the store's chromosome sizes.

    bigWig needs sorted, non-overlapping intervals, so each perturbation's value covers the
    interval given by :func:`bigwig_intervals` (its own interval where perturbations do not
    overlap; otherwise a step-wide interval around its centre). Intervals are computed over
    every perturbation, computed or not, then NaN values are skipped, so not-yet-computed
    perturbations leave gaps rather than being filled by their neighbours.

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
        bw = pyBigWig.open(str(tmp), "w")
        if bw is None:  # pyBigWig reports no error of its own
            raise OutputPathError(f"output {path}: pyBigWig cannot open {tmp} for writing")
        try:
            bw.addHeader(header)
            for reg in regions:
                _add_region(bw, results, reg, analysis, score)
        finally:
            bw.close()
    return Path(path)


def _add_region(bw, results: Results, region: Region, analysis: str, score: str) -> None:
    start, end, values = _rows(results, region, analysis, score)
    lo, hi, index = bigwig_intervals(start, end)
    vals = values[index].astype(np.float64)
    keep = ~np.isnan(vals)
    lo, hi, vals = lo[keep], hi[keep], vals[keep]
    for i in range(0, lo.size, _BATCH):
        part = slice(i, i + _BATCH)
        n = lo[part].size
        bw.addEntries([region.chrom] * n, lo[part].tolist(), ends=hi[part].tolist(), values=vals[part].tolist())
