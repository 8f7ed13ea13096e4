"""The registry of perturbation kinds: what the plan, the engine, the worker and the report ask of a kind.

Each ``kind`` a spec can name (``deletion``, ``mutagenesis``, ``attribution``, ...) has one
:class:`PerturbationKind` here. The stages read its traits instead of comparing kind names:

* the plan lays perturbations out by :attr:`~PerturbationKind.placement`;
* the engine builds each perturbed input with :attr:`~PerturbationKind.alternative` and loads
  :attr:`~PerturbationKind.downstream` extra bp for a net deletion;
* :attr:`~PerturbationKind.per_base` kinds score every alternative base of a position
  (``[n, 4]``), :attr:`~PerturbationKind.gradients` kinds are computed by attribution and have no
  perturbed map.

To add a kind that replaces a segment of the window (a new tiled kind): its spec class in
:mod:`screening.spec`, its pure edit in :mod:`screening.perturb.edits`, and one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np

from screening.perturb.edits import compose, dinucleotide_shuffle, duplicate, invert, mask

__all__ = ["KINDS", "TILED_KINDS", "PerturbationKind", "Placement", "Replacement", "kind_of"]

#: ``(ref_length, alt_codes, alt_tracks)``: replace ``ref_length`` bp at the edit's offset by ``alt_codes``
#: (``alt_tracks`` ``None``: zeros), as :func:`screening.perturb.edits.apply_edit` takes them.
Replacement = tuple[int, np.ndarray, "np.ndarray | None"]

#: ``alternative(params, codes, tracks, start, variant)``: the replacement of one perturbation. ``codes``
#: (``uint8 [>= ref_length]``) and ``tracks`` (``[T, ...]`` or ``None``) are the loaded span from the edit's offset
#: on; ``params`` is the analysis's spec, ``start`` the genomic start (seeds), ``variant`` the VCF allele or ``None``.
Alternative = Callable[[Any, np.ndarray, "np.ndarray | None", int, Any], Replacement]

#: How the plan lays a kind's perturbations out: ``tiled`` (``width`` bp every ``step``), ``insertion`` (an
#: insertion point every ``step``), ``positions`` (every base, windows shared per unit), ``windows`` (contiguous
#: model windows, each owning its positions), ``vcf`` (the records of a VCF), ``rearrangement`` (segments that fill
#: a window, scored against each contributing locus: :mod:`screening.perturb.rearrange`).
Placement = Literal["tiled", "insertion", "positions", "windows", "vcf", "rearrangement"]


def _no_downstream(params: Any, variant: Any) -> int:
    return 0


@dataclass(frozen=True)
class PerturbationKind:
    """The traits of one perturbation kind.

    Attributes
    ----------
    name
        The spec's ``kind``.
    placement
        How the plan lays its perturbations out (:data:`Placement`).
    alternative
        Builds each perturbed segment (:data:`Alternative`); ``None`` for kinds that do not replace a
        segment (``per_base`` substitutions are batched by the engine, ``gradients`` kinds edit nothing).
    downstream
        ``downstream(params, variant)``: bp beyond the window a net deletion pulls in, loaded with the
        window so ``padding: follow`` has real sequence to fill with.
    per_base
        One score per alternative base at each position, stored as ``[n, 4]`` (reference base NaN).
    gradients
        Computed by attribution (a backward pass) rather than by predicting perturbed maps: no perturbed
        map exists to score, plot or keep.
    """

    name: str
    placement: Placement
    alternative: Alternative | None = None
    downstream: Callable[[Any, Any], int] = _no_downstream
    per_base: bool = False
    gradients: bool = False

    @property
    def rows_per_item(self) -> int:
        """Stored values per perturbation along the flat index of kept maps (4 for per-base kinds)."""
        return 4 if self.per_base else 1


def _deletion(params: Any, codes: np.ndarray, tracks: np.ndarray | None, start: int, variant: Any) -> Replacement:
    return params.width, np.zeros(0, np.uint8), None


def _mask(params: Any, codes: np.ndarray, tracks: np.ndarray | None, start: int, variant: Any) -> Replacement:
    width = params.width
    return (width, *mask(codes[:width], _head(tracks, width), params.mask_tracks))


def _shuffle(params: Any, codes: np.ndarray, tracks: np.ndarray | None, start: int, variant: Any) -> Replacement:
    width = params.width
    # seeded by the spec's seed and the position: the same result whatever the chunking
    return width, dinucleotide_shuffle(codes[:width], np.random.default_rng([params.seed, start])), _head(tracks, width)


def _inversion(params: Any, codes: np.ndarray, tracks: np.ndarray | None, start: int, variant: Any) -> Replacement:
    width = params.width
    return (width, *invert(codes[:width], _head(tracks, width)))


def _duplication(params: Any, codes: np.ndarray, tracks: np.ndarray | None, start: int, variant: Any) -> Replacement:
    width = params.width
    return (width, *duplicate(codes[:width], _head(tracks, width)))


def _insertion(params: Any, codes: np.ndarray, tracks: np.ndarray | None, start: int, variant: Any) -> Replacement:
    return 0, params.inserted_codes(), None


def _variant(params: Any, codes: np.ndarray, tracks: np.ndarray | None, start: int, variant: Any) -> Replacement:
    members = getattr(variant, "members", None)
    if members is not None:  # a haplotype's alleles in one window, applied together
        first = members[0].start
        parts = []
        for member in members:
            offset = member.start - first
            shifted = None if tracks is None else tracks[:, offset:]
            ref_length, alt_codes, alt_tracks = _one_variant(codes[offset:], shifted, member)
            parts.append((offset, ref_length, alt_codes, alt_tracks))
        return compose(codes, tracks, parts)
    return _one_variant(codes, tracks, variant)


def _one_variant(codes: np.ndarray, tracks: np.ndarray | None, variant: Any) -> Replacement:
    edit = variant.edit()
    ref_length = edit.ref_length
    if edit.op == "replace":
        # substitutions keep the measured tracks; inserted bases get 0 (no signal measured there)
        same_length = edit.alt_length == ref_length and tracks is not None
        return ref_length, edit.alt_codes, _head(tracks, ref_length) if same_length else None
    operation = duplicate if edit.op == "duplicate" else invert
    return (ref_length, *operation(codes[:ref_length], _head(tracks, ref_length)))


def _head(tracks: np.ndarray | None, width: int) -> np.ndarray | None:
    return None if tracks is None else tracks[:, :width]


def _deleted_width(params: Any, variant: Any) -> int:
    return int(params.width)


def _variant_net_deletion(params: Any, variant: Any) -> int:
    return max(0, variant.ref_length - variant.alt_length)


KINDS: dict[str, PerturbationKind] = {
    k.name: k
    for k in (
        PerturbationKind("deletion", "tiled", _deletion, downstream=_deleted_width),
        PerturbationKind("mask", "tiled", _mask),
        PerturbationKind("shuffle", "tiled", _shuffle),
        PerturbationKind("inversion", "tiled", _inversion),
        PerturbationKind("duplication", "tiled", _duplication),
        PerturbationKind("insertion", "insertion", _insertion),
        PerturbationKind("mutagenesis", "positions", per_base=True),
        PerturbationKind("variants", "vcf", _variant, downstream=_variant_net_deletion),
        PerturbationKind("attribution", "windows", gradients=True),
        # the engine builds the whole window from its segments (no replaced segment of one reference window)
        PerturbationKind("rearrangement", "rearrangement"),
    )
}

#: Kinds tiled over the regions (``width`` bp every ``step``).
TILED_KINDS: tuple[str, ...] = tuple(name for name, k in KINDS.items() if k.placement == "tiled")


def kind_of(analysis: Any) -> PerturbationKind:
    """The registry entry of an analysis (a perturbation spec, a store layout: anything with ``.kind``)."""
    try:
        return KINDS[analysis.kind]
    except KeyError:
        raise ValueError(f"unknown perturbation kind {analysis.kind!r}; known: {', '.join(KINDS)}") from None
