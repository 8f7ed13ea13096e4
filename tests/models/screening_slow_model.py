"""A user model (``kind: user``) whose forward pass takes at least ``delay_s`` seconds.

The fault-tolerance tests kill workers while a unit runs; Ray's state API sees a task as
RUNNING only after its next task-event report (about a second), so units must last longer
than that on any machine. The delay changes no value: with the same seed the weights and
predictions equal those of ``delay_s=0``.
"""

from __future__ import annotations

import time

import torch

from screening.models.examples import TinyContactModel


class SlowContactModel(TinyContactModel):
    """:class:`TinyContactModel` that sleeps ``delay_s`` per forward call."""

    def __init__(self, delay_s: float = 0.0, **config) -> None:
        super().__init__(**config)
        self.delay_s = delay_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay_s)
        return super().forward(x)
