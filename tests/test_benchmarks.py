"""Smoke test of benchmarks/throughput.py on a toy model: every case runs and reports sane numbers.

No timing is asserted (the machine is shared); the full-size run is recorded in docs/benchmarks.md.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import TOY_CONFIG

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def options(bench):
    return bench._parse(
        [
            "--threads",
            "1",
            "--n-perturbations",
            "4",
            "--naive-perturbations",
            "2",
            "--deletion-width",
            "8",
            "--forward-batches",
            "2",
            "--bracket-forwards",
            "1",
            "--batch-size",
            "3",
            "--ig-steps",
            "2",
            "--matmul-size",
            "64",
            "--model-config",
            json.dumps(TOY_CONFIG),
        ]
    )


@pytest.fixture(autouse=True)
def untuned_allocator(monkeypatch):
    """Keep the test process's malloc settings: the tuning is process-wide (tested in test_tuning)."""
    monkeypatch.setattr("screening.prepare.tune_cpu_allocator", lambda: False)


def test_every_case_runs_and_summarises(bench, options, one_thread):
    rows = {case: bench.run_case(case, options) for case in bench.CASES}
    assert rows["peak"]["peak_flops"] > 0 and rows["peak"]["dtype"] == "float32"
    assert rows["forward"]["forwards"] == 6
    deletion = rows["deletion"]
    assert deletion["perturbations"] == 4 and deletion["units"] == 2
    assert deletion["forwards"] == 4 + 2  # window: shared, one reference per unit
    assert deletion["peak_rss"] >= deletion["peak_rss_first_half"] > 0
    assert rows["mutagenesis"]["perturbations"] == 6 and rows["mutagenesis"]["forwards"] == 7
    assert rows["naive"]["forwards"] == 4
    assert rows["ig"]["windows"] == 1 and rows["ig"]["positions"] == 256 and rows["ig"]["flops"] > 0
    flops = bench.forward_flops(bench._config(options))
    assert deletion["flops"] == 6 * flops
    summary = bench.summarise(rows, "cpu")
    assert 0 < rows["deletion"]["fraction_of_peak"]
    assert summary["speedup_vs_naive"] > 0 and summary["end_to_end_vs_forward"] > 0
    assert deletion["bracket_forwards"] == 2 * 3 and summary["end_to_end_vs_forward_same_process"] > 0
    assert set(summary["targets"]) == {
        "speedup >= 2.5x naive",
        "end-to-end >= 85% of bare forward",
        "peak memory <= 2 GB",
        "peak flat from N to 2N (< 2% growth)",
    }


def test_naive_baseline_matches_the_engine(bench, options, toy_paths, one_thread):
    """The naive loop computes C.Origami's score: the same numbers as the engine's centred windows."""
    from screening.compute.engine import run_deletions
    from screening.io.genome import Genome
    from screening.io.tracks import Track, TrackSet
    from screening.models.corigami import CorigamiAdapter, CorigamiConfig

    adapter = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)
    sequence = "".join(line for line in toy_paths["fasta"].read_text().splitlines()[1:] if not line.startswith(">"))
    starts = [2_000, 2_040]
    naive, ref_maps, _ = bench.naive_deletion_screen(adapter.module, sequence[:6_000], toy_paths, starts, 20, 512)
    assert ref_maps.dtype == np.float64 and ref_maps.shape == (2, 16, 16)
    tracks = TrackSet([Track(toy_paths["ctcf"], "ctcf"), Track(toy_paths["atac"], "atac", "log1p")])
    engine = run_deletions(
        adapter,
        Genome(toy_paths["fasta"]),
        tracks,
        "chr1",
        np.array(starts),
        20,
        "zero",
        ("impact_mean_abs",),
        batch_size=1,
    )
    np.testing.assert_allclose(naive, engine["impact_mean_abs"], rtol=1e-4)


def test_flop_count_of_the_released_model(bench):
    # 953 GFLOP with the decoder's first 2-D convolution as written; its exact factorisation into 1-D convolutions
    # (the default, screening.models.corigami.pairwise_conv2d) saves 154 GFLOP of them
    assert bench.forward_flops() == pytest.approx(799e9, rel=0.01)


def test_unknown_kind_is_refused(bench, capsys):
    assert bench.main(["--kinds", "deletion,bogus"]) == 2
    assert "--kinds: unknown ['bogus']" in capsys.readouterr().err


@pytest.fixture
def pipeline(monkeypatch):
    """benchmarks/pipeline.py at the toy geometry, on a short chromosome."""
    from screening.models.corigami import CorigamiConfig

    spec = importlib.util.spec_from_file_location("pipeline", SCRIPT.with_name("pipeline.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "GEOMETRY", CorigamiConfig(**TOY_CONFIG))
    monkeypatch.setattr(module, "CHROM_LENGTH", 20_000)
    return module


def test_pipeline_benchmark_runs_both_input_paths(tmp_path, pipeline, one_thread):
    """benchmarks/pipeline.py on the toy geometry: every case, both paths, a JSON record."""
    out = tmp_path / "pipeline.json"
    assert pipeline.main(["--n", "6", "--batch-sizes", "1,4", "--no-tune-allocator", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["case"], r["batch_size"], r["path"]) for r in rows} == {
        (case, batch, path)
        for case in ("deletion-shared", "deletion-centred", "mutagenesis")
        for batch in (1, 4)
        for path in ("host", "device")
    }
    assert all(r["items_per_s"] > 0 for r in rows)
    assert {r["items"] for r in rows if r["case"] == "mutagenesis"} == {6}  # 2 positions × 3 alternatives
    assert all(r["max_abs_diff_between_paths"] == 0 for r in rows)  # the null model's maps: the same inputs


def test_pipeline_benchmark_real_model_paths_agree(tmp_path, pipeline, one_thread):
    """``--model corigami``: the real C.Origami (toy size here) on both input paths gives the same scores."""
    out = tmp_path / "corigami.json"
    argv = [
        "--model",
        "corigami",
        "--n",
        "4",
        "--batch-sizes",
        "2",
        "--cases",
        "deletion-shared,mutagenesis",
        "--repeats",
        "1",
        "--warm-items",
        "0",
        "--no-tune-allocator",
        "--json",
        str(out),
    ]
    assert pipeline.main(argv) == 0
    record = json.loads(out.read_text())
    assert record["summary"]["model"] == "corigami"
    rows = record["rows"]
    assert {(r["case"], r["path"]) for r in rows} == {
        (case, path) for case in ("deletion-shared", "mutagenesis") for path in ("host", "device")
    }
    assert all(0 <= r["max_abs_diff_between_paths"] <= 1e-6 for r in rows)
    assert all(r["seconds"] > 0 and r["cpu_seconds"] > 0 for r in rows)


def test_pipeline_busy_span_and_rates(pipeline):
    """The end-to-end rate is over the worker's busy span: first unit's start to last unit's end."""
    reports = [  # two units of 2 and 4 positions (given out of order), 0.1 s apart; CPU seconds as each ends
        {"n": 2, "compute_s": 1.0, "write_s": 0.5, "started": 12.1, "finished": 13.6, "cpu_s_at_end": 4.0},
        {"n": 4, "compute_s": 1.5, "write_s": 0.5, "started": 10.0, "finished": 12.0, "cpu_s_at_end": 3.0},
    ]
    busy = pipeline._busy(reports, 3)
    assert busy["items"] == 18 and busy["units"] == 2
    assert busy["span_s"] == pytest.approx(3.6) and busy["items_per_s"] == pytest.approx(18 / 3.6)
    assert busy["between_units_s"] == pytest.approx(0.1)
    assert busy["first_unit_s"] == pytest.approx(2.0)
    # after the first unit: its 6 items over the 1.6 s from the first unit's end, and over the 1 CPU second it took
    assert busy["steady_items_per_s"] == pytest.approx(6 / 1.6) and busy["items_per_cpu_s"] == pytest.approx(6.0)
    assert busy["cpu_per_s"] == pytest.approx(1 / 1.6)


def test_pipeline_end_to_end_through_the_driver(tmp_path, pipeline, ray_session):
    """``--end-to-end``: the null model's screens through the Ray driver and in a fresh process, both measured
    over the workers' own unit timestamps."""
    out = tmp_path / "e2e.json"
    argv = [
        "--end-to-end",
        "--n",
        "24",
        "--batch-sizes",
        "4",
        "--chunk-size",
        "8",
        "--repeats",
        "1",
        "--no-overlap",
        "--json",
        str(out),
    ]
    assert pipeline.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["case"], r["path"]) for r in rows} == {
        (case, path) for case in ("deletion-shared", "mutagenesis") for path in ("in-process", "ray")
    }
    for row in rows:
        (run,) = row["runs"]
        assert run["items"] == (24 if row["case"] == "deletion-shared" else 3 * 8)
        assert run["units"] == 3 if row["case"] == "deletion-shared" else 1
        # one worker computes its units one after another: the span holds every unit's own time
        assert run["between_units_s"] >= -1e-3 and run["span_s"] > 0 and row["items_per_s"] > 0
    by_path = {(r["case"], r["path"]): r for r in rows}
    for case in ("deletion-shared", "mutagenesis"):
        ray, local = by_path[(case, "ray")], by_path[(case, "in-process")]
        assert ray["ray_vs_in_process_median"] == pytest.approx(ray["items_per_s"] / local["items_per_s"])
