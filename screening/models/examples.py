"""A small example of a user's own model, for ``model.kind: user``.

:class:`TinyContactModel` is what ``configs/user_model.yaml`` loads through
``import_path: screening.models.examples:TinyContactModel``. It shows the contract
a model must meet (``docs/user_models.md``): one tensor in, in the declared layout
(here ``NCL``: ``[batch, 4 + n_tracks, window_length]``, DNA channels ``ACGT`` with
``0.25`` at N), one tensor out, ``[batch, n_bins, n_bins]`` or ``[batch, 1, n_bins,
n_bins]``. It is untrained: with random weights its predictions mean nothing, but
every screen runs end to end.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TinyContactModel"]


class TinyContactModel(nn.Module):
    """Sequence (+ tracks) → symmetric contact map, in a few hundred parameters.

    A 1-D convolution reads the bases and tracks, average pooling makes one
    feature vector per ``bin_size`` bp, the map is a 1×1 convolution of the
    outer product of bin features (symmetric by construction) minus a learned
    decay with log distance.

    Parameters
    ----------
    n_tracks
        Track channels after the 4 DNA channels.
    bin_size
        bp per output bin; the output has ``window_length // bin_size`` bins.
    hidden
        Feature width.
    kernel_size
        Width of the first convolution (odd).
    """

    def __init__(self, n_tracks: int = 2, bin_size: int = 256, hidden: int = 8, kernel_size: int = 15) -> None:
        super().__init__()
        self.encode = nn.Conv1d(4 + n_tracks, hidden, kernel_size, padding=kernel_size // 2)
        self.pool = nn.AvgPool1d(bin_size)
        self.mix = nn.Conv1d(hidden, hidden, 1)
        self.head = nn.Conv2d(hidden, 1, 1)
        self.decay = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 4 + n_tracks, L]`` → ``[B, 1, n, n]`` with ``n = L // bin_size``."""
        bins = self.mix(self.pool(torch.relu(self.encode(x))))  # [B, hidden, n]
        pairs = bins.unsqueeze(3) * bins.unsqueeze(2)  # [B, hidden, n, n], symmetric in the last two axes
        index = torch.arange(bins.shape[-1], device=x.device)
        distance = (index.unsqueeze(0) - index.unsqueeze(1)).abs().float()
        return self.head(pairs) - self.decay * torch.log1p(distance)
