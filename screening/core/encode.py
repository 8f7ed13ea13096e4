"""Base codes and one-hot encoding (pure, vectorised).

Sequence travels through the package as ``uint8`` codes ``A=0, C=1, G=2, T=3, N=4``.
Soft-masked (lower-case) bases read as upper case; every other IUPAC letter reads as N.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ALPHABET", "N_CODE", "encode", "decode", "one_hot", "reverse_complement"]

ALPHABET = "ACGTN"
N_CODE = 4

_LOOKUP = np.full(256, N_CODE, dtype=np.uint8)
for _code, _base in enumerate("ACGT"):
    _LOOKUP[ord(_base)] = _code
    _LOOKUP[ord(_base.lower())] = _code

_COMPLEMENT = np.array([3, 2, 1, 0, 4], dtype=np.uint8)


def encode(sequence: str | bytes | np.ndarray) -> np.ndarray:
    """Letters → ``uint8`` codes (A0 C1 G2 T3, anything else N=4)."""
    if isinstance(sequence, str):
        sequence = sequence.encode("ascii", errors="replace")
    raw = np.frombuffer(sequence, dtype=np.uint8) if isinstance(sequence, bytes) else sequence
    return _LOOKUP[raw]


def decode(codes: np.ndarray) -> str:
    """``uint8`` codes → upper-case letters."""
    return np.frombuffer(np.frombuffer(b"ACGTN", np.uint8)[codes].tobytes(), "S1").tobytes().decode()


def one_hot(codes: np.ndarray, order: str = "ACGT", n_value: float | None = None, dtype=np.float32) -> np.ndarray:
    """One-hot encode codes along a new last axis.

    Parameters
    ----------
    codes
        ``uint8`` codes of any shape.
    order
        Channel order, a permutation of ``ACGT`` optionally followed by ``N``
        (C.Origami uses ``"ATCGN"``: N gets its own channel).
    n_value
        Value written to every ACGT channel at N positions when ``order`` has no
        N channel (Orca uses 0.25); ``None`` leaves them 0.
    """
    channels = np.array([ALPHABET.index(base) for base in order])
    out = (codes[..., None] == channels).astype(dtype)
    if n_value is not None and "N" not in order:
        out[codes == N_CODE] = n_value
    return out


def reverse_complement(codes: np.ndarray, axis: int = -1) -> np.ndarray:
    """Reverse complement of codes along ``axis`` (N stays N)."""
    return np.flip(_COMPLEMENT[codes], axis=axis)
