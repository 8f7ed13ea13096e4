"""A null model at C.Origami's geometry: its forward pass costs almost nothing.

It takes C.Origami's input (``[B, 2,097,152, 5 + 2]`` float32: one-hot DNA in the order A, T, C, G, N,
then CTCF and ATAC) and returns a 256 × 256 map per window, so whatever a worker spends per perturbation
besides the model (reading sequence and tracks, the edit, building the input, scoring, writing) is what
a benchmark measures. The map depends on every 4,096th input position, so nothing is optimised away.

Kept in a module of its own, importing only torch, so that Ray workers can build it as a user model
(``model.kind: user``, ``import_path: benchmarks.null_model:NullModule``, :data:`DECLARATION`).
"""

from __future__ import annotations

import torch

__all__ = ["DECLARATION", "IMPORT_PATH", "NullModule"]

#: ``model.import_path`` of the null model (with the repository's root on ``model.python_path``).
IMPORT_PATH = "benchmarks.null_model:NullModule"

#: ``model.declare`` of the null model: C.Origami's window, bins, layout, alphabet and tracks.
DECLARATION = {
    "window_length": 2_097_152,
    "bin_size": 8_192,
    "n_bins": 256,
    "input_layout": "NLC",
    "alphabet": "ATCGN",
    "tracks": ["ctcf", "atac"],
}


class NullModule(torch.nn.Module):
    """``[B, L, C]`` → ``[B, n_bins, n_bins]``: a ramp plus 1e-6 × the sum of every ``stride``-th position.

    Parameters
    ----------
    n_bins
        Map size.
    stride
        Positions between those read (4,096: 512 of a 2 Mb window).
    """

    def __init__(self, n_bins: int = 256, stride: int = 4096) -> None:
        super().__init__()
        self.n_bins = n_bins
        self.stride = stride

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        n = self.n_bins
        signal = inputs[:, :: self.stride, :].sum(dim=(1, 2))
        ramp = torch.arange(n, device=inputs.device, dtype=torch.float32)[:, None].expand(n, n)
        return signal[:, None, None] * 1e-6 + ramp
