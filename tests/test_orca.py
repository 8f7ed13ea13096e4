"""Orca 1 Mb model: architecture, checkpoints, adapter, strand averaging, incremental mutagenesis,
every engine path and attribution on a tiny Orca, one CLI screen, and the reference outputs."""

from __future__ import annotations

import hashlib
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from screening.maps.align import bin_alignment
from screening.interpret.attribution import AttributionError, attribute, check_deeplift
from screening.core.encode import N_CODE
from screening.compute.engine import perturbed_items, predict_pair, run_unit
from screening.interpret.unit import run_attribution
from screening.io.genome import Genome
from screening.models.base import ModelError
from screening.models.checkpoint import file_sha256
from screening.models.loader import load_model
from screening.models.orca import (
    OrcaAdapter,
    OrcaConfig,
    OrcaNet,
    check_orca_state_dict,
    encoder_reach,
    read_orca_state_dict,
)
from screening.plan import plan_screen
from screening.core.regions import parse_region
from screening.maps.score import score_maps
from screening.spec import ModelSpec, SpecError, parse_spec
from screening.maps.targets import make_target

#: A tiny Orca: 4 levels pooling 4·4·5 = 80 bp bins, 16 bins (1,280 bp), kernel 3 (encoder reach 404 bp).
TINY = {
    "encoder_channels": [4, 6, 8, 8],
    "pools": [4, 4, 5],
    "kernel_size": 3,
    "decoder_channels": 8,
    "decoder_hidden": 4,
    "dilations": [1, 2, 4],
    "head_hidden": 3,
    "num_1d": 2,
    "n_bins": 16,
}
TINY_CONFIG = OrcaConfig(**TINY)
WINDOW = TINY_CONFIG.window_length
ATOL = 1e-4  # reference README: float64 recomputation moves the 1 Mb map by <= 2.3e-5


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


@pytest.fixture(scope="module")
def tiny() -> OrcaAdapter:
    return OrcaAdapter.random_init(TINY_CONFIG, seed=1)


@pytest.fixture(scope="module")
def tiny_avg(tiny: OrcaAdapter) -> OrcaAdapter:
    return OrcaAdapter(tiny.module, strand_average=True)


def _windows(n: int, seed: int = 0, length: int = WINDOW) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 5, size=(n, length), dtype=np.uint8)


def _save(state: dict, path: Path, prefix: str = "") -> Path:
    torch.save(OrderedDict((prefix + k, v) for k, v in state.items()), path)
    return path


# --------------------------------------------------------------------------- architecture


def test_default_architecture_is_nets_layout() -> None:
    """746 entries in Net(num_1d=32)'s order, 4,790,325 parameters (reference README)."""
    with torch.device("meta"):
        net = OrcaNet()
    keys = list(net.state_dict())
    assert len(keys) == 746
    assert keys[:3] == ["lconv1.0.weight", "lconv1.0.bias", "lconv1.1.weight"]
    assert keys[-2:] == ["final_1d.3.weight", "final_1d.3.bias"]
    assert "lconv2.1.weight" in keys and "lconvtwos.0.1.weight" in keys  # indices skip pool / dropout
    assert sum(p.numel() for p in net.parameters()) == 4_790_325
    config = OrcaConfig()
    assert (config.bin_size, config.n_bins, config.window_length) == (4000, 250, 1_000_000)
    blocks = {k.split(".")[0] for k in keys}
    assert sum(k.startswith("lconvtwos.") for k in keys) == sum(k.startswith("convtwos.") for k in keys) == 266
    assert blocks == {f"{p}conv{i}" for p in ("l", "") for i in range(1, 8)} | {"lconvtwos", "convtwos", "final", "final_1d"}


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ModelError, match="pools"):
        OrcaConfig(pools=(4, 4))
    with pytest.raises(ModelError, match="kernel_size"):
        OrcaConfig(kernel_size=4)
    spec = ModelSpec(kind="orca", random_seed=0, config={"channels": [4]})
    with pytest.raises(ModelError, match="model.config.*channels.*encoder_channels"):
        load_model(spec)


def test_encoder_reach() -> None:
    """The receptive field computed from the architecture: 104,016 bp for the 1 Mb model."""
    assert encoder_reach(OrcaConfig()) == 104_016
    assert encoder_reach(TINY_CONFIG) == 404


def test_encoder_reach_bounds_what_a_substitution_changes(tiny: OrcaAdapter) -> None:
    """Bins farther than the reach from a substitution keep their encoding bit for bit."""
    reach, bin_size = encoder_reach(TINY_CONFIG), TINY_CONFIG.bin_size
    codes = _windows(1, seed=5)
    position = 700
    mutated = codes.copy()
    mutated[0, position] = (mutated[0, position] + 1) % 4
    with torch.no_grad():
        before = tiny.module.encode(tiny.build_input(codes, None))[0]
        after = tiny.module.encode(tiny.build_input(mutated, None))[0]
    changed = torch.nonzero((before != after).any(0)).flatten().tolist()
    lowest, highest = (position - reach) // bin_size, (position + reach) // bin_size
    assert changed and lowest <= min(changed) and max(changed) <= highest
    assert max(changed) > position // bin_size  # the reach is not vacuous: the change spreads over bins


# --------------------------------------------------------------------------- adapter


def test_geometry_and_declarations(tiny: OrcaAdapter) -> None:
    assert tiny.geometry.window_length == WINDOW == 1280
    assert (tiny.geometry.bin_size, tiny.geometry.n_bins, tiny.geometry.map_offset) == (80, 16, 0)
    assert tiny.symmetric is True and tiny.track_names == ()
    assert tiny.module.training is False


def test_build_input_encoding(tiny: OrcaAdapter) -> None:
    codes = np.zeros((1, WINDOW), np.uint8)
    codes[0, :5] = [0, 1, 2, 3, N_CODE]
    x = tiny.build_input(codes, None)
    assert x.shape == (1, 4, WINDOW) and x.dtype == torch.float32
    np.testing.assert_array_equal(x[0, :, :5].T.numpy(), np.vstack([np.eye(4), np.full((1, 4), 0.25)]))
    assert torch.equal(tiny.build_input(codes, np.zeros((1, 0, WINDOW), np.float32)), x)


def test_build_input_refuses_bad_shapes_and_tracks(tiny: OrcaAdapter) -> None:
    with pytest.raises(ModelError, match=r"codes must be \[B, 1280\]"):
        tiny.build_input(np.zeros((1, 100), np.uint8), None)
    with pytest.raises(ModelError, match="sequence only"):
        tiny.build_input(np.zeros((1, WINDOW), np.uint8), np.zeros((1, 2, WINDOW), np.float32))


def test_output_is_symmetric_and_batch_independent(tiny: OrcaAdapter) -> None:
    codes = _windows(3)
    maps = tiny.predict(codes, None)
    assert maps.shape == (3, 16, 16) and maps.dtype == np.float32
    np.testing.assert_array_equal(maps, maps.transpose(0, 2, 1))
    np.testing.assert_allclose(tiny.predict(codes[1:2], None)[0], maps[1], atol=1e-6)


def test_strand_average(tiny: OrcaAdapter, tiny_avg: OrcaAdapter) -> None:
    """0.5·fwd + 0.5·rc[::-1, ::-1] with rc = positions and channels reversed; the average of a
    window's reverse complement is the window's average flipped."""
    codes = _windows(2, seed=3)
    rc = (np.array([3, 2, 1, 0, 4], np.uint8)[codes])[:, ::-1]
    fwd, rev = tiny.predict(codes, None), tiny.predict(rc, None)
    np.testing.assert_allclose(tiny_avg.predict(codes, None), 0.5 * fwd + 0.5 * rev[:, ::-1, ::-1], atol=1e-6)
    np.testing.assert_allclose(tiny_avg.predict(rc, None), tiny_avg.predict(codes, None)[:, ::-1, ::-1], atol=1e-6)
    assert not np.allclose(fwd, rev[:, ::-1, ::-1], atol=1e-4)  # a random model is not strand-symmetric
    x = tiny.build_input(codes, None)
    assert torch.equal(x.flip(1, 2), tiny.build_input(rc.copy(), None))  # channel reversal = complement


def test_random_init_is_seeded_and_leaves_global_rng() -> None:
    state = torch.random.get_rng_state()
    a, b = OrcaAdapter.random_init(TINY_CONFIG, seed=4), OrcaAdapter.random_init(TINY_CONFIG, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.checksum == b.checksum and len(a.checksum) == 64
    assert OrcaAdapter.random_init(TINY_CONFIG, seed=5).checksum != a.checksum
    assert a.name == "orca-random-seed4"


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("prefix", ["module.module.", "module.", ""])
def test_checkpoint_layouts_load(tiny: OrcaAdapter, tmp_path: Path, prefix: str) -> None:
    path = _save(tiny.module.state_dict(), tmp_path / "orca_tiny.net0.statedict", prefix)
    loaded = OrcaAdapter.from_checkpoint(path, config={k: v for k, v in TINY.items() if k != "num_1d"})
    assert loaded.config == TINY_CONFIG  # num_1d read from final_1d
    assert loaded.checksum == file_sha256(path) and loaded.name == "orca:orca_tiny.net0.statedict"
    codes = _windows(2)
    np.testing.assert_array_equal(loaded.predict(codes, None), tiny.predict(codes, None))


def test_checkpoint_without_1d_head(tmp_path: Path) -> None:
    net = OrcaNet(OrcaConfig(**{**TINY, "num_1d": None}))
    path = _save(net.state_dict(), tmp_path / "no1d.statedict", "module.")
    assert OrcaAdapter.from_checkpoint(path, config={k: v for k, v in TINY.items() if k != "num_1d"}).config.num_1d is None


def test_checkpoint_mismatch_names_keys_and_shapes(tiny: OrcaAdapter, tmp_path: Path) -> None:
    state = dict(tiny.module.state_dict())
    del state["convtwos.1.3.weight"]
    state["lconv2.1.weight"] = torch.zeros(6, 4, 5)
    state["extra.weight"] = torch.zeros(1)
    path = _save(state, tmp_path / "bad.statedict", "module.module.")
    with pytest.raises(ModelError) as err:
        OrcaAdapter.from_checkpoint(path, config=TINY)
    text = str(err.value)
    assert str(path) in text and "1 missing keys: convtwos.1.3.weight" in text
    assert "1 unexpected keys: extra.weight" in text
    assert "lconv2.1.weight: checkpoint (6, 4, 5) vs model (6, 4, 3)" in text


def test_checkpoint_of_default_size_refused_for_tiny_config(tiny: OrcaAdapter, tmp_path: Path) -> None:
    path = _save(tiny.module.state_dict(), tmp_path / "tiny.statedict")
    with pytest.raises(ModelError, match=r"shape mismatches: lconv1\.0\.weight: checkpoint \(4, 4, 3\) vs model \(64, 4, 9\)"):
        OrcaAdapter.from_checkpoint(path)


def test_unsafe_or_bad_files_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.statedict"
    evil.write_bytes(pickle.dumps({"lconv1.0.weight": Evil()}))
    with pytest.raises(ModelError, match="evil.statedict"):
        read_orca_state_dict(evil)
    assert not marker.exists()
    with pytest.raises(ModelError, match="no such file"):
        read_orca_state_dict(tmp_path / "missing.statedict")
    torch.save({"weights": [1, 2]}, tmp_path / "list.statedict")
    with pytest.raises(ModelError, match="not an Orca weights file"):
        read_orca_state_dict(tmp_path / "list.statedict")


def test_check_state_dict_passes_exact_fit(tiny: OrcaAdapter) -> None:
    check_orca_state_dict(tiny.module.state_dict(), TINY_CONFIG)


# --------------------------------------------------------------------------- spec and loader


def test_loader_builds_orca_from_spec(tmp_path: Path) -> None:
    adapter = load_model(ModelSpec(kind="orca", random_seed=2, config=TINY, strand_average=True, name="mine"))
    assert isinstance(adapter, OrcaAdapter) and adapter.strand_average and adapter.name == "mine"
    assert adapter.checksum == OrcaAdapter.random_init(TINY_CONFIG, seed=2).checksum
    path = _save(adapter.module.state_dict(), tmp_path / "w.statedict", "module.module.")
    from_file = load_model(ModelSpec(kind="orca", checkpoint=str(path), config=TINY))
    assert from_file.checksum == file_sha256(path) and not from_file.strand_average


def test_tracks_are_refused_for_orca() -> None:
    with pytest.raises(ModelError, match="track_names.*sequence only"):
        load_model(ModelSpec(kind="orca", random_seed=0, config=TINY, track_names=("ctcf",)))


def test_screen_with_tracks_is_refused_for_orca(toy_paths, tmp_path: Path) -> None:
    from screening.prepare import prepare_screen

    raw = _screen([{"kind": "deletion", "width": 20, "step": 20}], genome={"fasta": str(toy_paths["fasta"])},
                  tracks=[{"name": "ctcf", "path": str(toy_paths["ctcf"])}], output={"store": str(tmp_path / "s.zarr")})
    with pytest.raises(ModelError, match=r"the model takes tracks \[\] .* the spec gives \['ctcf'\]"):
        prepare_screen(parse_spec(raw))
    assert not (tmp_path / "s.zarr").exists()


def _screen(perturbations: list[dict], model: dict | None = None, **extra) -> dict:
    return {"model": model or {"kind": "orca", "random_seed": 0, "config": TINY}, "genome": {"fasta": "/x.fa"},
            "regions": ["chr1:2,000-2,100"], "perturbations": perturbations, "output": {"store": "/x.zarr"}} | extra


def test_example_spec_validates() -> None:
    from screening.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "configs" / "orca_example.yaml")
    assert spec.model.kind == "orca" and spec.model.strand_average and spec.model.checkpoint.endswith("orca_h1esc.net0.statedict")
    assert spec.perturbations[0].padding == "follow" and spec.tracks == []
    assert load_spec(Path(__file__).resolve().parents[1] / "configs" / "orca_example.yaml",
                     {"model.checkpoint": None, "model.random_seed": 0}).model.random_seed == 0


def test_spec_strand_average_only_for_orca() -> None:
    with pytest.raises(SpecError, match="strand_average is only for kind: orca"):
        parse_spec(_screen([{"kind": "mutagenesis"}], model={"random_seed": 0, "strand_average": True}))


def test_spec_padding_follows_the_genome_for_orca() -> None:
    raw = [{"kind": "deletion", "width": 10, "step": 10}, {"kind": "deletion", "name": "z", "width": 10, "step": 10, "padding": "zero"},
           {"kind": "inversion", "width": 10, "step": 10}]
    orca = parse_spec(_screen(raw)).perturbations
    assert [getattr(p, "padding", None) for p in orca] == ["follow", "zero", None]
    corigami = parse_spec(_screen(raw, model={"random_seed": 0})).perturbations
    assert [getattr(p, "padding", None) for p in corigami] == ["zero", "zero", None]


# --------------------------------------------------------------------------- incremental mutagenesis


def _substitutions(reference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows = []
    for position in (0, 1, 79, 80, 401, 640, 1000, 1279):  # both window edges and bin edges
        for base in range(4):
            if base != reference[position]:
                row = reference.copy()
                row[position] = base
                rows.append(row)
    several = reference.copy()
    several[300:330] = rng.integers(0, 4, 30)
    far = reference.copy()
    far[[10, 1200]] = (far[[10, 1200]] + 1) % 4
    return np.stack([*rows, several, far, reference.copy()])


@pytest.mark.parametrize("averaged", [False, True])
def test_predict_near_equals_full_recomputation(tiny: OrcaAdapter, tiny_avg: OrcaAdapter, averaged: bool) -> None:
    adapter = tiny_avg if averaged else tiny
    rng = np.random.default_rng(8)
    reference = _windows(1, seed=9)[0]
    codes = _substitutions(reference, rng)
    near = adapter.predict_near(reference, None, codes, None)
    full = adapter.predict(codes, None)
    assert near.shape == full.shape and np.abs(full - full[-1]).max() > 1e-3  # substitutions do move the map
    np.testing.assert_allclose(near, full, atol=1e-5 * max(1.0, float(np.abs(full).max())), rtol=0)
    np.testing.assert_allclose(near[-1], adapter.predict(reference[None], None)[0], atol=1e-6, rtol=0)


def test_predict_near_recomputes_only_the_reach(tiny: OrcaAdapter, monkeypatch) -> None:
    """After the reference is cached, a substitution runs each level on a short segment only."""
    reference = _windows(1, seed=10)[0]
    tiny.predict_near(reference, None, reference[None], None)  # fills the cache
    lengths = []
    original = tiny.module.stage
    monkeypatch.setattr(tiny.module, "stage", lambda level, u: lengths.append((level, u.shape[-1])) or original(level, u))
    row = reference.copy()
    row[640] = (row[640] + 1) % 4
    tiny.predict_near(reference, None, row[None], None)
    full_lengths = [WINDOW, WINDOW // 4, WINDOW // 16, WINDOW // 80]
    assert [level for level, _ in lengths] == [1, 2, 3, 4]
    assert all(n < full for (_, n), full in zip(lengths[:3], full_lengths)), lengths  # the last level: whole (reach 5 bins)


def test_predict_near_checks_shapes_and_falls_back(tiny: OrcaAdapter) -> None:
    reference = _windows(1)[0]
    with pytest.raises(ModelError, match="reference"):
        tiny.predict_near(reference[:100], None, reference[None], None)
    adapter = OrcaAdapter(tiny.module)
    adapter.incremental = False
    np.testing.assert_array_equal(adapter.predict_near(reference, None, reference[None], None), tiny.predict(reference[None], None))


@pytest.mark.gpu
def test_cuda_matches_cpu(tiny: OrcaAdapter) -> None:
    """Full and incremental predictions on CUDA (TF32 off) match the CPU's."""
    import copy

    cuda = OrcaAdapter(copy.deepcopy(tiny.module), device="cuda", strand_average=True)
    cpu = OrcaAdapter(tiny.module, strand_average=True)
    reference = _windows(1, seed=11)[0]
    codes = _substitutions(reference, np.random.default_rng(1))
    expected = cpu.predict(codes, None)
    np.testing.assert_allclose(cuda.predict(codes, None), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(cuda.predict_near(reference, None, codes, None), expected, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- the engine on Orca


@pytest.fixture(scope="module")
def toy_orca(tiny: OrcaAdapter, toy_paths):
    return tiny, Genome(toy_paths["fasta"])


ALL_SCORES = ("impact_mean_abs", "impact_abs_mean", "scd", "mse", "pearson", "insulation_delta",
              "impact_mean_abs_aligned", "mse_aligned")
KINDS = {
    "deletion": {"kind": "deletion", "width": 30, "step": 40},
    "deletion_zero": {"kind": "deletion", "width": 30, "step": 40, "padding": "zero"},
    "mask": {"kind": "mask", "width": 20, "step": 40},
    "shuffle": {"kind": "shuffle", "width": 20, "step": 40},
    "inversion": {"kind": "inversion", "width": 30, "step": 40},
    "duplication": {"kind": "duplication", "width": 20, "step": 40},
    "insertion": {"kind": "insertion", "step": 40, "motif": "CTCF"},
    "mutagenesis": {"kind": "mutagenesis"},
}


def _plan(genome: Genome, adapter: OrcaAdapter, raw_perturbation: dict, regions=("chr1:2,000-2,100",), **extra):
    scored = raw_perturbation if raw_perturbation["kind"] == "attribution" else {**raw_perturbation, "scores": list(ALL_SCORES)}
    spec = parse_spec(_screen([scored], regions=list(regions),
                              execution={"chunk_size": 1000}, **extra))
    plan = plan_screen(spec, [parse_region(r) for r in spec.regions], genome.chrom_sizes, adapter.geometry, genome)
    return spec.perturbations[0], plan


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_runs_on_orca(toy_orca, kind: str) -> None:
    """Each kind's engine scores equal the scores of its reference and perturbed maps, at any batch size."""
    adapter, genome = toy_orca
    regions = ("chr1:2,000-2,008",) if kind == "mutagenesis" else ("chr1:2,000-2,100",)
    spec, plan = _plan(genome, adapter, KINDS[kind], regions)
    payload = plan.payload(plan.units[0])
    one = run_unit(adapter, genome, None, spec, "chr1", payload, batch_size=1).values
    many = run_unit(adapter, genome, None, spec, "chr1", payload, batch_size=5).values
    for name in ALL_SCORES:
        np.testing.assert_allclose(many[name], one[name], rtol=1e-4, atol=1e-6, err_msg=f"{kind} {name}")
    base = None
    if kind == "mutagenesis":
        assert one["impact_mean_abs"].shape == (8, 4) and np.isfinite(one["impact_mean_abs"]).sum() == 24
        base = int(np.flatnonzero(np.isfinite(one["impact_mean_abs"][0]))[0])
    else:
        assert np.isfinite(one["impact_mean_abs"]).all() and (one["impact_mean_abs"] > 0).all()
    ref_map, alt_map, _ = predict_pair(adapter, genome, None, spec, "chr1", payload, base=base)
    perturbed, _ = next(p for p in perturbed_items(spec, genome, None, "chr1", payload, WINDOW) if base is None or p[0].base == base)
    edit = perturbed.edit
    alignment = bin_alignment(edit.offset, edit.ref_length, edit.alt_length, 80, 16)
    context = {"position": np.array([(2 * edit.offset + max(edit.ref_length, 1)) // 160]), "window": 10}
    expected = score_maps(ref_map[None], alt_map[None], ALL_SCORES, [alignment], context)
    first = one["impact_mean_abs"][0, base] if base is not None else one["impact_mean_abs"][0]
    np.testing.assert_allclose(first, expected["impact_mean_abs"][0], rtol=1e-4, atol=1e-7)


def test_overlapped_input_building_gives_the_same_scores(toy_orca) -> None:
    adapter, genome = toy_orca
    spec, plan = _plan(genome, adapter, KINDS["deletion"])
    payload = plan.payload(plan.units[0])
    plain = run_unit(adapter, genome, None, spec, "chr1", payload, batch_size=3).values
    overlapped = OrcaAdapter(adapter.module)
    overlapped.overlap = True  # host_input built in a background thread (screening.compute.prefetch)
    np.testing.assert_array_equal(run_unit(overlapped, genome, None, spec, "chr1", payload, batch_size=3).values["mse"], plain["mse"])


def test_mutagenesis_uses_the_incremental_path(toy_orca, monkeypatch) -> None:
    """Orca mutagenesis goes through predict_near and equals full recomputation."""
    adapter, genome = toy_orca
    spec, plan = _plan(genome, adapter, KINDS["mutagenesis"], ("chr1:2,000-2,006",))
    payload = plan.payload(plan.units[0])
    calls = []
    original = adapter.predict_near
    monkeypatch.setattr(adapter, "predict_near", lambda *a: calls.append(len(a[2])) or original(*a))
    incremental = run_unit(adapter, genome, None, spec, "chr1", payload, batch_size=4).values
    assert sum(calls) == 18
    monkeypatch.setattr(adapter, "incremental", False)
    full = run_unit(adapter, genome, None, spec, "chr1", payload, batch_size=4).values
    for name in ALL_SCORES:
        np.testing.assert_allclose(incremental[name], full[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_structural_variants_keep_the_bin_grid(toy_orca) -> None:
    """Orca's default padding re-fills a deletion's window from the real downstream genome; reference
    and variant share the window start, so upstream bins line up and downstream bins shift by whole bins."""
    adapter, genome = toy_orca
    spec, plan = _plan(genome, adapter, {"kind": "deletion", "width": 160, "step": 160}, ("chr1:2,400-2,560",))
    assert spec.padding == "follow"
    payload = plan.payload(plan.units[0])
    perturbed, reference = next(perturbed_items(spec, genome, None, "chr1", payload, WINDOW))
    start, offset = int(payload["window_start"][0]), perturbed.edit.offset
    downstream = genome.fetch("chr1", start + offset + 160, start + WINDOW + 160)
    np.testing.assert_array_equal(perturbed.span.codes[:offset], reference.codes[:offset])
    np.testing.assert_array_equal(perturbed.span.codes[offset:], downstream)
    assert (perturbed.span.codes != N_CODE).all()
    alignment = bin_alignment(offset, 160, 0, 80, 16)
    assert alignment.shift == -2 and len(alignment) == 14  # two whole bins deleted: nothing masked beyond them


def test_variants_on_orca(toy_orca, tmp_path: Path) -> None:
    adapter, genome = toy_orca
    seq = genome.fetch("chr1", 2_999, 3_010)
    letters = "".join("ACGT"[c] for c in seq)
    vcf = tmp_path / "v.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        f"chr1\t3001\tsnv\t{letters[1]}\t{'ACGT'[(seq[1] + 1) % 4]}\t.\t.\t.\n"
        f"chr1\t3001\tdel\t{letters[1:6]}\t{letters[1]}\t.\t.\t.\n"
        f"chr1\t3001\tins\t{letters[1]}\t{letters[1]}GGGGGGGGGG\t.\t.\t.\n"
        f"chr1\t3001\tinv\t{letters[1]}\t<INV>\t.\t.\tEND=3040\n"
        f"chr1\t3001\tdup\t{letters[1]}\t<DUP>\t.\t.\tSVLEN=30\n"
    )
    spec, plan = _plan(genome, adapter, {"kind": "variants", "vcf": str(vcf)}, ("chr1:2,990-3,050",))
    assert spec.padding == "follow"
    scores = run_unit(adapter, genome, None, spec, "chr1", plan.payload(plan.units[0]), batch_size=3).values
    assert np.isfinite(scores["impact_mean_abs"]).all() and (scores["impact_mean_abs"] > 0).all()
    assert np.isfinite(scores["mse_aligned"]).all()


# --------------------------------------------------------------------------- attribution on Orca


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "integrated_gradients", "deeplift"])
def test_attribution_methods_run_on_orca(toy_orca, tiny_avg: OrcaAdapter, method: str) -> None:
    adapter, genome = toy_orca
    raw = {"kind": "attribution", "method": method, "n_steps": 8, "window_step": 640, "target": {"kind": "insulation", "window": 3}}
    if method in ("integrated_gradients", "deeplift"):
        raw["baseline"] = "uniform"
    for model in (adapter, tiny_avg):
        spec, plan = _plan(genome, model, raw, ("chr1:2,000-2,640",))
        out = run_attribution(model, genome, None, spec, "chr1", plan.payload(plan.units[0])).values
        assert out["attribution"].shape == (640, 4) and np.isfinite(out["attribution"]).all()
        assert np.abs(out["attribution"]).max() > 0 and not any(k.startswith("track_") for k in out)
        np.testing.assert_allclose(out["attribution_corrected"].sum(1), 0, atol=1e-6)
        if method in ("integrated_gradients", "deeplift"):
            scale = float(np.abs(out["attribution"]).sum())  # IG: quadrature error of 8 steps; DeepLIFT: exact
            assert np.abs(out["completeness_error"]).max() < (0.05 if method == "integrated_gradients" else 1e-3) * scale


def test_checkpointed_gradients_equal_plain(tiny_avg: OrcaAdapter) -> None:
    codes = _windows(1, seed=6)
    target = make_target("insulation", bin=8, window=3)
    plain = attribute(tiny_avg, codes, None, target, "saliency")
    checkpointed = attribute(tiny_avg, codes, None, target, "saliency", checkpoint=True)
    np.testing.assert_allclose(checkpointed.sequence, plain.sequence, atol=1e-7)


def test_deeplift_refusal_keys_off_the_model_not_its_name(tiny: OrcaAdapter) -> None:
    """A C.Origami-named Orca passes; an Orca whose head holds a GELU is refused, naming it."""
    codes = _windows(1)
    target = make_target("whole_map")
    named = OrcaAdapter(tiny.module)
    named.name = "corigami"
    check_deeplift(named, named.build_input(codes, None), target)
    altered = OrcaAdapter.random_init(TINY_CONFIG, seed=1)
    altered.module.final[2] = torch.nn.GELU()
    with pytest.raises(AttributionError, match=r"GELU \(final\.2\)"):
        attribute(altered, codes, None, target, "deeplift", baseline="uniform")


# --------------------------------------------------------------------------- one screen through the CLI


def test_cli_screen_with_orca(ray_session, toy_paths, tmp_path: Path, tiny: OrcaAdapter) -> None:
    """``screening run`` with ``kind: orca`` (Ray, one worker): stored scores equal the engine's."""
    from screening import open_results
    from screening.cli import main

    raw = _screen([{"kind": "deletion", "width": 20, "step": 20, "scores": ["impact_mean_abs", "mse_aligned"]},
                   {"kind": "mutagenesis", "name": "ism", "regions": ["chr1:2,000-2,004"], "scores": ["impact_mean_abs"]}],
                  model={"kind": "orca", "random_seed": 1, "config": TINY, "strand_average": True},
                  regions=["chr1:2,000-2,080"], execution={"num_workers": 1, "batch_size": 4, "chunk_size": 4, "device": "cpu"})
    raw["genome"] = {"fasta": str(toy_paths["fasta"]), "name": "toy"}
    raw["output"] = {"store": str(tmp_path / "orca.zarr")}
    spec_path = tmp_path / "orca.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(spec_path), "--no-progress", "--no-plots"]) == 0
    results = open_results(tmp_path / "orca.zarr")
    assert results.provenance["model"]["checksum"] == OrcaAdapter.random_init(TINY_CONFIG, seed=1).checksum
    deletions = results.query("chr1", analysis="deletion_20bp").compute()
    ism = results.query("chr1", analysis="ism").compute()
    adapter = OrcaAdapter.random_init(TINY_CONFIG, seed=1, strand_average=True)
    genome = Genome(toy_paths["fasta"])
    for name, data, raw_p in (("deletion_20bp", deletions, raw["perturbations"][0]), ("ism", ism, raw["perturbations"][1])):
        spec, plan = _plan(genome, adapter, raw_p, raw_p.get("regions", raw["regions"]))
        expected = run_unit(adapter, genome, None, spec, "chr1", plan.payload(plan.units[0]), batch_size=4).values
        got = data["impact_mean_abs"].values
        np.testing.assert_allclose(got, expected["impact_mean_abs"][: len(got)], rtol=1e-4, atol=1e-7, err_msg=name)
    assert deletions.sizes["perturbation"] == 4 and ism["impact_mean_abs"].shape == (4, 4)


# --------------------------------------------------------------------------- the reference (original Orca code)

REF_SHA256 = "6d777d12946de9c5b6ae339ae45f5d652d223129be29f924c42f2e1299892e49"


@pytest.fixture(scope="module")
def ref_dir(shared_dir: Path) -> Path:
    return shared_dir / "reference" / "orca"


@pytest.fixture(scope="module")
def ref_run(ref_dir: Path, shared_dir: Path) -> dict:
    """chr1:[1,000,000, 2,000,000) through the project's Genome and a strand-averaging adapter:
    one forward of a batch of 2 (the window and its reverse complement), raw outputs captured."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # as the reference was made
    adapter = OrcaAdapter.from_checkpoint(ref_dir / "orca_h1esc.net0.statedict", strand_average=True)
    raw: list[np.ndarray] = []
    hook = adapter.module.register_forward_hook(lambda _m, _i, out: raw.append(out.detach().numpy().copy()))
    codes = Genome(shared_dir / "reference" / "corigami" / "genome.fa").fetch("chr1", 1_000_000, 2_000_000)
    try:
        averaged = adapter.predict(codes[None], None)[0]
    finally:
        hook.remove()
        torch.set_num_threads(previous)
    return {"adapter": adapter, "fwd": raw[0][0], "rc": raw[0][1], "avg": averaged}


@pytest.mark.reference
def test_reference_checkpoint_identity(ref_run: dict, ref_dir: Path) -> None:
    adapter = ref_run["adapter"]
    assert adapter.checksum == REF_SHA256 and adapter.config == OrcaConfig() and adapter.config.num_1d == 32
    file_keys = list(torch.load(ref_dir / "orca_h1esc.net0.statedict", weights_only=True))
    assert file_keys == ["module.module." + k for k in adapter.module.state_dict()]


@pytest.mark.reference
def test_reference_forward(ref_run: dict, ref_dir: Path) -> None:
    np.testing.assert_allclose(ref_run["fwd"], np.load(ref_dir / "pred_chr1_1000000.npy"), atol=ATOL, rtol=0)


@pytest.mark.reference
def test_reference_reverse_complement(ref_run: dict, ref_dir: Path) -> None:
    np.testing.assert_allclose(ref_run["rc"], np.load(ref_dir / "pred_rc_chr1_1000000.npy"), atol=ATOL, rtol=0)


@pytest.mark.reference
def test_reference_strand_average(ref_run: dict, ref_dir: Path) -> None:
    expected = np.load(ref_dir / "pred_avg_chr1_1000000.npy")
    np.testing.assert_allclose(ref_run["avg"], expected, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(ref_run["avg"], ref_run["avg"].T)


@pytest.mark.reference
def test_reference_file_with_wrong_shape_or_missing_key_is_refused(ref_dir: Path, tmp_path: Path) -> None:
    state = torch.load(ref_dir / "orca_h1esc.net0.statedict", weights_only=True)
    missing = OrderedDict(state)
    del missing["module.module.convtwos.18.4.running_var"]
    with pytest.raises(ModelError, match=r"1 missing keys: convtwos\.18\.4\.running_var"):
        OrcaAdapter.from_checkpoint(_save(missing, tmp_path / "missing.statedict"))
    reshaped = OrderedDict(state)
    reshaped["module.module.final.0.weight"] = torch.zeros(5, 64, 3, 3)
    with pytest.raises(ModelError, match=r"final\.0\.weight: checkpoint \(5, 64, 3, 3\) vs model \(5, 64, 1, 1\)"):
        OrcaAdapter.from_checkpoint(_save(reshaped, tmp_path / "reshaped.statedict"))
    digest = hashlib.sha256((ref_dir / "orca_h1esc.net0.statedict").read_bytes()).hexdigest()
    assert digest == REF_SHA256
