"""The registry of perturbation kinds (screening.perturb.kinds) against the spec and the edits."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from screening.perturb import edits
from screening.perturb.kinds import KINDS, TILED_KINDS, kind_of
from screening.spec import DeletionSpec, InversionSpec, MaskSpec, Perturbation, ShuffleSpec


def _spec_kinds() -> set[str]:
    union = typing.get_args(Perturbation)[0]
    return {cls.model_fields["kind"].default for cls in typing.get_args(union)}


def test_every_spec_kind_has_one_registry_entry_and_no_more():
    assert _spec_kinds() == set(KINDS)


def test_traits_of_the_kinds_with_their_own_stage_behaviour():
    assert TILED_KINDS == ("deletion", "mask", "shuffle", "inversion", "duplication")
    assert [k for k, v in KINDS.items() if v.per_base] == ["mutagenesis"]
    assert [k for k, v in KINDS.items() if v.gradients] == ["attribution"]
    assert KINDS["mutagenesis"].rows_per_item == 4 and KINDS["deletion"].rows_per_item == 1
    # every kind that replaces a segment can build it; the others are built by their own stage
    assert {k for k, v in KINDS.items() if v.alternative is None} == {"mutagenesis", "attribution", "rearrangement"}
    assert [k for k, v in KINDS.items() if v.placement == "rearrangement"] == ["rearrangement"]


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="unknown perturbation kind 'translocation'"):
        kind_of(type("Analysis", (), {"kind": "translocation"})())


@pytest.fixture
def segment():
    rng = np.random.default_rng(0)
    return rng.integers(0, 4, 40).astype(np.uint8), rng.random((2, 40)).astype(np.float32)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (DeletionSpec(width=10, step=10), lambda c, t: (np.zeros(0, np.uint8), None)),
        (MaskSpec(width=10, step=10, mask_tracks=True), lambda c, t: edits.mask(c[:10], t[:, :10], True)),
        (InversionSpec(width=10, step=10), lambda c, t: edits.invert(c[:10], t[:, :10])),
        (ShuffleSpec(width=10, step=10, seed=5),
         lambda c, t: (edits.dinucleotide_shuffle(c[:10], np.random.default_rng([5, 1234])), t[:, :10])),
    ],
    ids=lambda value: getattr(value, "kind", ""),
)
def test_tiled_alternatives_are_the_pure_edits_of_width_bp(segment, spec, expected):
    codes, tracks = segment
    ref_length, alt_codes, alt_tracks = kind_of(spec).alternative(spec, codes, tracks, 1234, None)
    want_codes, want_tracks = expected(codes, tracks)
    assert ref_length == 10
    np.testing.assert_array_equal(alt_codes, want_codes)
    if want_tracks is None:
        assert alt_tracks is None
    else:
        np.testing.assert_array_equal(alt_tracks, want_tracks)


def test_only_deletions_pull_downstream_sequence_into_the_window():
    deletion, inversion = DeletionSpec(width=30, step=30), InversionSpec(width=30, step=30)
    assert kind_of(deletion).downstream(deletion, None) == 30
    assert kind_of(inversion).downstream(inversion, None) == 0
    variant = type("Variant", (), {"ref_length": 12, "alt_length": 2})()
    assert KINDS["variants"].downstream(None, variant) == 10
