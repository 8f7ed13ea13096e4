"""Format 3 result stores (issue 21): units grouped in blocks written by one process, top-k summaries,
consolidated metadata; stores of formats 1-2 still read the same."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from screening.store import blocks as blocks_mod
from screening.store import writer as store_mod
from screening.store.layout import HIT_K
from screening.store.reader import open_results
from screening.store.writer import BlockWriter, GroupLayout, ResultStore, StoreError, create_store, open_or_create_store

SPEC = {"name": "fmt3", "perturbations": [{"kind": "deletion", "width": 250}]}
SHA = "c" * 64
PROV = {"package_version": "0.1.0"}
SCORES = ["insulation", "dist"]


def layouts(n1: int = 157, n2: int = 41, chunk_size: int = 4, maps: int = 0) -> list[GroupLayout]:
    """Two groups of 250-bp deletions; ``maps``: keep that many 3-bin Δ maps per unit."""
    out = []
    for chrom, n in (("chr1", n1), ("chr2", n2)):
        start = np.arange(n, dtype=np.int64) * 100
        out.append(
            GroupLayout(
                chrom=chrom,
                chrom_length=100 * n + 1_000,
                analysis="del",
                kind="deletion",
                params={"width": 250},
                start=start,
                end=start + 250,
                window_start=start - 500,
                scores=list(SCORES),
                chunk_size=chunk_size,
                top_maps=(maps, 3) if maps else (0, 0),
            )
        )
    return out


def unit_values(lay: GroupLayout, k: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic values per unit (a recomputed unit gives the same), with ties and NaNs."""
    rng = np.random.default_rng([seed, int(lay.chrom[3:]), k])
    size = lay.chunk_slice(k).stop - lay.chunk_slice(k).start
    values = {s: np.round(rng.standard_normal(size), 1).astype(np.float32) for s in lay.scores}
    values["dist"][rng.random(size) < 0.1] = np.nan
    return values


def unit_top(lay: GroupLayout, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Deterministic kept maps of a unit (groups with ``top_maps``): its first rows, random 3×3 maps."""
    keep = lay.top_maps[0]
    if not keep:
        return None
    rng = np.random.default_rng([7, int(lay.chrom[3:]), k])
    rows = lay.chunk_slice(k)
    index = np.arange(rows.start, min(rows.start + keep, rows.stop))
    return index, rng.standard_normal((len(index), 3, 3)).astype(np.float32)


def record(store: ResultStore, lay: GroupLayout, k: int):
    return store.unit_record(lay.chrom, "del", k, unit_values(lay, k), unit_top(lay, k))


def small_map_shards(monkeypatch, units_per_shard: int = 4) -> None:
    """Kept-map shards of a few units (they must divide the block)."""
    monkeypatch.setattr(
        store_mod, "map_units", lambda layout, block: min(units_per_shard, block) if layout.top_maps[0] else 0
    )


def kept_maps(path, chrom: str) -> xr.DataArray:
    return open_results(path).top_maps(chrom)


def map_store(tmp_path, monkeypatch) -> tuple[ResultStore, list[GroupLayout]]:
    """A new store keeping 2 maps a unit, in blocks of 8 units and map shards of 4."""
    small_blocks(monkeypatch)
    small_map_shards(monkeypatch, 4)
    lays = layouts(maps=2)
    return create_store(tmp_path / "s.zarr", SPEC, SHA, PROV, lays), lays


def assert_kept_maps(path, lay: GroupLayout, n_units: int) -> None:
    """The stored maps of ``lay``'s chromosome begin with those of its first ``n_units`` units."""
    want = np.concatenate([unit_top(lay, k)[1] for k in range(n_units)])
    np.testing.assert_array_equal(kept_maps(path, lay.chrom).values[: len(want)], want)


def units(lays: list[GroupLayout]) -> list[tuple[GroupLayout, int]]:
    return [(lay, k) for lay in lays for k in range(lay.n_chunks)]


def small_blocks(monkeypatch, units_per_block: int = 8) -> None:
    """Blocks of a few units, so that small test stores have several blocks (and shards)."""
    monkeypatch.setattr(store_mod, "block_units", lambda layout: max(1, min(units_per_block, layout.n_chunks)))


def fill(store: ResultStore, lays, which=None, flush_s: float = 3600.0) -> BlockWriter:
    writer = store.block_writer(flush_s)
    for lay, k in units(lays):
        if which is None or (lay.chrom, k) in which:
            writer.add(record(store, lay, k))
    writer.flush()
    return writer


def tables(path) -> dict[str, pd.DataFrame]:
    results = open_results(path)
    return {chrom: results.to_dataframe(chrom) for chrom in results.chromosomes}


def test_round_trip_and_objects_per_block(tmp_path, monkeypatch):
    small_blocks(monkeypatch)
    lays = layouts()
    store = create_store(tmp_path / "s.zarr", SPEC, SHA, PROV, lays)
    assert store.format_version == 3
    fill(store, lays)
    store.mark_complete()
    results = open_results(tmp_path / "s.zarr")
    assert results.progress == (sum(lay.n_chunks for lay in lays),) * 2 and results.is_complete
    for lay in lays:
        table = results.to_dataframe(lay.chrom)
        want = np.concatenate([unit_values(lay, k)["dist"] for k in range(lay.n_chunks)])
        np.testing.assert_array_equal(table["dist"].to_numpy(), want)
        np.testing.assert_array_equal(table["start"].to_numpy(), lay.start)
    # one shard per block and score, one flag, digest and two summary objects per block
    group = tmp_path / "s.zarr" / "chr1" / "del"
    blocks = -(-lays[0].n_chunks // 8)
    for name in (*SCORES, "chunk_done", "chunk_digest", "hit_index", "hit_value"):
        assert len([p for p in (group / name / "c").rglob("*") if p.is_file()]) == blocks, name


def test_plain_xarray_and_zarr_read_a_store_without_warnings(tmp_path):
    """The snippet of docs/store.md: zarr and xarray alone, consolidated metadata, start/end as coordinates."""
    lays = layouts()
    store = create_store(tmp_path / "s.zarr", SPEC, SHA, PROV, lays)
    fill(store, lays)
    path = str(tmp_path / "s.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # --- docs/store.md snippet
        root = zarr.open_group(path, mode="r")
        print(root.attrs["screening"]["chromosomes"])
        ds = xr.open_zarr(path, group="chr1/del")  # consolidated: no warning
        done = np.repeat(ds["chunk_done"].values.astype(bool), ds.attrs["chunk_size"])[: ds.sizes["perturbation"]]
        table = ds[["insulation", "dist"]].where(xr.DataArray(done, dims="perturbation")).to_dataframe()
        # ---
    assert {"start", "end", "window_start"} <= set(ds.coords)
    assert "start" in table.columns and len(table) == lays[0].n
    expected = open_results(path).to_dataframe("chr1")
    np.testing.assert_array_equal(table["insulation"].to_numpy(), expected["insulation"].to_numpy())
    np.testing.assert_array_equal(table["start"].to_numpy(), expected["start"].to_numpy())


@pytest.mark.parametrize("old", [1, 2])
def test_old_formats_read_the_same_as_format_3(tmp_path, monkeypatch, old):
    from screening.report.hits import top_hits

    lays = layouts()
    new = create_store(tmp_path / "new.zarr", SPEC, SHA, PROV, lays)
    with monkeypatch.context() as patch:
        patch.setattr(store_mod, "FORMAT_VERSION", old)
        before = create_store(tmp_path / "old.zarr", SPEC, SHA, PROV, lays)
    some = {(lay.chrom, k) for lay, k in units(lays) if k % 3}
    fill(new, lays, some)
    for lay, k in units(lays):  # an old store: every unit writes its own objects
        if (lay.chrom, k) in some:
            before.write_chunk(lay.chrom, "del", k, unit_values(lay, k))
    a, b = open_results(tmp_path / "new.zarr"), open_results(tmp_path / "old.zarr")
    assert a.progress == b.progress
    for region in ("chr1", "chr2", "chr1:1,000-3,000"):
        xr.testing.assert_identical(a.query(region).compute(), b.query(region).compute())
    for n in (3, HIT_K, HIT_K + 1):  # the summary (n <= HIT_K) and the streamed scan
        pd.testing.assert_frame_equal(top_hits(a, n=n), top_hits(b, n=n))
    # resuming an old store keeps its format: its units still write themselves
    again, resumed = open_or_create_store(tmp_path / "old.zarr", SPEC, SHA, PROV, lays)
    assert resumed and again.format_version == old


def test_units_not_written_when_the_driver_dies_are_recomputed(tmp_path, monkeypatch):
    """A block is written whole, flags last; what the writer held when it died is simply redone."""
    small_blocks(monkeypatch)
    lays = layouts()
    clean = create_store(tmp_path / "clean.zarr", SPEC, SHA, PROV, lays)
    fill(clean, lays)
    store = create_store(tmp_path / "s.zarr", SPEC, SHA, PROV, lays)
    writer = store.block_writer(flush_s=3600)
    todo = units(lays)
    for lay, k in todo[:30]:  # blocks 0-2 of chr1 complete (written), block 3 half full (held)
        writer.add(store.unit_record(lay.chrom, "del", k, unit_values(lay, k)))
    assert writer.pending == 1 and writer.blocks_written == 3
    del writer  # the driver dies: the half block was never written
    fresh = ResultStore(tmp_path / "s.zarr")
    assert fresh.progress()[0] == 24
    # a shard written without its flags (death between the two) must not count either
    zarr.open_group(tmp_path / "s.zarr", mode="r+")["chr1/del/dist"][96:100] = 42.0
    assert 42.0 not in open_results(tmp_path / "s.zarr").to_dataframe("chr1")["dist"].tolist()
    pending = fresh.pending_units()
    assert len(pending) == len(todo) - 24
    writer = fresh.block_writer(flush_s=3600)
    for chrom, _, k in pending:
        lay = lays[0] if chrom == "chr1" else lays[1]
        writer.add(fresh.unit_record(chrom, "del", k, unit_values(lay, k)))
    writer.flush()
    assert writer.pending == 0
    for chrom, table in tables(tmp_path / "s.zarr").items():
        pd.testing.assert_frame_equal(table, tables(tmp_path / "clean.zarr")[chrom])
    assert fresh.verify() == []


def test_a_partly_done_block_is_read_back_before_it_is_rewritten(tmp_path, monkeypatch):
    small_blocks(monkeypatch)
    lays = layouts()
    store = create_store(tmp_path / "s.zarr", SPEC, SHA, PROV, lays)
    fill(store, lays, {("chr1", k) for k in (0, 2, 5)})  # block 0 partly done
    fill(ResultStore(store.path), lays, {("chr1", k) for k in (1, 3, 4, 6, 7)})  # a later run completes it
    table = open_results(store.path).to_dataframe("chr1")
    want = np.concatenate([unit_values(lays[0], k)["insulation"] for k in range(8)])
    np.testing.assert_array_equal(table["insulation"].to_numpy()[:32], want)
    assert ResultStore(store.path).verify() == []


def _kill_target(path: str, seed_pause: float, maps: int) -> None:
    """A driver stand-in: folds every unit in order, flushing often, slowly, until killed."""
    store = ResultStore(path)
    writer = store.block_writer(flush_s=0.05)  # kept-map shards: written when full (map_flush_s 60 s)
    for lay, k in units(layouts(maps=maps)):
        writer.add(record(store, lay, k))
        time.sleep(seed_pause)
    writer.flush()


@pytest.mark.parametrize("maps", [0, 2], ids=["scores", "kept-maps"])
def test_resume_after_a_kill_equals_a_clean_run(tmp_path, monkeypatch, maps):
    small_blocks(monkeypatch, 16)
    small_map_shards(monkeypatch, 8)
    lays = layouts(maps=maps)
    clean = create_store(tmp_path / "clean.zarr", SPEC, SHA, PROV, lays)
    fill(clean, lays)
    path = tmp_path / "s.zarr"
    create_store(path, SPEC, SHA, PROV, lays)
    # the child writes blocks of the store's size (block_units is read from the store's attributes)
    child = multiprocessing.get_context("spawn").Process(target=_kill_target, args=(str(path), 0.01, maps))
    child.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and ResultStore(path).progress()[0] < 20:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    done, total = ResultStore(path).progress()
    assert 20 <= done < total, "the writer was not killed mid-run"
    store, resumed = open_or_create_store(path, SPEC, SHA, PROV, lays)
    assert resumed
    fill(store, lays, {(chrom, k) for chrom, _, k in store.pending_units()})
    for chrom, table in tables(path).items():
        pd.testing.assert_frame_equal(table, tables(tmp_path / "clean.zarr")[chrom])
        if maps:
            xr.testing.assert_identical(kept_maps(path, chrom), kept_maps(tmp_path / "clean.zarr", chrom))
    assert store.verify() == [] and store.progress() == (total, total)


def _worker(args) -> object:
    """A worker process: compute a unit, return its record (the worker writes no shard)."""
    path, chrom, k, maps = args
    lay = layouts(maps=maps)[0 if chrom == "chr1" else 1]
    time.sleep(np.random.default_rng(k).random() * 0.01)  # finish out of order
    return record(ResultStore(path), lay, k)


@pytest.mark.parametrize("trial,maps", [(0, 0), (1, 0), (2, 0), (0, 2), (1, 2)])
def test_one_writer_per_shard_under_concurrent_workers(tmp_path, monkeypatch, trial, maps):
    """Workers in separate processes finish units in any order; the driver alone writes each block
    (and kept-map shard): no chunk is lost, over repeated trials."""
    small_blocks(monkeypatch)
    small_map_shards(monkeypatch)
    lays = layouts(maps=maps)
    path = str(tmp_path / "s.zarr")
    store = create_store(path, SPEC, SHA, PROV, lays)
    # a write per unit: the most rewrites of shared shards
    writer = store.block_writer(flush_s=0.0, map_flush_s=0.0)
    tasks = [(path, lay.chrom, k, maps) for lay, k in units(lays)]
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        for record in pool.imap_unordered(_worker, tasks):
            writer.add(record)
    writer.flush()
    results = open_results(path)
    assert results.progress == (len(tasks), len(tasks))
    for lay in lays:
        table = results.to_dataframe(lay.chrom)
        for score in SCORES:
            want = np.concatenate([unit_values(lay, k)[score] for k in range(lay.n_chunks)])
            np.testing.assert_array_equal(table[score].to_numpy(), want)
        if maps:
            want = np.concatenate([unit_top(lay, k)[1] for k in range(lay.n_chunks)])
            np.testing.assert_array_equal(kept_maps(path, lay.chrom).values, want)
    assert ResultStore(path).verify() == []


def test_verify_finds_a_tampered_unit_and_it_is_recomputed(tmp_path, monkeypatch):
    small_blocks(monkeypatch)
    lays = layouts()
    store = create_store(tmp_path / "s.zarr", SPEC, SHA, PROV, lays)
    fill(store, lays)
    store.mark_complete()
    zarr.open_group(tmp_path / "s.zarr", mode="r+")["chr1/del/insulation"][20:24] = 7.0  # unit 5, digest unchanged
    found = ResultStore(store.path).verify()
    assert len(found) == 1 and found[0].startswith("chr1/del chunk 5") and "digest mismatch" in found[0]
    fresh = ResultStore(store.path)
    assert fresh.pending_units() == [("chr1", "del", 5)] and not fresh.attrs["complete"]
    fill(fresh, lays, {("chr1", 5)})
    assert fresh.verify() == []
    np.testing.assert_array_equal(
        open_results(store.path).to_dataframe("chr1")["insulation"].to_numpy()[20:24],
        unit_values(lays[0], 5)["insulation"],
    )


def test_summary_top_hits_ignore_units_without_flags(tmp_path, monkeypatch):
    small_blocks(monkeypatch)
    lays = layouts()
    store = create_store(tmp_path / "s.zarr", SPEC, SHA, PROV, lays)
    fill(store, lays)
    flags = zarr.open_group(tmp_path / "s.zarr", mode="r+")["chr1/del/chunk_done"]
    flags[2] = 0  # as if its flag had not been written
    results = open_results(tmp_path / "s.zarr")
    got = results.nlargest("chr1", "insulation", 10)
    table = results.to_dataframe("chr1").dropna(subset=["insulation"]).nlargest(10, "insulation")
    pd.testing.assert_frame_equal(got, table[list(got.columns)].reset_index(drop=True))
    assert not ((got["start"] >= 800) & (got["start"] < 1_200)).any()


def test_whole_chromosome_query_is_a_few_dask_tasks(tmp_path):
    lays = layouts(n1=4_000, n2=10, chunk_size=4)
    store = create_store(tmp_path / "s.zarr", SPEC, SHA, PROV, lays)
    fill(store, lays, {("chr1", k) for k in range(0, 1_000, 2)})
    ds = open_results(tmp_path / "s.zarr").query("chr1")
    assert ds["insulation"].data.npartitions == 1  # not one task per unit (1,000 units)
    values = ds["insulation"].values
    assert np.isfinite(values[:4]).all() and np.isnan(values[4:8]).all()


def test_block_sizes_follow_the_units_bytes():
    lay = layouts(n1=100_000, chunk_size=16)[0]
    assert store_mod.block_units(lay) == 1024
    big = layouts(n1=2_000_000, chunk_size=4096)[0]
    assert store_mod.block_units(big) == (1 << 22) // (4 * 4096)
    assert store_mod.block_units(layouts(n1=10)[0]) == 3  # never more than the group's units


def test_regular_coordinates_are_computed_irregular_ones_read(tmp_path, monkeypatch):
    from screening.store.layout import coords_from, regular_coords

    lays = layouts()
    start = np.sort(np.random.default_rng(0).choice(5_000, 40, replace=False)).astype(np.int64)
    odd = GroupLayout(
        chrom="chr3",
        chrom_length=10_000,
        analysis="del",
        kind="deletion",
        params={},
        start=start,
        end=start + 250,
        window_start=start - 500,
        scores=list(SCORES),
        chunk_size=4,
    )
    store = create_store(tmp_path / "s.zarr", SPEC, SHA, PROV, [*lays, odd])
    group = zarr.open_group(tmp_path / "s.zarr", mode="r")
    assert group["chr1/del"].attrs["regular"] == {"start": 0, "step": 100, "width": 250, "n": lays[0].n}
    assert "regular" not in group["chr3/del"].attrs and regular_coords(odd.start, odd.end) is None
    np.testing.assert_array_equal(coords_from(group["chr1/del"].attrs["regular"])[1], lays[0].end)
    fill(store, lays)
    reads: list[str] = []
    original = zarr.storage.LocalStore.get

    async def counting(self, key, *args, **kwargs):
        reads.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", counting)
    frame = open_results(tmp_path / "s.zarr").to_dataframe("chr1:1,000-2,000")
    np.testing.assert_array_equal(frame["start"].to_numpy(), lays[0].start[8:20])  # 750 < start < 2,000
    assert not [key for key in reads if "/end/c/" in key or "/start/c/" in key]  # computed, not read
    reads.clear()
    open_or_create_store(tmp_path / "s.zarr", SPEC, SHA, PROV, [*lays, odd])[0]
    assert not [key for key in reads if "chr1/del/start/c/" in key or "chr1/del/end/c/" in key]
    assert [key for key in reads if "chr3/del/start/c/" in key]  # irregular: read and compared
    bad = GroupLayout(
        chrom="chr1",
        chrom_length=lays[0].chrom_length,
        analysis="del",
        kind="deletion",
        params={},
        start=lays[0].start + 1,
        end=lays[0].end + 1,
        window_start=lays[0].window_start,
        scores=list(SCORES),
        chunk_size=4,
    )
    with pytest.raises(StoreError, match="does not match this run.s layout"):
        open_or_create_store(tmp_path / "s.zarr", SPEC, SHA, PROV, [bad, lays[1], odd])


def test_regular_overlap_equals_the_computed_coordinates():
    """A query of a regular group finds its rows by arithmetic: the same rows as comparing every start/end."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from screening.store.layout import coords_from, regular_overlap

    @settings(max_examples=400, deadline=None)
    @given(
        st.integers(0, 50),
        st.integers(1, 20),
        st.integers(1, 40),
        st.integers(2, 30),
        st.integers(-20, 700),
        st.integers(1, 200),
        st.integers(0, 30),
        st.integers(0, 30),
    )
    def check(s0, step, width, n, a, length, r0, r1):
        regular = {"start": s0, "step": step, "width": width, "n": n}
        start, end = coords_from(regular)
        expected = np.flatnonzero((start < a + length) & (end > a))
        np.testing.assert_array_equal(np.arange(*regular_overlap(regular, a, a + length)), expected)
        lo, hi = sorted((min(r0, n), min(r1, n)))
        part = coords_from(regular, lo, hi)
        np.testing.assert_array_equal(part[0], start[lo:hi])
        np.testing.assert_array_equal(part[1], end[lo:hi])

    check()


# --------------------------------------------------------------------------- kept maps (keep_maps)


def test_kept_maps_are_one_object_per_block_and_map_shard(tmp_path, monkeypatch):
    """The driver writes kept maps: top_index one object per block, top_delta one per map shard."""
    store, lays = map_store(tmp_path, monkeypatch)
    fill(store, lays)
    group = tmp_path / "s.zarr" / "chr1" / "del"
    objects = {p.name: sum(1 for f in (p / "c").rglob("*") if f.is_file()) for p in group.iterdir() if p.is_dir()}
    n_chunks = lays[0].n_chunks  # 40: 5 blocks of 8, 10 map shards of 4
    assert objects["top_index"] == 5 and objects["top_delta"] == 10
    assert all(n == 5 for name, n in objects.items() if name not in ("top_delta",) + COORD_NAMES), objects
    maps = kept_maps(tmp_path / "s.zarr", "chr1")
    np.testing.assert_array_equal(maps.values, np.concatenate([unit_top(lays[0], k)[1] for k in range(n_chunks)]))
    np.testing.assert_array_equal(
        maps["start"].values, lays[0].start[[i for k in range(n_chunks) for i in unit_top(lays[0], k)[0]]]
    )
    assert ResultStore(store.path).verify() == []


COORD_NAMES = ("start", "end", "window_start")


def test_map_shards_by_default_fill_a_block_when_maps_are_small():
    lay = layouts(n1=64 * 400, chunk_size=4, maps=2)[0]
    assert store_mod.map_units(lay, 1024) == 1024  # 72 bytes a unit
    big = layouts(n1=64 * 400, chunk_size=4)[0]
    big.top_maps = (4, 256)  # C.Origami, keep_maps 4: 1 MiB a unit → 64 MiB shards
    assert store_mod.map_units(big, 1024) == 64 and store_mod.map_units(big, 48) == 48
    big.top_maps = (4, 1024)  # 16 MiB a unit: a shard per unit
    assert store_mod.map_units(big, 1024) == 4 and store_mod.map_units(big, 7) == 1


def test_a_units_flag_waits_for_its_map_shard(tmp_path, monkeypatch):
    """A block may be written before its units' map shard; those units' flags (and top_index rows) wait
    until their maps are written, so a flagged unit always has its maps."""
    store, lays = map_store(tmp_path, monkeypatch)
    writer = store.block_writer(flush_s=0.0, map_flush_s=3600)  # blocks at every add, map shards when full
    for k in range(3):
        writer.add(record(store, lays[0], k))
    fresh = ResultStore(store.path)
    assert writer.blocks_written == 3 and fresh.progress()[0] == 0
    assert kept_maps(store.path, "chr1").sizes["top"] == 0
    writer.add(record(store, lays[0], 3))  # fills map shard 0: written, then its units' flags
    assert writer.map_shards_written == 1 and ResultStore(store.path).progress()[0] == 4
    assert kept_maps(store.path, "chr1").sizes["top"] == 8
    writer.add(record(store, lays[0], 4))
    assert ResultStore(store.path).progress()[0] == 4
    writer.flush()  # the end of a run: partial map shards too
    assert ResultStore(store.path).progress()[0] == 5 and writer.pending == 1
    assert_kept_maps(store.path, lays[0], 5)
    # a later run completes the block: the partial map shard's stored unit is read back, not lost
    again = ResultStore(store.path).block_writer(flush_s=3600)
    for k in range(5, 8):
        again.add(record(store, lays[0], k))
    assert again.pending == 0 and ResultStore(store.path).progress()[0] == 8
    assert_kept_maps(store.path, lays[0], 8)
    assert ResultStore(store.path).verify() == []


def test_a_map_shard_is_rewritten_after_map_flush_s(tmp_path, monkeypatch):
    store, lays = map_store(tmp_path, monkeypatch)
    writer = store.block_writer(flush_s=0.0, map_flush_s=0.0)
    writer.add(record(store, lays[0], 0))
    assert writer.map_shards_written == 1 and ResultStore(store.path).progress()[0] == 1


def test_map_shard_rewrites_wait_for_their_cost(tmp_path, monkeypatch):
    """Rewrites of a partial map shard are spaced by 1 / MAP_WRITE_SHARE times the last write's cost."""
    store, lays = map_store(tmp_path, monkeypatch)
    monkeypatch.setattr(blocks_mod, "MAP_WRITE_SHARE", 1e-9)  # any measured cost: a wait of ages
    writer = store.block_writer(flush_s=0.0, map_flush_s=0.0)
    writer.add(record(store, lays[0], 0))  # no cost known yet: written at once, its cost measured
    assert writer.map_shards_written == 1
    for k in (1, 2):  # new units in the shard, but the rewrite waits
        writer.add(record(store, lays[0], k))
    assert writer.map_shards_written == 1 and ResultStore(store.path).progress()[0] == 1
    writer.add(record(store, lays[0], 3))  # full: written whatever the wait
    writer.add(record(store, lays[0], 4))  # map shard 1, partial: waits too
    assert writer.map_shards_written == 2 and ResultStore(store.path).progress()[0] == 4
    writer.flush()
    assert writer.map_shards_written == 3 and ResultStore(store.path).progress()[0] == 5


def test_kept_maps_of_stores_without_map_units_are_each_units_own(tmp_path, monkeypatch):
    """Format 3 stores written before map shards: a unit's maps are its own chunks (written by its
    worker in unit_record); they read, resume and verify the same as the new layout."""
    small_blocks(monkeypatch)
    lays = layouts(maps=2)
    with monkeypatch.context() as patch:
        patch.setattr(store_mod, "map_units", lambda layout, block: 0)
        old = create_store(tmp_path / "old.zarr", SPEC, SHA, PROV, lays)
    new = create_store(tmp_path / "new.zarr", SPEC, SHA, PROV, lays)
    some = {(lay.chrom, k) for lay, k in units(lays) if k % 3}
    for store in (old, new):
        fill(store, lays, some)
    group = tmp_path / "old.zarr" / "chr1" / "del"
    assert sum(1 for f in (group / "top_delta" / "c").rglob("*") if f.is_file()) == sum(
        1 for chrom, _ in some if chrom == "chr1"
    )
    for chrom in ("chr1", "chr2"):
        xr.testing.assert_identical(kept_maps(old.path, chrom), kept_maps(new.path, chrom))
    resumed, again = open_or_create_store(tmp_path / "old.zarr", SPEC, SHA, PROV, lays)
    assert again
    fill(resumed, lays, {(c, k) for c, _, k in resumed.pending_units()})
    fill(new, lays, {(c, k) for c, _, k in ResultStore(new.path).pending_units()})
    for chrom in ("chr1", "chr2"):
        xr.testing.assert_identical(kept_maps(old.path, chrom), kept_maps(new.path, chrom))
    assert ResultStore(old.path).verify() == [] and ResultStore(new.path).verify() == []


def test_verify_finds_a_tampered_kept_map_and_the_rerun_keeps_its_shard_mates(tmp_path, monkeypatch):
    store, lays = map_store(tmp_path, monkeypatch)
    fill(store, lays)
    zarr.open_group(tmp_path / "s.zarr", mode="r+")["chr1/del/top_delta"][10:12] = 5.0  # unit 5's maps
    found = ResultStore(store.path).verify()
    assert len(found) == 1 and found[0].startswith("chr1/del chunk 5") and "digest mismatch" in found[0]
    fresh = ResultStore(store.path)
    assert fresh.pending_units() == [("chr1", "del", 5)]
    rows = sum(len(unit_top(lays[0], k)[0]) for k in range(lays[0].n_chunks))
    assert kept_maps(store.path, "chr1").sizes["top"] == rows - 2  # an unflagged unit shows no maps
    fill(fresh, lays, {("chr1", 5)})
    assert fresh.verify() == []
    assert_kept_maps(store.path, lays[0], lays[0].n_chunks)


def test_open_map_shards_are_bounded_in_memory(tmp_path, monkeypatch):
    """Past MAP_MEMORY_BYTES the least recently filled open map shard is written and dropped; its units
    arriving later (retries) read it back, nothing is lost."""
    unit_bytes = 2 * 3 * 3 * 4
    monkeypatch.setattr(blocks_mod, "MAP_MEMORY_BYTES", 3 * unit_bytes)
    store, lays = map_store(tmp_path, monkeypatch)
    writer = store.block_writer(flush_s=3600, map_flush_s=3600)
    for k in (0, 4, 8, 12):  # one unit in each of four map shards: the first is written early
        writer.add(record(store, lays[0], k))
        assert sum(m.nbytes for shard in writer._maps.values() for m in shard.maps.values()) <= 3 * unit_bytes
    assert writer.map_shards_written == 1
    for k in (1, 2, 3, *range(5, 16)):
        writer.add(record(store, lays[0], k))
    writer.flush()
    assert_kept_maps(store.path, lays[0], 16)
    assert ResultStore(store.path).verify() == []


def test_a_damaged_map_shard_is_an_error_naming_the_array(tmp_path, monkeypatch):
    store, lays = map_store(tmp_path, monkeypatch)
    fill(store, lays)
    shard = tmp_path / "s.zarr" / "chr1" / "del" / "top_delta" / "c" / "1" / "0" / "0"  # units 4-7
    data = bytearray(shard.read_bytes())
    data[10] ^= 0x01  # in its first inner chunk: unit 4's maps
    shard.write_bytes(bytes(data))
    results = open_results(tmp_path / "s.zarr")
    assert results.top_maps("chr1:0-1,500").sizes["top"] == 8  # units 0-3: another shard
    with pytest.raises(store_mod.DamagedChunkError, match=r"chr1/del/top_delta .*damaged"):
        results.top_maps("chr1:1,600-2,000")


def test_a_record_without_its_kept_maps_is_refused_naming_the_unit(tmp_path, monkeypatch):
    store, lays = map_store(tmp_path, monkeypatch)
    bare = store_mod.UnitRecord("chr1", "del", 3, unit_values(lays[0], 3), digest=0)  # top missing
    writer = store.block_writer()
    with pytest.raises(StoreError, match=r"chr1/del chunk 3: the unit's kept maps are missing"):
        writer.add(bare)
    assert writer.pending == 0  # refused before its block was opened or changed
