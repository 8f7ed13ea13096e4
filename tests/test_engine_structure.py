"""SuPreMo's structural scores (ssi, scc, di_mse, decay_mse, triangle_mse, pc1_mse) through specs, the engine and a
whole screen on the toy model."""

import numpy as np
import pytest

from screening.spec import parse_spec

from helpers import toy_spec_dict

STRUCTURAL = ("ssi", "scc", "insulation_mse", "di_mse", "decay_mse", "triangle_mse", "pc1_mse")
NAMES = STRUCTURAL + tuple(name + "_aligned" for name in STRUCTURAL)


def deletion_spec(scores=NAMES, **changes):
    raw = {"kind": "deletion", "width": 20, "step": 40, "scores": list(scores), "insulation_window": 3, **changes}
    return parse_spec(
        {
            "model": {"random_seed": 0},
            "genome": {"fasta": "/x.fa"},
            "regions": ["chr1:2,000-2,200"],
            "perturbations": [raw],
            "output": {"store": "/x.zarr"},
        }
    ).perturbations[0]


def test_specs_select_the_structural_scores():
    assert deletion_spec().scores == NAMES
    with pytest.raises(ValueError, match="unknown score"):
        deletion_spec(scores=["ssim"])


def unit_payload(spec):
    from screening.core.regions import parse_region
    from screening.models.base import WindowGeometry
    from screening.plan import plan_screen

    class FakeGenome:
        def fetch(self, chrom, start, end):
            return np.zeros(end - start, np.uint8)

    full = parse_spec(
        {
            "model": {"random_seed": 0},
            "genome": {"fasta": "/x.fa"},
            "regions": ["chr1:2,000-2,200"],
            "perturbations": [spec.model_dump()],
            "execution": {"chunk_size": 1000},
            "output": {"store": "/x.zarr"},
        }
    )
    plan = plan_screen(
        full, [parse_region(full.regions[0])], {"chr1": 6_000}, WindowGeometry(512, 32, 16), FakeGenome()
    )
    return plan.payload(plan.units[0])


def test_engine_scores_equal_numpy_on_the_same_maps(toy, monkeypatch, one_thread):
    """The engine computes the torch twins where the maps are; numpy's score_maps of the same maps, alignments and
    context (the spec's insulation_window is the DI window) agrees, and every score is finite on the toy maps."""
    from screening.compute import engine
    from screening.compute.engine import run_unit
    from screening.maps.align import BinAlignment
    from screening.maps.score import score_maps

    adapter, genome, tracks = toy
    spec = deletion_spec()
    original, contexts = engine.score_tensors, []

    def both(reference, perturbed, names, index, context):
        got = original(reference, perturbed, names, index, context)
        alignments = [BinAlignment(np.flatnonzero(row >= 0), row[row >= 0], len(row)) for row in np.asarray(index)]
        want = score_maps(reference.cpu().numpy(), perturbed.cpu().numpy(), names, alignments, context)
        for name in names:
            np.testing.assert_allclose(got[name].cpu().numpy(), want[name], rtol=1e-9, atol=1e-12, err_msg=name)
        contexts.append(context)
        return got

    monkeypatch.setattr(engine, "score_tensors", both)
    values = run_unit(adapter, genome, tracks, spec, "chr1", unit_payload(spec), batch_size=3).values
    assert contexts and all(c["window"] == 3 for c in contexts)
    for name in NAMES:
        assert values[name].shape == (5,) and np.isfinite(values[name]).all(), name
    assert (np.abs(values["ssi"]) <= 1).all() and (np.abs(values["scc"]) <= 1).all()
    for name in STRUCTURAL[2:]:
        assert (values[name] >= 0).all() and (values[name] > 0).any(), name


def test_a_screen_stores_the_structural_scores(ray_session, toy_paths, tmp_path):
    """spec → plan → Ray workers → store → query, with every structural score asked for."""
    import yaml

    from screening import open_results
    from screening.spec import load_spec
    from workers.driver import run_screen

    raw = toy_spec_dict(toy_paths, tmp_path / "structure.zarr", regions=["chr1:2,000-2,160"])
    raw["perturbations"] = [
        {"kind": "deletion", "name": "del20", "width": 20, "step": 40, "scores": list(NAMES), "insulation_window": 3}
    ]
    path = tmp_path / "structure.yaml"
    path.write_text(yaml.safe_dump(raw))
    summary = run_screen(load_spec(path), progress=False)
    assert summary.n_perturbations == 4
    table = open_results(tmp_path / "structure.zarr").query("chr1").compute()
    for name in NAMES:
        assert name in table.data_vars and np.isfinite(table[name].values).all(), name
    assert (table["ssi"].values <= 1).all() and (table["pc1_mse"].values >= 0).all()
