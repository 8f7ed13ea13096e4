"""Prometheus metrics: scraped over HTTP while a real screen runs on Ray."""

import threading
import time
import urllib.request

import pytest
import yaml

from screening.cli import main
from workers.metrics import ScreenMetrics

from conftest import free_port, toy_spec_dict




def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_counters_by_hand():
    metrics = ScreenMetrics("t")
    metrics.start(units_total=3, units_done=1)
    metrics.unit_finished({"n": 4, "compute_s": 2.0, "write_s": 0.01, "worker": "w1"}, elapsed=2.0)
    metrics.unit_failed(retried=True)
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    assert sample(text, "screening_perturbations_total") == 4
    assert sample(text, "screening_units_done") == 2 and sample(text, "screening_units_total") == 3
    assert sample(text, "screening_worker_perturbations_per_second") == 2.0
    assert sample(text, "screening_unit_retries_total") == 1 and sample(text, "screening_unit_failures_total") == 1
    assert sample(text, "screening_store_write_seconds_count") == 1


def test_metrics_endpoint_moves_during_a_screen(toy_paths, tmp_path):
    port = free_port()
    raw = toy_spec_dict(toy_paths, tmp_path / "m.zarr", regions=["chr1:2,000-3,000"])
    raw["execution"].update(chunk_size=2, batch_size=2, metrics_port=port)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(raw))
    seen: list[float] = []
    stop = threading.Event()

    def scrape():
        while not stop.is_set():
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
                value = sample(text, "screening_perturbations_total")
                if value is not None:
                    seen.append(value)
            except OSError:
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    try:
        assert main(["run", str(tmp_path / "m.yaml"), "--no-progress", "--no-plots"]) == 0
    finally:
        stop.set()
        thread.join()
    assert seen, "the /metrics endpoint was never reachable during the screen"
    assert seen == sorted(seen) and seen[-1] > seen[0] >= 0  # the counter moved while we watched
    assert len(set(seen)) >= 2
    with pytest.raises(OSError):  # the endpoint closes with the screen
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)
