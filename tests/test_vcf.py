"""VCF reading: every supported kind, minimal edits, genome checks, policies, malformed lines."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screening.core.encode import decode, encode
from screening.io.genome import Genome
from screening.io.vcf import VariantEdit, SkippedVariant, Variant, VcfError, read_vcf

DATA = Path(__file__).parent / "data" / "variants.vcf"
CHR1 = "ACGTACGTACGGGTTTAAACCCGGGAATTCATGCATGCAN"  # 40 bp, ends in N
CHR2 = "ttttGGGGCCCCAAAA"  # 16 bp, soft-masked start
HEADER = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> Genome:
    path = tmp_path_factory.mktemp("genome") / "tiny.fa"
    path.write_text(f">chr1\n{CHR1[:25]}\n{CHR1[25:]}\n>chr2\n{CHR2}\n")
    return Genome(path)


def write_vcf(tmp_path: Path, *records: str, name: str = "test.vcf") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "".join(r.replace(" ", "\t") + "\n" for r in records))
    return path


# --- every supported kind ------------------------------------------------------------------

EXPECTED = [
    # chrom, start, end, ref, alt, id, kind, line, vcf_pos, vcf_ref, vcf_alt
    Variant("chr1", 1, 2, "C", "T", "rs1", "SNV", 9, 2, "C", "T"),
    Variant("chr1", 4, 6, "AC", "GT", "mnv1", "MNV", 10, 5, "AC", "GT"),
    Variant("chr1", 9, 10, "C", "T", "chr1:9:ACG:ATG", "SNV", 11, 9, "ACG", "ATG"),  # shared ends trimmed
    Variant("chr1", 11, 11, "", "TT", "ins1", "INS", 12, 11, "G", "GTT"),
    Variant("chr1", 13, 15, "TT", "", "del1", "DEL", 13, 13, "GTT", "G"),
    Variant("chr1", 17, 20, "AAC", "GG", "cx1", "INDEL", 14, 17, "AAAC", "AGG"),
    Variant("chr1", 20, 21, "C", "G", "ma1:G", "SNV", 15, 21, "C", "G"),
    Variant("chr1", 21, 21, "", "A", "ma1:CA", "INS", 15, 21, "C", "CA"),
    Variant("chr1", 23, 28, "G", "<DEL>", "sv_del", "SV_DEL", 16, 23, "G", "<DEL>"),
    Variant("chr1", 25, 30, "G", "<DUP>", "sv_dup", "SV_DUP", 17, 25, "G", "<DUP>"),
    Variant("chr1", 30, 35, "C", "<INV>", "sv_inv", "SV_INV", 18, 30, "C", "<INV>"),
    Variant("chr1", 39, 40, "N", "A", "n1", "SNV", 19, 40, "N", "A"),  # genome N matches REF N
    Variant("chr2", 2, 6, "T", "<DEL>", "sv_del2", "SV_DEL", 20, 2, "t", "<DEL>"),
    Variant("chr2", 9, 10, "C", "A", "chr2:10:c:a", "SNV", 21, 10, "c", "a"),
]

EXPECTED_SKIPPED = [(15, "ma1:*"), (22, "bnd1"), (23, "noalt"), (24, "ins_sym")]


def test_every_kind_exact_fields(genome):
    result = read_vcf(DATA, genome)
    assert result.variants == EXPECTED
    assert [(s.line, s.id) for s in result.skipped] == EXPECTED_SKIPPED
    reasons = [s.reason for s in result.skipped]
    assert "spanning-deletion" in reasons[0]
    assert "breakend" in reasons[1]
    assert "no alternative" in reasons[2]
    assert "<INS>" in reasons[3]


def test_without_genome_same_variants():
    assert read_vcf(DATA).variants == EXPECTED


def test_lengths_and_edits():
    by_id = {v.id: v for v in EXPECTED}
    lengths = {vid: (v.ref_length, v.alt_length) for vid, v in by_id.items()}
    assert lengths["ins1"] == (0, 2)
    assert lengths["del1"] == (2, 0)
    assert lengths["cx1"] == (3, 2)
    assert lengths["sv_del"] == (5, 0)
    assert lengths["sv_dup"] == (5, 10)
    assert lengths["sv_inv"] == (5, 5)
    assert by_id["sv_del"].edit() == VariantEdit("chr1", 23, 28, "replace", "")
    assert by_id["sv_dup"].edit() == VariantEdit("chr1", 25, 30, "duplicate")
    assert by_id["sv_inv"].edit() == VariantEdit("chr1", 30, 35, "invert")
    assert by_id["ins1"].edit() == VariantEdit("chr1", 11, 11, "replace", "TT")
    np.testing.assert_array_equal(by_id["ins1"].edit().alt_codes, encode("TT"))
    assert by_id["sv_dup"].edit().alt_codes is None


def _rc(seq: str) -> str:
    return seq[::-1].translate(str.maketrans("ACGTN", "TGCAN"))


@pytest.mark.parametrize(
    "vid, expected",
    [
        ("rs1", CHR1[:1] + "T" + CHR1[2:]),
        ("ins1", CHR1[:11] + "TT" + CHR1[11:]),  # after the anchor G at 0-based 10
        ("del1", CHR1[:13] + CHR1[15:]),
        ("cx1", CHR1[:17] + "GG" + CHR1[20:]),
        ("sv_del", CHR1[:23] + CHR1[28:]),
        ("sv_dup", CHR1[:30] + CHR1[25:30] + CHR1[30:]),
        ("sv_inv", CHR1[:30] + _rc(CHR1[30:35]) + CHR1[35:]),
    ],
)
def test_edit_apply_matches_vcf_meaning(vid, expected):
    variant = next(v for v in EXPECTED if v.id == vid)
    edited = variant.edit().apply(encode(CHR1))
    assert decode(edited) == expected
    # a sub-span with an offset gives the same local result
    local = variant.edit().apply(encode(CHR1[1:]), offset=1)
    assert decode(local) == expected[1:]


def test_edit_apply_outside_span():
    with pytest.raises(ValueError, match="outside the loaded span"):
        VariantEdit("chr1", 3, 8, "invert").apply(encode("ACGT"), offset=4)


@settings(max_examples=100, deadline=None)
@given(
    prefix=st.text("ACGT", min_size=1, max_size=4),
    ref_tail=st.text("ACGT", max_size=5),
    alt_tail=st.text("ACGT", max_size=5),
    flank=st.text("ACGT", min_size=0, max_size=6),
)
def test_minimal_edit_equals_naive_replacement(prefix, ref_tail, alt_tail, flank, tmp_path_factory):
    """Trimming never changes the resulting sequence: minimal edit == replace REF by ALT."""
    ref, alt = prefix + ref_tail, prefix[:1] + alt_tail
    if ref == alt:
        return
    reference = "GA" + ref + flank
    path = tmp_path_factory.getbasetemp() / "hypothesis.vcf"
    path.write_text(HEADER + f"c\t3\t.\t{ref}\t{alt}\t.\t.\t.\n")
    (variant,) = read_vcf(path).variants
    assert decode(variant.edit().apply(encode(reference))) == "GA" + alt + flank
    assert variant.ref == reference[variant.start : variant.end]
    assert variant.ref_length - variant.alt_length == len(ref) - len(alt)


# --- content problems: policy --------------------------------------------------------------

PROBLEMS = [
    ("chr1 2 rsBad A G . . .", "rsBad", "chr1:2 REF 'A' does not match the genome ('C')"),
    ("chr1 40 rsN A G . . .", "rsN", "REF 'A' does not match the genome ('N')"),
    ("chr1 5 svNoEnd A <DEL> . . SVTYPE=DEL", "svNoEnd", "neither INFO END nor SVLEN"),
    ("chr1 5 svBad A <DUP> . . END=12;SVLEN=3", "svBad", "disagrees with SVLEN"),
    ("chr1 5 svEmpty A <INV> . . END=5", "svEmpty", "END=5 <= POS=5"),
    ("chr1 40 offEnd NA N . . .", "offEnd", "runs past the end of chr1"),
    ("chr1 30 svOff C <DEL> . . END=50", "svOff", "runs past the end of chr1"),
    ("chr3 1 unk A G . . .", "unk", "unknown chromosome 'chr3'"),
    ("2 1 noPrefix T G . . .", "noPrefix", "the genome has 'chr2'"),
]


@pytest.mark.parametrize("record, vid, message", PROBLEMS, ids=[p[1] for p in PROBLEMS])
def test_content_problem_raises_naming_variant(tmp_path, genome, record, vid, message):
    path = write_vcf(tmp_path, "chr1 2 ok C T . . .", record, name="variants.vcf")
    with pytest.raises(VcfError) as info:
        read_vcf(path, genome)
    text = str(info.value)
    assert f"variants.vcf:4 {vid} " in text
    assert message in text


def test_sv_without_end_fails_even_without_genome(tmp_path):
    path = write_vcf(tmp_path, "chr1 5 svNoEnd A <DEL> . . .")
    with pytest.raises(VcfError, match="svNoEnd.*neither INFO END nor SVLEN"):
        read_vcf(path)


def test_policy_fail_lists_every_problem(tmp_path, genome):
    path = write_vcf(tmp_path, *(p[0] for p in PROBLEMS))
    with pytest.raises(VcfError) as info:
        read_vcf(path, genome)
    text = str(info.value)
    assert f"{len(PROBLEMS)} variants in" in text and "policy='skip'" in text
    assert all(vid in text for _, vid, _ in PROBLEMS)


def test_policy_skip_lists_reasons(tmp_path, genome):
    path = write_vcf(tmp_path, "chr1 2 ok C T . . .", *(p[0] for p in PROBLEMS), "chr2 5 tail G . . . .")
    result = read_vcf(path, genome, policy="skip")
    assert [v.id for v in result.variants] == ["ok"]
    assert [s.id for s in result.skipped] == [p[1] for p in PROBLEMS] + ["tail"]
    for skipped, (_, vid, message) in zip(result.skipped, PROBLEMS):
        assert isinstance(skipped, SkippedVariant) and message in skipped.reason
    assert [s.line for s in result.skipped] == list(range(4, 4 + len(PROBLEMS) + 1))


def test_bad_policy(tmp_path):
    with pytest.raises(ValueError, match="policy"):
        read_vcf(write_vcf(tmp_path, "chr1 2 ok C T . . ."), policy="warn")


# --- compression ---------------------------------------------------------------------------


def test_gzip_vcf(tmp_path, genome):
    path = tmp_path / "variants.vcf.gz"
    with DATA.open("rb") as src, gzip.open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert read_vcf(path, genome).variants == EXPECTED


def test_bgzip_vcf(tmp_path, genome):
    bgzf = pytest.importorskip("Bio.bgzf")
    path = tmp_path / "variants.vcf.bgz"
    with bgzf.BgzfWriter(str(path), "wb") as dst:
        dst.write(DATA.read_bytes())
    assert read_vcf(path, genome).variants == EXPECTED


def test_compressed_name_but_plain_content(tmp_path):
    path = tmp_path / "plain.vcf.gz"
    path.write_bytes(DATA.read_bytes())
    assert read_vcf(path).variants == EXPECTED


def test_truncated_gzip(tmp_path):
    path = tmp_path / "broken.vcf.gz"
    path.write_bytes(gzip.compress(DATA.read_bytes())[:-30])
    with pytest.raises(VcfError, match="cannot be read"):
        read_vcf(path)


# --- malformed syntax: always an error, whatever the policy ---------------------------------

MALFORMED = [
    ("chr1 2 x C T . .", "at least 8 tab-separated columns"),
    ("chr1 two x C T . . .", "POS 'two' is not a positive integer"),
    ("chr1 0 x C T . . .", "POS '0'"),
    ("chr1 -3 x C T . . .", "POS '-3'"),
    ("chr1\t2\tx\t\tT\t.\t.\t.", "REF '' must be bases"),
    ("chr1 2 x R T . . .", "REF 'R' must be bases"),
    ("chr1 2 x C TXG . . .", "ALT allele 'TXG'"),
    ("chr1\t2\tx\tC\t\t.\t.\t.", "ALT allele ''"),
    ("chr1 2 x C <DEL . . END=9", "symbolic ALT allele '<DEL'"),
    ("chr1 2 x C <DEL> . . END=nine", "INFO END='nine' is not an integer"),
    ("chr1 2 x C <DEL>,<DUP> . . SVLEN=1,2,3", "SVLEN has 3 values for 2 ALT"),
]


@pytest.mark.parametrize("record, message", MALFORMED, ids=[m[1] for m in MALFORMED])
@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_malformed_line_raises_naming_line(tmp_path, record, message, policy):
    path = tmp_path / "bad.vcf"
    path.write_text(HEADER + "chr1\t2\tok\tC\tT\t.\t.\t.\n" + record.replace(" ", "\t") + "\n")
    with pytest.raises(VcfError) as info:
        read_vcf(path, policy=policy)
    assert "bad.vcf:4:" in str(info.value)
    assert message in str(info.value)


def test_missing_header(tmp_path):
    path = tmp_path / "noheader.vcf"
    path.write_text("##fileformat=VCFv4.2\n")
    with pytest.raises(VcfError, match="no #CHROM header"):
        read_vcf(path)
    path.write_text("chr1\t2\tok\tC\tT\t.\t.\t.\n")
    with pytest.raises(VcfError, match="noheader.vcf:1: data line before the #CHROM header"):
        read_vcf(path)


def test_wrong_header_columns(tmp_path):
    path = tmp_path / "hdr.vcf"
    path.write_text("#CHROM\tSTART\tEND\n")
    with pytest.raises(VcfError, match="hdr.vcf:1: #CHROM header must start with"):
        read_vcf(path)


def test_missing_file(tmp_path):
    with pytest.raises(VcfError, match="does not exist"):
        read_vcf(tmp_path / "nope.vcf")


def test_space_separated_and_blank_lines(tmp_path):
    path = tmp_path / "spaces.vcf"
    path.write_text(HEADER + "\nchr1 2 rs1 C T . . .\n\n")
    (variant,) = read_vcf(path).variants
    assert (variant.id, variant.start, variant.line) == ("rs1", 1, 4)


def test_symbolic_subtypes_and_unsupported(tmp_path):
    path = write_vcf(
        tmp_path,
        "chr1 5 me A <DEL:ME:ALU> . . END=9",
        "chr1 5 td A <DUP:TANDEM> . . SVLEN=4",
        "chr1 5 di A <DUP:INT> . . SVLEN=4",
        "chr1 5 cnv A <CNV> . . END=9",
        "chr1 5 sb A .A . . .",
        "chr1 5 gv A <NON_REF> . . .",
        "chr1 5 same A a . . .",
    )
    result = read_vcf(path)
    assert [(v.id, v.kind, v.start, v.end) for v in result.variants] == [
        ("me", "SV_DEL", 5, 9),
        ("td", "SV_DUP", 5, 9),
    ]
    assert [s.id for s in result.skipped] == ["di", "cnv", "sb", "gv", "same"]
    assert "ALT equals REF" in result.skipped[-1].reason


# --- breakends (BND) ---------------------------------------------------------------------------------

from screening.io.vcf import read_breakends  # noqa: E402


def _pair(form: str, mate_form: str) -> list[str]:
    """A mate pair joining chr1:10 (1-based, base CHR1[9]) and chr2:5 (CHR2[4]) in one of the four forms."""
    t, p = CHR1[9], CHR2[4].upper()
    alt = form.replace("t", t).replace("p", "chr2:5")
    mate = mate_form.replace("t", p).replace("p", "chr1:10")
    return [f"chr1 10 b1 {t} {alt} . . SVTYPE=BND;MATEID=b2", f"chr2 5 b2 {p} {mate} . . SVTYPE=BND;MATEID=b1"]


@pytest.mark.parametrize("form, mate_form, left, right", [
    # t[p[: t, then the sequence from p onwards (the mate sees ]p]t)
    ("t[p[", "]p]t", ("chr1", 10, "+"), ("chr2", 4, "+")),
    # t]p]: t, then the reverse complement of the sequence up to p (the mate: the same join on the other strand)
    ("t]p]", "t]p]", ("chr1", 10, "+"), ("chr2", 5, "-")),
    # ]p]t: the sequence up to p, then t onwards
    ("]p]t", "t[p[", ("chr2", 5, "+"), ("chr1", 9, "+")),
    # [p[t: the reverse complement of the sequence from p onwards, then t onwards
    ("[p[t", "[p[t", ("chr2", 4, "-"), ("chr1", 9, "+")),
])
def test_breakend_forms_give_their_junction(genome, tmp_path, form, mate_form, left, right):
    result = read_breakends(write_vcf(tmp_path, *_pair(form, mate_form)), genome)
    assert result.skipped == []
    [junction] = result.junctions
    assert (junction.id, junction.mate_id, junction.line, junction.mate_line) == ("b1", "b2", 3, 4)
    assert (junction.left, junction.right) == (left, right)


def test_breakend_mates_pair_in_any_order_and_other_records_are_passed_over(genome, tmp_path):
    first, second = _pair("t[p[", "]p]t")
    path = write_vcf(tmp_path, second, "chr1 3 snv G T . . .", first)
    [junction] = read_breakends(path, genome).junctions
    assert junction.id == "b2" and junction.mate_id == "b1"  # read from the first of the pair in the file
    assert (junction.left, junction.right) == (("chr1", 10, "+"), ("chr2", 4, "+"))
    assert read_vcf(path, genome).skipped[0].id == "b2"  # the variants reader still skips breakends


@pytest.mark.parametrize("records, message", [
    (["chr1 10 b1 C C[chr2:5[ . . SVTYPE=BND"], "b1 has no INFO MATEID: an unpaired breakend"),
    (["chr1 10 b1 C C[chr2:5[ . . SVTYPE=BND;MATEID=b9"], "no BND record has that ID"),
    (["chr1 10 b1 C C[chr2:5[ . . MATEID=b2", "chr2 5 b2 G ]chr1:11]G . . MATEID=b1"], "do not point at each other"),
    (["chr1 10 b1 C C[chr2:5[ . . MATEID=b2", "chr2 5 b2 G G]chr1:10] . . MATEID=b1"], "describe different joins"),
    (["chr1 10 b1 C C[chr2:5] . . MATEID=b2"], "is not breakend notation"),
    (["chr1 10 b1 C CAAA[chr2:5[ . . MATEID=b2", "chr2 5 b2 G ]chr1:10]AAG . . MATEID=b1"],
     "insert different bases at the junction"),
    (["chr1 10 b1 C CAXA[chr2:5[ . . MATEID=b2"], "is not breakend notation"),
    (["chr1 10 b1 C C[chr2:5[C . . MATEID=b2"], "exactly one side"),
    (["chr1 10 b1 C G[chr2:5[ . . MATEID=b2"], "is not the REF base"),
    (["chr1 10 b1 C C[chr9:5[ . . MATEID=b2"], "unknown chromosome 'chr9'"),
])
def test_malformed_or_unpaired_breakends_fail_naming_the_record(genome, tmp_path, records, message):
    path = write_vcf(tmp_path, *records)
    with pytest.raises(VcfError, match="b1") as err:
        read_breakends(path, genome)
    assert message in str(err.value) and f"{path}:3" in str(err.value)
    skipped = read_breakends(path, genome, policy="skip")
    assert skipped.junctions == [] and any(message in s.reason for s in skipped.skipped)


def test_single_breakends_are_always_skipped_and_listed(genome, tmp_path):
    path = write_vcf(tmp_path, "chr1 10 s1 C C. . . SVTYPE=BND", *_pair("t[p[", "]p]t"))
    result = read_breakends(path, genome)
    assert len(result.junctions) == 1 and [s.id for s in result.skipped] == ["s1"]
    assert "single breakend" in result.skipped[0].reason


# --- one sample's haplotypes ---------------------------------------------------------------------------

SAMPLE_HEADER = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tNA1\tNA2\n"


def write_sample_vcf(tmp_path: Path, *records: str) -> Path:
    path = tmp_path / "samples.vcf"
    path.write_text(SAMPLE_HEADER + "".join(r.replace(" ", "\t") + "\n" for r in records))
    return path


def test_a_samples_phased_genotypes_give_each_alleles_haplotypes(genome, tmp_path):
    path = write_sample_vcf(
        tmp_path,
        "chr1 1 a A G . . . GT 0|1 1|1",
        "chr1 2 b C T . . . GT:DP 1|0:7 0|0",
        "chr1 3 c G T,A . . . GT 2|1 0|0",
        "chr1 4 d T C . . . GT 0|0 0/1",
        "chr1 5 e A C . . . GT 1/1 0|0",
        "chr1 6 f C G . . . GT 1 0",
        "chr1 7 g G C . . . GT .|1 0",
    )
    got = {(v.id, v.alt): v.haplotypes for v in read_vcf(path, genome, sample="NA1").variants}
    assert got == {("a", "G"): (2,), ("b", "T"): (1,), ("c:T", "T"): (2,), ("c:A", "A"): (1,), ("e", "C"): (1, 2),
                   ("f", "G"): (1,), ("g", "C"): (2,)}
    assert all(v.haplotypes == () for v in read_vcf(path, genome).variants)  # no sample: every allele, as before


def test_unphased_heterozygous_genotypes_are_refused_naming_the_record(genome, tmp_path):
    path = write_sample_vcf(tmp_path, "chr1 1 a A G . . . GT 0|1 1|1", "chr1 4 d T C . . . GT 0|0 0/1")
    with pytest.raises(VcfError, match=r"samples.vcf:4 d chr1:4 GT '0/1' of sample 'NA2' is unphased"):
        read_vcf(path, genome, sample="NA2")
    result = read_vcf(path, genome, sample="NA2", policy="skip")
    assert [v.id for v in result.variants] == ["a"] and [s.id for s in result.skipped] == ["d"]
    with pytest.raises(VcfError, match="sample 'NA3' is not in the VCF; its samples: NA1, NA2"):
        read_vcf(path, genome, sample="NA3")
