"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import torch


class FileWriter(torch.nn.Module):
    """A TorchScript model whose forward overwrites ``target`` through ``torch.from_file``."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x):
        written = torch.from_file(self.target, shared=True, size=4, dtype=torch.uint8)
        written.fill_(66)
        return x


def write_file_writer(path, target) -> None:
    torch.jit.script(FileWriter(str(target))).save(str(path))
