import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from screening.encode import decode, encode
from screening.perturb import centered_window_start, delete


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
