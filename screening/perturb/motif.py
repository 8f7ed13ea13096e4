"""Position weight matrices: JASPAR parsing, motif sampling and log-odds scanning.

Matrices are stored as counts ``[4, width]`` with rows in ``A, C, G, T`` order,
matching the package's base codes (:mod:`screening.core.encode`). Scores are
log-odds in nats against an i.i.d. background.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

__all__ = [
    "Motif",
    "ScanResult",
    "load_ctcf",
    "read_jaspar",
    "read_jaspar_all",
    "sample_motif",
    "scan",
]

Orientation = Literal["+", "-"]

_ROW_RE = re.compile(r"^\s*([ACGT])\s*\[?([^\]]*)\]?\s*$")


@dataclass(frozen=True, eq=False)  # array field: compare counts explicitly
class Motif:
    """A position frequency matrix.

    Attributes
    ----------
    matrix_id
        JASPAR identifier, e.g. ``MA0139.1``.
    name
        Factor name, e.g. ``CTCF``.
    counts
        ``float64 [4, width]`` counts (or frequencies), rows ``A, C, G, T``.
    """

    matrix_id: str
    name: str
    counts: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts, dtype=np.float64)
        if counts.ndim != 2 or counts.shape[0] != 4 or counts.shape[1] == 0:
            raise ValueError(f"motif {self.matrix_id}: counts must have shape (4, width), got {counts.shape}")
        if (counts < 0).any() or (counts.sum(axis=0) <= 0).any():
            raise ValueError(f"motif {self.matrix_id}: counts must be non-negative with a positive sum per column")
        object.__setattr__(self, "counts", counts)

    @property
    def width(self) -> int:
        return self.counts.shape[1]

    def probabilities(self, pseudocount: float = 0.8) -> np.ndarray:
        """Column-normalised probabilities ``[4, width]``, ``pseudocount`` split over the 4 bases."""
        smoothed = self.counts + pseudocount / 4.0
        return smoothed / smoothed.sum(axis=0, keepdims=True)

    def log_odds(self, gc: float = 0.5, pseudocount: float = 0.8) -> np.ndarray:
        """Log-odds matrix ``[4, width]`` (nats) against an i.i.d. background of GC fraction ``gc``."""
        return np.log(self.probabilities(pseudocount) / _background(gc)[:, None])

    def score_range(self, gc: float = 0.5) -> tuple[float, float]:
        """Lowest and highest attainable log-odds score of one window."""
        lo = self.log_odds(gc)
        return float(lo.min(axis=0).sum()), float(lo.max(axis=0).sum())

    def relative(self, score: np.ndarray | float, gc: float = 0.5) -> np.ndarray:
        """Map log-odds scores to ``[0, 1]`` (JASPAR/TFBS "relative score")."""
        low, high = self.score_range(gc)
        return (np.asarray(score, dtype=np.float64) - low) / (high - low)


class ScanResult(NamedTuple):
    """Best strand per window start.

    Attributes
    ----------
    score
        ``float32 [L - width + 1]``: best log-odds of the window starting at each position.
    strand
        ``int8 [L - width + 1]``: ``+1`` when the forward motif scored best, ``-1`` when its
        reverse complement did.
    """

    score: np.ndarray
    strand: np.ndarray


def _background(gc: float) -> np.ndarray:
    return np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])


def read_jaspar_all(path: str | Path) -> list[Motif]:
    """Read every matrix of a JASPAR-format file.

    Parameters
    ----------
    path
        File of ``>ID name`` headers, each followed by four rows ``A [ c1 c2 … ]``
        (brackets optional), in any row order.

    Returns
    -------
    list of Motif

    Raises
    ------
    ValueError
        Naming the file and line of a malformed record.
    """
    path = Path(path)
    motifs: list[Motif] = []
    header: tuple[str, str] | None = None
    rows: dict[str, list[float]] = {}

    def flush(lineno: int) -> None:
        if header is None:
            return
        if sorted(rows) != list("ACGT"):
            raise ValueError(f"{path}:{lineno}: motif {header[0]} needs rows A, C, G, T, got {sorted(rows)}")
        widths = {len(v) for v in rows.values()}
        if len(widths) != 1:
            raise ValueError(f"{path}:{lineno}: motif {header[0]} rows have different widths {sorted(widths)}")
        motifs.append(Motif(header[0], header[1], np.array([rows[b] for b in "ACGT"])))

    with path.open() as handle:
        lines = handle.readlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith(">"):
            flush(lineno)
            parts = line[1:].split(None, 1)
            header = (parts[0], parts[1].strip() if len(parts) > 1 else parts[0])
            rows = {}
            continue
        match = _ROW_RE.match(line)
        if header is None or match is None:
            raise ValueError(f"{path}:{lineno}: expected a '>ID name' header or an 'A [ … ]' row, got {line.strip()!r}")
        try:
            rows[match[1]] = [float(x) for x in match[2].split()]
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: non-numeric count in {line.strip()!r}") from exc
    flush(len(lines))
    if not motifs:
        raise ValueError(f"{path}: no JASPAR matrix found")
    return motifs


def read_jaspar(path: str | Path) -> Motif:
    """Read the first (usually only) matrix of a JASPAR file; see :func:`read_jaspar_all`."""
    return read_jaspar_all(path)[0]


def load_ctcf() -> Motif:
    """The bundled CTCF matrix, JASPAR MA0139.1 (19 bp)."""
    resource = resources.files("screening") / "data" / "motifs" / "MA0139.1.jaspar"
    with resources.as_file(resource) as path:
        return read_jaspar(path)


def _as_probabilities(pwm: Motif | np.ndarray) -> np.ndarray:
    if isinstance(pwm, Motif):
        return pwm.probabilities()
    matrix = np.asarray(pwm, dtype=np.float64)
    return matrix / matrix.sum(axis=0, keepdims=True)


def sample_motif(rng: np.random.Generator, pwm: Motif | np.ndarray, orientation: Orientation = "+") -> np.ndarray:
    """Draw one motif instance, each column independently from its probabilities.

    Parameters
    ----------
    rng
        Source of randomness.
    pwm
        A :class:`Motif` or a ``[4, width]`` count/probability matrix (rows ``A, C, G, T``).
    orientation
        ``"+"`` for the motif as written, ``"-"`` for its reverse complement.

    Returns
    -------
    numpy.ndarray
        ``uint8 [width]`` base codes.
    """
    if orientation not in ("+", "-"):
        raise ValueError(f"orientation must be '+' or '-', got {orientation!r}")
    probs = _as_probabilities(pwm)
    cumulative = np.cumsum(probs, axis=0)
    draws = rng.random(probs.shape[1])
    codes = (draws[None, :] > cumulative).sum(axis=0).clip(0, 3).astype(np.uint8)
    if orientation == "-":
        codes = (3 - codes)[::-1].copy()  # complement of ACGT codes is 3 - code
    return codes


def scan(codes: np.ndarray, pwm: Motif | np.ndarray, gc: float = 0.5) -> ScanResult:
    """Log-odds score of every window on both strands, keeping the better one.

    Memory is ``O(L)``: the sum runs over the motif's columns, each step vectorised
    over the whole sequence. Windows containing N get a very low score.

    Parameters
    ----------
    codes
        ``uint8 [L]`` base codes.
    pwm
        A :class:`Motif` (scored by :meth:`Motif.log_odds` at ``gc``) or a
        ready ``[4, width]`` log-odds matrix.
    gc
        Background GC fraction used for a :class:`Motif`.

    Returns
    -------
    ScanResult
        Arrays of length ``L - width + 1`` (empty when ``L < width``); index ``i`` is the
        window ``[i, i + width)``.
    """
    log_odds = pwm.log_odds(gc) if isinstance(pwm, Motif) else np.asarray(pwm, dtype=np.float64)
    width = log_odds.shape[1]
    codes = np.asarray(codes, dtype=np.uint8)
    n = codes.size - width + 1
    if n <= 0:
        return ScanResult(np.empty(0, np.float32), np.empty(0, np.int8))
    # Row N: a large penalty, so windows over N never look like sites.
    forward = np.vstack([log_odds, np.full(width, -1e3)]).astype(np.float32)
    reverse = forward.copy()
    reverse[:4] = log_odds[::-1, ::-1]  # reverse complement: flip rows A↔T, C↔G and columns
    fwd = np.zeros(n, np.float32)
    rev = np.zeros(n, np.float32)
    for k in range(width):
        column = codes[k : k + n]
        fwd += forward[column, k]
        rev += reverse[column, k]
    strand = np.where(fwd >= rev, 1, -1).astype(np.int8)
    return ScanResult(np.maximum(fwd, rev), strand)
