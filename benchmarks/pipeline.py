"""The pipeline's own cost per perturbation: a null model at C.Origami's geometry, in-process and end to end.

The model's forward pass costs almost nothing here (:mod:`benchmarks.null_model`: a strided read of its
input and a 256 × 256 map), so what is timed is everything else a worker does per perturbation: reading
sequence and tracks, the edit, building the model input, scoring (and, end to end, the store write and
the transfer of results to the driver).

In-process (the default): each case runs :func:`screening.compute.engine.run_unit` on one work unit,
once with inputs built on the host (edit → stack → ``build_input``, the path before
:mod:`screening.compute.assemble`) and once on the device (the encoded span spliced per perturbation),
interleaved, after a warm-up of each; the scores of the two paths are compared. Nothing is written.
``--model corigami`` does the same with the real C.Origami model (released size, random weights).

End to end (``--end-to-end``): the null model as a user model (``model.kind: user``) in a screen run by
:func:`workers.driver.run_screen` (what ``screening run`` calls) with one Ray worker, against the same
screen computed by a :class:`workers.screen_worker.ScreenWorker` in this process, interleaved. Both rates
are over the workers' busy span, from the first unit's start to the last unit's end (the workers' own
timestamps), so Ray's start-up and the model's load are left out.

Usage::

    python benchmarks/pipeline.py --threads 1 --json benchmarks/results/pipeline_cpu.json
    python benchmarks/pipeline.py --end-to-end --n 256 --batch-sizes 8 --json benchmarks/results/pipeline_e2e_cpu.json
    python benchmarks/pipeline.py --model corigami --threads 2 --n 4 --batch-sizes 1 --cases deletion-shared
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.null_model import DECLARATION, IMPORT_PATH, NullModule  # noqa: E402
from benchmarks.procmem import reset_peak, status_bytes  # noqa: E402
from benchmarks.throughput import peak_rss  # noqa: E402
from screening.compute.engine import run_unit  # noqa: E402
from screening.compute.threads import tune_cpu_allocator  # noqa: E402
from screening.io.genome import Genome  # noqa: E402
from screening.io.tracks import Track, TrackSet  # noqa: E402
from screening.models.base import ModelAdapter, PositionEncoding, WindowGeometry  # noqa: E402
from screening.models.corigami import CorigamiAdapter, CorigamiConfig  # noqa: E402
from screening.spec import DeletionSpec, MutagenesisSpec  # noqa: E402

GEOMETRY = CorigamiConfig()  # 2,097,152 bp windows, 8,192 bp bins, 256 bins
CHROM_LENGTH = 12_000_000


class NullAdapter(ModelAdapter):
    """C.Origami's input (``[B, L, 5 + 2]``) and map geometry around :class:`benchmarks.null_model.NullModule`:
    a forward pass that reads every 4,096th position of the input and returns a map that depends on it."""

    name = "null"
    track_names = ("ctcf", "atac")

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(NullModule(GEOMETRY.n_bins), device)
        self.geometry = WindowGeometry(GEOMETRY.window_length, GEOMETRY.bin_size, GEOMETRY.n_bins)
        self._corigami = CorigamiAdapter.host_input.__get__(self)  # the real C.Origami host build
        self.config = GEOMETRY

    def build_input(self, codes: np.ndarray, tracks: np.ndarray | None) -> torch.Tensor:
        return self._corigami(codes, tracks)

    def position_encoding(self) -> PositionEncoding:
        return CorigamiAdapter.position_encoding(self)  # type: ignore[arg-type]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.module(inputs)


def _genome(directory: Path) -> tuple[Genome, TrackSet]:
    import pyBigWig

    rng = np.random.default_rng(0)
    fasta = directory / "genome.fa"
    sequence = "".join(rng.choice(list("ACGT"), CHROM_LENGTH))
    fasta.write_text(">chr1\n" + "\n".join(sequence[i : i + 80] for i in range(0, CHROM_LENGTH, 80)) + "\n")
    tracks = []
    for name in ("ctcf", "atac"):
        path = directory / f"{name}.bw"
        bw = pyBigWig.open(str(path), "w")
        bw.addHeader([("chr1", CHROM_LENGTH)])
        starts = np.arange(0, CHROM_LENGTH, 100)
        bw.addEntries("chr1", starts.tolist(), values=rng.gamma(1.0, 2.0, len(starts)).tolist(), span=100)
        bw.close()
        tracks.append(Track(path, name, "log1p" if name == "atac" else "none"))
    return Genome(fasta), TrackSet(tracks)


def _reset_peak() -> int:
    """Reset the process's peak resident size to its current size (Linux), so the peak read later is the
    pipeline's, not the synthetic genome's; returns the current resident size."""
    import gc

    gc.collect()
    reset_peak()
    try:
        return status_bytes("VmRSS")
    except (OSError, RuntimeError):  # no /proc (not Linux)
        return 0


def _payload(case: str, n: int) -> tuple[object, dict, int]:
    """The spec, the unit's payload and the perturbations it makes."""
    window = GEOMETRY.window_length
    middle = CHROM_LENGTH // 2
    if case == "mutagenesis":
        starts = middle + np.arange(n, dtype=np.int64)
        shared = (2 * starts[0] + n - window) // 2
        return MutagenesisSpec(), {"start": starts, "end": starts + 1, "window_start": np.full(n, shared)}, 3 * n
    width = min(1000, window // (4 * n))  # 1 kb (all of them in the central half of a shared window)
    starts = middle + width * np.arange(n, dtype=np.int64)
    spec = DeletionSpec(width=width, step=width)
    if case == "deletion-shared":
        window_starts = np.full(n, (2 * starts[0] + (starts[-1] + width - starts[0]) - window) // 2)
    else:
        window_starts = (2 * starts + width - window) // 2
    return spec, {"start": starts, "end": starts + width, "window_start": window_starts}, n


def _time(adapter, genome, tracks, spec, payload, batch_size, host: bool) -> tuple[float, float, dict[str, np.ndarray]]:
    """Seconds and CPU seconds (this process's) of one unit on the host (``host``) or device input path, and its
    scores."""
    encoding = adapter.position_encoding
    if host:
        adapter.position_encoding = lambda: None
    try:
        began, cpu = time.perf_counter(), time.process_time()
        result = run_unit(
            adapter, genome, tracks, spec, "chr1", payload, batch_size
        )  # scores on the host: synchronised
        return time.perf_counter() - began, time.process_time() - cpu, result.values
    finally:
        adapter.position_encoding = encoding


def _largest_difference(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> float:
    """Largest absolute difference between two units' scores (NaN where both are NaN counts as equal)."""
    worst = 0.0
    for name, values in first.items():
        other = second[name]
        if not np.array_equal(np.isnan(values), np.isnan(other)):
            return float("inf")
        both = ~np.isnan(values)
        if both.any():
            worst = max(worst, float(np.abs(values[both].astype(np.float64) - other[both]).max()))
    return worst


def _adapter(args: argparse.Namespace) -> ModelAdapter:
    if args.model == "corigami":  # the released size, random weights: the real forward pass
        adapter: ModelAdapter = CorigamiAdapter.random_init(GEOMETRY, seed=0, device=args.device)
    else:
        adapter = NullAdapter(args.device)
    adapter.overlap = args.overlap
    return adapter


def in_process(args: argparse.Namespace, genome: Genome, tracks: TrackSet) -> list[dict]:
    """Every case and batch size through ``run_unit``, the input paths interleaved; one row per path."""
    adapter = _adapter(args)
    rows = []
    for case in args.cases.split(","):
        positions = max(1, args.n // 3) if case == "mutagenesis" else args.n
        spec, payload, items = _payload(case, positions)
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            paths = [path == "host" for path in args.paths.split(",")]
            warm = {k: v[: min(args.warm_items, len(v))] for k, v in payload.items()}
            for host in paths if args.warm_items else ():
                _time(adapter, genome, tracks, spec, warm, batch_size, host)
            timings: dict[str, list[float]] = {}
            cpu_times: dict[str, list[float]] = {}
            scores: dict[str, dict[str, np.ndarray]] = {}
            for host in paths * args.repeats:  # interleaved: load changes hit both paths
                path = "host" if host else "device"
                seconds, cpu, scores[path] = _time(adapter, genome, tracks, spec, payload, batch_size, host)
                timings.setdefault(path, []).append(seconds)
                cpu_times.setdefault(path, []).append(cpu)
            difference = _largest_difference(scores["host"], scores["device"]) if len(scores) == 2 else None
            for path, seconds in timings.items():
                best = min(seconds)
                rows.append(
                    {
                        "case": case,
                        "batch_size": batch_size,
                        "path": path,
                        "items": items,
                        "seconds": best,
                        "all_seconds": seconds,
                        "cpu_seconds": min(cpu_times[path]),  # the best of each, as for the wall-clock time
                        "all_cpu_seconds": cpu_times[path],
                        "ms_per_item": 1000 * best / items,
                        "items_per_s": items / best,
                        "max_abs_diff_between_paths": difference,
                    }
                )
                print(
                    f"{case:17s} batch {batch_size:3d} {path:6s} {1000 * best / items:8.2f} ms/item "
                    f"{items / best:8.1f} items/s, {1000 * min(cpu_times[path]) / items:8.2f} CPU ms/item"
                    + ("" if difference is None else f"  paths differ by {difference:.3g}"),
                    flush=True,
                )
    return rows


# ----------------------------------------------------------------------------------------- end to end


def _screen_spec(case: str, n: int, args: argparse.Namespace, directory: Path, store: Path) -> dict:
    """The null model's screen of one case: ``n`` 1-kb deletions, or ``n // 3`` positions of mutagenesis."""
    centre = CHROM_LENGTH // 2
    if case == "mutagenesis":
        region, perturbation = (centre, centre + max(1, n // 3)), {"kind": "mutagenesis"}
    else:
        width = min(1000, GEOMETRY.window_length // 16)  # 16 deletions of a unit in the central half of a window
        window = "shared" if case == "deletion-shared" else "centred"
        region = (centre - n * width // 2, centre - n * width // 2 + n * width)
        perturbation = {"kind": "deletion", "width": width, "step": width, "window": window}
    declaration = {
        **DECLARATION,
        "window_length": GEOMETRY.window_length,
        "bin_size": GEOMETRY.bin_size,
        "n_bins": GEOMETRY.n_bins,
    }
    return {
        "name": f"pipeline-{case}",
        "model": {
            "kind": "user",
            "import_path": IMPORT_PATH,
            "python_path": [str(ROOT)],
            "random_seed": 0,
            "config": {"n_bins": GEOMETRY.n_bins},
            "declare": declaration,
        },
        "genome": {"fasta": str(directory / "genome.fa")},
        "tracks": [
            {"name": "ctcf", "path": str(directory / "ctcf.bw")},
            {"name": "atac", "path": str(directory / "atac.bw"), "transform": "log1p"},
        ],
        "regions": [f"chr1:{region[0]}-{region[1]}"],
        "perturbations": [perturbation],
        "execution": {
            "device": args.device,
            "batch_size": args.batch_size,
            "chunk_size": args.chunk_size,
            "overlap": args.overlap,
            "num_workers": 1,
            "cpus_per_worker": float(args.threads),
        },
        "output": {"store": str(store), "overwrite": True, "plots": False},
    }


def _busy(reports: list[dict], items_per_unit_item: int) -> dict:
    """A run's rate over its worker's busy span, from the first unit's start to the last unit's end, and over
    the span after the first unit (``steady_items_per_s``: a fresh process's one-off costs left out)."""
    reports = sorted(reports, key=lambda r: r["started"])
    span = reports[-1]["finished"] - reports[0]["started"]
    items = items_per_unit_item * sum(r["n"] for r in reports)
    inside = sum(r["compute_s"] + r["write_s"] for r in reports)
    rest = items - items_per_unit_item * reports[0]["n"]
    steady = reports[-1]["finished"] - reports[0]["finished"]
    cpu = reports[-1]["cpu_s_at_end"] - reports[0]["cpu_s_at_end"]
    system = reports[-1].get("system_s_at_end", np.nan) - reports[0].get("system_s_at_end", np.nan)
    faults = reports[-1].get("faults_at_end", np.nan) - reports[0].get("faults_at_end", np.nan)
    return {
        "items": items,
        "units": len(reports),
        "span_s": span,
        "items_per_s": items / span,
        "steady_items_per_s": rest / steady if rest and steady > 0 else None,
        "compute_s": sum(r["compute_s"] for r in reports),
        "write_s": sum(r["write_s"] for r in reports),
        "between_units_s": span - inside,
        "first_unit_s": reports[0]["compute_s"] + reports[0]["write_s"],
        # the worker's CPU seconds per wall second after the first unit: its share of the shared cores
        "cpu_per_s": (cpu / steady) if steady > 0 else None,
        # what the shared cores' load cannot change: the worker's items per CPU second of its own, after the first unit
        "items_per_cpu_s": rest / cpu if cpu > 0 else None,
        "system_share": system / cpu if cpu > 0 and np.isfinite(system) else None,  # of the worker's CPU time
        "faults_per_item": faults / rest if rest and np.isfinite(faults) else None,  # minor page faults
        "other_ray_cpu_per_s": reports[-1].get("other_ray_cpu_per_s"),
    }


_REPORTED = ("n", "compute_s", "write_s", "started", "finished")


def _run_in_process(spec, prepared) -> list[dict]:
    """The screen computed by a ScreenWorker in a fresh process of its own (as a Ray worker is) without Ray.

    ``prepared`` is not used (the process prepares the spec itself); the signature is :func:`_run_ray`'s.
    """
    import subprocess

    spec_file = Path(spec.output.store).with_suffix(".json")
    spec_file.write_text(json.dumps(spec.model_dump(mode="json")))
    done = subprocess.run(
        [sys.executable, __file__, "--screen-in-process", str(spec_file)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"the in-process screen failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def screen_in_process(spec_file: str) -> list[dict]:
    """Compute a screen's every unit with a ScreenWorker in this process, written as the driver would."""
    from screening.prepare import prepare_screen
    from screening.spec import parse_spec
    from screening.store.writer import open_or_create_store
    from workers.screen_worker import ScreenWorker, run_in_process

    spec = parse_spec(json.loads(Path(spec_file).read_text()))
    prepared = prepare_screen(spec)
    plan = prepared.plan
    open_or_create_store(
        spec.output.store,
        spec.model_dump(mode="json"),
        spec.science_hash(),
        prepared.provenance,
        plan.layouts,
        overwrite=True,
    )
    worker = ScreenWorker(spec.model_dump(mode="json"), torch_threads=int(spec.execution.cpus_per_worker))
    cpu: list[float] = []  # the process's CPU seconds as each unit ends
    reports = run_in_process(
        worker, ((unit, plan.payload(unit)) for unit in plan.units), after_each=lambda _: cpu.append(_counters())
    )
    return [{**{key: report[key] for key in _REPORTED}, **_at_end(c)} for report, c in zip(reports, cpu)]


def _at_end(counters: dict[str, float]) -> dict[str, float]:
    return {f"{key}_at_end": value for key, value in counters.items()}


def _counters(pid: int | str = "self") -> dict[str, float]:
    """A process's CPU seconds so far (``cpu_s``: user + system; ``system_s``) and its minor page faults
    (``faults``), from ``/proc/<pid>/stat`` (Linux; NaN elsewhere or when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return {"cpu_s": float("nan"), "system_s": float("nan"), "faults": float("nan")}
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "cpu_s": (int(fields[11]) + int(fields[12])) / tick,
        "system_s": int(fields[12]) / tick,
        "faults": float(fields[7]),
    }


def _cpu_seconds(pid: int | str = "self") -> float:
    """CPU seconds (user + system) a process has used so far."""
    return _counters(pid)["cpu_s"]


def _machine_jiffies() -> tuple[int, int]:
    """(busy, all) CPU time of the whole machine so far, in clock ticks summed over cores (``/proc/stat``)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def _ray_processes_cpu(exclude: set[int]) -> float:
    """CPU seconds used so far by this process's descendants (the embedded Ray: GCS, raylet, agents, idle workers)
    but ``exclude``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, stack = 0.0, list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        if pid not in exclude:
            used = _cpu_seconds(pid)
            total += 0.0 if np.isnan(used) else used
    return total


def _run_ray(spec, prepared) -> list[dict]:
    """The screen through the Ray driver; the unit reports its workers sent, as the driver's metrics saw them."""
    import workers.driver as driver

    reports: list[dict] = []
    first: dict[str, float] = {}  # as the first unit arrives: Ray's other processes' CPU seconds, the time

    class Recording(driver.ScreenMetrics):
        def unit_finished(self, result, elapsed):
            pid = int(result["worker"].rsplit(":", 1)[1])  # the worker's CPU seconds as its unit arrives
            reports.append({**{key: result[key] for key in _REPORTED}, **_at_end(_counters(pid))})
            if not first:
                first.update(cpu=_ray_processes_cpu({pid}), time=time.time(), pid=pid)
            super().unit_finished(result, elapsed)

    original, driver.ScreenMetrics = driver.ScreenMetrics, Recording
    try:
        driver.run_screen(spec, progress=False, prepared=prepared)
    finally:
        driver.ScreenMetrics = original
    if first:  # from the first unit's arrival to the screen's return: the driver's last write and the worker's end
        reports[-1]["other_ray_cpu_per_s"] = (_ray_processes_cpu({int(first["pid"])}) - first["cpu"]) / (
            time.time() - first["time"]
        )
    return reports


def _compare(case: str, batch_size: int, runs: dict[str, list[dict]]) -> list[dict]:
    """One row per path: its best and median rates (whole span, and after the first unit), and Ray's ratios."""
    rates = {}
    for path, measured in runs.items():
        whole = [r["items_per_s"] for r in measured]
        steady = [r["steady_items_per_s"] for r in measured if r["steady_items_per_s"]]
        per_cpu = [r["items_per_cpu_s"] for r in measured if r["items_per_cpu_s"]]
        rates[path] = {
            "best": max(whole),
            "median": float(np.median(whole)),
            "steady_best": max(steady, default=None),
            "steady_median": float(np.median(steady)) if steady else None,
            "per_cpu_s_median": float(np.median(per_cpu)) if per_cpu else None,
        }

    def ratio(key: str) -> float | None:
        ray, local = rates["ray"][key], rates["in-process"][key]
        return ray / local if ray and local else None

    ratios = {
        f"ray_vs_in_process_{key}": ratio(key)
        for key in ("best", "median", "steady_best", "steady_median", "per_cpu_s_median")
    }
    print(
        f"{case:17s} batch {batch_size:3d} ray / in-process: "
        + ", ".join(f"{key.removeprefix('ray_vs_in_process_')} {value:.3f}" for key, value in ratios.items() if value),
        flush=True,
    )
    return [
        {
            "case": case,
            "batch_size": batch_size,
            "path": path,
            "items_per_s": rates[path]["best"],
            **{f"items_per_s_{key}": value for key, value in rates[path].items()},
            **ratios,
            "runs": runs[path],
        }
        for path in runs
    ]


def _measure(run, spec, prepared, per_item: int) -> dict:
    """One run's rates (:func:`_busy`), the load average around it and the cores the whole machine kept busy."""
    import gc

    load, (busy, total) = os.getloadavg()[0], _machine_jiffies()
    measured = _busy(run(spec, prepared), per_item)
    busy_after, total_after = _machine_jiffies()
    gc.collect()
    cores = (os.cpu_count() or 1) * (busy_after - busy) / (total_after - total) if total_after > total else None
    return {**measured, "machine_busy_cores": cores, "loadavg_1min": [load, os.getloadavg()[0]]}


def _describe(m: dict) -> str:
    def f(value, digits):
        return "-" if value is None else f"{value:.{digits}f}"

    return (
        f"{m['items_per_s']:7.1f} items/s, after the first unit {f(m['steady_items_per_s'], 1)} "
        f"({m['items']} in {m['span_s']:.2f} s, {m['units']} units, first {m['first_unit_s']:.3f} s, "
        f"{m['between_units_s']:.3f} s between units); worker {f(m['cpu_per_s'], 2)} CPU/s, "
        f"{f(m['items_per_cpu_s'], 1)} items/CPU-s, {f(m['system_share'], 2)} of it system, "
        f"{f(m['faults_per_item'], 0)} page faults per item; rest of Ray {f(m['other_ray_cpu_per_s'], 2)} CPU/s; "
        f"machine {f(m['machine_busy_cores'], 2)} cores busy"
    )


def end_to_end(args: argparse.Namespace, directory: Path) -> list[dict]:
    """Each case and batch size through the Ray driver and in this process, interleaved; one row per path."""
    from screening.prepare import prepare_screen
    from screening.spec import parse_spec
    from workers.driver import _init_ray, _shutdown_ray

    rows = []
    ray_started = False
    try:
        for case in args.cases.split(","):
            per_item = 3 if case == "mutagenesis" else 1  # a random genome: no N, three alternatives per position
            for batch_size in (int(b) for b in args.batch_sizes.split(",")):
                args.batch_size = batch_size
                spec = parse_spec(_screen_spec(case, args.n, args, directory, directory / f"{case}.zarr"))
                prepared = prepare_screen(spec)
                if not ray_started:  # one embedded Ray for every run, started as `screening run` starts it
                    ray_started = _init_ray(spec)
                runs: dict[str, list[dict]] = {}
                for _ in range(args.repeats):
                    for path, run in (("in-process", _run_in_process), ("ray", _run_ray)):
                        measured = _measure(run, spec, prepared, per_item)
                        runs.setdefault(path, []).append(measured)
                        print(f"{case:17s} batch {batch_size:3d} {path:10s} {_describe(measured)}", flush=True)
                rows.extend(_compare(case, batch_size, runs))
    finally:
        if ray_started:
            _shutdown_ray()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cases",
        default=None,
        help="deletion-shared,deletion-centred,mutagenesis (end to end: deletion-shared,mutagenesis by default)",
    )
    parser.add_argument("--batch-sizes", default=None, help="in-process: 1,8,32; end to end: 8 by default")
    parser.add_argument(
        "--n",
        type=int,
        default=32,
        help="perturbations per unit, or (end to end) per screen (mutagenesis: positions × 3)",
    )
    parser.add_argument(
        "--paths",
        default="host,device",
        help="host,device: which input paths to time (one path per process gives that path's peak memory)",
    )
    parser.add_argument(
        "--model",
        choices=("null", "corigami"),
        default="null",
        help="in-process: the null model, or the real C.Origami (released size, random weights)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each path, interleaved (the best counts)")
    parser.add_argument("--warm-items", type=int, default=2, help="in-process: perturbations of each path's warm-up")
    parser.add_argument("--end-to-end", action="store_true", help="through the Ray driver against in-process")
    parser.add_argument("--chunk-size", type=int, default=16, help="end to end: execution.chunk_size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where the null model runs and inputs are built")
    parser.add_argument(
        "--overlap",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="build inputs in a background thread (in-process; default off). End to end: execution.overlap "
        "(default on), which CPU workers no longer apply",
    )
    parser.add_argument(
        "--tune-allocator",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="in-process: the worker's CPU allocator tuning (screening.compute.threads)",
    )
    parser.add_argument("--json", dest="json_out", default=None)
    parser.add_argument("--screen-in-process", default=None, help=argparse.SUPPRESS)  # a spec file: one run, here
    args = parser.parse_args(argv)
    if args.screen_in_process:
        print(json.dumps(screen_in_process(args.screen_in_process)))
        return 0
    args.cases = args.cases or (
        "deletion-shared,mutagenesis" if args.end_to_end else "deletion-shared,deletion-centred,mutagenesis"
    )
    args.batch_sizes = args.batch_sizes or ("8" if args.end_to_end else "1,8,32")
    if args.overlap is None:
        args.overlap = args.end_to_end
    torch.set_num_threads(args.threads)
    if args.tune_allocator and not args.end_to_end:  # end to end: the workers tune their own process
        tune_cpu_allocator()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        genome, tracks = _genome(Path(tmp))
        baseline = _reset_peak()
        rows = end_to_end(args, Path(tmp)) if args.end_to_end else in_process(args, genome, tracks)
    batch_input = max(int(b) for b in args.batch_sizes.split(",")) * GEOMETRY.window_length * 7 * 4
    summary = {
        "peak_rss_gib": peak_rss() / 1024**3,
        "rss_before_gib": baseline / 1024**3,
        "peak_beyond_before_gib": (peak_rss() - baseline) / 1024**3,
        "largest_batch_input_gib": batch_input / 1024**3,
        "threads": args.threads,
        "overlap": args.overlap,
        "tune_allocator": args.tune_allocator,
        "device": args.device,
        "model": args.model,
        "end_to_end": args.end_to_end,
        "loadavg_1min": [load_before, os.getloadavg()[0]],
        "command": " ".join(["python", "benchmarks/pipeline.py", *(sys.argv[1:] if argv is None else argv)]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    print(json.dumps(summary))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
