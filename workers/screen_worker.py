"""The Ray worker: load the model once, then compute and write one work unit at a time.

:class:`ScreenWorker` is a plain class (testable without Ray); the driver (:mod:`workers.driver`) wraps
it with ``ray.remote`` so each actor holds one model on one device.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import torch

from screening.compute.engine import run_attribution, run_unit
from screening.plan import WorkUnit
from screening.prepare import load_configured_model, open_inputs
from screening.spec import ScreenSpec
from screening.store.writer import ResultStore

__all__ = ["ScreenWorker"]


class ScreenWorker:
    """Holds one model, the genome and tracks, and the result store.

    Parameters
    ----------
    spec
        The screen spec as a JSON-able dict (validated again here).
    torch_threads
        CPU threads for torch in this process.
    """

    def __init__(self, spec: dict[str, Any], torch_threads: int = 1) -> None:
        torch.set_num_threads(max(1, torch_threads))
        self.spec = ScreenSpec.model_validate(spec)
        self.adapter, self.precision = load_configured_model(self.spec)
        self.genome, self.tracks = open_inputs(self.spec)
        self.store = ResultStore(self.spec.output.store, self.spec.output.storage_options)
        self.analyses = {p.label: p for p in self.spec.perturbations}
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def ready(self) -> str:
        """Return this worker's name once the model is loaded."""
        return f"{self.name} ({self.adapter.device})"

    def run(self, unit: WorkUnit, payload: dict[str, Any]) -> dict[str, Any]:
        """Compute one unit and write its chunk; returns timing for progress reports.

        ``payload`` is :meth:`screening.plan.ScreenPlan.payload` of the unit.
        """
        began = time.perf_counter()
        perturbation = self.analyses[unit.analysis]
        top: dict[str, Any] = {}
        if perturbation.kind == "attribution":
            values = run_attribution(self.adapter, self.genome, self.tracks, perturbation, unit.chrom, payload)
        else:
            values = run_unit(
                self.adapter, self.genome, self.tracks, perturbation, unit.chrom, payload, self.spec.execution.batch_size, top
            )
        computed = time.perf_counter()
        if top:  # indices within the unit → within the group (mutagenesis: row·4 + base)
            offset = unit.lo * (4 if perturbation.kind == "mutagenesis" else 1)
            top = (top["index"] + offset, top["delta"])
        self.store.write_chunk(unit.chrom, unit.analysis, unit.chunk, values, top=top or None)
        gpu = torch.cuda.max_memory_allocated(self.adapter.device) if self.adapter.device.type == "cuda" else 0
        return {
            "unit": unit,
            "n": unit.size,
            "compute_s": computed - began,
            "write_s": time.perf_counter() - computed,
            "worker": self.name,
            "gpu_memory": int(gpu),
            "precision": self.precision,
        }
