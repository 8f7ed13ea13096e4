"""Scalar targets of predicted maps: values by hand, gradients by finite differences, bins of intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from screening.models.base import WindowGeometry
from screening.maps.targets import (
    TARGETS,
    Block,
    Difference,
    Insulation,
    WholeMap,
    available_targets,
    bins_of,
    make_target,
    windows_missing,
)



pytestmark = pytest.mark.usefixtures("one_thread")


def _maps(batch: int = 2, n: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(batch, n, n))).to(dtype)


# --- values by hand -----------------------------------------------------------------------


def test_whole_map_is_the_sum():
    maps = torch.arange(2 * 3 * 3, dtype=torch.float64).reshape(2, 3, 3)
    assert WholeMap()(maps).tolist() == [36.0, 117.0]


def test_block_is_the_mean_of_its_pixels():
    maps = _maps()
    got = Block(range(1, 3), slice(3, 6))(maps)
    by_hand = [np.mean([maps[b, i, j].item() for i in (1, 2) for j in (3, 4, 5)]) for b in range(2)]
    np.testing.assert_allclose(got.numpy(), by_hand, rtol=1e-12)
    # (rows, cols) as pairs gives the same block; a non-symmetric map reads rows and cols as given
    assert torch.equal(Block((1, 3), (3, 6))(maps), got)
    assert not torch.allclose(Block((3, 6), (1, 3))(maps), got)


@pytest.mark.parametrize("window, ignore", [(1, 0), (2, 0), (2, 1), (2, 2), (3, 2), (3, 4)])
def test_insulation_matches_a_loop_over_the_square(window, ignore):
    maps, i = _maps(n=8), 4
    got = Insulation(i, window, ignore)(maps)
    for b in range(2):
        pixels = [
            maps[b, r, c].item()
            for r in range(i - window + 1, i + 1)
            for c in range(i, i + window)
            if abs(r - c) >= ignore
        ]
        assert got[b].item() == pytest.approx(np.mean(pixels), rel=1e-12)


def test_insulation_is_lower_at_a_boundary():
    # two 4-bin domains with strong within-domain contacts: the boundary after bin 3 insulates
    n = 8
    domain = np.repeat(np.arange(2), 4)
    maps = torch.from_numpy(np.where(domain[:, None] == domain[None, :], 5.0, 1.0))[None]
    at_boundary = Insulation(3, window=3, ignore_diags=0)(maps).item()
    inside = Insulation(2, window=2, ignore_diags=0)(maps).item()
    assert at_boundary < inside
    assert maps.shape[-1] == n


def test_difference_is_block_a_minus_block_b():
    maps = _maps()
    a, b = Block(range(0, 2), range(4, 6)), Block(range(2, 3), range(2, 5))
    got = Difference(a, b)(maps)
    assert torch.allclose(got, a(maps) - b(maps))
    assert Difference({"rows": range(0, 2), "cols": range(4, 6)}, ((2, 3), (2, 5))) == Difference(a, b)


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [range(0, 4, 2), slice(None, 3), (3, 3), (-1, 2), "1-3", (1, 2, 3)])
def test_bad_bin_spans_are_refused(bins):
    with pytest.raises(ValueError):
        Block(bins, (0, 1))


def test_bins_outside_the_map_are_refused_at_call():
    with pytest.raises(ValueError, match="outside a map of 6 bins"):
        Block((0, 2), (4, 7))(_maps())
    with pytest.raises(ValueError, match="outside a map"):
        Insulation(4, window=3)(_maps())
    with pytest.raises(ValueError, match="leaves the map"):
        Insulation(1, window=3)
    with pytest.raises(ValueError, match="ignore_diags"):
        Insulation(4, window=2, ignore_diags=3)
    with pytest.raises(ValueError, match=r"\[B, n, n\]"):
        WholeMap()(torch.zeros(3, 4))


def test_targets_are_frozen_and_hashable():
    target = make_target("block", rows=range(1, 3), cols=[4, 6])
    assert target == Block((1, 3), (4, 6)) and hash(target) == hash(Block((1, 3), (4, 6)))
    with pytest.raises(AttributeError):
        target.rows = (0, 1)  # type: ignore[misc]


def test_registry_lists_every_kind_with_its_params():
    listed = available_targets()
    assert set(listed) == set(TARGETS) == {"whole_map", "block", "insulation", "difference"}
    assert listed["block"]["params"] == ("rows", "cols")
    assert listed["insulation"]["optional"] == ("window", "ignore_diags")
    assert make_target("insulation", bin=5, window=3) == Insulation(5, 3)
    assert make_target("whole_map") == WholeMap()
    with pytest.raises(ValueError, match="unknown target kind"):
        make_target("loop")
    with pytest.raises(ValueError, match=r"missing \['cols'\]"):
        make_target("block", rows=(1, 2))
    with pytest.raises(ValueError, match=r"unknown \['width'\]"):
        make_target("insulation", bin=5, width=3)


# --- gradients against finite differences -------------------------------------------------

ALL_TARGETS = [
    WholeMap(),
    Block((1, 3), (3, 6)),
    Insulation(3, window=3, ignore_diags=1),
    Difference(((0, 2), (4, 6)), ((2, 3), (2, 5))),
]


@pytest.mark.parametrize("target", ALL_TARGETS, ids=lambda t: t.kind)
def test_target_gradients_match_finite_differences(target):
    maps = _maps().requires_grad_(True)
    assert torch.autograd.gradcheck(target, (maps,), eps=1e-6, atol=1e-8)


class _TinyMapModel(nn.Module):
    """Sequence [B, 5, 16] → map [B, 4, 4]: conv, ReLU, pooling, pairwise sum (float64)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(5, 3, 3, padding=1)
        self.pool = nn.AvgPool1d(4)
        self.mix = nn.Conv2d(6, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.nn.functional.softplus(self.conv(x)))  # smooth: finite differences are exact enough
        n = h.shape[-1]
        pair = torch.cat([h.unsqueeze(2).expand(-1, -1, n, -1), h.unsqueeze(3).expand(-1, -1, -1, n)], 1)
        return self.mix(pair).squeeze(1)


@pytest.mark.parametrize(
    "target",
    [
        WholeMap(),
        Block((0, 2), (2, 4)),
        Insulation(2, window=2, ignore_diags=1),
        Difference(((0, 1), (3, 4)), ((1, 2), (1, 3))),
    ],
    ids=lambda t: t.kind,
)
def test_target_of_a_model_has_finite_difference_gradients(target):
    torch.manual_seed(0)
    model = _TinyMapModel().double().eval()
    x = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    # fast mode compares J·v with a finite difference along random directions: few forwards
    assert torch.autograd.gradcheck(lambda inp: target(model(inp)), (x,), eps=1e-6, atol=1e-7, fast_mode=True)


# --- genomic intervals → bins -------------------------------------------------------------

GEOMETRY = WindowGeometry(window_length=512, bin_size=32, n_bins=16)


@pytest.mark.parametrize(
    "start, end, bins",
    [
        (1000, 1032, range(0, 1)),  # exactly bin 0
        (1000, 1033, range(0, 2)),  # one base into bin 1
        (1031, 1032, range(0, 1)),
        (1032, 1100, range(1, 4)),
        (1480, 1512, range(15, 16)),  # last bin
    ],
)
def test_bins_of_an_interval(start, end, bins):
    assert bins_of(start, end, 1000, GEOMETRY) == bins


def test_bins_of_respects_the_map_offset_and_clipping():
    geometry = WindowGeometry(window_length=512, bin_size=32, n_bins=8, map_offset=128)
    assert bins_of(1128, 1160, 1000, geometry) == range(0, 1)
    with pytest.raises(ValueError, match="reaches past the map"):
        bins_of(1100, 1160, 1000, geometry)
    assert bins_of(1100, 1160, 1000, geometry, clip=True) == range(0, 1)
    assert bins_of(1300, 1500, 1000, geometry, clip=True) == range(5, 8)
    with pytest.raises(ValueError, match="outside the map"):
        bins_of(1384, 1400, 1000, geometry)
    with pytest.raises(ValueError, match="empty interval"):
        bins_of(1200, 1200, 1000, geometry)


# --- up-front check of every window: windows_missing agrees with bins_of ---------------------------


@pytest.mark.parametrize("clip", [False, True])
def test_windows_missing_flags_exactly_the_windows_bins_of_refuses(clip):
    geometry = WindowGeometry(window_length=512, bin_size=32, n_bins=8, map_offset=128)
    window_starts = np.arange(0, 2_000, 7)
    rng = np.random.default_rng(0)
    for _ in range(200):
        start = int(rng.integers(0, 2_400))
        end = start + int(rng.integers(1, 400))
        expected = []
        for ws in window_starts.tolist():
            try:
                bins_of(start, end, ws, geometry, clip=clip)
                expected.append(False)
            except ValueError:
                expected.append(True)
        np.testing.assert_array_equal(windows_missing(start, end, window_starts, geometry, clip), expected)
    # both outcomes occur, so the comparison above is not vacuous
    flags = windows_missing(1_000, 1_100, window_starts, geometry, clip)
    assert flags.any() and not flags.all()
