"""Insulation: how few contacts cross a bin of a contact map, defined in one place.

Three quantities share the name, on purpose different (so they are three functions here, not
one with hidden branches):

* :func:`insulation` - the track scored by ``insulation_delta``: for each bin ``i``, the mean of
  the square with rows ``i-w+1..i`` and columns ``i..i+w-1`` (it touches the diagonal:
  cooltools' dense diamond) without the diagonals ``|i-j| < ignore_diags`` and NaN pixels, then
  ``log2(raw / mean raw over the bins)``; numpy, float64 (:func:`insulation_tensor` is the same track in
  torch, for scores computed where the maps are).
* :func:`raw_insulation_at` - the attribution target ``insulation``: the same square at one bin,
  its raw mean, in torch (differentiable; not normalised, so it depends on that square alone).
* :func:`crossing_insulation` - the demo training's evaluation metric: the square with rows
  ``i-h..i-1`` and columns ``i+1..i+h`` (strictly across bin ``i``, off the diagonal), plain
  mean, ``h`` shrinking on small maps.

Merging them would change numbers: the score and the target differ in normalisation and in
framework (float64 numpy vs torch autograd), and the training metric in geometry; the demo
model's recorded metrics (``screening/data/demo_model/metrics.json``) use the last one.
"""

from __future__ import annotations

import numpy as np
import torch

from screening.maps.masked import nan_mean as _mean

__all__ = [
    "DEFAULT_IGNORE_DIAGS", "DEFAULT_INSULATION_WINDOW", "crossing_insulation", "insulation", "insulation_tensor",
    "raw_insulation_at",
]

#: Insulation square side in bins (10 × 8192 bp ≈ 80 kb on a C.Origami map).
DEFAULT_INSULATION_WINDOW = 10
#: Diagonals ``|i − j| < ignore_diags`` left out of insulation (cooltools' default).
DEFAULT_IGNORE_DIAGS = 2


def _block_sums(values: np.ndarray, r0: np.ndarray, r1: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """Sums of ``values[:, r0:r1, c0:c1]`` for index vectors, via a summed-area table."""
    table = np.zeros((values.shape[0], values.shape[1] + 1, values.shape[2] + 1))
    table[:, 1:, 1:] = values.cumsum(axis=1).cumsum(axis=2)
    return table[:, r1, c1] - table[:, r0, c1] - table[:, r1, c0] + table[:, r0, c0]


def insulation(
    maps: np.ndarray, window: int = DEFAULT_INSULATION_WINDOW, ignore_diags: int = DEFAULT_IGNORE_DIAGS
) -> np.ndarray:
    """Normalised log2 insulation track of each map (cooltools' diamond, Crane et al. 2015).

    The raw insulation of bin ``i`` is the mean of the ``window × window`` square with
    rows ``i − window + 1 … i`` and columns ``i … i + window − 1`` (its corner touches the
    diagonal at ``(i, i)``, as cooltools' dense ``insul_diamond``), leaving out pixels
    with ``|i − j| < ignore_diags`` and NaN pixels. The track is
    ``log2(insulation / mean insulation)``, the mean taken over the map's bins (Crane et
    al.; cooltools divides by the median instead). Bins whose square leaves the map, and
    bins with insulation ≤ 0, are NaN (the log needs positive contact values, e.g.
    C.Origami's ``log(1 + Hi-C)``; Akita's ``log(obs/exp)`` maps are not).

    Parameters
    ----------
    maps
        ``[B, n, n]``.
    window
        Square side in bins (≥ 1).
    ignore_diags
        Diagonals near the main one to leave out (≥ 0).

    Returns
    -------
    numpy.ndarray
        ``float64 [B, n]``; low values mark insulating boundaries.
    """
    if window < 1 or ignore_diags < 0:
        raise ValueError(f"need window >= 1 and ignore_diags >= 0, got {window}, {ignore_diags}")
    x = np.asarray(maps, dtype=np.float64)
    n = x.shape[-1]
    i = np.arange(n)
    valid = ~np.isnan(x) & (np.abs(i[:, None] - i[None, :]) >= ignore_diags)
    full = (i - window + 1 >= 0) & (i + window <= n)
    r0, r1 = np.clip(i - window + 1, 0, n), i + 1
    c0, c1 = i, np.clip(i + window, 0, n)
    totals = _block_sums(np.where(valid, x, 0.0), r0, r1, c0, c1)
    counts = _block_sums(valid.astype(np.float64), r0, r1, c0, c1)
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.where(full & (counts > 0), totals / counts, np.nan)
        ratio = raw / _mean(raw, axis=-1)[:, None]
        return np.where(ratio > 0, np.log2(np.where(ratio > 0, ratio, 1.0)), np.nan)


def insulation_tensor(
    maps: torch.Tensor, window: int = DEFAULT_INSULATION_WINDOW, ignore_diags: int = DEFAULT_IGNORE_DIAGS
) -> torch.Tensor:
    """:func:`insulation` in torch, where ``maps`` are (the engine's scores on the device): the same
    track, float64 ``[B, n]``, equal to the numpy function within float64 rounding (tests)."""
    if window < 1 or ignore_diags < 0:
        raise ValueError(f"need window >= 1 and ignore_diags >= 0, got {window}, {ignore_diags}")
    x = maps.to(torch.float64)
    n = x.shape[-1]
    i = torch.arange(n, device=x.device)
    valid = ~torch.isnan(x) & ((i[:, None] - i[None, :]).abs() >= ignore_diags)
    full = (i - window + 1 >= 0) & (i + window <= n)
    r0, r1 = (i - window + 1).clamp(0, n), i + 1
    c0, c1 = i, (i + window).clamp(0, n)
    totals = _block_sums_tensor(torch.where(valid, x, 0.0), r0, r1, c0, c1)
    counts = _block_sums_tensor(valid.to(torch.float64), r0, r1, c0, c1)
    raw = torch.where(full & (counts > 0), totals / counts, torch.nan)
    ratio = raw / torch.nanmean(raw, dim=-1, keepdim=True)
    positive = ratio > 0  # NaN compares False
    return torch.where(positive, torch.log2(torch.where(positive, ratio, 1.0)), torch.nan)


def _block_sums_tensor(values: torch.Tensor, r0: torch.Tensor, r1: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor) -> torch.Tensor:
    """:func:`_block_sums` in torch."""
    table = values.new_zeros((values.shape[0], values.shape[1] + 1, values.shape[2] + 1))
    table[:, 1:, 1:] = values.cumsum(dim=1).cumsum(dim=2)
    return table[:, r1, c1] - table[:, r0, c1] - table[:, r1, c0] + table[:, r0, c0]


def raw_insulation_at(maps: torch.Tensor, bin: int, window: int, ignore_diags: int) -> torch.Tensor:
    """Raw insulation at one bin of ``[B, n, n]`` maps, ``[B]``: the mean of :func:`insulation`'s square
    at ``bin`` without the diagonals ``|i − j| < ignore_diags`` (no NaN handling, no normalisation).
    The caller checks that the square lies inside the maps."""
    i, w = bin, window
    square = maps[:, i - w + 1 : i + 1, i : i + w]
    # square[r, c] is pixel (i - w + 1 + r, i + c): its distance from the diagonal is c - r + w - 1
    offsets = torch.arange(w, device=maps.device)
    keep = (offsets[None, :] - offsets[:, None] + w - 1) >= ignore_diags
    return (square * keep).sum(dim=(-2, -1)) / keep.sum()


def crossing_insulation(maps: np.ndarray, half: int = 10) -> np.ndarray:
    """Insulation score: mean contact across each bin's ``half``-bin square, ``[B, n - 2 half]``.

    ``half`` shrinks to ``n // 4`` on small maps.
    """
    n = maps.shape[-1]
    half = max(1, min(half, n // 4))
    return np.stack(
        [maps[..., i - half : i, i + 1 : i + half + 1].mean(axis=(-2, -1)) for i in range(half, n - half)], axis=-1
    )
