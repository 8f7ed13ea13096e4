"""The result store at genome scale: hg38 chromosome sizes, 1-kb centred deletions, random scores.

Plans come from GRCh38's chromosome lengths (no genome file is read: the planner needs only
sizes), ``deletion`` width 1,000 at step 1,000, ``window: centred``, ``invalid_policy: skip``,
C.Origami's geometry (2,097,152 bp windows, 256 bins) and the default ``chunk_size``. The store
is created through the store's own writer (:func:`screening.store.writer.create_store`, as the
driver does) and random scores for a fraction of the units, spread evenly over the store, are
written as a screen writes them: format 3 (the current format) through
:meth:`ResultStore.unit_record` (a worker's part) and the driver's
:class:`~screening.store.writer.BlockWriter`; earlier formats (``--format 2``) through
:meth:`ResultStore.write_chunk`. Then, each with fresh handles (nothing cached from the writes):

* ``create_s``: planning is timed separately (``plan_s``); this is the store's creation alone;
* ``driver_peak_mb``: tracemalloc's peak over creation and the writes (the driver's share: the plan
  is built before, and its size is ``plan_mb``);
* ``info_s``: what ``screening info`` reads (``Results``, progress, completeness, scores);
* ``resume_check_s`` / ``resume_scan_s``: a resume's layout check and its scan for done units;
* ``query_1kb_s`` / ``query_1mb_s``: a cold query (fresh ``Results``) of 1 kb and 1 Mb in the
  middle of the first chromosome, computed to a table;
* ``top_hits_s``: :func:`screening.report.hits.top_hits` (n=5, per analysis) as after a run;
* ``files`` / ``bytes`` / ``data_bytes``: objects on disk, their apparent size, and the bytes of
  the values a full store holds (``n × (scores × 4 + 3 coordinates × 8)``); ``files_per_1000_units``;
  with ``--done 1`` the store is full, so ``bytes / data_bytes_full`` is the disk overhead.

With ``--export``, the first analysis's score is exported as a bigWig in a fresh Python process:
``export_s``, ``export_peak_rss_mb`` (its peak resident memory), ``export_base_rss_mb`` (the same
process before the export: interpreter, libraries, an open ``Results``), ``export_bytes``.

With ``--service``, the service's HTTP API (``create_api``, in-process through Starlette's test
client, a stand-in for the job-manager actor: no Ray) answers a 1 Mb query (Arrow) in the middle of
the first chromosome: ``service_cold_1mb_s`` (the first, through a fresh handle cache: the store is
opened), ``service_warm_1mb_s`` (median of 5 more), ``service_opens`` (store opens over all 6:
1 when the handle cache holds the store under use); with ``--s3`` also the requests of the cold and
of the last warm query (``service_cold_1mb_requests``, ``service_warm_1mb_requests``).

With ``--s3``, the store is built and read on moto's S3 server on loopback (tests/moto_s3.py; moto
and s3fs must be installed) instead of a local folder, and every step also records the S3 requests
s3fs made (``<step>_requests``, by operation in ``requests``).

With ``--keep-maps K``, the deletions keep K Δ maps per unit (``keep_maps``; 256 bins, constant per map
so that they compress to almost nothing: objects, the writer's work and the reads are what is measured),
written as a screen writes them (the driver's map shards); ``top_maps_1mb_s`` is a cold
``Results.top_maps`` of 1 Mb and ``map_files_first_chrom`` the ``top_index``/``top_delta`` objects of the
first chromosome.

With ``--irregular N`` (instead of the tiled runs), :func:`irregular_queries`: ``N`` variant-like
perturbations (irregular coordinates, stored, not computed) on chr1, cold and warm queries of 1 kb and
1 Mb (with ``--s3``: on moto, requests counted), and the objects of the coordinate arrays.

Usage::

    python benchmarks/genome_store.py --chromosomes 1 --json benchmarks/results/genome_store_chr1.json
    python benchmarks/genome_store.py --chromosomes 5 --done 0.5
    python benchmarks/genome_store.py --chromosomes 1 5 --done 1 --export --service --json benchmarks/results/genome_store_export.json
    python benchmarks/genome_store.py --chromosomes 1 --s3 --json benchmarks/results/genome_store_s3.json
    python benchmarks/genome_store.py --irregular 1000000 --s3
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
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from screening.core.regions import Region  # noqa: E402
from screening.models.base import WindowGeometry  # noqa: E402
from screening.plan import plan_screen  # noqa: E402
from screening.spec import parse_spec  # noqa: E402

# GRCh38 primary assembly (UCSC hg38.chrom.sizes), chr1..22, X, Y.
HG38 = {
    "chr1": 248_956_422,
    "chr2": 242_193_529,
    "chr3": 198_295_559,
    "chr4": 190_214_555,
    "chr5": 181_538_259,
    "chr6": 170_805_979,
    "chr7": 159_345_973,
    "chr8": 145_138_636,
    "chr9": 138_394_717,
    "chr10": 133_797_422,
    "chr11": 135_086_622,
    "chr12": 133_275_309,
    "chr13": 114_364_328,
    "chr14": 107_043_718,
    "chr15": 101_991_189,
    "chr16": 90_338_345,
    "chr17": 83_257_441,
    "chr18": 80_373_285,
    "chr19": 58_617_616,
    "chr20": 64_444_167,
    "chr21": 46_709_983,
    "chr22": 50_818_468,
    "chrX": 156_040_895,
    "chrY": 57_227_415,
}
GEOMETRY = WindowGeometry(window_length=2_097_152, bin_size=8192, n_bins=256)  # C.Origami


def make_spec(store: Path, chroms: list[str], chunk_size: int | None = None, keep_maps: int = 0):
    deletion = {"kind": "deletion", "width": 1000, "step": 1000, **({"keep_maps": keep_maps} if keep_maps else {})}
    raw = {
        "name": "genome-store-bench",
        "model": {"random_seed": 0},
        "genome": {"fasta": "/hg38.fa"},
        "regions": chroms,
        "perturbations": [deletion],
        "invalid_policy": "skip",
        "output": {"store": str(store)},
    }
    if chunk_size:
        raw["execution"] = {"chunk_size": chunk_size}
    return parse_spec(raw)


def make_plan(spec, chroms: list[str]):
    sizes = {c: HG38[c] for c in chroms}
    return plan_screen(spec, [Region(c, 0, HG38[c]) for c in chroms], sizes, GEOMETRY)


def disk_usage(path: Path) -> tuple[int, int, int]:
    """``(files, apparent bytes, allocated bytes)`` under ``path``."""
    files = size = blocks = 0
    for folder, _, names in os.walk(path):
        for name in names:
            st = os.stat(os.path.join(folder, name))
            files += 1
            size += st.st_size
            blocks += st.st_blocks * 512
    return files, size, blocks


def _time(fn):
    began = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - began


def write_units(store, plan, fraction: float, seed: int = 0) -> int:
    """Random scores for an evenly spread ``fraction`` of the units, written as a screen writes them."""
    rng = np.random.default_rng(seed)
    units = plan.units
    chosen = np.flatnonzero(
        np.floor(np.arange(1, len(units) + 1) * fraction) > np.floor(np.arange(len(units)) * fraction)
    )
    blocks = store.block_writer(flush_s=3600.0) if store.format_version >= 3 else None
    for i in chosen:
        unit = units[i]
        layout = plan.layout(unit.chrom, unit.analysis)
        values = {s: rng.standard_normal(unit.size).astype(np.float32) for s in layout.scores}
        top = kept_maps(layout, unit, rng)
        if blocks is None:
            store.write_chunk(unit.chrom, unit.analysis, unit.chunk, values, top)
        else:  # the worker's part, then the driver's (a block is written once its last unit is in)
            blocks.add(store.unit_record(unit.chrom, unit.analysis, unit.chunk, values, top))
    if blocks is not None:
        blocks.flush()
    return len(chosen)


def kept_maps(layout, unit, rng) -> tuple[np.ndarray, np.ndarray] | None:
    """``keep_maps``: the unit's first K perturbations with Δ maps of the model's size, one random value
    each (constant maps compress to almost nothing: the objects and the writer's work are measured,
    not the disk a model's real maps take, K·n_bins²·4 bytes a unit)."""
    keep, n_bins = layout.top_maps
    if not keep:
        return None
    k = min(keep, unit.size)
    maps = np.broadcast_to(rng.standard_normal((k, 1, 1)).astype(np.float32), (k, n_bins, n_bins))
    return np.arange(unit.lo, unit.lo + k), maps


class Requests:
    """S3 requests s3fs makes, by operation (one per HTTP request, retries aside), while active."""

    def __init__(self) -> None:
        from collections import Counter

        self.calls: Counter = Counter()

    def __enter__(self) -> "Requests":
        import s3fs

        self._original = original = s3fs.S3FileSystem._call_s3
        calls = self.calls

        async def counting(fs, method, *args, **kwargs):
            calls[method] += 1
            return await original(fs, method, *args, **kwargs)

        s3fs.S3FileSystem._call_s3 = counting
        return self

    def __exit__(self, *exc) -> None:
        import s3fs

        s3fs.S3FileSystem._call_s3 = self._original


def run(
    chroms: list[str],
    fraction: float,
    workdir: Path,
    chunk_size: int | None = None,
    fmt: int | None = None,
    store_url: str | None = None,
    requests: Requests | None = None,
    export: bool = False,
    service: bool = False,
    keep_maps: int = 0,
) -> dict:
    """One benchmark row (see the module docstring). ``store_url``: build the store there (an
    ``s3://`` URL) instead of ``workdir``; ``requests``: count S3 requests per step."""
    import tracemalloc

    from screening.report.hits import top_hits
    from screening.store import writer as writer_mod
    from screening.store.reader import Results
    from screening.store.writer import ResultStore, create_store

    path = store_url or workdir / "bench.zarr"
    spec = make_spec(path, chroms, chunk_size, keep_maps)
    counts: dict[str, dict] = {}

    def _timed(fn, name: str = ""):  # timed, and the S3 requests of the step counted
        if requests is not None:
            requests.calls.clear()
        value, seconds = _time(fn)
        if requests is not None and name:
            counts[name] = dict(requests.calls)
        return value, seconds

    tracemalloc.start()
    plan, plan_s = _timed(lambda: make_plan(spec, chroms))
    plan_mb = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.reset_peak()
    chosen_format = writer_mod.FORMAT_VERSION
    if fmt is not None:
        writer_mod.FORMAT_VERSION = fmt
    try:
        store, create_s = _timed(
            lambda: create_store(
                path, spec.model_dump(mode="json"), spec.science_hash(), {"benchmark": "genome_store"}, plan.layouts
            ),
            "create",
        )
    finally:
        writer_mod.FORMAT_VERSION = chosen_format
    written, write_s = _timed(lambda: write_units(store, plan, fraction), "write")
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    row: dict = {
        "format": store.format_version,
        "chromosomes": len(chroms),
        "perturbations": plan.n_perturbations,
        "units": len(plan.units),
        "chunk_size": plan.layouts[0].chunk_size,
        "units_written": written,
        "plan_s": plan_s,
        "create_s": create_s,
        "write_s": write_s,
        "write_ms_per_unit": 1000 * write_s / max(1, written),
        "plan_mb": plan_mb,
        "driver_peak_mb": peak,
    }

    def info():
        results = Results(path)
        done, total = results.progress
        return {
            "done": done,
            "total": total,
            "complete": results.is_complete,
            "analyses": {a: results.scores(a) for a in results.analyses},
            "checksummed": results.checksummed,
        }

    summary, row["info_s"] = _timed(info, "info")
    assert summary["done"] == written, summary
    fresh, row["resume_open_s"] = _timed(lambda: ResultStore(path), "resume_open")
    _, row["resume_check_s"] = _timed(lambda: fresh.check_layouts(plan.layouts), "resume_check")
    masks, row["resume_scan_s"] = _timed(
        lambda: {(lay.chrom, lay.analysis): fresh.done_mask(lay.chrom, lay.analysis) for lay in plan.layouts},
        "resume_scan",
    )
    assert sum(int(m.sum()) for m in masks.values()) == written
    middle = HG38[chroms[0]] // 2
    for label, width in (("1kb", 1_000), ("1mb", 1_000_000)):
        region = f"{chroms[0]}:{middle}-{middle + width}"
        frame, row[f"query_{label}_s"] = _timed(lambda: Results(path).to_dataframe(region), f"query_{label}")
        row[f"query_{label}_rows"] = len(frame)
    hits, row["top_hits_s"] = _timed(lambda: top_hits(Results(path), n=5, per_analysis=True), "top_hits")
    row["top_hits"] = hits.to_dict(orient="records")
    row["report_s"] = row["top_hits_s"] + row["info_s"]  # the end-of-run report reads these
    n_scores = len(plan.layouts[0].scores)
    row["data_bytes_full"] = plan.n_perturbations * (n_scores * 4 + 3 * 8)
    if requests is not None:
        row["requests"] = counts
        row.update({f"{name}_requests": sum(calls.values()) for name, calls in counts.items()})
    if keep_maps:
        region = f"{chroms[0]}:{middle}-{middle + 1_000_000}"
        maps, row["top_maps_1mb_s"] = _timed(lambda: Results(path).top_maps(region), "top_maps_1mb")
        row.update(keep_maps=keep_maps, top_maps_1mb_maps=int(maps.sizes["top"]))
    if store_url is None:
        row["files"], row["bytes"], row["allocated_bytes"] = disk_usage(Path(path))
        row["files_per_1000_units"] = 1000 * row["files"] / len(plan.units)
        if keep_maps:
            group = Path(path) / chroms[0] / plan.layouts[0].analysis
            row["map_files_first_chrom"] = {
                name: disk_usage(group / name)[0] - 1 for name in ("top_index", "top_delta")
            }
    if export:
        row.update(export_peak(str(path), workdir / "bench.bw"))
    if service:
        row.update(service_queries(str(path), f"{chroms[0]}:{middle}-{middle + 1_000_000}", requests=requests))
    return row


def export_peak(store: str, out: Path, module: str = "screening.store.export") -> dict:
    """Export the first analysis's first score as a bigWig in a fresh Python process; its time and
    peak resident memory, and its resident memory just before (libraries loaded, store open)."""
    import subprocess

    # Peak RSS from /proc (VmHWM, reset just before the export): getrusage's ru_maxrss survives exec,
    # so a child started from this (large) process would report this process's peak.
    code = f"""
import json, sys, time, importlib
sys.path.insert(0, {str(ROOT)!r})
from benchmarks.procmem import reset_peak, status_bytes
from screening.store.reader import open_results
export = importlib.import_module({module!r})

results = open_results({store!r})
analysis = results.analyses[0]
score = results.scores(analysis)[0]
base = status_bytes("VmRSS") / 2**20
reset_peak()
began = time.perf_counter()
export.to_bigwig(results, {str(out)!r}, score, analysis)
print(json.dumps({{"export_s": time.perf_counter() - began, "export_peak_rss_mb": status_bytes("VmHWM") / 2**20,
                  "export_base_rss_mb": base}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ.copy()
    )
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["export_bytes"] = out.stat().st_size
    import pyBigWig

    with pyBigWig.open(str(out)) as bw:
        row["export_zoom_levels"] = bw.header()["nLevels"]
        row["export_bases_covered"] = bw.header()["nBasesCovered"]
    out.unlink()
    return row


def service_queries(store: str, region: str, warm_runs: int = 5, requests: Requests | None = None) -> dict:
    """A cold, then ``warm_runs`` warm queries of ``region`` (Arrow) through the service's HTTP API,
    in-process (Starlette's test client), and how often the store was opened meanwhile; with
    ``requests``, the S3 requests of the cold query and of the last warm one."""
    import statistics
    import warnings

    from screening.service.api import create_api
    from screening.service.auth import TokenStore
    from screening.service.config import ServiceConfig
    from screening.store import reader as reader_mod

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import FakeRemote

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    job, token = "0" * 32, "bench-token"

    class Manager:  # the job-manager actor's two calls a query makes
        store_of = FakeRemote(lambda job_id: store if job_id == job else None)
        ping = FakeRemote(lambda: "pong")

    opens = []
    real_open = reader_mod.open_results

    def counting_open(*args, **kwargs):
        opens.append(args[0] if args else kwargs)
        return real_open(*args, **kwargs)

    root = store if "://" in store else str(Path(store).parent)
    config = ServiceConfig.from_args({"store_roots": [root]}, environ={"SCREENING_API_TOKENS": token})
    reader_mod.open_results = counting_open  # create_api imports it when building the app
    try:
        app = create_api(config, Manager(), TokenStore((), None, env_tokens=token))
        with TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}) as client:
            calls: list[dict] = []

            def query() -> float:
                if requests is not None:
                    requests.calls.clear()
                began = time.perf_counter()
                answer = client.get(f"/screens/{job}/results", params={"region": region, "format": "arrow"})
                seconds = time.perf_counter() - began
                answer.raise_for_status()
                if requests is not None:
                    calls.append(dict(requests.calls))
                return seconds

            cold = query()
            warm = [query() for _ in range(warm_runs)]
    finally:
        reader_mod.open_results = real_open
    row = {"service_cold_1mb_s": cold, "service_warm_1mb_s": statistics.median(warm), "service_opens": len(opens)}
    if calls:
        row["requests_service"] = {"cold": calls[0], "warm": calls[-1]}
        row["service_cold_1mb_requests"] = sum(calls[0].values())
        row["service_warm_1mb_requests"] = sum(calls[-1].values())
    return row


def irregular_queries(n: int, workdir: Path, store_url: str | None = None, requests: Requests | None = None) -> dict:
    """Irregular coordinates (variant-like) on chr1: ``n`` perturbations at sorted random positions, 90 %
    1 bp wide, the rest 2-49 bp, labels ``id``/``ref``/``alt``/``variant_kind``, ``chunk_size`` 16,
    every other unit written. Times a cold query (fresh ``Results``, after one query of another
    region in the same process, so first-use costs are not counted) of 1 kb and 1 Mb in the middle,
    then a warm one elsewhere, the S3 requests of the cold ones, and the coordinate objects."""
    from screening.store.reader import Results
    from screening.store.writer import GroupLayout, create_store

    length = HG38["chr1"]
    rng = np.random.default_rng(0)
    start = np.sort(rng.integers(1_100_000, length - 1_100_000, n))
    end = start + np.where(rng.random(n) < 0.9, 1, rng.integers(2, 50, n))
    labels = {
        "id": np.char.add("rs", start.astype(str)),
        "ref": np.full(n, "A"),
        "alt": np.full(n, "G"),
        "variant_kind": np.full(n, "snv"),
    }
    layout = GroupLayout(
        chrom="chr1",
        chrom_length=length,
        analysis="var",
        kind="variants",
        params={},
        start=start,
        end=end,
        window_start=start - 1_048_576,
        scores=["insulation", "dist"],
        chunk_size=16,
        labels=labels,
    )
    path = store_url or workdir / "irregular.zarr"
    store, create_s = _time(lambda: create_store(path, {"name": "irregular"}, "e" * 64, {}, [layout]))
    blocks = store.block_writer(flush_s=3600.0)
    for k in range(0, layout.n_chunks, 2):
        rows = layout.chunk_slice(k)
        values = {s: rng.standard_normal(rows.stop - rows.start).astype(np.float32) for s in layout.scores}
        blocks.add(store.unit_record("chr1", "var", k, values))
    blocks.flush()
    row: dict = {"irregular": n, "irregular_units": layout.n_chunks, "irregular_create_s": create_s}
    Results(path).to_dataframe("chr1:1,200,000-1,201,000")  # first-use costs (imports, dask), not the store's
    middle = length // 2
    for label, width in (("1kb", 1_000), ("1mb", 1_000_000)):
        if requests is not None:
            requests.calls.clear()
        results = Results(path)
        frame, row[f"irregular_cold_{label}_s"] = _time(lambda: results.to_dataframe(f"chr1:{middle}-{middle + width}"))
        row[f"irregular_{label}_rows"] = len(frame)
        if requests is not None:
            row[f"irregular_cold_{label}_requests"] = dict(requests.calls)
        elsewhere = f"chr1:{middle + 5_000_000}-{middle + 5_000_000 + width}"
        _, row[f"irregular_warm_{label}_s"] = _time(lambda: results.to_dataframe(elsewhere))
    if store_url is None:
        group = Path(path) / "chr1" / "var"
        row["irregular_coordinate_objects"] = {
            name: sum(1 for f in (group / name / "c").rglob("*") if f.is_file()) for name in ("start", "end", "id")
        }
    return row


def run_s3(
    chroms: list[str],
    fraction: float,
    workdir: Path,
    chunk_size: int | None = None,
    fmt: int | None = None,
    **extra: Any,
) -> dict:
    """:func:`run` on moto's S3 server (loopback), counting requests."""
    sys.path.insert(0, str(ROOT / "tests"))
    from moto_s3 import s3_server

    with s3_server(buckets=("bench",)), Requests() as requests:
        row = run(
            chroms, fraction, workdir, chunk_size, fmt, store_url="s3://bench/bench.zarr", requests=requests, **extra
        )
    row["storage"] = "moto S3 server (loopback)"
    return row


def environment() -> dict:
    import numcodecs
    import zarr

    versions = {}
    for name in ("pyBigWig", "fastapi", "s3fs", "moto"):
        try:
            versions[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            pass
    return {
        **versions,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "numcodecs": numcodecs.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load": os.getloadavg(),
    }


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--chromosomes",
        type=int,
        nargs="+",
        default=[1],
        help="how many hg38 chromosomes (chr1..), one run per value (e.g. 1 5 24)",
    )
    parser.add_argument("--done", type=float, default=0.5, help="fraction of units written (default 0.5)")
    parser.add_argument("--chunk-size", type=int, default=None, help="default: the spec's default")
    parser.add_argument("--workdir", type=Path, default=None, help="where stores are built (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument("--format", type=int, default=None, help="store format to write (default: the current)")
    parser.add_argument("--export", action="store_true", help="also export a bigWig: time and peak memory")
    parser.add_argument("--service", action="store_true", help="also query 1 Mb through the service's HTTP API")
    parser.add_argument("--s3", action="store_true", help="build the store on moto's S3 server; count requests")
    parser.add_argument(
        "--keep-maps", type=int, default=0, metavar="K", help="keep_maps: K Δ maps (256 bins) per unit, written too"
    )
    parser.add_argument(
        "--irregular",
        type=int,
        default=0,
        metavar="N",
        help="instead: N variant-like (irregular) perturbations on chr1, cold and warm queries",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    rows = []
    for count in [] if options.irregular else options.chromosomes:
        chroms = list(HG38)[:count]
        with tempfile.TemporaryDirectory(dir=options.workdir, prefix="genome-store-") as tmp:
            extra = {"export": options.export, "service": options.service, "keep_maps": options.keep_maps}
            if options.s3:
                row = run_s3(chroms, options.done, Path(tmp), options.chunk_size, options.format, **extra)
            else:
                row = run(chroms, options.done, Path(tmp), options.chunk_size, options.format, **extra)
        rows.append(row)
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "top_hits"}
        print(json.dumps(shown), flush=True)
    if options.irregular:
        with tempfile.TemporaryDirectory(dir=options.workdir, prefix="genome-store-") as tmp:
            if options.s3:
                sys.path.insert(0, str(ROOT / "tests"))
                from moto_s3 import s3_server

                with s3_server(buckets=("bench",)), Requests() as requests:
                    row = irregular_queries(options.irregular, Path(tmp), "s3://bench/irregular.zarr", requests)
                row["storage"] = "moto S3 server (loopback)"
            else:
                row = irregular_queries(options.irregular, Path(tmp))
        rows.append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps({"environment": environment(), "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
