"""The scores of :mod:`screening.maps.score`, computed in torch where the maps are.

The engine predicts a batch of maps on the model's device and scores it there
(:func:`score_tensors`): only the ``[B]`` score vectors (and the Δ maps it keeps) cross to the
host. Every registered score has its torch twin here (:data:`TORCH_SCORES`), with the same name,
arguments and semantics: differences taken in the maps' own precision (float32), reductions in
float64, NaN pixels (masked by an alignment) left out, NaN where no pixel is left, the same
aligned maps, insulation track and ROI blocks. The numpy functions of :mod:`screening.maps.score`
stay the reference implementation: the tests compare both on random and predicted maps (they
agree to float64 rounding, ~1e-12 relative; the C.Origami scores on maps without NaN are no
longer bit-identical to ``np.abs(Δ).mean()``, the summation order differs).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from screening.maps.align import BinAlignment, alignment_index
from screening.maps.insulation import DEFAULT_IGNORE_DIAGS, DEFAULT_INSULATION_WINDOW, insulation_tensor
from screening.maps.score import AKITA_DIAGONAL_OFFSET, _bin_masks, parse_score_names
from screening.maps.structure_torch import decay_mse, di_mse, insulation_mse, pc1_mse, scc, ssi, triangle_mse

__all__ = [
    "TORCH_SCORES",
    "align_tensors",
    "decay_mse",
    "di_mse",
    "maybe_finite",
    "impact_abs_mean",
    "impact_mean_abs",
    "insulation_delta",
    "insulation_mse",
    "mse",
    "pc1_mse",
    "pearson",
    "roi_mean_delta",
    "scc",
    "scd",
    "score_tensors",
    "spearman",
    "ssd",
    "ssi",
    "triangle_mse",
]

Tensor = torch.Tensor


# --- masked reductions --------------------------------------------------------------------


def _check(reference: Tensor, perturbed: Tensor) -> None:
    if reference.shape != perturbed.shape:
        raise ValueError(f"map shapes differ: {tuple(reference.shape)} vs {tuple(perturbed.shape)}")


def _diff(reference: Tensor, perturbed: Tensor) -> Tensor:
    _check(reference, perturbed)
    return (perturbed - reference).to(torch.float64)


def _no_nan(x: Tensor) -> bool:
    """True when ``x`` certainly holds no NaN, checked on the host only (its sum is not NaN: one fast pass, no
    temporary; a sum that is NaN without a NaN in ``x`` only costs the masked path); on an accelerator False without
    looking, so nothing waits for the device (the masked reductions are then always taken)."""
    return x.device.type == "cpu" and not bool(torch.isnan(x.sum()))


def maybe_finite(maps: Tensor) -> Tensor:
    """Whether each of ``[B, ...]`` is all finite, ``bool [B]``, cheaply where the maps are: its sum is finite (NaN
    and inf propagate into it). False may also mean a sum that overflowed: confirm a False with
    ``torch.isfinite(m).all()`` before acting on it."""
    return torch.isfinite(maps.reshape(len(maps), -1).sum(dim=1))


def _mean(x: Tensor, dim: tuple[int, ...] = (-2, -1)) -> Tensor:
    """Mean over ``dim`` without NaNs, in float64 (a float32 ``x`` is widened, as numpy's reference does); NaN where
    nothing is left."""
    if _no_nan(x):
        return x.mean(dim=dim, dtype=torch.float64)
    return torch.nanmean(x, dim=dim, dtype=torch.float64)


def _sum(x: Tensor) -> Tensor:
    """Sum over the last axis without NaNs; NaN where nothing is left."""
    if x.shape[-1] and _no_nan(x):
        return x.sum(dim=-1)
    return torch.where(torch.isnan(x).all(dim=-1), torch.nan, torch.nansum(x, dim=-1))


def _joint(reference: Tensor, perturbed: Tensor, dtype: torch.dtype | None = torch.float64) -> tuple[Tensor, Tensor]:
    """Both maps as ``[B, n·n]`` vectors (``dtype``, or their own), NaN where either map is NaN."""
    _check(reference, perturbed)
    x = reference.reshape(reference.shape[0], -1)
    y = perturbed.reshape(perturbed.shape[0], -1)
    if dtype is not None:
        x, y = x.to(dtype), y.to(dtype)
    if _no_nan(x) and _no_nan(y):
        return x, y
    bad = torch.isnan(x) | torch.isnan(y)
    return torch.where(bad, torch.nan, x), torch.where(bad, torch.nan, y)


_UPPER: dict[tuple[int, int, torch.device], Tensor] = {}


def _upper(x: Tensor, diagonal_offset: int) -> Tensor:
    """Akita's vector: pixels ``(i, j)`` with ``j − i ≥ diagonal_offset``, ``[B, m]`` (in ``np.triu_indices`` order)."""
    n = x.shape[-1]
    key = (n, diagonal_offset, x.device)
    pixels = _UPPER.get(key)
    if pixels is None:  # flat indices, kept per map side: one index_select, the fastest gather
        rows, cols = torch.triu_indices(n, n, diagonal_offset, device=x.device)
        pixels = _UPPER[key] = rows * n + cols
    return x.reshape(*x.shape[:-2], n * n).index_select(-1, pixels)


# --- the scores ---------------------------------------------------------------------------


def _delta(reference: Tensor, perturbed: Tensor) -> Tensor:
    """``perturbed − reference`` in the maps' own precision (what :func:`_diff` widens to float64)."""
    _check(reference, perturbed)
    return perturbed - reference


def impact_mean_abs(reference: Tensor, perturbed: Tensor) -> Tensor:
    """:func:`screening.maps.score.impact_mean_abs` in torch."""
    return _mean(_delta(reference, perturbed).abs_())  # |Δ| is exact in float32; summed in float64


def impact_abs_mean(reference: Tensor, perturbed: Tensor) -> Tensor:
    """:func:`screening.maps.score.impact_abs_mean` in torch."""
    return _mean(_delta(reference, perturbed)).abs()


def scd(reference: Tensor, perturbed: Tensor, diagonal_offset: int = AKITA_DIAGONAL_OFFSET) -> Tensor:
    """:func:`screening.maps.score.scd` in torch."""
    d = _upper(_diff(reference, perturbed), diagonal_offset)
    return torch.sqrt(_sum(d * d))


def ssd(reference: Tensor, perturbed: Tensor, diagonal_offset: int = AKITA_DIAGONAL_OFFSET) -> Tensor:
    """:func:`screening.maps.score.ssd` in torch."""
    _check(reference, perturbed)
    x, y = _joint(_upper(reference, diagonal_offset), _upper(perturbed, diagonal_offset))
    return torch.sqrt(_sum(y * y)) - torch.sqrt(_sum(x * x))


def mse(reference: Tensor, perturbed: Tensor) -> Tensor:
    """:func:`screening.maps.score.mse` in torch."""
    d = _diff(reference, perturbed)
    return _mean(d * d)


def _pearson_rows(x: Tensor, y: Tensor) -> Tensor:
    """Row-wise Pearson r of float64 ``[B, m]`` vectors sharing NaN positions; NaN if either is constant."""
    if _no_nan(x):  # every pixel counts (the host's shortcut)
        dx, dy = x - x.mean(dim=-1, keepdim=True), y - y.mean(dim=-1, keepdim=True)
        constant = _constant_rows(x) | _constant_rows(y)
    else:
        valid = ~torch.isnan(x)
        count = valid.sum(dim=-1, keepdim=True)
        dx = torch.where(valid, x - torch.nansum(x, dim=-1, keepdim=True) / count, 0.0)
        dy = torch.where(valid, y - torch.nansum(y, dim=-1, keepdim=True) / count, 0.0)
        constant = _constant_rows(x, valid) | _constant_rows(y, valid)
    r = (dx * dy).sum(dim=-1) / torch.sqrt((dx * dx).sum(dim=-1) * (dy * dy).sum(dim=-1))
    return torch.where(constant, torch.nan, r.clamp(-1.0, 1.0))


def _constant_rows(x: Tensor, valid: Tensor | None = None) -> Tensor:
    """Rows whose valid values are all equal (or absent): rounding in the mean leaves a constant vector tiny
    residuals, so these are called constant outright."""
    if x.shape[-1] == 0:
        return torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
    if valid is None:
        return x.amin(dim=-1) >= x.amax(dim=-1)
    return torch.where(valid, x, torch.inf).amin(dim=-1) >= torch.where(valid, x, -torch.inf).amax(dim=-1)


def pearson(reference: Tensor, perturbed: Tensor) -> Tensor:
    """:func:`screening.maps.score.pearson` in torch."""
    return _pearson_rows(*_joint(reference, perturbed))


def _sorted(x: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.sort`` of the rows (NaN last, as numpy); on the host numpy's sort, the faster one there."""
    if x.device.type == "cpu":
        order = torch.from_numpy(np.argsort(x.detach().numpy(), axis=-1))
        return x.gather(-1, order), order
    return torch.sort(x, dim=-1)


def _average_ranks(x: Tensor) -> Tensor:
    """Row-wise ranks 1..m of ``[B, m]`` as float64, ties get their mean rank, NaN stays NaN.

    Sorted in ``x``'s own dtype (float32 maps sort faster than float64, in the same order); NaN sort
    last, so the ranks of the other values are those among them alone.
    """
    ordered, order = _sorted(x)
    m = x.shape[-1]
    position = torch.arange(m, device=x.device).expand(x.shape)
    starts = torch.ones(x.shape, dtype=torch.bool, device=x.device)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, position, 0).cummax(dim=-1).values
    last = torch.where(ends, position, m - 1).flip(-1).cummin(dim=-1).values.flip(-1)
    ranks = torch.empty(x.shape, dtype=torch.float64, device=x.device)
    ranks.scatter_(-1, order, (first + last).to(torch.float64) / 2.0 + 1.0)
    return torch.where(torch.isnan(x), torch.nan, ranks)


def _shared(x: Tensor) -> bool:
    """True for a batch that is one map repeated without copies (``expand``: the engine's shared reference)."""
    return x.ndim == 3 and x.shape[0] > 1 and x.stride(0) == 0


def spearman(reference: Tensor, perturbed: Tensor) -> Tensor:
    """:func:`screening.maps.score.spearman` in torch."""
    dtype = torch.promote_types(torch.promote_types(reference.dtype, perturbed.dtype), torch.float32)
    if _shared(reference) and _no_nan(reference[:1]) and _no_nan(perturbed):  # one reference ranked once
        _check(reference, perturbed)
        x = _average_ranks(reference[:1].reshape(1, -1).to(dtype)).expand(reference.shape[0], -1)
        return _pearson_rows(x, _average_ranks(perturbed.reshape(perturbed.shape[0], -1).to(dtype)))
    x, y = _joint(reference, perturbed, dtype)
    return _pearson_rows(_average_ranks(x), _average_ranks(y))


def _positions(position: Any, batch: int, device: torch.device) -> Tensor:
    return torch.as_tensor(np.broadcast_to(np.asarray(position, dtype=np.int64), (batch,)).copy(), device=device)


def insulation_delta(
    reference: Tensor,
    perturbed: Tensor,
    position: int | Sequence[int] | np.ndarray | Tensor,
    window: int = DEFAULT_INSULATION_WINDOW,
    ignore_diags: int = DEFAULT_IGNORE_DIAGS,
) -> Tensor:
    """:func:`screening.maps.score.insulation_delta` in torch."""
    _check(reference, perturbed)
    batch, n = reference.shape[0], reference.shape[-1]
    if isinstance(position, Tensor):
        pos = position.to(device=reference.device, dtype=torch.int64).expand(batch)
    else:
        pos = _positions(position, batch, reference.device)
    inside = (pos >= 0) & (pos < n)
    if _shared(reference):  # one reference's track, computed once
        reference_track = insulation_tensor(reference[:1], window, ignore_diags).expand(batch, n)
    else:
        reference_track = insulation_tensor(reference, window, ignore_diags)
    delta = insulation_tensor(perturbed, window, ignore_diags) - reference_track
    picked = delta[torch.arange(batch, device=delta.device), torch.where(inside, pos, 0)]
    return torch.where(inside, picked, torch.nan)


def roi_mean_delta(reference: Tensor, perturbed: Tensor, rows: Any, cols: Any) -> Tensor:
    """:func:`screening.maps.score.roi_mean_delta` in torch (the selections are those of the numpy function)."""
    d = _diff(reference, perturbed)
    batch, n = d.shape[0], d.shape[-1]
    masks = np.stack([_bin_masks(rows, batch, n), _bin_masks(cols, batch, n)])
    row_mask, col_mask = torch.as_tensor(masks, device=d.device)
    block = row_mask[:, :, None] & col_mask[:, None, :]
    if not _no_nan(d):
        block = block & ~torch.isnan(d)
    return torch.where(block, d, 0.0).sum(dim=(-2, -1)) / block.sum(dim=(-2, -1))


#: The torch twin of every score of :data:`screening.maps.score.SCORES`, by name.
TORCH_SCORES: dict[str, Callable[..., Tensor]] = {
    "impact_mean_abs": impact_mean_abs,
    "impact_abs_mean": impact_abs_mean,
    "scd": scd,
    "ssd": ssd,
    "mse": mse,
    "pearson": pearson,
    "spearman": spearman,
    "insulation_delta": insulation_delta,
    "roi_mean_delta": roi_mean_delta,
    "ssi": ssi,
    "scc": scc,
    "insulation_mse": insulation_mse,
    "di_mse": di_mse,
    "decay_mse": decay_mse,
    "triangle_mse": triangle_mse,
    "pc1_mse": pc1_mse,
}


# --- aligned maps and the batch -----------------------------------------------------------


def align_tensors(index: np.ndarray | Tensor, reference: Tensor, perturbed: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`screening.maps.align.align_maps` in torch, from the alignments' index.

    Parameters
    ----------
    index
        ``int64 [B, n]``: the perturbed bin of every reference bin, −1 where unaligned
        (:func:`~screening.maps.align.alignment_index`, or
        :meth:`~screening.maps.align.AlignmentCache.index`).
    reference, perturbed
        ``[B, n, n]`` maps.

    Returns
    -------
    (reference_aligned, perturbed_aligned)
        Floating ``[B, n, n]`` (float32 maps stay float32), NaN where unaligned.
    """
    if reference.shape != perturbed.shape or reference.ndim != 3:
        raise ValueError(
            f"expected two [B, n, n] maps of one shape, got {tuple(reference.shape)} and {tuple(perturbed.shape)}"
        )
    index = torch.as_tensor(index, dtype=torch.int64, device=reference.device)
    if index.shape != reference.shape[:2]:
        raise ValueError(f"alignment index of shape {tuple(index.shape)} for maps of shape {tuple(reference.shape)}")
    valid = index >= 0
    pixel_valid = valid[:, :, None] & valid[:, None, :]
    safe = index.clamp(min=0)
    n = reference.shape[-1]
    pixels = (safe[:, :, None] * n + safe[:, None, :]).reshape(len(index), -1)  # one flat gather: the fastest on CPU
    moved = perturbed.reshape(len(index), -1).gather(1, pixels).reshape(perturbed.shape)
    dtype = torch.promote_types(torch.promote_types(reference.dtype, perturbed.dtype), torch.float32)
    ref_out = torch.where(pixel_valid, reference.to(dtype), torch.nan)
    alt_out = torch.where(pixel_valid, moved.to(dtype), torch.nan)
    return ref_out, alt_out


def score_tensors(
    reference: Tensor,
    perturbed: Tensor,
    names: Sequence[str],
    alignments: Sequence[BinAlignment] | np.ndarray | Tensor | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Tensor]:
    """:func:`screening.maps.score.score_maps` in torch: the named scores of a batch of map pairs, computed
    on the maps' device.

    Parameters
    ----------
    reference, perturbed
        ``[B, n, n]`` tensors on one device.
    names, context
        As in :func:`~screening.maps.score.score_maps`.
    alignments
        For ``_aligned`` names: one :class:`~screening.maps.align.BinAlignment` per sample, or their
        ``int64 [B, n]`` index (:class:`~screening.maps.align.AlignmentCache` builds it once per edit
        geometry).

    Returns
    -------
    dict
        ``name → float64 [B]`` tensor on the maps' device, in the order of ``names``.
    """
    parsed, needs_alignment = parse_score_names(names, alignments)
    context = {} if context is None else context
    aligned_maps = None
    if needs_alignment:
        assert alignments is not None  # parse_score_names refused the other case
        if not isinstance(alignments, (np.ndarray, Tensor)):
            if len(alignments) != reference.shape[0]:
                raise ValueError(f"{len(alignments)} alignments for a batch of {reference.shape[0]}")
            alignments = alignment_index(alignments, reference.shape[-1])
        aligned_maps = align_tensors(alignments, reference, perturbed)
    out = {}
    for name, (score, aligned) in parsed.items():
        ref, alt = aligned_maps if aligned_maps is not None and aligned else (reference, perturbed)
        out[name] = TORCH_SCORES[score.name](ref, alt, **score.kwargs(context))
    return out
