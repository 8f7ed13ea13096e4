"""The Ray worker: load the model once, then compute and write one work unit at a time.

:class:`ScreenWorker` is a plain class (testable without Ray); the driver (:mod:`workers.driver`) wraps
it with ``ray.remote`` so each actor holds one model on one device.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, TypedDict

import torch

from screening.compute.engine import run_unit
from screening.interpret.unit import run_attribution
from screening.perturb.kinds import kind_of
from screening.plan import UnitPayload, WorkUnit
from screening.prepare import load_configured_model, open_inputs
from screening.spec import ScreenSpec
from screening.store.writer import ResultStore

__all__ = ["ScreenWorker", "UnitReport"]


class UnitReport(TypedDict):
    """What :meth:`ScreenWorker.run` reports of a unit it computed and wrote (for progress and metrics)."""

    unit: WorkUnit
    n: int  # perturbations (positions, for per-base and gradient kinds) in the unit
    compute_s: float
    write_s: float
    worker: str  # host:pid
    gpu_memory: int  # peak bytes allocated on the worker's GPU (0 on CPU)
    precision: str


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

    def run(self, unit: WorkUnit, payload: UnitPayload) -> UnitReport:
        """Compute one unit and write its chunk; returns timing for progress reports.

        ``payload`` is :meth:`screening.plan.ScreenPlan.payload` of the unit.
        """
        began = time.perf_counter()
        perturbation = self.analyses[unit.analysis]
        kind = kind_of(perturbation)
        if kind.gradients:
            result = run_attribution(self.adapter, self.genome, self.tracks, perturbation, unit.chrom, payload)
        else:
            result = run_unit(
                self.adapter, self.genome, self.tracks, perturbation, unit.chrom, payload, self.spec.execution.batch_size
            )
        computed = time.perf_counter()
        top = None
        if result.top_index is not None:  # indices within the unit → within the group (per base: row·4 + base)
            top = (result.top_index + unit.lo * kind.rows_per_item, result.top_delta)
        self.store.write_chunk(unit.chrom, unit.analysis, unit.chunk, result.values, top=top)
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
