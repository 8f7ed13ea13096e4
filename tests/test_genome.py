"""Genome I/O: FASTA (plain, bgzip), per-chromosome gzip folders, errors, pickling."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import os
import pickle
import re
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import screening.io.genome as genome_mod
from screening.core.encode import decode, encode
from screening.io.genome import Genome, GenomeError

try:
    import Bio  # noqa: F401

    HAVE_BIO = True
except ImportError:
    HAVE_BIO = False

RNG = np.random.default_rng(3)


def random_seq(n: int) -> str:
    return "".join(RNG.choice(list("ACGT"), n))


def fasta_text(records: dict[str, str], width: int = 60) -> str:
    lines = []
    for name, seq in records.items():
        lines.append(f">{name} some description")
        lines += [seq[i : i + width] for i in range(0, len(seq), width)]
    return "\n".join(lines) + "\n"


def write_fasta(path: Path, records: dict[str, str], width: int = 60) -> Path:
    path.write_text(fasta_text(records, width))
    return path


def write_bgzf(path: Path, data: bytes) -> Path:
    """Minimal BGZF writer (SAM spec 4.1): gzip members with a 'BC' extra field."""
    out = bytearray()
    for i in range(0, len(data), 0xFF00):
        chunk = data[i : i + 0xFF00]
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        cdata = comp.compress(chunk) + comp.flush()
        out += b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x06\x00BC\x02\x00"
        out += struct.pack("<H", len(cdata) + 25) + cdata
        out += struct.pack("<II", zlib.crc32(chunk), len(chunk))
    out += bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
    path.write_bytes(bytes(out))
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCREENING_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def records() -> dict[str, str]:
    # chrB first: sizes must keep file order; 137 is not a multiple of the line width
    return {"chrB": random_seq(137), "chrA": random_seq(250), "chrM": random_seq(61)}


@pytest.fixture
def fasta(tmp_path, records) -> Path:
    (tmp_path / "data").mkdir()
    return write_fasta(tmp_path / "data" / "toy.fa", records)


def cache_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


# --- single FASTA -----------------------------------------------------------------------


def test_sizes_in_file_order(fasta, records):
    genome = Genome(fasta)
    assert genome.chrom_sizes == {k: len(v) for k, v in records.items()}
    assert list(genome.chrom_sizes) == ["chrB", "chrA", "chrM"]
    assert genome.chroms == ["chrB", "chrA", "chrM"]
    assert genome.name == "toy" and genome.path == fasta.absolute()
    assert "chrA" in genome and "chrZ" not in genome


def test_fetch_matches_sequence_across_line_breaks(fasta, records):
    genome = Genome(fasta)
    rng = np.random.default_rng(0)
    for chrom, seq in records.items():
        for _ in range(50):
            start = int(rng.integers(0, len(seq)))
            end = int(rng.integers(start + 1, len(seq) + 1))
            codes = genome.fetch(chrom, start, end)
            assert codes.dtype == np.uint8 and codes.shape == (end - start,)
            assert decode(codes) == seq[start:end]
        assert decode(genome.fetch(chrom, 0, len(seq))) == seq


def test_index_built_beside_writable_fasta(fasta, tmp_path):
    Genome(fasta)
    assert fasta.with_name("toy.fa.fai").is_file()
    assert cache_files(tmp_path) == []


def test_fetch_accepts_numpy_integers(fasta, records):
    codes = Genome(fasta).fetch("chrA", np.int64(5), np.int32(9))
    assert decode(codes) == records["chrA"][5:9]


def test_soft_masked_and_iupac(tmp_path):
    seq = "ACGTacgtNnRYKMSWBDHVrykmswbdhv-*"
    path = write_fasta(tmp_path / "iupac.fasta", {"c": seq}, width=7)
    codes = Genome(path).fetch("c", 0, len(seq))
    assert codes.tolist() == [0, 1, 2, 3, 0, 1, 2, 3] + [4] * (len(seq) - 8)
    assert np.array_equal(codes, encode(seq.upper()))


def test_crlf_fasta(tmp_path):
    seq = random_seq(100)
    path = tmp_path / "crlf.fa"
    path.write_bytes(fasta_text({"c": seq}, 30).replace("\n", "\r\n").encode())
    genome = Genome(path)
    assert genome.chrom_sizes == {"c": 100}
    assert decode(genome.fetch("c", 25, 95)) == seq[25:95]


def test_read_only_dir_indexes_into_cache(fasta, records, tmp_path):
    data = fasta.parent
    data.chmod(0o555)
    try:
        genome = Genome(fasta)
        assert decode(genome.fetch("chrA", 10, 20)) == records["chrA"][10:20]
    finally:
        data.chmod(0o755)
    assert not fasta.with_name("toy.fa.fai").exists(), "wrote into a read-only folder"
    assert [p.name for p in cache_files(tmp_path)] == ["toy.fa.fai"]
    # a second open reuses the cached index
    mtime = cache_files(tmp_path)[0].stat().st_mtime_ns
    data.chmod(0o555)
    try:
        Genome(fasta)
    finally:
        data.chmod(0o755)
    assert cache_files(tmp_path)[0].stat().st_mtime_ns == mtime


def test_unwritable_dir_falls_back_to_cache(fasta, records, tmp_path, monkeypatch):
    """A folder that looks writable but refuses the write (read-only mount, ACLs)."""
    real_build = genome_mod._build_index

    def build(path, where):
        if where == path.parent:
            raise PermissionError(13, "Read-only file system", str(where))
        return real_build(path, where)

    monkeypatch.setattr(genome_mod, "_dir_writable", lambda d: True)
    monkeypatch.setattr(genome_mod, "_build_index", build)
    genome = Genome(fasta)
    assert decode(genome.fetch("chrM", 0, 61)) == records["chrM"]
    assert not fasta.with_name("toy.fa.fai").exists()
    assert len(cache_files(tmp_path)) == 1


def test_existing_index_is_used(fasta, tmp_path, monkeypatch):
    Genome(fasta)
    monkeypatch.setattr(genome_mod, "_build_index", lambda *a: pytest.fail("rebuilt a fresh index"))
    Genome(fasta)


def test_stale_index_in_read_only_dir_rebuilt_in_cache(fasta, records, tmp_path):
    Genome(fasta)
    fai = fasta.with_name("toy.fa.fai")
    records = dict(records, chrA=records["chrA"] + "ACGT")
    write_fasta(fasta, records)
    os.utime(fai, ns=(0, 0))  # index older than the FASTA
    fasta.parent.chmod(0o555)
    try:
        genome = Genome(fasta)
    finally:
        fasta.parent.chmod(0o755)
    assert genome.chrom_sizes["chrA"] == 254
    assert decode(genome.fetch("chrA", 248, 254)) == records["chrA"][248:]
    assert len(cache_files(tmp_path)) == 1


@pytest.mark.skipif(not HAVE_BIO, reason="pyfaidx reads bgzip through Biopython, which is not installed")
@pytest.mark.parametrize("read_only", [False, True], ids=["writable", "read-only"])
def test_bgzip_fasta(tmp_path, records, read_only):
    data = tmp_path / "data"
    data.mkdir()
    path = write_bgzf(data / "toy.fa.gz", fasta_text(records).encode())
    if read_only:
        data.chmod(0o555)
    try:
        genome = Genome(path)
        assert genome.name == "toy"
        assert genome.chrom_sizes == {k: len(v) for k, v in records.items()}
        assert decode(genome.fetch("chrA", 3, 200)) == records["chrA"][3:200]
        copy = pickle.loads(pickle.dumps(genome))
        assert decode(copy.fetch("chrM", 0, 61)) == records["chrM"]
    finally:
        data.chmod(0o755)
    beside = sorted(p.name for p in data.iterdir())
    cached = sorted(p.name for p in cache_files(tmp_path))
    index = ["toy.fa.gz.fai", "toy.fa.gz.gzi"]
    assert (beside, cached) == ((["toy.fa.gz"], index) if read_only else (["toy.fa.gz", *index], []))


def test_bgzip_without_biopython_is_a_clear_error(tmp_path, records, monkeypatch):
    path = write_bgzf(tmp_path / "toy.fa.gz", fasta_text(records).encode())
    # Biopython is a dependency; hide it to check the message a broken install gets.
    monkeypatch.setitem(sys.modules, "Bio", None)
    monkeypatch.setitem(sys.modules, "Bio.bgzf", None)
    with pytest.raises(GenomeError, match="(?i)biopython"):
        Genome(path)


def test_plain_gzip_fasta_is_refused_with_advice(tmp_path, records):
    path = tmp_path / "toy.fa.gz"
    path.write_bytes(gzip.compress(fasta_text(records).encode()))
    with pytest.raises(GenomeError, match="bgzip") as err:
        Genome(path)
    assert "per-chromosome" in str(err.value) and "toy.fa.gz" in str(err.value)


def test_other_compression_is_refused(tmp_path, records):
    path = tmp_path / "toy.fa.bz2"
    path.write_bytes(bz2.compress(fasta_text(records).encode()))
    with pytest.raises(GenomeError, match="bzip2"):
        Genome(path)


@pytest.mark.parametrize(
    "content, pattern",
    [
        (b"", "empty"),
        (bytes(range(256)) * 8, "cannot be indexed"),
        (b"ACGT\nACGT\n", "cannot be indexed"),
        (b">c\nACGTACGT\nAC\nACGTACGT\n", "cannot be indexed"),  # ragged lines
    ],
    ids=["empty", "binary", "no-header", "ragged"],
)
def test_not_a_fasta(tmp_path, content, pattern):
    path = tmp_path / "bad.fa"
    path.write_bytes(content)
    with pytest.raises(GenomeError, match=pattern) as err:
        Genome(path)
    assert str(path) in str(err.value)


def test_missing_path(tmp_path):
    with pytest.raises(GenomeError, match="does not exist"):
        Genome(tmp_path / "nope.fa")


def test_unknown_chromosome_lists_known(fasta):
    with pytest.raises(GenomeError, match="unknown chromosome 'chr1'.*chrB, chrA, chrM"):
        Genome(fasta).fetch("chr1", 0, 10)


@pytest.mark.parametrize(
    "start, end, pattern",
    [(-1, 10, "negative"), (10, 10, "empty"), (20, 10, "empty"), (100, 251, "past the end of chrA")],
)
def test_bad_regions(fasta, start, end, pattern):
    with pytest.raises(GenomeError, match=pattern) as err:
        Genome(fasta).fetch("chrA", start, end)
    assert "chrA" in str(err.value)


def test_non_integer_coordinates(fasta):
    with pytest.raises(GenomeError, match="integers"):
        Genome(fasta).fetch("chrA", 1.5, 10)


def test_fetch_padded(fasta, records):
    genome = Genome(fasta)
    seq = records["chrM"]  # 61 bp
    assert decode(genome.fetch_padded("chrM", -3, 4)) == "NNN" + seq[:4]
    assert decode(genome.fetch_padded("chrM", 58, 65)) == seq[58:] + "NNNN"
    assert decode(genome.fetch_padded("chrM", -2, 63)) == "NN" + seq + "NN"
    assert decode(genome.fetch_padded("chrM", 70, 75)) == "NNNNN"
    assert decode(genome.fetch_padded("chrM", 5, 9)) == seq[5:9]
    with pytest.raises(GenomeError, match="empty"):
        genome.fetch_padded("chrM", 5, 5)
    with pytest.raises(GenomeError, match="unknown chromosome"):
        genome.fetch_padded("chrQ", 0, 5)


def test_sha256_streams_the_file(fasta):
    genome = Genome(fasta)
    assert genome.sha256() == hashlib.sha256(fasta.read_bytes()).hexdigest()
    assert genome._sha256 is not None  # cached


def test_name_override_and_stems(tmp_path, records):
    assert Genome(write_fasta(tmp_path / "hg.fasta", records), name="hg38").name == "hg38"
    assert Genome(write_fasta(tmp_path / "x.y.fna", records)).name == "x.y"


def test_pickle_round_trip_is_cheap_and_reopens(fasta, records):
    genome = Genome(fasta)
    genome.fetch("chrA", 0, 10)  # open the handle
    blob = pickle.dumps(genome)
    assert len(blob) < 2000
    assert b"Faidx" not in blob
    copy = pickle.loads(blob)
    assert copy.chrom_sizes == genome.chrom_sizes and copy.name == genome.name
    assert decode(copy.fetch("chrA", 5, 50)) == records["chrA"][5:50]


def test_unpickled_copy_rebuilds_a_missing_index(fasta, records):
    """On another machine the cached index may not exist: it is rebuilt there."""
    genome = Genome(fasta)
    blob = pickle.dumps(genome)
    genome.close()
    fasta.with_name("toy.fa.fai").unlink()
    copy = pickle.loads(blob)
    assert decode(copy.fetch("chrB", 0, 137)) == records["chrB"]


def test_close_then_fetch_reopens(fasta, records):
    genome = Genome(fasta)
    genome.fetch("chrA", 0, 5)
    genome.close()
    genome.close()
    assert decode(genome.fetch("chrA", 0, 5)) == records["chrA"][:5]
    with Genome(fasta) as g:
        g.fetch("chrA", 0, 5)


# --- per-chromosome gzip folder ---------------------------------------------------------


@pytest.fixture
def folder(tmp_path) -> tuple[Path, dict[str, str]]:
    recs = {"chr1": random_seq(300), "chr2": random_seq(71), "chr10": random_seq(129), "chrX": random_seq(5)}
    recs["chr2"] = recs["chr2"][:20] + recs["chr2"][20:40].lower() + "RYN" + recs["chr2"][43:]
    root = tmp_path / "hg_toy"
    root.mkdir()
    for chrom, seq in recs.items():
        (root / f"{chrom}.fa.gz").write_bytes(gzip.compress(fasta_text({chrom: seq}, 50).encode()))
    (root / "README.txt").write_text("not a chromosome")
    return root, recs


def test_folder_chroms_sizes_and_fetch(folder):
    root, recs = folder
    genome = Genome(root)
    assert genome.is_folder and genome.name == "hg_toy"
    assert genome.chroms == ["chr1", "chr2", "chr10", "chrX"]  # natural order
    assert genome.chrom_sizes == {c: len(s) for c, s in recs.items()}
    assert decode(genome.fetch("chr2", 0, 71)) == recs["chr2"].upper()[:40] + "NNN" + recs["chr2"][43:]
    assert decode(genome.fetch("chr10", 49, 101)) == recs["chr10"][49:101]
    assert decode(genome.fetch_padded("chrX", -1, 7)) == "N" + recs["chrX"] + "NN"


def test_folder_is_lazy_and_decompresses_once(folder, monkeypatch):
    root, recs = folder
    calls: list[str] = []
    real = genome_mod._decompress_chrom

    def counting(path, chrom):
        calls.append(chrom)
        return real(path, chrom)

    monkeypatch.setattr(genome_mod, "_decompress_chrom", counting)
    genome = Genome(root)
    assert calls == []  # opening reads nothing
    genome.fetch("chr1", 0, 10)
    genome.fetch("chr1", 100, 300)
    assert genome.chrom_size("chr1") == 300
    pickle.loads(pickle.dumps(genome)).fetch("chr1", 5, 6)  # per process, not per object
    assert calls == ["chr1"]
    out = genome.fetch("chr1", 0, 10)
    out[:] = 4  # callers get copies: the cache stays intact
    assert decode(genome.fetch("chr1", 0, 10)) == recs["chr1"][:10]


def test_folder_sizes_cached_on_disk(folder, monkeypatch):
    root, recs = folder
    assert Genome(root).chrom_size("chr10") == 129
    genome_mod._CODES.clear()
    monkeypatch.setattr(genome_mod, "_decompress_chrom", lambda *a: pytest.fail("decompressed again"))
    assert Genome(root).chrom_size("chr10") == 129


def test_folder_sha256(folder):
    root, recs = folder
    first = Genome(root).sha256()
    assert re.fullmatch("[0-9a-f]{64}", first)
    assert Genome(root).sha256() == first
    (root / "chrX.fa.gz").write_bytes(gzip.compress(b">chrX\nACGTT\n"))
    assert Genome(root).sha256() != first


def test_folder_errors(folder, tmp_path):
    root, recs = folder
    genome = Genome(root)
    with pytest.raises(GenomeError, match="unknown chromosome 'chr3'.*chr1, chr2"):
        genome.fetch("chr3", 0, 1)
    with pytest.raises(GenomeError, match="past the end of chrX"):
        genome.fetch("chrX", 0, 6)
    (root / "chrY.fa.gz").write_bytes(b"not gzip at all")
    with pytest.raises(GenomeError, match="chrY.fa.gz.*not readable gzip"):
        Genome(root).fetch("chrY", 0, 1)
    (root / "chr5.fa.gz").write_bytes(gzip.compress(b">a\nACGT\n>b\nAC\n"))
    with pytest.raises(GenomeError, match="more than one FASTA record"):
        Genome(root).fetch("chr5", 0, 1)
    (root / "chr6.fa.gz").write_bytes(gzip.compress(b"ACGT\n"))
    with pytest.raises(GenomeError, match="not a FASTA"):
        Genome(root).fetch("chr6", 0, 1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GenomeError, match="no per-chromosome FASTAs"):
        Genome(empty)


def test_folder_pickles_without_codes(folder):
    root, recs = folder
    genome = Genome(root)
    genome.fetch("chr1", 0, 300)
    assert len(pickle.dumps(genome)) < 4000


# --- shared reference data --------------------------------------------------------------

N_RUNS = [(100_000, 110_000), (1_200_000, 1_201_000), (2_200_000, 2_200_500)]
SOFT_MASKED = [(1_300_000, 1_302_000), (1_750_000, 1_750_300), (2_500_000, 2_501_000), (2_800_000, 2_805_000)]
GENOME_SHA = "af7a1241381e3151dea59c560e1cf74710195dfe1de694995c3721e56be3ec79"


@pytest.fixture(scope="module")
def corigami_fa(shared_dir) -> Path:
    path = shared_dir / "reference" / "corigami" / "genome.fa"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="module")
def corigami_bases(corigami_fa) -> np.ndarray:
    """The raw letters of chr1, read independently of pyfaidx."""
    raw = corigami_fa.read_bytes()
    body = raw[raw.index(b"\n") + 1 :].replace(b"\n", b"")
    return np.frombuffer(body, np.uint8)


@pytest.mark.reference
def test_reference_genome(corigami_fa, corigami_bases, tmp_path):
    genome = Genome(corigami_fa)
    assert genome.chrom_sizes == {"chr1": 3_000_000}
    assert not corigami_fa.with_name("genome.fa.fai").exists(), "indexed into the shared folder"
    codes = genome.fetch("chr1", 0, 3_000_000)
    assert np.array_equal(codes, encode(corigami_bases))
    for start, end in N_RUNS:
        assert (codes[start:end] == 4).all()
        assert codes[start - 1] != 4 and codes[end] != 4
    assert int((codes == 4).sum()) == sum(e - s for s, e in N_RUNS)
    for start, end in SOFT_MASKED:
        letters = corigami_bases[start:end].tobytes()
        assert letters.islower()  # the file really is soft-masked there
        assert corigami_bases[start - 1 : start].tobytes().isupper()
        assert np.array_equal(codes[start:end], encode(letters.upper()))
    assert genome.sha256() == GENOME_SHA


@pytest.mark.reference
def test_reference_genome_as_gzip_folder(corigami_fa, tmp_path):
    """C.Origami's own layout (<dir>/chr1.fa.gz) reads exactly like the FASTA."""
    root = tmp_path / "dna"
    root.mkdir()
    (root / "chr1.fa.gz").write_bytes(gzip.compress(corigami_fa.read_bytes(), compresslevel=1))
    folder, fasta = Genome(root), Genome(corigami_fa)
    assert folder.chrom_sizes == fasta.chrom_sizes
    for start, end in [(0, 1000), (99_990, 110_010), (1_299_000, 1_303_000), (2_999_000, 3_000_000)]:
        assert np.array_equal(folder.fetch("chr1", start, end), fasta.fetch("chr1", start, end))


# --- a stale .fai (file cut or edited after indexing) is refused when the genome opens ---------------


def _stale(fasta: Path, new: bytes) -> None:
    """Replace the FASTA's bytes while its .fai still looks fresh (copied along, or touched)."""
    fasta.write_bytes(new)
    os.utime(f"{fasta}.fai")


def test_truncated_fasta_behind_a_fresh_looking_index_is_refused(fasta, records):
    Genome(fasta).close()
    _stale(fasta, fasta.read_bytes()[:-50])
    with pytest.raises(GenomeError, match=rf"genome FASTA {re.escape(str(fasta))} is \S+ bytes, but its index .*chrM"):
        Genome(fasta)


def test_edited_fasta_behind_a_fresh_looking_index_is_refused(fasta, records):
    Genome(fasta).close()
    data = fasta.read_bytes()
    cut = data.index(b"\n", data.index(b"chrB")) + 10  # one base fewer on chrB's first line: every offset shifts
    _stale(fasta, data[:cut] + data[cut + 1 :] + b"A")
    with pytest.raises(GenomeError, match=r"does not match the sequence of chr[AB].*truncated or edited after indexing"):
        Genome(fasta)


def test_fasta_without_a_final_newline_or_with_crlf_still_opens(tmp_path, records):
    plain = tmp_path / "plain.fa"
    plain.write_text(fasta_text(records).rstrip("\n"))
    assert Genome(plain).chrom_sizes == {k: len(v) for k, v in records.items()}
    crlf = tmp_path / "crlf.fa"
    crlf.write_bytes(fasta_text(records).replace("\n", "\r\n").encode())
    assert decode(Genome(crlf).fetch("chrM", 0, 61)) == records["chrM"]


@pytest.mark.skipif(not HAVE_BIO, reason="pyfaidx reads bgzip through Biopython, which is not installed")
def test_truncated_bgzip_fasta_is_refused(tmp_path, records):
    data = fasta_text({**records, "chrL": random_seq(200_000)}).encode()  # several BGZF blocks
    path = write_bgzf(tmp_path / "toy.fa.gz", data)
    Genome(path).close()
    whole = path.read_bytes()
    path.write_bytes(whole[:-28])  # the end-of-file block is gone
    os.utime(f"{path}.fai"), os.utime(f"{path}.gzi")
    with pytest.raises(GenomeError, match=r"lacks the bgzip end-of-file block: the file is truncated"):
        Genome(path)
    path.write_bytes(whole[: len(whole) // 2] + whole[-28:])  # blocks lost from the middle
    os.utime(f"{path}.fai"), os.utime(f"{path}.gzi")
    genome_mod._HANDLES.clear()  # a handle cached by this process would still hold the old blocks
    with pytest.raises(GenomeError, match=rf"genome FASTA {re.escape(str(path))}: cannot read chrL"):
        Genome(path)
