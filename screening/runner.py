"""The driver: validate everything, plan, create or resume the store, dispatch units to Ray workers.

Data flows one way: spec → plan → workers → store. Every check that can fail on
bad input (spec, genome, tracks, regions, checkpoint, store) runs *before* the
store is created, so bad input never leaves a half-written store behind.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import screening
from screening.io.genome import Genome
from screening.io.tracks import TrackSet
from screening.models.base import ModelAdapter, ModelError
from screening.metrics import ScreenMetrics
from screening.models.loader import load_model
from screening.plan import ScreenPlan, WorkUnit, plan_screen
from screening.precision import worker_precision
from screening.regions import Region, read_bed, validate_region
from screening.spec import ScreenSpec
from screening.store import ResultStore, open_or_create_store

__all__ = [
    "PreparedScreen", "ScreenCancelled", "ScreenProgress", "ScreenSummary", "check_model_tracks", "input_provenance",
    "prepare_screen", "run_screen", "screen_regions",
]


@dataclass
class PreparedScreen:
    """A validated spec with its inputs, plan and provenance, ready to run."""

    spec: ScreenSpec
    regions: list[Region]
    plan: ScreenPlan
    provenance: dict[str, Any]
    adapter: Any = None  # the model loaded on the driver for checks (reused for plots)
    genome: Any = None
    tracks: Any = None


@dataclass
class ScreenSummary:
    """What a finished (or resumed) run did."""

    store: str
    n_perturbations: int
    n_computed: int
    n_units: int
    seconds: float
    resumed: bool
    workers: list[str] = field(default_factory=list)
    retries: int = 0

    @property
    def rate(self) -> float:
        return self.n_computed / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class ScreenProgress:
    """Where a running screen stands, passed to ``run_screen(on_progress=...)`` after every unit.

    Counts include units and perturbations finished by earlier (resumed) runs; ``rate`` and
    ``eta_s`` are over this run only (perturbations computed per second since it started).
    """

    units_done: int
    units_total: int
    perturbations_done: int
    perturbations_total: int
    elapsed_s: float
    rate: float
    eta_s: float | None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (NaN rate as ``None``)."""
        rate = self.rate if np.isfinite(self.rate) else None
        return {**self.__dict__, "rate": rate}


class ScreenCancelled(RuntimeError):
    """``run_screen`` stopped because its ``cancel`` hook fired; finished chunks stay done, the store
    is not marked complete, and running the same spec again resumes it."""

    def __init__(self, progress: ScreenProgress | None = None) -> None:
        done = f" after {progress.units_done} of {progress.units_total} units" if progress else ""
        super().__init__(f"screen cancelled{done}; run it again to resume")
        self.progress = progress


class _Tracker:
    """Counts finished units and perturbations for progress reports (rate and ETA over this run)."""

    def __init__(self, plan: ScreenPlan, pending: list[WorkUnit], callback: Callable[[ScreenProgress], None] | None):
        self.callback = callback
        self.units_total = len(plan.units)
        self.perturbations_total = plan.n_perturbations
        self.units_done = self.units_total - len(pending)
        self.perturbations_done = self.perturbations_total - sum(u.size for u in pending)
        self.computed = 0
        self.began = time.perf_counter()

    def snapshot(self) -> ScreenProgress:
        elapsed = time.perf_counter() - self.began
        rate = self.computed / elapsed if elapsed > 0 and self.computed else float("nan")
        remaining = self.perturbations_total - self.perturbations_done
        eta = 0.0 if remaining == 0 else (remaining / rate if np.isfinite(rate) and rate > 0 else None)
        return ScreenProgress(
            self.units_done, self.units_total, self.perturbations_done, self.perturbations_total, elapsed, rate, eta
        )

    def unit_done(self, n: int) -> None:
        self.units_done += 1
        self.perturbations_done += n
        self.computed += n
        self.report()

    def report(self) -> None:
        if self.callback is not None:
            self.callback(self.snapshot())


def _cancel_check(cancel: Any) -> Callable[[], bool]:
    """A ``threading.Event`` (or anything with ``is_set``), a callable returning True, or None."""
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError(f"cancel must be a threading.Event or a callable, got {type(cancel).__name__}")


def screen_regions(spec: ScreenSpec, chrom_sizes: dict[str, int]) -> list[Region]:
    """The spec's regions (``regions`` and ``bed``), checked against the chromosome sizes."""
    regions = [validate_region(r, chrom_sizes, source="regions") for r in spec.parsed_regions()]
    if spec.bed is not None:
        regions += [validate_region(r, chrom_sizes, source=f"bed {spec.bed}") for r in read_bed(spec.bed)]
    return regions


def _versions() -> dict[str, str]:
    import numpy
    import ray
    import torch
    import zarr

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "zarr": zarr.__version__,
        "ray": ray.__version__,
    }


def check_model_tracks(adapter: ModelAdapter, tracks: TrackSet) -> None:
    """Raise :class:`ModelError` unless the spec's tracks are the model's, in its order."""
    expected = tuple(adapter.track_names)
    if tuple(tracks.names) != expected:
        raise ModelError(
            f"tracks: the model takes tracks {list(expected)} in this order, the spec gives {list(tracks.names)}"
        )


def input_provenance(spec: ScreenSpec, adapter: ModelAdapter, genome: Genome, tracks: TrackSet) -> dict[str, Any]:
    """Versions, host, time, and the model, genome and tracks (with checksums) behind a result."""
    return {
        "package_version": screening.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        **_versions(),
        "model": {
            "kind": spec.model.kind,
            "name": adapter.name,
            "checksum": adapter.checksum,
            "window_length": adapter.geometry.window_length,
            "bin_size": adapter.geometry.bin_size,
            "n_bins": adapter.geometry.n_bins,
        },
        "genome": {"name": genome.name, "path": str(spec.genome.fasta), "sha256": genome.sha256()},
        "tracks": [
            {"name": t.name, "path": t.path, "transform": t.transform, "sha256": track.sha256()}
            for t, track in zip(spec.tracks, tracks.tracks)
        ],
    }


def prepare_screen(spec: ScreenSpec) -> PreparedScreen:
    """Open and check every input, load the model once, and plan the screen.

    Raises
    ------
    SpecError, RegionError, GenomeError, TrackError, ModelError
        On any bad input, before anything is written.
    """
    from workers.screen_worker import open_inputs

    genome, tracks = open_inputs(spec)
    chrom_sizes = genome.chrom_sizes
    regions = screen_regions(spec, chrom_sizes)
    tracks.check({r.chrom: chrom_sizes[r.chrom] for r in regions})
    adapter = load_model(spec.model, "cpu")
    check_model_tracks(adapter, tracks)
    plan = plan_screen(spec, regions, chrom_sizes, adapter.geometry, genome)
    provenance = {
        **input_provenance(spec, adapter, genome, tracks),
        "skipped": plan.skipped,
        "precision": worker_precision(spec.execution),  # {"requested", "used"}: CPU workers run fp32
    }
    return PreparedScreen(spec, regions, plan, provenance, adapter, genome, tracks)


def _init_ray(spec: ScreenSpec) -> bool:
    """Connect to the spec's Ray address or start an embedded local Ray; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    execution = spec.execution
    address = execution.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        return True
    needed = execution.num_workers * execution.cpus_per_worker
    # "local" always starts a private Ray: a plain init() would join a cluster
    # someone started on this machine with `ray start`.
    ray.init(
        address="local",
        num_cpus=max(os.cpu_count() or 1, int(np.ceil(needed))),
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        configure_logging=True,
    )
    return True


class _Dispatcher:
    """Keeps a bounded number of units in flight per worker and redoes units whose worker died."""

    def __init__(
        self,
        spec: ScreenSpec,
        plan: ScreenPlan,
        on_done: Callable[[dict[str, Any]], None],
        on_failure: Callable[[bool], None] = lambda retried: None,
        cancelled: Callable[[], bool] = lambda: False,
    ):
        import ray

        from workers.screen_worker import ScreenWorker

        execution = spec.execution
        self.ray = ray
        self.spec_json = spec.model_dump(mode="json")
        self.plan = plan
        self.on_done = on_done
        self.on_failure = on_failure
        self.cancelled = cancelled
        self.poll_s = 0.2  # how often a wait for results looks at the cancel hook
        self.probe_interval_s = 0.5  # between readiness probes of a restarting worker
        self.max_retries = execution.max_retries
        self.in_flight_per_worker = 2  # one computing, one queued: backpressure without idling
        self.remote_cls = ray.remote(ScreenWorker).options(
            num_cpus=execution.cpus_per_worker,
            num_gpus=execution.gpus_per_worker,
            max_restarts=-1,
            max_task_retries=0,
        )
        self.threads = max(1, int(execution.cpus_per_worker))
        self.workers = [self._start() for _ in range(execution.num_workers)]
        self.names = ray.get([w.ready.remote() for w in self.workers])
        self.retries = 0

    def _start(self):
        return self.remote_cls.remote(self.spec_json, self.threads)

    def _submit(self, worker, unit: WorkUnit):
        return worker.run.remote(unit, self.plan.payload(unit))

    def run(self, units: list[WorkUnit]) -> None:
        ray = self.ray
        queue = deque(units)
        attempts: dict[WorkUnit, int] = {}
        pending: dict[Any, tuple[int, WorkUnit]] = {}
        load = [0] * len(self.workers)
        # Workers whose unit failed get no new unit until a readiness probe reaches their restarted
        # process: index -> when to send the next probe (None while one is out).
        restarting: dict[int, float | None] = {}
        probes: dict[Any, int] = {}  # probes out, by ref
        while queue or pending:
            if self.cancelled():
                self.stop()
                raise ScreenCancelled()
            for index, worker in enumerate(self.workers):
                while index not in restarting and queue and load[index] < self.in_flight_per_worker:
                    unit = queue.popleft()
                    pending[self._submit(worker, unit)] = (index, unit)
                    load[index] += 1
            now = time.monotonic()
            for index, due in restarting.items():
                if due is not None and now >= due:
                    probes[self.workers[index].ready.remote()] = index
                    restarting[index] = None
            waiting = [*pending, *probes]
            if not waiting:  # every worker restarting, next probe due shortly
                time.sleep(self.poll_s)
                continue
            ready, _ = ray.wait(waiting, num_returns=1, timeout=self.poll_s)
            if not ready:
                continue
            ref = ready[0]
            if ref in probes:
                index = probes.pop(ref)
                try:
                    ray.get(ref)
                    del restarting[index]
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
                    restarting[index] = time.monotonic() + self.probe_interval_s  # still restarting
                continue
            index, unit = pending.pop(ref)
            load[index] -= 1
            try:
                result = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as err:
                attempts[unit] = attempts.get(unit, 0) + 1
                retry = attempts[unit] <= self.max_retries
                self.on_failure(retry)
                if not retry:
                    raise RuntimeError(f"work unit {unit} failed {attempts[unit]} times; last error: {err}") from err
                self.retries += 1
                queue.appendleft(unit)
                restarting.setdefault(index, now)  # probe it at once (unless already restarting)
                continue
            self.on_done(result)

    def stop(self) -> None:
        """Kill the workers: in-flight units end without their ``chunk_done`` flag and are redone on resume."""
        for worker in self.workers:
            self.ray.kill(worker, no_restart=True)
        self.workers = []


def run_screen(
    spec: ScreenSpec,
    progress: bool = True,
    prepared: PreparedScreen | None = None,
    *,
    on_progress: Callable[[ScreenProgress], None] | None = None,
    cancel: Any = None,
) -> ScreenSummary:
    """Run (or resume) a screen end to end and return its summary.

    Parameters
    ----------
    spec
        A validated spec.
    progress
        Show a progress bar over perturbations.
    prepared
        A result of :func:`prepare_screen` to reuse.
    on_progress
        Called with a :class:`ScreenProgress` once the store is open and after every finished
        unit (on the calling thread; an exception it raises stops the screen).
    cancel
        A ``threading.Event`` or a callable returning True to stop: no unit is dispatched
        after it fires, in-flight units are stopped (their workers killed) within
        about 0.2 s, and :class:`ScreenCancelled` is raised. Completed chunks keep their
        ``chunk_done`` flags, the store is not marked complete, and the same spec resumes it.

    Raises
    ------
    ScreenCancelled
        When ``cancel`` fired before every unit was done.
    """
    from tqdm.auto import tqdm

    cancelled = _cancel_check(cancel)  # a bad hook is refused before the store is created
    prepared = prepared or prepare_screen(spec)
    plan = prepared.plan
    store, resumed = open_or_create_store(
        spec.output.store,
        spec.model_dump(mode="json"),
        spec.science_hash(),
        prepared.provenance,
        plan.layouts,
        overwrite=spec.output.overwrite,
        storage_options=spec.output.storage_options,
    )
    pending = _pending_units(store, plan)
    n_todo = sum(u.size for u in pending)
    tracker = _Tracker(plan, pending, on_progress)
    tracker.report()
    began = time.perf_counter()
    metrics = ScreenMetrics(spec.name)
    metrics.start(len(plan.units), len(plan.units) - len(pending))
    if spec.execution.metrics_port is not None:
        metrics.serve(spec.execution.metrics_port, spec.execution.metrics_host)
    names: list[str] = []
    retries = 0
    if pending:
        started_ray = _init_ray(spec)
        try:
            with tqdm(total=n_todo, unit="pert", desc=spec.name, disable=not progress, dynamic_ncols=True) as bar:
                def on_done(result: dict[str, Any]) -> None:
                    bar.update(result["n"])
                    metrics.unit_finished(result, time.perf_counter() - began)
                    tracker.unit_done(result["n"])

                dispatcher = _Dispatcher(spec, plan, on_done, metrics.unit_failed, cancelled)
                names = dispatcher.names
                try:
                    dispatcher.run(pending)
                except ScreenCancelled:
                    raise ScreenCancelled(tracker.snapshot()) from None
                finally:
                    dispatcher.stop()
                retries = dispatcher.retries
        finally:
            metrics.stop()
            if started_ray:
                import ray

                ray.shutdown()
    store.mark_complete()
    return ScreenSummary(
        store=str(spec.output.store),
        n_perturbations=plan.n_perturbations,
        n_computed=n_todo,
        n_units=len(pending),
        seconds=time.perf_counter() - began,
        resumed=resumed,
        workers=names,
        retries=retries,
    )


def _pending_units(store: ResultStore, plan: ScreenPlan) -> list[WorkUnit]:
    done = {(layout.chrom, layout.analysis): store.done_mask(layout.chrom, layout.analysis) for layout in plan.layouts}
    return [u for u in plan.units if not done[(u.chrom, u.analysis)][u.chunk]]
