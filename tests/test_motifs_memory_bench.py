"""Smoke test of benchmarks/motifs_memory.py: tiny planted stores, every field of the JSON result (no memory or
timing asserted beyond sanity; the full-size run is recorded in benchmarks/results/motifs_memory.json)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "motifs_memory.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("motifs_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_planted_input_is_a_readable_attribution_store(bench, tmp_path):
    from screening.store.reader import open_results

    store, fasta = bench.make_input(tmp_path, 9_000, 1_000, 4_000, labels=False)
    results = open_results(store)
    assert results.chromosomes == {"chr1": 9_000} and results.scores("saliency") == ["attribution_corrected"]
    ds = results.query("chr1:0-9000")
    values = np.asarray(ds["attribution_corrected"].values)
    assert values.shape == (9_000, 4) and np.isfinite(values).all()
    # the planted bases carry the signal: the first site (at 500) stands far above the noise
    assert np.abs(values[500:519]).max() > 20 * np.abs(values[:400]).std()
    assert fasta.read_text().startswith(">chr1\n") and len("".join(fasta.read_text().split("\n")[1:])) == 9_000


def test_fit_recovers_a_line(bench):
    line = bench.fit([1, 2, 4], [13, 23, 43])
    assert line["slope"] == pytest.approx(10) and line["intercept"] == pytest.approx(3)
    assert bench.fit([5, 5], [1, 2]) == {"slope": None, "intercept": None}


def test_smoke_run_writes_every_field(bench, tmp_path):
    out = tmp_path / "smoke.json"
    assert bench.main(["--smoke", "--json", str(out), "--workdir", str(tmp_path)]) == 0
    doc = json.loads(out.read_text())
    assert doc["smoke"] is True and doc["environment"]["numpy"] == np.__version__
    assert [r["length"] for r in doc["rows"]] == [20_000, 60_000]
    for row in doc["rows"]:
        assert row["peak_reset"] is True and row["block_size"] == 10_000
        assert row["default_block_size"] == bench.DEFAULT_BLOCK
        assert 0 < row["peak_rss_delta"] < 2e9 and 0 < row["tracemalloc_peak"] < 2e9 and row["seconds"] > 0
        assert set(row["phases"]) == set(bench.PHASES)
        assert row["peak_rss_delta"] == max(p["peak_rss_delta"] for p in row["phases"].values())
        assert row["n_positions"] >= row["length"] and row["n_seqlets"] >= row["n_sites"] // 2
        assert "CTCF" in row["best_matches"]
    fit = doc["fit"]
    assert fit["block_size"] == 10_000 and fit["sizes"] == [20_000, 60_000]
    for key in ("peak_rss", "scan_rss", "tracemalloc", "scan_marginal", "peak_marginal"):
        assert isinstance(fit[key]["slope"], float) and isinstance(fit[key]["intercept"], float)
    assert isinstance(fit["bounded"], bool) and isinstance(fit["doc_formula_holds"], bool)
    assert fit["doc_scan_bytes"]["20000"] == 90_000_000 + 73 * 10_000 + 38 * 20_000
