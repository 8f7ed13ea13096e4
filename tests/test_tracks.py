"""bigWig track I/O: values, NaN → 0, transforms, TrackSet checks, errors, pickling."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pyBigWig
import pytest

import screening.io.tracks as tracks_mod
from screening.io.tracks import TRANSFORMS, Track, TrackError, TrackSet

# chr1: [0,10) 1.5, [10,20) -2.0, gap [20,30), [30,40) 3.0 ... ; chr2 one value
ENTRIES = {
    "chr1": [(0, 10, 1.5), (10, 20, -2.0), (30, 40, 3.0), (40, 100, 0.25)],
    "chr2": [(0, 50, 7.0)],
}
SIZES = {"chr1": 100, "chr2": 50}


def write_bigwig(path: Path, sizes: dict[str, int], entries: dict[str, list]) -> Path:
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader(list(sizes.items()), maxZooms=0)
    for chrom, items in entries.items():
        bw.addEntries(
            [chrom] * len(items),
            [s for s, _, _ in items],
            ends=[e for _, e, _ in items],
            values=[float(v) for _, _, v in items],
        )
    bw.close()
    return path


def expected_values(chrom: str) -> np.ndarray:
    out = np.zeros(SIZES[chrom], np.float32)
    for start, end, value in ENTRIES[chrom]:
        out[start:end] = value
    return out


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCREENING_CACHE", str(tmp_path / "cache"))  # genome indexes


@pytest.fixture
def bw_path(tmp_path) -> Path:
    return write_bigwig(tmp_path / "signal.bw", SIZES, ENTRIES)


@pytest.fixture
def pos_path(tmp_path) -> Path:
    entries = {"chr1": [(0, 10, 0.0), (10, 20, 4.0), (40, 100, 1e4)], "chr2": [(0, 50, 0.5)]}
    return write_bigwig(tmp_path / "atac.bw", SIZES, entries)


# --- transforms -------------------------------------------------------------------------


def test_transforms_are_float32():
    x = np.array([0.0, 1.0, np.e - 1, 100.0], np.float32)
    assert set(TRANSFORMS) == {"none", "log1p"}
    for fn in TRANSFORMS.values():
        assert fn(x).dtype == np.float32 and fn(x).shape == x.shape
    assert np.array_equal(TRANSFORMS["none"](x), x)
    np.testing.assert_allclose(TRANSFORMS["log1p"](x), [0.0, np.log(2), 1.0, np.log(101)], rtol=1e-7)
    # computed in float64 then rounded, like C.Origami's np.log(x + 1) on float64 input
    assert np.array_equal(TRANSFORMS["log1p"](x), np.log(x.astype(np.float64) + 1).astype(np.float32))


# --- Track ------------------------------------------------------------------------------


def test_fetch_values_gap_and_negatives(bw_path):
    track = Track(bw_path, "ctcf")
    assert track.name == "ctcf" and track.transform == "none" and track.path == bw_path.absolute()
    assert track.chrom_sizes == SIZES
    values = track.fetch("chr1", 0, 100)
    assert values.dtype == np.float32 and values.shape == (100,)
    assert np.array_equal(values, expected_values("chr1"))
    assert (values[20:30] == 0).all() and not np.isnan(values).any()
    assert values.min() == -2.0
    assert np.array_equal(track.fetch("chr1", 15, 35), expected_values("chr1")[15:35])
    assert np.array_equal(track.fetch("chr2", 49, 50), [7.0])


def test_log1p_after_nan_to_zero(pos_path):
    track = Track(pos_path, "atac", transform="log1p")
    values = track.fetch("chr1", 0, 100)
    raw = np.zeros(100, np.float32)
    raw[10:20], raw[40:100] = 4.0, 1e4
    assert np.array_equal(values, np.log1p(raw.astype(np.float64)).astype(np.float32))
    assert (values[20:40] == 0).all()  # the gap: NaN → 0 → log1p(0) = 0


def test_fetch_padded(bw_path, pos_path):
    track = Track(bw_path, "ctcf")
    values = track.fetch_padded("chr2", -5, 55)
    assert np.array_equal(values, np.r_[np.zeros(5), np.full(50, 7.0), np.zeros(5)].astype(np.float32))
    assert np.array_equal(track.fetch_padded("chr2", 60, 64), np.zeros(4, np.float32))
    atac = Track(pos_path, "atac", transform="log1p")
    assert np.array_equal(atac.fetch_padded("chr2", 48, 52), np.log1p([0.5, 0.5, 0, 0]).astype(np.float32))


@pytest.mark.parametrize(
    "chrom, start, end, pattern",
    [
        ("chr3", 0, 10, "no chromosome 'chr3'.*chr1, chr2"),
        ("chr1", -1, 10, "negative"),
        ("chr1", 10, 10, "empty"),
        ("chr1", 50, 101, "past the end of chr1"),
        ("chr1", 0.5, 10, "integers"),
    ],
)
def test_bad_regions(bw_path, chrom, start, end, pattern):
    with pytest.raises(TrackError, match=pattern) as err:
        Track(bw_path, "ctcf").fetch(chrom, start, end)
    assert "ctcf" in str(err.value)


def test_unknown_transform(bw_path):
    with pytest.raises(TrackError, match="unknown transform 'log2'.*none, log1p"):
        Track(bw_path, "ctcf", transform="log2")


def test_missing_file(tmp_path):
    with pytest.raises(TrackError, match="does not exist") as err:
        Track(tmp_path / "nope.bw", "ctcf")
    assert "nope.bw" in str(err.value)


@pytest.mark.parametrize(
    "content, pattern",
    [
        (b"", "not a bigWig"),
        (b"track type=bedGraph\nchr1\t0\t10\t1.0\n", "not a bigWig"),
        (bytes(range(256)) * 4, "not a bigWig"),
        ((0x8789F2EB).to_bytes(4, "little") + bytes(200), "bigBed"),
        ((0x888FFC26).to_bytes(4, "little") + bytes(60), "not a readable bigWig"),  # truncated
    ],
    ids=["empty", "bedgraph", "binary", "bigbed", "truncated"],
)
def test_not_a_bigwig(tmp_path, content, pattern):
    path = tmp_path / "bad.bw"
    path.write_bytes(content)
    with pytest.raises(TrackError, match=pattern) as err:
        Track(path, "ctcf")
    assert str(path) in str(err.value)


def test_truncated_real_bigwig(bw_path, tmp_path):
    path = tmp_path / "cut.bw"
    path.write_bytes(bw_path.read_bytes()[:40])
    with pytest.raises(TrackError, match="cut.bw"):
        Track(path, "ctcf")


def test_sha256(bw_path):
    track = Track(bw_path, "ctcf")
    assert track.sha256() == hashlib.sha256(bw_path.read_bytes()).hexdigest()


def test_handle_shared_per_process_and_not_pickled(bw_path):
    a, b = Track(bw_path, "a"), Track(bw_path, "b")
    a.fetch("chr1", 0, 5)
    b.fetch("chr1", 0, 5)
    assert sum(1 for key in tracks_mod._HANDLES if key[1] == str(a.path)) == 1
    blob = pickle.dumps(a)
    assert len(blob) < 1000 and b"pyBigWig" not in blob
    copy = pickle.loads(blob)
    assert np.array_equal(copy.fetch("chr1", 0, 100), expected_values("chr1"))
    assert copy.chrom_sizes == SIZES and copy.name == "a"


def test_close_then_fetch_reopens(bw_path):
    track = Track(bw_path, "ctcf")
    track.close()
    track.close()
    assert str(track.path) not in {key[1] for key in tracks_mod._HANDLES}
    assert np.array_equal(track.fetch("chr1", 0, 10), np.full(10, 1.5, np.float32))


# --- TrackSet ---------------------------------------------------------------------------


@pytest.fixture
def trackset(bw_path, pos_path) -> TrackSet:
    return TrackSet([Track(bw_path, "ctcf"), Track(pos_path, "atac", "log1p")])


def test_trackset_fetch(trackset):
    assert trackset.names == ["ctcf", "atac"] and len(trackset) == 2
    out = trackset.fetch("chr1", 5, 45)
    assert out.dtype == np.float32 and out.shape == (2, 40)
    assert np.array_equal(out[0], trackset["ctcf"].fetch("chr1", 5, 45))
    assert np.array_equal(out[1], trackset[1].fetch("chr1", 5, 45))
    padded = trackset.fetch_padded("chr2", -2, 2)
    assert padded.shape == (2, 4) and np.array_equal(padded[0], [0, 0, 7, 7])
    assert [t.name for t in trackset] == ["ctcf", "atac"]
    assert set(trackset.sha256()) == {"ctcf", "atac"}
    with pytest.raises(KeyError, match="dnase"):
        trackset["dnase"]


def test_trackset_pickles(trackset):
    copy = pickle.loads(pickle.dumps(trackset))
    assert np.array_equal(copy.fetch("chr1", 0, 100), trackset.fetch("chr1", 0, 100))


def test_empty_trackset():
    assert TrackSet([]).fetch("chr1", 0, 7).shape == (0, 7)


def test_trackset_duplicate_names(bw_path):
    with pytest.raises(TrackError, match="unique.*ctcf"):
        TrackSet([Track(bw_path, "ctcf"), Track(bw_path, "ctcf")])
    with pytest.raises(TrackError, match="Track objects"):
        TrackSet([str(bw_path)])


def test_trackset_check(trackset, tmp_path):
    trackset.check(SIZES)
    trackset.check({"chr2": 50})
    with pytest.raises(TrackError, match="ctcf.*no chromosome 'chrX'"):
        trackset.check({"chr1": 100, "chrX": 10})
    with pytest.raises(TrackError, match=r"ctcf.*signal\.bw.*chr1 has length 100.*length 101"):
        trackset.check({"chr1": 101})


def test_trackset_check_missing_or_replaced_file(tmp_path):
    path = write_bigwig(tmp_path / "x.bw", SIZES, ENTRIES)
    tracks = TrackSet([Track(path, "x")])
    path.write_bytes(b"garbage!")
    with pytest.raises(TrackError, match="x.bw is not a bigWig"):
        tracks.check(SIZES)
    path.unlink()
    with pytest.raises(TrackError, match="x.bw does not exist"):
        tracks.check(SIZES)


# --- shared reference data --------------------------------------------------------------

GAP = (1_500_000, 1_520_000)


@pytest.fixture(scope="module")
def corigami(shared_dir) -> Path:
    path = shared_dir / "reference" / "corigami"
    if not (path / "ctcf.bw").is_file():
        pytest.skip(f"{path}/ctcf.bw not present")
    return path


@pytest.mark.reference
def test_reference_ctcf(corigami):
    track = Track(corigami / "ctcf.bw", "ctcf")
    assert track.chrom_sizes == {"chr1": 3_000_000}
    values = track.fetch("chr1", GAP[0] - 1000, GAP[1] + 1000)
    assert (values[1000:-1000] == 0).all()
    assert (values[:1000] != 0).any() and (values[-1000:] != 0).any()
    raw = pyBigWig.open(str(corigami / "ctcf.bw")).values("chr1", 0, 3_000_000, numpy=True)
    full = track.fetch("chr1", 0, 3_000_000)
    assert np.array_equal(full, np.nan_to_num(raw, nan=0.0))
    assert full.min() < 0  # log2 fold change: negative values are kept
    assert track.sha256() == "0efce97e700dc9c9346bb294e18ec98bccd8f4fa597dd0ed865cdfeae805884c"


@pytest.mark.reference
def test_reference_atac_is_log1p(corigami):
    atac = Track(corigami / "atac.bw", "atac", transform="log1p")
    raw = Track(corigami / "atac.bw", "atac_raw").fetch("chr1", 1_000_000, 2_000_000)
    assert raw.min() >= 0
    values = atac.fetch("chr1", 1_000_000, 2_000_000)
    assert np.array_equal(values, np.log(raw.astype(np.float64) + 1).astype(np.float32))
    assert (values[GAP[0] - 1_000_000 : GAP[1] - 1_000_000] == 0).all()


@pytest.mark.reference
def test_reference_trackset_matches_genome(corigami):
    from screening.io.genome import Genome

    genome = Genome(corigami / "genome.fa")
    tracks = TrackSet([Track(corigami / "ctcf.bw", "ctcf"), Track(corigami / "atac.bw", "atac", "log1p")])
    tracks.check(genome.chrom_sizes)
    out = tracks.fetch("chr1", 500_000, 500_000 + 2_097_152)
    assert out.shape == (2, 2_097_152) and out.dtype == np.float32


# --- non-finite values: refused up front, naming the file and chromosome (reliability) --------------


@pytest.mark.parametrize("value, transform, pattern", [
    (float("inf"), "none", "holds the value inf"),
    (-float("inf"), "none", "holds the value -inf"),
    (-1.0, "log1p", "log1p turns into -inf"),
    (-3.0, "log1p", "log1p turns into NaN"),
])
def test_check_finite_refuses_inf_naming_file_and_chromosome(tmp_path, value, transform, pattern):
    entries = {"chr1": [(0, 10, 1.0)], "chr2": [(0, 10, 1.0), (10, 20, value)]}
    path = write_bigwig(tmp_path / "bad.bw", SIZES, entries)
    tracks = TrackSet([Track(path, "ctcf", transform)])
    tracks.check_finite(["chr1"])  # the bad value is on chr2: a chr1 screen may use the file
    with pytest.raises(TrackError, match=pattern) as err:
        tracks.check_finite(["chr1", "chr2"])
    assert "ctcf" in str(err.value) and str(path) in str(err.value) and "chr2" in str(err.value)


def test_check_finite_reads_zoom_summaries_and_accepts_nan_gaps(tmp_path):
    # with zoom levels (as real bigWigs have), the summaries are read, not the data
    path = tmp_path / "zoomed.bw"
    bw = pyBigWig.open(str(path), "w")
    bw.addHeader([("chr1", 5_000), ("chr2", 50)])
    bw.addEntries(["chr1"] * 3, [0, 100, 200], ends=[100, 200, 300], values=[1.0, float("inf"), 2.0])
    bw.addEntries(["chr2"] * 2, [0, 10], ends=[10, 20], values=[float("nan"), 0.5])
    bw.close()
    track = Track(path, "atac", "log1p")
    with pytest.raises(TrackError, match="chr1 holds the value inf"):
        track.check_finite(["chr1"])
    track.check_finite(["chr2"])  # NaN is a gap, read as 0
    assert np.isfinite(track.fetch("chr2", 0, 50)).all()


# --- probe: a corrupt data block is found before a screen starts, not in a worker --------------------


def _corrupt_data_section(path: Path) -> Path:
    """Flip bytes in the middle of the data section (between fullDataOffset and fullIndexOffset)."""
    import struct

    data = bytearray(path.read_bytes())
    data_offset, index_offset = struct.unpack_from("<QQ", data, 16)
    middle = (data_offset + 8 + index_offset) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))
    return path


def test_probe_reads_the_spans_and_accepts_a_sound_file(bw_path):
    track = Track(bw_path, "sig")
    track.probe({"chr1": [(-50, 30), (20, 200)], "chr2": [(0, 50)]})  # clipped to the chromosome
    TrackSet([track]).probe({})


def test_probe_refuses_a_corrupt_data_block_naming_file_and_chromosome(tmp_path):
    rng = np.random.default_rng(0)
    entries = {"chr1": [(s, s + 10, float(v)) for s, v in zip(range(0, 20_000, 10), rng.random(2_000))]}
    path = _corrupt_data_section(write_bigwig(tmp_path / "big.bw", {"chr1": 20_000}, entries))
    track = Track(path, "sig")  # the header is intact: opening works
    with pytest.raises(TrackError, match=rf"track sig \({path}\): the data of chr1 at chr1:[\d,]+-[\d,]+ cannot be read"):
        TrackSet([track]).probe({"chr1": [(0, 20_000)]})


def test_probe_refuses_a_chromosome_the_bigwig_lacks(bw_path):
    with pytest.raises(TrackError, match="has no chromosome 'chr9'"):
        Track(bw_path, "sig").probe({"chr9": [(0, 10)]})


def test_probe_points_read_short_spans_whole_and_sample_long_ones(monkeypatch):
    points = tracks_mod._probe_points([(100, 300), (250, 400), (1_000, 1_100)], length=1_050)
    assert points == [(100, 400), (1_000, 1_050)]  # merged and clipped
    monkeypatch.setattr(tracks_mod, "PROBE_FULL_BP", 1_000)
    monkeypatch.setattr(tracks_mod, "PROBE_SPANS", 5)
    monkeypatch.setattr(tracks_mod, "PROBE_BP", 10)
    sampled = tracks_mod._probe_points([(0, 2_000), (5_000, 7_000)], length=10_000)
    assert len(sampled) == 5 and sampled[0] == (0, 10) and sampled[-1] == (6_999, 7_000)
    assert all(0 <= s < e <= 2_000 or 5_000 <= s < e <= 7_000 for s, e in sampled)
