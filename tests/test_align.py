"""Bin alignment of reference and perturbed maps, checked against the bases each bin holds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screening.maps.align import BinAlignment, align_maps, alignment_index, apply, bin_alignment, centre_bin, identity

INSERTED = -1  # label of bases that are not in the reference genome


def window_labels(length: int, offset: int, ref_length: int, alt_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Genome coordinate of every base of the reference and perturbed windows (``follow`` padding)."""
    reference = np.arange(length)
    perturbed = np.concatenate(
        [np.arange(offset), np.full(alt_length, INSERTED), np.arange(offset + ref_length, offset + ref_length + length)]
    )[:length]
    return reference, perturbed


def bin_labels(labels: np.ndarray, bin_size: int, n_bins: int, map_offset: int) -> np.ndarray:
    return labels[map_offset : map_offset + n_bins * bin_size].reshape(n_bins, bin_size)


def side(bin_: np.ndarray, offset: int, ref_length: int) -> str | None:
    """'up' or 'down' for a bin of unedited bases all on one side of the edit, else None."""
    if (bin_ == INSERTED).any():
        return None
    if (bin_ < offset).all():
        return "up"
    if (bin_ >= offset + ref_length).all():
        return "down"
    return None


def contact_map(bins: np.ndarray, signal: np.ndarray, novel: float) -> np.ndarray:
    """A map that is a function of the genome coordinates held by each bin."""
    values = np.where(bins == INSERTED, novel, signal[np.clip(bins, 0, None)]).sum(axis=1)
    centres = np.where(bins == INSERTED, 0, bins).mean(axis=1)
    return (np.outer(values, values) + np.exp(-np.abs(centres[:, None] - centres[None, :]) / 7.0)).astype(np.float32)


edits = st.fixed_dictionaries(
    {
        "bin_size": st.integers(1, 12),
        "n_bins": st.integers(1, 24),
        "map_bins": st.integers(0, 3),
        "offset_frac": st.floats(0, 1),
        "ref_length": st.integers(0, 40),
        "alt_length": st.integers(0, 40),
    }
)


def geometry(e: dict) -> tuple[int, int, int, int, int, int, int]:
    b, n = e["bin_size"], e["n_bins"]
    map_offset = e["map_bins"] * b + (b // 3)
    length = map_offset + n * b + 2 * b
    offset = int(e["offset_frac"] * (length - e["ref_length"])) if length >= e["ref_length"] else 0
    return b, n, map_offset, length, offset, e["ref_length"], e["alt_length"]


@settings(max_examples=200, deadline=None)
@given(edits)
def test_alignment_pairs_bins_with_the_same_bases(e):
    b, n, map_offset, length, offset, r, a = geometry(e)
    al = bin_alignment(offset, r, a, b, n, map_offset)
    ref_bins = bin_labels(*window_labels(length + r, offset, r, a)[:1], b, n, map_offset)
    alt_bins = bin_labels(window_labels(length + r, offset, r, a)[1], b, n, map_offset)
    assert al.reference.shape == al.perturbed.shape
    assert np.all(np.diff(al.reference) > 0) and np.all(np.diff(al.perturbed) > 0)
    if r == a == 0:
        assert al.is_identity
        return
    for i, j in zip(al.reference.tolist(), al.perturbed.tolist()):
        s_ref, s_alt = side(ref_bins[i], offset, r), side(alt_bins[j], offset, r)
        assert s_ref is not None and s_ref == s_alt
        if s_ref == "up":
            assert i == j
        # At most half a bin of residual shift; none when the shift is whole bins.
        assert abs(int(alt_bins[j, 0]) - int(ref_bins[i, 0])) <= b / 2
        if (a - r) % b == 0:
            np.testing.assert_array_equal(alt_bins[j], ref_bins[i])
    # Masked = bins touched or split by the edit; everything else upstream is kept.
    masked = [i for i in range(n) if side(ref_bins[i], offset, r) is None]
    assert al.masked_reference.tolist() == masked
    assert al.masked_perturbed.tolist() == [j for j in range(n) if side(alt_bins[j], offset, r) is None]
    upstream = [i for i in range(n) if side(ref_bins[i], offset, r) == "up"]
    assert set(upstream) <= set(al.reference.tolist())
    # A downstream bin is dropped only when its partner is off the map or not cleanly downstream.
    for i in set(range(n)) - set(al.reference.tolist()) - set(masked):
        j = i + al.shift
        assert not (0 <= j < n) or side(alt_bins[j], offset, r) != "down"


@settings(max_examples=100, deadline=None)
@given(
    bin_size=st.integers(1, 8),
    n_bins=st.integers(2, 20),
    width_bins=st.integers(1, 4),
    start=st.integers(0, 200),
    seed=st.integers(0, 2**16),
)
def test_deletion_aligned_submaps_are_identical(bin_size, n_bins, width_bins, start, seed):
    width = width_bins * bin_size
    length = n_bins * bin_size
    offset = start % (length + 1)
    signal = np.random.default_rng(seed).normal(size=length + width + 1)
    ref_labels, alt_labels = window_labels(length + width, offset, width, 0)
    reference = contact_map(bin_labels(ref_labels, bin_size, n_bins, 0), signal, 0.0)
    perturbed = contact_map(bin_labels(alt_labels, bin_size, n_bins, 0), signal, 0.0)
    al = bin_alignment(offset, width, 0, bin_size, n_bins)
    ref_sub, alt_sub = apply(al, reference, perturbed)
    assert ref_sub.shape == alt_sub.shape == (len(al), len(al))
    np.testing.assert_array_equal(ref_sub, alt_sub)
    # Only the deleted bins, a split bin and bins shifted off the map are lost.
    assert len(al) >= n_bins - 2 * width_bins - 1


def test_zero_length_edit_is_identity():
    for offset in (0, 5, 13):
        al = bin_alignment(offset, 0, 0, 4, 6)
        assert al.is_identity and al.shift == 0 and al.masked_reference.size == 0
    maps = np.arange(36, dtype=np.float32).reshape(6, 6)
    ref_sub, alt_sub = apply(identity(6), maps, maps + 1)
    np.testing.assert_array_equal(ref_sub, maps)
    np.testing.assert_array_equal(alt_sub, maps + 1)


@pytest.mark.parametrize(
    "edit, reference, perturbed, masked_ref, masked_alt, shift",
    [
        ((8, 8, 0), [0, 1, 4, 5], [0, 1, 2, 3], [2, 3], [], -2),  # deletion of two whole bins
        ((6, 0, 4), [0, 2, 3, 4], [0, 3, 4, 5], [1], [1, 2], 1),  # insertion inside bin 1
        ((5, 2, 2), [0, 2, 3, 4, 5], [0, 2, 3, 4, 5], [1], [1], 0),  # inversion: edited bin masked
        ((8, 4, 8), [0, 1, 3, 4], [0, 1, 4, 5], [2], [2, 3], 1),  # tandem duplication of bin 2
        ((8, 2, 0), [0, 1, 3, 4, 5], [0, 1, 2, 3, 4], [2], [], -1),  # half a bin: rounds away from zero
        ((8, 1, 0), [0, 1, 3, 4, 5], [0, 1, 3, 4, 5], [2], [], 0),  # under half a bin: no shift
    ],
)
def test_alignment_by_hand(edit, reference, perturbed, masked_ref, masked_alt, shift):
    al = bin_alignment(*edit, bin_size=4, n_bins=6)
    assert al.reference.tolist() == reference and al.perturbed.tolist() == perturbed
    assert al.masked_reference.tolist() == masked_ref and al.masked_perturbed.tolist() == masked_alt
    assert al.shift == shift


def test_edit_before_the_map_shifts_every_bin():
    al = bin_alignment(0, 4, 0, 4, 5, map_offset=4)
    assert al.reference.tolist() == [1, 2, 3, 4] and al.perturbed.tolist() == [0, 1, 2, 3]
    assert al.masked_reference.size == 0


def test_centre_bin():
    assert centre_bin(8, 8, 4) == 3  # centre 12
    assert centre_bin(6, 0, 4) == 1  # insertion point
    assert centre_bin(1_048_576 - 500, 1000, 8192) == 128  # C.Origami: centre on the edge of bins 127|128
    assert centre_bin(10, 0, 4, map_offset=20) == -3  # before the map


def test_align_maps_matches_apply():
    rng = np.random.default_rng(0)
    reference, perturbed = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    alignments = [bin_alignment(8, 8, 0, 4, 8), identity(8), bin_alignment(9, 0, 6, 4, 8)]
    ref_aligned, alt_aligned = align_maps(alignments, reference, perturbed)
    assert ref_aligned.dtype == np.float32 and ref_aligned.shape == reference.shape
    for b, al in enumerate(alignments):
        ref_sub, alt_sub = apply(al, reference[b], perturbed[b])
        keep = al.reference
        np.testing.assert_array_equal(ref_aligned[b][np.ix_(keep, keep)], ref_sub)
        np.testing.assert_array_equal(alt_aligned[b][np.ix_(keep, keep)], alt_sub)
        lost = np.setdiff1d(np.arange(8), keep)
        assert np.isnan(ref_aligned[b][lost]).all() and np.isnan(alt_aligned[b][:, lost]).all()
    assert alignment_index(alignments, 8)[0].tolist() == [0, 1, -1, -1, 2, 3, 4, 5]


def test_alignment_errors():
    with pytest.raises(ValueError, match="must be >= 0"):
        bin_alignment(-1, 4, 0, 4, 6)
    with pytest.raises(ValueError, match="positive"):
        bin_alignment(0, 4, 0, 0, 6)
    with pytest.raises(ValueError, match="differ in number"):
        BinAlignment(np.arange(3), np.arange(2), 4)
    with pytest.raises(ValueError, match="alignment for 6 bins"):
        apply(identity(6), np.zeros((5, 5)), np.zeros((5, 5)))
    with pytest.raises(ValueError, match="2 alignments for a batch of 3"):
        align_maps([identity(4)] * 2, np.zeros((3, 4, 4)), np.zeros((3, 4, 4)))
    al = identity(3)
    with pytest.raises(ValueError):
        al.reference[0] = 5  # read-only


# --- several edits in one window (a haplotype) -----------------------------------------------------------

from screening.maps.align import AlignmentCache, edits_index  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.integers(0, 90), st.integers(0, 90), st.integers(1, 40), st.integers(1, 12),
       st.integers(0, 20))
def test_one_edit_aligns_as_bin_alignment(offset, ref_length, alt_length, bin_size, n_bins, map_offset):
    expected = alignment_index([bin_alignment(offset, ref_length, alt_length, bin_size, n_bins, map_offset)], n_bins)[0]
    assert edits_index([(offset, ref_length, alt_length)], bin_size, n_bins, map_offset).tolist() == expected.tolist()


def test_several_edits_shift_each_stretch_by_the_changes_upstream_of_it():
    # 10 bins of 10 bp: a 20 bp insertion at 25 and a 10 bp deletion at 60
    row = edits_index([(60, 10, 0), (25, 0, 20)], 10, 10)
    # bins 0-1 upstream; bin 2 holds the insertion point; bins 3-5 move by +2; bin 6 is deleted; bins 7-9 move by +1
    assert row.tolist() == [0, 1, -1, 5, 6, 7, -1, 8, 9, -1]
    cache = AlignmentCache(10, 10)
    assert cache.index([((25, 0, 20), (60, 10, 0)), (25, 0, 20)]).tolist() == [
        row.tolist(), edits_index([(25, 0, 20)], 10, 10).tolist()]
    with pytest.raises(ValueError, match="overlap"):
        edits_index([(10, 20, 0), (20, 5, 5)], 10, 10)
