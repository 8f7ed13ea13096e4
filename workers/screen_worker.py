"""The Ray worker: load the model once, then compute and write one work unit at a time.

In a format 3 store a worker writes only its unit's own objects (kept maps) and returns the unit's
scores; the driver writes them with its block (one writer per shard, see ``docs/store.md``).

:class:`ScreenWorker` is a plain class (testable without Ray); the driver (:mod:`workers.driver`) wraps
it with ``ray.remote`` so each actor holds one model on one device.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Iterable, TypedDict

import torch

from screening.compute.engine import run_unit
from screening.interpret.unit import run_attribution
from screening.perturb.kinds import kind_of
from screening.plan import UnitPayload, WorkUnit
from screening.prepare import load_configured_model, open_inputs
from screening.spec import ScreenSpec
from screening.store.writer import ResultStore, UnitRecord

__all__ = ["ScreenWorker", "UnitReport", "run_in_process"]


class UnitReport(TypedDict):
    """What :meth:`ScreenWorker.run` reports of a unit it computed and wrote (for progress and metrics)."""

    unit: WorkUnit
    n: int  # perturbations (positions, for per-base and gradient kinds) in the unit
    compute_s: float
    write_s: float
    worker: str  # host:pid
    started: float  # wall clock (time.time) when the unit began and when it was written: comparable across the
    finished: float  # processes of one machine, so a run's busy span excludes Ray's start and the model's load
    gpu_memory: int  # peak bytes allocated on the worker's GPU (0 on CPU)
    precision: str
    record: UnitRecord | None  # format 3 stores: the unit's scores (and kept maps), for the driver to write (else None: written)


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
        started, began = time.time(), time.perf_counter()
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
        record = None
        if self.store.format_version >= 3:  # the driver writes the unit's block (one writer per shard)
            record = self.store.unit_record(unit.chrom, unit.analysis, unit.chunk, result.values, top=top)
        else:  # earlier formats: every unit's objects are its own
            self.store.write_chunk(unit.chrom, unit.analysis, unit.chunk, result.values, top=top)
        gpu = torch.cuda.max_memory_allocated(self.adapter.device) if self.adapter.device.type == "cuda" else 0
        finished = time.perf_counter()
        return {
            "unit": unit,
            "n": unit.size,
            "compute_s": computed - began,
            "write_s": finished - computed,
            "worker": self.name,
            "started": started,
            "finished": started + (finished - began),
            "gpu_memory": int(gpu),
            "precision": self.precision,
            "record": record,
        }


def run_in_process(
    worker: ScreenWorker, units: Iterable[tuple[WorkUnit, UnitPayload]], after_each: Any = None
) -> list[UnitReport]:
    """Compute units one after another in this process and write them as the driver would.

    For tests and benchmarks without Ray: in a format 3 store the units' records go through one
    :class:`~screening.store.writer.BlockWriter` (``ResultStore.block_writer``, flushed at the end); earlier formats write themselves.
    ``after_each(report)`` is called after every unit.
    """
    writer = worker.store.block_writer() if worker.store.format_version >= 3 else None
    reports = []
    for unit, payload in units:
        report = worker.run(unit, payload)
        if writer is not None and report["record"] is not None:
            writer.add(report["record"])
        if after_each is not None:
            after_each(report)
        reports.append(report)
    if writer is not None:
        writer.flush()
    return reports
