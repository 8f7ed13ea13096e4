import json
import re

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


# --- strict numbers, analysis names, attribution settings, region lists, unreadable files ------------


@pytest.mark.parametrize(
    "changes, field, given",
    [
        ({"perturbations": [{"kind": "deletion", "width": True, "step": 1000}]}, "perturbations.0.deletion.width", "true (a boolean)"),
        ({"perturbations": [{"kind": "deletion", "width": 1000, "step": 1000.0}]}, "perturbations.0.deletion.step", "1000.0"),
        ({"perturbations": [{"kind": "deletion", "width": "1000", "step": 1000}]}, "perturbations.0.deletion.width", "'1000'"),
        ({"execution": {"num_workers": False}}, "execution.num_workers", "false (a boolean)"),
        ({"execution": {"cpus_per_worker": True}}, "execution.cpus_per_worker", "true (a boolean)"),
        ({"model": {"random_seed": True}}, "model.random_seed", "true (a boolean)"),
    ],
)
def test_numbers_are_strict(tmp_path, changes, field, given):
    with pytest.raises(SpecError, match=rf"{re.escape(field)}: Input should be a valid (integer|number), got {re.escape(given)}"):
        parse_spec(minimal(**changes), base_dir=tmp_path)


def test_yaml_ints_and_ints_for_floats_are_still_taken(tmp_path):
    (tmp_path / "s.yaml").write_text(
        yaml.safe_dump(minimal(execution={"num_workers": 2, "cpus_per_worker": 2, "gpus_per_worker": 0.5}))
    )
    spec = load_spec(tmp_path / "s.yaml")
    assert spec.execution.num_workers == 2 and spec.execution.cpus_per_worker == 2.0


@pytest.mark.parametrize("name", ["del_1kb", "deletion-1000bp", "ctcf.v2", "a+b", "X1"])
def test_analysis_names_that_fit_the_store(tmp_path, name):
    spec = parse_spec(minimal(perturbations=[{"kind": "deletion", "name": name, "width": 1000, "step": 1000}]), base_dir=tmp_path)
    assert spec.perturbations[0].label == name


@pytest.mark.parametrize(
    "name, message",
    [
        ("zarr.json", "a name the result store uses itself"),
        ("Zarr.JSON", "a name the result store uses itself"),
        ("chunk_done", "a name the result store uses itself"),
        ("top_delta", "a name the result store uses itself"),
        (".zattrs", "cannot name an analysis"),
        ("a/b", "cannot name an analysis"),
        ("a..b", "cannot name an analysis"),
        ("two words", "cannot name an analysis"),
        ("__x", "cannot name an analysis"),
    ],
)
def test_analysis_names_the_store_cannot_hold(tmp_path, name, message):
    for kind in ({"kind": "deletion", "width": 1000, "step": 1000}, {"kind": "attribution"}):
        with pytest.raises(SpecError, match=rf"perturbations\.0\.{kind['kind']}\.name: .*{message}"):
            parse_spec(minimal(perturbations=[{**kind, "name": name}]), base_dir=tmp_path)


@pytest.mark.parametrize(
    "settings, field, message",
    [
        ({"method": "integrated_gradients", "n_steps": 1}, "perturbations.0.attribution.n_steps", "greater than or equal to 2"),
        ({"method": "deeplift_shap"}, "perturbations.0.attribution", "baseline: 'zeros' with method deeplift_shap"),
        ({"method": "deeplift_shap", "baseline": "uniform"}, "perturbations.0.attribution", "baseline: 'uniform'"),
        ({"method": "deeplift", "checkpoint": True}, "perturbations.0.attribution", "checkpoint: true with method deeplift"),
    ],
)
def test_attribution_settings_the_method_cannot_run(tmp_path, settings, field, message):
    with pytest.raises(SpecError, match=rf"{re.escape(field)}: .*{re.escape(message)}"):
        parse_spec(minimal(perturbations=[{"kind": "attribution", **settings}]), base_dir=tmp_path)


def test_attribution_settings_the_method_can_run(tmp_path):
    for settings in ({"method": "deeplift_shap", "baseline": "shuffle"}, {"method": "integrated_gradients", "checkpoint": True,
                                                                        "n_steps": 2}):
        parse_spec(minimal(perturbations=[{"kind": "attribution", **settings}]), base_dir=tmp_path)


def test_region_list_split_by_yaml_gets_a_quoting_hint(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(minimal()).replace("regions:\n- chr1:1,400,000-1,420,000\n", "regions: [chr1:1,400,000-1,420,000]\n"))
    with pytest.raises(SpecError, match=re.escape("regions: item 0: 'chr1:1' is not a region; YAML split an unquoted region "
                                                  "at its commas: quote it, e.g. ['chr1:1,400,000-1,420,000']")):
        load_spec(path)


def test_bare_numbers_as_chromosome_names_are_no_split_region(tmp_path):
    spec = parse_spec(minimal(regions=["1", "2:1,000-2,000", "3"]), base_dir=tmp_path)
    assert spec.regions == ["1", "2:1,000-2,000", "3"]


@pytest.mark.parametrize("content, message", [
    (b"\x00\x01\x02binary", "is not text (it holds NUL bytes)"),
    (b"name: \xff\xfe\n", "is not UTF-8 text (byte 6)"),
])
def test_binary_spec_file_is_refused(tmp_path, content, message):
    path = tmp_path / "s.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError, match=rf"spec file {re.escape(str(path))} {re.escape(message)}"):
        load_spec(path)


@pytest.mark.parametrize("text", ["name: " + "[" * 10_000 + "]" * 10_000, "a:\n" + "".join("  " * i + "- \n" for i in range(1, 60))])
def test_deeply_nested_spec_is_refused(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match="nested too deeply"):
        load_spec(path)
    nested: dict = {}
    for _ in range(100):
        nested = {"a": nested}
    with pytest.raises(SpecError, match="nested too deeply"):
        parse_spec(minimal(model=nested), base_dir=tmp_path)


def test_spec_errors_carry_their_fields(tmp_path):
    import pickle

    raw = minimal(perturbations=[{"kind": "deletion", "width": True, "step": -1}], execution={"num_workers": 0})
    with pytest.raises(SpecError) as caught:
        parse_spec(raw, base_dir=tmp_path)
    fields = {f["field"] for f in caught.value.fields}
    assert {"perturbations.0.deletion.width", "perturbations.0.deletion.step", "execution.num_workers"} <= fields
    for f in caught.value.fields:  # the message lists the same fields
        assert f"  {f['field']}: {f['message']}" in str(caught.value)
    again = pickle.loads(pickle.dumps(caught.value))  # as Ray carries it
    assert again.fields == caught.value.fields and str(again) == str(caught.value)
    assert SpecError("execution.address: unreachable").fields == []
