"""End to end through the CLI on an embedded local Ray: run, query, export, resume, refuse, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyBigWig
import pytest
import yaml

from screening import open_results
from screening.cli import main
from screening.compute.engine import run_deletions
from screening.io.genome import Genome
from screening.io.tracks import Track, TrackSet
from screening.models.corigami import save_corigami_checkpoint
from screening.models.corigami import ConvTransModel, CorigamiAdapter, CorigamiConfig

from helpers import TEST_MODELS, TOY_CONFIG, toy_spec_dict, write_toy_genome


def write_spec(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def snapshot(path: Path) -> dict[str, str]:
    """Every file under a directory with its content hash."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(ray_session, toy_paths, tmp_path_factory):
    """One screen run through the CLI, shared by the read-back tests."""
    tmp = tmp_path_factory.mktemp("run")
    spec = write_spec(tmp / "spec.yaml", toy_spec_dict(toy_paths, tmp / "out.zarr"))
    assert main(["run", str(spec), "--no-progress"]) == 0
    return spec, tmp / "out.zarr"


def expected_scores(toy_paths, chrom, starts):
    import torch

    torch.set_num_threads(1)  # as the worker (cpus_per_worker 1): the same reduction order
    adapter = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)
    genome = Genome(toy_paths["fasta"])
    tracks = TrackSet([Track(toy_paths["ctcf"], "ctcf"), Track(toy_paths["atac"], "atac", "log1p")])
    return run_deletions(adapter, genome, tracks, chrom, starts, 20, "zero", ("impact_mean_abs", "impact_abs_mean"))


def test_run_writes_what_the_engine_computes(finished, toy_paths, capsys):
    _, store = finished
    results = open_results(store)
    assert results.is_complete
    ds = results.query("chr1:2,000-2,400").compute()
    starts = ds["start"].values
    np.testing.assert_array_equal(starts, np.arange(2_000, 2_400, 20))
    want = expected_scores(toy_paths, "chr1", starts)
    np.testing.assert_allclose(ds["impact_mean_abs"].values, want["impact_mean_abs"], rtol=1e-5)
    np.testing.assert_allclose(ds["impact_abs_mean"].values, want["impact_abs_mean"], rtol=1e-5)
    assert results.query("chr2").sizes["perturbation"] == 10


def test_provenance_recorded(finished, toy_paths):
    _, store = finished
    results = open_results(store)
    provenance = results.provenance
    assert provenance["genome"]["sha256"] == hashlib.sha256(toy_paths["fasta"].read_bytes()).hexdigest()
    assert provenance["genome"]["name"] == "toy"
    assert len(provenance["model"]["checksum"]) == 64
    assert provenance["package_version"]
    assert results.spec["perturbations"][0]["width"] == 20


def test_query_cli_prints_half_open_overlaps(finished, capsys):
    _, store = finished
    capsys.readouterr()
    assert main(["query", str(store), "chr1:2,040-2,060", "--format", "tsv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split("\t")[:3] == ["chrom", "start", "end"]
    assert [line.split("\t")[1] for line in lines[1:]] == ["2040"]  # 2020-2040 and 2060-2080 do not overlap


def test_export_bedgraph_and_bigwig(finished, tmp_path):
    _, store = finished
    assert main(["export", str(store), str(tmp_path / "s.bedGraph")]) == 0
    rows = [line.split("\t") for line in (tmp_path / "s.bedGraph").read_text().splitlines()]
    assert len(rows) == 30 and rows[0][:3] == ["chr1", "2000", "2020"]
    assert main(["export", str(store), str(tmp_path / "s.bw"), "--score", "impact_abs_mean"]) == 0
    bw = pyBigWig.open(str(tmp_path / "s.bw"))
    assert bw.chroms("chr1") == 6_000
    assert bw.intervals("chr1")[0][:2] == (2000, 2020)


def test_pictures_written(finished):
    _, store = finished
    plots = store.with_name("out_plots")
    assert (plots / "top_hit_del20.png").stat().st_size > 10_000
    assert (plots / "del20_chr1_impact_mean_abs.png").is_file()


def test_rerun_resumes_only_unfinished_chunks(ray_session, toy_paths, tmp_path, capsys):
    import zarr

    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr")
    spec = write_spec(tmp_path / "spec.yaml", raw)
    assert main(["run", str(spec), "--no-progress", "--no-plots"]) == 0
    before = open_results(tmp_path / "out.zarr").query("chr1").compute()
    group = zarr.open_group(str(tmp_path / "out.zarr" / "chr1" / "del20"), mode="r+")
    group["chunk_done"][1] = 0  # as if the driver died before this unit finished
    group["impact_mean_abs"][4:8] = np.nan
    capsys.readouterr()
    assert main(["run", str(spec), "--no-progress", "--no-plots"]) == 0
    assert "resumed 4 of 30 perturbations" in capsys.readouterr().out
    after = open_results(tmp_path / "out.zarr").query("chr1").compute()
    np.testing.assert_array_equal(after["impact_mean_abs"].values, before["impact_mean_abs"].values)


def test_two_workers_same_results(ray_session, toy_paths, finished, tmp_path):
    raw = toy_spec_dict(toy_paths, tmp_path / "two.zarr")
    raw["execution"]["num_workers"] = 2
    raw["execution"]["batch_size"] = 3
    assert main(["run", str(write_spec(tmp_path / "s.yaml", raw)), "--no-progress", "--no-plots"]) == 0
    one = open_results(finished[1]).query("chr1").compute()
    two = open_results(tmp_path / "two.zarr").query("chr1").compute()
    np.testing.assert_allclose(two["impact_mean_abs"].values, one["impact_mean_abs"].values, rtol=1e-4, atol=1e-9)


def test_other_spec_aimed_at_existing_store_is_refused(finished, toy_paths, tmp_path, capsys):
    _, store = finished
    before = snapshot(store)
    raw = toy_spec_dict(toy_paths, store, regions=["chr1:2,000-2,600"])
    assert main(["run", str(write_spec(tmp_path / "other.yaml", raw)), "--no-progress"]) == 2
    assert "error:" in capsys.readouterr().err
    assert snapshot(store) == before


# --- bad input: a clear message naming the problem, exit 2, and no store -----------------------------


def _bad_bigwig_without_chr2(path: Path) -> Path:
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader([("chr1", 6_000)])
    bw.addEntries(["chr1"], [0], ends=[6_000], values=[1.0])
    bw.close()
    return path


def _other_size_checkpoint(path: Path) -> Path:
    import torch

    torch.manual_seed(0)
    save_corigami_checkpoint(path, ConvTransModel(CorigamiConfig(**{**TOY_CONFIG, "mid_hidden": 8, "ff_hidden": 8})))
    return path


BAD_INPUTS = {
    "unknown chromosome": (lambda raw, tmp: raw.update(regions=["chr7:1,000-2,000"]), "unknown chromosome 'chr7'"),
    "past the end": (lambda raw, tmp: raw.update(regions=["chr2:1,000-3,001"]), "runs past the end of chr2"),
    "negative": (lambda raw, tmp: raw.update(regions=["chr1:-5-100"]), "negative"),
    "empty": (lambda raw, tmp: raw.update(regions=["chr1:500-500"]), "empty"),
    "window leaves chromosome": (lambda raw, tmp: raw.update(regions=["chr1:0-100"]), "leaves chr1"),
    "missing fasta": (lambda raw, tmp: raw["genome"].update(fasta=str(tmp / "nope.fa")), "nope.fa"),
    "corrupt fasta": (lambda raw, tmp: (tmp / "bad.fa").write_bytes(b"\x00\x01garbage\xff" * 50)
                      and raw["genome"].update(fasta=str(tmp / "bad.fa")), "bad.fa"),
    "missing bigwig": (lambda raw, tmp: raw["tracks"][0].update(path=str(tmp / "nope.bw")), "nope.bw"),
    "corrupt bigwig": (lambda raw, tmp: (tmp / "bad.bw").write_bytes(b"not a bigwig" * 100)
                       and raw["tracks"][1].update(path=str(tmp / "bad.bw")), "bad.bw"),
    "bigwig without chromosome": (lambda raw, tmp: raw["tracks"][0].update(path=str(_bad_bigwig_without_chr2(tmp / "c.bw"))), "chr2"),
    "checkpoint of another size": (lambda raw, tmp: raw.update(model={"checkpoint": str(_other_size_checkpoint(tmp / "m.pt")),
                                                                      "config": TOY_CONFIG}), "shape"),
    "malformed spec": (lambda raw, tmp: raw["perturbations"][0].update(width=-3), "perturbations.0.deletion.width"),
    "tracks in the wrong order": (lambda raw, tmp: raw.update(tracks=raw["tracks"][::-1]), "in this order"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_nonzero_and_writes_nothing(case, toy_paths, tmp_path, capsys):
    mutate, message = BAD_INPUTS[case]
    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr")
    mutate(raw, tmp_path)
    spec = write_spec(tmp_path / "spec.yaml", raw)
    assert main(["run", str(spec), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("screening: error:") and message in err, err
    assert not (tmp_path / "out.zarr").exists()
    assert not list(tmp_path.glob("out.zarr*"))


def test_query_errors(finished, capsys):
    _, store = finished
    assert main(["query", str(store), "chr9:1-2"]) == 2
    assert "chr9" in capsys.readouterr().err
    assert main(["query", str(store), "chr1", "--analysis", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["query", str(store.with_name("missing.zarr")), "chr1"]) == 2


def test_info_and_validate(finished, capsys):
    spec, store = finished
    assert main(["info", str(store)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] and info["analyses"] == {"del20": ["impact_mean_abs", "impact_abs_mean"]}
    assert main(["validate", str(spec)]) == 0
    assert "30 perturbations" in capsys.readouterr().out


# --- several perturbation kinds in one screen ------------------------------------------------------


def _vcf(tmp_path: Path, toy_paths, ref_ok: bool = True) -> Path:
    genome = Genome(toy_paths["fasta"])
    base = "ACGT"[genome.fetch("chr1", 2_100, 2_101)[0]]
    anchor = "ACGT"[genome.fetch("chr1", 2_150, 2_151)[0]]
    wrong = "ACGT"[("ACGT".index(base) + 1) % 4]
    alt = "ACGT"[("ACGT".index(base) + 2) % 4]
    path = tmp_path / "v.vcf"
    path.write_text(
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        f"chr1\t2101\trs1\t{base if ref_ok else wrong}\t{alt}\t.\t.\t.\n"
        f"chr1\t2151\tbigdel\t{anchor}\t<DEL>\t.\t.\tEND=2190\n"
    )
    return path


def test_mixed_kinds_screen(ray_session, toy_paths, tmp_path, capsys):
    raw = toy_spec_dict(toy_paths, tmp_path / "mixed.zarr", regions=["chr1:2,000-2,010"])
    vcf = _vcf(tmp_path, toy_paths)
    raw["perturbations"] = [
        {"kind": "mutagenesis", "name": "ism", "scores": ["impact_mean_abs"]},
        {"kind": "inversion", "width": 5, "step": 5, "scores": ["impact_mean_abs", "mse_aligned"]},
        {"kind": "variants", "vcf": str(vcf), "scores": ["impact_mean_abs", "scd"]},
    ]
    raw["regions"] = ["chr1:2,000-2,010", "chr1:2,100-2,160"]  # variants are kept where they overlap the regions
    assert main(["run", str(write_spec(tmp_path / "m.yaml", raw)), "--no-progress"]) == 0
    results = open_results(tmp_path / "mixed.zarr")
    assert sorted(results.analyses) == ["inversion_5bp", "ism", "variants"]
    ism = results.query("chr1:2,000-2,010", analysis="ism").compute()
    assert results.query("chr1", analysis="ism").sizes["perturbation"] == 70
    assert ism["impact_mean_abs"].shape == (10, 4) and np.isfinite(ism["impact_mean_abs"]).sum() == 30
    assert len(ism["ref_base"].values[0]) == 1
    variants = results.query("chr1", analysis="variants").compute()
    assert variants["id"].values.tolist() == ["rs1", "bigdel"]
    assert np.isfinite(variants["scd"].values).all()
    capsys.readouterr()
    assert main(["query", str(tmp_path / "mixed.zarr"), "chr1:2,000-2,002", "--analysis", "ism", "--format", "tsv"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0].split("\t") == ["chrom", "start", "end", "base", "impact_mean_abs"] and len(rows) == 1 + 8


def test_vcf_ref_mismatch_fails_or_is_skipped_and_listed(toy_paths, tmp_path, capsys, ray_session):
    vcf = _vcf(tmp_path, toy_paths, ref_ok=False)
    raw = toy_spec_dict(toy_paths, tmp_path / "v.zarr", regions=[])
    raw["perturbations"] = [{"kind": "variants", "vcf": str(vcf)}]
    spec = write_spec(tmp_path / "v.yaml", raw)
    assert main(["run", str(spec), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "rs1" in err and "does not match the genome" in err
    assert not (tmp_path / "v.zarr").exists()
    raw["invalid_policy"] = "skip"
    assert main(["run", str(write_spec(spec, raw)), "--no-progress", "--no-plots"]) == 0
    skipped = open_results(tmp_path / "v.zarr").provenance["skipped"]["variants"]
    assert skipped["count"] == 1 and "rs1" in skipped["items"][0]
    assert open_results(tmp_path / "v.zarr").query("chr1")["id"].values.tolist() == ["bigdel"]


def test_insertion_with_bad_letters_is_a_spec_error(toy_paths, tmp_path, capsys):
    raw = toy_spec_dict(toy_paths, tmp_path / "i.zarr")
    raw["perturbations"] = [{"kind": "insertion", "step": 20, "sequence": "ACGUX"}]
    assert main(["run", str(write_spec(tmp_path / "i.yaml", raw)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "perturbations.0.insertion" in err and "'U' at 3" in err
    assert not (tmp_path / "i.zarr").exists()


def test_keep_maps_stores_top_delta_maps(ray_session, toy_paths, tmp_path):
    raw = toy_spec_dict(toy_paths, tmp_path / "k.zarr", regions=["chr1:2,000-2,160"])
    raw["perturbations"] = [
        {"kind": "deletion", "name": "del20", "width": 20, "step": 20, "keep_maps": 2},
        {"kind": "mutagenesis", "name": "ism", "regions": ["chr1:2,000-2,006"], "keep_maps": 1, "scores": ["mse"]},
    ]
    assert main(["run", str(write_spec(tmp_path / "k.yaml", raw)), "--no-progress", "--no-plots"]) == 0
    results = open_results(tmp_path / "k.zarr")
    maps = results.top_maps("chr1", analysis="del20")
    assert maps.shape == (4, 16, 16)  # 8 deletions in 2 units of 4, top 2 of each
    scores = results.query("chr1", analysis="del20").compute()
    for unit in range(2):
        rows = scores.isel(perturbation=slice(4 * unit, 4 * unit + 4))
        best = rows["impact_mean_abs"].values.argsort()[::-1][:2]
        assert maps["start"].values[2 * unit : 2 * unit + 2].tolist() == rows["start"].values[best].tolist()
    # the stored Δ map is the recomputed one
    adapter = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)
    genome = Genome(toy_paths["fasta"])
    tracks = TrackSet([Track(toy_paths["ctcf"], "ctcf"), Track(toy_paths["atac"], "atac", "log1p")])
    from screening.compute.engine import predict_deletion

    ref, deleted, _ = predict_deletion(adapter, genome, tracks, "chr1", int(maps["start"][0]), 20)
    np.testing.assert_allclose(maps.values[0], deleted - ref, atol=1e-5)
    assert np.abs(maps.values[0]).mean() == pytest.approx(scores["impact_mean_abs"].max().item(), rel=1e-3)
    ism = results.top_maps("chr1:2,000-2,006", analysis="ism")
    assert ism.shape == (2, 16, 16) and set(ism["base"].values) <= set("ACGT")  # 6 positions, 2 units, top 1 each



def test_top_maps_refused_without_keep_maps(finished):
    from screening.store.reader import ResultsError

    with pytest.raises(ResultsError, match="kept no"):
        open_results(finished[1]).top_maps("chr1")


# --- gradient attribution as an analysis ----------------------------------------------------------------


def test_attribution_stitched_track_matches_direct_windows(ray_session, toy_paths, tmp_path):
    from screening.interpret.attribution import attribute
    from screening.maps.targets import make_target

    raw = toy_spec_dict(toy_paths, tmp_path / "a.zarr", regions=["chr1:2,000-2,600"])
    raw["perturbations"] = [{"kind": "attribution", "name": "ig", "method": "integrated_gradients", "n_steps": 8,
                             "window_step": 128, "target": {"kind": "insulation", "window": 3}}]
    assert main(["run", str(write_spec(tmp_path / "a.yaml", raw)), "--no-progress", "--no-plots"]) == 0
    ds = open_results(tmp_path / "a.zarr").query("chr1:2,000-2,600").compute()
    assert ds["attribution"].dims == ("perturbation", "base") and ds.sizes["perturbation"] == 600
    assert np.isfinite(ds["attribution"].values).all() and np.isfinite(ds["completeness_error"].values).all()
    np.testing.assert_allclose(ds["attribution_corrected"].values.sum(axis=1), 0, atol=1e-6)
    # 5 windows of 128 owned bases; each position equals a direct attribution of its window
    window_starts = np.unique(ds["window_start"].values)
    assert len(window_starts) == 5
    import torch

    torch.set_num_threads(1)
    adapter = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)
    genome = Genome(toy_paths["fasta"])
    tracks = TrackSet([Track(toy_paths["ctcf"], "ctcf"), Track(toy_paths["atac"], "atac", "log1p")])
    ws = int(window_starts[2])
    direct = attribute(adapter, genome.fetch("chr1", ws, ws + 512)[None], tracks.fetch("chr1", ws, ws + 512)[None],
                       make_target("insulation", bin=8, window=3), "integrated_gradients", n_steps=8, track_baseline="zeros")
    owned = ds["window_start"].values == ws
    offsets = ds["start"].values[owned] - ws
    np.testing.assert_allclose(ds["attribution"].values[owned], direct.sequence[0][offsets], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(ds["track_atac"].values[owned], direct.tracks[0, 1][offsets], rtol=1e-4, atol=1e-7)
    assert (offsets >= 192).all() and (offsets < 320).all()  # each window keeps its centre


def test_attribution_bad_target_is_a_spec_error(toy_paths, tmp_path, capsys):
    raw = toy_spec_dict(toy_paths, tmp_path / "a.zarr")
    raw["perturbations"] = [{"kind": "attribution", "target": {"kind": "block", "rows": "chr1:1-100"}}]
    assert main(["run", str(write_spec(tmp_path / "a.yaml", raw)), "--no-progress"]) == 2
    assert "target block needs ['cols']" in capsys.readouterr().err


# --- wrong science refused up front: map blocks off the window, non-finite inputs and maps (reliability) ----------


def _roi(rows: str, cols: str | None = None) -> dict:
    return {"kind": "deletion", "name": "del20", "width": 20, "step": 20, "scores": ["roi_mean_delta"],
            "roi": {"rows": rows, "cols": cols or rows}}


def _block_target(rows: str, cols: str | None = None) -> dict:
    return {"kind": "attribution", "name": "sal", "target": {"kind": "block", "rows": rows, "cols": cols or rows}}


def _inf_bigwig(path: Path) -> Path:
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader([("chr1", 6_000), ("chr2", 3_000)])
    bw.addEntries(["chr1", "chr2", "chr2"], [0, 0, 500], ends=[6_000, 500, 3_000], values=[1.0, 1.0, float("inf")])
    bw.close()
    return path


WRONG_SCIENCE = {
    # the toy screen covers chr1 and chr2: a chr1 ROI cannot be read in chr2's windows
    "roi on one chromosome, regions on two": (
        lambda raw, tmp: raw.update(perturbations=[_roi("chr1:2,100-2,200")]),
        ["perturbations.0.roi.rows", "chr1:2,100-2,200 is on chr1", "perturbations on chr2"]),
    "roi on another chromosome": (
        lambda raw, tmp: raw.update(regions=["chr1:2,000-2,400"], perturbations=[_roi("chr2:1,000-1,100")]),
        ["perturbations.0.roi.rows", "is on chr2", "perturbations on chr1"]),
    "roi cols on another chromosome": (
        lambda raw, tmp: raw.update(regions=["chr1:2,000-2,400"], perturbations=[_roi("chr1:2,100-2,200", "chr2:1-100")]),
        ["perturbations.0.roi.cols", "is on chr2"]),
    "roi off some window's map": (
        lambda raw, tmp: raw.update(regions=["chr1:2,000-2,400"], perturbations=[_roi("chr1:2,300-2,400")]),
        ["perturbations.0.roi.rows", "does not overlap the map of the model window chr1:1,754-2,266",
         "deletion chr1:2,000-2,020"]),
    "attribution target off a tiled window's map": (
        lambda raw, tmp: raw.update(regions=["chr1:2,000-2,400"], perturbations=[_block_target("chr1:1,900-1,950")]),
        ["perturbations.0.target.rows", "does not lie inside the map of the model window chr1:2,072-2,584"]),
    "attribution target on another chromosome": (
        lambda raw, tmp: raw.update(regions=["chr1:2,000-2,400"],
                                    perturbations=[{**_block_target("chr1:2,100-2,200"), "target": {
                                        "kind": "difference", "rows": "chr1:2,100-2,200", "cols": "chr1:2,100-2,200",
                                        "rows_b": "chr2:100-200", "cols_b": "chr1:2,100-2,200"}}]),
        ["perturbations.0.target.rows_b", "is on chr2"]),
    "roi a whole chromosome": (
        lambda raw, tmp: raw.update(regions=["chr1:2,000-2,400"], perturbations=[_roi("chr1")]),
        ["perturbations.0.roi.rows", "'chr1' is a whole chromosome"]),
    "inf in a bigWig": (
        lambda raw, tmp: raw["tracks"][0].update(path=str(_inf_bigwig(tmp / "inf.bw"))),
        ["track ctcf", "inf.bw", "chr2 holds the value inf"]),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", list(WRONG_SCIENCE))
def test_wrong_science_is_refused_up_front_naming_the_field(case, command, toy_paths, tmp_path, capsys):
    mutate, messages = WRONG_SCIENCE[case]
    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr")
    mutate(raw, tmp_path)
    spec = write_spec(tmp_path / "spec.yaml", raw)
    assert main([command, str(spec), *(["--no-progress"] if command == "run" else [])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("screening: error:") and all(m in err for m in messages), err
    assert not list(tmp_path.glob("out.zarr*"))


def test_roi_and_target_inside_every_window_still_validate(toy_paths, tmp_path, capsys):
    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr", regions=["chr1:2,000-2,400"])
    raw["perturbations"] = [_roi("chr1:2,150-2,250"), _block_target("chr1:2,100-2,200")]
    assert main(["validate", str(write_spec(tmp_path / "spec.yaml", raw))]) == 0
    assert capsys.readouterr().out.startswith("ok:")


def test_non_finite_model_output_fails_the_screen_and_leaves_the_unit_not_done(ray_session, toy_paths, tmp_path, capsys):
    model = {
        "kind": "user", "import_path": "screening_nonfinite_model:NonFiniteContactModel", "python_path": [str(TEST_MODELS)],
        "config": {"fill": "nan", "above": 2.0, "n_tracks": 2, "bin_size": 32, "hidden": 4}, "random_seed": 0,
        "declare": {"window_length": 512, "bin_size": 32, "n_bins": 16, "input_layout": "NCL", "alphabet": "ACGT",
                    "n_value": 0.25, "tracks": ["ctcf", "atac"], "symmetric": True},
    }
    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr", model=model, regions=["chr1:2,000-2,080"])
    assert main(["run", str(write_spec(tmp_path / "spec.yaml", raw)), "--no-progress", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "screening: error: work unit chr1/del20#0: model output is not finite for the reference window chr1:" in err, err
    from screening.store.writer import ResultStore

    store = ResultStore(tmp_path / "out.zarr")
    assert not store.done_mask("chr1", "del20").any()
    assert main(["info", str(tmp_path / "out.zarr")]) == 0
    assert json.loads(capsys.readouterr().out)["complete"] is False


# --- hostile input refused up front (reliability issue, items 11-13): exit 2, a message naming the
# field/file/variant, and no store; checked by `validate` and by `run` (which then never starts Ray) ----


def _refused(raw: dict, tmp_path: Path, capsys, *messages: str, commands=("validate", "run")) -> None:
    """Both commands exit 2 with every message on stderr, and nothing is written at output.store."""
    store = Path(raw["output"]["store"])
    before = sorted(store.parent.glob(store.name + "*")) if store.parent.is_dir() else []
    spec = write_spec(tmp_path / "spec.yaml", raw)
    for command in commands:
        argv = [command, str(spec)] + (["--no-progress", "--no-plots"] if command == "run" else [])
        assert main(argv) == 2, command
        err = capsys.readouterr().err
        assert err.startswith("screening: error:") and all(m in err for m in messages), (command, err)
        assert "Traceback" not in err
    assert (sorted(store.parent.glob(store.name + "*")) if store.parent.is_dir() else []) == before


@pytest.fixture
def own_toy(tmp_path) -> dict[str, Path]:
    """A toy genome of this test's own, free to be damaged."""
    return write_toy_genome(tmp_path / "data")


def test_truncated_fasta_behind_a_stale_index_is_refused(own_toy, tmp_path, capsys):
    import os

    assert main(["validate", str(write_spec(tmp_path / "spec.yaml", toy_spec_dict(own_toy, tmp_path / "out.zarr")))]) == 0
    fasta = own_toy["fasta"]
    fasta.write_bytes(fasta.read_bytes()[:-700])  # cut after indexing ...
    os.utime(f"{fasta}.fai")  # ... and the index looks fresh (copied along, touched)
    _refused(toy_spec_dict(own_toy, tmp_path / "out.zarr"), tmp_path, capsys, str(fasta), "truncated or edited")


def _corrupt_data_block(path: Path) -> Path:
    """Overwrite the middle of a bigWig's data section (between fullDataOffset and fullIndexOffset)."""
    import struct

    data = bytearray(path.read_bytes())
    data_offset, index_offset = struct.unpack_from("<QQ", data, 16)
    middle = (data_offset + 8 + index_offset) // 2
    data[middle : middle + 32] = bytes(b ^ 0xFF for b in data[middle : middle + 32])
    path.write_bytes(bytes(data))
    return path


def test_bigwig_with_a_corrupt_data_block_is_refused(own_toy, tmp_path, capsys):
    _corrupt_data_block(own_toy["atac"])
    _refused(toy_spec_dict(own_toy, tmp_path / "out.zarr"), tmp_path, capsys, str(own_toy["atac"]), "cannot be read")


def _sv_vcf(tmp_path: Path, toy_paths, length: int, kind: str = "DUP") -> Path:
    anchor = "ACGT"[Genome(toy_paths["fasta"]).fetch("chr1", 2_999, 3_000)[0]]
    path = tmp_path / "sv.vcf"
    path.write_text(
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        f"chr1\t3000\tbigdup\t{anchor}\t<{kind}>\t.\t.\tEND={3000 + length}\n"
    )
    return path


def test_variant_longer_than_the_model_window_is_refused_or_skipped(toy_paths, tmp_path, capsys):
    # the toy model's window is 512 bp: a 600 bp <DUP> cannot be built in it (as 500 kb cannot in 1 Mb)
    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr", regions=[])
    raw["perturbations"] = [{"kind": "variants", "vcf": str(_sv_vcf(tmp_path, toy_paths, 600))}]
    _refused(raw, tmp_path, capsys, "sv.vcf:3 bigdup chr1:3000", "<DUP> changes 600 bp", "model window (512 bp)")
    raw["perturbations"].append({"kind": "deletion", "name": "d", "width": 20, "step": 20, "regions": ["chr1:2,000-2,040"]})
    raw["invalid_policy"] = "skip"
    assert main(["validate", str(write_spec(tmp_path / "spec.yaml", raw))]) == 0
    err = capsys.readouterr().err
    assert "variants: skipped 1 perturbation(s)" in err and "bigdup" in err and "provenance.skipped" in err, err


def test_tiled_width_longer_than_the_model_window_is_refused(toy_paths, tmp_path, capsys):
    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr", regions=["chr1:2,000-3,000"])
    raw["perturbations"] = [{"kind": "inversion", "width": 600, "step": 600}]
    _refused(raw, tmp_path, capsys, "perturbations.0.width", "512 bp")


@pytest.mark.parametrize(
    "settings, messages",
    [
        ({"method": "integrated_gradients", "n_steps": 1}, ["perturbations.0.attribution.n_steps", "greater than or equal to 2"]),
        ({"method": "deeplift_shap"}, ["perturbations.0.attribution", "baseline: 'zeros'", "baseline: shuffle"]),
        ({"method": "deeplift", "checkpoint": True}, ["perturbations.0.attribution", "checkpoint: true"]),
        ({"method": "deeplift_shap", "baseline": "shuffle", "checkpoint": True}, ["checkpoint: true"]),
    ],
)
def test_attribution_settings_the_method_cannot_run_are_refused(toy_paths, tmp_path, capsys, settings, messages):
    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr", regions=["chr1:2,000-2,100"])
    raw["perturbations"] = [{"kind": "attribution", **settings}]
    _refused(raw, tmp_path, capsys, *messages)


@pytest.mark.parametrize("method", ["deeplift", "deeplift_shap"])
def test_deeplift_on_a_model_with_attention_is_refused_before_the_store(toy_paths, tmp_path, capsys, method):
    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr", regions=["chr1:2,000-2,100"])
    raw["perturbations"] = [{"kind": "attribution", "method": method, "baseline": "shuffle"}]
    _refused(raw, tmp_path, capsys, f"perturbations.0.method: {method}: DeepLIFT (captum) has no rule for: MultiheadAttention")


@pytest.mark.parametrize("name", ["zarr.json", "ZARR.JSON", ".zattrs", "chunk_done", "start", "coordinates", "a/b", "..",
                                  "with space", "tab\there", "__dunder", "", "x" * 101, "ü-umlaut"])
def test_analysis_names_the_store_cannot_hold_are_refused(toy_paths, tmp_path, capsys, name):
    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr")
    raw["perturbations"][0]["name"] = name
    _refused(raw, tmp_path, capsys, "perturbations.0.deletion.name")


def test_store_under_a_file_or_in_a_read_only_folder_is_refused_before_ray(toy_paths, tmp_path, capsys, monkeypatch):
    import workers.driver

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start for a store that cannot be written")

    monkeypatch.setattr(workers.driver, "_init_ray", no_ray)
    (tmp_path / "plain").write_text("a file")
    raw = toy_spec_dict(toy_paths, tmp_path / "plain" / "out.zarr")
    _refused(raw, tmp_path, capsys, "output.store", f"{tmp_path / 'plain'} is a file")
    raw = toy_spec_dict(toy_paths, tmp_path / "plain")  # the store path is itself a file
    _refused(raw, tmp_path, capsys, "output.store", "is a file, not a result store")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        _refused(toy_spec_dict(toy_paths, read_only / "out.zarr"), tmp_path, capsys, "output.store", f"folder {read_only} is not writable")
    finally:
        read_only.chmod(0o755)
    assert list(read_only.iterdir()) == []


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"name: \xff\xfe\xfa toy\n"])
def test_binary_spec_is_refused_naming_the_file(tmp_path, capsys, content):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(content)
    for command in ("validate", "run"):
        assert main([command, str(spec)]) == 2
        err = capsys.readouterr().err
        assert f"spec file {spec} is not" in err and "Traceback" not in err, err


def test_deeply_nested_spec_is_refused_quickly(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text('{"name": ' + "[" * 10_000 + "]" * 10_000 + "}")
    for command in ("validate", "run"):
        assert main([command, str(spec)]) == 2
        assert "nested too deeply" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"chr1\t2000\t2400\n\x00\x00\x00\x01", b"chr1\t2000\t2400\n\xff\xfe\x00garbage"])
def test_binary_bed_is_refused_naming_the_file(toy_paths, tmp_path, capsys, content):
    bed = tmp_path / "regions.bed"
    bed.write_bytes(content)
    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr", regions=[], bed=str(bed))
    _refused(raw, tmp_path, capsys, f"BED file {bed} is not")


def test_disk_full_mid_run_exits_2_and_leaves_a_resumable_store(toy_paths, tmp_path, capsys, monkeypatch):
    import errno

    import workers.driver
    from screening.prepare import prepare_screen
    from screening.spec import load_spec
    from screening.store.writer import open_or_create_store

    class FullDisk:  # a dispatcher whose first chunk write finds the disk full, as a worker would
        def __init__(self, *args, **kwargs):
            self.names, self.retries, self.damaged = [], 0, []

        def run(self, units):
            raise OSError(errno.ENOSPC, "No space left on device")

        def stop(self):
            pass

    monkeypatch.setattr(workers.driver, "_init_ray", lambda spec: False)
    monkeypatch.setattr(workers.driver, "_Dispatcher", FullDisk)
    store = tmp_path / "out.zarr"
    spec = write_spec(tmp_path / "spec.yaml", toy_spec_dict(toy_paths, store))
    assert main(["run", str(spec), "--no-progress", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert f"disk full while writing {store}; free space and run the same command again to resume" in err, err
    assert "Traceback" not in err
    assert not open_results(store).is_complete
    loaded = load_spec(spec)
    _, resumed = open_or_create_store(store, loaded.model_dump(mode="json"), loaded.science_hash(),
                                      prepare_screen(loaded).provenance, prepare_screen(loaded).plan.layouts)
    assert resumed  # the same spec picks the store up again


def test_disk_full_inside_a_ray_worker_is_recognised():
    import errno

    import ray.exceptions

    from screening.io.paths import is_disk_full

    wrapped = ray.exceptions.RayTaskError("run", "traceback", OSError(errno.ENOSPC, "No space left")).as_instanceof_cause()
    assert is_disk_full(wrapped)
    assert not is_disk_full(ray.exceptions.RayTaskError("run", "traceback", ValueError("x")).as_instanceof_cause())
    assert not is_disk_full(OSError(errno.EACCES, "denied"))


def test_bool_for_an_integer_field_is_refused(toy_paths, tmp_path, capsys):
    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr")
    raw["perturbations"][0]["width"] = True
    _refused(raw, tmp_path, capsys, "perturbations.0.deletion.width", "valid integer, got true (a boolean)")


@pytest.mark.parametrize("option", ["--workers", "--batch-size"])
@pytest.mark.parametrize("value", ["0", "-1", "١", "1_0"])
def test_workers_and_batch_size_must_be_positive(toy_paths, tmp_path, capsys, option, value):
    spec = write_spec(tmp_path / "spec.yaml", toy_spec_dict(toy_paths, tmp_path / "out.zarr"))
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(spec), option, value])
    assert exit_.value.code == 2
    assert f"argument {option}: {value} is not a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize("region, message", [
    ("chr1:２,０００-２,４００", "non-ASCII digits"),
    ("chr1:٢٠٠٠-٢٤٠٠", "non-ASCII digits"),
    ("chr1:2,0,00-2,400", "out of place"),
    ("chr1:2000-2400,", "out of place"),
])
def test_region_with_foreign_digits_or_stray_commas_is_refused(toy_paths, tmp_path, capsys, region, message):
    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr", regions=[region])
    _refused(raw, tmp_path, capsys, "regions", region, message)


def test_yaml_region_list_split_at_its_commas_gets_a_quoting_hint(toy_paths, tmp_path, capsys):
    text = yaml.safe_dump(toy_spec_dict(toy_paths, tmp_path / "out.zarr")).replace(
        "regions:\n- chr1:2,000-2,400\n- chr2:1,000-1,200\n", "regions: [chr1:2,000-2,400]\n"
    )
    assert "regions: [chr1:2,000-2,400]" in text
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    for command in ("validate", "run"):
        assert main([command, str(spec)]) == 2
        err = capsys.readouterr().err
        assert "YAML split an unquoted region at its commas: quote it, e.g. ['chr1:2,000-2,400']" in err, err


def test_skipped_vcf_records_are_counted_on_stderr(toy_paths, tmp_path, capsys):
    genome = Genome(toy_paths["fasta"])
    base = "ACGT"[genome.fetch("chr1", 2_100, 2_101)[0]]
    alt = "ACGT"[("ACGT".index(base) + 1) % 4]
    vcf = tmp_path / "v.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        f"chr1\t2101\tsnv\t{base}\t{alt}\t.\t.\t.\n"
        f"chr1\t2101\tbnd\t{base}\t{base}[chr2:100[\t.\t.\tSVTYPE=BND\n"
        f"chr1\t2101\tcnv\t{base}\t<CNV>\t.\t.\tEND=2200\n"
        f"chr1\t2101\tsame\t{base}\t{base}\t.\t.\t.\n"
    )
    raw = toy_spec_dict(toy_paths, tmp_path / "out.zarr", regions=[])
    raw["perturbations"] = [{"kind": "variants", "vcf": str(vcf)}]
    assert main(["validate", str(write_spec(tmp_path / "spec.yaml", raw))]) == 0
    err = capsys.readouterr().err
    assert "variants: skipped 3 perturbation(s)" in err and "line 4 bnd" in err and "provenance.skipped" in err, err


# --------------------------------------------------------------------------- damaged chunks, --verify, one driver per store


def test_damaged_chunk_is_exit_2_and_run_verify_recomputes_it(finished, tmp_path, capsys, monkeypatch):
    """A flipped bit and random bytes in score chunks: query/export/info name the chunk (exit 2), a plain
    resume does not crash, ``run --verify`` recomputes exactly the damaged units, and the results equal
    the original ones."""
    spec, original = finished
    store = tmp_path / "copy.zarr"
    # one object per unit's chunk to damage: a format 2 store (format 3 packs a block's units in one shard)
    monkeypatch.setattr("screening.store.writer.FORMAT_VERSION", 2)
    assert main(["run", str(spec), "--store", str(store), "--no-progress", "--no-plots"]) == 0
    before = open_results(original).query("chr1").compute()
    flipped = store / "chr1" / "del20" / "impact_mean_abs" / "c" / "1"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x04
    flipped.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["query", str(store), "chr1"]) == 2
    err = capsys.readouterr().err
    assert f"{store}: chunk 1 of array chr1/del20/impact_mean_abs (chr1:2,080-2,160) is damaged" in err
    assert "Traceback" not in err and "--verify" in err
    garbage = store / "chr1" / "del20" / "impact_abs_mean" / "c" / "3"
    garbage.write_bytes(np.random.default_rng(1).bytes(garbage.stat().st_size))
    assert main(["export", str(store), str(tmp_path / "x.bedGraph"), "--score", "impact_abs_mean"]) == 2
    assert "chunk 3 of array chr1/del20/impact_abs_mean" in capsys.readouterr().err
    assert main(["info", str(store)]) == 0
    assert "crc32c" in json.loads(capsys.readouterr().out)["integrity"]

    # A plain resume has nothing to compute: it does not crash (it cannot see damage without reading)
    # and the report's read of the scores names the chunk.
    assert main(["run", str(spec), "--store", str(store), "--no-progress", "--no-plots"]) == 2
    assert "is damaged" in capsys.readouterr().err

    assert main(["run", str(spec), "--store", str(store), "--no-progress", "--no-plots", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "recomputed damaged chr1/del20 chunk 1" in out and "recomputed damaged chr1/del20 chunk 3" in out
    assert "resumed 8 of 30 perturbations" in out  # two units of 4
    after = open_results(store).query("chr1").compute()
    for score in ("impact_mean_abs", "impact_abs_mean"):
        np.testing.assert_array_equal(after[score].values, before[score].values)
    assert open_results(store).is_complete
    assert not Path(f"{store}.screening-lock").exists()


def test_second_driver_on_a_store_is_refused_naming_the_owner(finished, tmp_path, capsys):
    """While one driver holds a store's lease, another run (also with --overwrite) stops with exit 2 naming
    the owner, and touches nothing."""
    import shutil

    from screening.store.lease import StoreLease

    spec, original = finished
    fresh, existing = tmp_path / "new.zarr", tmp_path / "old.zarr"
    shutil.copytree(original, existing)
    before = snapshot(existing)
    for store, extra in ((fresh, []), (existing, ["--overwrite"])):
        with StoreLease(store) as held:  # another driver, running
            capsys.readouterr()
            assert main(["run", str(spec), "--store", str(store), "--no-progress", "--no-plots", *extra]) == 2
            err = capsys.readouterr().err
            assert f"{store} is in use by another screening driver" in err and f"pid {held.owner['pid']}" in err
    assert not fresh.exists()
    assert snapshot(existing) == before
