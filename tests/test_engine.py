"""Engine tests: C.Origami's deletion screen reproduced, batch-size invariance, flat batching."""

import numpy as np
import pandas as pd
import pytest
import torch

from screening.compute.engine import predict_deletion, run_deletions
from screening.io.genome import Genome
from screening.io.tracks import Track, TrackSet
from screening.models.corigami import CorigamiAdapter, CorigamiConfig

from helpers import TOY_CONFIG

SCORES = ("impact_mean_abs", "impact_abs_mean")


@pytest.fixture(scope="module")
def reference_inputs(shared_dir):
    ref = shared_dir / "reference" / "corigami"
    torch.set_num_threads(2)
    adapter = CorigamiAdapter.from_checkpoint(ref / "model.ckpt")
    genome = Genome(ref / "genome.fa")
    tracks = TrackSet([Track(ref / "ctcf.bw", "ctcf", "none"), Track(ref / "atac.bw", "atac", "log1p")])
    return ref, adapter, genome, tracks


@pytest.mark.reference
def test_reproduces_corigami_screen(reference_inputs):
    """The original's 4 deletions of 1 kb (zero padding): scores within rtol 1e-4, maps within 1e-4 abs.

    The tolerances are the reference set's own (README: float32 vs float64 recomputation moves maps
    by < 5e-5 and impact_abs_mean by a relative 1.5e-5). Batch size 4 puts reference and deleted
    windows of two deletions in one forward pass, so this also checks batch-position independence.
    """
    ref, adapter, genome, tracks = reference_inputs
    expected = pd.read_csv(ref / "screen_expected.tsv", sep="\t")
    starts = expected["start"].to_numpy(np.int64)
    got = run_deletions(adapter, genome, tracks, "chr1", starts, 1000, "zero", SCORES, batch_size=4)
    for name in SCORES:
        np.testing.assert_allclose(got[name], expected[name].to_numpy(), rtol=1e-4, err_msg=name)
    assert (expected["end"] - expected["start"] == 1000).all()


@pytest.mark.reference
def test_reproduces_reference_and_deleted_maps(reference_inputs):
    ref, adapter, genome, tracks = reference_inputs
    reference, deleted, window_start = predict_deletion(adapter, genome, tracks, "chr1", 1_400_000, 1000, "zero")
    assert window_start == 351_924
    np.testing.assert_allclose(reference, np.load(ref / "pred_ref_chr1_1400000_1000.npy"), atol=1e-4)
    np.testing.assert_allclose(deleted, np.load(ref / "pred_del_chr1_1400000_1000.npy"), atol=1e-4)


@pytest.mark.parametrize("padding", ["zero", "follow"])
def test_batch_size_does_not_change_results(toy, padding):
    adapter, genome, tracks = toy
    starts = np.arange(2_000, 2_200, 20, dtype=np.int64)
    by_batch = [run_deletions(adapter, genome, tracks, "chr1", starts, 20, padding, SCORES, batch_size=b) for b in (1, 2, 5, 16)]
    for other in by_batch[1:]:
        for name in SCORES:
            np.testing.assert_allclose(other[name], by_batch[0][name], rtol=1e-5, atol=1e-7)
    assert np.all(by_batch[0]["impact_mean_abs"] > 0)


def test_run_deletions_matches_single_pairs(toy):
    adapter, genome, tracks = toy
    starts = np.array([2_000, 2_040], np.int64)
    got = run_deletions(adapter, genome, tracks, "chr1", starts, 20, "zero", SCORES, batch_size=4)
    for i, start in enumerate(starts):
        reference, deleted, _ = predict_deletion(adapter, genome, tracks, "chr1", int(start), 20)
        assert got["impact_mean_abs"][i] == pytest.approx(np.abs(deleted - reference).mean(), rel=1e-5)


def test_forward_batches_stay_bounded(toy, monkeypatch):
    """Memory stays flat: no forward pass ever holds more than batch_size inputs."""
    adapter, genome, tracks = toy
    sizes = []
    original = adapter.predict_maps

    def spy(inputs):
        sizes.append(len(inputs))
        return original(inputs)

    monkeypatch.setattr(adapter, "predict_maps", spy)  # every forward pass, inputs built on the host or the device
    run_deletions(adapter, genome, tracks, "chr1", np.arange(2_000, 2_400, 20, dtype=np.int64), 20, "zero", SCORES, batch_size=4)
    assert max(sizes) <= 4 and sum(sizes) == 40  # one reference + one deleted window per deletion


# --- every perturbation kind through the one engine --------------------------------------------------

from screening.compute.engine import perturbed_items, run_unit  # noqa: E402
from screening.core.encode import N_CODE  # noqa: E402
from screening.spec import parse_spec  # noqa: E402

KIND_SPECS = {
    "deletion": {"kind": "deletion", "width": 20, "step": 40},
    "deletion_follow": {"kind": "deletion", "width": 20, "step": 40, "padding": "follow"},
    "mask": {"kind": "mask", "width": 20, "step": 40},
    "shuffle": {"kind": "shuffle", "width": 20, "step": 40, "seed": 7},
    "inversion": {"kind": "inversion", "width": 20, "step": 40},
    "duplication": {"kind": "duplication", "width": 20, "step": 40},
    "insertion": {"kind": "insertion", "step": 40, "motif": "CTCF", "orientation": "-"},
    "mutagenesis": {"kind": "mutagenesis"},
}
ALL_SCORES = ("impact_mean_abs", "impact_abs_mean", "scd", "ssd", "mse", "pearson", "spearman", "insulation_delta",
              "impact_mean_abs_aligned", "mse_aligned", "roi_mean_delta")


def perturbation(raw: dict, regions=("chr1:2,000-2,200",)):
    raw = {**raw, "scores": ALL_SCORES, "roi": {"rows": "chr1:1,900-2,000", "cols": "chr1:2,200-2,300"}, "insulation_window": 3}
    return parse_spec({
        "model": {"random_seed": 0}, "genome": {"fasta": "/x.fa"}, "regions": list(regions),
        "perturbations": [raw], "output": {"store": "/x.zarr"},
    }).perturbations[0]


def unit_payload(spec, window=512, positions=None):
    from screening.plan import plan_screen
    from screening.models.base import WindowGeometry

    class FakeGenome:
        def fetch(self, chrom, start, end):
            return np.zeros(end - start, np.uint8)

    full = parse_spec({"model": {"random_seed": 0}, "genome": {"fasta": "/x.fa"},
                       "regions": ["chr1:2,000-2,200"] if positions is None else [positions],
                       "perturbations": [spec.model_dump()], "execution": {"chunk_size": 1000}, "output": {"store": "/x.zarr"}})
    plan = plan_screen(full, [__import__("screening.core.regions", fromlist=["parse_region"]).parse_region(full.regions[0])],
                       {"chr1": 6_000}, WindowGeometry(window, 32, 16), FakeGenome())
    return plan.payload(plan.units[0])


@pytest.mark.parametrize("kind", list(KIND_SPECS))
def test_every_kind_runs_and_is_batch_invariant(toy, kind):
    adapter, genome, tracks = toy
    spec = perturbation(KIND_SPECS[kind])
    payload = unit_payload(spec, positions="chr1:2,000-2,010" if kind == "mutagenesis" else None)
    one = run_unit(adapter, genome, tracks, spec, "chr1", payload, batch_size=1).values
    many = run_unit(adapter, genome, tracks, spec, "chr1", payload, batch_size=7).values
    for name in ALL_SCORES:
        # float32 convolutions sum in a batch-dependent order: map values agree to ~1e-7, and
        # scores of small differences (SCD, SSD) inherit that absolute error
        scale = np.nanmax(np.abs(one[name])) if np.isfinite(one[name]).any() else 1.0
        np.testing.assert_allclose(many[name], one[name], rtol=1e-3, atol=1e-3 * scale + 2e-6, err_msg=f"{kind} {name}")
    values = one["impact_mean_abs"]
    if kind == "mutagenesis":
        assert values.shape == (10, 4)
        ref = genome.fetch("chr1", 2_000, 2_010)
        assert np.isnan(values[np.arange(10), ref]).all()  # the reference base is NaN
        assert np.isfinite(values).sum() == 30  # 3 alternatives per position
    else:
        assert values.shape == (5,) and np.isfinite(values).all() and (values > 0).all()
    computed = np.isfinite(values)
    assert np.isfinite(one["scd"][computed]).all() and np.isfinite(one["roi_mean_delta"][computed]).all()


def test_mutagenesis_predicts_each_shared_window_once(toy, monkeypatch):
    adapter, genome, tracks = toy
    spec = perturbation({"kind": "mutagenesis"})
    payload = unit_payload(spec, positions="chr1:2,000-2,010")
    assert len(np.unique(payload["window_start"])) == 1
    sizes = []
    original = adapter.predict_maps  # every forward pass, inputs built on the host or the device
    monkeypatch.setattr(adapter, "predict_maps", lambda x: sizes.append(len(x)) or original(x))
    run_unit(adapter, genome, tracks, spec, "chr1", payload, batch_size=8)
    assert sum(sizes) == 1 + 30 and max(sizes) <= 8


@pytest.mark.parametrize("kind, check", [
    ("mask", lambda ref, alt, off: (alt[off : off + 20] == N_CODE).all() and (alt[:off] == ref[:off]).all()),
    ("inversion", lambda ref, alt, off: (alt[off : off + 20] == (3 - ref[off : off + 20])[::-1]).all()),
    ("duplication", lambda ref, alt, off: (alt[off + 20 : off + 40] == ref[off : off + 20]).all()),
    ("deletion", lambda ref, alt, off: (alt[off : off + 20] == ref[off + 20 : off + 40]).all()),
])
def test_perturbed_inputs_are_placed_at_the_window_offset(toy, kind, check):
    adapter, genome, tracks = toy
    spec = perturbation(KIND_SPECS[kind])
    payload = unit_payload(spec)
    perturbed, reference = next(perturbed_items(spec, genome, tracks, "chr1", payload, 512))
    offset = int(payload["start"][0] - payload["window_start"][0])
    assert offset == perturbed.edit.offset == 256 - 10  # centred on the 20 bp interval
    assert check(reference.codes, perturbed.span.codes, offset)


def test_variants_from_vcf(toy, toy_paths, tmp_path):
    from screening.io.vcf import read_vcf

    adapter, genome, tracks = toy
    seq = genome.fetch("chr1", 2_999, 3_010)
    letters = "".join("ACGT"[c] for c in seq)
    alt_snv = "ACGT"[(seq[1] + 1) % 4]
    vcf = tmp_path / "v.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        f"chr1\t3001\tsnv\t{letters[1]}\t{alt_snv}\t.\t.\t.\n"
        f"chr1\t3001\tdel\t{letters[1:6]}\t{letters[1]}\t.\t.\t.\n"
        f"chr1\t3001\tins\t{letters[1]}\t{letters[1]}GGGGGGGGGG\t.\t.\t.\n"
        f"chr1\t3001\tinv\t{letters[1]}\t<INV>\t.\t.\tEND=3040\n"
        f"chr1\t3001\tdup\t{letters[1]}\t<DUP>\t.\t.\tSVLEN=30\n"
    )
    spec = perturbation({"kind": "variants", "vcf": str(vcf)})
    variants = sorted(read_vcf(vcf, genome).variants, key=lambda v: (v.start, v.end, v.id))
    start = np.array([v.start for v in variants])
    payload = {"start": start, "end": np.array([max(v.end, v.start + 1) for v in variants]),
               "window_start": np.array([(2 * v.start + v.ref_length - 512) // 2 for v in variants]), "variants": variants}
    scores = run_unit(adapter, genome, tracks, spec, "chr1", payload, batch_size=3).values
    assert np.isfinite(scores["impact_mean_abs"]).all() and (scores["impact_mean_abs"] > 0).all()


# --- window: shared ------------------------------------------------------------------------------------

SHARED_KINDS = [k for k in KIND_SPECS if k != "mutagenesis"]


def shared_payload(kind):
    spec = perturbation({**KIND_SPECS[kind], "window": "shared"})
    payload = unit_payload(spec)
    assert len(np.unique(payload["window_start"])) == 1 and len(payload["start"]) == 5
    return spec, payload


@pytest.mark.parametrize("kind", SHARED_KINDS)
def test_shared_window_predicts_one_reference_per_unit_and_is_batch_invariant(toy, kind, monkeypatch, one_thread):
    adapter, genome, tracks = toy
    spec, payload = shared_payload(kind)
    sizes = []
    original = adapter.predict_maps  # every forward pass, inputs built on the host or the device
    monkeypatch.setattr(adapter, "predict_maps", lambda x: sizes.append(len(x)) or original(x))
    by_batch = {b: run_unit(adapter, genome, tracks, spec, "chr1", payload, batch_size=b).values for b in (1, 3, 8)}
    assert sum(sizes) == 3 * (5 + 1)  # per run: 5 perturbed windows and one reference
    for b in (3, 8):
        for name in ALL_SCORES:
            scale = np.nanmax(np.abs(by_batch[1][name])) if np.isfinite(by_batch[1][name]).any() else 1.0
            np.testing.assert_allclose(by_batch[b][name], by_batch[1][name], rtol=1e-3, atol=1e-3 * scale + 2e-6,
                                       err_msg=f"{kind} {name} batch {b}")
    assert np.isfinite(by_batch[1]["impact_mean_abs"]).all() and (by_batch[1]["impact_mean_abs"] > 0).all()


@pytest.mark.parametrize("padding", ["zero", "follow"])
def test_shared_window_deletions_equal_a_direct_computation(toy, padding, one_thread):
    """Each score is the original's mean |Δ| of the deleted and reference maps of the one shared window."""
    from screening.perturb.edits import apply_edit

    adapter, genome, tracks = toy
    spec, payload = shared_payload("deletion_follow" if padding == "follow" else "deletion")
    got = run_unit(adapter, genome, tracks, spec, "chr1", payload, batch_size=1).values  # batch-size noise: tested above
    window_start = int(payload["window_start"][0])
    codes = genome.fetch("chr1", window_start, window_start + 512 + 20)
    values = tracks.fetch("chr1", window_start, window_start + 512 + 20)
    reference = adapter.predict(codes[None, :512], values[None, :, :512])[0]
    for i, start in enumerate(payload["start"].tolist()):
        offset = start - window_start
        assert 128 <= offset and offset + 20 <= 512 - 128  # inside the window's central half
        deleted_codes, deleted_values = apply_edit(codes, values, offset, 20, np.zeros(0, np.uint8), None, 512, padding)
        deleted = adapter.predict(deleted_codes[None], deleted_values[None])[0]
        assert got["impact_mean_abs"][i] == pytest.approx(np.abs(deleted - reference).mean(), rel=1e-5)
        assert got["impact_abs_mean"][i] == pytest.approx(abs((deleted - reference).mean()), rel=1e-4, abs=1e-7)


# --- non-finite inputs and model outputs fail the unit, naming the window (reliability) ----------------

from helpers import TEST_MODELS, toy_spec_dict  # noqa: E402


def nonfinite_model(fill: str = "inf") -> dict:
    """``model`` section of a user model whose map is ``fill`` wherever the ctcf track exceeds 2
    (every toy window; the load-time check's tracks stay below 2, so it loads)."""
    return {
        "kind": "user", "import_path": "screening_nonfinite_model:NonFiniteContactModel", "python_path": [str(TEST_MODELS)],
        "config": {"fill": fill, "above": 2.0, "n_tracks": 2, "bin_size": 32, "hidden": 4}, "random_seed": 0,
        "declare": {"window_length": 512, "bin_size": 32, "n_bins": 16, "input_layout": "NCL", "alphabet": "ACGT",
                    "n_value": 0.25, "tracks": ["ctcf", "atac"], "symmetric": True},
    }


@pytest.mark.parametrize("fill", ["inf", "nan"])
def test_non_finite_maps_fail_the_unit_naming_the_window(toy, fill, one_thread):
    from screening.compute.engine import NonFiniteMapError
    from screening.models.loader import load_model
    from screening.spec import ModelSpec

    adapter = load_model(ModelSpec.model_validate(nonfinite_model(fill)), "cpu")
    _, genome, tracks = toy
    spec = perturbation(KIND_SPECS["deletion"])
    counts = "256 NaN, 0 inf" if fill == "nan" else "0 NaN, 256 inf"
    with pytest.raises(NonFiniteMapError, match=rf"not finite for the reference window chr1:1,754-2,266: {counts} of 256"):
        run_unit(adapter, genome, tracks, spec, "chr1", unit_payload(spec), 4)


def test_non_finite_attribution_target_fails_the_window(toy, one_thread):
    from screening.compute.engine import NonFiniteMapError
    from screening.interpret.unit import run_attribution
    from screening.models.loader import load_model
    from screening.spec import ModelSpec

    adapter = load_model(ModelSpec.model_validate(nonfinite_model("nan")), "cpu")
    _, genome, tracks = toy
    spec = parse_spec({"model": {"random_seed": 0}, "genome": {"fasta": "/x.fa"}, "regions": ["chr1:2,000-2,010"],
                       "perturbations": [{"kind": "attribution"}], "output": {"store": "/x.zarr"}}).perturbations[0]
    payload = {"start": np.arange(2_000, 2_010), "window_start": np.full(10, 1_749)}
    with pytest.raises(NonFiniteMapError, match=r"window chr1:1,749-2,261: the target of the predicted map"):
        run_attribution(adapter, genome, tracks, spec, "chr1", payload)


def test_inf_in_a_track_fails_the_window_naming_the_track(toy, tmp_path):
    import pyBigWig

    adapter, genome, _ = toy
    path = tmp_path / "inf.bw"
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader([("chr1", 6_000), ("chr2", 3_000)])
    bw.addEntries(["chr1"] * 2, [0, 2_100], ends=[2_100, 6_000], values=[1.0, float("inf")])
    bw.close()
    tracks = TrackSet([Track(path, "ctcf"), Track(path, "atac", "log1p")])
    spec = perturbation(KIND_SPECS["deletion"])
    # the read holds the unit's neighbouring windows (1,754-2,286 and the next, to 2,446)
    with pytest.raises(Exception, match=r"track ctcf has 346 non-finite value\(s\).* in chr1:1,754-2,446, .* the first at chr1:2,100") as err:
        run_unit(adapter, genome, tracks, spec, "chr1", unit_payload(spec), 4)
    assert type(err.value).__name__ == "TrackError"


def test_worker_unit_with_non_finite_maps_is_not_marked_done(toy_paths, tmp_path, one_thread):
    """Through the worker: the unit raises before its chunk is written, so it stays not done."""
    from screening.compute.engine import NonFiniteMapError
    from screening.prepare import prepare_screen
    from screening.spec import parse_spec
    from screening.store.writer import open_or_create_store
    from workers.screen_worker import ScreenWorker

    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr", model=nonfinite_model("inf"), regions=["chr1:2,000-2,080"])
    spec = parse_spec(raw)
    prepared = prepare_screen(spec)  # finite tracks, and the model passes its load-time check
    store, _ = open_or_create_store(spec.output.store, spec.model_dump(mode="json"), spec.science_hash(),
                                    prepared.provenance, prepared.plan.layouts)
    worker = ScreenWorker(spec.model_dump(mode="json"))
    unit = prepared.plan.units[0]
    with pytest.raises(NonFiniteMapError, match="model output is not finite for the reference window chr1:"):
        worker.run(unit, prepared.plan.payload(unit))
    assert not store.done_mask("chr1", "del20").any()


# --- scores computed where the maps are (screening.maps.score_torch), numpy the reference --------------


def _numpy_alignments(index: np.ndarray):
    from screening.maps.align import BinAlignment

    return [BinAlignment(np.flatnonzero(row >= 0), row[row >= 0], len(row)) for row in np.asarray(index)]


@pytest.mark.parametrize("kind", [*KIND_SPECS, "shared deletion"])
def test_device_scores_equal_numpy_scores_of_the_same_maps(toy, kind, monkeypatch, one_thread):
    """Every score of every kind, on the toy model's maps in the engine's batches: torch (what the engine stores)
    against numpy's score_maps of the same maps, alignments and context; kept Δ maps are those maps' Δ."""
    from screening.compute import engine
    from screening.maps.score import score_maps

    adapter, genome, tracks = toy
    raw = {**KIND_SPECS["deletion" if kind == "shared deletion" else kind], "keep_maps": 3}
    if kind == "shared deletion":
        raw["window"] = "shared"
    spec = perturbation(raw)
    payload = unit_payload(spec, positions="chr1:2,000-2,004" if kind == "mutagenesis" else None)
    calls, deltas, worst = [], [], {}
    original = engine.score_tensors

    def both(reference, perturbed, names, index, context):
        got = original(reference, perturbed, names, index, context)
        ref, alt = reference.cpu().numpy(), perturbed.cpu().numpy()
        want = score_maps(ref, alt, names, _numpy_alignments(index), context)
        for name in names:
            value = got[name].cpu().numpy()
            np.testing.assert_allclose(value, want[name], rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=f"{kind} {name}")
            assert np.array_equal(np.isnan(value), np.isnan(want[name])), name
            worst[name] = max(worst.get(name, 0.0), float(np.nanmax(np.abs(value - want[name]), initial=0.0)))
        calls.append(len(ref))
        deltas.extend(alt - ref)
        return got

    monkeypatch.setattr(engine, "score_tensors", both)
    result = run_unit(adapter, genome, tracks, spec, "chr1", payload, batch_size=3)
    assert sum(calls) == (12 if kind == "mutagenesis" else 5)
    assert all(np.isfinite(result.values[name]).any() for name in ALL_SCORES)
    assert result.top_delta.shape == (3, 16, 16) and result.top_delta.dtype == np.float32
    if kind != "mutagenesis":  # flat index = the order the engine scored them
        np.testing.assert_array_equal(result.top_delta, np.stack([deltas[i] for i in result.top_index]))
        first = result.values[ALL_SCORES[0]]
        assert np.array_equal(np.sort(first)[::-1][:3], first[result.top_index].astype(np.float32))


def test_mutagenesis_aligns_each_edit_geometry_once(toy, monkeypatch, one_thread):
    """Three alternative bases share an edit geometry: aligned once per position. Without aligned scores, never."""
    from screening.compute import engine
    from screening.maps.align import AlignmentCache

    adapter, genome, tracks = toy
    caches = []
    monkeypatch.setattr(engine, "AlignmentCache", lambda *a: caches.append(AlignmentCache(*a)) or caches[-1])
    spec = perturbation({"kind": "mutagenesis"})
    run_unit(adapter, genome, tracks, spec, "chr1", unit_payload(spec, positions="chr1:2,000-2,010"), batch_size=8)
    assert len(caches) == 1 and (caches[0].misses, caches[0].hits) == (10, 20)
    plain = spec.model_copy(update={"scores": ("impact_mean_abs", "mse")})
    run_unit(adapter, genome, tracks, plain, "chr1", unit_payload(plain, positions="chr1:2,000-2,010"), batch_size=8)
    assert len(caches) == 1


def test_score_items_moves_only_scores_to_the_host(toy, one_thread):
    """Scores come back as numpy float64 [B]; the Δ maps stay a tensor where the model ran."""
    from screening.compute.engine import score_items

    adapter, genome, tracks = toy
    spec = perturbation(KIND_SPECS["deletion"])
    items = perturbed_items(spec, genome, tracks, "chr1", unit_payload(spec), 512)
    for group, scores, deltas in score_items(adapter, spec, items, 4, keep_deltas=True, chrom="chr1"):
        assert list(scores) == list(ALL_SCORES)
        assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 and v.shape == (len(group),) for v in scores.values())
        assert isinstance(deltas, torch.Tensor) and deltas.shape == (len(group), 16, 16) and deltas.device == adapter.device


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["deletion", "insertion", "mutagenesis"])
def test_scores_on_a_gpu_equal_scores_on_the_cpu(toy, kind):
    """The whole engine on CUDA (maps, reference cache, finiteness and scores there) against the CPU."""
    adapter, genome, tracks = toy
    cuda = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0, device="cuda")
    spec = perturbation({**KIND_SPECS[kind], "keep_maps": 2})
    payload = unit_payload(spec, positions="chr1:2,000-2,004" if kind == "mutagenesis" else None)
    cpu_result = run_unit(adapter, genome, tracks, spec, "chr1", payload, batch_size=4)
    gpu_result = run_unit(cuda, genome, tracks, spec, "chr1", payload, batch_size=4)
    for name in ALL_SCORES:  # TF32/cuDNN convolutions move the maps by ~1e-6: tolerances as across batch sizes
        want = cpu_result.values[name]
        scale = np.nanmax(np.abs(want)) if np.isfinite(want).any() else 1.0
        np.testing.assert_allclose(gpu_result.values[name], want, rtol=1e-3, atol=1e-3 * scale + 2e-6, err_msg=name)
    np.testing.assert_array_equal(gpu_result.top_index, cpu_result.top_index)
    np.testing.assert_allclose(gpu_result.top_delta, cpu_result.top_delta, atol=1e-4)
