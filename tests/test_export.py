"""bedGraph and bigWig exports (screening.store.export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyBigWig
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screening.store import export as export_mod
from screening.store.export import bigwig_intervals, to_bedgraph, to_bigwig
from screening.core.regions import RegionError
from screening.store.reader import ResultsError, open_results
from screening.store.writer import GroupLayout, create_store

from helpers import group_layout

SCORES = ["insulation", "dist"]


def layout(chrom, length, analysis, n, step, width, chunk_size=8) -> GroupLayout:
    start = np.arange(n, dtype=np.int64) * step + 10
    return GroupLayout(
        chrom=chrom,
        chrom_length=length,
        analysis=analysis,
        kind="deletion",
        params={"width": width},
        start=start,
        end=start + width,
        window_start=start - 1_000,
        scores=list(SCORES),
        chunk_size=chunk_size,
    )


def values(lay: GroupLayout, score: str) -> np.ndarray:
    base = np.arange(lay.n, dtype=np.float32) / 4 - 2  # negative, fractional, exact in float32
    return base + (100 if score == "dist" else 0) + (0.125 if lay.chrom == "chr10" else 0)


@pytest.fixture
def results(tmp_path):
    """Store order chr2, chr10, chr1 (not sorted either way); "del" overlapping, "tile" not.

    chr1/del chunk 1 is left unwritten (NaN).
    """
    lays = []
    for chrom, length in (("chr2", 9_000), ("chr10", 6_000), ("chr1", 10_000)):
        lays.append(layout(chrom, length, "del", 37, step=100, width=250))
        lays.append(layout(chrom, length, "tile", 20, step=300, width=200))
    path = tmp_path / "screen.zarr"
    store = create_store(path, {"name": "toy"}, "a" * 64, {}, lays)
    for lay in lays:
        for k in range(lay.n_chunks):
            if (lay.chrom, lay.analysis, k) == ("chr1", "del", 1):
                continue
            sl = lay.chunk_slice(k)
            store.write_chunk(lay.chrom, lay.analysis, k, {s: values(lay, s)[sl] for s in SCORES})
    return open_results(path), {(lay.chrom, lay.analysis): lay for lay in lays}


def read_bedgraph(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None, names=["chrom", "start", "end", "score"], dtype={"chrom": str})


# --------------------------------------------------------------------------- bedGraph


def test_bedgraph_content(results, tmp_path):
    res, lays = results
    out = to_bedgraph(res, tmp_path / "del.bedgraph", "insulation", "del")
    assert out == tmp_path / "del.bedgraph"
    text = out.read_text()
    assert not text.startswith(("track", "#", "chrom"))
    assert all(len(line.split("\t")) == 4 for line in text.splitlines())
    df = read_bedgraph(out)
    # sort -k1,1 -k2,2n order: chromosomes in byte order.
    assert list(dict.fromkeys(df["chrom"])) == ["chr1", "chr10", "chr2"]
    for chrom, rows in df.groupby("chrom", sort=False):
        lay = lays[(chrom, "del")]
        keep = np.ones(lay.n, bool)
        if chrom == "chr1":
            keep[8:16] = False  # unwritten chunk: skipped
        np.testing.assert_array_equal(rows["start"], lay.start[keep])
        np.testing.assert_array_equal(rows["end"], lay.end[keep])
        np.testing.assert_array_equal(rows["score"].to_numpy(np.float32), values(lay, "insulation")[keep])
        assert (np.diff(rows["start"]) > 0).all()
    assert "\t-2.0\n" in text and "\t0.25\n" in text  # shortest float repr


def test_bedgraph_region(results, tmp_path):
    res, lays = results
    out = to_bedgraph(res.path, tmp_path / "r.bg", "dist", "tile", region="chr10:400-1,000")
    df = read_bedgraph(out)
    lay = lays[("chr10", "tile")]
    idx = np.flatnonzero((lay.start < 1000) & (lay.end > 400))
    assert (df["chrom"] == "chr10").all()
    np.testing.assert_array_equal(df["start"], lay.start[idx])
    np.testing.assert_array_equal(df["score"].to_numpy(np.float32), values(lay, "dist")[idx])


@pytest.mark.parametrize("writer", [to_bedgraph, to_bigwig])
def test_export_errors_write_nothing(results, tmp_path, writer):
    res, _ = results
    out = tmp_path / "x.out"
    with pytest.raises(ResultsError, match=r"unknown score 'nope'; available: \['insulation', 'dist'\]"):
        writer(res, out, "nope", "del")
    with pytest.raises(ResultsError, match=r"unknown analysis 'x'"):
        writer(res, out, "dist", "x")
    with pytest.raises(ResultsError, match="several analyses"):
        writer(res, out, "dist")
    with pytest.raises(RegionError, match="chrY"):
        writer(res, out, "dist", "del", region="chrY:1-5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["screen.zarr"]


@pytest.mark.parametrize("writer", [to_bedgraph, to_bigwig])
def test_export_failure_leaves_previous_file(results, tmp_path, monkeypatch, writer):
    res, _ = results
    out = tmp_path / "track.out"
    out.write_text("previous export")
    real = export_mod._one_value_per_row  # both writers read every block's values through it
    calls = []

    def failing(*args):
        calls.append(args)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(*args)

    monkeypatch.setattr(export_mod, "_one_value_per_row", failing)
    with pytest.raises(OSError, match="simulated"):
        writer(res, out, "dist", "del")
    assert out.read_text() == "previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["screen.zarr", "track.out"]


# --------------------------------------------------------------------------- bigWig


def bw_intervals(path, chrom):
    with pyBigWig.open(str(path)) as bw:
        return bw.chroms(), bw.intervals(chrom) or ()


def test_bigwig_non_overlapping_keeps_intervals(results, tmp_path):
    res, lays = results
    out = to_bigwig(res, tmp_path / "tile.bw", "insulation", "tile")
    for chrom in ("chr2", "chr10", "chr1"):
        chroms, got = bw_intervals(out, chrom)
        assert chroms == {"chr2": 9_000, "chr10": 6_000, "chr1": 10_000}
        lay = lays[(chrom, "tile")]
        assert [(s, e) for s, e, _ in got] == list(zip(lay.start.tolist(), lay.end.tolist()))
        np.testing.assert_allclose([v for _, _, v in got], values(lay, "insulation"))


def test_bigwig_overlapping_uses_step_wide_intervals(results, tmp_path):
    res, lays = results
    out = to_bigwig(res, tmp_path / "del.bw", "dist", "del")
    lay = lays[("chr2", "del")]  # start = 10 + 100 i, width 250 → centre 135 + 100 i
    _, got = bw_intervals(out, "chr2")
    assert len(got) == lay.n
    assert got[0][:2] == (10, 185)  # first reaches its own start
    assert got[-1][:2] == (3_685, 3_860)  # last reaches its own end
    for i, (s, e, v) in enumerate(got[1:-1], 1):
        assert (s, e) == (85 + 100 * i, 185 + 100 * i)  # step-wide, centred on start + 125
        assert v == pytest.approx(values(lay, "dist")[i])
    # Unwritten chunk on chr1: a gap, neighbours do not spread into it.
    _, got1 = bw_intervals(out, "chr1")
    assert len(got1) == lay.n - 8
    assert got1[7][1] == 85 + 100 * 8 and got1[8][0] == 85 + 100 * 16


def test_bigwig_region(results, tmp_path):
    res, lays = results
    out = to_bigwig(res, tmp_path / "r.bw", "dist", "tile", region="chr10:400-1,000")
    with pyBigWig.open(str(out)) as bw:
        assert set(bw.chroms()) == {"chr1", "chr2", "chr10"}
        assert bw.intervals("chr1") is None
        got = bw.intervals("chr10")
    lay = lays[("chr10", "tile")]
    idx = np.flatnonzero((lay.start < 1000) & (lay.end > 400))
    assert [(s, e) for s, e, _ in got] == list(zip(lay.start[idx].tolist(), lay.end[idx].tolist()))


# --- zoom levels: written by us (libBigWig keeps one level for fewer than ~16,000 intervals) ---------


def random_track(rng, length, n):
    """Sorted, disjoint intervals with gaps, and float32-exact values, as an export writes them."""
    edges = np.sort(rng.choice(np.arange(1, length), size=2 * n, replace=False))
    lo, hi = edges[0::2], edges[1::2]
    return lo, hi, rng.normal(-1.5, 2.0, n).astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("reduction", [1, 7, 50, 333, 5_000])
def test_zoom_records_equal_a_per_base_brute_force(reduction):
    rng = np.random.default_rng(reduction)
    length = 4_000
    lo, hi, vals = random_track(rng, length, 150)
    per_base = np.full(length, np.nan)
    for a, b, v in zip(lo, hi, vals):
        per_base[a:b] = v
    got = export_mod.zoom_records(lo, hi, vals, reduction)
    bins = [
        k for k in range(-(-length // reduction)) if np.isfinite(per_base[k * reduction : (k + 1) * reduction]).any()
    ]
    assert len(got["start"]) == len(bins)
    for i, k in enumerate(bins):
        window = per_base[k * reduction : (k + 1) * reduction]
        covered = np.flatnonzero(np.isfinite(window)) + k * reduction
        assert (got["start"][i], got["end"][i], got["valid"][i]) == (covered[0], covered[-1] + 1, covered.size)
        assert got["min"][i] == np.nanmin(window) and got["max"][i] == np.nanmax(window)
        assert got["sum"][i] == pytest.approx(np.nansum(window), rel=1e-12, abs=1e-9)
        assert got["sumsq"][i] == pytest.approx(np.nansum(window**2), rel=1e-12, abs=1e-9)


def write_track(path, chroms, tracks):
    with pyBigWig.open(str(path), "w") as bw:
        bw.addHeader(chroms, maxZooms=10)
        for (chrom, _), (lo, hi, vals) in zip(chroms, tracks):
            if lo.size:
                bw.addEntries([chrom] * lo.size, lo.tolist(), ends=hi.tolist(), values=vals.tolist())
    return export_mod.write_zoom_levels(
        path, [length for _, length in chroms], [(i, *track) for i, track in enumerate(tracks)]
    )


@pytest.mark.parametrize("small_blocks", [False, True])
def test_bigwig_zoom_levels_are_read_back_and_exact_on_their_grid(tmp_path, monkeypatch, small_blocks):
    if small_blocks:  # many blocks and a deep R-tree over them
        monkeypatch.setattr(export_mod, "_ZOOM_RECORDS_PER_BLOCK", 5)
        monkeypatch.setattr(export_mod, "_CIRTREE_BLOCK", 3)
    rng = np.random.default_rng(1)
    chroms = [("chr1", 400_000), ("chr2", 150_000), ("chrM", 16_000)]
    tracks = [random_track(rng, 400_000, 3_000), random_track(rng, 150_000, 1_000), random_track(rng, 16_000, 0)]
    tracks[1] = (
        tracks[1][0],
        tracks[1][1],
        (-np.abs(tracks[1][2]) - 0.5).astype(np.float32).astype(np.float64),
    )  # all negative
    levels = write_track(tmp_path / "t.bw", chroms, tracks)
    mean_width = sum(int((hi - lo).sum()) for lo, hi, _ in tracks) // sum(lo.size for lo, _, _ in tracks)
    assert levels[0] == 16 * mean_width and all(b == 4 * a for a, b in zip(levels, levels[1:])) and len(levels) >= 3
    with pyBigWig.open(str(tmp_path / "t.bw")) as bw:
        assert bw.header()["nLevels"] == len(levels)
        for (chrom, length), (lo, hi, vals) in zip(chroms[:2], tracks):
            assert bw.intervals(chrom) == tuple(zip(lo.tolist(), hi.tolist(), vals.tolist()))  # the data untouched
            for level in levels:
                n = length // (2 * level)  # bins of two zoom records: libBigWig reads that level, and exactly
                if n == 0:
                    continue
                for stat in ("mean", "min", "max", "coverage"):
                    zoomed = bw.stats(chrom, 0, n * 2 * level, nBins=n, type=stat)
                    exact = bw.stats(chrom, 0, n * 2 * level, nBins=n, type=stat, exact=True)
                    np.testing.assert_allclose(
                        np.array(zoomed, float), np.array(exact, float), rtol=2e-6, equal_nan=True
                    )
            # an unaligned query is answered from the zoom level (approximate), not from the data
            zoomed = bw.stats(chrom, 0, length, nBins=3, type="mean")
            assert zoomed != bw.stats(chrom, 0, length, nBins=3, type="mean", exact=True)
    # the whole-file summary is exact (libBigWig's own kept a wrong maximum for all-negative data)
    import struct

    data = (tmp_path / "t.bw").read_bytes()
    covered, low, high, total, squares = struct.unpack_from("<Qdddd", data, struct.unpack_from("<Q", data, 0x2C)[0])
    values = np.concatenate([v for *_, v in tracks])
    widths = np.concatenate([hi - lo for lo, hi, _ in tracks])
    assert (covered, low, high) == (widths.sum(), values.min(), values.max())
    assert total == pytest.approx(widths @ values) and squares == pytest.approx(widths @ values**2)
    assert struct.unpack("<I", data[-4:])[0] == 0x888FFC26  # the closing magic number


def test_bigwig_export_has_zoom_levels(results, tmp_path):
    res, _ = results
    out = to_bigwig(
        res, tmp_path / "del.bw", "dist", "del"
    )  # 37 intervals per chromosome: libBigWig alone wrote 1 level
    with pyBigWig.open(str(out)) as bw:
        assert bw.header()["nLevels"] == 2
        exact = bw.stats("chr2", 0, 9_000, type="mean", exact=True)[0]
        assert bw.stats("chr2", 0, 9_000, type="mean")[0] == pytest.approx(exact, rel=1e-6)
    empty = to_bigwig(
        res, tmp_path / "none.bw", "dist", "del", region="chr1:1,560-1,600"
    )  # only unwritten rows: no data
    with pyBigWig.open(str(empty)) as bw:
        assert bw.intervals("chr1") is None


def test_bigwig_intervals_examples():
    lo, hi, index = bigwig_intervals(np.array([0, 100, 200]), np.array([250, 350, 450]))
    assert lo.tolist() == [0, 175, 275] and hi.tolist() == [175, 275, 450] and index.tolist() == [0, 1, 2]
    lo, hi, index = bigwig_intervals(np.array([0, 500]), np.array([100, 600]))
    assert (lo.tolist(), hi.tolist()) == ([0, 500], [100, 600])
    lo, hi, index = bigwig_intervals(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    assert lo.size == hi.size == index.size == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 2_000)), min_size=1, max_size=60))
def test_bigwig_intervals_properties(pairs):
    start = np.array(sorted(s for s, _ in pairs), dtype=np.int64)
    end = start + np.array([w for _, w in pairs], dtype=np.int64)
    lo, hi, index = bigwig_intervals(start, end)
    assert (lo < hi).all()
    assert (lo[1:] >= hi[:-1]).all()  # sorted, disjoint
    assert (lo >= start[index]).all() and (hi <= end[index]).all()  # inside own perturbation
    assert len(set(index.tolist())) == index.size
    # Perturbations that overlap nothing keep their exact interval.
    for i in range(start.size):
        alone = not np.any((start < end[i]) & (end > start[i]) & (np.arange(start.size) != i))
        if alone:
            j = np.flatnonzero(index == i)
            assert j.size == 1 and (lo[j[0]], hi[j[0]]) == (start[i], end[i])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 300), st.integers(1, 120)), min_size=1, max_size=40),
    st.lists(st.integers(1, 7), min_size=1, max_size=10),
)
def test_interval_stream_equals_bigwig_intervals(pairs, cuts):
    """Fed in centre order, in blocks of any sizes, the stream gives exactly bigwig_intervals."""
    start = np.array([s for s, _ in pairs], dtype=np.int64)
    end = start + np.array([w for _, w in pairs], dtype=np.int64)
    values = np.where(np.arange(start.size) % 5 == 2, np.nan, np.arange(start.size, dtype=np.float64))
    lo, hi, index = bigwig_intervals(start, end)
    keep = ~np.isnan(values[index])
    order = np.lexsort((end, start + end))
    stream, parts, i = export_mod._IntervalStream(), [], 0
    for size in cuts * (start.size // len(cuts) + 1):  # block sizes, cycled
        rows = order[i : i + size]
        parts.append(stream.push(start[rows], end[rows], values[rows]))
        i += size
    parts.append(stream.finish())
    got = [np.concatenate([part[k] for part in parts]) for k in range(3)]
    np.testing.assert_array_equal(got[0], lo[keep])
    np.testing.assert_array_equal(got[1], hi[keep])
    np.testing.assert_array_equal(got[2], values[index][keep])


def _jittered_store(path) -> None:
    """chr1: uneven widths (rows not in centre order); chr2: tiled; a few chunks unwritten."""
    rng = np.random.default_rng(3)
    lays = []
    for chrom, n, jitter in (("chr2", 300, False), ("chr1", 250, True)):
        start = np.arange(n, dtype=np.int64) * 60 + 10
        width = np.full(n, 250)
        if jitter:
            start, width = np.sort(start + rng.integers(0, 200, n)), rng.integers(20, 400, n)
        lays.append(
            GroupLayout(
                chrom=chrom,
                chrom_length=int(start[-1] + 1_000),
                analysis="del",
                kind="deletion",
                params={"width": 250},
                start=start,
                end=start + width,
                window_start=start - 1_000,
                scores=["s"],
                chunk_size=16,
            )
        )
    store = create_store(path, {"name": "toy"}, "a" * 64, {}, lays)
    for lay in lays:
        scores = rng.normal(size=lay.n).astype(np.float32)
        for k in range(lay.n_chunks):
            if k % 5 != 3:
                store.write_chunk(lay.chrom, "del", k, {"s": scores[lay.chunk_slice(k)]})


@pytest.mark.parametrize("rows", [7, 64])
@pytest.mark.parametrize("region", [None, "chr1:3,000-9,000"])
def test_streamed_bigwig_equals_one_block(tmp_path, monkeypatch, rows, region):
    """Read and summarised a few rows at a time, the bigWig holds the same intervals and zoom
    summaries as read in one block (the whole chromosome; byte for byte today's export)."""
    _jittered_store(tmp_path / "s.zarr")
    whole = to_bigwig(tmp_path / "s.zarr", tmp_path / "whole.bw", "s", region=region)
    monkeypatch.setattr(export_mod, "_ROWS", rows)
    streamed = to_bigwig(tmp_path / "s.zarr", tmp_path / "streamed.bw", "s", region=region)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr", "streamed.bw", "whole.bw"]  # no spool left
    with pyBigWig.open(str(whole)) as a, pyBigWig.open(str(streamed)) as b:
        assert a.header() == b.header() and a.header()["nLevels"] >= 2
        for chrom, length in a.chroms().items():
            assert a.intervals(chrom) == b.intervals(chrom)
            for n_bins in (1, 3, 40):
                for stat in ("mean", "min", "max", "coverage", "std"):
                    np.testing.assert_allclose(
                        np.array(b.stats(chrom, 0, length, nBins=n_bins, type=stat), float),
                        np.array(a.stats(chrom, 0, length, nBins=n_bins, type=stat), float),
                        rtol=1e-6,
                        atol=1e-6,
                        equal_nan=True,
                    )  # float32 sums of split bins


def test_per_base_scores_export_one_track(tmp_path):
    """[position, 4] arrays export the value at the reference base (attribution × input)."""
    from screening.store.export import to_bedgraph
    from screening.store.writer import create_store

    positions = np.arange(10, 14, dtype=np.int64)
    layout = group_layout(positions, ["attribution"], 4, 100, analysis="sal", kind="attribution",
                          extra_dims={"base": 4}, labels={"ref_base": np.array(list("ACGT"))})
    store = create_store(tmp_path / "a.zarr", {"name": "a"}, "h", {}, [layout])
    values = np.arange(16, dtype=np.float32).reshape(4, 4)
    store.write_chunk("chr1", "sal", 0, {"attribution": values})
    to_bedgraph(tmp_path / "a.zarr", tmp_path / "a.bedGraph", score="attribution")
    rows = [line.split("\t") for line in (tmp_path / "a.bedGraph").read_text().splitlines()]
    assert [float(r[3]) for r in rows] == [0.0, 5.0, 10.0, 15.0]  # the diagonal: A, C, G, T reference bases


# --------------------------------------------------------------------------- refused output paths (reliability)


def _export(store, out, capsys) -> tuple[int, str]:
    from screening.cli import main

    code = main(["export", str(store), str(out), "--analysis", "del"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", ["scores.bw", "scores.bedGraph"])
def test_export_into_an_unwritable_folder_exits_2(results, tmp_path, capsys, name):
    """pyBigWig given a path it cannot create crashed the process (exit 139): refused first, by name."""
    code, err = _export(tmp_path / "screen.zarr", Path("/proc") / name, capsys)
    assert code == 2
    assert f"/proc/{name}" in err and "not writable" in err
    assert not (Path("/proc") / name).exists()


def test_export_into_a_directory_exits_2(results, tmp_path, capsys):
    (tmp_path / "out.bw").mkdir()
    code, err = _export(tmp_path / "screen.zarr", tmp_path / "out.bw", capsys)
    assert code == 2 and f"{tmp_path / 'out.bw'} is a directory" in err


def test_export_under_a_file_exits_2(results, tmp_path, capsys):
    (tmp_path / "plain").write_text("x")
    code, err = _export(tmp_path / "screen.zarr", tmp_path / "plain" / "s.bw", capsys)
    assert code == 2 and f"{tmp_path / 'plain'} is a file" in err


def test_export_into_a_read_only_folder_exits_2(results, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, err = _export(tmp_path / "screen.zarr", folder / "s.bedGraph", capsys)
    finally:
        folder.chmod(0o755)
    assert code == 2 and f"folder {folder} is not writable" in err
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("name", ["s.bw", "s.bedGraph"])
def test_export_disk_full_exits_2_and_leaves_nothing(results, tmp_path, capsys, monkeypatch, name):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_mod, "_one_value_per_row", full)
    code, err = _export(tmp_path / "screen.zarr", tmp_path / name, capsys)
    assert code == 2 and f"disk full while writing {tmp_path / name}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["screen.zarr"]  # no output, no temporary file
