"""Reference maps tiled along regions and written as .cool (screening.predict, `screening predict`)."""

from __future__ import annotations

import json

import cooler
import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import toy_spec_dict
from screening.cli import main
from screening.models.base import WindowGeometry
from screening.predict import (
    BandMean, PredictError, PredictSummary, coarsen_pixels, default_resolutions, dense_map, predict_regions, predict_to_cool,
    tile_windows, write_cool,
)
from screening.core.regions import RegionError, parse_region
from screening.spec import parse_spec

TOY = WindowGeometry(window_length=512, bin_size=32, n_bins=16)


def regions(*texts):
    return [parse_region(t) for t in texts]


# --------------------------------------------------------------------------- tiling


@pytest.mark.parametrize("geometry", [TOY, WindowGeometry(window_length=600, bin_size=32, n_bins=16, map_offset=44)])
@pytest.mark.parametrize("stride", [None, 1, 5, 16])
def test_tiles_lie_on_the_grid_inside_the_chromosome_and_cover_the_region(geometry, stride):
    region = parse_region("chr1:1,000-4,000")
    tiling = tile_windows([region], geometry, 6_000, stride)
    starts = tiling.window_starts
    assert np.all((starts + geometry.map_offset) % geometry.bin_size == 0)  # every map on one bin grid
    assert np.all(starts >= 0) and np.all(starts + geometry.window_length <= 6_000)
    assert np.all(np.diff(tiling.map_start_bins) <= (stride or 8)) and np.all(np.diff(tiling.map_start_bins) > 0)
    covered = np.zeros(200, bool)
    for first in tiling.map_start_bins:
        covered[first : first + geometry.n_bins] = True
    assert covered[region.start // 32 : -(-region.end // 32)].all()
    assert tiling.first_bin == region.start // 32 and tiling.keep.sum() == -(-region.end // 32) - region.start // 32


def test_a_region_narrower_than_a_map_gets_one_centred_window_shifted_inside_near_the_ends():
    (middle,) = tile_windows(regions("chr1:3,000-3,100"), TOY, 6_000).map_start_bins
    assert middle == 93 - (16 - 4) // 2  # bins 93..96 centred in a 16-bin map
    assert tile_windows(regions("chr1:0-100"), TOY, 6_000).window_starts.tolist() == [0]
    assert tile_windows(regions("chr1:5,950-6,000"), TOY, 6_000).window_starts.tolist() == [(6_000 - 512) // 32 * 32]


def test_tiling_refuses_what_cannot_be_tiled():
    with pytest.raises(PredictError, match="stride_bins: 17 must be between 1 and the map width"):
        tile_windows(regions("chr1:0-1,000"), TOY, 6_000, stride_bins=17)
    with pytest.raises(RegionError, match=r"chr1 \(500 bp\) is shorter than the model window \(512 bp\)"):
        tile_windows(regions("chr1:0-100"), TOY, 500)
    with pytest.raises(RegionError, match="one chromosome"):
        tile_windows(regions("chr1:0-100", "chr2:0-100"), TOY, 6_000)


# --------------------------------------------------------------------------- averaging


@pytest.mark.parametrize("symmetric", [True, False])
def test_band_mean_equals_the_mean_of_the_overlapping_maps(symmetric):
    rng = np.random.default_rng(0)
    n, starts = 6, [10, 13, 14, 20]
    maps = [rng.normal(size=(n, n)) for _ in starts]
    if symmetric:
        maps = [(m + m.T) / 2 for m in maps]
    band = BandMean(10, 16, n, symmetric)
    total, count = np.zeros((16, 16)), np.zeros((16, 16))
    for start, m in zip(starts, maps):
        band.add(start, m)
        total[start - 10 : start - 10 + n, start - 10 : start - 10 + n] += m
        count[start - 10 : start - 10 + n, start - 10 : start - 10 + n] += 1
    pixels = band.pixels()
    assert (np.diff(pixels["bin1_id"]) >= 0).all()
    assert len(pixels) == (np.triu(count) > 0).sum() if symmetric else (count > 0).sum()
    want = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    np.testing.assert_allclose(dense_map(pixels, 10, 16, symmetric), want)
    kept = band.pixels(keep=np.arange(16) < 8)
    assert kept["bin1_id"].max() < 18 and kept["bin2_id"].max() < 18 and len(kept) < len(pixels)
    with pytest.raises(ValueError, match="leaves the band"):
        band.add(22, maps[0])


# --------------------------------------------------------------------------- the model, and the file


@pytest.fixture
def toy(toy_paths, tmp_path):
    from screening.prepare import load_configured_model, open_inputs

    spec = parse_spec(toy_spec_dict(toy_paths, tmp_path / "unused.zarr"))
    genome, tracks = open_inputs(spec)
    adapter, _ = load_configured_model(spec)
    return adapter, genome, tracks


def test_without_overlap_every_pixel_is_its_window_s_prediction(toy, one_thread):
    adapter, genome, tracks = toy
    (pixels,) = predict_regions(adapter, genome, tracks, regions("chr1:1,024-2,048"), batch_size=3, stride_bins=16).values()
    assert not adapter.symmetric and len(pixels) == 2 * 16 * 16  # two windows side by side, every pixel
    for k, start in enumerate((1_024, 1_536)):
        want = adapter.predict(genome.fetch("chr1", start, start + 512)[None], tracks.fetch("chr1", start, start + 512)[None])[0]
        # other batch compositions than here: equal up to float noise
        np.testing.assert_allclose(dense_map(pixels, 32 + 16 * k, 16, False), want, rtol=1e-5, atol=1e-6)


def test_overlapping_windows_are_averaged_and_symmetrized_on_request(toy, one_thread):
    adapter, genome, tracks = toy
    (pixels,) = predict_regions(adapter, genome, tracks, regions("chr1:1,024-1,792"), stride_bins=8, symmetrize=True).values()
    assert (pixels["bin1_id"] <= pixels["bin2_id"]).all()
    starts = (1_024, 1_280)  # maps at bins 32 and 40: bins 40..47 seen twice
    maps = [adapter.predict(genome.fetch("chr1", s, s + 512)[None], tracks.fetch("chr1", s, s + 512)[None])[0] for s in starts]
    maps = [(m + m.T) / 2 for m in maps]
    got = dense_map(pixels, 32, 24, True)
    np.testing.assert_allclose(got[8:16, 8:16], (maps[0][8:, 8:] + maps[1][:8, :8]) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[:8, :8], maps[0][:8, :8], rtol=1e-5, atol=1e-6)
    assert np.isnan(got[0, 20])  # 20 bins apart: in no window


def test_cool_file_reads_back_with_provenance(toy_paths, tmp_path, one_thread):
    spec = parse_spec(toy_spec_dict(toy_paths, tmp_path / "unused.zarr"))
    out = tmp_path / "maps.cool"
    done = predict_to_cool(spec, out, ["chr1:1,000-3,000", "chr2:0-3,000"], stride_bins=8, symmetrize=True, progress=False)
    clr = cooler.Cooler(str(out))
    assert clr.binsize == 32 and clr.chromnames == ["chr1", "chr2"] and clr.storage_mode == "symmetric-upper"
    assert clr.info["nnz"] == done.n_pixels == sum(len(p) for p in done.pixels.values())
    assert done.resolutions == (32,) and done.path == str(out) and done.symmetric
    matrix = clr.matrix(balance=False, sparse=True).fetch("chr2:0-3,000").toarray()
    want = np.nan_to_num(dense_map(done.pixels["chr2"], 0, 94, True))
    np.testing.assert_allclose(matrix, want, rtol=1e-5, atol=1e-6)
    meta = clr.info["metadata"]
    assert meta["regions"] == ["chr1:1,000-3,000", "chr2:0-3,000"] and meta["stride_bins"] == 8 and meta["symmetrized"]
    assert meta["provenance"]["model"]["checksum"] and meta["provenance"]["genome"]["sha256"]
    assert meta["spec"]["model"]["kind"] == "corigami" and "log(1 + normalised Hi-C" in meta["values"]
    assert "not read counts" in meta["count"] and "'cooler zoomify' sums" in meta["count"]  # what count holds, and the trap


def test_a_failed_write_leaves_no_file_and_the_old_one_intact(tmp_path):
    out = tmp_path / "maps.cool"
    out.write_text("previous")
    pixels = {"chr1": BandMean(0, 4, 2, True).pixels()}
    with pytest.raises(TypeError):
        write_cool(out, {"chr1": 128}, 32, pixels, True, metadata={"bad": object()})
    assert out.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["maps.cool"]


# --------------------------------------------------------------------------- multi-resolution (.mcool)


def brute_force_coarse(fine: np.ndarray, factor: int) -> np.ndarray:
    """Each coarse pixel: the mean of the fine pixels (full matrix, NaN = not predicted) it covers."""
    n = fine.shape[0]
    m = -(-n // factor)
    out = np.full((m, m), np.nan)
    for i in range(m):
        for j in range(m):
            block = fine[i * factor : (i + 1) * factor, j * factor : (j + 1) * factor]
            if np.isfinite(block).any():
                out[i, j] = np.nanmean(block)
    return out


def stored_dense(clr: cooler.Cooler, chrom: str) -> np.ndarray:
    """The file's pixels of ``chrom`` as a full matrix, NaN where no pixel is stored."""
    lo, hi = clr.extent(chrom)
    pixels = clr.pixels()[:]
    pixels = pixels[(pixels["bin1_id"] >= lo) & (pixels["bin1_id"] < hi)]
    return dense_map(pixels.assign(bin1_id=pixels["bin1_id"] - lo, bin2_id=pixels["bin2_id"] - lo), 0, hi - lo,
                     clr.storage_mode == "symmetric-upper")


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("factor", [1, 2, 3, 4, 7])
def test_coarsening_is_the_mean_of_the_fine_pixels_present(symmetric, factor):
    rng = np.random.default_rng(factor)
    n = 23
    fine = rng.normal(3.3, 1.0, size=(n, n))
    fine[np.abs(np.subtract.outer(np.arange(n), np.arange(n))) > 9] = np.nan  # a band, as predicted maps are
    fine[rng.random((n, n)) < 0.2] = np.nan  # and holes
    if symmetric:
        fine = np.triu(fine) + np.triu(fine, 1).T  # NaN propagates to the mirror image
    upper = np.subtract.outer(np.arange(n), np.arange(n)) <= 0
    i, j = np.nonzero(np.isfinite(fine) & (upper if symmetric else True))
    pixels = pd.DataFrame({"bin1_id": i, "bin2_id": j, "count": fine[i, j]})
    coarse = coarsen_pixels(pixels, factor, symmetric)
    assert (np.diff(coarse["bin1_id"] * 1000 + coarse["bin2_id"]) > 0).all()  # sorted, one row per pixel
    got = dense_map(coarse, 0, -(-n // factor), symmetric)
    np.testing.assert_allclose(got, brute_force_coarse(fine, factor), rtol=1e-12, equal_nan=True)
    if factor == 1:
        pd.testing.assert_frame_equal(coarse, pixels, check_dtype=False)


def test_default_resolutions_double_up_to_one_higlass_tile_over_the_genome():
    assert default_resolutions(32, {"chr1": 6_000, "chr2": 3_000}) == [32, 64]  # 9,000 bp / 256 bins = 36 bp
    assert default_resolutions(8_192, {"chr1": 248_956_422})[-1] == 1_048_576  # ≥ 972,487 bp
    assert default_resolutions(100, {"chr1": 100}) == [100]


@pytest.mark.parametrize("symmetrize", [True, False])
def test_mcool_coarser_levels_are_means_of_the_predicted_pixels(toy_paths, tmp_path, one_thread, symmetrize):
    spec = parse_spec(toy_spec_dict(toy_paths, tmp_path / "unused.zarr"))
    out = tmp_path / "maps.mcool"
    done = predict_to_cool(spec, out, ["chr1:1,000-3,000", "chr2:0-3,000"], stride_bins=8, symmetrize=symmetrize,
                           progress=False, resolutions=[256, 64, 96])
    assert isinstance(done, PredictSummary) and done.resolutions == (32, 64, 96, 256) and done.bin_size == 32
    assert sorted(cooler.fileops.list_coolers(str(out))) == sorted(f"/resolutions/{r}" for r in done.resolutions)
    for resolution in done.resolutions:
        clr = cooler.Cooler(f"{out}::resolutions/{resolution}")
        assert clr.binsize == resolution and clr.chromnames == ["chr1", "chr2"]
        assert clr.storage_mode == ("symmetric-upper" if symmetrize else "square")
        meta = clr.info["metadata"]
        assert meta["resolution"] == resolution and meta["base_resolution"] == 32
        assert "not read counts" in meta["count"] and meta["regions"] == ["chr1:1,000-3,000", "chr2:0-3,000"]
        assert meta["aggregation"].startswith("mean") if resolution > 32 else "base" in meta["aggregation"]
        for chrom, size in (("chr1", 6_000), ("chr2", 3_000)):
            fine = dense_map(done.pixels[chrom], 0, -(-size // 32), symmetrize)
            want = brute_force_coarse(fine, resolution // 32)
            np.testing.assert_allclose(stored_dense(clr, chrom), want, rtol=1e-12, equal_nan=True)
    # a coarse pixel is a mean of log values, never their sum (the bug of `cooler zoomify` on such values)
    coarse = cooler.Cooler(f"{out}::resolutions/256").pixels()[:]["count"]
    fine = cooler.Cooler(f"{out}::resolutions/32").pixels()[:]["count"]
    assert fine.min() - 1e-9 <= coarse.min() and coarse.max() <= fine.max() + 1e-9


def test_mcool_reads_with_cooler_s_own_cli(toy_paths, tmp_path, one_thread):
    from click.testing import CliRunner
    from cooler.cli import cli

    spec = parse_spec(toy_spec_dict(toy_paths, tmp_path / "unused.zarr"))
    out = tmp_path / "maps.mcool"
    done = predict_to_cool(spec, out, ["chr1:1,000-3,000"], progress=False)  # default resolutions
    assert done.resolutions == (32, 64)
    runner = CliRunner()
    listed = runner.invoke(cli, ["ls", str(out)])
    assert listed.exit_code == 0, listed.output
    assert listed.output.split() == [f"{out}::/resolutions/32", f"{out}::/resolutions/64"]
    info = runner.invoke(cli, ["info", f"{out}::resolutions/64"])
    assert info.exit_code == 0 and json.loads(info.output)["bin-size"] == 64, info.output
    dumped = runner.invoke(cli, ["dump", "--join", f"{out}::resolutions/64"])
    assert dumped.exit_code == 0 and len(dumped.output.splitlines()) == cooler.Cooler(f"{out}::resolutions/64").info["nnz"]
    import h5py

    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == "HDF5::MCOOL" and f.attrs["format-version"] == 2
    # the trap the metadata and the README warn of: `cooler zoomify` of a .cool sums the log values
    single = tmp_path / "maps.cool"
    predict_to_cool(spec, single, ["chr1:1,000-3,000"], progress=False)
    zoomed = runner.invoke(cli, ["zoomify", "-r", "32,64", "-o", str(tmp_path / "z.mcool"), str(single)])
    assert zoomed.exit_code == 0, zoomed.output
    summed = cooler.Cooler(f"{tmp_path / 'z.mcool'}::resolutions/64").pixels()[:]
    mean = cooler.Cooler(f"{out}::resolutions/64").pixels()[:]
    pd.testing.assert_frame_equal(summed[["bin1_id", "bin2_id"]], mean[["bin1_id", "bin2_id"]])
    fine = dense_map(done.pixels["chr1"], 0, 188, False)
    blocks = fine[:188, :188].reshape(94, 2, 94, 2)
    i, j = mean["bin1_id"].to_numpy(), mean["bin2_id"].to_numpy()
    np.testing.assert_allclose(summed["count"], np.nansum(blocks, axis=(1, 3))[i, j], rtol=1e-9)
    np.testing.assert_allclose(mean["count"], np.nanmean(blocks, axis=(1, 3))[i, j], rtol=1e-9)


def test_resolutions_are_refused_before_predicting(toy_paths, tmp_path, monkeypatch):
    import screening.predict

    monkeypatch.setattr(screening.predict, "predict_tilings", lambda *a, **k: pytest.fail("predicted anyway"))
    spec = parse_spec(toy_spec_dict(toy_paths, tmp_path / "unused.zarr"))
    with pytest.raises(PredictError, match=r"resolutions: 48 bp is not a multiple of the model's bin size \(32 bp\)"):
        predict_to_cool(spec, tmp_path / "m.mcool", progress=False, resolutions=[64, 48])
    with pytest.raises(PredictError, match="several resolutions are written to a .mcool file"):
        predict_to_cool(spec, tmp_path / "m.cool", progress=False, resolutions=[64])
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the command


def test_cli_predict_writes_cool_and_picture(toy_paths, tmp_path, capsys, one_thread):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(toy_spec_dict(toy_paths, tmp_path / "unused.zarr")))
    out = tmp_path / "pred" / "toy.cool"
    assert main(["predict", str(tmp_path / "s.yaml"), str(out), "--no-progress"]) == 0  # the spec's two regions
    printed = capsys.readouterr().out
    assert f"to {out}" in printed and "chr1:2,000-2,400, chr2:1,000-1,200" in printed
    assert out.with_suffix(".png").stat().st_size > 0
    clr = cooler.Cooler(str(out))
    assert clr.storage_mode == "square"  # C.Origami's maps are not symmetric
    assert json.loads(json.dumps(clr.info["metadata"]))["regions"] == ["chr1:2,000-2,400", "chr2:1,000-1,200"]
    assert "'cooler zoomify' would sum it" in printed and ".mcool" in printed  # the hint


def test_cli_predict_writes_mcool(toy_paths, tmp_path, capsys, one_thread):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(toy_spec_dict(toy_paths, tmp_path / "unused.zarr")))
    out = tmp_path / "toy.mcool"
    assert main(["predict", str(tmp_path / "s.yaml"), str(out), "--no-progress", "--no-plots", "--resolutions", "128, 64"]) == 0
    printed = capsys.readouterr().out
    assert "resolutions: 32, 64, 128 bp" in printed and f"{out}::resolutions/128" in printed
    assert cooler.Cooler(f"{out}::resolutions/128").binsize == 128


@pytest.mark.parametrize(("value", "message"), [
    ("48", "resolutions: 48 bp is not a multiple of the model's bin size (32 bp)"),
    ("64,x", "--resolutions: 64,x is not a comma-separated list of positive integers"),
    ("0", "--resolutions: 0 is not a comma-separated list of positive integers"),
])
def test_cli_predict_refuses_bad_resolutions(toy_paths, tmp_path, capsys, value, message):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(toy_spec_dict(toy_paths, tmp_path / "unused.zarr")))
    out = tmp_path / "toy.mcool"
    try:
        code = main(["predict", str(tmp_path / "s.yaml"), str(out), "--no-progress", "--resolutions", value])
    except SystemExit as exited:  # argparse
        code = exited.code
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--region", "chr1:5,000-7,000"], "--region: region chr1:5,000-7,000 runs past the end of chr1"),
    (["--region", "chrX:0-100"], "chrX"),
    (["--stride-bins", "0"], "stride_bins: 0 must be between 1"),
    (["--batch-size", "0"], "execution.batch_size"),
])
def test_cli_predict_refuses_bad_input_and_writes_nothing(toy_paths, tmp_path, capsys, argv, message):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(toy_spec_dict(toy_paths, tmp_path / "unused.zarr")))
    out = tmp_path / "toy.cool"
    assert main(["predict", str(tmp_path / "s.yaml"), str(out), "--no-progress", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_cli_predict_refuses_a_non_positive_picture_size(toy_paths, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["predict", "s.yaml", str(tmp_path / "toy.cool"), "--plot-bins", "0"])
    assert exited.value.code == 2 and "--plot-bins: 0 is not a positive integer" in capsys.readouterr().err


# --- refused before any prediction: unwritable output, a corrupt bigWig block (reliability) ---------


def test_cli_predict_refuses_an_unwritable_output_before_predicting(toy_paths, tmp_path, capsys, monkeypatch):
    import screening.predict

    monkeypatch.setattr(screening.predict, "predict_tilings", lambda *a, **k: pytest.fail("predicted anyway"))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(toy_spec_dict(toy_paths, tmp_path / "unused.zarr")))
    (tmp_path / "dir.cool").mkdir()
    (tmp_path / "plain").write_text("x")
    for out, message in ((tmp_path / "dir.cool", "is a directory"), (tmp_path / "plain" / "toy.cool", "is a file")):
        assert main(["predict", str(tmp_path / "s.yaml"), str(out), "--no-progress", "--no-plots"]) == 2
        assert f"output {out}" in (err := capsys.readouterr().err) and message in err, err


def test_cli_predict_refuses_a_corrupt_bigwig_block(tmp_path, capsys):
    import struct

    from helpers import write_toy_genome

    paths = write_toy_genome(tmp_path / "data")
    data = bytearray(paths["ctcf"].read_bytes())
    data_offset, index_offset = struct.unpack_from("<QQ", data, 16)
    middle = (data_offset + 8 + index_offset) // 2
    data[middle : middle + 32] = bytes(b ^ 0xFF for b in data[middle : middle + 32])
    paths["ctcf"].write_bytes(bytes(data))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(toy_spec_dict(paths, tmp_path / "unused.zarr")))
    out = tmp_path / "toy.cool"
    assert main(["predict", str(tmp_path / "s.yaml"), str(out), "--no-progress"]) == 2
    assert f"track ctcf ({paths['ctcf']})" in (err := capsys.readouterr().err) and "cannot be read" in err, err
    assert not out.exists()
