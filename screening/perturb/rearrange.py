"""Rearrangements: a model window filled by an ordered list of genomic segments (pure, no I/O).

A rearrangement (a translocation, an inversion with flanking deletions, a segmental move) is the
sequence read along its segments, in order, each on its strand: a ``-`` segment contributes its
reverse complement (and its tracks reversed), as Orca's custom rearrangements do. The model window
is centred on the junctions (midway between the first and the last junction) and the segments must
cover it; what lies in the window are its :class:`Piece` s.

The perturbed map is compared with the reference map of *each contributing locus* (a
:class:`Partner`): the pieces of one chromosome whose sequence sits in the same place in the window
as in a reference window of that chromosome share that reference window (an inversion in place: one
partner; a translocation: two, one per chromosome; a deletion written as two segments: two, the
sequence on either side of it). Each partner's reference window is placed so its pieces sit where
they sit in the rearranged window (moved inside the chromosome near its ends); the alignment pairs
the bins of those pieces (reversed for a ``-`` piece), every other bin is masked.

A VCF breakend pair (``screening.io.vcf.Junction``) becomes two segments, ``flank`` bp on each side of
the junction (:func:`junction_segments`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

__all__ = [
    "Partner",
    "Piece",
    "PlacedRearrangement",
    "Rearrangement",
    "RearrangementError",
    "Segment",
    "junction_segments",
    "place",
]

Strand = Literal["+", "-"]


class RearrangementError(ValueError):
    """A rearrangement that cannot be placed in a model window (names it and says why)."""


@dataclass(frozen=True)
class Segment:
    """``chrom:[start, end)`` (0-based, half-open) read on ``strand``."""

    chrom: str
    start: int
    end: int
    strand: Strand = "+"

    def __post_init__(self) -> None:
        if self.strand not in ("+", "-"):
            raise RearrangementError(f"segment {self.chrom}:{self.start}-{self.end}: strand must be '+' or '-'")
        if not 0 <= self.start < self.end:
            raise RearrangementError(f"segment {self.chrom}:{self.start}-{self.end}: needs 0 <= start < end")

    @property
    def length(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        return f"{self.chrom}:{self.start}-{self.end}:{self.strand}"


@dataclass(frozen=True)
class Rearrangement:
    """An ordered list of segments and where it came from (a spec entry or a VCF record), for messages."""

    name: str
    segments: tuple[Segment, ...]
    source: str = ""

    @property
    def length(self) -> int:
        """Length of the rearranged sequence."""
        return sum(s.length for s in self.segments)

    @property
    def described(self) -> str:
        """``name`` and its source, for messages."""
        return f"rearrangement {self.name!r}" + (f" ({self.source})" if self.source else "")


@dataclass(frozen=True)
class Piece:
    """The part of one segment inside the window: window offsets ``[lo, hi)`` hold ``chrom:[ref_lo, ref_hi)``
    on ``strand``."""

    lo: int
    hi: int
    chrom: str
    ref_lo: int
    ref_hi: int
    strand: Strand


@dataclass(frozen=True)
class Partner:
    """A contributing locus: its reference window ``chrom:[window_start, window_start + L)`` and its pieces
    as ``(lo, hi, ref_lo, ref_hi, strand)``, window offsets in the rearranged and in the reference window."""

    chrom: str
    window_start: int
    pieces: tuple[tuple[int, int, int, int, str], ...]

    def locus(self, window: int) -> str:
        """The reference window as ``chrom:start-end``."""
        return f"{self.chrom}:{self.window_start}-{self.window_start + window}"


@dataclass(frozen=True)
class PlacedRearrangement:
    """A rearrangement laid out in one model window: its pieces (in order) and its partners."""

    name: str
    pieces: tuple[Piece, ...]
    partners: tuple[Partner, ...]
    source: str = ""

    @property
    def description(self) -> str:
        """The segments in the window, as ``chrom:start-end:strand`` joined by ``,``."""
        return ",".join(f"{p.chrom}:{p.ref_lo}-{p.ref_hi}:{p.strand}" for p in self.pieces)


def _junctions(segments: Sequence[Segment]) -> list[int]:
    ends, total = [], 0
    for segment in segments:
        total += segment.length
        ends.append(total)
    return ends[:-1]


def place(rearrangement: Rearrangement, window: int, chrom_sizes: Mapping[str, int]) -> PlacedRearrangement:
    """Lay a rearrangement out in a model window of ``window`` bp and find its partners.

    Raises
    ------
    RearrangementError
        Naming the rearrangement: an unknown chromosome, a segment past its chromosome's end, or segments
        that do not cover the window centred on the junctions.
    """
    where = rearrangement.described
    if not rearrangement.segments:
        raise RearrangementError(f"{where}: no segments")
    for segment in rearrangement.segments:
        if segment.chrom not in chrom_sizes:
            raise RearrangementError(f"{where}: segment {segment} is on {segment.chrom!r}, which the genome lacks")
        if segment.end > chrom_sizes[segment.chrom]:
            raise RearrangementError(
                f"{where}: segment {segment} runs past the end of {segment.chrom} ({chrom_sizes[segment.chrom]:,} bp)"
            )
    junctions = _junctions(rearrangement.segments) or [rearrangement.length // 2]
    lo = (junctions[0] + junctions[-1]) // 2 - window // 2
    if lo < 0 or lo + window > rearrangement.length:
        raise RearrangementError(
            f"{where}: its segments ({rearrangement.length:,} bp) do not cover the {window:,} bp model window centred "
            f"on its junctions (they need {window // 2:,} bp before and after the middle junction point; the window "
            f"would span {lo:,} to {lo + window:,} of the rearranged sequence): lengthen the outer segments"
        )
    pieces = _pieces(rearrangement.segments, lo, window)
    return PlacedRearrangement(rearrangement.name, pieces, _partners(pieces, window, chrom_sizes), rearrangement.source)


def _pieces(segments: Sequence[Segment], lo: int, window: int) -> tuple[Piece, ...]:
    out, first = [], 0
    for segment in segments:
        last = first + segment.length
        a, b = max(first, lo), min(last, lo + window)
        if a < b:
            if segment.strand == "+":
                ref_lo = segment.start + (a - first)
            else:  # rearranged position first + k holds the base end - 1 - k
                ref_lo = segment.end - (b - first)
            out.append(Piece(a - lo, b - lo, segment.chrom, ref_lo, ref_lo + (b - a), segment.strand))
        first = last
    return tuple(out)


def _partners(pieces: Sequence[Piece], window: int, chrom_sizes: Mapping[str, int]) -> tuple[Partner, ...]:
    """Pieces grouped by their reference window: the one placing each piece where it sits in the rearranged
    window, moved inside its chromosome."""
    groups: dict[tuple[str, int], list[tuple[int, int, int, int, str]]] = {}
    for piece in pieces:
        start = max(0, min(piece.ref_lo - piece.lo, chrom_sizes[piece.chrom] - window))
        groups.setdefault((piece.chrom, start), []).append(
            (piece.lo, piece.hi, piece.ref_lo - start, piece.ref_hi - start, piece.strand)
        )
    return tuple(Partner(chrom, start, tuple(parts)) for (chrom, start), parts in groups.items())


def junction_segments(
    left: tuple[str, int, str], right: tuple[str, int, str], flank: int, chrom_sizes: Mapping[str, int]
) -> tuple[Segment, Segment]:
    """The two segments of a breakend junction, ``flank`` bp on each side (clipped to the chromosomes).

    Parameters
    ----------
    left, right
        ``(chrom, position, strand)``: the sequence before and after the junction, each given by the
        0-based boundary ``position`` at the junction. ``left`` on ``+`` is ``[position - flank, position)``;
        on ``-`` it is ``[position, position + flank)`` read backwards (its reverse complement ends at the
        junction). ``right`` on ``+`` is ``[position, position + flank)``; on ``-`` ``[position - flank,
        position)`` reverse complemented.
    flank
        bp on each side (a model window's length covers any window centred on the junction).
    chrom_sizes
        Chromosome lengths, to clip at the ends (a clipped segment may then not cover the window:
        :func:`place` says so).
    """

    def interval(chrom: str, position: int, strand: str, before: bool) -> Segment:
        size = chrom_sizes.get(chrom, position + flank)
        if before == (strand == "+"):
            return Segment(chrom, max(0, position - flank), position, strand)  # type: ignore[arg-type]
        return Segment(chrom, position, min(size, position + flank), strand)  # type: ignore[arg-type]

    return interval(*left, before=True), interval(*right, before=False)
