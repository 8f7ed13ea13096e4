"""Smoke test of benchmarks/genome_store.py on a small chromosome (no timing asserted; see docs/benchmarks.md)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "genome_store.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("genome_store", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hg38_sizes(bench):
    assert len(bench.HG38) == 24 and bench.HG38["chr1"] == 248_956_422 and bench.HG38["chrY"] == 57_227_415


def test_the_benchmark_runs_on_a_small_chromosome(bench, tmp_path, monkeypatch):
    monkeypatch.setitem(bench.HG38, "chrS", 3_000_000)
    row = bench.run(["chrS"], 0.5, tmp_path)
    # 1-kb steps over 3 Mb, minus the deletions whose 2 Mb window leaves the chromosome (skipped)
    assert 890 < row["perturbations"] < 910 and row["units"] == -(-row["perturbations"] // 16)
    assert row["units_written"] == row["units"] // 2
    assert row["query_1kb_rows"] in (1, 2) and row["query_1mb_rows"] > 0 and len(row["top_hits"]) == 5
    assert row["files"] > 0 and row["bytes"] > 0 and row["create_s"] >= 0
