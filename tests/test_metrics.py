"""Prometheus metrics: names and types by Prometheus's rules, and scraped over HTTP while a real screen runs on Ray."""

import re
import urllib.request
from pathlib import Path

import pytest

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from screening.plan import WorkUnit
from workers.metrics import ScreenMetrics

from helpers import free_port, prometheus_naming_problems, promtool_problems, toy_spec_dict

REPO = Path(__file__).resolve().parents[1]
SCREEN = "0123456789abcdef0123456789abcdef"




def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def report(n: int, analysis: str = "del", compute_s: float = 2.0, worker: str = "w1") -> dict:
    """A unit report as :meth:`workers.screen_worker.ScreenWorker.run` returns it."""
    unit = WorkUnit("chr1", analysis, 0, 0, n)
    return {"unit": unit, "n": n, "compute_s": compute_s, "write_s": 0.01, "worker": worker, "gpu_memory": 0}


def runner_scrape() -> str:
    """The runner's scrape of a screen with a perturbation and an attribution analysis, a failure and a retry."""
    metrics = ScreenMetrics(SCREEN, "probe", attribution_analyses=["saliency"])
    metrics.start(units_planned=3, units_done=0)
    metrics.unit_finished(report(4), elapsed=2.0)
    metrics.unit_finished(report(4019, "saliency", compute_s=0.5, worker="w2"), elapsed=2.0)
    metrics.unit_failed(retried=True)
    return generate_latest(metrics.registry).decode()


def service_scrape() -> str:
    """The service's /metrics with a request served and a running screen that has an attribution analysis."""
    from screening.service.api import _Metrics

    metrics = _Metrics()
    metrics.observe("GET", "/healthz", 200, 0.01)
    progress = {"units_done": 1, "units_total": 3, "perturbations_done": 4023, "perturbations_total": 8046,
                "attributed_positions_done": 4019, "attributed_positions_total": 8038, "elapsed_s": 2.5,
                "rate": 1609.2, "perturbations_per_s": 1.6, "attributed_positions_per_s": 1607.6, "eta_s": 2.5}
    running = {"id": SCREEN, "name": "probe", "state": "running", "progress": progress}
    return metrics.render([running, {"id": "f" * 32, "name": "done", "state": "completed", "progress": None}]).decode()


def samples(text: str) -> dict[str, list]:
    """Sample name → samples of a scrape."""
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, []).append(s)
    return found


def test_the_naming_checker_catches_what_promtool_does():
    """The checker refuses what ``promtool check metrics`` refuses (these were the scrapes before issue 16)."""
    bad = (
        "# HELP screening_units_total Work units in the screen\n# TYPE screening_units_total gauge\n"
        'screening_units_total{screen="t"} 3.0\n'
        "# HELP screening_unit_failures Work units that failed\n# TYPE screening_unit_failures counter\n"
        "screening_unit_failures 1.0\n"
        "# HELP screening_write_milliseconds Write latency\n# TYPE screening_write_milliseconds gauge\n"
        "screening_write_milliseconds 1.0\n"
        "# TYPE screening_eta_s gauge\nscreening_eta_s 1.0\n"
        "# HELP screening_units_count Units\n# TYPE screening_units_count gauge\nscreening_units_count 1.0\n"
    )
    duplicate = (
        "# HELP screening_screens Screens\n# TYPE screening_screens gauge\n# HELP screening_screens Screens again\n"
        'screening_screens{state="running"} 1.0\n'
    )
    problems = "\n".join(prometheus_naming_problems(bad + duplicate))
    for expected in (
        'screening_units_total: non-counter metrics should not have "_total" suffix',
        'screening_unit_failures: counter metrics should have "_total" suffix',
        "screening_write_milliseconds: use base unit 'seconds' instead of 'milliseconds'",
        "screening_eta_s: metric names should not contain abbreviated units",
        "screening_eta_s: no help text",
        'screening_units_count: non-histogram and non-summary metrics should not have "_count" suffix',
        "screening_screens: second HELP line",
    ):
        assert expected in problems
    promtool = promtool_problems(bad)
    if promtool is not None:  # the real one agrees
        for name in ("screening_units_total", "screening_unit_failures", "screening_write_milliseconds", "screening_eta_s",
                     "screening_units_count"):
            assert any(line.startswith(name + " ") for line in promtool), (name, promtool)
        assert "second HELP line" in "\n".join(promtool_problems(duplicate))


@pytest.mark.parametrize("scrape", [runner_scrape, service_scrape], ids=["runner", "service"])
def test_scrapes_follow_prometheus_naming_rules(scrape):
    text = scrape()
    assert prometheus_naming_problems(text) == []
    assert promtool_problems(text) in (None, [])  # checked by promtool itself where it is installed


def test_promtool_checks_the_scrapes():
    """``promtool check metrics`` itself (Debian's ``prometheus`` package); skipped where it is not installed."""
    for scrape in (runner_scrape, service_scrape):
        problems = promtool_problems(scrape())
        if problems is None:
            pytest.skip("promtool is not installed (apt-get install prometheus)")
        assert problems == [], scrape.__name__


def test_metrics_counters_by_hand():
    found = samples(runner_scrape())

    def value(name: str, **labels) -> float:
        (match,) = [s.value for s in found[name] if labels.items() <= s.labels.items()]
        return match

    # attributed positions are counted apart from perturbations, and so are their rates
    assert value("screening_perturbations_total") == 4 and value("screening_attributed_positions_total") == 4019
    assert value("screening_perturbations_per_second") == 2.0
    assert value("screening_attributed_positions_per_second") == 4019 / 2.0
    assert value("screening_worker_perturbations_per_second", worker="w1") == 2.0
    assert value("screening_worker_attributed_positions_per_second", worker="w2") == 4019 / 0.5
    assert "w2" not in {s.labels["worker"] for s in found["screening_worker_perturbations_per_second"]}
    assert value("screening_units_done") == 2 and value("screening_units_planned") == 3
    assert value("screening_unit_retries_total") == 1 and value("screening_unit_failures_total") == 1
    assert value("screening_store_write_seconds_count") == 2
    # one meaning per label: every series names the screen by id and the spec by name
    for name, series in found.items():
        for s in series:
            assert s.labels["screen"] == SCREEN and s.labels["name"] == "probe", name


def test_counters_exist_at_zero_from_the_start():
    """Before any unit finishes or fails, every counter and histogram of the screen is there at 0
    (a failures panel shows 0, not "no data")."""
    metrics = ScreenMetrics(SCREEN, "probe")
    metrics.start(units_planned=3, units_done=1)
    found = samples(generate_latest(metrics.registry).decode())
    for name in ("screening_perturbations_total", "screening_attributed_positions_total", "screening_unit_failures_total",
                 "screening_unit_retries_total", "screening_store_write_seconds_count", "screening_unit_compute_seconds_count",
                 "screening_perturbations_per_second", "screening_attributed_positions_per_second"):
        assert [(s.labels, s.value) for s in found[name]] == [({"screen": SCREEN, "name": "probe"}, 0.0)], name
    assert found["screening_units_done"][0].value == 1


def test_service_metrics_split_positions_and_label_like_the_runner():
    found = samples(service_scrape())

    def value(name: str) -> float:
        (match,) = [s for s in found[name]]
        assert match.labels == {"screen": SCREEN, "name": "probe"}  # the id and the spec name, as on the runner
        return match.value

    assert value("screening_screen_perturbations_done") == 4 and value("screening_screen_perturbations_planned") == 8
    assert value("screening_screen_attributed_positions_done") == 4019
    assert value("screening_screen_attributed_positions_planned") == 8038
    assert value("screening_screen_perturbations_per_second") == 1.6
    assert value("screening_screen_attributed_positions_per_second") == 1607.6
    assert value("screening_screen_units_done") == 1 and value("screening_screen_units_planned") == 3
    # every state has a series, 0 when empty
    states = {s.labels["state"]: s.value for s in found["screening_screens"]}
    assert states["running"] == 1 and states["completed"] == 1 and states["failed"] == 0 and len(states) == 7


def test_no_private_prometheus_client_attributes():
    for path in [REPO / "workers" / "metrics.py", REPO / "screening" / "service" / "api.py"]:
        assert not re.search(r"\._(value|metrics|lock)\b", path.read_text()), path


def _scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def test_endpoint_stays_up_until_scraped_after_the_last_update():
    """A batch job's endpoint: stop waits for one scrape after the last update (or the linger), so
    Prometheus records the final counts; already scraped, it closes at once."""
    import threading

    metrics, port = ScreenMetrics("s"), free_port()
    metrics.serve(port)
    metrics.start(units_planned=2, units_done=0)
    stopped = threading.Event()
    threading.Thread(target=lambda: (metrics.stop(linger_s=120), stopped.set()), daemon=True).start()
    assert not stopped.wait(0.5)  # the last update is not scraped yet: still serving
    assert sample(_scrape(port), "screening_units_planned") == 2
    assert stopped.wait(30)  # that scrape let it close
    with pytest.raises(OSError):
        _scrape(port)

    scraped, port = ScreenMetrics("t"), free_port()
    scraped.serve(port)
    scraped.start(units_planned=1, units_done=1)
    _scrape(port)
    done = threading.Event()
    threading.Thread(target=lambda: (scraped.stop(linger_s=120), done.set()), daemon=True).start()
    assert done.wait(30)  # scraped after its last update: no wait for the linger

    unscraped, port = ScreenMetrics("u"), free_port()
    unscraped.serve(port)
    unscraped.start(units_planned=1, units_done=0)
    unscraped.stop(linger_s=0.2)  # nobody scrapes: closes after the linger
    with pytest.raises(OSError):
        _scrape(port)


def test_metrics_endpoint_moves_during_a_screen(ray_session, toy_paths, tmp_path):
    """The runner's endpoint, scraped after every finished unit (from the progress callback, so no timing is
    assumed): the counter climbs unit by unit, the scrape follows the naming rules, and the endpoint closes
    with the screen."""
    from screening.spec import parse_spec
    from workers.driver import run_screen
    from workers.metrics import screen_id

    port = free_port()
    raw = toy_spec_dict(toy_paths, tmp_path / "m.zarr", regions=["chr1:2,000-3,000"])
    raw["execution"].update(chunk_size=2, batch_size=2, metrics_port=port)
    spec = parse_spec(raw)
    seen: list[float] = []
    texts: list[str] = []

    def on_progress(report):
        if report.units_done == 0:  # the first report comes before the endpoint opens
            return
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        seen.append(sample(text, "screening_perturbations_total"))
        texts.append(text)

    run_screen(spec, progress=False, on_progress=on_progress)
    assert len(seen) >= 2 and seen == sorted(seen) and seen[0] > 0
    assert len(set(seen)) == len(seen)  # every finished unit moved the counter
    # a real scrape follows Prometheus's naming rules; its screen label is the id of the screen, not its name
    assert prometheus_naming_problems(texts[-1]) == [] and promtool_problems(texts[-1]) in (None, [])
    (series,) = samples(texts[-1])["screening_units_planned"]
    assert series.labels == {"screen": screen_id(spec), "name": raw["name"]}
    with pytest.raises(OSError):  # the endpoint closes with the screen
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)


def test_a_screen_counts_attributed_positions_apart_from_perturbations(ray_session, toy_paths, tmp_path):
    """A real screen with a deletion and an attribution analysis: the runner's counters, its progress reports
    (what the service's gauges are made of) and the scrape keep the two apart."""
    from screening.spec import parse_spec
    from workers.driver import run_screen

    port = free_port()
    raw = toy_spec_dict(toy_paths, tmp_path / "a.zarr", regions=["chr1:2,000-2,400"])
    raw["perturbations"] = [
        {"kind": "deletion", "name": "del20", "width": 20, "step": 20},
        {"kind": "attribution", "name": "sal", "window_step": 256, "target": {"kind": "insulation", "window": 3}},
    ]
    raw["execution"].update(chunk_size=10, metrics_port=port)
    reports, texts = [], []

    def on_progress(report):
        reports.append(report)
        if len(reports) > 1:  # the first report comes before the endpoint opens
            texts.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())

    summary = run_screen(parse_spec(raw), progress=False, on_progress=on_progress, screen_id=SCREEN)
    last, found = reports[-1], samples(texts[-1])
    assert summary.n_perturbations == 20 + 400 and last.perturbations_done == 420
    assert last.attributed_positions_done == last.attributed_positions_total == 400
    assert last.perturbations_per_s > 0 and last.attributed_positions_per_s > 0
    assert last.as_dict()["attributed_positions_per_s"] == pytest.approx(last.attributed_positions_per_s)

    def value(name: str) -> float:
        (series,) = found[name]
        assert series.labels == {"screen": SCREEN, "name": raw["name"]}
        return series.value

    assert value("screening_perturbations_total") == 20 and value("screening_attributed_positions_total") == 400
    assert value("screening_unit_failures_total") == 0 and value("screening_unit_retries_total") == 0
    assert value("screening_units_done") == value("screening_units_planned") == len(reports) - 1
    assert prometheus_naming_problems(texts[-1]) == []


# Every dashboard query against a real Prometheus: benchmarks/dashboard_promql.py, tests/test_dashboard_promql.py
