"""The method benchmark (screening.demo.benchmark): metrics, the randomisation check, config errors, a toy run."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import tiny_corigami_config

from screening.cli import main
from screening.demo.benchmark import (
    BenchmarkError,
    MotifsEntry,
    benchmark_methods,
    consistency,
    discrimination,
    parse_benchmark_config,
    randomisation_check,
    randomised_checkpoints,
    rank_correlation,
)
from screening.demo.benchmark.run import matching_motifs, seqlet_scores
from screening.interpret.motifs import JasparMatch, Motif, Seqlet
from screening.models.corigami import ConvTransModel, CorigamiAdapter, save_corigami_checkpoint

TINY = tiny_corigami_config()

TOY_GENOME = {
    "seed": 3,
    "chromosomes": [["chrA", 150_000]],
    "sites_per_mb": 100,
    "decoy_peaks_per_mb": 30,
    "motif_only_per_mb": 30,
    "min_spacing": 1500,
    "weak_fraction": 0.3,
    "redundant_fraction": 0.3,
    "orientation_rule": True,
    "gc_stretches_per_mb": 20,
    "contact": {"min_pair_weight": 0.02},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench-model") / "model.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_corigami_checkpoint(path, ConvTransModel(TINY))
    return path


def test_discrimination_per_stratum():
    # a method that finds standard sites, misses weak ones and is fooled by decoy peaks
    strata = np.array(["standard"] * 4 + ["weak"] * 4 + ["decoy_peak"] * 4 + ["background"] * 8, dtype=object)
    labels = np.isin(strata, ["standard", "weak"])
    scores = np.r_[[0.9] * 4, [0.1] * 4, [0.95] * 4, [0.1] * 8]
    rows = {r["stratum"]: r for r in discrimination(scores, labels, strata)}
    assert rows["standard"]["auroc"] == pytest.approx(8 / 12 + 0.0)  # above background, below decoys
    assert rows["weak"]["auroc"] == pytest.approx(8 * 0.5 / 12)  # ties with background, below decoys
    assert rows["decoy_peak"]["auroc"] == 0.0  # every decoy above every functional site
    assert np.isnan(rows["redundant"]["auroc"]) and rows["redundant"]["n_positive"] == 0
    assert rows["all"]["n"] == 20 and rows["all"]["n_positive"] == 8


def test_rank_correlation_and_consistency():
    a = np.arange(10.0)
    assert rank_correlation(a, a**3) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert np.isnan(rank_correlation(a, np.ones(10)))
    assert consistency({"x": a, "y": a * 2, "z": a + 1}) == pytest.approx(1.0)
    assert np.isnan(consistency({"x": a}))


def _gradient_map(checkpoint: Path, codes: np.ndarray, tracks: np.ndarray) -> np.ndarray:
    """A model-dependent "method": |d sum(map) / d input| at each base's reference channel."""
    adapter = CorigamiAdapter.from_checkpoint(checkpoint)
    x = adapter.build_input(codes[None], tracks[None]).detach().requires_grad_(True)
    adapter.forward(x).sum().backward()
    return x.grad.abs().sum(dim=1)[0].numpy()


def _gc_map(checkpoint: Path, codes: np.ndarray, tracks: np.ndarray) -> np.ndarray:
    """A deliberately model-independent "method": local GC content, whatever the model."""
    gc = np.isin(codes, (1, 2)).astype(float)
    return np.convolve(gc, np.ones(9) / 9, mode="same")


def test_randomisation_check_flags_a_model_independent_method(checkpoint, tmp_path):
    levels = ["decoder", "attn", "encoder"]
    randomised = randomised_checkpoints(checkpoint, levels, seed=0, outdir=tmp_path)
    assert list(randomised) == levels and all(p.is_file() for p in randomised.values())
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, TINY.window_length).astype(np.uint8)
    tracks = rng.gamma(2.0, 0.5, (2, TINY.window_length)).astype(np.float32)
    for method, expect_flag in ((_gc_map, True), (_gradient_map, False)):
        original = method(checkpoint, codes, tracks)
        maps = {level: method(path, codes, tracks) for level, path in randomised.items()}
        check = randomisation_check(original, maps, threshold=0.5)
        assert check["flagged"] is expect_flag, (method.__name__, check)
    # a constant map has no ranking to lose: flagged as well
    assert randomisation_check(np.ones(50), {"encoder": np.ones(50)})["flagged"]
    # a map that becomes constant lost its whole ranking (a motif pipeline finding nothing): similarity 0
    lost = randomisation_check(np.arange(50.0), {"encoder": np.zeros(50)})
    assert lost["similarity_final"] == 0.0 and not lost["flagged"]


def _seqlet(chrom, start, end, attribution, motif_start=None, motif_end=None):
    zeros = np.zeros((end - start, 4))
    return Seqlet(chrom, start, end, attribution, 1e-3, zeros, zeros, motif_start=motif_start, motif_end=motif_end)


def test_motif_pipeline_scores_only_matching_motifs():
    table = pd.DataFrame({"chrom": ["c1"] * 10 + ["c2"] * 5, "pos": np.r_[100:110, 50:55]})
    ctcf = Motif(
        "motif_1",
        np.zeros((4, 5)),
        np.zeros((4, 5)),
        np.zeros((4, 5)),
        seqlets=[_seqlet("c1", 101, 104, 2.0), _seqlet("c1", 103, 106, 3.0, 102, 107)],
        matches=[JasparMatch("MA0139.2", "CTCF", 1e-6, 1e-4, "+", 0)],
    )
    weak = Motif(
        "motif_2",
        np.zeros((4, 5)),
        np.zeros((4, 5)),
        np.zeros((4, 5)),
        seqlets=[_seqlet("c2", 50, 53, 9.0)],
        matches=[JasparMatch("MA0139.2", "CTCF", 0.01, 0.2, "+", 0)],
    )
    other = Motif(
        "motif_3",
        np.zeros((4, 5)),
        np.zeros((4, 5)),
        np.zeros((4, 5)),
        seqlets=[_seqlet("c2", 52, 55, 5.0)],
        matches=[JasparMatch("MA0079.5", "SP1", 1e-8, 1e-6, "+", 0)],
    )
    settings = MotifsEntry(match=["ctcf"], q_value=0.05)
    matched = matching_motifs([ctcf, weak, other], settings)
    assert matched == [ctcf]  # weak: q above the cut-off; other: not CTCF
    scores = seqlet_scores(matched, table)
    # the second seqlet scores its motif's aligned columns [102, 107), the first its own span [101, 104)
    assert scores.tolist() == [0, 2, 3, 3, 3, 3, 3, 0, 0, 0] + [0] * 5


def test_passes_count_every_baseline_of_integrated_gradients():
    from screening.demo.benchmark.run import _passes

    raw = {"models": [{"name": "a", "checkpoint": "a.pt"}], "attribution": {"n_steps": 5, "n_shuffles": 3}}
    config = parse_benchmark_config(raw)
    table = pd.DataFrame({"chrom": ["c"] * 10, "pos": np.arange(10)})
    assert _passes("ig_zeros", config, table, 2) == (10, 10)
    assert _passes("ig_shuffle", config, table, 2) == (30, 30)  # a path from each of the 3 shuffles
    assert _passes("motifs_ig_shuffle", config, table, 2) == (30, 30)  # its source's passes


@pytest.mark.parametrize(
    "change, message",
    [
        ({"methods": ["deletion", "telepathy"]}, "telepathy"),
        ({"models": [{"name": "a", "checkpoint": "x.pt"}, {"name": "a", "checkpoint": "y.pt"}]}, "unique"),
        ({"randomisation": {"models": ["nope"]}}, "randomisation.models"),
        ({"per_stratum": 0}, "per_stratum"),
        ({"cost_model": "nope"}, "cost_model"),
        ({"surprise": 1}, "surprise"),
        ({"methods": ["deletion", "motifs_ism"]}, "list ism too"),
        ({"motifs": {"q_value": 0}}, "motifs.q_value"),
    ],
)
def test_bad_configs_name_the_field(change, message):
    raw = {"genome": {"dir": "g"}, "models": [{"name": "a", "checkpoint": "a.pt"}], **change}
    with pytest.raises(BenchmarkError, match=message):
        parse_benchmark_config(raw)


def test_cli_refuses_missing_checkpoint_before_writing(tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text("genome: {dir: g}\nmodels: [{name: a, checkpoint: missing.pt}]\n")
    assert main(["benchmark-methods", str(config), str(tmp_path / "out")]) == 2
    assert "missing.pt" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_toy_benchmark_end_to_end(checkpoint, tmp_path, ray_session):
    began = time.perf_counter()
    config = parse_benchmark_config(
        {
            "genome": {"dir": str(tmp_path / "genome"), "synthetic": TOY_GENOME},
            "models": [{"name": "toy", "checkpoint": str(checkpoint)}],
            "per_stratum": 1,
            "flank": 4,
            "methods": ["mask", "saliency", "motifs_saliency"],
            "time_methods": False,
            "attribution": {"n_steps": 2, "target_window": 3},
            "randomisation": {"levels": ["encoder"]},
            "min_information": 0.5,
        }
    )
    result = benchmark_methods(config, tmp_path / "out", _run_screen(), log=None)
    out = tmp_path / "out"
    assert list(result.summary["method"]) == ["mask", "saliency", "saliency+corr", "motifs_saliency"]
    # the motif pipeline reads the saliency store: same passes, no screen of its own
    motifs = result.summary.set_index("method").loc["motifs_saliency"]
    assert motifs["forward"] == result.summary.set_index("method").loc["saliency", "forward"]
    assert not (out / "specs" / "toy" / "motifs_saliency.yaml").exists()
    long = pd.read_csv(out / "results.tsv", sep="\t")
    assert set(long["level"]) == {"base", "element"} and {"all", "weak", "decoy_peak", "gc_stretch"} <= set(
        long["stratum"]
    )
    overall = long[(long["stratum"] == "all") & (long["level"] == "base")]
    assert overall["auroc"].between(0, 1).all() and (overall["n_positive"] > 0).all()
    summary = pd.read_csv(out / "summary.tsv", sep="\t")
    assert {"consistency", "similarity_encoder", "flagged", "completeness_error", "ms_per_base"} <= set(summary.columns)
    # the untrained toy model has no CTCF motif for the pipeline to find: a constant map, flagged
    screened = summary[summary["method"] != "motifs_saliency"]
    assert screened["similarity_encoder"].notna().all()
    # passes follow the sizes: 2 per tile of the mask, one forward and one backward per window of saliency
    mask, saliency = summary.set_index("method").loc["mask"], summary.set_index("method").loc["saliency"]
    assert mask["forward"] > 0 and mask["backward"] == 0 and mask["forward"] % 2 == 0
    assert saliency["forward"] == saliency["backward"] > 0
    assert "information" in (out / "summary.md").read_text() or "bits" in (out / "summary.md").read_text()
    assert (out / "specs" / "toy" / "all_methods.yaml").is_file() and (out / "specs" / "toy_rand_encoder").is_dir()
    assert all(path.is_file() for path in result.files.values())
    assert time.perf_counter() - began < 120  # the screens themselves; well under a minute on an idle machine


def _run_screen():
    from workers.driver import run_screen

    return run_screen


def test_methods_not_run_share_a_line_per_reason():
    from screening.demo.benchmark.run import not_run_note

    note = not_run_note(
        {
            "seed1/deeplift": "DeepLIFT cannot run on C.Origami",
            "seed0/deeplift": "DeepLIFT cannot run on C.Origami",
            "seed0/motifs_ism": "its source ism did not run",
        }
    )
    assert note.splitlines() == [
        "not run:",
        "- seed0/deeplift, seed1/deeplift: DeepLIFT cannot run on C.Origami",
        "- seed0/motifs_ism: its source ism did not run",
    ]
