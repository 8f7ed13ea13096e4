import json

import pytest
import yaml

from screening.spec import ScreenSpec, SpecError, load_spec, parse_spec


def minimal(**changes):
    raw = {
        "model": {"checkpoint": "model.ckpt"},
        "genome": {"fasta": "genome.fa"},
        "tracks": [{"name": "ctcf", "path": "ctcf.bw"}, {"name": "atac", "path": "atac.bw", "transform": "log1p"}],
        "regions": ["chr1:1,400,000-1,420,000"],
        "perturbations": [{"kind": "deletion", "width": 1000, "step": 1000}],
        "output": {"store": "out.zarr"},
    }
    raw.update(changes)
    return raw


def test_minimal_spec_defaults_and_paths(tmp_path):
    spec = parse_spec(minimal(), base_dir=tmp_path)
    assert spec.genome.fasta == str(tmp_path / "genome.fa")
    assert spec.output.store == str(tmp_path / "out.zarr")
    assert spec.perturbations[0].label == "deletion_1000bp"
    assert spec.perturbations[0].padding == "zero"
    assert spec.perturbations[0].scores == ("impact_mean_abs", "impact_abs_mean")
    assert spec.execution.address is None


def test_load_yaml_and_json_agree(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(minimal()))
    (tmp_path / "s.json").write_text(json.dumps(minimal()))
    assert load_spec(tmp_path / "s.yaml") == load_spec(tmp_path / "s.json")


def test_science_hash_ignores_execution_and_output(tmp_path):
    a = parse_spec(minimal(), base_dir=tmp_path)
    b = parse_spec(minimal(execution={"num_workers": 4}, output={"store": "other.zarr"}), base_dir=tmp_path)
    c = parse_spec(minimal(regions=["chr1:1,400,000-1,430,000"]), base_dir=tmp_path)
    assert a.science_hash() == b.science_hash() != c.science_hash()


def test_science_hash_skips_defaults_but_not_the_kind(tmp_path):
    implicit = parse_spec(minimal(), base_dir=tmp_path)
    explicit = parse_spec(
        minimal(perturbations=[{"kind": "deletion", "width": 1000, "step": 1000, "padding": "zero"}]), base_dir=tmp_path
    )
    mask = parse_spec(minimal(perturbations=[{"kind": "mask", "width": 1000, "step": 1000}]), base_dir=tmp_path)
    follow = parse_spec(
        minimal(perturbations=[{"kind": "deletion", "width": 1000, "step": 1000, "padding": "follow"}]), base_dir=tmp_path
    )
    assert implicit.science_hash() == explicit.science_hash()
    assert len({implicit.science_hash(), mask.science_hash(), follow.science_hash()}) == 3


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"perturbations": [{"kind": "deletion", "width": 0, "step": 1000}]}, "perturbations.0.deletion.width"),
        ({"perturbations": [{"kind": "deletion", "width": 10, "step": -1}]}, "perturbations.0.deletion.step"),
        ({"perturbations": [{"kind": "explode", "width": 10}]}, "perturbations.0"),
        ({"perturbations": []}, "perturbations"),
        ({"regions": ["chr1:20-10"]}, "regions"),
        ({"regions": [], "bed": None}, "give 'regions'"),
        ({"model": {}}, "model"),
        ({"model": {"checkpoint": "a", "random_seed": 1}}, "exactly one"),
        ({"tracks": [{"name": "ctcf", "path": "x", "transform": "sqrt"}]}, "tracks.0.transform"),
        ({"execution": {"num_workers": 0}}, "execution.num_workers"),
        ({"output": {}}, "output.store"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_malformed_spec_names_the_field(tmp_path, changes, field):
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_spec(minimal(**changes), base_dir=tmp_path)


def test_load_spec_missing_and_not_yaml(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(bad)


def test_overrides(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(minimal()))
    spec = load_spec(tmp_path / "s.yaml", {"execution.num_workers": 3, "output.store": "/abs/x.zarr"})
    assert spec.execution.num_workers == 3 and spec.output.store == "/abs/x.zarr"


def test_example_configs_validate():
    from pathlib import Path

    for path in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")):
        assert isinstance(load_spec(path), ScreenSpec), path
