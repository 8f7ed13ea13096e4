"""Writer side of the result store (screening.store.writer)."""

from __future__ import annotations

import multiprocessing
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import zarr

from screening.store import writer as store_mod
from screening.store.layout import COORD_CHUNK
from screening.store.writer import (
    FORMAT_VERSION,
    GroupLayout,
    ResultStore,
    StoreError,
    StoreNotFoundError,
    create_store,
    open_or_create_store,
    read_store_attrs,
)

SPEC = {"name": "toy-screen", "perturbations": [{"kind": "deletion", "width": 250}]}
SHA = "a" * 64
PROV = {"package_version": "0.1.0", "model": {"name": "toy", "checksum": "0" * 8}}
SCORES = ["insulation", "dist"]


def make_layouts(n: int = 37, chunk_size: int = 8, analyses=("del", "ins"), chroms=None) -> list[GroupLayout]:
    """Two chromosomes × analyses; chr2 has fewer perturbations than chr1."""
    chroms = chroms or {"chr1": (10_000, n), "chr2": (8_000, 20)}
    layouts = []
    for chrom, (length, count) in chroms.items():
        for analysis in analyses:
            start = np.arange(count, dtype=np.int64) * 100
            layouts.append(
                GroupLayout(
                    chrom=chrom,
                    chrom_length=length,
                    analysis=analysis,
                    kind="deletion",
                    params={"width": 250},
                    start=start,
                    end=start + 250,
                    window_start=start - 1_000,
                    scores=list(SCORES),
                    chunk_size=chunk_size,
                )
            )
    return layouts


def values_for(layout: GroupLayout, k: int) -> dict[str, np.ndarray]:
    """Recognisable values: global index plus an offset per score."""
    idx = np.arange(layout.n, dtype=np.float32)[layout.chunk_slice(k)]
    return {score: idx + 1000 * i for i, score in enumerate(layout.scores)}


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (plus directories, as empty markers)."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), path) + "/"] = b""
        for name in files:
            full = os.path.join(root, name)
            out[os.path.relpath(full, path)] = Path(full).read_bytes()
    return out


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name and p.name.startswith(path.name))


@pytest.fixture
def layouts() -> list[GroupLayout]:
    return make_layouts()


@pytest.fixture
def store(tmp_path, layouts) -> ResultStore:
    return create_store(tmp_path / "screen.zarr", SPEC, SHA, PROV, layouts)


@pytest.fixture
def store_v2(tmp_path, layouts, monkeypatch) -> ResultStore:
    """A format 2 store (one object per unit's chunk, flag and digest; units write themselves)."""
    with monkeypatch.context() as patch:
        patch.setattr(store_mod, "FORMAT_VERSION", 2)
        return create_store(tmp_path / "screen.zarr", SPEC, SHA, PROV, layouts)


# --------------------------------------------------------------------------- GroupLayout


def test_layout_chunks():
    lay = make_layouts()[0]
    assert (lay.n, lay.n_chunks) == (37, 5)
    assert lay.chunk_slice(0) == slice(0, 8)
    assert lay.chunk_slice(4) == slice(32, 37)
    for bad in (-1, 5):
        with pytest.raises(StoreError, match="out of range"):
            lay.chunk_slice(bad)
    assert lay.start.dtype == np.int64


def test_layout_empty_group_has_no_chunks():
    lay = GroupLayout("chr1", 100, "del", "deletion", {}, [], [], [], ["s"], 8)
    assert (lay.n, lay.n_chunks) == (0, 0)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(start=[5, 1], end=[10, 10], window_start=[0, 0]), "sorted"),
        (dict(start=[0, 1], end=[0, 10], window_start=[0, 0]), "end > start"),
        (dict(start=[0, 1], end=[10, 10_001], window_start=[0, 0]), "within"),
        (dict(start=[0, 1], end=[10, 10], window_start=[0]), "1-D with the length"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(scores=["done"]), "reserved"),
        (dict(scores=["a", "a"]), "duplicate"),
        (dict(scores=[]), "at least one score"),
        (dict(chrom="chr/1"), "chromosome name"),
        (dict(analysis="__x"), "analysis name"),
    ],
)
def test_layout_validation(change, message):
    args = dict(
        chrom="chr1", chrom_length=10_000, analysis="del", kind="deletion", params={},
        start=[0, 1], end=[10, 10], window_start=[0, 0], scores=["s"], chunk_size=8,
    )
    args.update(change)
    with pytest.raises(StoreError, match=message):
        GroupLayout(**args)


# --------------------------------------------------------------------------- creation


def test_create_store_layout_on_disk(tmp_path, store, layouts):
    path = Path(store.path)
    assert path == tmp_path / "screen.zarr"
    assert siblings(path) == []
    root = zarr.open_group(path, mode="r")
    attrs = root.attrs["screening"]
    assert attrs["format_version"] == FORMAT_VERSION
    assert attrs["spec"] == SPEC and attrs["spec_sha256"] == SHA and attrs["provenance"] == PROV
    assert attrs["analyses"] == ["del", "ins"]
    assert attrs["chromosomes"] == {"chr1": 10_000, "chr2": 8_000}
    assert attrs["complete"] is False
    assert dict(root["chr2"].attrs) == {"chrom": "chr2", "length": 8_000}
    group = root["chr1/del"]
    assert dict(group.attrs) == {
        "kind": "deletion", "params": {"width": 250}, "scores": SCORES, "dim": "perturbation", "extra_dims": {}, "labels": [],
        "top_maps": [0, 0], "score_dims": {s: [] for s in SCORES},
        "chunk_size": 8, "n_chunks": 5, "n": 37, "block_units": 5, "hit_k": 64,
        "regular": {"start": 0, "step": 100, "width": 250, "n": 37},  # readers compute start/end
    }
    for name in ("start", "end", "window_start"):
        arr = group[name]
        assert arr.dtype == np.int64 and arr.chunks == (40,)  # whole units, one chunk for a small group
        assert arr.metadata.dimension_names == ("perturbation",)
        np.testing.assert_array_equal(arr[:], getattr(layouts[0], name))
    for score in SCORES:
        arr = group[score]
        assert arr.dtype == np.float32 and arr.shape == (37,) and arr.chunks == (40,)
        assert arr.shards == (40,)  # format 3: one shard per block of units (all 5 here), inner chunks of 5
        assert arr.attrs["coordinates"] == "start end window_start"
        assert np.isnan(arr.fill_value) and np.isnan(arr[:]).all()
    done = group["chunk_done"]
    assert done.dtype == np.uint8 and done.shape == (5,) and done.chunks == (5,)  # one object per block
    assert done.metadata.dimension_names == ("chunk",)
    assert not done[:].any()
    assert root["chr2/ins/start"].shape == (20,)


def test_create_store_refuses_existing_path(tmp_path, store, layouts):
    before = snapshot(Path(store.path))
    with pytest.raises(StoreError, match="already exists"):
        create_store(store.path, SPEC, SHA, PROV, layouts)
    assert snapshot(Path(store.path)) == before


def test_create_store_into_empty_directory(tmp_path, layouts):
    path = tmp_path / "out.zarr"
    path.mkdir()
    store = create_store(path, SPEC, SHA, PROV, layouts)
    assert store.progress() == (0, 5 + 5 + 3 + 3)


def test_create_store_rejects_bad_layout_sets(tmp_path, layouts):
    with pytest.raises(StoreError, match="at least one"):
        create_store(tmp_path / "a.zarr", SPEC, SHA, PROV, [])
    with pytest.raises(StoreError, match="duplicate layout"):
        create_store(tmp_path / "a.zarr", SPEC, SHA, PROV, layouts + layouts[:1])
    other = make_layouts(chroms={"chr1": (9_999, 5)}, analyses=("other",))
    with pytest.raises(StoreError, match="disagree on the length"):
        create_store(tmp_path / "a.zarr", SPEC, SHA, PROV, layouts + other[:1])
    with pytest.raises(StoreError, match="JSON"):
        create_store(tmp_path / "a.zarr", {"bad": object()}, SHA, PROV, layouts)
    assert list(tmp_path.iterdir()) == []


def test_create_store_accepts_numpy_values_in_attrs(tmp_path, layouts):
    spec = {"name": "np", "width": np.int64(250), "path": Path("/x/y")}
    store = create_store(tmp_path / "a.zarr", spec, SHA, PROV, layouts)
    assert store.attrs["spec"] == {"name": "np", "width": 250, "path": "/x/y"}


def test_creation_failure_leaves_nothing(tmp_path, layouts, monkeypatch):
    real = store_mod._write_layout
    calls = []

    def failing(root, layout):
        calls.append(layout)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        real(root, layout)

    monkeypatch.setattr(store_mod, "_write_layout", failing)
    path = tmp_path / "screen.zarr"
    with pytest.raises(OSError, match="simulated"):
        create_store(path, SPEC, SHA, PROV, layouts)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError, match="simulated"):
        calls.clear()
        open_or_create_store(path, SPEC, SHA, PROV, layouts)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- writing


def test_write_chunk_and_progress(store, layouts):
    lay = layouts[0]
    assert store.progress() == (0, 16)
    assert len(store.pending_units()) == 16
    store.write_chunk("chr1", "del", 4, values_for(lay, 4))  # last, partial chunk
    store.write_chunk("chr1", "del", 1, values_for(lay, 1))
    np.testing.assert_array_equal(store.done_mask("chr1", "del"), [False, True, False, False, True])
    assert store.progress() == (2, 16)
    pending = store.pending_units()
    assert ("chr1", "del", 1) not in pending and ("chr1", "del", 0) in pending
    assert len(pending) == 14
    root = zarr.open_group(store.path, mode="r")
    got = root["chr1/del/insulation"][:]
    np.testing.assert_array_equal(got[8:16], np.arange(8, 16))
    np.testing.assert_array_equal(got[32:], np.arange(32, 37))
    assert np.isnan(got[:8]).all() and np.isnan(got[16:32]).all()
    np.testing.assert_array_equal(root["chr1/del/dist"][8:16], np.arange(8, 16) + 1000)
    assert np.isnan(root["chr1/ins/insulation"][:]).all()


def test_done_mask_fast_paths(store, layouts):
    lay = layouts[2]  # chr2/del, 3 chunks
    assert not store.done_mask("chr2", "del").any()
    for k in range(lay.n_chunks):
        store.write_chunk("chr2", "del", k, values_for(lay, k))
    assert store.done_mask("chr2", "del").all()
    assert all(unit[:2] != ("chr2", "del") for unit in store.pending_units())


def test_unit_coords_and_layout_roundtrip(store, layouts):
    coords = store.unit_coords("chr1", "ins", 4)
    np.testing.assert_array_equal(coords["start"], layouts[1].start[32:])
    np.testing.assert_array_equal(coords["window_start"], layouts[1].window_start[32:])
    back = store.layout("chr1", "ins")
    np.testing.assert_array_equal(back.end, layouts[1].end)
    assert (back.kind, back.params, back.scores, back.chunk_size) == ("deletion", {"width": 250}, SCORES, 8)
    assert store.groups() == [("chr1", "del"), ("chr1", "ins"), ("chr2", "del"), ("chr2", "ins")]


@pytest.mark.parametrize(
    "chrom, analysis, k, values, message",
    [
        ("chr3", "del", 0, None, "no group chr3/del"),
        ("chr1", "nope", 0, None, "no group chr1/nope"),
        ("chr1", "del", 5, None, "out of range"),
        ("chr1", "del", 0, {"insulation": np.zeros(8)}, "missing \\['dist'\\]"),
        ("chr1", "del", 0, {"insulation": np.zeros(8), "dist": np.zeros(8), "x": np.zeros(8)}, "unexpected \\['x'\\]"),
        ("chr1", "del", 0, {"insulation": np.zeros(8), "dist": np.zeros(7)}, "shape \\(7,\\)"),
        ("chr1", "del", 4, {"insulation": np.zeros(8), "dist": np.zeros(8)}, "expected \\(5,\\)"),
    ],
)
def test_write_chunk_validation_writes_nothing(store, chrom, analysis, k, values, message):
    values = values or {"insulation": np.zeros(8), "dist": np.zeros(8)}
    before = snapshot(Path(store.path))
    with pytest.raises(StoreError, match=message):
        store.write_chunk(chrom, analysis, k, values)
    assert snapshot(Path(store.path)) == before


def test_flag_is_written_last(store, layouts):
    """A unit that fails half-way keeps its flag unset, so a resume recomputes it."""
    store.write_chunk("chr1", "del", 0, values_for(layouts[0], 0))  # opens the handles

    class Broken:
        def __setitem__(self, key, value):
            raise OSError("worker died (simulated)")

    store._group("chr1", "del").arrays["dist"] = Broken()
    with pytest.raises(OSError, match="simulated"):
        store.write_chunk("chr1", "del", 2, values_for(layouts[0], 2))
    fresh = ResultStore(store.path)
    assert not fresh.done_mask("chr1", "del")[2]
    assert ("chr1", "del", 2) in fresh.pending_units()


def test_mark_complete(store, layouts):
    with pytest.raises(StoreError, match="16 of 16 work units are not done"):
        store.mark_complete()
    for lay in layouts:
        for k in range(lay.n_chunks):
            store.write_chunk(lay.chrom, lay.analysis, k, values_for(lay, k))
    assert store.pending_units() == []
    store.mark_complete()
    attrs = ResultStore(store.path).attrs
    assert attrs["complete"] is True and "finished" in attrs
    assert attrs["spec_sha256"] == SHA


# --------------------------------------------------------------------------- resume / refuse / overwrite


def test_resume_same_spec(tmp_path, layouts):
    path = tmp_path / "screen.zarr"
    store, resumed = open_or_create_store(path, SPEC, SHA, PROV, layouts)
    assert resumed is False
    store.write_chunk("chr1", "del", 3, values_for(layouts[0], 3))
    again, resumed = open_or_create_store(path, SPEC, SHA, PROV, make_layouts())
    assert resumed is True
    assert again.progress() == (1, 16)
    assert ("chr1", "del", 3) not in again.pending_units()


def test_refuse_other_spec_leaves_store_untouched(tmp_path, layouts):
    path = tmp_path / "screen.zarr"
    store, _ = open_or_create_store(path, SPEC, SHA, PROV, layouts)
    store.write_chunk("chr1", "del", 0, values_for(layouts[0], 0))
    before = snapshot(path)
    other = {"name": "other-screen"}
    with pytest.raises(StoreError) as err:
        open_or_create_store(path, other, "b" * 64, PROV, layouts)
    message = str(err.value)
    for part in ("a" * 64, "b" * 64, "toy-screen", "other-screen", "--overwrite", "another output path"):
        assert part in message
    assert snapshot(path) == before
    assert siblings(path) == []


def test_refuse_same_spec_different_layout(tmp_path, layouts):
    path = tmp_path / "screen.zarr"
    open_or_create_store(path, SPEC, SHA, PROV, layouts)
    before = snapshot(path)
    with pytest.raises(StoreError, match="different groups"):
        open_or_create_store(path, SPEC, SHA, PROV, make_layouts(analyses=("del",)))
    with pytest.raises(StoreError, match="does not match"):
        open_or_create_store(path, SPEC, SHA, PROV, make_layouts(n=36))
    with pytest.raises(StoreError, match="does not match"):
        open_or_create_store(path, SPEC, SHA, PROV, make_layouts(chunk_size=4))
    assert snapshot(path) == before


def test_refuse_foreign_paths(tmp_path, layouts):
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    plain_zarr = tmp_path / "plain.zarr"
    zarr.open_group(plain_zarr, mode="w").attrs["x"] = 1
    a_file = tmp_path / "file.zarr"
    a_file.write_text("not a store")
    for path in (foreign, plain_zarr, a_file):
        before = snapshot(path) if path.is_dir() else path.read_bytes()
        for overwrite in (False, True):
            with pytest.raises(StoreError, match="not a screening result store"):
                open_or_create_store(path, SPEC, SHA, PROV, layouts, overwrite=overwrite)
        assert (snapshot(path) if path.is_dir() else path.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "file.zarr", "plain.zarr"]


def test_refuse_unknown_format_version(tmp_path, store, layouts):
    root = zarr.open_group(store.path, mode="r+")
    attrs = dict(root.attrs["screening"], format_version=99)
    root.attrs["screening"] = attrs
    with pytest.raises(StoreError, match="format version 99"):
        open_or_create_store(store.path, SPEC, SHA, PROV, layouts)


def test_overwrite_replaces_store(tmp_path, layouts):
    path = tmp_path / "screen.zarr"
    store, _ = open_or_create_store(path, SPEC, SHA, PROV, layouts)
    store.write_chunk("chr1", "del", 0, values_for(layouts[0], 0))
    new, resumed = open_or_create_store(path, {"name": "new"}, "c" * 64, PROV, layouts[:1], overwrite=True)
    assert resumed is False
    assert new.attrs["spec_sha256"] == "c" * 64
    assert new.progress() == (0, 5)
    assert siblings(path) == []


def test_overwrite_failure_keeps_old_store(tmp_path, layouts, monkeypatch):
    path = tmp_path / "screen.zarr"
    store, _ = open_or_create_store(path, SPEC, SHA, PROV, layouts)
    store.write_chunk("chr1", "del", 0, values_for(layouts[0], 0))
    before = snapshot(path)

    def failing(root, layout):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(store_mod, "_write_layout", failing)
    with pytest.raises(OSError, match="simulated"):
        open_or_create_store(path, {"name": "new"}, "c" * 64, PROV, layouts, overwrite=True)
    assert snapshot(path) == before
    assert siblings(path) == []


def test_read_store_attrs(tmp_path, store):
    assert read_store_attrs(store.path)["spec"] == SPEC
    assert read_store_attrs(tmp_path) is None
    with pytest.raises(StoreNotFoundError):
        read_store_attrs(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):  # StoreNotFoundError is one too
        ResultStore(tmp_path / "missing").progress()


def test_url_of_unknown_protocol_is_refused_naming_it(layouts):
    # Remote stores themselves are tested against an S3 server in test_object_store.py.
    with pytest.raises(StoreError, match="nosuchproto://bucket/screen.zarr"):
        create_store("nosuchproto://bucket/screen.zarr", SPEC, SHA, PROV, layouts)


# --------------------------------------------------------------------------- pickling & processes


def test_result_store_pickles_without_handles(store, layouts):
    store.write_chunk("chr1", "del", 0, values_for(layouts[0], 0))  # opens handles
    assert store._groups
    state = store.__getstate__()
    assert state == {"path": store.path, "storage_options": {}}
    clone = pickle.loads(pickle.dumps(store))
    assert clone.path == store.path and not clone._groups
    clone.write_chunk("chr1", "del", 1, values_for(layouts[0], 1))
    assert store.progress() == (2, 16)


def test_concurrent_writers_from_processes(store_v2, layouts):
    """Format 2: several spawned processes write disjoint chunks at once; everything lands."""
    store = store_v2
    tasks = [
        (lay.chrom, lay.analysis, k, values_for(lay, k)) for lay in layouts for k in range(lay.n_chunks)
    ]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        # The bound method pickles the store by path, as a Ray task would.
        pool.starmap(store.write_chunk, tasks, chunksize=1)
    fresh = ResultStore(store.path)
    assert fresh.progress() == (16, 16)
    assert fresh.pending_units() == []
    root = zarr.open_group(store.path, mode="r")
    for lay in layouts:
        for i, score in enumerate(SCORES):
            got = root[f"{lay.chrom}/{lay.analysis}/{score}"][:]
            np.testing.assert_array_equal(got, np.arange(lay.n, dtype=np.float32) + 1000 * i)
    leftovers = [p for p in Path(store.path).rglob("*.partial")]
    assert leftovers == []


def test_extra_dims_and_labels_round_trip(tmp_path):
    """Mutagenesis-style [position, 4] scores and string labels (variant ids) are stored and queried."""
    from screening.store.reader import open_results

    starts = np.arange(100, 110, dtype=np.int64)
    layout = GroupLayout(
        chrom="chr1", chrom_length=1_000, analysis="ism", kind="mutagenesis", params={},
        start=starts, end=starts + 1, window_start=starts * 0, scores=["impact_mean_abs"], chunk_size=4,
        extra_dims={"base": 4}, labels={"ref_base": np.array(list("ACGTACGTAC")), "id": np.array([f"v{i}" for i in range(10)])},
    )
    store = create_store(tmp_path / "m.zarr", {"name": "m"}, "h", {}, [layout])
    values = np.arange(40, dtype=np.float32).reshape(10, 4)
    for k in range(layout.n_chunks):
        sl = layout.chunk_slice(k)
        store.write_chunk("chr1", "ism", k, {"impact_mean_abs": values[sl]})
    with pytest.raises(StoreError, match=r"expected \(4, 4\)"):
        store.write_chunk("chr1", "ism", 0, {"impact_mean_abs": values[:4, 0]})
    ds = open_results(tmp_path / "m.zarr").query("chr1:102-104").compute()
    assert ds["impact_mean_abs"].dims == ("perturbation", "base")
    np.testing.assert_array_equal(ds["impact_mean_abs"].values, values[2:4])
    assert ds["base"].values.tolist() == list("ACGT")
    assert ds["ref_base"].values.tolist() == ["G", "T"] and ds["id"].values.tolist() == ["v2", "v3"]
    frame = open_results(tmp_path / "m.zarr").to_dataframe("chr1:102-103")
    assert frame.columns.tolist() == ["chrom", "start", "end", "base", "impact_mean_abs"] and len(frame) == 4


# --------------------------------------------------------------------------- integrity (checksums, digests, verify)

from zarr.codecs import Crc32cCodec  # noqa: E402

from screening.store.writer import DamagedChunkError  # noqa: E402


def chunk_file(store: ResultStore, array: str, k: int) -> Path:
    return Path(store.path) / array / "c" / str(k)


def flip_bit(path: Path, byte: int = 3) -> None:
    data = bytearray(path.read_bytes())
    data[byte] ^= 0x10
    path.write_bytes(bytes(data))


def write_everything(store: ResultStore, layouts) -> None:
    for lay in layouts:
        for k in range(lay.n_chunks):
            store.write_chunk(lay.chrom, lay.analysis, k, values_for(lay, k))


def test_new_stores_checksum_every_array(store):
    assert read_store_attrs(store.path)["format_version"] == FORMAT_VERSION == 3
    group = zarr.open_group(store.path, mode="r")["chr1/del"]
    for name in ("insulation", "dist", "chunk_done", "chunk_digest", "hit_index", "hit_value"):
        assert any(isinstance(c, Crc32cCodec) for c in group[name].compressors), name
    # coordinates: inside their shards
    assert any(isinstance(c, Crc32cCodec) for c in group["start"].compressors)


@pytest.mark.parametrize("damage", ["flip", "random", "missing"])
def test_verify_clears_damaged_units_and_they_are_rewritten(store_v2, layouts, damage):
    store = store_v2
    write_everything(store, layouts)
    assert store.verify() == []
    path = chunk_file(store, "chr1/del/dist", 2)
    if damage == "flip":
        flip_bit(path)
    elif damage == "random":
        path.write_bytes(os.urandom(path.stat().st_size))
    else:
        path.unlink()  # reads as NaN: only the unit's digest notices
    fresh = ResultStore(store.path)
    found = fresh.verify()
    assert len(found) == 1 and found[0].startswith("chr1/del chunk 2 (chr1:1,600-2,550)")
    assert ("digest mismatch" if damage == "missing" else "dist cannot be decoded") in found[0]
    assert fresh.pending_units() == [("chr1", "del", 2)]
    assert not chunk_file(store, "chr1/del/insulation", 2).exists()  # the whole unit is cleared
    assert fresh.attrs["complete"] is False
    fresh.write_chunk("chr1", "del", 2, values_for(layouts[0], 2))
    assert fresh.verify() == [] and fresh.progress() == (16, 16)
    got = zarr.open_group(store.path, mode="r")["chr1/del/dist"][:]
    np.testing.assert_array_equal(got, np.arange(37, dtype=np.float32) + 1000)


def test_damaged_flag_counts_as_not_done(store_v2, layouts):
    store = store_v2
    write_everything(store, layouts)
    flag = chunk_file(store, "chr1/del/chunk_done", 1)
    flag.write_bytes(os.urandom(9))
    chunk_file(store, "chr1/del/chunk_done", 3).unlink()  # a mixed store: flags are read
    fresh = ResultStore(store.path)
    np.testing.assert_array_equal(fresh.done_mask("chr1", "del"), [True, False, True, False, True])
    found = fresh.verify()
    assert len(found) == 1 and found[0].startswith("chr1/del chunk 1 (chr1:800-1,750)")
    assert "chunk_done flag cannot be decoded" in found[0]
    assert not flag.exists()


def test_damaged_coordinates_are_named_and_rewritten_by_verify(tmp_path, layouts, monkeypatch):
    """Format 2 (a format 3 store's regular coordinates are computed, not read, by a resume and queries)."""
    path = tmp_path / "s.zarr"
    with monkeypatch.context() as patch:
        patch.setattr(store_mod, "FORMAT_VERSION", 2)
        store, _ = open_or_create_store(path, SPEC, SHA, PROV, layouts)
    shard = path / "chr1" / "ins" / "start" / "c" / "0"
    flip_bit(shard, byte=5)
    with pytest.raises(DamagedChunkError, match=rf"{path}: chunk 0 of array chr1/ins/start .*--verify"):
        open_or_create_store(path, SPEC, SHA, PROV, layouts)
    again, resumed = open_or_create_store(path, SPEC, SHA, PROV, layouts, verify=True)
    assert resumed and any("chr1/ins array start" in line and "rewritten" in line for line in again.damaged)
    np.testing.assert_array_equal(ResultStore(path).layout("chr1", "ins").start, layouts[1].start)


def test_write_chunk_keeps_top_maps_and_digest_consistent(tmp_path):
    start = np.arange(6, dtype=np.int64) * 10
    lay = GroupLayout("chr1", 1_000, "del", "deletion", {}, start, start + 5, start, ["s"], 4, top_maps=(2, 3))
    store = create_store(tmp_path / "t.zarr", SPEC, SHA, PROV, [lay])
    store.write_chunk("chr1", "del", 0, {"s": np.ones(4)}, top=(np.array([3]), np.ones((1, 3, 3))))
    store.write_chunk("chr1", "del", 1, {"s": np.ones(2)})  # no maps kept for this unit
    assert store.verify() == []
    root = zarr.open_group(store.path, mode="r")["chr1/del"]
    assert root["top_index"][:].tolist() == [3, -1, -1, -1]
    assert np.isnan(root["top_delta"][1:]).all() and (root["top_delta"][0] == 1).all()
    with pytest.raises(StoreError, match="at most 2 top maps"):
        store.write_chunk("chr1", "del", 0, {"s": np.ones(4)}, top=(np.arange(3), np.ones((3, 3, 3))))


def make_format_1_store(path: Path, layouts, monkeypatch) -> ResultStore:
    """A store as the previous release wrote it: zarr's default codecs, no digests."""
    with monkeypatch.context() as patch:
        patch.setattr(store_mod, "FORMAT_VERSION", 1)
        return create_store(path, SPEC, SHA, PROV, layouts)


def test_format_1_stores_stay_readable_and_resumable(tmp_path, layouts, monkeypatch):
    from screening.store.reader import open_results

    path = tmp_path / "old.zarr"
    make_format_1_store(path, layouts, monkeypatch)
    group = zarr.open_group(path, mode="r")["chr1/del"]
    assert "chunk_digest" not in group
    assert not any(isinstance(c, Crc32cCodec) for c in group["dist"].compressors)
    store, resumed = open_or_create_store(path, SPEC, SHA, PROV, layouts, verify=True)
    assert resumed and store.damaged == []
    write_everything(store, layouts)
    results = open_results(path)
    assert not results.checksummed and read_store_attrs(path)["format_version"] == 1
    np.testing.assert_array_equal(results.query("chr1", "del")["dist"].values, np.arange(37) + 1000)
    chunk_file(store, "chr1/del/dist", 1).write_bytes(os.urandom(40))  # zstd cannot decode it
    assert [line.split(" (")[0] for line in store.verify()] == ["chr1/del chunk 1"]


# --------------------------------------------------------------------------- shard sizing


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize("n, chunk_size", [(20, 4), (5, 1), (20, 1)])
def test_small_screens_make_small_stores(tmp_path, n, chunk_size):
    """Coordinate shards are sized from the group (the old 2^20-row shards made 13-49 MB stores)."""
    lays = make_layouts(n=n, chunk_size=chunk_size, analyses=("del",), chroms={"chr1": (10_000, n)})
    store = create_store(tmp_path / "s.zarr", SPEC, SHA, PROV, lays)
    write_everything(store, lays)
    assert disk_bytes(tmp_path / "s.zarr") < 200_000
    assert ResultStore(store.path).layout("chr1", "del").start.tolist() == lays[0].start.tolist()


def test_coordinate_chunks_hold_whole_units_and_stay_bounded():
    def chunk(n, chunk_size):
        return store_mod._coord_chunk(make_layouts(n=n, chunk_size=chunk_size, analyses=("a",), chroms={"chr1": (10**9, n)})[0])

    assert chunk(20, 4) == 20 and chunk(5, 1) == 5 and chunk(1, 8) == 8
    assert chunk(10**6, 1) == COORD_CHUNK  # about COORD_CHUNK rows …
    assert chunk(3 * 2**20, 1000) == 1000 * (COORD_CHUNK // 1000)  # … of whole units
    assert chunk(10**6, 16) % 16 == 0 and chunk(10, 2**18) == 2**18  # a unit larger than COORD_CHUNK: one unit


def test_genome_scale_coordinates_are_few_objects(tmp_path):
    """A chromosome's coordinates are a few large chunks (not one 16-row chunk per unit): reading them is cheap."""
    n = 300_000
    lays = make_layouts(n=n, chunk_size=16, analyses=("del",), chroms={"chr1": (10**9, n)})
    store = create_store(tmp_path / "s.zarr", SPEC, SHA, PROV, lays)
    for name in ("start", "end", "window_start"):
        objects = [p for p in (tmp_path / "s.zarr" / "chr1" / "del" / name).rglob("*") if p.is_file() and p.name != "zarr.json"]
        assert len(objects) == -(-n // COORD_CHUNK), name
    np.testing.assert_array_equal(ResultStore(store.path).layout("chr1", "del").end, lays[0].end)


def test_verify_on_an_object_store(layouts, monkeypatch):
    """Damaged units are found and cleared on S3 too (format 2: chunks deleted through the fsspec store)."""
    pytest.importorskip("moto")
    from moto_s3 import s3_server, s3fs_client

    with s3_server(buckets=("bucket",)):
        url = "s3://bucket/v.zarr"
        with monkeypatch.context() as patch:
            patch.setattr(store_mod, "FORMAT_VERSION", 2)
            store = create_store(url, SPEC, SHA, PROV, layouts[:1])
        write_everything(store, layouts[:1])
        s3fs_client().pipe_file("bucket/v.zarr/chr1/del/insulation/c/4", os.urandom(20))
        fresh = ResultStore(url)
        assert [line.split(" (")[0] for line in fresh.verify()] == ["chr1/del chunk 4"]
        assert fresh.pending_units() == [("chr1", "del", 4)]
        assert not s3fs_client().exists("bucket/v.zarr/chr1/del/insulation/c/4")
