"""The result store at genome scale: hg38 chromosome sizes, 1-kb centred deletions, random scores.

Plans come from GRCh38's chromosome lengths (no genome file is read: the planner needs only
sizes), ``deletion`` width 1,000 at step 1,000, ``window: centred``, ``invalid_policy: skip``,
C.Origami's geometry (2,097,152 bp windows, 256 bins) and the default ``chunk_size``. The store
is created through the store's own writer (:func:`screening.store.writer.create_store`, as the
driver does) and random scores are written through :meth:`ResultStore.write_chunk` (as a worker
does) for a fraction of the units, spread evenly over the store. Then, each with fresh handles
(nothing cached from the writes):

* ``create_s``: planning is timed separately (``plan_s``); this is the store's creation alone;
* ``info_s``: what ``screening info`` reads (``Results``, progress, completeness, scores);
* ``resume_check_s`` / ``resume_scan_s``: a resume's layout check and its scan for done units;
* ``query_1kb_s`` / ``query_1mb_s``: a cold query (fresh ``Results``) of 1 kb and 1 Mb in the
  middle of the first chromosome, computed to a table;
* ``top_hits_s``: :func:`screening.report.hits.top_hits` (n=5, per analysis) as after a run;
* ``files`` / ``bytes`` / ``data_bytes``: objects on disk, their apparent size, and the bytes of
  the values a full store holds (``n × (scores × 4 + 3 coordinates × 8)``).

Usage::

    python benchmarks/genome_store.py --chromosomes 1 --json benchmarks/results/genome_store_chr1.json
    python benchmarks/genome_store.py --chromosomes 5 --done 0.5
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from screening.core.regions import Region  # noqa: E402
from screening.models.base import WindowGeometry  # noqa: E402
from screening.plan import plan_screen  # noqa: E402
from screening.spec import parse_spec  # noqa: E402

# GRCh38 primary assembly (UCSC hg38.chrom.sizes), chr1..22, X, Y.
HG38 = {
    "chr1": 248_956_422, "chr2": 242_193_529, "chr3": 198_295_559, "chr4": 190_214_555, "chr5": 181_538_259,
    "chr6": 170_805_979, "chr7": 159_345_973, "chr8": 145_138_636, "chr9": 138_394_717, "chr10": 133_797_422,
    "chr11": 135_086_622, "chr12": 133_275_309, "chr13": 114_364_328, "chr14": 107_043_718, "chr15": 101_991_189,
    "chr16": 90_338_345, "chr17": 83_257_441, "chr18": 80_373_285, "chr19": 58_617_616, "chr20": 64_444_167,
    "chr21": 46_709_983, "chr22": 50_818_468, "chrX": 156_040_895, "chrY": 57_227_415,
}
GEOMETRY = WindowGeometry(window_length=2_097_152, bin_size=8192, n_bins=256)  # C.Origami


def make_spec(store: Path, chroms: list[str], chunk_size: int | None = None):
    raw = {
        "name": "genome-store-bench",
        "model": {"random_seed": 0},
        "genome": {"fasta": "/hg38.fa"},
        "regions": chroms,
        "perturbations": [{"kind": "deletion", "width": 1000, "step": 1000}],
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


def _timed(fn):
    began = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - began


def write_units(store, plan, fraction: float, seed: int = 0) -> int:
    """Random scores for an evenly spread ``fraction`` of the units, written as a worker writes them."""
    rng = np.random.default_rng(seed)
    units = plan.units
    chosen = np.flatnonzero(np.floor(np.arange(1, len(units) + 1) * fraction) > np.floor(np.arange(len(units)) * fraction))
    for i in chosen:
        unit = units[i]
        layout = plan.layout(unit.chrom, unit.analysis)
        values = {s: rng.standard_normal(unit.size).astype(np.float32) for s in layout.scores}
        store.write_chunk(unit.chrom, unit.analysis, unit.chunk, values)
    return len(chosen)


def run(chroms: list[str], fraction: float, workdir: Path, chunk_size: int | None = None) -> dict:
    from screening.report.hits import top_hits
    from screening.store.reader import Results
    from screening.store.writer import ResultStore, create_store

    path = workdir / "bench.zarr"
    spec = make_spec(path, chroms, chunk_size)
    plan, plan_s = _timed(lambda: make_plan(spec, chroms))
    store, create_s = _timed(lambda: create_store(path, spec.model_dump(mode="json"), spec.science_hash(),
                                                  {"benchmark": "genome_store"}, plan.layouts))
    written, write_s = _timed(lambda: write_units(store, plan, fraction))
    row: dict = {
        "chromosomes": len(chroms), "perturbations": plan.n_perturbations, "units": len(plan.units),
        "chunk_size": plan.layouts[0].chunk_size, "units_written": written,
        "plan_s": plan_s, "create_s": create_s, "write_s": write_s,
        "write_ms_per_unit": 1000 * write_s / max(1, written),
    }

    def info():
        results = Results(path)
        done, total = results.progress
        return {"done": done, "total": total, "complete": results.is_complete,
                "analyses": {a: results.scores(a) for a in results.analyses}, "checksummed": results.checksummed}

    summary, row["info_s"] = _timed(info)
    assert summary["done"] == written, summary
    fresh = ResultStore(path)
    _, row["resume_check_s"] = _timed(lambda: fresh.check_layouts(plan.layouts))
    masks, row["resume_scan_s"] = _timed(lambda: {(lay.chrom, lay.analysis): fresh.done_mask(lay.chrom, lay.analysis)
                                                  for lay in plan.layouts})
    assert sum(int(m.sum()) for m in masks.values()) == written
    middle = HG38[chroms[0]] // 2
    for label, width in (("1kb", 1_000), ("1mb", 1_000_000)):
        region = f"{chroms[0]}:{middle}-{middle + width}"
        frame, row[f"query_{label}_s"] = _timed(lambda: Results(path).to_dataframe(region))
        row[f"query_{label}_rows"] = len(frame)
    hits, row["top_hits_s"] = _timed(lambda: top_hits(Results(path), n=5, per_analysis=True))
    row["top_hits"] = hits.to_dict(orient="records")
    row["files"], row["bytes"], row["allocated_bytes"] = disk_usage(path)
    n_scores = len(plan.layouts[0].scores)
    row["data_bytes_full"] = plan.n_perturbations * (n_scores * 4 + 3 * 8)
    return row


def environment() -> dict:
    import numcodecs
    import zarr

    return {"python": platform.python_version(), "numpy": np.__version__, "zarr": zarr.__version__,
            "numcodecs": numcodecs.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
            "load": os.getloadavg()}


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chromosomes", type=int, nargs="+", default=[1],
                        help="how many hg38 chromosomes (chr1..), one run per value (e.g. 1 5 24)")
    parser.add_argument("--done", type=float, default=0.5, help="fraction of units written (default 0.5)")
    parser.add_argument("--chunk-size", type=int, default=None, help="default: the spec's default")
    parser.add_argument("--workdir", type=Path, default=None, help="where stores are built (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    rows = []
    for count in options.chromosomes:
        chroms = list(HG38)[:count]
        with tempfile.TemporaryDirectory(dir=options.workdir, prefix="genome-store-") as tmp:
            row = run(chroms, options.done, Path(tmp), options.chunk_size)
        rows.append(row)
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "top_hits"}
        print(json.dumps(shown), flush=True)
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps({"environment": environment(), "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
