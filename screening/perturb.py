"""Perturbations as pure functions: arrays in, arrays out.

Sequence is ``uint8`` codes (A0 C1 G2 T3 N4, see :mod:`screening.encode`) and
tracks are ``float32 [n_tracks, length]``; nothing here touches files.
"""

from __future__ import annotations

import numpy as np

from screening.encode import N_CODE

__all__ = ["centered_window_start", "delete"]


def centered_window_start(start: int, width: int, window_length: int) -> int:
    """Start of a model window centred on the interval ``[start, start + width)``.

    Matches C.Origami's ``int(start + width / 2 - window_length / 2)`` for every
    non-negative result.
    """
    return (2 * start + width - window_length) // 2


def delete(
    codes: np.ndarray,
    tracks: np.ndarray | None,
    offset: int,
    width: int,
    out_length: int,
    padding: str = "zero",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Delete ``[offset, offset + width)`` from a loaded span and cut it to ``out_length``.

    Parameters
    ----------
    codes
        ``uint8 [span]`` with ``span >= out_length + width`` so downstream sequence
        can shift in.
    tracks
        ``float32 [n_tracks, span]`` deleted together with the sequence, or ``None``.
    offset, width
        The deleted interval, relative to the span start.
    out_length
        Length of the returned window.
    padding
        ``"zero"``: positions past ``out_length`` are set to N / 0 *before* the
        deletion, so the window's tail is padding (C.Origami's screen);
        ``"follow"``: the real downstream sequence fills the tail.

    Returns
    -------
    (codes, tracks)
        New arrays of length ``out_length``; the inputs are not modified.
    """
    span = codes.shape[-1]
    if width <= 0:
        raise ValueError(f"deletion width must be positive, got {width}")
    if offset < 0 or offset + width > span:
        raise ValueError(f"deletion [{offset}, {offset + width}) lies outside the loaded span of {span} bp")
    if span < out_length + width:
        raise ValueError(f"span of {span} bp is shorter than window {out_length} + deletion {width}")
    keep = np.ones(span, dtype=bool)
    keep[offset : offset + width] = False
    new_codes = codes.copy()
    new_tracks = None if tracks is None else tracks.copy()
    if padding == "zero":
        new_codes[out_length:] = N_CODE
        if new_tracks is not None:
            new_tracks[:, out_length:] = 0.0
    elif padding != "follow":
        raise ValueError(f"padding must be 'zero' or 'follow', got {padding!r}")
    new_codes = new_codes[keep][:out_length]
    if new_tracks is not None:
        new_tracks = new_tracks[:, keep][:, :out_length]
    return new_codes, new_tracks
