"""Reader side of the result store (screening.store.reader)."""

from __future__ import annotations

import pickle
import re

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.storage import LocalStore

import screening
from screening.core.regions import Region, RegionError
from screening.store.reader import Results, ResultsError, open_results
from screening.store.writer import GroupLayout, StoreError, StoreNotFoundError, create_store

SPEC = {"name": "toy-screen"}
SHA = "a" * 64
PROV = {"package_version": "0.1.0"}
SCORES = ["insulation", "dist"]
N, CHUNK, STEP, WIDTH = 37, 8, 100, 250


def layout(chrom, analysis, start, end, length=10_000, chunk_size=CHUNK) -> GroupLayout:
    start = np.asarray(start, dtype=np.int64)
    return GroupLayout(
        chrom=chrom, chrom_length=length, analysis=analysis, kind="deletion", params={"width": WIDTH},
        start=start, end=np.asarray(end, dtype=np.int64), window_start=start - 1_000,
        scores=list(SCORES), chunk_size=chunk_size,
    )


def regular(chrom="chr1", analysis="del", n=N, length=10_000) -> GroupLayout:
    start = np.arange(n) * STEP
    return layout(chrom, analysis, start, start + WIDTH, length)


def irregular(chrom="chr2", analysis="del", seed=0) -> GroupLayout:
    """Sorted starts, variable widths: ends are not sorted, overlaps are not contiguous."""
    rng = np.random.default_rng(seed)
    start = np.sort(rng.integers(0, 7_000, N))
    return layout(chrom, analysis, start, start + rng.integers(1, 900, N), length=8_000)


def expected_values(lay: GroupLayout, score_i: int) -> np.ndarray:
    return np.arange(lay.n, dtype=np.float32) + 1000 * score_i


def write_all(store, lay: GroupLayout, chunks=None) -> None:
    for k in range(lay.n_chunks) if chunks is None else chunks:
        sl = lay.chunk_slice(k)
        store.write_chunk(lay.chrom, lay.analysis, k, {s: expected_values(lay, i)[sl] for i, s in enumerate(SCORES)})


@pytest.fixture(scope="module")
def full_store(tmp_path_factory):
    """chr1 regular + chr2 irregular for analysis "del" (single analysis), every chunk written."""
    path = tmp_path_factory.mktemp("full") / "screen.zarr"
    lays = [regular(), irregular()]
    store = create_store(path, SPEC, SHA, PROV, lays)
    for lay in lays:
        write_all(store, lay)
    store.mark_complete()
    return path, lays


@pytest.fixture(scope="module")
def full_store_v2(tmp_path_factory):
    """``full_store`` in format 2 (one object per unit's chunk, flag and digest): what the tests of
    per-unit objects damage or count."""
    from screening.store import writer as store_mod

    path = tmp_path_factory.mktemp("full2") / "screen.zarr"
    lays = [regular(), irregular()]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_mod, "FORMAT_VERSION", 2)
        store = create_store(path, SPEC, SHA, PROV, lays)
    for lay in lays:
        write_all(store, lay)
    store.mark_complete()
    return path, lays


@pytest.fixture
def partial_store(tmp_path):
    """Two analyses; only chunks 1 and 4 of chr1/del are done."""
    path = tmp_path / "screen.zarr"
    lays = [regular(), regular(analysis="ins"), regular("chr2", "del", n=20, length=8_000)]
    store = create_store(path, SPEC, SHA, PROV, lays)
    write_all(store, lays[0], chunks=[1, 4])
    return path, lays


def brute_force(lay: GroupLayout, start: int, end: int) -> np.ndarray:
    return np.flatnonzero((lay.start < end) & (lay.end > start))


# --------------------------------------------------------------------------- opening & metadata


def test_open_errors(tmp_path):
    with pytest.raises(StoreNotFoundError, match="no result store"):
        open_results(tmp_path / "missing.zarr")
    with pytest.raises(FileNotFoundError):
        open_results(tmp_path / "missing.zarr")
    with pytest.raises(StoreError, match="not a screening result store"):
        open_results(tmp_path)
    zarr.open_group(tmp_path / "plain.zarr", mode="w").attrs["x"] = 1
    with pytest.raises(StoreError, match="not a screening result store"):
        open_results(tmp_path / "plain.zarr")


def test_metadata(partial_store):
    path, _ = partial_store
    res = screening.open_results(path)
    assert isinstance(res, Results)
    assert res.spec == SPEC and res.spec_sha256 == SHA and res.provenance == PROV
    assert res.analyses == ["del", "ins"]
    assert res.chromosomes == {"chr1": 10_000, "chr2": 8_000}
    assert res.scores("ins") == SCORES
    assert res.is_complete is False
    assert res.progress == (2, 5 + 5 + 3)
    assert "2/13 units done" in repr(res)


def test_completion_is_read_fresh(full_store):
    path, _ = full_store
    res = open_results(path)
    assert res.is_complete is True
    assert res.progress == (10, 10)


# --------------------------------------------------------------------------- queries


def test_query_dataset_shape(full_store):
    path, (lay, _) = full_store
    ds = open_results(path).query("chr1:1,050-1,650")
    idx = brute_force(lay, 1050, 1650)
    np.testing.assert_array_equal(ds["perturbation"], idx)
    np.testing.assert_array_equal(ds["start"], lay.start[idx])
    np.testing.assert_array_equal(ds["end"], lay.end[idx])
    np.testing.assert_array_equal(ds["window_start"], lay.window_start[idx])
    for name in ("start", "end", "window_start"):
        assert isinstance(ds[name].data, np.ndarray)  # loaded, not lazy
    for i, score in enumerate(SCORES):
        assert isinstance(ds[score].data, da.Array)
        assert ds[score].dtype == np.float32
        np.testing.assert_array_equal(ds[score].values, expected_values(lay, i)[idx])
    assert ds["done"].dtype == bool and ds["done"].values.all()
    assert ds.attrs == {
        "analysis": "del", "chrom": "chr1", "region": "chr1:1,050-1,650", "kind": "deletion",
        "params": {"width": WIDTH},
    }


def test_query_half_open_edges(full_store):
    path, (lay, _) = full_store
    res = open_results(path)
    # Perturbation 10 is [1000, 1250); 9 is [900, 1150); 12 is [1200, 1450).
    ds = res.query(Region("chr1", 1150, 1200))  # touches 9's end and 12's start: both excluded
    assert list(ds["perturbation"].values) == [10, 11]
    ds = res.query("chr1:1249-1250")  # last base of 10
    assert list(ds["perturbation"].values) == [10, 11, 12]
    ds = res.query("chr1:3850-10000")  # starts exactly at the last end
    assert ds.sizes["perturbation"] == 0
    assert ds["insulation"].values.shape == (0,)
    ds = res.query("chr1:0-1")
    assert list(ds["perturbation"].values) == [0]


def test_query_whole_chromosome_and_irregular(full_store):
    path, (lay1, lay2) = full_store
    res = open_results(path)
    ds = res.query("chr1")
    assert ds.sizes["perturbation"] == N and ds.attrs["region"] == "chr1:0-10,000"
    # A region whose overlapping perturbations are not contiguous (a long one further left).
    gappy = [
        s for s in range(0, 7_990, 10)
        if (idx := brute_force(lay2, s, s + 10)).size and idx.size != idx[-1] - idx[0] + 1
    ]
    assert gappy
    start = gappy[0]
    ds = res.query(Region("chr2", start, start + 10))
    idx = brute_force(lay2, start, start + 10)
    np.testing.assert_array_equal(ds["perturbation"], idx)
    np.testing.assert_array_equal(ds["insulation"].values, expected_values(lay2, 0)[idx])
    assert ds["done"].values.all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_query_matches_brute_force(full_store, data):
    path, lays = full_store
    res = open_results(path)
    lay = data.draw(st.sampled_from(lays))
    start = data.draw(st.integers(0, lay.chrom_length - 1))
    end = data.draw(st.integers(start + 1, lay.chrom_length))
    ds = res.query(Region(lay.chrom, start, end))
    idx = brute_force(lay, start, end)
    np.testing.assert_array_equal(ds["perturbation"].values, idx)
    np.testing.assert_array_equal(ds["dist"].values, expected_values(lay, 1)[idx])
    # Partitions of the lazy array: blocks of whole units (about 2^18 values), so one for these queries.
    if idx.size and idx.size == idx[-1] - idx[0] + 1:
        assert ds["dist"].data.npartitions == 1


def test_query_reads_only_overlapping_chunks(full_store_v2, monkeypatch):
    path, (lay, _) = full_store_v2
    res = open_results(path)
    ds = res.query("chr1:1,640-2,050")  # perturbations 14..20 → chunks 1 and 2
    idx = brute_force(lay, 1640, 2050)
    assert list(idx) == list(range(14, 21))
    assert ds["insulation"].data.npartitions == 1  # one dask block of whole units

    reads: list[str] = []
    original = LocalStore.get

    async def counting_get(self, key, *args, **kwargs):
        reads.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", counting_get)
    values = ds["insulation"].values
    np.testing.assert_array_equal(values, np.arange(14, 21))
    chunk_reads = sorted(k for k in reads if re.search(r"insulation/c/\d+$", k))
    assert chunk_reads == ["chr1/del/insulation/c/1", "chr1/del/insulation/c/2"]
    assert not any("dist/c/" in k for k in reads)


def test_unfinished_chunks_read_as_nan(partial_store):
    path, (lay, _, _) = partial_store
    # A worker that died after writing chunk 2's scores but before its flag.
    zarr.open_group(path, mode="r+")["chr1/del/insulation"][16:24] = np.ones(8, np.float32)
    res = open_results(path)
    ds = res.query("chr1", "del")
    done = np.zeros(N, bool)
    done[8:16] = done[32:] = True
    np.testing.assert_array_equal(ds["done"].values, done)
    got = ds["insulation"].values
    np.testing.assert_array_equal(got[done], expected_values(lay, 0)[done])
    assert np.isnan(got[~done]).all()
    assert np.isnan(res.query("chr1", "ins")["dist"].values).all()


def test_analysis_selection(partial_store, full_store):
    path, _ = partial_store
    res = open_results(path)
    with pytest.raises(ResultsError, match=r"several analyses; pick one of \['del', 'ins'\]"):
        res.query("chr1:0-100")
    with pytest.raises(ResultsError, match=r"unknown analysis 'nope'.*\['del', 'ins'\]"):
        res.query("chr1:0-100", "nope")
    with pytest.raises(ResultsError):
        res.scores("nope")
    assert open_results(full_store[0]).query("chr1:0-100").attrs["analysis"] == "del"


def test_region_errors(full_store):
    res = open_results(full_store[0])
    with pytest.raises(RegionError, match="'chrX'.*chr1, chr2"):
        res.query("chrX:0-100")
    with pytest.raises(RegionError, match="runs past the end"):
        res.query("chr2:7,000-9,000")
    with pytest.raises(RegionError):
        res.query("chr1:500-100")


def test_analysis_absent_on_chromosome(tmp_path):
    path = tmp_path / "s.zarr"
    create_store(path, SPEC, SHA, PROV, [regular(), regular(analysis="ins"), regular("chr2", "del", n=5)])
    ds = open_results(path).query("chr2", "ins")
    assert ds.sizes["perturbation"] == 0
    assert set(ds.data_vars) == {"insulation", "dist", "done"}


def test_to_dataframe(partial_store):
    path, (lay, _, _) = partial_store
    df = open_results(path).to_dataframe("chr1:800-1,700", "del")
    assert list(df.columns) == ["chrom", "start", "end", "insulation", "dist"]
    idx = brute_force(lay, 800, 1700)
    assert (df["chrom"] == "chr1").all()
    np.testing.assert_array_equal(df["start"], lay.start[idx])
    chunk1 = (idx >= 8) & (idx < 16)
    np.testing.assert_array_equal(df["dist"].to_numpy()[chunk1], expected_values(lay, 1)[idx[chunk1]])
    assert df["dist"].isna().to_numpy()[~chunk1].all()
    assert isinstance(df, pd.DataFrame) and df.index.equals(pd.RangeIndex(len(idx)))


def test_results_pickle(full_store):
    res = open_results(full_store[0])
    res.query("chr1:0-500")  # populate caches and handles
    clone = pickle.loads(pickle.dumps(res))
    assert clone.__getstate__() == {"path": res.path, "storage_options": {}}
    xr.testing.assert_identical(clone.query("chr1:0-500").compute(), res.query("chr1:0-500").compute())


def test_xarray_open_zarr_compatible(full_store):
    path, (lay, _) = full_store
    ds = xr.open_zarr(path, group="chr1/del", consolidated=False)
    assert ds["insulation"].dims == ("perturbation",)
    assert ds["chunk_done"].dims == ("chunk",)
    np.testing.assert_array_equal(ds["insulation"].values, expected_values(lay, 0))


# --------------------------------------------------------------------------- damaged chunks (checksums verified on read)

import os  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

from screening.store.writer import DamagedChunkError  # noqa: E402


@pytest.fixture
def damaged_copy(full_store_v2, tmp_path):
    """A copy of the full store (format 2: one object per unit's chunk), to damage."""
    path, lays = full_store_v2
    copy = tmp_path / "copy.zarr"
    shutil.copytree(path, copy)
    return copy, lays


def flip_one_bit(path: Path, byte: int) -> None:
    data = bytearray(path.read_bytes())
    data[byte] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped bit", "random bytes"])
def test_damaged_score_chunk_is_an_error_naming_store_array_chunk_and_range(damaged_copy, damage):
    path, (lay, _) = damaged_copy
    chunk = path / "chr1" / "del" / "insulation" / "c" / "1"
    if damage == "flipped bit":
        flip_one_bit(chunk, byte=len(chunk.read_bytes()) // 2)
    else:
        chunk.write_bytes(np.random.default_rng(0).bytes(chunk.stat().st_size))
    res = open_results(path)
    ds = res.query("chr1:1,640-2,050")  # chunks 1 and 2
    message = rf"{re.escape(str(path))}: chunk 1 of array chr1/del/insulation \(chr1:800-1,750\) is damaged: .*--verify"
    with pytest.raises(DamagedChunkError, match=message):
        ds["insulation"].values
    with pytest.raises(StoreError, match=message):  # DamagedChunkError is a StoreError: CLI exit 2
        res.to_dataframe("chr1", "del")
    np.testing.assert_array_equal(ds["dist"].values, expected_values(lay, 1)[14:21])  # other arrays still read
    assert np.isfinite(res.query("chr1:2,000-3,000")["insulation"].values).all()  # other chunks still read


def test_damaged_chunk_of_an_unfinished_unit_is_not_read(damaged_copy):
    """A dead worker's half-written chunk (no flag) reads as NaN rather than failing the query."""
    path, _ = damaged_copy
    (path / "chr1" / "del" / "insulation" / "c" / "1").write_bytes(os.urandom(50))
    (path / "chr1" / "del" / "chunk_done" / "c" / "1").unlink()
    values = open_results(path).query("chr1", "del")["insulation"].values
    assert np.isnan(values[8:16]).all() and np.isfinite(values[16:]).all()


def test_damaged_coordinates_and_flags_are_named(damaged_copy):
    path, _ = damaged_copy
    flip_one_bit(path / "chr2" / "del" / "end" / "c" / "0", byte=4)
    with pytest.raises(DamagedChunkError, match=r"chunk 0 of array chr2/del/end"):
        open_results(path).query("chr2:0-100")
    (path / "chr1" / "del" / "chunk_done" / "c" / "2").write_bytes(b"\x00" * 9)
    with pytest.raises(DamagedChunkError, match=r"chunk 2 of array chr1/del/chunk_done"):
        open_results(path).query("chr1:0-5,000")


def test_export_of_a_damaged_store_names_the_chunk(damaged_copy, tmp_path):
    from screening.store.export import to_bedgraph

    path, _ = damaged_copy
    flip_one_bit(path / "chr1" / "del" / "dist" / "c" / "3", byte=6)
    out = tmp_path / "x.bedGraph"
    with pytest.raises(DamagedChunkError, match=r"chunk 3 of array chr1/del/dist"):
        to_bedgraph(open_results(path), out, score="dist")
    assert not out.exists()


def test_checksummed_tells_format_2_from_format_1(full_store, tmp_path, monkeypatch):
    from screening.store import writer as store_mod

    assert open_results(full_store[0]).checksummed
    monkeypatch.setattr(store_mod, "FORMAT_VERSION", 1)
    create_store(tmp_path / "old.zarr", SPEC, SHA, PROV, [regular()])
    assert not open_results(tmp_path / "old.zarr").checksummed


# --------------------------------------------------------------------------- genome-scale reading (issue 21)


def _old_top_hits(results, n=5, per_analysis=False):
    """top_hits as it was before streaming: whole-chromosome tables, then nlargest (the reference)."""
    frames = []
    for analysis in results.analyses:
        score = results.scores(analysis)[0]
        for chrom in results.chromosomes:
            frame = results.to_dataframe(chrom, analysis=analysis)
            if not len(frame):
                continue
            frame = frame.dropna(subset=[score]).nlargest(n, score)
            if not len(frame):
                continue
            frame.insert(0, "analysis", analysis)
            frames.append(frame.rename(columns={score: "score"}).assign(score_name=score))
    table = pd.concat(frames, ignore_index=True).sort_values("score", ascending=False)
    table = table.groupby("analysis", sort=False).head(n) if per_analysis else table.head(n)
    extra = [c for c in ("base", "id") if c in table.columns]
    table[extra] = table[extra].fillna("")
    return table[["analysis", "chrom", "start", "end", *extra, "score", "score_name"]].reset_index(drop=True)


def _mixed_store(path, seed=0):
    """Deletions (with ties and NaNs), mutagenesis [n, 4] and variants with ids; some units not done,
    one unit written without its flag (a dead worker's): it must not count."""
    rng = np.random.default_rng(seed)
    start = np.arange(203) * 40
    dels = layout("chr1", "del", start, start + 100, length=20_000, chunk_size=4)
    dels2 = layout("chr2", "del", start[:50], start[:50] + 100, length=20_000, chunk_size=4)
    pos = np.arange(61) * 3
    mut = GroupLayout(chrom="chr1", chrom_length=20_000, analysis="mut", kind="mutagenesis", params={}, start=pos,
                      end=pos + 1, window_start=pos - 100, scores=["impact", "other"], chunk_size=5,
                      extra_dims={"base": 4}, labels={"ref_base": np.array(list("ACGT" * 16))[:61]})
    var = layout("chr2", "var", start[:30], start[:30] + 1, length=20_000, chunk_size=7)
    var.labels = {"id": np.array([f"rs{i}" for i in range(30)]), "alt": np.array(["T"] * 30)}
    lays = [dels, mut, dels2, var]
    store = create_store(path, SPEC, SHA, PROV, lays)
    for lay in lays:
        for k in range(lay.n_chunks):
            if rng.random() < 0.25:
                continue
            sl = lay.chunk_slice(k)
            shape = (sl.stop - sl.start, *lay.score_shape)
            values = {s: np.round(rng.standard_normal(shape), 1).astype(np.float32) for s in lay.scores}  # many ties
            values[lay.scores[0]][rng.random(shape) < 0.1] = np.nan
            store.write_chunk(lay.chrom, lay.analysis, k, values)
    # a unit written without its flag, with the largest values of all: a query shows NaN, so must top_hits
    zarr.open_group(path, mode="r+")["chr1/del/chunk_done"][3] = 0
    zarr.open_group(path, mode="r+")["chr1/del/insulation"][12:16] = 99.0
    return lays


@pytest.mark.parametrize("block", [1 << 18, 1])
@pytest.mark.parametrize("seed", [0, 1])
def test_streamed_top_hits_match_the_whole_table(tmp_path, monkeypatch, block, seed):
    from screening.report.hits import top_hits

    monkeypatch.setattr("screening.store.reader._TOP_BLOCK", block)
    path = tmp_path / "s.zarr"
    _mixed_store(path, seed)
    results = open_results(path)
    for n in (1, 3, 7, 1000):
        for per_analysis in (False, True):
            pd.testing.assert_frame_equal(top_hits(results, n=n, per_analysis=per_analysis),
                                          _old_top_hits(results, n=n, per_analysis=per_analysis))
    assert 99.0 not in top_hits(results, n=1000)["score"].tolist()


def test_nlargest_is_the_table_s_nlargest(tmp_path):
    path = tmp_path / "s.zarr"
    _mixed_store(path)
    results = open_results(path)
    for chrom, analysis, score in [("chr1", "del", "dist"), ("chr1", "mut", "other"), ("chr2", "var", "insulation")]:
        table = results.to_dataframe(chrom, analysis).dropna(subset=[score]).nlargest(9, score)
        got = results.nlargest(chrom, score, 9, analysis=analysis)
        pd.testing.assert_frame_equal(got, table[list(got.columns)].reset_index(drop=True))
    assert results.nlargest("chr2", "impact", 3, analysis="mut").empty  # no mutagenesis on chr2
    with pytest.raises(ResultsError):
        results.nlargest("chr1", "nope", 3, analysis="del")


def _as_earlier_release(path) -> None:
    """Rewrite every coordinate/label array as stores of earlier releases hold them: shards of unit-sized chunks."""
    root = zarr.open_group(path, mode="r+", use_consolidated=False)
    for chrom in root.attrs["screening"]["chromosomes"]:
        for analysis, group in root[chrom].groups():
            chunk = int(group.attrs["chunk_size"])
            for name in ("start", "end", "window_start", *group.attrs.get("labels", [])):
                old = group[name]
                values, codecs = old[:], old.compressors
                text = values.dtype.kind in "USOT"
                del group[name]
                n = values.shape[0]
                new = group.create_array(name, shape=(n,), chunks=(chunk,), shards=None if text else (chunk * max(1, -(-n // chunk)),),
                                         dtype=str if text else values.dtype, fill_value="" if text else 0,
                                         dimension_names=["perturbation"], compressors=codecs)
                new[:] = values
                assert new.chunks == (chunk,)
    zarr.consolidate_metadata(path)  # the arrays were replaced: so is their consolidated metadata


def test_stores_with_unit_chunked_coordinates_read_the_same(tmp_path):
    """Stores of earlier releases (coordinates in 1-unit chunks inside shards) give identical queries and hits."""
    from screening.report.hits import top_hits

    new, old = tmp_path / "new.zarr", tmp_path / "old.zarr"
    _mixed_store(new)
    _mixed_store(old)
    _as_earlier_release(old)
    a, b = open_results(new), open_results(old)
    for region in ["chr1", "chr1:1,000-1,001", "chr1:0-5,000", "chr2:300-900", "chr1:7,990-8,200"]:
        for analysis in a.analyses:
            xr.testing.assert_identical(a.query(region, analysis).compute(), b.query(region, analysis).compute())
    pd.testing.assert_frame_equal(top_hits(a, n=10, per_analysis=True), top_hits(b, n=10, per_analysis=True))
    assert a.progress == b.progress
