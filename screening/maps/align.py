"""Bin alignment of a reference map and a perturbed map (SuPreMo's idea, made explicit).

A perturbation edits a model window: the reference bases ``[offset, offset + ref_length)``
(bp from the window start) are replaced by ``alt_length`` bases, so everything downstream
moves by ``alt_length − ref_length`` bp. Comparing the two output maps bin by bin then
mostly measures that shift. An alignment says which perturbed bin holds the sequence
of which reference bin, so scores can compare like with like.

Rule (``b`` = bin size, map bin ``i`` covers ``[map_offset + i·b, map_offset + (i+1)·b)``):

* **upstream** — a bin that ends at or before ``offset`` holds the same bases in both maps:
  reference bin ``i`` ↔ perturbed bin ``i``;
* **downstream** — a reference bin that starts at or after ``offset + ref_length`` ↔ the
  perturbed bin ``i + s`` with ``s = round((alt_length − ref_length) / b)``, rounded to the
  nearest whole bin, halves away from zero. When the shift is not a multiple of ``b`` the
  paired bins are offset by the residual ``|Δ − s·b| ≤ b/2`` bp (at least half of each
  bin's bases are shared); the pair is kept only if perturbed bin ``i + s`` itself lies
  wholly downstream of the perturbed edit ``[offset, offset + alt_length)``;
* **masked** — every other bin in the map: bins overlapping the edited interval (also for
  same-length edits such as inversions, masks and SNVs, as SuPreMo masks INV bins) and
  bins whose content is split by an edit boundary (e.g. the bin holding an insertion
  point, or a downstream pair whose perturbed bin would straddle the junction);
* **dropped** — pairs whose partner falls outside ``[0, n_bins)`` (sequence that leaves the
  map, or new sequence that enters it) appear in neither list.

A zero-length edit (``ref_length == alt_length == 0``) changes nothing and aligns as
:func:`identity`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = [
    "AlignmentCache",
    "BinAlignment",
    "bin_alignment",
    "identity",
    "apply",
    "align_maps",
    "alignment_index",
    "centre_bin",
    "edits_index",
    "pieces_index",
]


def _frozen(values: np.ndarray) -> np.ndarray:
    out = np.asarray(values, dtype=np.int64)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class BinAlignment:
    """Corresponding bins of a reference map and a perturbed map.

    Attributes
    ----------
    reference, perturbed
        ``int64 [k]``, strictly increasing and of equal length: reference bin
        ``reference[m]`` holds the same sequence as perturbed bin ``perturbed[m]``.
    n_bins
        Side of both maps.
    shift
        Whole-bin shift applied to downstream bins (``perturbed − reference``).
    masked_reference, masked_perturbed
        ``int64``, the bins of each map that overlap the edit or are split by it.
    """

    reference: np.ndarray
    perturbed: np.ndarray
    n_bins: int
    shift: int = 0
    masked_reference: np.ndarray = field(default_factory=lambda: _frozen(np.empty(0)))
    masked_perturbed: np.ndarray = field(default_factory=lambda: _frozen(np.empty(0)))

    def __post_init__(self) -> None:
        for name in ("reference", "perturbed", "masked_reference", "masked_perturbed"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        if self.reference.shape != self.perturbed.shape:
            raise ValueError(f"aligned bins differ in number: {self.reference.size} vs {self.perturbed.size}")

    def __len__(self) -> int:
        return int(self.reference.size)

    @property
    def is_identity(self) -> bool:
        """True when every bin corresponds to itself."""
        return len(self) == self.n_bins and bool(np.array_equal(self.reference, self.perturbed))


def identity(n_bins: int) -> BinAlignment:
    """The alignment of a map with itself: every bin ``i`` ↔ ``i`` (unaligned scoring)."""
    bins = np.arange(n_bins)
    return BinAlignment(bins, bins, n_bins)


def _round_bins(delta: int, bin_size: int) -> int:
    """``delta / bin_size`` rounded to the nearest integer, halves away from zero (exact)."""
    whole = (2 * abs(delta) + bin_size) // (2 * bin_size)
    return whole if delta >= 0 else -whole


def _sides(starts: np.ndarray, bin_size: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks of bins wholly upstream of ``lo`` and wholly downstream of ``hi``."""
    return starts + bin_size <= lo, starts >= hi


def bin_alignment(
    offset: int, ref_length: int, alt_length: int, bin_size: int, n_bins: int, map_offset: int = 0
) -> BinAlignment:
    """Align the reference and perturbed maps of one edit (rule in the module docstring).

    Parameters
    ----------
    offset
        Start of the edit, in bp from the window start.
    ref_length
        Reference bases replaced (0 for an insertion).
    alt_length
        Bases put in their place (0 for a deletion, ``ref_length`` for an inversion, mask
        or SNV, ``2·ref_length`` for a tandem duplication).
    bin_size
        Map bin size in bp.
    n_bins
        Map side in bins.
    map_offset
        Start of map bin 0, in bp from the window start (0 for C.Origami).

    Returns
    -------
    BinAlignment
    """
    if min(offset, ref_length, alt_length, map_offset) < 0:
        raise ValueError("offset, ref_length, alt_length and map_offset must be >= 0")
    if bin_size <= 0 or n_bins <= 0:
        raise ValueError("bin_size and n_bins must be positive")
    if ref_length == 0 and alt_length == 0:
        return identity(n_bins)
    bins = np.arange(n_bins)
    starts = map_offset + bins * bin_size
    shift = _round_bins(alt_length - ref_length, bin_size)
    ref_up, ref_down = _sides(starts, bin_size, offset, offset + ref_length)
    alt_up, alt_down = _sides(starts, bin_size, offset, offset + alt_length)
    target = bins + shift
    inside = (target >= 0) & (target < n_bins)
    # The partner of a downstream reference bin must itself be wholly downstream in the perturbed map.
    down_ok = ref_down & inside & alt_down[np.clip(target, 0, n_bins - 1)]
    reference = np.concatenate([bins[ref_up], bins[down_ok]])
    perturbed = np.concatenate([bins[ref_up], target[down_ok]])
    return BinAlignment(
        reference,
        perturbed,
        n_bins,
        shift,
        masked_reference=bins[~(ref_up | ref_down)],
        masked_perturbed=bins[~(alt_up | alt_down)],
    )


def edits_index(
    edits: Sequence[tuple[int, int, int]], bin_size: int, n_bins: int, map_offset: int = 0
) -> np.ndarray:
    """Perturbed bin of every reference bin for several edits of one window, ``int64 [n_bins]``, −1 where unaligned.

    The rule of :func:`bin_alignment`, edit by edit: a reference bin pairs only if it lies wholly on one side
    of every edit; it moves by the summed shift of the edits upstream of it (rounded to whole bins), and its
    partner must lie wholly between the same edits in the perturbed map. One edit gives :func:`bin_alignment`'s
    pairs exactly; edits (``(offset, ref_length, alt_length)``, from the window start) must not overlap.
    """
    edits = sorted((int(o), int(r), int(a)) for o, r, a in edits if r or a)  # an empty edit changes nothing
    for (o1, r1, _), (o2, _, _) in zip(edits, edits[1:]):
        if o2 < o1 + r1:
            raise ValueError(f"edits at {o1} and {o2} overlap")
    bins = np.arange(n_bins)
    starts = map_offset + bins * bin_size
    row = np.full(n_bins, -1, np.int64)
    if not edits:
        return bins.astype(np.int64)
    # reference and perturbed coordinates of each gap between edits: gap g lies after the first g edits
    ref_bounds, alt_bounds, shift = [0], [0], 0
    for offset, ref_length, alt_length in edits:
        ref_bounds += [offset, offset + ref_length]
        alt_bounds += [offset + shift, offset + shift + alt_length]
        shift += alt_length - ref_length
    ref_bounds.append(np.iinfo(np.int64).max)
    alt_bounds.append(np.iinfo(np.int64).max)
    shift = 0
    for gap in range(len(edits) + 1):
        ref_lo, ref_hi = ref_bounds[2 * gap], ref_bounds[2 * gap + 1]
        alt_lo, alt_hi = alt_bounds[2 * gap], alt_bounds[2 * gap + 1]
        if gap:
            shift += edits[gap - 1][2] - edits[gap - 1][1]
        s = _round_bins(shift, bin_size)
        inside = (starts >= ref_lo) & (starts + bin_size <= ref_hi)
        target = bins + s
        ok = inside & (target >= 0) & (target < n_bins)
        t_start = map_offset + target * bin_size
        ok &= (t_start >= alt_lo) & (t_start + bin_size <= alt_hi)
        row[ok] = target[ok]
    return row


def pieces_index(
    pieces: Sequence[tuple[int, int, int, int, str]], bin_size: int, n_bins: int, map_offset: int = 0
) -> np.ndarray:
    """Perturbed bin of every reference bin where a rearranged window holds pieces of a reference window,
    ``int64 [n_bins]``, −1 where unaligned (:mod:`screening.perturb.rearrange`).

    Each piece ``(lo, hi, ref_lo, ref_hi, strand)`` says the perturbed window's ``[lo, hi)`` holds the
    reference window's ``[ref_lo, ref_hi)`` (bp from each window's start), reversed on ``"-"``. A perturbed
    bin wholly inside a piece pairs with the reference bin holding its centre's sequence, if that bin lies
    wholly inside the piece's reference interval; every other bin is unaligned.
    """
    bins = np.arange(n_bins)
    starts = map_offset + bins * bin_size
    row = np.full(n_bins, -1, np.int64)
    for lo, hi, ref_lo, ref_hi, strand in pieces:
        inside = (starts >= lo) & (starts + bin_size <= hi)
        # doubled bp coordinates keep the centres integral
        centre2 = 2 * starts + bin_size
        if strand == "+":
            ref2 = centre2 + 2 * (ref_lo - lo)
        else:  # perturbed bp lo + k holds reference bp ref_hi - 1 - k
            ref2 = 2 * (ref_lo + hi) - centre2
        ref_bin = (ref2 - 2 * map_offset) // (2 * bin_size)
        ref_start = map_offset + ref_bin * bin_size
        ok = inside & (ref_bin >= 0) & (ref_bin < n_bins) & (ref_start >= ref_lo) & (ref_start + bin_size <= ref_hi)
        row[ref_bin[ok]] = bins[ok]
    return row


def centre_bin(offset: int, ref_length: int, bin_size: int, map_offset: int = 0) -> int:
    """Reference-map bin holding the centre of the edited interval (may lie outside the map).

    The centre is ``offset + ref_length / 2``; for an insertion it is the insertion point.
    """
    return (2 * (offset - map_offset) + ref_length) // (2 * bin_size)


def apply(alignment: BinAlignment, reference_map: np.ndarray, perturbed_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Aligned submatrices of one map pair.

    Parameters
    ----------
    alignment
        The pair's alignment.
    reference_map, perturbed_map
        ``[n, n]`` maps (leading axes, if any, are kept).

    Returns
    -------
    (ref_sub, alt_sub)
        ``[..., k, k]`` with ``k = len(alignment)``: ``ref_sub[a, c]`` and ``alt_sub[a, c]``
        describe the same pair of genomic bins.
    """
    _check_side(alignment, reference_map, perturbed_map)
    ref_sub = reference_map[(..., *np.ix_(alignment.reference, alignment.reference))]
    alt_sub = perturbed_map[(..., *np.ix_(alignment.perturbed, alignment.perturbed))]
    return ref_sub, alt_sub


def alignment_index(alignments: Sequence[BinAlignment], n_bins: int) -> np.ndarray:
    """Perturbed bin for every reference bin, ``int64 [B, n_bins]``, −1 where unaligned."""
    index = np.full((len(alignments), n_bins), -1, dtype=np.int64)
    for row, alignment in zip(index, alignments):
        if alignment.n_bins != n_bins:
            raise ValueError(f"alignment for {alignment.n_bins} bins used on maps of {n_bins}")
        row[alignment.reference] = alignment.perturbed
    return index


class AlignmentCache:
    """:func:`alignment_index` rows of edits, each edit geometry aligned once.

    An engine scoring a work unit keeps one: a row depends only on ``(offset, ref_length,
    alt_length)`` for a map geometry, and a mutagenesis unit repeats each ``(position, 1, 1)``
    for its three alternative bases. The least recently used rows beyond ``max_rows`` are dropped
    (2 KiB each on a 256-bin map).

    Parameters
    ----------
    bin_size, n_bins, map_offset
        As in :func:`bin_alignment`.
    max_rows
        Rows kept.
    """

    def __init__(self, bin_size: int, n_bins: int, map_offset: int = 0, max_rows: int = 1024) -> None:
        self.bin_size, self.n_bins, self.map_offset, self.max_rows = bin_size, n_bins, map_offset, max_rows
        self._rows: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    def row(self, offset: int, ref_length: int, alt_length: int) -> np.ndarray:
        """Perturbed bin of every reference bin for one edit, ``int64 [n_bins]`` (read-only), −1 where unaligned."""
        key = (offset, ref_length, alt_length)
        row = self._rows.get(key)
        if row is not None:
            self.hits += 1
            self._rows.move_to_end(key)
            return row
        self.misses += 1
        alignment = bin_alignment(offset, ref_length, alt_length, self.bin_size, self.n_bins, self.map_offset)
        row = _frozen(alignment_index([alignment], self.n_bins)[0])
        self._rows[key] = row
        if len(self._rows) > self.max_rows:
            self._rows.popitem(last=False)
        return row

    def index(self, edits: Sequence) -> np.ndarray:
        """:func:`alignment_index` of the edits ``(offset, ref_length, alt_length)``, ``int64 [B, n_bins]``.

        An item may also be a tuple of such edits, made together in one window (:func:`edits_index`).
        """
        if not len(edits):
            return np.zeros((0, self.n_bins), np.int64)
        return np.stack([self._several(edit) if isinstance(edit[0], tuple) else self.row(*edit) for edit in edits])

    def _several(self, edits: tuple[tuple[int, int, int], ...]) -> np.ndarray:
        if len(edits) == 1:
            return self.row(*edits[0])
        key = ("several", edits)
        row = self._rows.get(key)  # type: ignore[call-overload]
        if row is None:
            row = _frozen(edits_index(edits, self.bin_size, self.n_bins, self.map_offset))
            self._rows[key] = row  # type: ignore[index]
            if len(self._rows) > self.max_rows:
                self._rows.popitem(last=False)
        return row


def align_maps(
    alignments: Sequence[BinAlignment], reference: np.ndarray, perturbed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Aligned map pairs of a batch, in the reference map's bin frame, NaN where unaligned.

    Aligned submatrices differ in size from sample to sample, so instead of ``[k, k]``
    blocks this returns full ``[B, n, n]`` maps: pixel ``(i, j)`` of the aligned perturbed
    map is the perturbed pixel holding reference bins ``i`` and ``j``, and rows and columns
    of unaligned reference bins are NaN in both maps. Dropping the NaN rows and columns
    of sample ``b`` gives exactly :func:`apply`'s submatrices; keeping them in place keeps
    reference bin coordinates (positions, regions of interest) valid.

    Parameters
    ----------
    alignments
        One per sample.
    reference, perturbed
        ``[B, n, n]`` maps.

    Returns
    -------
    (reference_aligned, perturbed_aligned)
        Floating ``[B, n, n]`` (float32 maps stay float32).
    """
    if reference.shape != perturbed.shape or reference.ndim != 3:
        raise ValueError(f"expected two [B, n, n] maps of one shape, got {reference.shape} and {perturbed.shape}")
    if len(alignments) != reference.shape[0]:
        raise ValueError(f"{len(alignments)} alignments for a batch of {reference.shape[0]}")
    n = reference.shape[-1]
    index = alignment_index(alignments, n)
    valid = index >= 0
    pixel_valid = valid[:, :, None] & valid[:, None, :]
    safe = np.where(valid, index, 0)
    batch = np.arange(len(alignments))[:, None, None]
    dtype = np.result_type(reference.dtype, perturbed.dtype, np.float32)
    ref_out = np.where(pixel_valid, reference, np.nan).astype(dtype, copy=False)
    alt_out = np.where(pixel_valid, perturbed[batch, safe[:, :, None], safe[:, None, :]], np.nan).astype(dtype, copy=False)
    return ref_out, alt_out


def _check_side(alignment: BinAlignment, *maps: np.ndarray) -> None:
    for m in maps:
        if m.shape[-2:] != (alignment.n_bins, alignment.n_bins):
            raise ValueError(f"alignment for {alignment.n_bins} bins used on a map of shape {m.shape}")
