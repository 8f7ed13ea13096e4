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

A segment may also be literal inserted sequence (:class:`Inserted`): its bases belong to no partner, so
their bins are masked against every partner's reference (and their tracks are zero, as for the inserted bases
of an indel).

A VCF breakend pair (``screening.io.vcf.Junction``) becomes two segments, ``flank`` bp on each side of
the junction, with the bases it inserts between them (:func:`junction_segments`).

With ``shifts`` the window moves by ``s`` bp along the rearranged sequence (:func:`place` places every shift);
each placement keeps the same partners, each with its own reference window for that placement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

__all__ = [
    "Inserted",
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


#: Letters an inserted sequence may hold.
BASES = frozenset("ACGTN")
#: Inserted sequences up to this long are written out in :attr:`PlacedRearrangement.description`.
SHOWN_BASES = 32


@dataclass(frozen=True)
class Inserted:
    """Literal inserted sequence (``A``, ``C``, ``G``, ``T``, ``N``; upper-cased): bases of no genomic locus."""

    sequence: str

    def __post_init__(self) -> None:
        sequence = self.sequence.upper() if isinstance(self.sequence, str) else ""
        if not sequence:
            raise RearrangementError("inserted sequence: empty (give at least one base)")
        bad = sorted(set(sequence) - BASES)
        if bad:
            raise RearrangementError(
                f"inserted sequence {_shown(sequence)!r}: letters {''.join(bad)!r} are not A, C, G, T or N"
            )
        object.__setattr__(self, "sequence", sequence)

    @property
    def length(self) -> int:
        return len(self.sequence)

    def __str__(self) -> str:
        return f"ins:{_shown(self.sequence)}"


def _shown(sequence: str) -> str:
    return sequence if len(sequence) <= SHOWN_BASES else f"{len(sequence)}bp"


@dataclass(frozen=True)
class Rearrangement:
    """An ordered list of segments (genomic or inserted) and where it came from (a spec entry or a VCF record),
    for messages."""

    name: str
    segments: tuple[Segment | Inserted, ...]
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
    on ``strand``; for inserted sequence, ``chrom`` is ``""``, ``[ref_lo, ref_hi)`` the offsets in the inserted
    sequence and ``sequence`` its bases in the window. ``segment`` is the segment's index in the rearrangement."""

    lo: int
    hi: int
    chrom: str
    ref_lo: int
    ref_hi: int
    strand: Strand
    sequence: str = ""
    segment: int = -1

    @property
    def inserted(self) -> bool:
        """Whether the piece is inserted sequence (it belongs to no partner)."""
        return bool(self.sequence)

    def __str__(self) -> str:
        if self.inserted:
            return f"ins:{_shown(self.sequence)}"
        return f"{self.chrom}:{self.ref_lo}-{self.ref_hi}:{self.strand}"


@dataclass(frozen=True)
class Partner:
    """A contributing locus: its reference window ``chrom:[window_start, window_start + L)`` and its pieces
    as ``(lo, hi, ref_lo, ref_hi, strand)``, window offsets in the rearranged and in the reference window."""

    chrom: str
    window_start: int
    pieces: tuple[tuple[int, int, int, int, str], ...]
    segments: tuple[int, ...] = ()  # the indices of the segments its pieces come from

    def locus(self, window: int) -> str:
        """The reference window as ``chrom:start-end``."""
        return f"{self.chrom}:{self.window_start}-{self.window_start + window}"


@dataclass(frozen=True)
class PlacedRearrangement:
    """A rearrangement laid out in one model window: its pieces (in order) and its partners; ``shifted`` holds
    the same rearrangement in each window shifted by ``s`` bp (``(s, placed)``, ``s != 0``), whose partner ``k``
    is this placement's partner ``k`` (same chromosome and segments, its own reference window)."""

    name: str
    pieces: tuple[Piece, ...]
    partners: tuple[Partner, ...]
    source: str = ""
    shifted: tuple[tuple[int, "PlacedRearrangement"], ...] = ()

    @property
    def description(self) -> str:
        """The segments in the window, as ``chrom:start-end:strand`` (``ins:SEQUENCE`` for inserted bases, or
        ``ins:<n>bp`` past :data:`SHOWN_BASES` bases) joined by ``,``."""
        return ",".join(str(p) for p in self.pieces)

    def at(self, shift: int) -> "PlacedRearrangement":
        """The rearrangement in the window shifted by ``shift`` bp (``0``: this one).

        Raises
        ------
        KeyError
            If it was not placed with that shift.
        """
        if shift == 0:
            return self
        for s, placed in self.shifted:
            if s == shift:
                return placed
        raise KeyError(f"rearrangement {self.name!r} was not placed with shift {shift}")

    @property
    def placements(self) -> tuple["PlacedRearrangement", ...]:
        """This placement and every shifted one."""
        return (self, *(placed for _, placed in self.shifted))


def _junctions(segments: Sequence[Segment]) -> list[int]:
    ends, total = [], 0
    for segment in segments:
        total += segment.length
        ends.append(total)
    return ends[:-1]


def place(
    rearrangement: Rearrangement, window: int, chrom_sizes: Mapping[str, int], shifts: Sequence[int] = (0,)
) -> PlacedRearrangement:
    """Lay a rearrangement out in a model window of ``window`` bp and find its partners.

    Parameters
    ----------
    rearrangement
        The segments, in order.
    window
        The model window's length.
    chrom_sizes
        Chromosome lengths.
    shifts
        bp by which the window also moves along the rearranged sequence (``shifts`` of the spec); each shifted
        placement is in :attr:`PlacedRearrangement.shifted`.

    Raises
    ------
    RearrangementError
        Naming the rearrangement: an unknown chromosome, a segment past its chromosome's end, segments that do
        not cover the window centred on the junctions (or a shifted one), a window holding inserted sequence
        only, or a shifted window whose partners differ from the centred window's.
    """
    where = rearrangement.described
    if not rearrangement.segments:
        raise RearrangementError(f"{where}: no segments")
    for segment in rearrangement.segments:
        if isinstance(segment, Inserted):
            continue
        if segment.chrom not in chrom_sizes:
            raise RearrangementError(f"{where}: segment {segment} is on {segment.chrom!r}, which the genome lacks")
        if segment.end > chrom_sizes[segment.chrom]:
            raise RearrangementError(
                f"{where}: segment {segment} runs past the end of {segment.chrom} ({chrom_sizes[segment.chrom]:,} bp)"
            )
    junctions = _junctions(rearrangement.segments) or [rearrangement.length // 2]
    lo = (junctions[0] + junctions[-1]) // 2 - window // 2
    _check_covered(rearrangement, lo, window, 0)
    pieces = _pieces(rearrangement.segments, lo, window)
    partners = _partners(pieces, window, chrom_sizes)
    if not partners:
        raise RearrangementError(
            f"{where}: its model window holds inserted sequence only, no partner locus to "
            "compare it with: add genomic segments around it"
        )
    shifted = []
    for shift in dict.fromkeys(int(s) for s in shifts if s != 0):
        _check_covered(rearrangement, lo + shift, window, shift)
        moved = _pieces(rearrangement.segments, lo + shift, window)
        shifted.append(
            (
                shift,
                PlacedRearrangement(
                    rearrangement.name,
                    moved,
                    _matched(rearrangement, partners, moved, shift, window, chrom_sizes),
                    rearrangement.source,
                ),
            )
        )
    return PlacedRearrangement(rearrangement.name, pieces, partners, rearrangement.source, tuple(shifted))


def _check_covered(rearrangement: Rearrangement, lo: int, window: int, shift: int) -> None:
    if 0 <= lo and lo + window <= rearrangement.length:
        return
    moved = f" shifted by {shift:+,} bp (shifts)" if shift else ""
    hint = "choose smaller shifts or lengthen the outer segments" if shift else "lengthen the outer segments"
    raise RearrangementError(
        f"{rearrangement.described}: its segments ({rearrangement.length:,} bp) do not cover the {window:,} bp model "
        f"window centred on its junctions{moved} (they need {window // 2 + abs(shift):,} bp before and after the "
        f"middle junction point; the window would span {lo:,} to {lo + window:,} of the rearranged sequence): {hint}"
    )


def _matched(
    rearrangement: Rearrangement,
    partners: Sequence[Partner],
    pieces: Sequence[Piece],
    shift: int,
    window: int,
    chrom_sizes: Mapping[str, int],
) -> tuple[Partner, ...]:
    """The partners of a shifted window, in the order of the centred window's (matched by their segments)."""
    found = {p.segments: p for p in _partners(pieces, window, chrom_sizes)}
    if set(found) != {p.segments for p in partners}:

        def loci(group) -> str:
            return "; ".join(",".join(str(rearrangement.segments[i]) for i in segments) for segments in group)

        raise RearrangementError(
            f"{rearrangement.described}: shifted by {shift:+,} bp (shifts), its window's partner loci ({loci(found)}) "
            f"are not those of the centred window ({loci(p.segments for p in partners)}): choose smaller shifts"
        )
    return tuple(found[p.segments] for p in partners)


def _pieces(segments: Sequence[Segment | Inserted], lo: int, window: int) -> tuple[Piece, ...]:
    out, first = [], 0
    for index, segment in enumerate(segments):
        last = first + segment.length
        a, b = max(first, lo), min(last, lo + window)
        if a < b and isinstance(segment, Inserted):
            sequence = segment.sequence[a - first : b - first]
            out.append(Piece(a - lo, b - lo, "", a - first, b - first, "+", sequence, index))
        elif a < b:
            if segment.strand == "+":
                ref_lo = segment.start + (a - first)
            else:  # rearranged position first + k holds the base end - 1 - k
                ref_lo = segment.end - (b - first)
            out.append(Piece(a - lo, b - lo, segment.chrom, ref_lo, ref_lo + (b - a), segment.strand, "", index))
        first = last
    return tuple(out)


def _partners(pieces: Sequence[Piece], window: int, chrom_sizes: Mapping[str, int]) -> tuple[Partner, ...]:
    """Pieces grouped by their reference window: the one placing each piece where it sits in the rearranged
    window, moved inside its chromosome. Inserted pieces belong to no partner."""
    groups: dict[tuple[str, int], list[Piece]] = {}
    for piece in pieces:
        if piece.inserted:
            continue
        start = max(0, min(piece.ref_lo - piece.lo, chrom_sizes[piece.chrom] - window))
        groups.setdefault((piece.chrom, start), []).append(piece)
    return tuple(
        Partner(
            chrom,
            start,
            tuple((p.lo, p.hi, p.ref_lo - start, p.ref_hi - start, p.strand) for p in group),
            tuple(p.segment for p in group),
        )
        for (chrom, start), group in groups.items()
    )


def junction_segments(
    left: tuple[str, int, str],
    right: tuple[str, int, str],
    flank: int,
    chrom_sizes: Mapping[str, int],
    inserted: str = "",
) -> tuple[Segment | Inserted, ...]:
    """The segments of a breakend junction, ``flank`` bp on each side (clipped to the chromosomes), with the
    bases it inserts between them.

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
    inserted
        Bases between the two sides, read along the junction (``""``: none): an :class:`Inserted` segment.

    Returns
    -------
    tuple
        ``(left, right)``, or ``(left, Inserted(inserted), right)``.
    """

    def interval(chrom: str, position: int, strand: str, before: bool) -> Segment:
        size = chrom_sizes.get(chrom, position + flank)
        if before == (strand == "+"):
            return Segment(chrom, max(0, position - flank), position, strand)  # type: ignore[arg-type]
        return Segment(chrom, position, min(size, position + flank), strand)  # type: ignore[arg-type]

    middle = (Inserted(inserted),) if inserted else ()
    return interval(*left, before=True), *middle, interval(*right, before=False)
