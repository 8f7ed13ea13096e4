"""Training loop of the demo model, and the shipped demo model itself."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import tiny_corigami_config

from screening.models.corigami import (
    ConvTransModel,
    CorigamiAdapter,
    CorigamiConfig,
    infer_corigami_config,
    load_corigami_checkpoint,
)
from screening.demo.synthetic import SyntheticConfig, SyntheticGenome, generate
from screening.demo.training import (
    TrainConfig,
    decay_map,
    decay_profile,
    deletion_sanity,
    evaluate,
    gc_fraction,
    init_motif_channels,
    load_chromosome,
    map_metrics,
    peak_centres,
    sample_batch,
    train,
    transplant_peaks,
)

DEMO_DIR = Path(__file__).resolve().parents[1] / "screening" / "data" / "demo_model"

TINY_MODEL = tiny_corigami_config()
TINY_TRAIN = TrainConfig(steps=25, batch_size=2, lr=1e-2, warmup_steps=1, shift_bp=64, threads=1, log_every=5)


@pytest.fixture(scope="module")
def tiny_genome(tmp_path_factory: pytest.TempPathFactory) -> SyntheticGenome:
    config = SyntheticConfig(seed=5, chromosomes=[("chr1", 300_000), ("chr2", 150_000)], contact_bin_size=512)
    return generate(config, tmp_path_factory.mktemp("tiny-genome"))


@pytest.fixture(scope="module")
def tiny_chr1(tiny_genome: SyntheticGenome):
    return load_chromosome(tiny_genome, "chr1")


def test_sample_batch_shapes_and_reverse_complement(tiny_chr1) -> None:
    codes, tracks, targets = sample_batch(tiny_chr1, np.random.default_rng(0), 3, 16)
    assert codes.shape == (3, 8192) and codes.dtype == np.uint8
    assert tracks.shape == (3, 2, 8192) and tracks.dtype == np.float32
    assert targets.shape == (3, 16, 16)
    flipped = 0
    for seed in range(8):  # same seed, same window; rc=True reverse-complements it half of the time
        fwd = sample_batch(tiny_chr1, np.random.default_rng(seed), 1, 16)
        aug = sample_batch(tiny_chr1, np.random.default_rng(seed), 1, 16, rc=True)
        if np.array_equal(aug[0], fwd[0]):
            continue
        flipped += 1
        complement = np.array([3, 2, 1, 0, 4], np.uint8)
        assert np.array_equal(aug[0][0], complement[fwd[0][0]][::-1])
        assert np.array_equal(aug[1][0], fwd[1][0][:, ::-1])
        assert np.array_equal(aug[2][0], fwd[2][0][::-1, ::-1])
    assert 0 < flipped < 8


def test_peak_transplant_adds_decoys_and_keeps_sequence(tiny_genome: SyntheticGenome, tiny_chr1) -> None:
    summits = peak_centres(tiny_chr1.tracks[0])
    peaked = [s for s in tiny_genome.sites_on("chr1") if s.role != "motif_only"]
    assert len(summits) == len(peaked)  # peaks are found from the track alone
    assert all(min(abs(s.center - x) for x in summits) < 200 for s in peaked)
    codes, tracks, target = tiny_chr1.window(0, 0, 16)
    before = len(peak_centres(tracks[0]))
    moved = transplant_peaks(tracks, tiny_chr1.tracks, summits, np.random.default_rng(0), 2)
    assert moved.shape == tracks.shape and moved is not tracks
    assert len(peak_centres(moved[0])) == before + 2
    assert not np.shares_memory(moved, tiny_chr1.tracks)
    fwd = sample_batch(tiny_chr1, np.random.default_rng(3), 2, 16)
    aug = sample_batch(tiny_chr1, np.random.default_rng(3), 2, 16, decoys=2)
    assert np.array_equal(fwd[0][0], aug[0][0]) and np.array_equal(fwd[2][0], aug[2][0])


def test_training_reduces_loss_and_is_reproducible(tiny_chr1) -> None:
    first = train(tiny_chr1, TINY_MODEL, TINY_TRAIN, log=None)
    again = train(tiny_chr1, TINY_MODEL, TINY_TRAIN, log=None)
    other = train(tiny_chr1, TINY_MODEL, replace(TINY_TRAIN, seed=1), log=None)
    assert first.steps == 25 and not first.stopped_early
    assert np.mean(first.losses[-5:]) < 0.5 * np.mean(first.losses[:3])
    assert first.losses == again.losses
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    assert first.losses != other.losses
    assert torch.get_num_threads() >= 1 and not torch.are_deterministic_algorithms_enabled()  # state restored


def test_motif_channels_detect_planted_motifs_and_stay_fixed(tiny_genome: SyntheticGenome, tiny_chr1) -> None:
    torch.manual_seed(0)
    model = ConvTransModel(TINY_MODEL)
    frozen = init_motif_channels(model, gc=0.41)
    model.train()  # batch statistics, as in training
    starts = list(range(0, tiny_chr1.max_start_bin(16), 8))
    codes = np.stack([tiny_chr1.codes[b * 512 : (b + 16) * 512] for b in starts])
    one_hot = CorigamiAdapter(model).build_input(codes, np.zeros((len(starts), 2, 8192), np.float32))
    with torch.no_grad():
        trunk = model.encoder.res_blocks_seq(model.encoder.conv_start_seq(one_hot.transpose(1, 2)[:, :5]))
    labels = np.zeros((len(starts), 2, 16), bool)
    for i, b in enumerate(starts):
        for site in tiny_genome.sites_on("chr1"):
            offset = int(site.center) - b * 512
            if site.role != "decoy_peak" and 0 <= offset < 8192:
                labels[i, int(site.strand == "-"), offset // 512] = True
    fired = trunk[:, :2].numpy() > 0
    assert labels.sum() >= 5
    assert (fired & labels).sum() >= 0.9 * labels.sum()  # nearly every motif, right bin and strand
    assert (fired & ~labels).sum() <= 0.1 * labels.sum()
    with pytest.raises(ValueError, match="too small"):
        init_motif_channels(ConvTransModel(CorigamiConfig(**{**asdict(TINY_MODEL), "kernel_size": 5})), 0.41)
    # training leaves the detector untouched
    result = train(tiny_chr1, TINY_MODEL, replace(TINY_TRAIN, steps=3), log=None)
    fresh = ConvTransModel(TINY_MODEL)
    for item in init_motif_channels(fresh, gc_fraction(tiny_chr1.codes)):
        name = next(n for n, p in fresh.named_parameters() if p is item.param)
        trained = dict(result.model.named_parameters())[name]
        assert torch.allclose(trained[item.index], item.value, atol=1e-6), name
    assert len(frozen) > 10


def test_training_rejects_mismatched_bins(tiny_chr1) -> None:
    with pytest.raises(ValueError, match="do not match"):
        train(
            tiny_chr1, CorigamiConfig(**{**asdict(TINY_MODEL), "block_widths": (8,) + (4,) * 6}), TINY_TRAIN, log=None
        )


def test_map_metrics_baseline_and_perfect() -> None:
    rng = np.random.default_rng(0)
    profile = np.linspace(3.0, 0.2, 16).astype(np.float32)
    base = decay_map(profile)
    true = base + 0.1 * rng.standard_normal((4, 16, 16)).astype(np.float32)
    perfect = map_metrics(true, true, base)
    assert perfect["pearson"] == pytest.approx(1.0) and perfect["r2_vs_baseline"] == pytest.approx(1.0)
    assert perfect["pearson_oe"] == pytest.approx(1.0)
    baseline = map_metrics(np.broadcast_to(base, true.shape), true, base)
    assert baseline["pearson_oe"] is None and baseline["r2_vs_baseline"] == 0.0
    assert decay_profile(np.asarray(base), 16) == pytest.approx(profile, rel=1e-6)


# --------------------------------------------------------------------------- the shipped model


@pytest.fixture(scope="module")
def demo_settings() -> dict:
    return json.loads((DEMO_DIR / "config.json").read_text())


@pytest.fixture(scope="module")
def demo_metrics() -> dict:
    return json.loads((DEMO_DIR / "metrics.json").read_text())


@pytest.fixture(scope="module")
def demo_genome(tmp_path_factory: pytest.TempPathFactory, demo_settings: dict) -> SyntheticGenome:
    """The training genome, regenerated from the recorded synthetic config (~2 s)."""
    config = SyntheticConfig.from_dict(demo_settings["synthetic_config"])
    return generate(config, tmp_path_factory.mktemp("demo-genome"))


@pytest.fixture(scope="module")
def demo_adapter() -> CorigamiAdapter:
    return CorigamiAdapter.from_checkpoint(DEMO_DIR / "model.pt")


def test_demo_model_is_small() -> None:
    sizes = {p.name: p.stat().st_size for p in DEMO_DIR.iterdir() if p.is_file()}
    assert {"model.pt", "config.json", "metrics.json"} <= set(sizes)
    assert sum(sizes.values()) <= 5_000_000


def test_demo_config_matches_weights(demo_settings: dict, demo_adapter: CorigamiAdapter) -> None:
    recorded = CorigamiConfig(**demo_settings["corigami_config"])
    state, embedded = load_corigami_checkpoint(DEMO_DIR / "model.pt")
    assert embedded == recorded == demo_adapter.config
    # the fields tensor shapes reveal agree too (n_heads and dropout are not in the shapes)
    inferred = infer_corigami_config(state)
    assert asdict(inferred) == {**asdict(recorded), "n_heads": inferred.n_heads, "dropout": inferred.dropout}
    assert recorded.window_length == 131_072 and recorded.n_bins == 128
    assert tuple(demo_settings["track_names"]) == demo_adapter.track_names


def test_demo_model_reproduces_heldout_metrics(
    demo_adapter: CorigamiAdapter, demo_genome: SyntheticGenome, demo_settings: dict, demo_metrics: dict
) -> None:
    train_cfg = demo_settings["train_config"]
    held = load_chromosome(demo_genome, train_cfg["eval_chrom"])
    profile = np.asarray(demo_metrics["decay_profile"], np.float32)
    result = evaluate(demo_adapter, held, profile, train_cfg["eval_stride_bins"])
    recorded = demo_metrics["heldout"]["model"]
    assert result["windows"] == demo_metrics["heldout"]["windows"]
    assert result["model"]["pearson"] == pytest.approx(recorded["pearson"], abs=2e-3)
    assert result["model"]["pearson_oe"] == pytest.approx(recorded["pearson_oe"], abs=2e-2)
    # it learned more than distance decay
    assert result["model"]["pearson"] > result["baseline"]["pearson"] + 0.003
    assert result["model"]["r2_vs_baseline"] > 0.2


def test_demo_model_ranks_functional_sites_above_decoys(
    demo_adapter: CorigamiAdapter, demo_genome: SyntheticGenome, demo_settings: dict
) -> None:
    sanity = deletion_sanity(demo_adapter, demo_genome, demo_settings["train_config"]["eval_chrom"])
    assert sanity["ctcf_site"]["n"] > 5 and sanity["decoy_peak"]["n"] > 2
    assert sanity["ratio_functional_to_decoy"] > 1.5


def test_demo_fallback_config_is_the_demo_models_architecture():
    """`screening demo` without the trained weights runs a random-weight model of the demo model's size."""
    from screening.demo.demo import _FALLBACK_CONFIG
    from screening.demo.training import DEMO_CONFIG

    assert (
        CorigamiConfig(**{**_FALLBACK_CONFIG, "block_widths": tuple(_FALLBACK_CONFIG["block_widths"])}) == DEMO_CONFIG
    )
    recorded = json.loads((DEMO_DIR / "config.json").read_text())
    assert {**asdict(DEMO_CONFIG), "block_widths": list(DEMO_CONFIG.block_widths)} == recorded["corigami_config"]


# ---------------------------------------------------------------- the method benchmark's models

BENCH_DIR = Path(__file__).resolve().parents[1] / "screening" / "data" / "benchmark_models"


def test_benchmark_command_line_options() -> None:
    from screening.demo.training import _parser

    args = _parser().parse_args(
        [
            "--outdir",
            "x",
            "--genome",
            "graded",
            "--model-size",
            "benchmark",
            "--no-motif-channels",
            "--warmup-steps",
            "7",
        ]
    )
    assert args.genome == "graded" and args.model_size == "benchmark" and args.no_motif_channels
    assert args.warmup_steps == 7
    defaults = _parser().parse_args(["--outdir", "x"])
    assert defaults.genome == "default" and defaults.model_size == "demo" and not defaults.no_motif_channels


def test_command_line_takes_the_model_size_training_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from screening.demo import training

    seen: dict[str, object] = {}

    def fake_train_demo(outdir, data, config, model_config, **kwargs):  # records what main() asked for
        seen[str(outdir)] = (config, model_config)
        sanity = {"ratio_functional_to_decoy": 1.0}
        model = {"pearson": 0.9, "pearson_oe": 0.5}
        return {
            "heldout": {"model": model, "baseline": model},
            "deletion_sanity": sanity,
            "steps": 1,
            "train_minutes": 0,
        }

    monkeypatch.setattr(training, "train_demo", fake_train_demo)
    training.main(["--outdir", "bench", "--model-size", "benchmark", "--threads", "1"])
    training.main(["--outdir", "demo"])
    training.main(["--outdir", "tuned", "--model-size", "benchmark", "--steps", "9", "--lr", "0.001", "--decoys", "0"])
    bench, bench_model = seen["bench"]
    assert bench == replace(training.BENCHMARK_TRAIN_CONFIG, threads=1)
    assert bench_model == training.BENCHMARK_MODEL_CONFIG
    assert seen["demo"] == (TrainConfig(), training.DEMO_CONFIG)
    tuned = seen["tuned"][0]
    assert (tuned.steps, tuned.lr, tuned.decoys) == (9, 0.001, 0)
    assert tuned.warmup_steps == training.BENCHMARK_TRAIN_CONFIG.warmup_steps


def test_benchmark_model_config_takes_the_motif_channels() -> None:
    from screening.demo.training import BENCHMARK_MODEL_CONFIG

    model = ConvTransModel(BENCHMARK_MODEL_CONFIG)
    assert init_motif_channels(model, 0.41)
    assert BENCHMARK_MODEL_CONFIG.bin_size == 1024 and BENCHMARK_MODEL_CONFIG.n_bins == 64
    assert sum(p.numel() for p in model.parameters()) * 4 < 5 * 1024 * 1024  # float32 weights under 5 MB


@pytest.mark.parametrize("name", ["seed0", "seed1", "nomotif0"])
def test_shipped_benchmark_models_are_small_and_recorded(name: str) -> None:
    folder = BENCH_DIR / name
    if not (folder / "model.pt").is_file():
        pytest.skip("benchmark models not shipped in this tree")
    assert (folder / "model.pt").stat().st_size <= 5 * 1024 * 1024
    settings = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert settings["synthetic_config"]["orientation_rule"] and settings["synthetic_config"]["weak_fraction"] > 0
    assert settings["train_config"]["motif_channels"] == (not name.startswith("nomotif"))
    assert np.isfinite(metrics["heldout"]["model"]["pearson"])
    CorigamiAdapter.from_checkpoint(folder / "model.pt")


@pytest.mark.parametrize("name", ["seed0", "seed1", "nomotif0"])
def test_shipped_benchmark_models_beat_the_decay_baseline(name: str) -> None:
    from screening.demo.training import BENCHMARK_MODEL_CONFIG

    folder = BENCH_DIR / name
    if not (folder / "model.pt").is_file():
        pytest.skip("benchmark models not shipped in this tree")
    heldout = json.loads((folder / "metrics.json").read_text())["heldout"]["model"]
    # the 0.24 M-parameter models shipped first sat at the baseline: R2 -0.07..0.09, o/e 0.21-0.33
    assert heldout["r2_vs_baseline"] > 0.2 and heldout["pearson_oe"] > 0.45
    assert CorigamiAdapter.from_checkpoint(folder / "model.pt").config == BENCHMARK_MODEL_CONFIG
