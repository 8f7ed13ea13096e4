"""Prometheus metrics of a running screen, fed by the driver from what each unit reports.

Workers return their timings with every unit (see :meth:`workers.screen_worker.ScreenWorker.run`),
so the driver can publish per-worker throughput and store write latency without
a metrics endpoint in every Ray actor. Expose them with ``execution.metrics_port``
(or ``screening run --metrics-port``): ``http://<driver>:<port>/metrics``.

Every series carries two labels, with the same meaning as on the service's ``/metrics``
(``docs/service.md``, *Metrics*): ``screen``, the screen's id (the service's screen id when the
service runs it, else :func:`screen_id` of the spec), and ``name``, the spec's ``name``. Per-worker
series add ``worker`` (``host:pid``).

Perturbations and attributed positions are counted apart: an attribution analysis scores one
position per base of its regions, thousands per unit, which are not perturbations.
Counters and histograms exist at 0 from :meth:`ScreenMetrics.start` on, so a panel of failures
shows 0, not "no data", until the first failure. At the end of a run the endpoint stays up until it
has been scraped once after the last update (at most ``execution.metrics_linger_s``), so Prometheus
records the final counts of a batch job.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["ScreenMetrics", "screen_id"]

#: Labels of every screen series.
LABELS = ("screen", "name")


def screen_id(spec: Any) -> str:
    """The ``screen`` label of a screen the service does not run: 32 hex digits, like the service's ids.

    A hash of the output store and the spec's science hash, so a resumed run (same spec, same
    store) keeps its id and the same spec written to another store gets another.
    """
    key = f"{spec.output.store}\n{spec.science_hash()}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class _ScrapeClock:
    """A collector without metrics that notes when its registry was last collected (scraped)."""

    def __init__(self) -> None:
        self.scraped = threading.Event()

    def describe(self) -> list:
        return []  # registering must not count as a scrape

    def collect(self):
        self.scraped.set()
        return iter(())


class ScreenMetrics:
    """The metrics of one screen, in their own registry (several screens can run in one process).

    Parameters
    ----------
    screen
        The screen's id (label ``screen``).
    name
        The spec's name (label ``name``); the id when not given.
    attribution_analyses
        Analyses whose units attribute positions (kind ``attribution``) rather than score
        perturbations: their units count in ``screening_attributed_positions_total``.
    registry
        Where to register (a new registry by default).
    """

    def __init__(
        self,
        screen: str,
        name: str | None = None,
        attribution_analyses: Iterable[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.screen = screen
        self.name = name if name is not None else screen
        self.attribution_analyses = frozenset(attribution_analyses)
        self.labels = (self.screen, self.name)
        self._done = {"perturbations": 0, "positions": 0}  # this run's tallies, for the rates
        labels, per_worker = list(LABELS), [*LABELS, "worker"]
        registry = self.registry
        self.perturbations = Counter(
            "screening_perturbations", "Perturbations scored and written by this run (attribution positions not included)",
            labels, registry=registry,
        )
        self.attributed_positions = Counter(
            "screening_attributed_positions", "Positions attributed and written by this run (attribution analyses)",
            labels, registry=registry,
        )
        self.units_done = Gauge("screening_units_done", "Work units finished (including resumed ones)", labels, registry=registry)
        self.units_planned = Gauge("screening_units_planned", "Work units in the screen", labels, registry=registry)
        self.failures = Counter("screening_unit_failures", "Work units whose worker died or failed", labels, registry=registry)
        self.retries = Counter("screening_unit_retries", "Work units resubmitted after a failure", labels, registry=registry)
        self.rate = Gauge(
            "screening_perturbations_per_second", "Perturbations per second since this run started", labels, registry=registry
        )
        self.positions_rate = Gauge(
            "screening_attributed_positions_per_second", "Attributed positions per second since this run started",
            labels, registry=registry,
        )
        self.worker_rate = Gauge(
            "screening_worker_perturbations_per_second", "Compute throughput of each worker's last perturbation unit",
            per_worker, registry=registry,
        )
        self.worker_positions_rate = Gauge(
            "screening_worker_attributed_positions_per_second", "Compute throughput of each worker's last attribution unit",
            per_worker, registry=registry,
        )
        self.gpu_memory = Gauge(
            "screening_worker_gpu_memory_bytes", "Peak GPU memory of each worker (0 on CPU)", per_worker, registry=registry,
        )
        self.write_seconds = Histogram(
            "screening_store_write_seconds", "Latency of writing one unit's chunk to the store", labels,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10), registry=registry,
        )
        self.compute_seconds = Histogram(
            "screening_unit_compute_seconds", "Compute time of one work unit", labels,
            buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800), registry=registry,
        )
        self._clock = _ScrapeClock()
        registry.register(self._clock)
        # every per-screen series from the start: counters at 0, rates at 0, empty histograms
        for metric in (self.perturbations, self.attributed_positions, self.failures, self.retries, self.rate,
                       self.positions_rate, self.write_seconds, self.compute_seconds):
            metric.labels(*self.labels)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` over HTTP on ``addr:port`` (a daemon thread) until :meth:`stop`."""
        self._server, _ = start_http_server(port, addr=addr, registry=self.registry)

    def stop(self, linger_s: float = 0.0) -> None:
        """Stop serving ``/metrics``: once it has been scraped after the last update, or ``linger_s`` seconds."""
        server = getattr(self, "_server", None)
        if server is not None:
            self._clock.scraped.wait(timeout=max(0.0, linger_s))
            server.shutdown()
            server.server_close()
            self._server = None

    def start(self, units_planned: int, units_done: int) -> None:
        """The screen's size in units and how many earlier runs finished."""
        self.units_planned.labels(*self.labels).set(units_planned)
        self.units_done.labels(*self.labels).set(units_done)
        self._clock.scraped.clear()  # cleared after the update: a scrape racing it counts for nothing

    def is_attribution(self, result: dict[str, Any]) -> bool:
        """Whether a unit's report is of an attribution unit (its ``n`` counts positions)."""
        unit = result.get("unit")
        return getattr(unit, "analysis", None) in self.attribution_analyses

    def unit_finished(self, result: dict[str, Any], elapsed: float) -> None:
        """Record one unit's report (``unit``, ``n``, ``compute_s``, ``write_s``, ``worker``, ``gpu_memory``);
        ``elapsed``: seconds since this run started."""
        labels, worker = self.labels, (*self.labels, result["worker"])
        n, compute_s = result["n"], result["compute_s"]
        positions = self.is_attribution(result)
        (self.attributed_positions if positions else self.perturbations).labels(*labels).inc(n)
        self._done["positions" if positions else "perturbations"] += n
        self.units_done.labels(*labels).inc()
        self.write_seconds.labels(*labels).observe(result["write_s"])
        self.compute_seconds.labels(*labels).observe(compute_s)
        if compute_s > 0:
            (self.worker_positions_rate if positions else self.worker_rate).labels(*worker).set(n / compute_s)
        self.gpu_memory.labels(*worker).set(result.get("gpu_memory", 0))
        if elapsed > 0:
            self.rate.labels(*labels).set(self._done["perturbations"] / elapsed)
            self.positions_rate.labels(*labels).set(self._done["positions"] / elapsed)
        self._clock.scraped.clear()

    def unit_failed(self, retried: bool) -> None:
        """A unit's worker died or failed; ``retried``: the unit was resubmitted."""
        self.failures.labels(*self.labels).inc()
        if retried:
            self.retries.labels(*self.labels).inc()
        self._clock.scraped.clear()
