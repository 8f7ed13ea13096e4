"""Service pieces that need no Ray: settings, tokens, the path policy and the wire format."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import xarray as xr

from screening.service.auth import TokenStore, digest, read_token_file
from screening.service.config import ConfigError, ServiceConfig
from screening.service.policy import PolicyError, check_input, place_store, server_spec
from screening.service.wire import dataset_from_arrow, dataset_from_json, dataset_to_arrow, dataset_to_json
from screening.spec import SpecError

from helpers import toy_spec_dict, write_file_writer


@pytest.fixture
def roots(tmp_path):
    stores, inputs = tmp_path / "stores", tmp_path / "inputs"
    stores.mkdir()
    inputs.mkdir()
    return stores, inputs


def config_for(stores, inputs, **changes) -> ServiceConfig:
    args = {"store_roots": [str(stores)], "input_roots": [str(inputs)], **changes}
    return ServiceConfig.from_args(args, environ={"SCREENING_API_TOKENS": "t1"})


# --------------------------------------------------------------------------- settings


def test_settings_from_args_and_environment(roots, tmp_path):
    stores, inputs = roots
    tokens = tmp_path / "tokens"
    tokens.write_text("# comment\nalpha\n\n beta \n")
    env = {"SCREENING_STORE_ROOTS": f"{stores},s3://bucket/screens/", "SCREENING_TOKEN_FILE": str(tokens),
           "SCREENING_MAX_PERTURBATIONS": "1234"}
    config = ServiceConfig.from_args({"max_spec_bytes": 999}, environ=env)
    assert config.store_roots == (os.path.realpath(stores), "s3://bucket/screens")
    assert config.input_roots == config.store_roots  # default: read inputs from the store roots
    assert config.registry == os.path.realpath(stores) + "/.screening-jobs"
    assert config.max_perturbations == 1234 and config.max_spec_bytes == 999
    assert set(config.token_digests) == {digest("alpha"), digest("beta")}
    assert "alpha" not in repr(config.to_dict())  # only digests travel to the replicas
    assert ServiceConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "args, env, message",
    [
        ({}, {"SCREENING_API_TOKENS": "t"}, "store_roots: give at least one"),
        ({"store_roots": "/tmp"}, {}, "no API tokens"),
        ({"store_roots": "/tmp", "max_perturbations": "many"}, {"SCREENING_API_TOKENS": "t"}, "max_perturbations"),
        ({"store_roots": "/tmp", "max_query_rows": -1}, {"SCREENING_API_TOKENS": "t"}, "must be positive"),
        ({"store_roots": "/tmp", "colour": "red"}, {"SCREENING_API_TOKENS": "t"}, "unknown service setting"),
        ({"store_roots": "http://example.com/x"}, {"SCREENING_API_TOKENS": "t"}, "scheme 'http' is not allowed"),
        ({"store_roots": "s3://bucket/../other"}, {"SCREENING_API_TOKENS": "t"}, "not a clean"),
        ({"store_roots": "/tmp", "allow_user_code": "perhaps"}, {"SCREENING_API_TOKENS": "t"}, "allow_user_code"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(args, env, message):
    with pytest.raises(ConfigError, match=message):
        ServiceConfig.from_args(args, environ=env)


# --------------------------------------------------------------------------- tokens


def test_token_store_checks_digests_and_follows_the_token_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("first\n")
    store = TokenStore((digest("built"),), str(path), env_tokens="from-env")
    assert store.valid("first") and store.valid("from-env")
    assert not store.valid("built")  # the file is readable here: it, not the build-time set, decides
    assert not store.valid("") and not store.valid(None) and not store.valid("firs")
    path.write_text("second\n# first is revoked\n")
    os.utime(path, (1, 1))  # a new mtime even within the same second
    assert store.valid("second") and not store.valid("first")
    path.unlink()
    assert store.valid("built")  # unreadable here: the digests known at build time
    path.write_text("# only comments\n\n")
    assert read_token_file(path) == []


# --------------------------------------------------------------------------- stores and inputs


def test_relative_and_absent_stores_go_under_the_first_root(roots):
    stores, _ = roots
    real = os.path.realpath(stores)
    assert place_store("screen.zarr", (real,), "id.zarr") == f"{real}/screen.zarr"
    assert place_store("team/a.zarr", (real,), "id.zarr") == f"{real}/team/a.zarr"
    assert place_store(None, (real,), "id.zarr") == f"{real}/id.zarr"
    assert place_store(f"{real}/x.zarr", (real,), "id.zarr") == f"{real}/x.zarr"
    assert place_store("x.zarr", ("s3://bucket/screens",), "id.zarr") == "s3://bucket/screens/x.zarr"
    assert place_store("s3://bucket/screens/y.zarr", ("s3://bucket/screens",), "i") == "s3://bucket/screens/y.zarr"


@pytest.mark.parametrize(
    "store",
    ["../escape.zarr", "a/../../escape.zarr", "/etc/escape.zarr", "s3://other-bucket/x.zarr",
     "s3://bucket/screensX/x.zarr", "s3://bucket/screens/../x.zarr", "http://example.com/x.zarr",
     "file:///etc/x.zarr", "", "link/x.zarr", ".", 42, "a\x00b", ".screening-jobs/x.zarr",
     "other.zarr.screening-lock"],
)
def test_stores_outside_the_roots_are_refused(roots, store):
    stores, _ = roots
    real = os.path.realpath(stores)
    (stores / "link").symlink_to("/tmp")  # a symlink inside the root that leaves it
    with pytest.raises(PolicyError) as caught:
        place_store(store, (real, "s3://bucket/screens"), "id.zarr", registry=f"{real}/.screening-jobs")
    assert caught.value.field == "output.store"


def test_inputs_must_lie_under_the_input_roots(roots):
    _, inputs = roots
    real = os.path.realpath(inputs)
    (inputs / "g.fa").write_text(">c\nA\n")
    assert check_input("genome.fasta", "g.fa", (real,)) == f"{real}/g.fa"
    for bad in ("/etc/passwd", "../g.fa", "s3://bucket/g.fa"):
        with pytest.raises(PolicyError, match="genome.fasta"):
            check_input("genome.fasta", bad, (real,))


def test_server_spec_places_the_store_and_names_refused_fields(roots, toy_paths):
    stores, inputs = roots
    for name in ("fasta", "ctcf", "atac"):
        shutil.copy(toy_paths[name], inputs / toy_paths[name].name)  # copies: a symlink out of the root is refused
    config = config_for(stores, inputs, max_workers=2)
    raw = toy_spec_dict({k: v.name for k, v in toy_paths.items()}, "mine.zarr")
    raw["execution"]["address"] = "ray://elsewhere:10001"
    raw["execution"]["metrics_port"] = 9100
    spec = server_spec(raw, config, "0" * 32)
    assert spec.output.store == f"{os.path.realpath(stores)}/mine.zarr"
    assert spec.genome.fasta == os.path.realpath(inputs / "toy.fa")  # relative → first input root
    assert spec.execution.address is None and spec.execution.metrics_port is None

    def refused(change, field):
        bad = toy_spec_dict({k: v.name for k, v in toy_paths.items()}, "mine.zarr")
        change(bad)
        with pytest.raises(PolicyError) as caught:
            server_spec(bad, config, "0" * 32)
        assert caught.value.field == field, caught.value

    refused(lambda r: r["tracks"][1].update(path="/etc/hosts"), "tracks.1.path")
    refused(lambda r: r.update(bed="../x.bed"), "bed")
    refused(lambda r: r["execution"].update(num_workers=3), "execution.num_workers")
    refused(lambda r: r["output"].update(storage_options={"client_kwargs": {"endpoint_url": "http://x"}}),
            "output.storage_options")
    refused(lambda r: r["model"].update(kind="user", import_path="subprocess:run"), "model.import_path")
    refused(lambda r: r.update(output="x.zarr"), "output")
    with pytest.raises(PolicyError, match="top level"):
        server_spec(["not", "a", "mapping"], config, "0" * 32)
    bad = toy_spec_dict({k: v.name for k, v in toy_paths.items()}, "mine.zarr")
    bad["perturbations"][0]["width"] = -5
    with pytest.raises(SpecError, match="width"):
        server_spec(bad, config, "0" * 32)


def test_user_code_comes_only_from_the_specs_python_path(roots, toy_paths):
    stores, inputs = roots
    for name in ("fasta", "ctcf", "atac"):
        shutil.copy(toy_paths[name], inputs / toy_paths[name].name)
    (inputs / "models").mkdir()
    (inputs / "models" / "lab_model_xyz.py").write_text("def build():\n    pass\n")
    config = config_for(stores, inputs, allow_user_code=True)

    def outcome(import_path, python_path):
        raw = toy_spec_dict({k: v.name for k, v in toy_paths.items()}, "mine.zarr")
        raw["model"].update(kind="user", import_path=import_path, python_path=python_path)
        try:
            server_spec(raw, config, "0" * 32)
        except PolicyError as err:
            return err.field, str(err)
        except SpecError:
            return "passed the policy", ""  # the toy model section is not a valid user model: policy let it through
        return "passed the policy", ""

    assert outcome("lab_model_xyz:build", ["models"])[0] == "passed the policy"
    for import_path, python_path, said in [
        ("subprocess:run", ["models"], "module of the server"),
        ("screening.cli:main", ["models"], "module of the server"),
        ("lab_model_xyz:build", [], "no module"),
    ]:
        field, message = outcome(import_path, python_path)
        assert field == "model.import_path" and said in message, (import_path, message)


# --------------------------------------------------------------------------- wire format


def sample_dataset(per_base: bool) -> xr.Dataset:
    n = 5
    scores = np.arange(n * (4 if per_base else 1), dtype=np.float32).reshape((n, 4) if per_base else (n,))
    scores[1] = np.nan
    dims = ("perturbation", "base") if per_base else ("perturbation",)
    coords = {"perturbation": np.arange(n, dtype=np.int64), "start": ("perturbation", np.arange(n) * 10),
              "end": ("perturbation", np.arange(n) * 10 + 1), "id": ("perturbation", np.array(["a", "b", "", "d", "é"]))}
    if per_base:
        coords["base"] = ("base", np.array(list("ACGT")))
    return xr.Dataset({"impact": (dims, scores), "done": ("perturbation", np.array([1, 0, 1, 1, 1], bool))},
                      coords=coords, attrs={"analysis": "a", "chrom": "chr1", "params": {"width": 1, "x": None}, "kind": None})


@pytest.mark.parametrize("per_base", [False, True])
@pytest.mark.parametrize("codec", ["json", "arrow"])
def test_wire_round_trip_keeps_values_dtypes_and_nan(per_base, codec):
    import json

    ds = sample_dataset(per_base)
    if codec == "json":
        text = json.dumps(dataset_to_json(ds), allow_nan=False)  # strict JSON: NaN travels as null
        back = dataset_from_json(json.loads(text))
    else:
        back = dataset_from_arrow(dataset_to_arrow(ds))
    xr.testing.assert_identical(back, ds)
    assert back["impact"].dtype == np.float32 and back["start"].dtype == ds["start"].dtype


@pytest.mark.parametrize("codec", ["json", "arrow"])
def test_wire_round_trip_of_an_empty_result(codec):
    ds = sample_dataset(False).isel(perturbation=slice(0, 0))
    back = dataset_from_json(dataset_to_json(ds)) if codec == "json" else dataset_from_arrow(dataset_to_arrow(ds))
    assert back.sizes["perturbation"] == 0 and set(back.data_vars) == {"impact", "done"}


# --------------------------------------------------------------------------- screening serve


def test_serve_refuses_bad_settings_before_starting_ray(tmp_path, monkeypatch, capsys):
    from screening.cli import main

    for name in ("SCREENING_STORE_ROOTS", "SCREENING_API_TOKENS", "SCREENING_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["serve"]) == 2
    assert "store_roots: give at least one store root" in capsys.readouterr().err
    assert main(["serve", "--store-root", str(tmp_path)]) == 2
    assert "no API tokens" in capsys.readouterr().err
    assert main(["serve", "--store-root", "ftp://host/x", "--token-file", str(tmp_path / "none")]) == 2
    assert "scheme 'ftp' is not allowed" in capsys.readouterr().err


# --------------------------------------------------------------------------- the job registry


def test_job_registry_keeps_the_latest_record_and_skips_unreadable_ones(tmp_path, caplog):
    from screening.service.jobs import Registry

    registry = Registry(str(tmp_path / "jobs"))
    registry.save({"id": "a" * 32, "state": "running"})
    registry.save({"id": "a" * 32, "state": "completed"})
    registry.save({"id": "b" * 32, "state": "failed"})
    (tmp_path / "jobs" / ("c" * 32 + ".json")).write_text("{truncated")
    records = Registry(str(tmp_path / "jobs")).load_all()
    assert [(r["id"][0], r["state"]) for r in records] == [("a", "completed"), ("b", "failed")]
    assert "skipping unreadable job record" in caplog.text
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["a" * 32 + ".json", "b" * 32 + ".json", "c" * 32 + ".json"]


def test_job_registry_on_object_storage():
    from moto_s3 import s3_server

    from screening.service.jobs import Registry

    with s3_server(("bucket",)):
        registry = Registry("s3://bucket/screens/.screening-jobs")
        registry.save({"id": "a" * 32, "state": "running"})
        registry.save({"id": "a" * 32, "state": "interrupted"})
        assert Registry("s3://bucket/screens/.screening-jobs").load_all() == [{"id": "a" * 32, "state": "interrupted"}]


# --------------------------------------------------------------------------- hostile inputs (reliability issue)


def test_torchscript_is_refused_without_user_code_whatever_its_name(roots, toy_paths, tmp_path):
    stores, inputs = roots
    for name in ("fasta", "ctcf", "atac"):
        shutil.copy(toy_paths[name], inputs / toy_paths[name].name)
    target = tmp_path / "outside.bin"
    target.write_bytes(b"safe")
    write_file_writer(inputs / "weights.ckpt", target)  # TorchScript behind a state-dict name
    config = config_for(stores, inputs)

    def refusal(model):
        raw = toy_spec_dict({k: v.name for k, v in toy_paths.items()}, "mine.zarr")
        raw["model"] = model
        with pytest.raises(PolicyError) as caught:
            server_spec(raw, config, "0" * 32)
        return caught.value

    declare = {"window_length": 512, "bin_size": 32, "n_bins": 16, "input_layout": "NCL", "alphabet": "ACGT",
               "n_value": 0.25}
    for model in ({"kind": "user", "checkpoint": "weights.ckpt", "declare": declare},
                  {"kind": "user", "checkpoint": "absent.pt", "declare": declare},  # TorchScript by its kind alone
                  {"kind": "corigami", "checkpoint": "weights.ckpt"},
                  {"kind": "orca", "checkpoint": "weights.ckpt"}):
        error = refusal(model)
        assert error.field == "model.checkpoint" and "allow_user_code" in error.message, (model, error)
    assert target.read_bytes() == b"safe"  # never loaded, never run

    allowed = config_for(stores, inputs, allow_user_code=True)
    raw = toy_spec_dict({k: v.name for k, v in toy_paths.items()}, "mine.zarr")
    raw["model"] = {"kind": "user", "checkpoint": "weights.ckpt", "declare": declare}
    assert server_spec(raw, allowed, "0" * 32).model.checkpoint == os.path.realpath(inputs / "weights.ckpt")


def test_corigami_loader_never_runs_a_torchscript_checkpoint(tmp_path, monkeypatch):
    """Even past the policy (user code allowed), kind corigami reads weights only: TorchScript is refused
    before torch sees it (torch.load(weights_only=True) would hand it to torch.jit.load, which runs its
    TorchScript while loading)."""
    import torch

    from screening.models.base import ModelError
    from screening.models.checkpoint import read_state_dict

    target = tmp_path / "outside.bin"
    target.write_bytes(b"safe")
    write_file_writer(tmp_path / "model.pt", target)

    def never(*args, **kwargs):
        raise AssertionError("torch.jit.load was called on a checkpoint")

    monkeypatch.setattr(torch.jit, "load", never)
    with pytest.raises(ModelError, match=r"model.pt: a TorchScript archive, not a checkpoint of weights"):
        read_state_dict(tmp_path / "model.pt")
    assert target.read_bytes() == b"safe"


def test_another_screens_store_is_never_overwritten():
    from screening.service.jobs import store_conflict

    records = [{"id": "a" * 32, "store": "/s/done.zarr", "state": "completed"},
               {"id": "b" * 32, "store": "/s/run.zarr", "state": "running"},
               {"id": "c" * 32, "store": "s3://b/x/failed.zarr", "state": "failed"}]
    for store, overwrite, who in [("/s/done.zarr", True, "a"), ("/s/run.zarr", False, "b"), ("/s/run.zarr", True, "b"),
                                  ("s3://b/x/failed.zarr", True, "c"), ("/s/done.zarr/inner.zarr", False, "a"),
                                  ("s3://b/x", False, "c")]:
        conflict = store_conflict(store, overwrite, records)
        assert conflict and conflict.startswith("output.store:") and who * 32 in conflict, (store, conflict)
    assert store_conflict("/s/done.zarr", False, records) is None  # the same spec again finds every chunk done
    assert store_conflict("/s/new.zarr", True, records) is None
    assert store_conflict("/s/done.zarr2", True, records) is None  # a name prefix is not a folder


@pytest.mark.parametrize("media", ["application/yaml", "application/json"])
def test_deeply_nested_bodies_are_refused_before_parsing_them_whole(media):
    from fastapi import HTTPException

    from screening.service.api import MAX_BODY_DEPTH, _parse_body

    n = 50_000  # 100 KB: the old full YAML parse took ~1 min, quadratic in the depth
    bodies = ["a: " + "[" * n + "]" * n, '{"a": ' + "[" * n + "]" * n + "}",
              '{"a":' * (MAX_BODY_DEPTH + 1) + "1" + "}" * (MAX_BODY_DEPTH + 1)]
    for body in bodies:
        if media == "application/json" and body.startswith("a:"):
            continue
        with pytest.raises(HTTPException) as caught:
            _parse_body(body.encode(), media)
        assert caught.value.status_code == 400 and "nested deeper" in caught.value.detail["detail"], body[:40]
    spec = toy_spec_dict({"fasta": "g.fa", "ctcf": "c.bw", "atac": "a.bw"}, "x.zarr")
    import json

    import yaml

    assert _parse_body(yaml.safe_dump(spec).encode(), media) == spec if media.endswith("yaml") else True
    assert _parse_body(json.dumps(spec).encode(), "application/json") == spec


def test_failures_inside_workers_are_reported_as_the_users_message():
    import ray

    from screening.models.base import ModelError
    from screening.service.jobs import failure_message

    def wrapped(cause: Exception) -> Exception:
        trace = ('Traceback (most recent call last):\n  File "/srv/.venv/lib/python3.11/site-packages/workers/'
                 'screen_worker.py", line 9, in run\n\x1b[36mray::ScreenWorker.run()\x1b[39m\n' + repr(cause))
        return ray.exceptions.RayTaskError("run", trace, cause, proctitle="ray::ScreenWorker", pid=1,
                                           ip="127.0.0.1").as_instanceof_cause()

    user = failure_message(wrapped(ModelError("checkpoint /in/m.pt: \x1b[31mnot a model\x1b[0m")))
    assert user == "checkpoint /in/m.pt: not a model"
    other = failure_message(wrapped(KeyError("boom in /srv/.venv/lib/python3.11/site-packages/torch/nn/x.py")))
    assert other == "KeyError: 'boom in x.py'"
    for text in (user, other):
        assert "\x1b" not in text and "Traceback" not in text and "site-packages" not in text
    died = ray.exceptions.ActorDiedError()
    assert failure_message(died).startswith("a Ray worker died (ActorDiedError)")


def test_serve_refuses_an_unreachable_ray_address_at_once(tmp_path, monkeypatch, capsys):
    import ray

    from screening.cli import main

    monkeypatch.setenv("SCREENING_API_TOKENS", "t1")
    assert main(["serve", "--store-root", str(tmp_path), "--address", "127.0.0.1:1"]) == 2
    assert "--address: cannot reach Ray at 127.0.0.1:1" in capsys.readouterr().err
    assert not ray.is_initialized()
