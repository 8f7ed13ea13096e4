"""Genomic regions: parsing, validation and BED files, all in one place.

Every coordinate in this package is **0-based, half-open**: ``chr1:1,000-2,000``
covers bases 1000 .. 1999, exactly as bioframe and BED define it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from screening.core.errors import ScreeningError

__all__ = ["Region", "RegionError", "parse_region", "read_bed", "validate_region"]


class RegionError(ScreeningError, ValueError):
    """A region string, BED line or interval that cannot be used."""


# \d also matches non-ASCII digits here, so that _to_int can name them when it refuses them.
_REGION_RE = re.compile(
    r"^\s*(?P<chrom>[^\s:]+)"
    r"(?::(?P<start>[\d,_]+)\s*-\s*(?P<end>[\d,_]+))?\s*$"
)
# ASCII digits only, plain or grouped by thousands with commas or underscores (1,000,000 / 1_000_000).
_NUMBER_RE = re.compile(r"[0-9]+|[0-9]{1,3}(?:,[0-9]{3})+|[0-9]{1,3}(?:_[0-9]{3})+", re.ASCII)


@dataclass(frozen=True, order=True)
class Region:
    """A 0-based, half-open genomic interval ``[start, end)`` on ``chrom``.

    ``end`` may be ``None`` for a whole chromosome until it is resolved
    against chromosome sizes with :func:`validate_region`.
    """

    chrom: str
    start: int = 0
    end: int | None = None

    def __str__(self) -> str:
        if self.end is None:
            return self.chrom
        return f"{self.chrom}:{self.start:,}-{self.end:,}"

    @property
    def length(self) -> int:
        if self.end is None:
            raise RegionError(f"region {self} has no end yet; resolve it against chromosome sizes")
        return self.end - self.start

    def overlaps(self, start: int, end: int) -> bool:
        """Whether ``[start, end)`` overlaps this region."""
        return start < (self.end if self.end is not None else start + 1) and end > self.start


def _to_int(text: str, what: str, source: str) -> int:
    """A coordinate of ASCII digits; commas or underscores only as thousands separators.

    ``str.isdigit`` and ``int`` also take full-width or Arabic-Indic digits, and dropping
    every comma takes ``1,0,0``: both are refused, so a typo cannot become a coordinate.
    """
    if not _NUMBER_RE.fullmatch(text):
        if any(ch.isdigit() and not ch.isascii() for ch in text):
            problem = "has non-ASCII digits (use 0-9)"
        elif "," in text or "_" in text:
            problem = "has a comma or underscore out of place (only as thousands separators, e.g. 1,000,000)"
        else:
            problem = "is not a whole number"
        raise RegionError(f"{source}: {what} {text!r} {problem}")
    return int(text.replace(",", "").replace("_", ""))


def parse_region(text: str | Region) -> Region:
    """Parse ``chrom``, ``chrom:start-end`` (commas and underscores allowed).

    Parameters
    ----------
    text
        A UCSC-style region string, 0-based half-open, e.g. ``chr1:1,400,000-1,420,000``.

    Returns
    -------
    Region

    Raises
    ------
    RegionError
        On malformed strings, negative or empty intervals.
    """
    if isinstance(text, Region):
        return text
    if not isinstance(text, str):
        raise RegionError(f"region must be a string like 'chr1:1,000-2,000', got {text!r}")
    if re.search(r":\s*-", text) or re.search(r"-\s*-", text):
        raise RegionError(f"region {text!r}: coordinates cannot be negative")
    match = _REGION_RE.match(text)
    if not match:
        raise RegionError(
            f"region {text!r} is not of the form 'chrom' or 'chrom:start-end' "
            "(0-based, half-open, commas allowed)"
        )
    chrom = match["chrom"]
    if match["start"] is None:
        return Region(chrom)
    start = _to_int(match["start"], "start", f"region {text!r}")
    end = _to_int(match["end"], "end", f"region {text!r}")
    if end <= start:
        raise RegionError(f"region {text!r} is empty: end ({end:,}) must be greater than start ({start:,})")
    return Region(chrom, start, end)


def validate_region(region: Region | str, chrom_sizes: Mapping[str, int], source: str = "") -> Region:
    """Check a region against chromosome sizes and resolve a whole-chromosome region.

    Raises
    ------
    RegionError
        If the chromosome is unknown or the interval leaves the chromosome.
    """
    region = parse_region(region)
    where = f"{source}: " if source else ""
    if region.chrom not in chrom_sizes:
        known = ", ".join(list(chrom_sizes)[:10]) + (" …" if len(chrom_sizes) > 10 else "")
        raise RegionError(f"{where}region {region}: unknown chromosome {region.chrom!r} (genome has {known})")
    size = chrom_sizes[region.chrom]
    if region.end is None:
        return Region(region.chrom, 0, size)
    if region.start < 0:
        raise RegionError(f"{where}region {region}: start is negative")
    if region.end > size:
        raise RegionError(
            f"{where}region {region} runs past the end of {region.chrom} (length {size:,})"
        )
    return region


def read_bed(path: str | Path) -> list[Region]:
    """Read the first three columns of a BED file (0-based, half-open).

    Header, ``track`` and ``browser`` lines and ``#`` comments are skipped.

    Raises
    ------
    RegionError
        Naming the file and line of any malformed record.
    """
    path = Path(path)
    if not path.is_file():
        raise RegionError(f"BED file {path} does not exist")
    regions: list[Region] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if "\0" in line:  # NUL never occurs in a text file: a binary (or compressed) file
                    raise RegionError(f"BED file {path} is not text (a NUL byte on line {lineno}); is it a BED file?")
                if not line.strip() or line.startswith(("#", "track", "browser")):
                    continue
                regions.append(_bed_line(line, f"{path}:{lineno}"))
    except UnicodeDecodeError as err:
        raise RegionError(f"BED file {path} is not UTF-8 text (byte {err.start} of a line); is it a BED file?") from None
    if not regions:
        raise RegionError(f"BED file {path} holds no intervals")
    return regions


def _bed_line(line: str, source: str) -> Region:
    fields = line.rstrip("\n").split("\t")
    if len(fields) < 3:
        fields = line.split()
    if len(fields) < 3:
        raise RegionError(f"{source}: expected at least 3 columns (chrom, start, end)")
    start = _to_int(fields[1], "start", source)
    end = _to_int(fields[2], "end", source)
    if end <= start:
        raise RegionError(f"{source}: empty interval {fields[0]}:{start}-{end}")
    return Region(fields[0], start, end)


def merge_sorted(regions: Iterable[Region]) -> list[Region]:
    """Sort regions and merge overlapping ones (per chromosome)."""
    merged: list[Region] = []
    for region in sorted(regions, key=lambda r: (r.chrom, r.start, r.end or 0)):
        last = merged[-1] if merged else None
        if last is not None and last.chrom == region.chrom and region.start <= (last.end or 0):
            merged[-1] = Region(last.chrom, last.start, max(last.end or 0, region.end or 0))
        else:
            merged.append(region)
    return merged
