import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from screening.core.encode import decode, encode, one_hot, reverse_complement


def test_encode_soft_mask_and_iupac():
    assert encode("ACGTacgtNnRYKMSWBDHV").tolist() == [0, 1, 2, 3, 0, 1, 2, 3] + [4] * 12


def test_one_hot_corigami_order_has_n_channel():
    out = one_hot(encode("ATCGN"), order="ATCGN")
    np.testing.assert_array_equal(out, np.eye(5, dtype=np.float32))


def test_one_hot_orca_n_is_quarter():
    out = one_hot(encode("ACGTN"), order="ACGT", n_value=0.25)
    np.testing.assert_array_equal(out[:4], np.eye(4))
    np.testing.assert_array_equal(out[4], [0.25] * 4)


@given(st.text(alphabet="ACGTN", max_size=200))
def test_reverse_complement_twice_is_identity(seq):
    codes = encode(seq)
    np.testing.assert_array_equal(reverse_complement(reverse_complement(codes)), codes)
    assert decode(codes) == seq


def test_reverse_complement_letters():
    assert decode(reverse_complement(encode("AACGTN"))) == "NACGTT"
