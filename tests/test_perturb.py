from collections import Counter
from itertools import permutations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from screening.core.encode import decode, encode, reverse_complement
from screening.perturb.edits import (
    Edit,
    apply_edit,
    centered_window_start,
    delete,
    dinucleotide_shuffle,
    duplicate,
    insertion,
    invert,
    mask,
    motif_consensus,
    mutate,
    mutation_alternatives,
    saturation_pairs,
)


def test_centered_window_start_matches_corigami():
    # C.Origami: int(w + width / 2 - window / 2)
    for w, width in [(1_400_000, 1000), (1_400_000, 999), (2_000_001, 3)]:
        assert centered_window_start(w, width, 2_097_152) == int(w + width / 2 - 2_097_152 / 2)
    assert centered_window_start(1_400_000, 1000, 2_097_152) == 351_924


def test_delete_zero_padding_by_hand():
    codes = encode("AACCGGTTAC")  # span = window 8 + width 2
    tracks = np.arange(10, dtype=np.float32)[None]
    new_codes, new_tracks = delete(codes, tracks, offset=2, width=2, out_length=8, padding="zero")
    # tail [8, 10) set to N/0 first, then CC removed, cut to 8
    assert decode(new_codes) == "AAGGTTNN"
    np.testing.assert_array_equal(new_tracks[0], [0, 1, 4, 5, 6, 7, 0, 0])
    assert decode(codes) == "AACCGGTTAC"  # input untouched


def test_delete_follow_padding_by_hand():
    codes = encode("AACCGGTTAC")
    tracks = np.arange(10, dtype=np.float32)[None]
    new_codes, new_tracks = delete(codes, tracks, offset=2, width=2, out_length=8, padding="follow")
    assert decode(new_codes) == "AAGGTTAC"
    np.testing.assert_array_equal(new_tracks[0], [0, 1, 4, 5, 6, 7, 8, 9])


@given(st.integers(1, 50), st.integers(0, 100), st.integers(1, 100), st.sampled_from(["zero", "follow"]))
def test_delete_length_bookkeeping(width, offset, window, padding):
    span = window + width
    offset = offset % (span - width + 1)
    codes = np.random.default_rng(0).integers(0, 4, span).astype(np.uint8)
    new_codes, new_tracks = delete(codes, None, offset, width, window, padding)
    assert new_codes.shape == (window,) and new_tracks is None
    # spelled out with lists: mask the tail (zero padding), drop the interval, cut
    letters = list(codes)
    if padding == "zero":
        letters = letters[:window] + [4] * (span - window)
    expected = (letters[:offset] + letters[offset + width :])[:window]
    np.testing.assert_array_equal(new_codes, expected)
    assert (new_codes == 4).sum() == (min(width, max(0, window - offset)) if padding == "zero" else 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"offset": 9, "width": 2}, "outside"),
    ({"offset": 0, "width": 0}, "positive"),
    ({"offset": 0, "width": 2, "padding": "mirror"}, "padding"),
])
def test_delete_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        delete(encode("ACGTACGTAC"), None, out_length=8, **kwargs)


# --- the general edit primitive -----------------------------------------------------------

CODES = st.lists(st.integers(0, 4), min_size=1, max_size=60).map(lambda x: np.array(x, dtype=np.uint8))


def _tracks(n: int) -> np.ndarray:
    return np.stack([np.arange(n), 100 + np.arange(n)]).astype(np.float32)


def _delete_reference(codes, tracks, offset, width, out_length, padding="zero"):
    """The pre-``apply_edit`` implementation of ``delete``, kept verbatim as the oracle."""
    keep = np.ones(codes.shape[-1], dtype=bool)
    keep[offset : offset + width] = False
    new_codes = codes.copy()
    new_tracks = None if tracks is None else tracks.copy()
    if padding == "zero":
        new_codes[out_length:] = 4
        if new_tracks is not None:
            new_tracks[:, out_length:] = 0.0
    new_codes = new_codes[keep][:out_length]
    if new_tracks is not None:
        new_tracks = new_tracks[:, keep][:, :out_length]
    return new_codes, new_tracks


@given(st.data(), st.sampled_from(["zero", "follow"]))
def test_delete_matches_previous_implementation(data, padding):
    window = data.draw(st.integers(1, 40))
    width = data.draw(st.integers(1, 20))
    span = window + width + data.draw(st.integers(0, 5))
    offset = data.draw(st.integers(0, span - width))
    codes = np.random.default_rng(span).integers(0, 5, span).astype(np.uint8)
    tracks = _tracks(span)
    got_codes, got_tracks = delete(codes, tracks, offset, width, window, padding)
    want_codes, want_tracks = _delete_reference(codes, tracks, offset, width, window, padding)
    np.testing.assert_array_equal(got_codes, want_codes)
    np.testing.assert_array_equal(got_tracks, want_tracks)
    assert got_tracks.dtype == np.float32


@given(st.data(), st.sampled_from(["zero", "follow"]))
def test_apply_edit_matches_list_spelling(data, padding):
    out_length = data.draw(st.integers(1, 30))
    ref_length = data.draw(st.integers(0, 15))
    alt_length = data.draw(st.integers(0, 15))
    span = out_length + max(0, ref_length - alt_length) + data.draw(st.integers(0, 5))
    span = max(span, ref_length)
    offset = data.draw(st.integers(0, span - ref_length))
    codes = np.random.default_rng(span).integers(0, 5, span).astype(np.uint8)
    tracks = _tracks(span)
    alt = np.random.default_rng(alt_length).integers(0, 4, alt_length).astype(np.uint8)
    alt_tracks = -1.0 - _tracks(alt_length)
    new_codes, new_tracks = apply_edit(codes, tracks, offset, ref_length, alt, alt_tracks, out_length, padding)

    def spelled(letters, alt_letters, fill):
        letters = list(letters)
        if padding == "zero":
            letters = letters[:out_length] + [fill] * (span - out_length)
        return (letters[:offset] + list(alt_letters) + letters[offset + ref_length :])[:out_length]

    np.testing.assert_array_equal(new_codes, spelled(codes, alt, 4))
    for row in range(2):
        np.testing.assert_array_equal(new_tracks[row], spelled(tracks[row], alt_tracks[row], 0.0))
    assert new_codes.shape == (out_length,) and new_tracks.shape == (2, out_length)
    assert (codes == np.random.default_rng(span).integers(0, 5, span)).all()  # input untouched


def test_apply_edit_net_deletion_by_hand():
    codes = encode("AACCGGTTACG")  # window 8 + net deletion 3
    tracks = np.arange(11, dtype=np.float32)[None]
    follow = apply_edit(codes, tracks, 2, 4, encode("T"), None, 8, "follow")
    assert decode(follow[0]) == "AATTTACG"
    np.testing.assert_array_equal(follow[1][0], [0, 1, 0, 6, 7, 8, 9, 10])
    zero = apply_edit(codes, tracks, 2, 4, encode("T"), None, 8, "zero")
    assert decode(zero[0]) == "AATTTNNN"
    np.testing.assert_array_equal(zero[1][0], [0, 1, 0, 6, 7, 0, 0, 0])


def test_apply_edit_without_tracks():
    new_codes, new_tracks = apply_edit(encode("AACCGGTT"), None, 0, 0, encode("G"), None, 8)
    assert decode(new_codes) == "GAACCGGT" and new_tracks is None


@pytest.mark.parametrize("kwargs, message", [
    ({"offset": 7, "ref_length": 2}, "outside"),
    ({"offset": -1}, "outside"),
    ({"ref_length": -1}, "negative"),
    ({"out_length": 0}, "positive"),
    ({"ref_length": 3, "alt_codes": np.zeros(0, np.uint8)}, "shorter"),
    ({"padding": "mirror"}, "padding"),
    ({"alt_codes": np.array([5], np.uint8)}, "base codes"),
    ({"alt_tracks": np.zeros((2, 1), np.float32)}, "alt_tracks"),
    ({"tracks": None, "alt_tracks": np.zeros((1, 1), np.float32)}, "without tracks"),
    ({"tracks": np.zeros((1, 7), np.float32)}, "tracks must have shape"),
])
def test_apply_edit_rejects(kwargs, message):
    arguments = {"codes": encode("AACCGGTT"), "tracks": np.zeros((1, 8), np.float32), "offset": 2,
                 "ref_length": 1, "alt_codes": encode("A"), "alt_tracks": None, "out_length": 8}
    with pytest.raises(ValueError, match=message):
        apply_edit(**{**arguments, **kwargs})


def test_edit_shift():
    assert Edit(offset=10, ref_length=5, alt_length=0).shift == -5
    assert Edit(offset=10, ref_length=0, alt_length=7).shift == 7
    with pytest.raises(ValueError, match="non-negative"):
        Edit(offset=0, ref_length=-1, alt_length=0)


# --- kinds, by hand on AACCGGTT with tracks arange ----------------------------------------

SEQ = encode("AACCGGTT")
TRACKS = np.arange(8, dtype=np.float32)[None]


def _apply(offset, ref_length, alt):
    return apply_edit(SEQ, TRACKS, offset, ref_length, alt[0], alt[1], out_length=8)


def test_mask_by_hand():
    codes, tracks = _apply(2, 2, mask(SEQ[2:4], TRACKS[:, 2:4]))
    assert decode(codes) == "AANNGGTT"
    np.testing.assert_array_equal(tracks[0], np.arange(8))
    codes, tracks = _apply(2, 2, mask(SEQ[2:4], TRACKS[:, 2:4], mask_tracks=True))
    np.testing.assert_array_equal(tracks[0], [0, 1, 0, 0, 4, 5, 6, 7])
    assert mask(SEQ[2:4], None)[1] is None


def test_invert_by_hand():
    codes, tracks = _apply(1, 3, invert(SEQ[1:4], TRACKS[:, 1:4]))  # ACC -> GGT
    assert decode(codes) == "AGGTGGTT"
    np.testing.assert_array_equal(tracks[0], [0, 3, 2, 1, 4, 5, 6, 7])


def test_duplicate_by_hand():
    codes, tracks = _apply(2, 2, duplicate(SEQ[2:4], TRACKS[:, 2:4]))
    assert decode(codes) == "AACCCCGG"  # downstream pushed right and cut
    np.testing.assert_array_equal(tracks[0], [0, 1, 2, 3, 2, 3, 4, 5])


def test_insertion_by_hand():
    codes, tracks = _apply(4, 0, (insertion("GA"), None))
    assert decode(codes) == "AACCGAGG"
    np.testing.assert_array_equal(tracks[0], [0, 1, 2, 3, 0, 0, 4, 5])  # inserted DNA has 0 signal
    codes, _ = _apply(4, 0, (insertion("ga", "-"), None))
    assert decode(codes) == "AACCTCGG"


def test_insertion_rejects():
    with pytest.raises(ValueError, match=r"'U' at 3, 'X' at 5"):
        insertion("ACGUAX")
    with pytest.raises(ValueError, match="orientation"):
        insertion("ACGT", orientation="forward")


def test_motif_consensus_of_ctcf():
    from screening.perturb.motif import load_ctcf

    consensus = motif_consensus(load_ctcf())
    assert consensus == "TGGCCACCAGGGGGCGCTA"  # JASPAR MA0139.1
    assert motif_consensus(load_ctcf().probabilities()) == consensus
    assert decode(insertion(consensus, "-")) == "TAGCGCCCCCTGGTGGCCA"


def test_dinucleotide_shuffle_by_hand():
    # each base's successors admit a single Eulerian path: nothing can move
    assert decode(dinucleotide_shuffle(encode("ACGTACGT"), 0)) == "ACGTACGT"
    # N stays put and the runs around it are shuffled separately
    shuffled = decode(dinucleotide_shuffle(encode("ACGNNTTGCA"), 3))
    assert shuffled == "ACGNNTTGCA"
    assert decode(dinucleotide_shuffle(encode("AACAANAC"), 5))[5:] == "NAC"


# --- properties --------------------------------------------------------------------------


def _dinucleotides(codes):
    return Counter(zip(codes[:-1].tolist(), codes[1:].tolist()))


@given(CODES, st.integers(0, 2**32 - 1))
def test_dinucleotide_shuffle_properties(codes, seed):
    shuffled = dinucleotide_shuffle(codes, seed)
    assert shuffled.dtype == np.uint8 and shuffled.shape == codes.shape
    assert _dinucleotides(shuffled) == _dinucleotides(codes)
    assert shuffled[0] == codes[0] and shuffled[-1] == codes[-1]
    np.testing.assert_array_equal(shuffled == 4, codes == 4)  # N positions kept
    np.testing.assert_array_equal(dinucleotide_shuffle(codes, seed), shuffled)
    np.testing.assert_array_equal(dinucleotide_shuffle(codes, np.random.default_rng(seed)), shuffled)


def test_dinucleotide_shuffle_is_uniform():
    codes = encode("AACAGATAA")  # 60 arrangements
    # every arrangement with the same first base and dinucleotide counts
    valid = {p for p in set(permutations(codes.tolist())) if p[0] == codes[0]
             and _dinucleotides(np.array(p)) == _dinucleotides(codes)}
    rng = np.random.default_rng(0)
    draws = Counter(tuple(dinucleotide_shuffle(codes, rng).tolist()) for _ in range(400 * len(valid) // 10))
    assert set(draws) == valid and len(valid) > 3
    expected = sum(draws.values()) / len(valid)
    chi2 = sum((n - expected) ** 2 / expected for n in draws.values())
    assert chi2 < len(valid) - 1 + 5 * np.sqrt(2 * (len(valid) - 1))  # mean + 5 sd under uniformity


def test_dinucleotide_shuffle_moves_long_segments():
    codes = np.random.default_rng(1).integers(0, 4, 500).astype(np.uint8)
    assert (dinucleotide_shuffle(codes, 0) != codes).mean() > 0.3


@given(CODES)
def test_invert_twice_is_identity(codes):
    tracks = _tracks(len(codes))
    once = invert(codes, tracks)
    twice = invert(*once)
    np.testing.assert_array_equal(twice[0], codes)
    np.testing.assert_array_equal(twice[1], tracks)
    np.testing.assert_array_equal(once[0], reverse_complement(codes))


@given(CODES)
def test_duplicate_length(codes):
    alt_codes, alt_tracks = duplicate(codes, _tracks(len(codes)))
    assert alt_codes.shape == (2 * len(codes),) and alt_tracks.shape == (2, 2 * len(codes))
    np.testing.assert_array_equal(alt_codes[len(codes) :], codes)
    assert duplicate(codes, None)[1] is None


@given(st.text("ACGTNacgtn", max_size=30))
def test_insertion_orientation(sequence):
    np.testing.assert_array_equal(insertion(sequence, "-"), reverse_complement(insertion(sequence)))
    assert decode(insertion(sequence)) == sequence.upper()


# --- saturation mutagenesis ----------------------------------------------------------------


def test_mutation_alternatives_by_hand():
    np.testing.assert_array_equal(
        mutation_alternatives(encode("ACGTN")),
        [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2], [-1, -1, -1]],
    )
    positions, bases = saturation_pairs(encode("ANT"))
    np.testing.assert_array_equal(positions, [0, 0, 0, 2, 2, 2])
    np.testing.assert_array_equal(bases, [1, 2, 3, 0, 1, 2])


def test_mutate_by_hand():
    out = mutate(SEQ, np.array([0, 7]), np.array([3, 0]))
    assert [decode(row) for row in out] == ["TACCGGTT", "AACCGGTA"]
    assert decode(SEQ) == "AACCGGTT"


@given(CODES)
def test_mutagenesis_covers_every_alternative(codes):
    alternatives = mutation_alternatives(codes)
    known = codes < 4
    assert (alternatives[~known] == -1).all()
    for ref, row in zip(codes[known], alternatives[known]):
        assert sorted(row.tolist()) == [b for b in range(4) if b != ref]
    positions, bases = saturation_pairs(codes)
    assert len(positions) == 3 * known.sum()
    mutants = mutate(codes, positions, bases)
    assert mutants.shape == (len(positions), len(codes))
    differs = mutants != codes
    assert (differs.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(differs.argmax(axis=1), positions)
    np.testing.assert_array_equal(mutants[np.arange(len(positions)), positions], bases)
    assert len({row.tobytes() for row in mutants}) == len(positions)


@pytest.mark.parametrize("positions, bases, message", [
    ([8], [0], r"\[0, 8\)"),
    ([-1], [0], r"\[0, 8\)"),
    ([0], [-1], "0..3"),
    ([0], [4], "0..3"),
    ([0, 1], [0], "2 positions but 1"),
])
def test_mutate_rejects(positions, bases, message):
    with pytest.raises(ValueError, match=message):
        mutate(SEQ, np.array(positions), np.array(bases))


def test_compose_makes_several_edits_one():
    from screening.perturb.edits import compose

    codes = np.arange(20, dtype=np.uint8) % 4
    tracks = np.arange(40, dtype=np.float32).reshape(2, 20)
    parts = [(1, 1, np.array([3], np.uint8), tracks[:, 1:2]),  # a substitution keeps its tracks
             (5, 3, np.zeros(0, np.uint8), None),              # a deletion
             (10, 0, np.array([0, 1], np.uint8), None)]        # an insertion: tracks 0
    ref_length, alt, alt_tracks = compose(codes, tracks, parts)
    assert ref_length == 10
    assert alt.tolist() == [0, 3, 2, 3, 0, 0, 1, 0, 1]
    assert alt_tracks[0].tolist() == [0, 1, 2, 3, 4, 8, 9, 0, 0]
    out, out_tracks = apply_edit(codes, tracks, 0, ref_length, alt, alt_tracks, 19, "follow")
    assert out.tolist() == [*alt.tolist(), *codes[10:].tolist()]  # the edits, then the unchanged rest
    assert out_tracks[1].tolist() == [*alt_tracks[1].tolist(), *tracks[1, 10:].tolist()]
    assert compose(codes, None, parts[1:])[2] is None
    with pytest.raises(ValueError, match="overlap"):
        compose(codes, None, [(5, 3, np.zeros(0, np.uint8), None), (6, 1, np.zeros(1, np.uint8), None)])
