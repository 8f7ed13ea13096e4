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
from screening.engine import run_deletions
from screening.io.genome import Genome
from screening.io.tracks import Track, TrackSet
from screening.models.checkpoint import save_corigami_checkpoint
from screening.models.corigami import ConvTransModel, CorigamiAdapter, CorigamiConfig

from conftest import TOY_CONFIG, toy_spec_dict


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def write_spec(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def snapshot(path: Path) -> dict[str, str]:
    """Every file under a directory with its content hash."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(ray_local, toy_paths, tmp_path_factory):
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


def test_rerun_resumes_only_unfinished_chunks(ray_local, toy_paths, tmp_path, capsys):
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


def test_two_workers_same_results(ray_local, toy_paths, finished, tmp_path):
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
    "corrupt fasta": (lambda raw, tmp: (tmp / "bad.fa").write_bytes(b"\x00\x01garbage\xff" * 50) and raw["genome"].update(fasta=str(tmp / "bad.fa")), "bad.fa"),
    "missing bigwig": (lambda raw, tmp: raw["tracks"][0].update(path=str(tmp / "nope.bw")), "nope.bw"),
    "corrupt bigwig": (lambda raw, tmp: (tmp / "bad.bw").write_bytes(b"not a bigwig" * 100) and raw["tracks"][1].update(path=str(tmp / "bad.bw")), "bad.bw"),
    "bigwig without chromosome": (lambda raw, tmp: raw["tracks"][0].update(path=str(_bad_bigwig_without_chr2(tmp / "c.bw"))), "chr2"),
    "checkpoint of another size": (lambda raw, tmp: raw.update(model={"checkpoint": str(_other_size_checkpoint(tmp / "m.pt")), "config": TOY_CONFIG}), "shape"),
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


def test_mixed_kinds_screen(ray_local, toy_paths, tmp_path, capsys):
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


def test_vcf_ref_mismatch_fails_or_is_skipped_and_listed(toy_paths, tmp_path, capsys, ray_local):
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


def test_keep_maps_stores_top_delta_maps(ray_local, toy_paths, tmp_path):
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
    from screening.engine import predict_deletion

    ref, deleted, _ = predict_deletion(adapter, genome, tracks, "chr1", int(maps["start"][0]), 20)
    np.testing.assert_allclose(maps.values[0], deleted - ref, atol=1e-5)
    assert np.abs(maps.values[0]).mean() == pytest.approx(scores["impact_mean_abs"].max().item(), rel=1e-3)
    ism = results.top_maps("chr1:2,000-2,006", analysis="ism")
    assert ism.shape == (2, 16, 16) and set(ism["base"].values) <= set("ACGT")  # 6 positions, 2 units, top 1 each



def test_top_maps_refused_without_keep_maps(finished):
    from screening.results import ResultsError

    with pytest.raises(ResultsError, match="kept no"):
        open_results(finished[1]).top_maps("chr1")


# --- gradient attribution as an analysis ----------------------------------------------------------------


def test_attribution_stitched_track_matches_direct_windows(ray_local, toy_paths, tmp_path):
    from screening.attribution import attribute
    from screening.targets import make_target

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
