"""What the motif pipeline passes between its steps: seqlets, motifs, JASPAR matches, the result, the error."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from screening.core.errors import ScreeningError

__all__ = ["JasparMatch", "Motif", "MotifError", "MotifResult", "Seqlet", "reverse_complement"]


class MotifError(ScreeningError, ValueError):
    """Motifs that cannot be found as asked: no per-base scores, an unknown analysis, score, region or
    JASPAR collection, a store without its reference sequence."""


def reverse_complement(array: np.ndarray) -> np.ndarray:
    """The reverse complement of a ``[position, 4]`` (A, C, G, T) array: positions and bases reversed."""
    return np.ascontiguousarray(array[::-1, ::-1])


@dataclass(eq=False)
class Seqlet:
    """A span of high attribution, 0-based half-open ``[start, end)`` on ``chrom``.

    ``one_hot`` and ``contrib`` (hypothetical contributions, ``[position, 4]``) cover the span plus
    ``flank`` bases on each side (zeros beyond the data). ``motif`` and ``strand`` (relative to the
    motif as written) are set by clustering; ``motif_start``/``motif_end`` are the motif's aligned
    columns on the genome.
    """

    chrom: str
    start: int
    end: int
    attribution: float
    p_value: float
    one_hot: np.ndarray = field(repr=False)
    contrib: np.ndarray = field(repr=False)
    flank: int = 0
    motif: str | None = None
    strand: str = "."
    motif_start: int | None = None
    motif_end: int | None = None

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class JasparMatch:
    """A TOMTOM match of a motif to a JASPAR matrix. ``orientation`` is ``+`` when the JASPAR matrix
    matches the motif as written, ``-`` when its reverse complement does; ``offset``: motif column
    ``i`` faces column ``i + offset`` of the (oriented) JASPAR matrix."""

    matrix_id: str
    name: str
    p_value: float
    q_value: float
    orientation: str
    offset: int


@dataclass(eq=False)
class Motif:
    """A discovered motif: ``ppm`` (probabilities), ``cwm`` (mean contribution at the observed bases) and
    ``hcwm`` (mean hypothetical contributions), each ``float64 [4, width]`` with rows A, C, G, T."""

    name: str
    ppm: np.ndarray = field(repr=False)
    cwm: np.ndarray = field(repr=False)
    hcwm: np.ndarray = field(repr=False)
    seqlets: list[Seqlet] = field(default_factory=list, repr=False)
    matches: list[JasparMatch] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.ppm.shape[1])

    @property
    def n_seqlets(self) -> int:
        return len(self.seqlets)

    @property
    def best(self) -> JasparMatch | None:
        return self.matches[0] if self.matches else None


@dataclass(eq=False)
class MotifResult:
    """Everything :func:`screening.interpret.motifs.find_motifs` found, ready to be written."""

    motifs: list[Motif]
    seqlets: list[Seqlet]
    analysis: str
    score: str
    method: str
    regions: list[str]
    database: str
    n_positions: int
    n_seqlets_called: int
    jaspar: dict = field(default_factory=dict, repr=False)  # matrix_id -> (name, ppm [4, w]) of the best matches
