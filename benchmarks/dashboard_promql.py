"""Every PromQL query of the Grafana dashboard, evaluated on a real Prometheus scraping a real screen.

Starts, on 127.0.0.1 only and in a temporary folder: a toy screen (the tests' toy genome and slow user model,
a deletion and an attribution analysis) with its metrics endpoint (``execution.metrics_port``, what
``screening run --metrics-port`` serves); the service's ``/metrics`` rendering of the same screen's progress
(``screening.service.api``'s collector, fed by the screen's progress reports, as the service feeds it); and
``prometheus`` (Debian's ``prometheus`` package) scraping both every second. After the screen, every target of
``deploy/base/monitoring/grafana-dashboard.json`` and its ``$name`` variable's query go through Prometheus's
HTTP API with Grafana's variables substituted (``$name`` at its "All" value ``.*``, ``$__rate_interval`` at
Grafana's value for a 1 s scrape, 4 s): an instant query (``/api/v1/query``) at the screen's last progress
report and a range query (``/api/v1/query_range``, as Grafana's panels ask) over the screen. A query fails
when Prometheus refuses it or when it returns no series; Ray's own ``ray_*`` queries are only checked to
parse (no Ray metrics agent is scraped here, and its GPU gauges need a GPU). Prints a table, writes JSON,
exits non-zero on any failure. Run by hand, or by ``tests/test_dashboard_promql.py`` (``slow``)::

    python benchmarks/dashboard_promql.py --json benchmarks/results/dashboard_promql.json
"""

from __future__ import annotations

import argparse
import datetime
import http.server
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy" / "base" / "monitoring" / "grafana-dashboard.json"
SCRAPE_S = 1
#: Grafana's $__rate_interval: max(4 x the scrape interval, the step + the scrape interval); 4 s at a 1 s scrape.
RATE_INTERVAL = f"{4 * SCRAPE_S}s"
#: Why a query may return no series here without failing.
NOT_SCRAPED = {"ray_": "Ray's node metrics: no Ray metrics agent is scraped here (and GPU gauges need a GPU)"}


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """``(panel title, expression)`` of every panel target and of every query variable (``query_result`` unwrapped)."""
    queries = [(panel["title"], t["expr"]) for panel in dashboard["panels"] for t in panel.get("targets", [])]
    queries += [
        (f"variable ${v['name']}", re.sub(r"^query_result\((.*)\)$", r"\1", v["definition"]))
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    ]
    return queries


def substitute(expr: str, name: str = ".*") -> str:
    """The expression as Grafana sends it with ``$name`` at ``name`` ("All" is its ``allValue``, ``.*``)."""
    return expr.replace("${name}", name).replace("$name", name).replace("$__rate_interval", RATE_INTERVAL)


def _serve(render) -> http.server.ThreadingHTTPServer:
    """An HTTP server on a free loopback port whose every GET answers ``render()`` (a daemon thread)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = render()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _get(url: str, params: dict) -> dict:
    """A Prometheus API answer; a refused query (HTTP 400/422) answers its error JSON too."""
    try:
        with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(params)}", timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read())


def start_prometheus(binary: str, workdir: Path, targets: dict[str, str], port: int) -> subprocess.Popen:
    """``prometheus`` on 127.0.0.1:``port`` scraping ``targets`` (job → host:port) every second; waits until ready."""
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
                "scrape_configs": [
                    {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()
                ],
            }
        )
    )
    log = (workdir / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
            return process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"prometheus did not start:\n{(workdir / 'prometheus.log').read_text()}") from None
            time.sleep(0.2)


def run_toy_screen(workdir: Path, metrics_port: int, record: dict, delay_s: float) -> dict[str, Any]:
    """The toy screen with its metrics endpoint; ``record`` (the service's view) follows its progress reports.
    Returns the times Prometheus is asked about."""
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import slow_model_section, toy_spec_dict, write_toy_genome

    from screening.spec import parse_spec
    from workers.driver import run_screen

    raw = toy_spec_dict(
        write_toy_genome(workdir / "toy"),
        workdir / "screen.zarr",
        regions=["chr1:2,000-2,800"],
        model=slow_model_section(delay_s),
        name="dashboard-check",
    )
    raw["perturbations"] = [
        {"kind": "deletion", "name": "del20", "width": 20, "step": 20},
        {"kind": "attribution", "name": "sal", "window_step": 128, "target": {"kind": "insulation", "window": 3}},
    ]
    raw["execution"].update(chunk_size=4, batch_size=2, metrics_port=metrics_port)
    record["name"] = raw["name"]
    times: dict[str, Any] = {"began": time.time(), "name": raw["name"]}

    def on_progress(report) -> None:
        record["progress"] = report.as_dict()
        times["last_report"] = time.time()

    run_screen(parse_spec(raw), progress=False, screen_id=record["id"], on_progress=on_progress)
    record["state"] = "completed"
    times["ended"] = time.time()
    times["perturbations"] = record["progress"]["perturbations_done"]
    times["attributed"] = record["progress"]["attributed_positions_done"]
    return times


def evaluate(api: str, queries: list[tuple[str, str]], times: dict[str, Any]) -> list[dict[str, Any]]:
    """Every query, instant (at the last progress report) and over the screen (1 s steps), with its verdict."""
    rows = []
    for title, expr in queries:
        promql = substitute(expr)
        instant = _get(f"{api}/query", {"query": promql, "time": times["last_report"]})
        ranged = _get(
            f"{api}/query_range",
            {"query": promql, "start": times["began"], "end": times["ended"] + 2, "step": SCRAPE_S},
        )
        # one spec name picked in the variable, as Grafana sends a multi-value pick: (a|b)
        picked = _get(f"{api}/query", {"query": substitute(expr, f"({times['name']})"), "time": times["last_report"]})
        parsed = all(answer.get("status") == "success" for answer in (instant, ranged, picked))
        results = ranged["data"]["result"] if parsed else []
        values = [float(v) for series in results for _, v in series["values"]]
        n_values = sum(v == v for v in values)  # NaN (a quantile of no observations in the window) is no data
        last = [float(v) for _, v in results[0]["values"] if float(v) == float(v)] if results else []
        excuse = next((why for prefix, why in NOT_SCRAPED.items() if re.search(rf"\b{prefix}", promql)), None)
        n_series = len(results)
        ok = parsed and (n_series > 0 and n_values > 0 or excuse is not None)
        if "$name" in expr and excuse is None:  # picking the screen's name keeps its series
            ok = ok and len(picked["data"]["result"]) > 0
        rows.append(
            {
                "panel": title,
                "expr": expr,
                "promql": promql,
                "parsed": parsed,
                "error": None if parsed else instant.get("error") or ranged.get("error") or picked.get("error"),
                "instant_series": len(instant["data"]["result"]) if parsed else 0,
                "picked_series": len(picked["data"]["result"]) if parsed else 0,
                "last_value": last[-1] if last else None,
                "range_series": n_series,
                "range_values": n_values,
                "no_data_because": excuse if n_series == 0 else None,
                "ok": ok,
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the verdicts."""
    lines = [
        "| panel | query ($name = All) | parsed | series: instant / range / one name | values | last (1st series) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        verdict = "ok" if row["ok"] and not row["no_data_because"] else "ok (parse only)" if row["ok"] else "FAIL"
        query = row["promql"].replace("|", "\\|")
        last = "" if row["last_value"] is None else f"{row['last_value']:.4g}"
        lines.append(
            f"| {row['panel']} | `{query}` | {'yes' if row['parsed'] else 'no: ' + str(row['error'])} | "
            f"{row['instant_series']} / {row['range_series']} / {row['picked_series']} | "
            f"{row['range_values']} | {last} | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", default=shutil.which("prometheus"), help="prometheus binary (default: PATH)")
    parser.add_argument("--json", type=Path, help="write the verdicts here")
    parser.add_argument("--delay", type=float, default=0.2, help="seconds per forward pass of the toy model")
    args = parser.parse_args(argv)
    if not args.prometheus:
        parser.error("prometheus is not on PATH (apt-get install prometheus) and --prometheus is not given")
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import free_port

    from screening.service.api import _Metrics

    version = subprocess.run([args.prometheus, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    service, record = _Metrics(), {"id": "0123456789abcdef0123456789abcdef", "state": "running", "progress": None}

    def render() -> bytes:
        service.observe("GET", "/metrics", 200, 0.002)  # the scrape itself, as the service counts it
        return service.render([record])

    with tempfile.TemporaryDirectory(prefix="dashboard-promql-") as tmp:
        workdir, server = Path(tmp), _serve(render)
        runner_port, prom_port = free_port(), free_port()
        targets = {"runner": f"127.0.0.1:{runner_port}", "service": f"127.0.0.1:{server.server_address[1]}"}
        prometheus = start_prometheus(args.prometheus, workdir, targets, prom_port)
        try:
            times = run_toy_screen(workdir, runner_port, record, args.delay)
            time.sleep(2 * SCRAPE_S + 1)  # the last scrapes
            rows = evaluate(
                f"http://127.0.0.1:{prom_port}/api/v1", dashboard_queries(json.loads(DASHBOARD.read_text())), times
            )
        finally:
            prometheus.send_signal(signal.SIGTERM)
            prometheus.wait(timeout=30)
            server.shutdown()
    names = {"screen": record["id"], "name": record["name"]}
    print(
        f"{version}; screen {times['ended'] - times['began']:.0f} s ({times['perturbations']} perturbations, "
        f"{times['attributed']} attributed positions), scraped every {SCRAPE_S} s; $name=.* "
        f"$__rate_interval={RATE_INTERVAL}; {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(table(rows))
    if args.json:
        args.json.write_text(
            json.dumps({"prometheus": version, "labels": names, "times": times, "queries": rows}, indent=1) + "\n"
        )
    failed = [row for row in rows if not row["ok"]]
    for row in failed:
        print(f"FAIL {row['panel']}: {row['promql']} ({row['error'] or 'no data'})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
