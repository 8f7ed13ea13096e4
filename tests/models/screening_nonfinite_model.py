"""A user model (``kind: user``) that predicts inf or NaN maps for windows with a high track value.

The load-time check feeds tracks below 2, so the model loads; a real window whose first
track exceeds ``above`` gets a map filled with ``fill`` ("inf" or "nan"). The engine must
then fail the unit, naming the window, rather than store NaN scores.
"""

from __future__ import annotations

import torch

from screening.models.examples import TinyContactModel


class NonFiniteContactModel(TinyContactModel):
    """:class:`TinyContactModel` whose map is ``fill`` where the first track exceeds ``above``."""

    def __init__(self, fill: str = "inf", above: float = 2.0, **config) -> None:
        super().__init__(**config)
        self.fill, self.above = float(fill), above

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = super().forward(x)
        hot = x[:, 4].amax(dim=-1) > self.above  # [B]: the first track channel follows the 4 DNA channels
        return torch.where(hot[:, None, None, None], torch.full_like(maps, self.fill), maps)
