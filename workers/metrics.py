"""Prometheus metrics of a running screen, fed by the driver from what each unit reports.

Workers return their timings with every unit (see :meth:`workers.screen_worker.ScreenWorker.run`),
so the driver can publish per-worker throughput and store write latency without
a metrics endpoint in every Ray actor. Expose them with ``execution.metrics_port``
(or ``screening run --metrics-port``): ``http://<driver>:<port>/metrics``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["ScreenMetrics"]


class ScreenMetrics:
    """The metrics of one screen, in their own registry (several screens can run in one process)."""

    def __init__(self, screen: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.screen = screen
        labels = ["screen"]
        self.perturbations = Counter(
            "screening_perturbations", "Perturbations scored and written", labels, registry=self.registry
        )
        self.units_done = Gauge("screening_units_done", "Work units finished (including resumed ones)", labels, registry=self.registry)
        self.units_total = Gauge("screening_units_total", "Work units in the screen", labels, registry=self.registry)
        self.failures = Counter("screening_unit_failures", "Work units whose worker died or failed", labels, registry=self.registry)
        self.retries = Counter("screening_unit_retries", "Work units resubmitted after a failure", labels, registry=self.registry)
        self.rate = Gauge("screening_perturbations_per_second", "Perturbations per second since the start", labels, registry=self.registry)
        self.worker_rate = Gauge(
            "screening_worker_perturbations_per_second", "Compute throughput of each worker's last unit",
            ["screen", "worker"], registry=self.registry,
        )
        self.gpu_memory = Gauge(
            "screening_worker_gpu_memory_bytes", "Peak GPU memory of each worker (0 on CPU)",
            ["screen", "worker"], registry=self.registry,
        )
        self.write_seconds = Histogram(
            "screening_store_write_seconds", "Latency of writing one unit's chunk to the store", labels,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10), registry=self.registry,
        )
        self.compute_seconds = Histogram(
            "screening_unit_compute_seconds", "Compute time of one work unit", labels,
            buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800), registry=self.registry,
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` over HTTP on ``addr:port`` (a daemon thread) until :meth:`stop`."""
        self._server, _ = start_http_server(port, addr=addr, registry=self.registry)

    def stop(self) -> None:
        """Stop serving ``/metrics``."""
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
            self._server = None

    def start(self, units_total: int, units_done: int) -> None:
        self.units_total.labels(self.screen).set(units_total)
        self.units_done.labels(self.screen).set(units_done)

    def unit_finished(self, result: dict[str, Any], elapsed: float) -> None:
        """Record one unit's report (``n``, ``compute_s``, ``write_s``, ``worker``, ``gpu_memory``)."""
        screen = self.screen
        self.perturbations.labels(screen).inc(result["n"])
        self.units_done.labels(screen).inc()
        self.write_seconds.labels(screen).observe(result["write_s"])
        self.compute_seconds.labels(screen).observe(result["compute_s"])
        if result["compute_s"] > 0:
            self.worker_rate.labels(screen, result["worker"]).set(result["n"] / result["compute_s"])
        self.gpu_memory.labels(screen, result["worker"]).set(result.get("gpu_memory", 0))
        if elapsed > 0:
            self.rate.labels(screen).set(self.perturbations.labels(screen)._value.get() / elapsed)

    def unit_failed(self, retried: bool) -> None:
        self.failures.labels(self.screen).inc()
        if retried:
            self.retries.labels(self.screen).inc()
