"""Reference contact maps along whole regions, written as a ``.cool`` file.

The model sees one window at a time. To map a region longer than a window (a locus, a whole
chromosome), windows are tiled so that every output map lies on one genome-wide bin grid
(bin *k* covers ``[k·bin_size, (k+1)·bin_size)``), and each pixel is the mean over the windows
whose maps contain it. Pixels farther apart than a map's width are never predicted and are
absent from the file.

Pure pieces do the geometry and the averaging (:func:`tile_windows`, :class:`BandMean`);
:func:`predict_maps` runs the model; :func:`write_cool` is the only writer (through a temporary
file renamed into place).
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
    "BandMean", "PredictError", "Tiling", "dense_map", "predict_maps", "predict_regions", "predict_tilings", "predict_to_cool",
    "tile_regions", "tile_windows", "write_cool",
]

#: What the stored values are, per model kind (the ``count`` column holds the model's output, not read counts).
VALUES = {
    "corigami": "C.Origami output: log(1 + normalised Hi-C contact)",
    "orca": "Orca output: log fold of observed over distance-expected contact",
}


class PredictError(ScreeningError, ValueError):
    """Bad arguments of a prediction (stride)."""


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

    bins = cooler.binnify(pd.Series(chrom_sizes, dtype=np.int64), bin_size)
    offsets = np.concatenate([[0], np.cumsum([-(-size // bin_size) for size in chrom_sizes.values()])])
    offset_of = dict(zip(chrom_sizes, offsets[:-1].tolist()))
    parts = [frame.assign(bin1_id=frame["bin1_id"] + offset_of[chrom], bin2_id=frame["bin2_id"] + offset_of[chrom])
             for chrom, frame in sorted(pixels.items(), key=lambda item: offset_of[item[0]])]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"bin1_id": [], "bin2_id": [], "count": []})
    json.dumps(metadata)  # fail before anything is written if it is not JSON-able
    with atomic_path(path) as tmp:
        cooler.create_cooler(
            str(tmp), bins, table, dtypes={"count": "float64"}, ordered=True, symmetric_upper=symmetric,
            triucheck=symmetric, metadata=metadata or {}, assembly=assembly,
        )


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
) -> dict[str, Any]:
    """Predict the reference maps of ``regions`` (default: the spec's) and write them to a ``.cool`` file.

    Uses the spec's model, genome, tracks and ``execution`` settings (device, precision, batch
    size). The file's metadata records the regions, the tiling, the spec and the provenance
    (package and library versions, model checksum, genome and track checksums).

    Returns
    -------
    dict
        ``path``, ``regions`` (parsed), ``bin_size``, ``n_windows``, ``n_pixels``, ``symmetric``
        and ``pixels`` (per chromosome, as :func:`predict_regions` returns them).

    Raises
    ------
    RegionError, GenomeError, TrackError, ModelError, PredictError
        On a bad region, input or stride; nothing is written then.
    OutputPathError
        If ``path`` is a directory or its folder cannot be written.
    """
    from screening.io.paths import check_output_file
    from screening.core.regions import parse_region, validate_region
    from screening.prepare import check_model_tracks, input_provenance, load_configured_model, open_inputs, screen_regions

    check_output_file(path)  # before minutes of prediction: a directory or a read-only folder is refused now
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
        "regions": [str(r) for r in parsed],
        "stride_bins": stride_bins or max(1, geometry.n_bins // 2),
        "symmetrized": bool(symmetrize and not adapter.symmetric),
        "precision": precision,
        "provenance": input_provenance(spec, adapter, genome, tracks),
        "spec": spec.model_dump(mode="json"),
    }
    write_cool(path, sizes, geometry.bin_size, pixels, symmetric, metadata, assembly=genome.name)
    n_windows = sum(len(t.window_starts) for t in tilings)
    return {"path": str(path), "regions": parsed, "bin_size": geometry.bin_size, "n_windows": n_windows,
            "n_pixels": int(sum(len(frame) for frame in pixels.values())), "symmetric": symmetric, "pixels": pixels}
