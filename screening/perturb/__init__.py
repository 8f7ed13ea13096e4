"""Perturbations: pure edits of a reference sequence window (deletions, insertions, inversions,
shuffles, masks, point mutations), with no model and no I/O. The implementation is in
:mod:`screening.perturb.edits`; the public names are re-exported here."""

from screening.perturb.edits import (
    Edit,
    apply_edit,
    centered_window_start,
    delete,
    dinucleotide_shuffle,
    duplicate,
    insertion,
    invert,
    mask,
    motif_consensus,
    mutate,
    mutation_alternatives,
    saturation_pairs,
)

__all__ = [
    "Edit",
    "apply_edit",
    "centered_window_start",
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
