"""Shift and strand averaging (``shifts``, ``strand_average``, ``keep_placements``) of any replacing kind."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import TOY_CONFIG
from screening.compute.engine import perturbed_items, run_unit, stack_spans
from screening.core.encode import reverse_complement
from screening.core.regions import RegionError
from screening.maps.score import score_maps
from screening.models.base import WindowGeometry
from screening.plan import plan_screen
from screening.spec import SpecError, parse_spec

SIZES = {"chr1": 6_000, "chr2": 3_000}
SCORES = ["impact_mean_abs", "mse", "mse_aligned"]


def spec_of(perturbation: dict, regions=("chr1:2,000-2,080",)):
    return parse_spec(
        {
            "model": {"random_seed": 0, "config": TOY_CONFIG},
            "genome": {"fasta": "/x.fa"},
            "regions": list(regions),
            "perturbations": [perturbation],
            "execution": {"chunk_size": 8},
            "output": {"store": "/x.zarr"},
        }
    )


def test_placements_and_stored_scores_of_a_spec():
    plain = spec_of({"kind": "deletion", "width": 20, "step": 20}).perturbations[0]
    assert plain.placements == ((0, False),) and plain.stored_scores == list(plain.scores)
    both = spec_of(
        {
            "kind": "deletion",
            "width": 20,
            "step": 20,
            "scores": ["mse"],
            "shifts": [-64, 0, 64],
            "strand_average": True,
            "keep_placements": True,
        }
    ).perturbations[0]
    assert both.placements == ((-64, False), (-64, True), (0, False), (0, True), (64, False), (64, True))
    assert both.stored_scores == [
        "mse",
        "mse_at-64",
        "mse_at-64_rc",
        "mse_at+0",
        "mse_at+0_rc",
        "mse_at+64",
        "mse_at+64_rc",
    ]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"shifts": [0, 0]}, "distinct shifts"),
        ({"shifts": []}, "distinct shifts"),
        ({"keep_placements": True}, "keep_placements needs shifts or strand_average"),
        ({"strand_average": True, "keep_maps": 2}, "keep_maps with shifts or strand_average"),
    ],
)
def test_bad_placement_settings_are_refused(changes, message):
    with pytest.raises(SpecError, match=message):
        spec_of({"kind": "deletion", "width": 20, "step": 20, **changes})


def test_rearrangements_take_shifts_but_not_keep_maps_with_them():
    spec = spec_of({"kind": "rearrangement", "vcf": "/x.vcf", "shifts": [-10, 10], "strand_average": True}, regions=())
    assert len(spec.perturbations[0].placements) == 4  # scored in tests/test_rearrange.py
    with pytest.raises(SpecError, match="keep_maps with shifts or strand_average"):
        spec_of({"kind": "rearrangement", "vcf": "/x.vcf", "shifts": [-10, 10], "keep_maps": 1}, regions=())


def test_the_plan_checks_every_placement(toy):
    adapter, genome, _ = toy
    near_start = spec_of({"kind": "deletion", "width": 20, "step": 20, "shifts": [-200, 0]}, regions=("chr1:300-320",))
    with pytest.raises(RegionError, match=r"shifted by -200 bp \(shifts\)"):
        plan_screen(near_start, near_start.parsed_regions(), SIZES, adapter.geometry, genome)
    too_far = spec_of(
        {"kind": "deletion", "width": 100, "step": 100, "shifts": [0, 300]}, regions=("chr1:2,000-2,100",)
    )
    with pytest.raises(
        RegionError, match="perturbations.0.shifts: shifted by .* no longer holds the deletion at 2,000-2,100"
    ):
        plan_screen(too_far, too_far.parsed_regions(), SIZES, adapter.geometry, genome)
    stranded = spec_of({"kind": "mask", "width": 20, "step": 20, "strand_average": True})
    with pytest.raises(RegionError, match="perturbations.0.strand_average: the model's map"):
        plan_screen(stranded, stranded.parsed_regions(), SIZES, WindowGeometry(512, 32, 14), genome)
    kept = spec_of(
        {"kind": "mask", "width": 20, "step": 20, "shifts": [-32, 32], "keep_placements": True, "scores": ["mse"]}
    )
    plan = plan_screen(kept, kept.parsed_regions(), SIZES, adapter.geometry, genome)
    assert plan.layouts[0].scores == ["mse", "mse_at-32", "mse_at+32"]
    starts = plan.layouts[0].window_start
    assert plan.windows(512) == {"chr1": [(int(starts.min()) - 32, int(starts.max()) + 32 + 512)]}


def test_scores_are_the_mean_over_shifted_placements(toy, one_thread):
    adapter, genome, tracks = toy
    spec = spec_of(
        {"kind": "deletion", "width": 20, "step": 20, "scores": SCORES, "shifts": [-64, 0, 96], "keep_placements": True}
    ).perturbations[0]
    plain = spec_of({"kind": "deletion", "width": 20, "step": 20, "scores": SCORES}).perturbations[0]
    full = spec_of({"kind": "deletion", "width": 20, "step": 20, "scores": SCORES, "shifts": [-64, 0, 96]})
    payload = plan_screen(full, full.parsed_regions(), SIZES, adapter.geometry, genome).payload(
        plan_screen(full, full.parsed_regions(), SIZES, adapter.geometry, genome).units[0]
    )
    got = run_unit(adapter, genome, tracks, spec, "chr1", payload, batch_size=5).values
    singles = []
    for shift in (-64, 0, 96):
        shifted = {**payload, "window_start": payload["window_start"] + shift}
        singles.append(run_unit(adapter, genome, tracks, plain, "chr1", shifted, batch_size=3).values)
        for name in SCORES:
            np.testing.assert_allclose(got[f"{name}_at{shift:+d}"], singles[-1][name], rtol=1e-4, atol=1e-9)
    for name in SCORES:
        np.testing.assert_allclose(got[name], np.mean([s[name] for s in singles], axis=0), rtol=1e-4, atol=1e-9)
    assert not np.allclose(singles[0]["impact_mean_abs"], singles[2]["impact_mean_abs"])  # the placements differ


def test_the_reverse_strand_is_predicted_reverse_complemented_and_flipped_back(toy, one_thread):
    adapter, genome, tracks = toy
    spec = spec_of(
        {
            "kind": "inversion",
            "width": 40,
            "step": 40,
            "scores": SCORES,
            "strand_average": True,
            "keep_placements": True,
        }
    )
    plan = plan_screen(spec, spec.parsed_regions(), SIZES, adapter.geometry, genome)
    payload = plan.payload(plan.units[0])
    got = run_unit(adapter, genome, tracks, spec.perturbations[0], "chr1", payload, batch_size=4).values
    perturbed, reference = next(perturbed_items(spec.perturbations[0], genome, tracks, "chr1", payload, 512))
    spans = [reference, perturbed.span]
    codes, values = stack_spans(spans)
    maps = adapter.predict(np.stack([reverse_complement(c) for c in codes]), values[:, :, ::-1].copy())[:, ::-1, ::-1]
    from screening.maps.align import bin_alignment

    alignment = bin_alignment(perturbed.edit.offset, 40, 40, 32, 16)
    expected = score_maps(maps[:1], maps[1:], SCORES, [alignment])
    for name in SCORES:
        assert got[f"{name}_at+0_rc"][0] == pytest.approx(float(expected[name][0]), rel=1e-4, abs=1e-9), name
        np.testing.assert_allclose(got[name], (got[f"{name}_at+0"] + got[f"{name}_at+0_rc"]) / 2, rtol=1e-5, atol=1e-9)
    assert not np.allclose(got["impact_mean_abs_at+0"], got["impact_mean_abs_at+0_rc"])  # a random model: not symmetric


def test_each_placement_predicts_its_shared_reference_once(toy, monkeypatch, one_thread):
    adapter, genome, tracks = toy
    spec = spec_of(
        {
            "kind": "mask",
            "width": 20,
            "step": 20,
            "window": "shared",
            "scores": ["mse"],
            "shifts": [-32, 32],
            "strand_average": True,
        }
    )
    plan = plan_screen(spec, spec.parsed_regions(), SIZES, adapter.geometry, genome)
    payload = plan.payload(plan.units[0])
    assert len(payload["start"]) == 4 and len(np.unique(payload["window_start"])) == 1
    sizes = []
    original = adapter.predict_maps
    monkeypatch.setattr(adapter, "predict_maps", lambda x: sizes.append(len(x)) or original(x))
    run_unit(adapter, genome, tracks, spec.perturbations[0], "chr1", payload, batch_size=8)
    assert sum(sizes) == 4 * (1 + 4)  # 4 placements x (one reference + 4 masks): placements x today's cost
