"""What a query reads from a format 3 store (issue 21): whole inner chunks of a score shard in one read
(not one read per run of done units), only the coordinate chunks of irregular groups that can overlap
the region, one GET per object on S3; and never stale or hidden data."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from helpers import count_s3_calls, group_layout

from screening.store import writer as store_mod
from screening.store.layout import coord_index, indexed_chunks
from screening.store.location import Location
from screening.store.reader import open_results
from screening.store.writer import GroupLayout, create_store

SPEC = {"name": "reads", "perturbations": [{"kind": "deletion", "width": 250}]}
SHA = "f" * 64
SCORES = ["insulation", "dist"]
UNITS = 256  # chunk_size 2: 512 perturbations; blocks of 128 units, inner chunks of 64


def tiled(chrom: str = "chr1", units: int = UNITS) -> GroupLayout:
    start = np.arange(2 * units, dtype=np.int64) * 100
    return group_layout(start, SCORES, 2, 100 * 2 * units + 1_000, width=250, chrom=chrom, window_start=start - 500)


def irregular(n: int = 400, seed: int = 0) -> GroupLayout:
    """Sorted random starts, uneven widths, and one long interval early on (its end reaches far)."""
    rng = np.random.default_rng(seed)
    start = np.sort(rng.choice(40_000, n, replace=False)).astype(np.int64)
    end = start + rng.integers(1, 60, n)
    end[3] = start[3] + 30_000
    labels = {"id": np.array([f"v{i}" for i in range(n)])}
    return group_layout(start, SCORES, 4, 80_000, chrom="chr2", end=end, window_start=start - 500, labels=labels)


def values(lay: GroupLayout, k: int) -> dict[str, np.ndarray]:
    rows = lay.chunk_slice(k)
    return {s: (np.arange(rows.start, rows.stop) + 1_000 * i).astype(np.float32) for i, s in enumerate(lay.scores)}


def write(store, lay: GroupLayout, units) -> None:
    writer = store.block_writer(flush_s=3600)
    for k in units:
        writer.add(store.unit_record(lay.chrom, lay.analysis, k, values(lay, k)))
    writer.flush()


@pytest.fixture
def blocks_of_128(monkeypatch):
    monkeypatch.setattr(store_mod, "block_units", lambda layout: min(128, layout.n_chunks))


@pytest.fixture
def local_reads(monkeypatch) -> list[tuple[str, object]]:
    """Every ``LocalStore.get``: ``(key, byte range)``."""
    reads: list[tuple[str, object]] = []
    original = zarr.storage.LocalStore.get

    async def counting(self, key, *args, **kwargs):
        reads.append((key, kwargs.get("byte_range", args[1] if len(args) > 1 else None)))
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", counting)
    return reads


def expected(lay: GroupLayout, done: set[int], score: str) -> np.ndarray:
    want = np.full(lay.n, np.nan, np.float32)
    for k in done:
        want[lay.chunk_slice(k)] = values(lay, k)[score]
    return want


def test_a_query_reads_inner_chunks_once_not_each_run_of_done_units(tmp_path, blocks_of_128, local_reads):
    lay = tiled()
    store = create_store(tmp_path / "s.zarr", SPEC, SHA, {}, [lay])
    done = set(range(65, 200, 2))  # every other unit of inner chunks 1-3; inner chunk 0 has none
    write(store, lay, done)
    local_reads.clear()
    results = open_results(tmp_path / "s.zarr")
    frame = results.to_dataframe("chr1")
    for score in SCORES:
        np.testing.assert_array_equal(frame[score].to_numpy(), expected(lay, done, score))
        shard_reads = [r for r in local_reads if f"/{score}/c/" in r[0]]
        # shard 0: its index and inner chunk 1 (chunk 0 holds no done unit: not read); shard 1: inner
        # chunks 0 and 1 of its two, one read each, and its index. Before: 2 reads per done unit.
        assert 2 <= len(shard_reads) <= 5, shard_reads
    # a 1-kb query inside one inner chunk: the shard index and that chunk only
    local_reads.clear()
    results.to_dataframe("chr1:14,000-15,000")
    assert len([r for r in local_reads if "/insulation/c/" in r[0]]) == 2


def test_rows_of_units_without_flags_read_as_nan_even_in_a_read_chunk(tmp_path, blocks_of_128):
    """A shard written just before the driver died holds units whose flag is 0: never shown."""
    lay = tiled()
    store = create_store(tmp_path / "s.zarr", SPEC, SHA, {}, [lay])
    write(store, lay, set(range(0, 128)))
    flags = zarr.open_array(tmp_path / "s.zarr" / "chr1" / "del" / "chunk_done", mode="r+")
    lost = [3, 4, 70]
    cleared = np.asarray(flags[:128]).copy()
    cleared[lost] = 0
    flags[:128] = cleared
    frame = open_results(tmp_path / "s.zarr").to_dataframe("chr1")
    want = expected(lay, set(range(128)) - set(lost), "dist")
    np.testing.assert_array_equal(frame["dist"].to_numpy(), want)
    assert np.isnan(frame["dist"].to_numpy()[lay.chunk_slice(70)]).all()


def test_an_open_handle_sees_units_finished_after_it_was_opened(tmp_path, blocks_of_128):
    """Coordinates are cached by a Results handle (and the service's handle cache), flags and scores
    are read by every query: a unit that completes between two queries shows in the second."""
    from screening.service.api import ResultsCache

    lay = tiled()
    store = create_store(tmp_path / "s.zarr", SPEC, SHA, {}, [lay])
    write(store, lay, {5})  # outside the region (rows 18-23: units 9-11)
    cache = ResultsCache(open_results)
    results, _ = cache.get("job", str(tmp_path / "s.zarr"))
    first = results.to_dataframe("chr1:2,000-2,400")
    assert len(first) == 6 and np.isnan(first["insulation"]).all()  # units 9-11: not done
    write(store, lay, {11})
    again, _ = cache.get("job", str(tmp_path / "s.zarr"))
    assert again is results  # the same warm handle
    second = again.to_dataframe("chr1:2,000-2,400")
    rows = second["start"].isin(lay.start[22:24]).to_numpy()
    np.testing.assert_array_equal(second["insulation"].to_numpy()[rows], values(lay, 11)["insulation"])
    assert np.isnan(second["insulation"].to_numpy()[~rows]).all()


def test_irregular_coordinates_are_indexed_and_read_by_chunk(tmp_path, monkeypatch, local_reads):
    monkeypatch.setattr(store_mod, "COORD_CHUNK", 64)  # 16 units of 4 a coordinate chunk: 7 chunks
    lay = irregular()
    store = create_store(tmp_path / "s.zarr", SPEC, SHA, {}, [lay])
    write(store, lay, set(range(0, lay.n_chunks, 3)))
    attrs = zarr.open_group(tmp_path / "s.zarr", mode="r")["chr2/del"].attrs
    assert "regular" not in attrs and attrs["coord_index"] == coord_index(lay.start, lay.end, 64)
    assert len(attrs["coord_index"]["start"]) == 7  # a few numbers per chunk of coordinates
    rng = np.random.default_rng(1)
    for lo in [*rng.integers(0, 79_000, 25), 0, 39_990]:
        region = f"chr2:{lo}-{lo + int(rng.integers(1, 3_000))}"
        local_reads.clear()
        results = open_results(tmp_path / "s.zarr")
        frame = results.to_dataframe(region)
        a, b = (int(x.replace(",", "")) for x in region.split(":")[1].split("-"))
        want = np.flatnonzero((lay.start < b) & (lay.end > a))
        np.testing.assert_array_equal(frame["start"].to_numpy(), lay.start[want])
        np.testing.assert_array_equal(frame["end"].to_numpy(), lay.end[want])
        np.testing.assert_array_equal(frame["id"].to_numpy(), [f"v{i}" for i in want])
        read = {int(key.rsplit("/", 1)[1]) for key, _ in local_reads if "chr2/del/start/c/" in key}
        assert read == set(indexed_chunks(attrs["coord_index"], a, b).tolist()), region
        assert len(read) < 7 or a < lay.end[3]  # only chunks that may overlap (chunk 0 reaches 30 kb)
        # a handle that has read the whole arrays (top maps, error messages) answers the same from them
        results._start_end("chr2", "del", results._group("chr2", "del"))
        again = results.to_dataframe(region)
        np.testing.assert_array_equal(again["start"].to_numpy(), frame["start"].to_numpy())
        np.testing.assert_array_equal(again["dist"].to_numpy(), frame["dist"].to_numpy())


def test_s3_reads_are_one_get_per_object():
    assert Location("s3://bucket/x.zarr", {"max_concurrency": 4})._options()["max_concurrency"] == 4  # given: kept
    default = Location("s3://bucket/x.zarr")
    assert default._options()["max_concurrency"] == 1 and "max_concurrency" not in default.storage_options
    assert "max_concurrency" not in Location("gs://bucket/x.zarr")._options()


def test_query_requests_on_s3_do_not_grow_with_runs_of_done_units(monkeypatch, blocks_of_128):
    pytest.importorskip("moto")
    from moto_s3 import s3_server

    calls = count_s3_calls(monkeypatch)
    lay = tiled()
    url = "s3://bucket/q.zarr"
    with s3_server(buckets=("bucket",)):
        store = create_store(url, SPEC, SHA, {}, [lay])
        done = set(range(0, UNITS, 2))  # 128 runs of one done unit
        write(store, lay, done)
        calls.clear()
        results = open_results(url)
        assert dict(calls) == {"get_object": 1}  # the consolidated root: attributes and every node's metadata
        calls.clear()
        frame = results.to_dataframe("chr1")
        np.testing.assert_array_equal(frame["insulation"].to_numpy(), expected(lay, done, "insulation"))
        # flags (2 blocks) and per score its 2 shards, each read whole: 6 GETs (before: 4 per done unit,
        # 1,024); no HEAD before a whole-object GET
        assert sum(calls.values()) <= 8 and not calls.get("head_object"), dict(calls)
        calls.clear()
        part = results.to_dataframe("chr1:10,000-20,000")  # units 49-99: within shard 0, 2 inner chunks
        assert len(part) == 102
        # the flags, and per score shard 0 whole (both its inner chunks are needed): measured 4 GETs
        assert sum(calls.values()) <= 6, dict(calls)
        calls.clear()
        results.to_dataframe("chr1:10,000-11,000")  # one inner chunk of shard 0
        assert sum(calls.values()) <= 8, dict(calls)  # flags; per score: the shard's size, index, the chunk


def test_kept_maps_are_a_few_objects_per_block_like_the_rest(tmp_path):
    """What docs/store.md states of keep_maps: the driver writes top_index one object per block and
    top_delta one shard per map_units units (small maps: the whole block), like scores and flags."""
    start = np.arange(64 * 4, dtype=np.int64) * 100
    lay = group_layout(start, SCORES, 4, 30_000, width=100, window_start=start, top_maps=(2, 4))
    store = create_store(tmp_path / "m.zarr", SPEC, SHA, {}, [lay])
    writer = store.block_writer(flush_s=3600)
    for k in range(lay.n_chunks):
        top = (np.array([4 * k, 4 * k + 1]), np.ones((2, 4, 4), np.float32))
        writer.add(store.unit_record("chr1", "del", k, values(lay, k), top))
    writer.flush()
    group = tmp_path / "m.zarr" / "chr1" / "del"
    chunks = {p.name: sum(1 for f in (p / "c").rglob("*") if f.is_file()) for p in group.iterdir() if p.is_dir()}
    assert lay.n_chunks == 64 and chunks["top_index"] == chunks["top_delta"] == 1
    assert all(n == 1 for n in chunks.values()), chunks
    maps = open_results(tmp_path / "m.zarr").top_maps("chr1:0-800")
    assert maps.sizes["top"] == 4 and float(maps.sum()) == 4 * 16  # rows 0, 1 (unit 0) and 4, 5 (unit 1)
