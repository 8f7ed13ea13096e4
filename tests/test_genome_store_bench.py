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
    assert row["format"] == 3 and 0 < row["driver_peak_mb"] < 1024 and row["report_s"] >= row["top_hits_s"]


def test_the_benchmark_writes_earlier_formats_too(bench, tmp_path, monkeypatch):
    monkeypatch.setitem(bench.HG38, "chrS", 3_000_000)
    row = bench.run(["chrS"], 0.25, tmp_path, fmt=2)
    assert row["format"] == 2 and row["units_written"] == row["units"] // 4 and len(row["top_hits"]) == 5


def test_the_benchmark_keeps_maps(bench, tmp_path, monkeypatch):
    monkeypatch.setitem(bench.HG38, "chrS", 3_000_000)
    row = bench.run(["chrS"], 1.0, tmp_path, keep_maps=2)
    # 57 units: one block, one map shard (2 maps of 256 bins a unit: 512 KiB, 128 fit in 64 MiB)
    assert row["keep_maps"] == 2 and row["map_files_first_chrom"] == {"top_index": 1, "top_delta": 1}
    assert row["top_maps_1mb_maps"] > 0 and row["files_per_1000_units"] < 1000


def test_the_benchmark_exports_and_queries_through_the_service(bench, tmp_path, monkeypatch):
    monkeypatch.setitem(bench.HG38, "chrS", 3_000_000)
    row = bench.run(["chrS"], 1.0, tmp_path, export=True, service=True)
    assert row["export_bases_covered"] == row["perturbations"] * 1_000 and row["export_zoom_levels"] >= 1
    assert row["export_peak_rss_mb"] >= row["export_base_rss_mb"] > 0 and row["export_bytes"] > 0
    assert row["service_opens"] == 1 and row["service_cold_1mb_s"] > 0 and row["service_warm_1mb_s"] > 0


def test_the_benchmark_counts_requests_on_the_moto_server(bench, tmp_path, monkeypatch):
    pytest.importorskip("moto")
    pytest.importorskip("s3fs")
    monkeypatch.setitem(bench.HG38, "chrS", 3_000_000)
    row = bench.run_s3(["chrS"], 0.5, tmp_path)
    assert row["storage"].startswith("moto") and row["units_written"] == row["units"] // 2
    assert row["create_requests"] > 0 and row["requests"]["create"]["put_object"] > 0
    assert 0 < row["query_1kb_requests"] <= row["query_1mb_requests"] and row["top_hits_requests"] > 0
    assert "files" not in row  # nothing on local disk to count
