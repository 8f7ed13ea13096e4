"""The scores of :mod:`screening.maps.structure` in torch, where the maps are (the engine scores on the device).

Same names, arguments and semantics as the numpy functions (the reference): float64 throughout, NaN pixels
of either map left out, NaN tracks left out of the MSE. Window sums are the same additions in the same
order, so :func:`ssi` and the smoothing of :func:`scc` agree with numpy to the last bit or nearly; medians
come from ``torch.sort`` (NaN last, as numpy's sort), and :func:`pc1_mse`'s eigenvector from
``torch.linalg.eigh`` (the tests compare both on random, tied, masked and constant maps).
"""

from __future__ import annotations

import torch

from screening.maps.insulation import DEFAULT_IGNORE_DIAGS, DEFAULT_INSULATION_WINDOW, insulation_tensor
from screening.maps.structure import DEFAULT_DATA_RANGE, DEFAULT_DI_WINDOW, DEFAULT_SSI_WINDOW, SSI_K1, SSI_K2
from screening.maps.structure import TRIANGLE_DIAGONAL_OFFSET

__all__ = ["decay_mse", "di_mse", "insulation_mse", "pc1_mse", "scc", "ssi", "triangle_mse"]

Tensor = torch.Tensor


def _joint(reference: Tensor, perturbed: Tensor) -> tuple[Tensor, Tensor]:
    if reference.shape != perturbed.shape or reference.ndim != 3:
        raise ValueError(
            f"expected two [B, n, n] maps of one shape, got {tuple(reference.shape)} and {tuple(perturbed.shape)}"
        )
    x, y = reference.to(torch.float64), perturbed.to(torch.float64)
    bad = torch.isnan(x) | torch.isnan(y)
    return torch.where(bad, torch.nan, x), torch.where(bad, torch.nan, y)


def _track_mse(a: Tensor, b: Tensor) -> Tensor:
    both = torch.isfinite(a) & torch.isfinite(b)
    d = torch.where(both, b - a, 0.0)
    return (d * d).sum(dim=-1) / both.sum(dim=-1)


def _shifted_sum(x: Tensor, width: int, dim: int) -> Tensor:
    m = x.shape[dim] - width + 1
    total = x.narrow(dim, 0, m)
    for k in range(1, width):
        total = total + x.narrow(dim, k, m)
    return total


def _window_sums(x: Tensor, width: int) -> Tensor:
    return _shifted_sum(_shifted_sum(x, width, -2), width, -1)


def _diagonals(x: Tensor, first: int, last: int) -> Tensor:
    n = x.shape[-1]
    offsets = torch.arange(first, last + 1, device=x.device)[:, None]
    rows = torch.arange(n, device=x.device)[None, :].expand(len(offsets), n)
    cols = rows + offsets
    out = x[:, rows, cols.clamp(max=n - 1)]
    return torch.where(cols < n, out, torch.nan)


def _pearson_rows(x: Tensor, y: Tensor) -> Tensor:
    valid = ~torch.isnan(x)
    count = valid.sum(dim=-1, keepdim=True)
    dx = torch.where(valid, x - torch.where(valid, x, 0.0).sum(-1, keepdim=True) / count, 0.0)
    dy = torch.where(valid, y - torch.where(valid, y, 0.0).sum(-1, keepdim=True) / count, 0.0)
    r = (dx * dy).sum(-1) / torch.sqrt((dx * dx).sum(-1) * (dy * dy).sum(-1))
    constant = _constant(x, valid) | _constant(y, valid)
    return torch.where(constant, torch.nan, r.clamp(-1.0, 1.0))


def _constant(x: Tensor, valid: Tensor) -> Tensor:
    if x.shape[-1] == 0:
        return torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
    return torch.where(valid, x, torch.inf).amin(dim=-1) >= torch.where(valid, x, -torch.inf).amax(dim=-1)


def _masked_mean(x: Tensor, dim: int = -1) -> Tensor:
    valid = ~torch.isnan(x)
    return torch.where(valid, x, 0.0).sum(dim=dim) / valid.sum(dim=dim)


def ssi(
    reference: Tensor, perturbed: Tensor, ssi_window: int = DEFAULT_SSI_WINDOW, data_range: float = DEFAULT_DATA_RANGE
) -> Tensor:
    """:func:`screening.maps.structure.ssi` in torch."""
    if ssi_window < 2 or data_range <= 0:
        raise ValueError(f"need ssi_window >= 2 and data_range > 0, got {ssi_window}, {data_range}")
    x, y = _joint(reference, perturbed)
    if x.shape[-1] < ssi_window:
        return torch.full((x.shape[0],), torch.nan, dtype=torch.float64, device=x.device)
    valid = ~torch.isnan(x)
    x, y = torch.where(valid, x, 0.0), torch.where(valid, y, 0.0)
    count = _window_sums(valid.to(torch.float64), ssi_window)
    sx, sy = _window_sums(x, ssi_window), _window_sums(y, ssi_window)
    sxx, syy, sxy = _window_sums(x * x, ssi_window), _window_sums(y * y, ssi_window), _window_sums(x * y, ssi_window)
    c1, c2 = (SSI_K1 * data_range) ** 2, (SSI_K2 * data_range) ** 2
    mx, my = sx / count, sy / count
    vx, vy, vxy = (sxx - sx * mx) / (count - 1), (syy - sy * my) / (count - 1), (sxy - sx * my) / (count - 1)
    s = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return _masked_mean(torch.where(count >= 2, s, torch.nan).reshape(len(s), -1))


def _smooth(x: Tensor, h: int) -> Tensor:
    valid = ~torch.isnan(x)
    pad = (h, h, h, h)
    side = 2 * h + 1
    totals = _window_sums(torch.nn.functional.pad(torch.where(valid, x, 0.0), pad), side)
    counts = _window_sums(torch.nn.functional.pad(valid.to(torch.float64), pad), side)
    return torch.where(valid, totals / counts, torch.nan)


def scc(reference: Tensor, perturbed: Tensor, scc_smoothing: int = 0, scc_max_distance: int | None = None) -> Tensor:
    """:func:`screening.maps.structure.scc` in torch."""
    if scc_smoothing < 0 or (scc_max_distance is not None and scc_max_distance < 1):
        raise ValueError(f"need scc_smoothing >= 0 and scc_max_distance >= 1, got {scc_smoothing}, {scc_max_distance}")
    x, y = _joint(reference, perturbed)
    n = x.shape[-1]
    last = n - 1 if scc_max_distance is None else min(scc_max_distance, n - 1)
    if last < 1:
        return torch.full((x.shape[0],), torch.nan, dtype=torch.float64, device=x.device)
    if scc_smoothing:
        x, y = _smooth(x, scc_smoothing), _smooth(y, scc_smoothing)
    dx, dy = _diagonals(x, 1, last), _diagonals(y, 1, last)
    drop = (dx == 0) & (dy == 0)
    dx, dy = torch.where(drop, torch.nan, dx), torch.where(drop, torch.nan, dy)
    rho = _pearson_rows(dx, dy)
    weight = ((~torch.isnan(dx)).sum(dim=-1) + 1).to(torch.float64) / 12.0  # int / float would be float32
    used = ~torch.isnan(rho)
    return torch.where(used, weight * rho, 0.0).sum(dim=-1) / torch.where(used, weight, 0.0).sum(dim=-1)


def _di_track(x: Tensor, w: int) -> Tensor:
    n = x.shape[-1]
    i = torch.arange(n, device=x.device)[:, None]
    t = torch.arange(1, w + 1, device=x.device)[None, :]
    up = x[:, (i - t).clamp(0, n - 1), i.expand(n, w)]
    down = x[:, i.expand(n, w), (i + t).clamp(0, n - 1)]
    bins = torch.arange(n, device=x.device)
    inside = (bins >= w) & (bins + w < n)
    a, b = w * _masked_mean(up), w * _masked_mean(down)
    e = (a + b) / 2
    di = torch.sign(b - a) * ((a - e) ** 2 / e + (b - e) ** 2 / e)
    return torch.where(inside & (e > 0), di, torch.nan)


def di_mse(reference: Tensor, perturbed: Tensor, window: int = DEFAULT_DI_WINDOW) -> Tensor:
    """:func:`screening.maps.structure.di_mse` in torch."""
    if window < 1:
        raise ValueError(f"need window >= 1, got {window}")
    x, y = _joint(reference, perturbed)
    return _track_mse(_di_track(x, window), _di_track(y, window))


def insulation_mse(
    reference: Tensor,
    perturbed: Tensor,
    window: int = DEFAULT_INSULATION_WINDOW,
    ignore_diags: int = DEFAULT_IGNORE_DIAGS,
) -> Tensor:
    """:func:`screening.maps.structure.insulation_mse` in torch."""
    x, y = _joint(reference, perturbed)
    return _track_mse(insulation_tensor(x, window, ignore_diags), insulation_tensor(y, window, ignore_diags))


def _decay_track(x: Tensor) -> Tensor:
    ordered = torch.sort(_diagonals(x, 0, x.shape[-1] - 1), dim=-1).values  # NaN sort last
    count = (~torch.isnan(ordered)).sum(dim=-1, keepdim=True)
    lower = ordered.gather(-1, ((count - 1) // 2).clamp(min=0))
    upper = ordered.gather(-1, count // 2)
    return ((lower + upper) / 2)[..., 0]


def decay_mse(reference: Tensor, perturbed: Tensor) -> Tensor:
    """:func:`screening.maps.structure.decay_mse` in torch."""
    x, y = _joint(reference, perturbed)
    return _track_mse(_decay_track(x), _decay_track(y))


def _prefix_block(x: Tensor) -> Tensor:
    n = x.shape[-1]
    table = x.new_zeros((x.shape[0], n + 1, n + 1))
    table[:, 1:, 1:] = x.cumsum(dim=1).cumsum(dim=2)
    a = torch.arange(n, device=x.device)[:, None]
    b = torch.arange(n, device=x.device)[None, :] + 1
    return table[:, b, b] - table[:, a, b] - table[:, b, a] + table[:, a, a]


def _triangle_track(x: Tensor, diagonal_offset: int) -> Tensor:
    batch, n = x.shape[0], x.shape[-1]
    i = torch.arange(n, device=x.device)
    keep = ~torch.isnan(x) & (i[None, :] - i[:, None] >= diagonal_offset)
    sums = _prefix_block(torch.where(keep, x, 0.0))
    counts = _prefix_block(keep.to(torch.float64))
    segment = i[None, :] - i[:, None] > max(diagonal_offset, 0)
    return torch.where(segment & (counts > 0), sums / counts, torch.nan).reshape(batch, n * n)


def triangle_mse(reference: Tensor, perturbed: Tensor, diagonal_offset: int = TRIANGLE_DIAGONAL_OFFSET) -> Tensor:
    """:func:`screening.maps.structure.triangle_mse` in torch."""
    x, y = _joint(reference, perturbed)
    return _track_mse(_triangle_track(x, diagonal_offset), _triangle_track(y, diagonal_offset))


def _pc1_track(x: Tensor) -> Tensor:
    valid = ~torch.isnan(x)
    centre = torch.where(valid, x, 0.0).sum(dim=-2, keepdim=True) / valid.sum(dim=-2, keepdim=True)
    centred = torch.where(valid, x - centre, 0.0)
    _, vectors = torch.linalg.eigh(centred.transpose(-1, -2) @ centred)
    track = (centred @ vectors[..., -1:])[..., 0]
    flat = (centred == 0).all(dim=-1).all(dim=-1)[:, None]
    return torch.where(valid.any(dim=-1) & ~flat, track, torch.nan)


def pc1_mse(reference: Tensor, perturbed: Tensor) -> Tensor:
    """:func:`screening.maps.structure.pc1_mse` in torch (``torch.linalg.eigh``, batched, on the maps' device)."""
    x, y = _joint(reference, perturbed)
    a, b = _pc1_track(x), _pc1_track(y)
    both = torch.isfinite(a) & torch.isfinite(b)
    dot = torch.where(both, a * b, 0.0).sum(dim=-1, keepdim=True)
    return _track_mse(a, torch.where(dot < 0, -b, b))
