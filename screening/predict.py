"""Reference contact maps along whole regions, written as a ``.cool`` file.

The model sees one window at a time. To map a region longer than a window (a locus, a whole
chromosome), windows are tiled so that every output map lies on one genome-wide bin grid
(bin *k* covers ``[k·bin_size, (k+1)·bin_size)``), and each pixel is the mean over the windows
whose maps contain it. Pixels farther apart than a map's width are never predicted and are
absent from the file.

Pure pieces do the geometry and the averaging (:func:`tile_windows`, :class:`BandMean`,
:func:`coarsen_pixels`); :func:`predict_maps` runs the model; :func:`write_cool` and
:func:`write_mcool` are the only writers (through a temporary file renamed into place).

What ``count`` holds
--------------------
The model's output (C.Origami: log(1 + normalised contact); Orca: log observed/expected), as
float64 — not read counts, so neither balancing nor summing makes sense. A multi-resolution
``.mcool`` (:func:`write_mcool`) therefore holds, at each coarser resolution, the **mean** of the
predicted finer pixels it covers (pixels not predicted are left out, not counted as 0), computed
from the base resolution directly, never as a mean of means. ``cooler zoomify`` would *sum* the
values of a single-resolution ``.cool`` instead, which is wrong for them; the files' metadata
(``count``, ``aggregation``) says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from screening.core.errors import ScreeningError
from screening.compute.engine import load_span, stack_spans
from screening.store.export import atomic_path
from screening.models.base import WindowGeometry
from screening.compute.prefetch import predict_batches
from screening.core.regions import Region, RegionError

__all__ = [
    "BandMean", "PredictError", "PredictSummary", "Tiling", "check_resolutions", "coarsen_pixels", "default_resolutions",
    "dense_map",
    "predict_maps", "predict_regions", "predict_tilings", "predict_to_cool", "tile_regions", "tile_windows", "write_cool",
    "write_mcool",
]

#: What the stored values are, per model kind (the ``count`` column holds the model's output, not read counts).
VALUES = {
    "corigami": "C.Origami output: log(1 + normalised Hi-C contact)",
    "orca": "Orca output: log fold of observed over distance-expected contact",
}


#: HiGlass's tile width in bins: the default resolutions of a ``.mcool`` stop at the first one whose
#: single tile covers the whole genome (as ``cooler zoomify``'s default).
HIGLASS_TILE_BINS = 256

#: How the coarser resolutions of a ``.mcool`` are made (the ``aggregation`` entry of its metadata).
MEAN_AGGREGATION = (
    "mean: each pixel of a coarser resolution is the mean of the predicted pixels of the base resolution "
    "that it covers (in the full, symmetric matrix), pixels that were not predicted left out; "
    "never summed, as the values are log-scale model output"
)

#: What ``count`` holds and what not to do with it (the ``count`` entry of every file's metadata).
COUNT_NOTE = (
    "count holds the model's output (see 'values'), a float, not read counts: do not balance it, and do not "
    "sum it into coarser bins ('cooler zoomify' sums; write a .mcool with 'screening predict' instead, whose "
    "coarser resolutions are means)"
)


class PredictError(ScreeningError, ValueError):
    """Bad arguments of a prediction (stride, resolutions)."""


@dataclass(frozen=True)
class PredictSummary:
    """What :func:`predict_to_cool` wrote.

    Attributes
    ----------
    path
        The file written (``.cool``, or ``.mcool`` with several resolutions).
    regions
        The regions predicted (parsed, 0-based half-open).
    bin_size
        The model's output bin size in bp: the base (finest) resolution.
    resolutions
        Every resolution written, in bp, ascending: ``(bin_size,)`` for a ``.cool``.
    n_windows
        Model windows run.
    n_pixels
        Pixels written at the base resolution.
    symmetric
        Upper-triangle storage (``symmetric-upper``); otherwise every pixel is stored (``square``).
    pixels
        Per chromosome, the base-resolution pixels ``bin1_id, bin2_id, count`` (grid bins within
        the chromosome), as :func:`predict_regions` returns them.
    """

    path: str
    regions: list[Region]
    bin_size: int
    resolutions: tuple[int, ...]
    n_windows: int
    n_pixels: int
    symmetric: bool
    pixels: dict[str, pd.DataFrame]


@dataclass(frozen=True)
class Tiling:
    """Windows tiling the regions of one chromosome.

    Attributes
    ----------
    chrom
        Chromosome name.
    map_start_bins
        Grid bin of each window's first map bin (ascending).
    window_starts
        Each window's start in bp: ``map_start_bin · bin_size − map_offset``.
    keep
        Boolean mask over the grid bins ``[first_bin, first_bin + len(keep))`` that lie in a
        requested region; only pixels whose two bins are kept are written.
    first_bin
        Grid bin of ``keep[0]``.
    """

    chrom: str
    map_start_bins: np.ndarray
    window_starts: np.ndarray
    keep: np.ndarray
    first_bin: int


def tile_windows(
    regions: Sequence[Region], geometry: WindowGeometry, chrom_length: int, stride_bins: int | None = None
) -> Tiling:
    """Windows whose maps cover ``regions`` (one chromosome) on the genome-wide bin grid.

    Maps start every ``stride_bins`` bins (default: half a map, so every pixel near the
    diagonal is seen by two windows); a region narrower than a map gets one window centred on
    it. Windows stay inside the chromosome: near its ends they are shifted inwards.

    Raises
    ------
    RegionError
        If the regions span several chromosomes, or the chromosome is shorter than a window.
    PredictError
        If ``stride_bins`` is not between 1 and the map's width in bins.
    """
    bin_size, n_bins, offset = geometry.bin_size, geometry.n_bins, geometry.map_offset
    chroms = {r.chrom for r in regions}
    if len(chroms) != 1:
        raise RegionError(f"tile_windows takes regions of one chromosome, got {sorted(chroms)}")
    chrom = chroms.pop()
    stride = max(1, n_bins // 2) if stride_bins is None else stride_bins
    if not 1 <= stride <= n_bins:
        raise PredictError(f"stride_bins: {stride} must be between 1 and the map width ({n_bins} bins)")
    lowest = -(-offset // bin_size)  # first map start bin whose window starts at or after 0
    highest = (chrom_length - geometry.window_length + offset) // bin_size  # last one whose window fits
    if highest < lowest:
        raise RegionError(
            f"{chrom} ({chrom_length:,} bp) is shorter than the model window ({geometry.window_length:,} bp)"
        )
    spans = [(r.start // bin_size, -(-r.end // bin_size)) for r in regions]  # grid bins [first, last) of each
    starts: list[int] = []
    for first, last in spans:
        if last - first <= n_bins:
            starts.append(first - (n_bins - (last - first)) // 2)
        else:
            starts += range(first, last - n_bins + 1, stride)
            if starts[-1] + n_bins < last:
                starts.append(last - n_bins)
    map_starts = np.unique(np.clip(np.asarray(starts, dtype=np.int64), lowest, highest))
    first_bin = min(first for first, _ in spans)
    keep = np.zeros(max(last for _, last in spans) - first_bin, dtype=bool)
    for first, last in spans:
        keep[first - first_bin : last - first_bin] = True
    return Tiling(chrom, map_starts, map_starts * bin_size - offset, keep, first_bin)


def tile_regions(
    regions: Sequence[Region], geometry: WindowGeometry, chrom_sizes: dict[str, int], stride_bins: int | None = None
) -> list[Tiling]:
    """:func:`tile_windows` of each chromosome's regions (several on one chromosome are tiled together)."""
    by_chrom: dict[str, list[Region]] = {}
    for region in regions:
        by_chrom.setdefault(region.chrom, []).append(region)
    return [tile_windows(rs, geometry, chrom_sizes[chrom], stride_bins) for chrom, rs in by_chrom.items()]


class BandMean:
    """Running mean of overlapping maps on one chromosome's bin grid, kept as a band.

    Row ``i`` of the band is grid bin ``first_bin + i``; column ``c`` is the diagonal offset
    ``c`` (symmetric maps: upper triangle only) or ``c − (n_bins − 1)`` (otherwise).

    Parameters
    ----------
    first_bin, n_rows
        The grid bins the band covers.
    n_bins
        Width of one map in bins.
    symmetric
        Keep the upper triangle only (the maps are symmetric).
    """

    def __init__(self, first_bin: int, n_rows: int, n_bins: int, symmetric: bool) -> None:
        self.first_bin, self.n_bins = first_bin, n_bins
        self._low = 0 if symmetric else n_bins - 1  # band column of diagonal offset 0
        self.sum = np.zeros((n_rows, self._low + n_bins), dtype=np.float64)
        self.count = np.zeros(self.sum.shape, dtype=np.uint32)
        rows, cols = np.triu_indices(n_bins) if symmetric else np.indices((n_bins, n_bins)).reshape(2, -1)
        self._rows, self._cols = rows, cols
        self._band_cols = cols - rows + self._low

    def add(self, map_start_bin: int, values: np.ndarray) -> None:
        """Add one ``[n_bins, n_bins]`` map whose first bin is grid bin ``map_start_bin``."""
        first_row = map_start_bin - self.first_bin
        if first_row < 0 or first_row + self.n_bins > len(self.sum):
            raise ValueError(f"a map at bin {map_start_bin} leaves the band (bins {self.first_bin}-{self.first_bin + len(self.sum)})")
        rows = self._rows + first_row
        self.sum[rows, self._band_cols] += values[self._rows, self._cols]  # each (row, col) once per map
        self.count[rows, self._band_cols] += 1

    def pixels(self, keep: np.ndarray | None = None) -> pd.DataFrame:
        """``bin1_id, bin2_id, count`` (grid bins, the mean as ``count``) of every predicted pixel.

        Sorted by ``bin1_id`` then ``bin2_id``. With ``keep`` (a mask over the band's rows, one
        per grid bin it covers), only pixels whose two bins are kept.
        """
        rows, cols = np.nonzero(self.count)  # row-major: sorted by row, then by column
        partner = rows + cols - self._low  # every map lies inside the band, so its partner bin does too
        if keep is not None:
            kept = keep[rows] & keep[partner]
            rows, cols, partner = rows[kept], cols[kept], partner[kept]
        return pd.DataFrame({
            "bin1_id": rows + self.first_bin,
            "bin2_id": partner + self.first_bin,
            "count": self.sum[rows, cols] / self.count[rows, cols],
        })


def predict_maps(adapter, genome, tracks, chrom: str, window_starts: Iterable[int], batch_size: int) -> Iterator[np.ndarray]:
    """The adapter's map of each window ``[start, start + window_length)`` of ``chrom``, in order."""
    length = adapter.geometry.window_length
    starts = [int(s) for s in window_starts]

    def batches():
        for i in range(0, len(starts), batch_size):
            yield stack_spans([load_span(genome, tracks, chrom, s, s + length) for s in starts[i : i + batch_size]])

    for maps in predict_batches(adapter, batches()):
        yield from maps


def predict_regions(
    adapter,
    genome,
    tracks,
    regions: Sequence[Region],
    batch_size: int = 4,
    stride_bins: int | None = None,
    symmetrize: bool = False,
    progress: bool = False,
) -> dict[str, pd.DataFrame]:
    """Mean predicted pixels of every region, per chromosome (grid bin ids within the chromosome).

    Parameters
    ----------
    adapter
        The model (:class:`~screening.models.base.ModelAdapter`).
    genome, tracks
        Sequence and track readers (:class:`~screening.io.genome.Genome`, :class:`~screening.io.tracks.TrackSet`).
    regions
        0-based, half-open regions; several on one chromosome are tiled together.
    batch_size
        Windows per forward pass.
    stride_bins
        Bins between consecutive windows' maps (default: half a map).
    symmetrize
        Average each map with its transpose first (for models whose maps are not symmetric),
        and keep the upper triangle.
    progress
        Show a progress bar over windows.
    """
    tilings = tile_regions(regions, adapter.geometry, genome.chrom_sizes, stride_bins)
    return predict_tilings(adapter, genome, tracks, tilings, batch_size, symmetrize, progress)


def predict_tilings(
    adapter, genome, tracks, tilings: Sequence[Tiling], batch_size: int = 4, symmetrize: bool = False, progress: bool = False
) -> dict[str, pd.DataFrame]:
    """:func:`predict_regions` over tilings made already (:func:`tile_regions`)."""
    from tqdm.auto import tqdm

    n_bins = adapter.geometry.n_bins
    symmetric = bool(adapter.symmetric or symmetrize)
    bar = tqdm(total=sum(len(t.window_starts) for t in tilings), unit="window", disable=not progress)
    out: dict[str, pd.DataFrame] = {}
    for tiling in tilings:
        first = min(tiling.first_bin, int(tiling.map_start_bins[0]))
        last = max(tiling.first_bin + len(tiling.keep), int(tiling.map_start_bins[-1]) + n_bins)
        band = BandMean(first, last - first, n_bins, symmetric)
        maps = predict_maps(adapter, genome, tracks, tiling.chrom, tiling.window_starts, batch_size)
        for map_start, values in zip(tiling.map_start_bins.tolist(), maps):
            band.add(map_start, (values + values.T) / 2 if symmetrize else values)
            bar.update()
        keep = np.zeros(last - first, dtype=bool)
        keep[tiling.first_bin - first : tiling.first_bin - first + len(tiling.keep)] = tiling.keep
        out[tiling.chrom] = band.pixels(keep)
    bar.close()
    return out


def write_cool(
    path: str | os.PathLike,
    chrom_sizes: dict[str, int],
    bin_size: int,
    pixels: dict[str, pd.DataFrame],
    symmetric: bool,
    metadata: dict[str, Any] | None = None,
    assembly: str | None = None,
) -> None:
    """Write predicted pixels as a ``.cool`` file (float ``count``; never half-written).

    Parameters
    ----------
    path
        The ``.cool`` file; replaced if it exists.
    chrom_sizes
        Every chromosome of the genome, in order (the file's bin table covers them all).
    bin_size
        The model's output bin size in bp.
    pixels
        Per chromosome, ``bin1_id, bin2_id, count`` with grid bins within that chromosome
        (what :func:`predict_regions` returns).
    symmetric
        Upper-triangle storage (``symmetric-upper``); otherwise every pixel is stored (square).
    metadata
        JSON-able provenance stored in the file's ``metadata`` attribute.
    assembly
        Genome assembly name.
    """
    import cooler

    json.dumps(metadata)  # fail before anything is written if it is not JSON-able
    bins, table = _genome_table(chrom_sizes, bin_size, pixels)
    with atomic_path(path) as tmp:
        cooler.create_cooler(
            str(tmp), bins, table, dtypes={"count": "float64"}, ordered=True, symmetric_upper=symmetric,
            triucheck=symmetric, metadata=metadata or {}, assembly=assembly,
        )


def _genome_table(chrom_sizes: dict[str, int], bin_size: int, pixels: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """cooler's bin table of the genome at ``bin_size``, and the pixels with genome-wide bin ids (sorted)."""
    import cooler

    bins = cooler.binnify(pd.Series(chrom_sizes, dtype=np.int64), bin_size)
    offsets = np.concatenate([[0], np.cumsum([-(-size // bin_size) for size in chrom_sizes.values()])])
    offset_of = dict(zip(chrom_sizes, offsets[:-1].tolist()))
    parts = [frame.assign(bin1_id=frame["bin1_id"] + offset_of[chrom], bin2_id=frame["bin2_id"] + offset_of[chrom])
             for chrom, frame in sorted(pixels.items(), key=lambda item: offset_of[item[0]])]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"bin1_id": [], "bin2_id": [], "count": []})
    return bins, table


def default_resolutions(bin_size: int, chrom_sizes: dict[str, int], tile_bins: int = HIGLASS_TILE_BINS) -> list[int]:
    """``bin_size · 2^k`` for k = 0, 1, … up to the first resolution at which one tile of
    ``tile_bins`` bins covers the whole genome (``cooler zoomify``'s default binary progression)."""
    widest = -(-sum(chrom_sizes.values()) // tile_bins)
    out = [bin_size]
    while out[-1] < widest:
        out.append(out[-1] * 2)
    return out


def check_resolutions(resolutions: Iterable[int], bin_size: int) -> list[int]:
    """Sorted distinct ``resolutions``, each a positive multiple of ``bin_size``, with ``bin_size`` first.

    Raises
    ------
    PredictError
        If one is not a positive multiple of the model's bin size.
    """
    wanted = sorted({int(r) for r in resolutions} | {bin_size})
    bad = [r for r in wanted if r <= 0 or r % bin_size]
    if bad:
        raise PredictError(
            f"resolutions: {', '.join(map(str, bad))} bp is not a multiple of the model's bin size ({bin_size:,} bp)"
        )
    return wanted


def coarsen_pixels(pixels: pd.DataFrame, factor: int, symmetric: bool) -> pd.DataFrame:
    """Pixels of one chromosome at ``factor`` times coarser bins: each the mean of the pixels it covers.

    Coarse bin ``K`` covers fine bins ``[K·factor, (K+1)·factor)`` (grid bins within the
    chromosome). The mean is over the fine pixels present (absent ones are not predicted and left
    out, not counted as 0), taken in the full matrix: with upper-triangle storage
    (``symmetric``), an off-diagonal fine pixel that falls in a diagonal coarse pixel stands for
    itself and its mirror image, so it counts twice there.

    Parameters
    ----------
    pixels
        ``bin1_id, bin2_id, count`` (what :func:`predict_regions` returns for one chromosome).
    factor
        Fine bins per coarse bin (≥ 1).
    symmetric
        The pixels are the upper triangle of a symmetric matrix.

    Returns
    -------
    pandas.DataFrame
        ``bin1_id, bin2_id, count`` at the coarse bins, sorted by ``bin1_id`` then ``bin2_id``.
    """
    if factor < 1:
        raise PredictError(f"coarsening factor {factor} must be at least 1")
    fine1 = pixels["bin1_id"].to_numpy(dtype=np.int64)
    fine2 = pixels["bin2_id"].to_numpy(dtype=np.int64)
    values = pixels["count"].to_numpy(dtype=np.float64)
    coarse1, coarse2 = fine1 // factor, fine2 // factor
    weight = np.ones(len(values))
    if symmetric:
        weight[(coarse1 == coarse2) & (fine1 != fine2)] = 2.0
    if not len(values):
        return pd.DataFrame({"bin1_id": coarse1, "bin2_id": coarse2, "count": values})
    width = int(coarse2.max()) + 1
    keys, which = np.unique(coarse1 * width + coarse2, return_inverse=True)  # sorted: by bin1, then bin2
    total = np.bincount(which, weights=weight * values, minlength=len(keys))
    count = np.bincount(which, weights=weight, minlength=len(keys))
    return pd.DataFrame({"bin1_id": keys // width, "bin2_id": keys % width, "count": total / count})


def write_mcool(
    path: str | os.PathLike,
    chrom_sizes: dict[str, int],
    bin_size: int,
    pixels: dict[str, pd.DataFrame],
    symmetric: bool,
    resolutions: Sequence[int] | None = None,
    metadata: dict[str, Any] | None = None,
    assembly: str | None = None,
) -> list[int]:
    """Write predicted pixels as a multi-resolution ``.mcool`` (never half-written).

    The layout is the one ``cooler zoomify`` writes (MCOOL format version 2: one cooler per
    resolution under ``resolutions/<bp>``), readable by cooler (``cooler ls``,
    ``path::resolutions/<bp>``) and HiGlass. The base resolution holds ``pixels`` as they are;
    each coarser one the mean of the base pixels it covers (:func:`coarsen_pixels`, always from
    the base resolution, so no mean of means). Every resolution's metadata is ``metadata`` plus
    ``resolution``, ``base_resolution`` and ``aggregation``.

    Parameters
    ----------
    path
        The ``.mcool`` file; replaced if it exists.
    chrom_sizes, bin_size, pixels, symmetric, assembly
        As for :func:`write_cool`.
    resolutions
        Resolutions in bp, each a multiple of ``bin_size`` (``bin_size`` is always written);
        default :func:`default_resolutions`.
    metadata
        JSON-able provenance.

    Returns
    -------
    list of int
        The resolutions written, ascending.

    Raises
    ------
    PredictError
        If a resolution is not a positive multiple of ``bin_size``.
    """
    import cooler
    import h5py

    wanted = check_resolutions(default_resolutions(bin_size, chrom_sizes) if resolutions is None else resolutions, bin_size)
    json.dumps(metadata)  # fail before anything is written if it is not JSON-able
    with atomic_path(path) as tmp:
        for k, resolution in enumerate(wanted):
            factor = resolution // bin_size
            coarse = {chrom: frame if factor == 1 else coarsen_pixels(frame, factor, symmetric) for chrom, frame in pixels.items()}
            bins, table = _genome_table(chrom_sizes, resolution, coarse)
            cooler.create_cooler(
                f"{tmp}::resolutions/{resolution}", bins, table, dtypes={"count": "float64"}, ordered=True,
                symmetric_upper=symmetric, triucheck=symmetric, assembly=assembly, mode="w" if k == 0 else "a",
                metadata={**(metadata or {}), "resolution": resolution, "base_resolution": bin_size,
                          "aggregation": "none (base resolution)" if factor == 1 else MEAN_AGGREGATION},
            )
        with h5py.File(tmp, "r+") as f:
            f.attrs.update({"format": "HDF5::MCOOL", "format-version": 2})
    return wanted


def dense_map(pixels: pd.DataFrame, first_bin: int, n: int, symmetric: bool) -> np.ndarray:
    """Pixels of grid bins ``[first_bin, first_bin + n)`` as an ``[n, n]`` matrix, NaN where not predicted."""
    out = np.full((n, n), np.nan)
    inside = pixels["bin1_id"].between(first_bin, first_bin + n - 1) & pixels["bin2_id"].between(first_bin, first_bin + n - 1)
    i = pixels["bin1_id"].to_numpy()[inside] - first_bin
    j = pixels["bin2_id"].to_numpy()[inside] - first_bin
    values = pixels["count"].to_numpy()[inside]
    out[i, j] = values
    if symmetric:
        out[j, i] = values
    return out


def predict_to_cool(
    spec,
    path: str | os.PathLike,
    regions: Sequence[str] | None = None,
    batch_size: int | None = None,
    stride_bins: int | None = None,
    symmetrize: bool = False,
    progress: bool = True,
    resolutions: Sequence[int] | None = None,
) -> PredictSummary:
    """Predict the reference maps of ``regions`` (default: the spec's) and write them to a ``.cool``
    file, or a multi-resolution ``.mcool`` when ``path`` ends with ``.mcool``.

    Uses the spec's model, genome, tracks and ``execution`` settings (device, precision, batch
    size). The file's metadata records what ``count`` holds (``values``, ``count``), the regions,
    the tiling, the spec and the provenance (package and library versions, model checksum,
    genome and track checksums); a ``.mcool``'s also how its coarser resolutions are made
    (``aggregation``: the mean of the predicted finer pixels, see :func:`write_mcool`).

    Parameters
    ----------
    resolutions
        Resolutions of a ``.mcool`` in bp, each a multiple of the model's bin size (which is
        always written); default :func:`default_resolutions`. Only with a ``.mcool`` path.

    Returns
    -------
    PredictSummary
        What was written, and the base-resolution pixels.

    Raises
    ------
    RegionError, GenomeError, TrackError, ModelError, PredictError
        On a bad region, input, stride or resolution; nothing is written then.
    OutputPathError
        If ``path`` is a directory or its folder cannot be written.
    """
    from screening.io.paths import check_output_file
    from screening.core.regions import parse_region, validate_region
    from screening.prepare import check_model_tracks, input_provenance, load_configured_model, open_inputs, screen_regions

    check_output_file(path)  # before minutes of prediction: a directory or a read-only folder is refused now
    multires = str(path).lower().endswith(".mcool")
    if resolutions is not None and not multires:
        raise PredictError(f"resolutions: several resolutions are written to a .mcool file, not to {path}")
    genome, tracks = open_inputs(spec)
    sizes = genome.chrom_sizes
    if regions:
        parsed = [validate_region(parse_region(text), sizes, source="--region") for text in regions]
    else:
        parsed = screen_regions(spec, sizes)
    tracks.check({r.chrom: sizes[r.chrom] for r in parsed})
    adapter, precision = load_configured_model(spec)
    check_model_tracks(adapter, tracks)
    geometry = adapter.geometry
    if multires:  # a bad resolution is refused before the prediction
        wanted = check_resolutions(default_resolutions(geometry.bin_size, sizes) if resolutions is None else resolutions,
                                   geometry.bin_size)
    tilings = tile_regions(parsed, geometry, sizes, stride_bins)  # a bad region or stride is refused here
    windows: dict[str, list[tuple[int, int]]] = {}
    for tiling in tilings:
        windows.setdefault(tiling.chrom, []).extend((int(s), int(s) + geometry.window_length) for s in tiling.window_starts)
    tracks.probe(windows)  # a corrupt bigWig block is refused before the prediction, not after
    pixels = predict_tilings(adapter, genome, tracks, tilings, batch_size or spec.execution.batch_size, symmetrize, progress)
    symmetric = bool(adapter.symmetric or symmetrize)
    metadata = {
        "what": "contact maps predicted by a model, tiled along regions (screening predict)",
        "values": VALUES.get(spec.model.kind, "the model's output map"),
        "count": COUNT_NOTE,
        "regions": [str(r) for r in parsed],
        "stride_bins": stride_bins or max(1, geometry.n_bins // 2),
        "symmetrized": bool(symmetrize and not adapter.symmetric),
        "precision": precision,
        "provenance": input_provenance(spec, adapter, genome, tracks),
        "spec": spec.model_dump(mode="json"),
    }
    if multires:
        written = write_mcool(path, sizes, geometry.bin_size, pixels, symmetric, wanted, metadata, assembly=genome.name)
    else:
        write_cool(path, sizes, geometry.bin_size, pixels, symmetric, metadata, assembly=genome.name)
        written = [geometry.bin_size]
    return PredictSummary(
        path=str(path), regions=parsed, bin_size=geometry.bin_size, resolutions=tuple(written),
        n_windows=sum(len(t.window_starts) for t in tilings), n_pixels=int(sum(len(frame) for frame in pixels.values())),
        symmetric=symmetric, pixels=pixels,
    )
