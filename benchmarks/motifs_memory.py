"""Peak memory of ``screening motifs`` (:func:`screening.interpret.motifs.motifs_from_store`) against genome length.

docs/motifs.md ("Memory bound") says the motif finder holds one block at a time: its peak is about
90 MB + 73 bytes per position of the block (``block_size``, default 1,000,000) + 38 bytes per analysed
position of the chromosome (the store reader's ``start``/``end`` coordinates, cached and recomputed per
query: 32 bytes; the kept seqlets; slack), the clustering adding up to 12 kB per kept seqlet. So peak memory
should grow with the block size, and with the genome length only by those 38 bytes per position.

For each size, one synthetic chromosome ``chr1`` of that length is built in a temp dir: random sequence
with a CTCF site (JASPAR MA0139.1, the bundled matrix) planted every ``--site-spacing`` bases on
alternating strands, a FASTA of it, and an attribution store made through the store's own writer
(:func:`screening.store.writer.create_store` and :meth:`ResultStore.write_chunk`, as tests/test_motifs.py
does) whose ``attribution_corrected [position, 4]`` is small noise plus the CTCF contributions on the planted
bases. Every position is analysed; the store has the layout of a real attribution analysis (``chunk_size``
1,048,576 as C.Origami's default ``window_step``), with no ``ref_base`` labels (the reference comes from
the FASTA; ``--reference labels`` stores them instead, as a plan made with a genome does).

Each size then runs in a fresh child process: ``motifs_from_store`` first runs once on a tiny store (imports,
numba compilation, the JASPAR database: constant costs), then the peak counter is reset
(``/proc/self/clear_refs``) and ``motifs_from_store`` runs on the measured store with the default options
(``--block-size`` to change). Reported, in bytes above the RSS before the run (``peak_rss_delta``), per
phase (``scan``: reading blocks and calling seqlets; ``cluster``; ``match``: JASPAR TOMTOM; ``write``: the
outputs) and overall; then the same run again under ``tracemalloc`` for the peak of Python-heap
allocations (numpy arrays included; numba's own allocations, e.g. inside tangermeme's seqlet caller, are
not seen by tracemalloc, only by RSS). A least-squares line ``peak = intercept + slope × positions`` over
the sizes run with the same block size gives the growth per position; ``scan_marginal`` is the scan phase's
growth between the two largest sizes (every run there reads many full blocks), and a second block size at
one length (``--block-sizes``) gives the cost per block position.

Usage::

    python benchmarks/motifs_memory.py --json benchmarks/results/motifs_memory.json     # 1, 4, 16 Mb
    python benchmarks/motifs_memory.py --sizes 1000000 4000000 --block-sizes 1000000 250000
    python benchmarks/motifs_memory.py --smoke --json /tmp/motifs_memory_smoke.json     # seconds

Memory figures are valid on a loaded machine; times are not (the machine is shared).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.procmem import reset_peak, status_bytes  # noqa: E402

CHROM = "chr1"
ANALYSIS = "saliency"
CHUNK_SIZE = 1 << 20  # C.Origami's window_step default (window // 2): the store chunk of an attribution analysis
DEFAULT_BLOCK = 1_000_000  # find_motifs' default block_size (asserted in the child)
DOC_BYTES_FIXED = 90_000_000  # docs/motifs.md "Memory bound"
DOC_BYTES_PER_BLOCK_POSITION = 73
DOC_BYTES_PER_POSITION = 38  # the reader's start/end coordinates (32), the kept seqlets, slack
PHASES = ("scan", "cluster", "match", "write")


# --------------------------------------------------------------------------- synthetic input


def planted(length: int, spacing: int, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Base codes (A0 C1 G2 T3) of a random chromosome with a CTCF site every ``spacing`` bases, and the sites."""
    from screening.perturb.motif import load_ctcf, sample_motif

    rng = np.random.default_rng(seed)
    ctcf = load_ctcf()
    ppm = ctcf.counts / ctcf.counts.sum(axis=0, keepdims=True)
    width = ppm.shape[1]
    codes = rng.integers(0, 4, length).astype(np.uint8)
    sites = []
    for i, start in enumerate(range(spacing // 2, length - width, spacing)):
        strand = "+" if i % 2 == 0 else "-"
        codes[start : start + width] = sample_motif(rng, ppm, strand)
        sites.append((start, strand))
    return codes, sites


def _site_contributions(width_ppm: np.ndarray, strand: str) -> np.ndarray:
    """Hypothetical contributions ``[width, 4]`` of one planted site: high on the informative bases."""
    oriented = width_ppm if strand == "+" else width_ppm[::-1, ::-1]
    ic = 2 + (oriented * np.log2(oriented + 1e-9)).sum(axis=0)
    return (0.5 * (oriented - 0.25) * ic).T.astype(np.float32)


def write_fasta(path: Path, codes: np.ndarray, line: int = 60) -> None:
    letters = np.frombuffer(b"ACGT", np.uint8)[codes].tobytes()
    with open(path, "wb") as out:
        out.write(f">{CHROM}\n".encode())
        for lo in range(0, len(letters), line):
            out.write(letters[lo : lo + line] + b"\n")


def build_store(
    path: Path, codes: np.ndarray, sites: list[tuple[int, str]], chunk_size: int, labels: bool, seed: int = 0
) -> Path:
    """An attribution store of every position of ``codes`` (one analysis), written chunk by chunk."""
    from screening.perturb.motif import load_ctcf
    from screening.store.layout import GroupLayout
    from screening.store.writer import create_store

    ctcf = load_ctcf()
    ppm = ctcf.counts / ctcf.counts.sum(axis=0, keepdims=True)
    width = ppm.shape[1]
    n = len(codes)
    positions = np.arange(n, dtype=np.int64)
    layout = GroupLayout(
        chrom=CHROM,
        chrom_length=n,
        analysis=ANALYSIS,
        kind="attribution",
        params={},
        start=positions,
        end=positions + 1,
        window_start=np.zeros(n, np.int64),
        scores=["attribution_corrected"],
        chunk_size=chunk_size,
        extra_dims={"base": 4},
        labels={"ref_base": np.array(list("ACGT"))[codes]} if labels else {},
        score_dims={"attribution_corrected": ["base"]},
    )
    store = create_store(
        path, {"name": "motifs-memory", "genome": {}}, "bench", {"benchmark": "motifs_memory"}, [layout]
    )
    del positions, layout
    starts = np.array([s for s, _ in sites], np.int64)
    shapes = {strand: _site_contributions(ppm, strand) for strand in "+-"}
    rng = np.random.default_rng(seed + 1)
    for k, lo in enumerate(range(0, n, chunk_size)):
        hi = min(lo + chunk_size, n)
        hyp = rng.normal(0, 0.01, (hi - lo, 4)).astype(np.float32)
        for i in np.flatnonzero((starts + width > lo) & (starts < hi)):
            a, strand = int(starts[i]), sites[i][1]
            rows = np.arange(max(a, lo), min(a + width, hi))
            hyp[rows - lo] += shapes[strand][rows - a]
        hyp -= hyp.mean(axis=1, keepdims=True)
        store.write_chunk(CHROM, ANALYSIS, k, {"attribution_corrected": hyp})
    return path


def make_input(workdir: Path, length: int, spacing: int, chunk_size: int, labels: bool) -> tuple[Path, Path]:
    """``(store, fasta)`` of a planted chromosome of ``length`` bases under ``workdir``."""
    codes, sites = planted(length, spacing)
    fasta = workdir / "genome.fa"
    write_fasta(fasta, codes)
    return build_store(workdir / "attr.zarr", codes, sites, chunk_size, labels), fasta


# --------------------------------------------------------------------------- measuring (child process)


def _trim_heap() -> None:
    """Give freed heap pages back (glibc), so that the baseline RSS holds nothing the run could reuse."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PhaseMeter:
    """Peak RSS (above ``baseline``) and peak traced Python memory of each phase of one run.

    A phase ends when the next one starts (:meth:`mark`); each phase's peaks are its own (both counters
    are reset at every mark)."""

    def __init__(self, baseline: int, traced: bool) -> None:
        self.baseline, self.traced = baseline, traced
        self.current = "scan"
        self.rows: dict[str, dict] = {}

    def mark(self, phase: str | None) -> None:
        row = {
            "peak_rss_delta": status_bytes("VmHWM") - self.baseline,
            "rss_after": status_bytes("VmRSS") - self.baseline,
        }
        if self.traced:
            row["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
        self.rows[self.current] = row
        reset_peak()
        self.current = phase or ""


@contextlib.contextmanager
def _instrumented(meter_ref: list) -> Iterator[None]:
    """Start a new phase where find_motifs clusters, matches and writes (wrappers around the module globals
    it calls, put back on exit)."""
    import screening.interpret.motifs as motifs
    import screening.interpret.motifs.discover as discover

    saved = []

    def wrap(module, name: str, phase: str) -> None:
        fn = getattr(module, name)

        def wrapped(*args, **kwargs):
            if meter_ref[0] is not None:
                meter_ref[0].mark(phase)
            return fn(*args, **kwargs)

        saved.append((module, name, fn))
        setattr(module, name, wrapped)

    wrap(discover, "cluster_seqlets", "cluster")
    wrap(discover, "modisco_motifs", "cluster")
    wrap(motifs, "match_motifs", "match")
    wrap(motifs, "write_outputs", "write")
    try:
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


def _run_once(store: str, fasta: str, outdir: Path, options: dict, meter_ref: list, traced: bool) -> dict:
    from screening.interpret.motifs import motifs_from_store

    _trim_heap()
    baseline = status_bytes("VmRSS")
    if traced:
        tracemalloc.start()
    meter = meter_ref[0] = PhaseMeter(baseline, traced)
    reset = reset_peak()
    began = time.perf_counter()
    result, _ = motifs_from_store(store, outdir, genome=fasta, **options)
    seconds = time.perf_counter() - began
    meter.mark(None)
    meter_ref[0] = None
    if traced:
        tracemalloc.stop()
    phases = meter.rows
    row = {
        "baseline_rss": baseline,
        "peak_reset": reset,
        "seconds": seconds,
        "peak_rss_delta": max(p["peak_rss_delta"] for p in phases.values()),
        "phases": phases,
        "n_positions": result.n_positions,
        "n_called": getattr(result, "n_seqlets_called", getattr(result, "n_called", None)),
        "n_seqlets": len(result.seqlets),
        "n_motifs": len(result.motifs),
        "best_matches": sorted({m.best.name for m in result.motifs if m.best}),
    }
    if traced:
        row["tracemalloc_peak"] = max(p["tracemalloc_peak"] for p in phases.values())
    return row


def child(jobs: list[dict], warm_store: str, warm_fasta: str, traced: bool) -> list[dict]:
    """Warm up on a tiny store, then measure each job (``store``, ``fasta``, ``options``): one run (RSS) and,
    when ``traced``, a second one under tracemalloc."""
    import inspect

    from screening.interpret.motifs import find_motifs

    default_block = inspect.signature(find_motifs).parameters["block_size"].default
    meter_ref: list = [None]
    rows = []
    with _instrumented(meter_ref), tempfile.TemporaryDirectory(prefix="motifs-memory-out-") as out:
        _run_once(warm_store, warm_fasta, Path(out) / "warm", jobs[0]["options"], meter_ref, False)
        for i, job in enumerate(jobs):
            options = job["options"]
            row = _run_once(job["store"], job["fasta"], Path(out) / f"rss{i}", options, meter_ref, False)
            if traced:
                again = _run_once(job["store"], job["fasta"], Path(out) / f"traced{i}", options, meter_ref, True)
                row["tracemalloc_peak"] = again["tracemalloc_peak"]
                row["tracemalloc_phases"] = {k: v["tracemalloc_peak"] for k, v in again["phases"].items()}
                row["seconds_traced"] = again["seconds"]
            row["block_size"] = options.get("block_size", default_block)
            row["default_block_size"] = default_block
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- driver


def fit(xs: list[int], ys: list[int]) -> dict:
    """Least-squares ``y = intercept + slope · x`` (``slope`` None with fewer than two distinct x)."""
    if len(set(xs)) < 2:
        return {"slope": None, "intercept": None}
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return {"slope": float(slope), "intercept": float(intercept)}


def verdict(rows: list[dict], block_size: int) -> dict:
    """Fits over the rows of ``block_size`` and how they compare with docs/motifs.md's formula.

    ``scan_marginal``: the scan phase's growth per position between the two largest sizes (where every run
    has many full blocks); ``bounded``: that growth is no more than the documented 38 bytes per position,
    with 50 % slack; ``doc_formula_holds``: bounded, and every scan peak within 25 % above
    ``90 MB + 73 × block + 38 × positions``. Other block sizes at one length give
    ``block_bytes_per_position`` (the scan peak's change per block position)."""
    same = sorted((r for r in rows if r["block_size"] == block_size), key=lambda r: r["length"])
    xs = [r["length"] for r in same]

    def scan(r: dict) -> int:
        return r["phases"].get("scan", {}).get("peak_rss_delta", 0)

    out: dict = {
        "block_size": block_size,
        "sizes": xs,
        "peak_rss": fit(xs, [r["peak_rss_delta"] for r in same]),
        "scan_rss": fit(xs, [scan(r) for r in same]),
        "doc_scan_bytes": {
            str(x): DOC_BYTES_FIXED + DOC_BYTES_PER_BLOCK_POSITION * min(block_size, x) + DOC_BYTES_PER_POSITION * x
            for x in xs
        },
    }
    if all("tracemalloc_peak" in r for r in same):
        out["tracemalloc"] = fit(xs, [r["tracemalloc_peak"] for r in same])
    if len(same) >= 2:
        out["scan_marginal"] = fit(xs[-2:], [scan(r) for r in same[-2:]])
        out["peak_marginal"] = fit(xs[-2:], [r["peak_rss_delta"] for r in same[-2:]])
        out["bounded"] = bool(out["scan_marginal"]["slope"] <= 1.5 * DOC_BYTES_PER_POSITION)
        out["doc_formula_holds"] = bool(
            out["bounded"] and all(scan(r) <= 1.25 * out["doc_scan_bytes"][str(r["length"])] for r in same)
        )
    for r in rows:  # the same length with another block size
        twin = next((t for t in same if t["length"] == r["length"]), None)
        if r["block_size"] != block_size and twin is not None:
            out.setdefault("block_bytes_per_position", {})[str(r["block_size"])] = (scan(twin) - scan(r)) / (
                block_size - r["block_size"]
            )
    return out


def environment() -> dict:
    import importlib.metadata as md

    versions = {}
    for name in ("numpy", "zarr", "dask", "xarray", "tangermeme", "memelite", "numba", "pyfaidx"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    mem = {}
    for line in Path("/proc/meminfo").read_text().splitlines()[:3]:
        key, value = line.split(":")
        mem[key] = value.strip()
    return {
        "python": platform.python_version(),
        **versions,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "load": os.getloadavg(),
        "meminfo": mem,
    }


def prepare(length: int, block_size: int | None, options: argparse.Namespace, workdir: Path) -> dict:
    """Build the input of one measurement; its job for :func:`child` and the row's description."""
    began = time.perf_counter()
    store, fasta = make_input(workdir, length, options.site_spacing, options.chunk_size, options.reference == "labels")
    run_options: dict = {"logos": not options.no_logos}
    if block_size is not None:
        run_options["block_size"] = block_size
    if options.max_seqlets is not None:
        run_options["max_seqlets"] = options.max_seqlets
    n_sites = len(range(options.site_spacing // 2, length - 19, options.site_spacing))
    return {
        "store": str(store),
        "fasta": str(fasta),
        "options": run_options,
        "row": {
            "length": length,
            "build_s": time.perf_counter() - began,
            "reference": options.reference,
            "chunk_size": options.chunk_size,
            "site_spacing": options.site_spacing,
            "n_sites": n_sites,
        },
    }


def measure(jobs: list[dict], warm: tuple[Path, Path], traced: bool, fresh: bool = True) -> list[dict]:
    """Run :func:`child` on ``jobs`` in a fresh process (``fresh``), else in this one; the rows."""
    if not fresh:
        rows = child([{k: v for k, v in job.items() if k != "row"} for job in jobs], str(warm[0]), str(warm[1]), traced)
        return [{**job["row"], **row} for job, row in zip(jobs, rows)]
    payload = json.dumps(
        {
            "jobs": [{k: v for k, v in job.items() if k != "row"} for job in jobs],
            "warm_store": str(warm[0]),
            "warm_fasta": str(warm[1]),
            "traced": traced,
        }
    )
    done = subprocess.run([sys.executable, __file__, "--child", payload], capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr)
        sizes = ", ".join(f"{job['row']['length']:,}" for job in jobs)
        raise RuntimeError(f"the measuring child failed for {sizes} positions (exit {done.returncode})")
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    return [{**job["row"], **row} for job, row in zip(jobs, rows)]


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1_000_000, 4_000_000, 16_000_000],
        help="chromosome lengths (positions analysed), one child process each",
    )
    parser.add_argument(
        "--block-sizes",
        type=int,
        nargs="+",
        default=None,
        help="block_size of each run (default: find_motifs' default); the first is the fitted "
        "series over --sizes, the others run at the middle size only",
    )
    parser.add_argument("--site-spacing", type=int, default=5_000, help="bases between planted CTCF sites")
    parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE, help="store chunk (work unit) size")
    parser.add_argument(
        "--reference",
        choices=("fasta", "labels"),
        default="fasta",
        help="reference bases from the FASTA (default) or stored ref_base labels",
    )
    parser.add_argument("--max-seqlets", type=int, default=None, help="default: find_motifs' default")
    parser.add_argument("--no-logos", action="store_true", help="skip the logo figures")
    parser.add_argument("--no-tracemalloc", action="store_true", help="skip the second, traced run")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes and blocks (20k-60k positions, 10k blocks) in this process: checks the script",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where inputs are built (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.smoke:
        options.sizes, options.block_sizes = [20_000, 60_000], [10_000]
        options.chunk_size, options.site_spacing, options.no_logos = 4_000, 1_000, True
    return options


def run(options: argparse.Namespace) -> dict:
    """Every measurement of ``options``; the JSON document."""
    blocks = options.block_sizes or [None]
    sizes = sorted(options.sizes)
    plan = [(n, blocks[0]) for n in sizes] + [(sizes[len(sizes) // 2], b) for b in blocks[1:]]
    rows: list[dict] = []
    traced = not options.no_tracemalloc
    with tempfile.TemporaryDirectory(dir=options.workdir, prefix="motifs-memory-") as tmp:
        warm_dir = Path(tmp) / "warm"
        warm_dir.mkdir()
        warm = make_input(warm_dir, 12_000, 1_000, 4_000, options.reference == "labels")
        jobs = []
        for length, block in plan:
            work = Path(tmp) / f"n{length}-b{block}"
            work.mkdir()
            jobs.append(prepare(length, block, options, work))
            if not options.smoke:  # a fresh process (and a fresh input) per size: nothing carried over
                rows += measure(jobs, warm, traced)
                _show(rows[-1])
                subprocess.run(["rm", "-rf", str(work)], check=False)
                jobs = []
        if jobs:  # --smoke: every size in this process (each run's peak is still its own)
            rows += measure(jobs, warm, traced, fresh=False)
            for row in rows:
                _show(row)
    series = rows[0]["block_size"]
    return {
        "benchmark": "motifs_memory",
        "smoke": options.smoke,
        "environment": environment(),
        "rows": rows,
        "fit": verdict(rows, series),
        "note": "memory figures are valid on a shared machine; seconds are not (load in environment)",
    }


def _show(row: dict) -> None:
    print(json.dumps({k: v for k, v in row.items() if k not in ("phases", "tracemalloc_phases")}), flush=True)


def _table(doc: dict) -> str:
    lines = [
        f"{'positions':>12}{'block':>11}{'peak RSS MB':>13}{'scan MB':>9}{'cluster MB':>12}"
        f"{'tracemalloc MB':>16}{'seqlets':>9}{'seconds':>9}"
    ]
    for r in doc["rows"]:
        ph = r["phases"]
        lines.append(
            f"{r['length']:>12,}{r['block_size']:>11,}{r['peak_rss_delta'] / 1e6:>13.1f}"
            f"{ph.get('scan', {}).get('peak_rss_delta', 0) / 1e6:>9.1f}"
            f"{ph.get('cluster', {}).get('peak_rss_delta', 0) / 1e6:>12.1f}"
            f"{r.get('tracemalloc_peak', 0) / 1e6:>16.1f}{r['n_seqlets']:>9}{r['seconds']:>9.1f}"
        )
    f = doc["fit"]
    for key in ("peak_rss", "scan_rss", "tracemalloc", "scan_marginal", "peak_marginal"):
        if key in f and f[key]["slope"] is not None:
            lines.append(f"{key}: {f[key]['slope']:.1f} bytes/position + {f[key]['intercept'] / 1e6:.1f} MB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    if options.child:
        job = json.loads(options.child)
        print(json.dumps(child(job["jobs"], job["warm_store"], job["warm_fasta"], job["traced"])))
        return 0
    doc = run(options)
    print(_table(doc))
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(doc, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
