"""Per-base importance read from a result store, block by block, with the reference sequence.

An ``attribution`` analysis stores ``attribution`` / ``attribution_corrected`` ``float32 [position, 4]``:
gradient-type values for every base, i.e. *hypothetical* contributions; the contribution of a position is
the value at its reference base. A ``mutagenesis`` analysis stores every score as ``[position, 4]`` (the
effect of each substitution, NaN at the reference base); it is turned into hypothetical contributions the
way tangermeme turns saturation mutagenesis into attributions
(``tangermeme.saturation_mutagenesis._attribution_score``): ``Δ[b]`` = prediction with base ``b`` minus
the reference prediction (``Δ[ref] = 0``), centred on its mean over the four bases; the contribution of
the reference base is then ``-mean_b Δ[b]``. A score that measures how far the perturbed map is from the
reference (``impact_*``, ``scd``, ``mse``: ``≥ 0``) is a change of the map, not a signed prediction, so
``Δ = -score`` (a substitution that changes the map more means the reference base was more needed);
correlations (``pearson``, ``spearman``: 1 = unchanged) give ``Δ = score - 1``; signed scores
(``insulation_delta``, ``ssd``, ``roi_mean_delta``, …) are used as ``Δ`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from screening.core.regions import Region
from screening.interpret.motifs.core import MotifError
from screening.maps.score import SCORES

__all__ = ["Block", "PerBaseSource", "ism_to_hypothetical", "open_source"]

# The registry says how each score reads (Score.direction).
_EFFECT_SIZES = tuple(name for name, s in SCORES.items() if s.direction == "distance")  # impact_*, scd, mse, *_mse
_CORRELATIONS = tuple(name for name, s in SCORES.items() if s.direction == "similarity")  # pearson, spearman, ssi, scc


def ism_to_hypothetical(scores: np.ndarray, ref: np.ndarray, score: str = "") -> np.ndarray:
    """Hypothetical contributions ``float32 [n, 4]`` from saturation-mutagenesis scores ``[n, 4]``.

    ``ref`` holds the reference base codes (A0 C1 G2 T3; others mark the row invalid). Rows with a
    missing substitution (NaN away from the reference base) or an unknown reference come back NaN.
    """
    base = score.removesuffix("_aligned")
    delta = np.asarray(scores, np.float64)
    if base in _EFFECT_SIZES:
        delta = -delta
    elif base in _CORRELATIONS:
        delta = delta - 1.0
    delta = delta.copy()
    ref = np.asarray(ref)
    ok = (ref >= 0) & (ref < 4)
    rows = np.flatnonzero(ok)
    delta[rows, ref[rows]] = 0.0  # the reference against itself
    bad = ~ok | ~np.isfinite(delta).all(axis=1)
    hyp = delta - delta.mean(axis=1, keepdims=True)
    hyp[bad] = np.nan
    return hyp.astype(np.float32)


@dataclass
class Block:
    """One stretch of the input: positions ``[start, start + len)`` on ``chrom``; seqlets starting in
    ``[own_start, own_end)`` belong to it (the rest of it is context shared with its neighbours)."""

    chrom: str
    start: int
    own_start: int
    own_end: int
    one_hot: np.ndarray  # float32 [L, 4]; zeros at N and where nothing was computed
    contrib: np.ndarray  # float32 [L, 4] hypothetical contributions; zeros where nothing was computed
    n_valid: int

    @property
    def n_owned(self) -> int:
        """Computed positions in ``[own_start, own_end)`` (the margins are counted by the neighbours)."""
        owned = self.one_hot[self.own_start - self.start : self.own_end - self.start]
        return int(np.count_nonzero(owned.any(axis=1)))

    @property
    def projected(self) -> np.ndarray:
        """Contribution of the observed base at each position ``float32 [L]``."""
        return (self.one_hot * self.contrib).sum(axis=1)


class PerBaseSource:
    """Reads an analysis's per-base importance region by region (see the module docstring)."""

    def __init__(self, results, analysis: str, score: str, kind: str, genome=None) -> None:
        self.results, self.analysis, self.score, self.kind, self._genome = results, analysis, score, kind, genome

    def blocks(self, region: Region, block_size: int, margin: int) -> Iterator[Block]:
        """Blocks of ``block_size`` owned positions tiling ``region``, each read with ``margin`` bases of
        context on both sides (clipped to the region)."""
        assert region.end is not None
        for own in range(region.start, region.end, block_size):
            own_end = min(own + block_size, region.end)
            lo, hi = max(region.start, own - margin), min(region.end, own_end + margin)
            block = self._read(region.chrom, lo, hi, own, own_end)
            if block is not None:
                yield block
            del block  # not held while the next block is read

    def _read(self, chrom: str, lo: int, hi: int, own: int, own_end: int) -> Block | None:
        ds = self.results.query(Region(chrom, lo, hi), analysis=self.analysis)
        if ds.sizes["perturbation"] == 0:
            return None
        positions = np.asarray(ds["start"].values, np.int64)
        values = self._scores(ds, chrom)
        if values.ndim != 2 or values.shape[1] != 4:
            raise MotifError(f"score {self.score!r} of analysis {self.analysis!r} is not per base ([position, 4])")
        ref = self._reference(ds, chrom, lo, hi, positions)
        if self.kind == "mutagenesis":
            hyp = ism_to_hypothetical(values, ref, self.score)
        else:
            hyp = values
        valid = np.isfinite(hyp).all(axis=1) & (ref >= 0) & (ref < 4) & (positions >= lo) & (positions < hi)
        if not valid.any():
            return None
        length = hi - lo
        one_hot = np.zeros((length, 4), np.float32)
        contrib = np.zeros((length, 4), np.float32)
        at = positions[valid] - lo
        one_hot[at, ref[valid]] = 1.0
        contrib[at] = hyp[valid]
        return Block(chrom, lo, own, own_end, one_hot, contrib, int(valid.sum()))

    def _scores(self, ds, chrom: str) -> np.ndarray:
        """The score rows of ``ds`` (NaN where their unit is not done) in one output of 16 bytes per position,
        read from the zarr array one stored chunk at a time. (The query's dask graph reads whole store units,
        2–3 for a block that straddles unit boundaries, each into its own NaN-filled buffer, then masks and
        concatenates them; zarr decodes the chunks of one read concurrently: either way several times the
        output at once.)"""
        array = self._array(chrom)
        idx = np.asarray(ds["perturbation"].values, np.int64)
        if array is None or array.ndim != 2 or int(idx[-1]) - int(idx[0]) + 1 != len(idx):
            return np.asarray(ds[self.score].values, np.float32)
        first, done = int(idx[0]), np.asarray(ds["done"].values, bool)
        out = np.full((len(idx), *array.shape[1:]), np.nan, np.float32)  # units not done stay NaN, unread
        step = int(array.chunks[0])
        if done.all():
            runs = [(first, first + len(idx))]
        else:
            edges = np.flatnonzero(np.diff(np.concatenate([[False], done, [False]]).astype(np.int8))) + first
            runs = list(zip(edges[::2].tolist(), edges[1::2].tolist()))
        for lo, end in runs:  # runs of done rows
            while lo < end:  # one stored chunk at a time
                hi = min(end, (lo // step + 1) * step)
                self._read_into(array, lo, hi, out[lo - first : hi - first], chrom)
                lo = hi
        return out

    def _read_into(self, array, lo: int, hi: int, out: np.ndarray, chrom: str) -> None:
        """``out[:] = array[lo:hi]`` (rows of one stored chunk) without an intermediate array; an undecodable
        chunk raises the reader's :class:`~screening.store.layout.DamagedChunkError` naming it."""
        from screening.store.layout import read_checked

        try:
            array.get_basic_selection((slice(lo, hi),), out=_nd_buffer(out))
        except Exception:  # noqa: BLE001  read again the reader's way: it names a damaged chunk
            out[:] = read_checked(array, slice(lo, hi), str(self.results.path), f"{chrom}/{self.analysis}/{self.score}")

    def _array(self, chrom: str):
        """The score's stored array, or None (then the query's lazy variable is read instead)."""
        return self.results.score_array(chrom, self.analysis, self.score)

    def _reference(self, ds, chrom: str, lo: int, hi: int, positions: np.ndarray) -> np.ndarray:
        """Reference base codes (A0 C1 G2 T3, 4 = other) of ``positions``: the store's ``ref_base`` label, else
        the genome FASTA."""
        if "ref_base" in ds.coords:
            return _label_codes(np.asarray(ds["ref_base"].values))
        genome = self._open_genome()
        codes = np.asarray(genome.fetch(chrom, lo, hi), np.int64)
        inside = (positions >= lo) & (positions < hi)
        out = np.full(len(positions), 4, np.int64)
        out[inside] = codes[positions[inside] - lo]
        return out

    def _open_genome(self):
        if self._genome is None or isinstance(self._genome, str):
            from screening.io.genome import Genome

            path = self._genome or (self.results.spec.get("genome") or {}).get("fasta")
            if not path:
                raise MotifError(
                    f"analysis {self.analysis!r} stores no reference bases (ref_base) and the store's spec names "
                    "no genome FASTA; give one (--genome)"
                )
            try:
                self._genome = Genome(path)
            except (OSError, ValueError) as err:
                raise MotifError(f"cannot read the reference genome {path}: {err}; give one (--genome)") from err
        return self._genome


def _nd_buffer(out: np.ndarray):
    """``out`` as the buffer zarr reads into (``get_basic_selection(out=...)``)."""
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype().nd_buffer.from_numpy_array(out)


_CODE_OF_BYTE = np.full(256, 4, np.int64)  # a letter's byte -> A0 C1 G2 T3, anything else 4
for _code, _letters in enumerate((b"Aa", b"Cc", b"Gg", b"Tt")):
    _CODE_OF_BYTE[np.frombuffer(_letters, np.uint8)] = _code


def _label_codes(letters: np.ndarray) -> np.ndarray:
    """Base codes of ``ref_base`` labels (first letter, any case; others and empty labels 4), vectorised: each
    label's first character (a UCS-4 code point, or a byte) through a 256-entry table."""
    if letters.dtype.kind == "S":
        return _CODE_OF_BYTE[np.ascontiguousarray(letters.astype("S1")).view(np.uint8)]
    points = np.ascontiguousarray(letters.astype("U1")).view(np.uint32)
    return np.where(points < 256, _CODE_OF_BYTE[np.minimum(points, 255)], 4)


def open_source(results, analysis: str | None, score: str | None, genome=None) -> PerBaseSource:
    """Check that ``analysis`` has per-base scores and pick ``score`` (default: ``attribution_corrected`` of an
    attribution analysis, else ``attribution``; the first score of a mutagenesis analysis).

    Raises
    ------
    MotifError
        For an unknown analysis or score, or an analysis without per-base scores.
    """
    from screening.store.reader import ResultsError

    try:
        analysis = results.resolve_analysis(analysis)
    except ResultsError as err:
        raise MotifError(str(err)) from None
    kind = results.spec_kind(analysis)
    scores = results.scores(analysis)
    if kind == "attribution":
        per_base = [s for s in ("attribution_corrected", "attribution") if s in scores]
    elif kind == "mutagenesis":
        per_base = list(scores)
    else:
        per_base = []
    if not per_base:
        raise MotifError(
            f"analysis {analysis!r} ({kind}) has no per-base scores: motifs need an attribution analysis "
            "(attribution, attribution_corrected) or a saturation mutagenesis analysis"
        )
    if score is None:
        score = per_base[0]
    elif score not in per_base:
        raise MotifError(f"score {score!r} is not a per-base score of analysis {analysis!r}; choose one of {per_base}")
    return PerBaseSource(results, analysis, score, kind, genome)
