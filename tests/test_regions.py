import re

import pytest

from screening.core.regions import Region, RegionError, merge_sorted, parse_region, read_bed, validate_region

SIZES = {"chr1": 3_000_000, "chr2": 1_000}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("chr1:1,400,000-1,420,000", Region("chr1", 1_400_000, 1_420_000)),
        ("chr1:1400000-1420000", Region("chr1", 1_400_000, 1_420_000)),
        ("chr1:1_400_000 - 1_420_000", Region("chr1", 1_400_000, 1_420_000)),
        ("chrX", Region("chrX")),
        ("  chr2:0-1  ", Region("chr2", 0, 1)),
    ],
)
def test_parse_region(text, expected):
    assert parse_region(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("chr1:200-100", "empty"),
        ("chr1:100-100", "empty"),
        ("chr1:-5-100", "negative"),
        ("chr1:100", "not of the form"),
        ("chr1:a-b", "not of the form"),
        ("", "not of the form"),
    ],
)
def test_parse_region_rejects(text, message):
    with pytest.raises(RegionError, match=message):
        parse_region(text)


def test_region_str_round_trip():
    region = Region("chr1", 1_400_000, 1_420_000)
    assert str(region) == "chr1:1,400,000-1,420,000"
    assert parse_region(str(region)) == region
    assert region.length == 20_000


def test_validate_region_resolves_whole_chromosome():
    assert validate_region("chr2", SIZES) == Region("chr2", 0, 1_000)


def test_validate_region_unknown_chromosome_names_it():
    with pytest.raises(RegionError, match="unknown chromosome 'chr9'.*chr1, chr2"):
        validate_region("chr9:1-2", SIZES)


def test_validate_region_past_end():
    with pytest.raises(RegionError, match=r"runs past the end of chr2 \(length 1,000\)"):
        validate_region("chr2:500-1,001", SIZES)
    assert validate_region("chr2:500-1,000", SIZES).end == 1_000  # half-open: the last base is 999


def test_half_open_overlap():
    region = Region("chr1", 100, 200)
    assert region.overlaps(199, 300)
    assert not region.overlaps(200, 300)
    assert not region.overlaps(0, 100)


def test_read_bed(tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text("track name=x\n# comment\nchr1\t10\t20\tname\nchr2 5 8\n")
    assert read_bed(bed) == [Region("chr1", 10, 20), Region("chr2", 5, 8)]


@pytest.mark.parametrize("content, message", [("chr1\t10\n", "3 columns"), ("chr1\t20\t10\n", "empty interval"),
                                               ("chr1\tx\t10\n", "not a whole number"), ("", "no intervals")])
def test_read_bed_errors_name_the_line(tmp_path, content, message):
    bed = tmp_path / "bad.bed"
    bed.write_text(content)
    with pytest.raises(RegionError, match=message):
        read_bed(bed)


def test_read_bed_missing(tmp_path):
    with pytest.raises(RegionError, match="does not exist"):
        read_bed(tmp_path / "nope.bed")


def test_merge_sorted():
    merged = merge_sorted([Region("chr1", 50, 80), Region("chr1", 0, 60), Region("chr2", 0, 5), Region("chr1", 100, 110)])
    assert merged == [Region("chr1", 0, 80), Region("chr1", 100, 110), Region("chr2", 0, 5)]


# --- only ASCII digits, commas/underscores only as thousands separators; binary BED refused ----------


@pytest.mark.parametrize(
    "text, message",
    [
        ("chr1:１,０００-２,０００", "start '１,０００' has non-ASCII digits"),
        ("chr1:١٠٠٠-٢٠٠٠", "start '١٠٠٠' has non-ASCII digits"),
        ("chr1:1000-２０００", "end '２０００' has non-ASCII digits"),
        ("chr1:1,0,00-2000", "start '1,0,00' has a comma or underscore out of place"),
        ("chr1:,1000-2000", "out of place"),
        ("chr1:1000,-2000", "out of place"),
        ("chr1:1000-2000,", "end '2000,' has a comma or underscore out of place"),
        ("chr1:10_00-2000", "out of place"),
        ("chr1:1,000_000-3,000,000", "out of place"),
    ],
)
def test_parse_region_refuses_foreign_digits_and_stray_separators(text, message):
    with pytest.raises(RegionError, match=re.escape(message)):
        parse_region(text)


@pytest.mark.parametrize("text", ["chr1:1,000-2,000,000", "chr1:1_000_000-2_000_000", "chr1:999-1000", "chr1:0-1,000"])
def test_parse_region_takes_thousands_separators(text):
    region = parse_region(text)
    assert region.end > region.start


def test_read_bed_refuses_foreign_digits(tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text("chr1\t100\t200\nchr1\t３００\t400\n", encoding="utf-8")
    with pytest.raises(RegionError, match=rf"{re.escape(str(bed))}:2: start '３００' has non-ASCII digits"):
        read_bed(bed)


@pytest.mark.parametrize("content, message", [
    (b"chr1\t100\t200\n\x00\x01\x02", "is not text (a NUL byte on line 2)"),
    (b"\x1f\x8b\x08\x00\xff\xfe\xfd", "is not UTF-8 text"),
])
def test_read_bed_refuses_binary_files_naming_them(tmp_path, content, message):
    bed = tmp_path / "r.bed"
    bed.write_bytes(content)
    with pytest.raises(RegionError, match=rf"BED file {re.escape(str(bed))} {re.escape(message)}"):
        read_bed(bed)
