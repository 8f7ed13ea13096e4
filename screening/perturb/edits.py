"""Perturbations as pure functions: arrays in, arrays out.

Sequence is ``uint8`` codes (A0 C1 G2 T3 N4, see :mod:`screening.core.encode`) and
tracks are ``float32 [n_tracks, length]`` or ``None``; nothing here touches files
and no input is ever modified.

Every kind of perturbation is one edit in the sense of :func:`apply_edit`: a
reference segment of a window replaced by an alternative segment (a substitution
replaces one base). The engine applies it on the host with :func:`apply_edit`, or
splices it into the encoded window on the model's device with the same rules
(:mod:`screening.compute.assemble`, validated by :func:`check_edit`).
:func:`mutate` makes many substitutions of one window at once, for callers that want
the substituted windows themselves. The kind helpers build the alternative from the
reference segment:

=============================  ==================================  ======================
kind                           alternative (``alt_codes``)         ``alt_tracks``
=============================  ==================================  ======================
deletion (:func:`delete`)      empty                               empty
:func:`mask`                   all N                               unchanged, or 0
:func:`dinucleotide_shuffle`   dinucleotide-preserving shuffle     unchanged
:func:`invert`                 reverse complement                  reversed
:func:`duplicate`              the segment twice                   twice
:func:`insertion`              a sequence (``ref_length=0``)       ``None`` → zeros
:func:`mutate`                 single-base substitutions, batched  unchanged
=============================  ==================================  ======================

:func:`compose` turns several edits of one window (a haplotype's alleles) into one.
:class:`Edit` records where an applied edit sits and how far it shifts
downstream sequence, for aligning perturbed and reference contact maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from screening.core.encode import ALPHABET, N_CODE, encode, reverse_complement

__all__ = [
    "Edit",
    "apply_edit",
    "centered_window_start",
    "check_edit",
    "compose",
    "delete",
    "dinucleotide_shuffle",
    "duplicate",
    "insertion",
    "invert",
    "mask",
    "motif_consensus",
    "mutate",
    "mutation_alternatives",
    "saturation_pairs",
]

_PADDINGS = ("zero", "follow")


def centered_window_start(start: int, width: int, window_length: int) -> int:
    """Start of a model window centred on the interval ``[start, start + width)``.

    Matches C.Origami's ``int(start + width / 2 - window_length / 2)`` for every
    non-negative result.
    """
    return (2 * start + width - window_length) // 2


@dataclass(frozen=True)
class Edit:
    """Where an applied edit sits in its window, for bin alignment of the outputs.

    Attributes
    ----------
    offset
        Start of the replaced interval, relative to the window start.
    ref_length
        Length of the replaced reference interval (0 for an insertion).
    alt_length
        Length of the sequence put in its place (0 for a deletion).
    """

    offset: int
    ref_length: int
    alt_length: int

    def __post_init__(self) -> None:
        for name in ("offset", "ref_length", "alt_length"):
            if getattr(self, name) < 0:
                raise ValueError(f"Edit.{name} must be non-negative, got {getattr(self, name)}")

    @property
    def shift(self) -> int:
        """How far sequence downstream of the edit moves right (negative: left)."""
        return self.alt_length - self.ref_length


# --- the edit primitive ------------------------------------------------------------------


def apply_edit(
    codes: np.ndarray,
    tracks: np.ndarray | None,
    offset: int,
    ref_length: int,
    alt_codes: np.ndarray,
    alt_tracks: np.ndarray | None,
    out_length: int,
    padding: str = "zero",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Replace ``[offset, offset + ref_length)`` of a loaded span by ``alt_codes``.

    Parameters
    ----------
    codes
        ``uint8 [span]``, starting at the window start, with
        ``span >= out_length + max(0, ref_length - len(alt_codes))`` so real
        downstream sequence is available to fill a net deletion.
    tracks
        ``float32 [n_tracks, span]`` edited together with the sequence, or ``None``.
    offset, ref_length
        The replaced interval, relative to the span start (``ref_length=0``: an
        insertion before ``offset``).
    alt_codes
        ``uint8 [alt_length]`` sequence put in its place.
    alt_tracks
        ``[n_tracks, alt_length]`` track values put in its place; ``None`` gives zeros.
        Must be ``None`` when ``tracks`` is.
    out_length
        Length of the returned window.
    padding
        What fills the tail a net deletion frees. ``"zero"``: N / 0, as positions
        past ``out_length`` are set to N / 0 *before* the edit (C.Origami's deletion
        screen); ``"follow"``: the real downstream sequence. Net insertions push
        downstream sequence right and cut it at ``out_length`` either way.

    Returns
    -------
    (codes, tracks)
        New arrays of length ``out_length``; the inputs are not modified.
    """
    alt_codes = np.asarray(alt_codes)
    span = check_edit(codes, tracks, offset, ref_length, alt_codes, alt_tracks, out_length, padding)
    # Only positions fed from span indices >= out_length are padding (mask-then-edit).
    pad_from = out_length if padding == "zero" else span
    new_codes = _splice(codes, offset, ref_length, alt_codes.astype(codes.dtype), out_length, pad_from, N_CODE)
    if tracks is None:
        return new_codes, None
    if alt_tracks is None:
        alt_tracks = np.zeros((tracks.shape[0], alt_codes.shape[0]), dtype=tracks.dtype)
    new_tracks = _splice(tracks, offset, ref_length, np.asarray(alt_tracks, tracks.dtype), out_length, pad_from, 0)
    return new_codes, new_tracks


def _splice(
    x: np.ndarray, offset: int, ref_length: int, alt: np.ndarray, out_length: int, pad_from: int, fill: float
) -> np.ndarray:
    """``(x[:offset] + alt + x[offset + ref_length:])[:out_length]`` along the last axis,
    with every element taken from an index ``>= pad_from`` of ``x`` replaced by ``fill``.

    Writes one output array directly instead of copying the whole span.
    """
    out = np.empty(x.shape[:-1] + (out_length,), dtype=x.dtype)
    head = min(offset, out_length)
    out[..., :head] = x[..., :head]  # never padding: pad_from >= out_length
    if offset >= out_length:
        return out
    alt_end = min(offset + alt.shape[-1], out_length)
    out[..., offset:alt_end] = alt[..., : alt_end - offset]
    source = offset + ref_length  # downstream sequence starts here in x ...
    n_tail = out_length - alt_end  # ... and fills the rest of the window
    out[..., alt_end:] = x[..., source : source + n_tail]
    n_real = min(n_tail, max(0, pad_from - source))
    out[..., alt_end + n_real :] = fill
    return out


def check_edit(
    codes: np.ndarray,
    tracks: np.ndarray | None,
    offset: int,
    ref_length: int,
    alt_codes: np.ndarray,
    alt_tracks: np.ndarray | None,
    out_length: int,
    padding: str,
) -> int:
    """Validate :func:`apply_edit`'s arguments (also for inputs spliced elsewhere from the same edit); return the
    span length.

    Raises
    ------
    ValueError
        Naming the argument that is out of range.
    """
    if codes.ndim != 1:
        raise ValueError(f"codes must be 1-D, got shape {codes.shape}")
    span = codes.shape[0]
    if alt_codes.ndim != 1:
        raise ValueError(f"alt_codes must be 1-D, got shape {alt_codes.shape}")
    if alt_codes.size and (int(alt_codes.min()) < 0 or int(alt_codes.max()) > N_CODE):
        raise ValueError(f"alt_codes must be base codes 0..{N_CODE}")
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be 'zero' or 'follow', got {padding!r}")
    if ref_length < 0:
        raise ValueError(f"reference length must be non-negative, got {ref_length}")
    if out_length <= 0:
        raise ValueError(f"out_length must be positive, got {out_length}")
    if offset < 0 or offset + ref_length > span:
        raise ValueError(f"edit [{offset}, {offset + ref_length}) lies outside the loaded span of {span} bp")
    deficit = max(0, ref_length - alt_codes.shape[0])
    if span < out_length + deficit:
        raise ValueError(f"span of {span} bp is shorter than window {out_length} + net deletion {deficit}")
    if tracks is None:
        if alt_tracks is not None:
            raise ValueError("alt_tracks given for a span without tracks")
        return span
    if tracks.ndim != 2 or tracks.shape[1] != span:
        raise ValueError(f"tracks must have shape (n_tracks, {span}), got {tracks.shape}")
    if alt_tracks is not None and np.shape(alt_tracks) != (tracks.shape[0], alt_codes.shape[0]):
        raise ValueError(f"alt_tracks must have shape {(tracks.shape[0], alt_codes.shape[0])}, got {np.shape(alt_tracks)}")
    return span


def compose(
    codes: np.ndarray,
    tracks: np.ndarray | None,
    parts: list[tuple[int, int, np.ndarray, np.ndarray | None]],
) -> tuple[int, np.ndarray, np.ndarray | None]:
    """Several edits of one window as one: the interval from the first edit's start to the last one's end
    and what replaces it (the edits, and the unchanged sequence between them).

    Parameters
    ----------
    codes, tracks
        The loaded span from the first edit's start on (``uint8 [>= extent]``, ``[T, >= extent]`` or ``None``).
    parts
        ``(offset, ref_length, alt_codes, alt_tracks)`` per edit, offsets relative to ``codes[0]``, sorted and
        not overlapping (``alt_tracks`` ``None``: zeros, as in :func:`apply_edit`).

    Returns
    -------
    (ref_length, alt_codes, alt_tracks)
        What :func:`apply_edit` takes at the first edit's offset; ``alt_tracks`` is ``None`` only when
        ``tracks`` is.

    Raises
    ------
    ValueError
        For edits out of order or overlapping.
    """
    pieces_codes: list[np.ndarray] = []
    pieces_tracks: list[np.ndarray] = []
    at = 0
    for offset, ref_length, alt_codes, alt_tracks in parts:
        if offset < at:
            raise ValueError(f"edits overlap or are out of order: one at {offset} after one ending at {at}")
        pieces_codes += [codes[at:offset], np.asarray(alt_codes, np.uint8)]
        if tracks is not None:
            filler = np.zeros((tracks.shape[0], len(alt_codes)), tracks.dtype) if alt_tracks is None else alt_tracks
            pieces_tracks += [tracks[:, at:offset], np.asarray(filler, tracks.dtype)]
        at = offset + ref_length
    alt = np.concatenate(pieces_codes) if pieces_codes else np.zeros(0, np.uint8)
    if tracks is None:
        return at, alt, None
    return at, alt, np.concatenate(pieces_tracks, axis=1) if pieces_tracks else tracks[:, :0]


def delete(
    codes: np.ndarray,
    tracks: np.ndarray | None,
    offset: int,
    width: int,
    out_length: int,
    padding: str = "zero",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Delete ``[offset, offset + width)`` from a loaded span and cut it to ``out_length``.

    Parameters
    ----------
    codes
        ``uint8 [span]`` with ``span >= out_length + width`` so downstream sequence
        can shift in.
    tracks
        ``float32 [n_tracks, span]`` deleted together with the sequence, or ``None``.
    offset, width
        The deleted interval, relative to the span start.
    out_length
        Length of the returned window.
    padding
        ``"zero"``: positions past ``out_length`` are set to N / 0 *before* the
        deletion, so the window's tail is padding (C.Origami's screen);
        ``"follow"``: the real downstream sequence fills the tail.

    Returns
    -------
    (codes, tracks)
        New arrays of length ``out_length``; the inputs are not modified.
    """
    if width <= 0:
        raise ValueError(f"deletion width must be positive, got {width}")
    empty_tracks = None if tracks is None else np.zeros((tracks.shape[0], 0), dtype=tracks.dtype)
    empty = np.zeros(0, dtype=codes.dtype)
    return apply_edit(codes, tracks, offset, width, empty, empty_tracks, out_length, padding)


# --- kinds: replacement segments built from the reference segment -------------------------


def mask(
    segment_codes: np.ndarray, segment_tracks: np.ndarray | None, mask_tracks: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Replace a segment by N of the same length.

    Parameters
    ----------
    segment_codes
        ``uint8 [width]`` reference segment.
    segment_tracks
        ``[n_tracks, width]`` or ``None``.
    mask_tracks
        Also set the tracks to 0 (otherwise they are kept, so only sequence changes).

    Returns
    -------
    (alt_codes, alt_tracks)
    """
    codes = np.full(segment_codes.shape, N_CODE, dtype=np.uint8)
    if segment_tracks is None:
        return codes, None
    return codes, np.zeros_like(segment_tracks) if mask_tracks else segment_tracks.copy()


def invert(
    segment_codes: np.ndarray, segment_tracks: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Invert a segment in place: reverse complement, tracks reversed.

    Returns
    -------
    (alt_codes, alt_tracks)
        Same length as the segment.
    """
    tracks = None if segment_tracks is None else segment_tracks[..., ::-1].copy()
    return reverse_complement(segment_codes), tracks


def duplicate(
    segment_codes: np.ndarray, segment_tracks: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Tandem duplication: the segment twice in a row, tracks duplicated.

    Apply with ``ref_length = width`` (alt length ``2 * width``, shift ``+width``).

    Returns
    -------
    (alt_codes, alt_tracks)
    """
    tracks = None if segment_tracks is None else np.concatenate([segment_tracks, segment_tracks], axis=-1)
    return np.concatenate([segment_codes, segment_codes]), tracks


def insertion(sequence: str, orientation: str = "+") -> np.ndarray:
    """Codes of a sequence to insert (apply with ``ref_length=0``).

    Inserted DNA has no measured signal, so pass ``alt_tracks=None`` to
    :func:`apply_edit`: its track values are 0.

    Parameters
    ----------
    sequence
        Letters ``ACGTN`` (lower case reads as upper case).
    orientation
        ``"+"`` as written, ``"-"`` reverse complemented.

    Raises
    ------
    ValueError
        For letters outside ``ACGTN`` (naming them and their positions) or a bad
        orientation.
    """
    if orientation not in ("+", "-"):
        raise ValueError(f"orientation must be '+' or '-', got {orientation!r}")
    bad = [(i, letter) for i, letter in enumerate(sequence) if letter.upper() not in ALPHABET]
    if bad:
        listed = ", ".join(f"{letter!r} at {i}" for i, letter in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ValueError(f"insertion has letters outside ACGTN: {listed}{more}")
    codes = encode(sequence)
    return reverse_complement(codes) if orientation == "-" else codes.copy()


def motif_consensus(pwm: np.ndarray) -> str:
    """Consensus (most frequent base per column) of a ``[4, width]`` matrix, rows A C G T.

    Accepts a :class:`screening.perturb.motif.Motif` too (its ``counts``). Ties go
    to the earlier base in ``ACGT`` order.
    """
    matrix = np.asarray(getattr(pwm, "counts", pwm))
    if matrix.ndim != 2 or matrix.shape[0] != 4:
        raise ValueError(f"pwm must have shape (4, width), got {matrix.shape}")
    return "".join("ACGT"[i] for i in matrix.argmax(axis=0))


# --- dinucleotide shuffle -----------------------------------------------------------------


def dinucleotide_shuffle(segment_codes: np.ndarray, rng: np.random.Generator | int | None) -> np.ndarray:
    """Shuffle a segment preserving its dinucleotide counts exactly.

    Altschul–Erikson's Eulerian-path shuffle, drawing uniformly among all sequences
    with the same dinucleotide counts and the same first and last base. N positions
    stay in place and each maximal ACGT run between them is shuffled on its own, so
    assembly gaps are not scattered into the sequence; every dinucleotide count,
    those touching N included, is kept because each run keeps its ends. Tracks are
    not shuffled (pass the segment's tracks unchanged as ``alt_tracks``).

    Parameters
    ----------
    segment_codes
        ``uint8 [width]`` reference segment.
    rng
        A generator or a seed; the same seed gives the same shuffle.

    Returns
    -------
    ``uint8 [width]`` alt codes.
    """
    rng = np.random.default_rng(rng)
    codes = np.asarray(segment_codes)
    if codes.ndim != 1:
        raise ValueError(f"segment_codes must be 1-D, got shape {codes.shape}")
    out = codes.astype(np.uint8, copy=True)
    is_base = np.concatenate([[False], codes < N_CODE, [False]]).astype(np.int8)
    for start, stop in np.flatnonzero(np.diff(is_base)).reshape(-1, 2):
        if stop - start > 3:  # runs of up to 3 bases have a single arrangement
            out[start:stop] = _eulerian_shuffle(codes[start:stop].astype(np.intp), rng)
    return out


def _eulerian_shuffle(run: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform random Eulerian path through the run's dinucleotide multigraph."""
    counts = np.bincount(run[:-1] * 4 + run[1:], minlength=16).reshape(4, 4)
    last_exit = _random_arborescence(counts, int(run[-1]), rng)
    successors = []
    for base in range(4):
        rest = counts[base].copy()
        if last_exit[base] >= 0:
            rest[last_exit[base]] -= 1  # the last exit goes last, after the shuffled rest
        order = rng.permutation(np.repeat(np.arange(4), rest)).tolist()
        successors.append(iter(order + ([int(last_exit[base])] if last_exit[base] >= 0 else [])))
    path = [int(run[0])]
    for _ in range(len(run) - 1):
        path.append(next(successors[path[-1]]))
    return np.array(path, dtype=np.uint8)


def _random_arborescence(counts: np.ndarray, root: int, rng: np.random.Generator) -> np.ndarray:
    """Last-exit edge of every base but ``root``: a random spanning tree towards ``root``.

    Wilson's loop-erased random walk draws each tree with probability proportional to
    the product of its edge multiplicities, the distribution Altschul–Erikson's
    draw-and-reject step gives, without rejections. Self-loops never lie in a tree
    and are left out of the walk. Returns ``[4]`` targets, -1 for the root and
    bases without outgoing edges.
    """
    weights = counts.astype(np.float64)
    np.fill_diagonal(weights, 0.0)
    following = np.full(4, -1)
    in_tree = np.zeros(4, dtype=bool)
    in_tree[root] = True
    for base in np.flatnonzero(counts.sum(axis=1)):
        node = base
        while not in_tree[node]:  # walk until the tree is hit; revisits overwrite (loop erasure)
            following[node] = rng.choice(4, p=weights[node] / weights[node].sum())
            node = following[node]
        node = base
        while not in_tree[node]:
            in_tree[node] = True
            node = following[node]
    following[root] = -1
    return following


# --- saturation mutagenesis ---------------------------------------------------------------


def mutation_alternatives(ref_codes: np.ndarray) -> np.ndarray:
    """The 3 non-reference bases of every position, in ``A, C, G, T`` order.

    Parameters
    ----------
    ref_codes
        ``uint8 [n]`` reference codes.

    Returns
    -------
    ``int8 [n, 3]`` base codes; rows of N reference positions are all -1
    (skipped: a substitution needs a known reference base).
    """
    ref = np.asarray(ref_codes).astype(np.int8)[:, None]
    choices = np.arange(3, dtype=np.int8)
    alternatives = choices + (choices >= ref).astype(np.int8)  # skip over the reference base
    alternatives[ref[:, 0] >= N_CODE] = -1
    return alternatives


def saturation_pairs(ref_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (position, alt base) substitution of a segment, N positions skipped.

    Returns
    -------
    (positions, alt_bases)
        ``int64 [3 * n_known]`` positions relative to the segment start, in order,
        and ``uint8`` alt bases (``A, C, G, T`` order per position), ready for
        :func:`mutate` after adding the segment's offset to ``positions``.
    """
    alternatives = mutation_alternatives(ref_codes)
    positions = np.repeat(np.arange(len(alternatives)), 3)
    keep = alternatives.reshape(-1) >= 0
    return positions[keep], alternatives.reshape(-1)[keep].astype(np.uint8)


def mutate(codes: np.ndarray, positions: np.ndarray, alt_bases: np.ndarray) -> np.ndarray:
    """B single-base substitutions of one window, as B mutated copies.

    Tracks are unchanged by a substitution: use the reference window's.

    Parameters
    ----------
    codes
        ``uint8 [L]`` window codes.
    positions
        ``int [B]`` positions in ``[0, L)``.
    alt_bases
        ``int [B]`` base codes 0..3 (A C G T); a base equal to the reference gives
        an unchanged copy.

    Returns
    -------
    ``uint8 [B, L]`` where row ``b`` is ``codes`` with ``positions[b]`` set to ``alt_bases[b]``.
    """
    positions = np.asarray(positions, dtype=np.int64).reshape(-1)
    alt_bases = np.asarray(alt_bases).reshape(-1)
    if codes.ndim != 1:
        raise ValueError(f"codes must be 1-D, got shape {codes.shape}")
    if positions.shape != alt_bases.shape:
        raise ValueError(f"{len(positions)} positions but {len(alt_bases)} alt bases")
    if positions.size and (positions.min() < 0 or positions.max() >= codes.shape[0]):
        raise ValueError(f"mutation positions must lie in [0, {codes.shape[0]})")
    if alt_bases.size and (alt_bases.min() < 0 or alt_bases.max() > 3):
        raise ValueError("alt bases must be codes 0..3 (A C G T); -1 marks skipped N positions")
    out = np.repeat(codes[None, :], len(positions), axis=0)
    out[np.arange(len(positions)), positions] = alt_bases
    return out
