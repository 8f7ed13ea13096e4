"""Tiny models and a genome in memory for tests/test_filters.py and tests/test_attention.py (no files)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from screening.core.encode import one_hot
from screening.models.base import ModelAdapter, PositionEncoding, WindowGeometry

MOTIF = "ACGTTGCA"
"""The 8-bp motif planted in :class:`MemoryGenome` and held by filter 0 of :class:`ConvMapModel`."""


class MemoryGenome:
    """What the filter code asks of a genome (``fetch``, ``chrom_sizes``), from arrays of base codes."""

    def __init__(self, chroms: dict[str, np.ndarray]) -> None:
        self.chroms = chroms

    @property
    def chrom_sizes(self) -> dict[str, int]:
        return {name: len(codes) for name, codes in self.chroms.items()}

    def fetch(self, chrom: str, start: int, end: int) -> np.ndarray:
        return self.chroms[chrom][start:end].copy()


def planted_genome(length: int = 8_192, n_sites: int = 30, seed: int = 0) -> tuple[MemoryGenome, list[int]]:
    """A random ``chr1`` with :data:`MOTIF` planted at ``n_sites`` positions (returned) at least 64 bp apart."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4, length).astype(np.uint8)
    motif = np.array(["ACGT".index(b) for b in MOTIF], np.uint8)
    starts = sorted(rng.choice(np.arange(32, length - 64, 64), n_sites, replace=False).tolist())
    for start in starts:
        codes[start : start + len(motif)] = motif
    return MemoryGenome({"chr1": codes}), starts


class ConvMapModel(nn.Module):
    """One-hot ``[B, 4, L]`` → ``conv`` (3 filters of 8 bp, padding 3) → ReLU → mean per 64-bp bin →
    map ``f fᵀ`` of a mix of filters 0 and 2. Filter 0 fires (value 4) only on an exact :data:`MOTIF`; filter 1
    does not reach the map; filter 2 is random."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 3, 8, padding=3)
        with torch.no_grad():
            motif = torch.tensor(one_hot(np.array(["ACGT".index(b) for b in MOTIF], np.uint8)).T)
            self.conv.weight[0] = 2 * motif - 1
            self.conv.bias[0] = -4.0  # 2·matches − 8 − 4: 4 for the motif, ≤ 2 (half the maximum) otherwise
            self.conv.weight[1].normal_(generator=torch.Generator().manual_seed(1))
            self.conv.weight[2].normal_(generator=torch.Generator().manual_seed(2))
        self.mix = nn.Parameter(torch.tensor([1.0, 0.0, 0.5]), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = torch.relu(self.conv(x))  # [B, 3, L - 1]
        act = torch.nn.functional.pad(act, (0, 1))
        bins = act.view(act.shape[0], 3, -1, 64).mean(-1)  # [B, 3, n]
        f = (self.mix[None, :, None] * bins).sum(1) + 1.0
        return f[:, :, None] * f[:, None, :]


class ToyAdapter(ModelAdapter):
    """A sequence-only adapter for a module taking one-hot ``[B, 4, L]`` (A, C, G, T; N all zero)."""

    def __init__(self, module: nn.Module, window_length: int = 1024, bin_size: int = 64) -> None:
        super().__init__(module, "cpu")
        self.geometry = WindowGeometry(window_length, bin_size, window_length // bin_size)
        self.name = type(module).__name__

    def build_input(self, codes: np.ndarray, tracks: np.ndarray | None) -> torch.Tensor:
        return torch.from_numpy(one_hot(np.asarray(codes), order="ACGT").transpose(0, 2, 1).copy())

    def position_encoding(self) -> PositionEncoding:
        return PositionEncoding(one_hot(np.arange(5, dtype=np.uint8), order="ACGT"), length_axis=2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.module(inputs)


class DenseMapModel(nn.Module):
    """No convolution and no attention: a linear map of base counts per bin."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bins = x.view(x.shape[0], 4, -1, 64).mean(-1).transpose(1, 2)  # [B, n, 4]
        f = self.linear(bins)[..., 0]
        return f[:, :, None] * f[:, None, :]
