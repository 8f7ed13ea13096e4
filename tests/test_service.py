"""The real Serve application on 127.0.0.1: screens submitted, followed, cancelled, resumed and queried
through the Python client and the CLI; auth, path policy and limits; an OpenAPI-driven fuzz.

Serve starts once for the module (about 15 s on 2 cores); every screen is the seconds-long toy screen.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
import xarray as xr
import yaml

from screening import Client, open_results
from screening.cli import main
from screening.client import ScreenFailedError, ServiceError
from screening.store.export import to_bedgraph, to_bigwig

from helpers import (
    free_port,
    prometheus_naming_problems,
    promtool_problems,
    separate_ray,
    toy_spec_dict,
    write_file_writer,
    write_toy_genome,
)

TOKEN = "test-token-0123456789"
LIMITS = {"max_spec_bytes": 20_000, "max_perturbations": 2_000, "max_json_rows": 12, "max_workers": 2}




def wait_until(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def service(tmp_path_factory, one_thread):
    """Serve on a Ray of its own: 3 CPUs (the job actor, up to ``max_workers`` workers and the replica), and
    the service's detached actors (job manager, screen jobs) end with it instead of outliving the module."""
    from ray import serve

    from screening.service.app import build_app

    base = tmp_path_factory.mktemp("service")
    inputs = base / "inputs"
    paths = write_toy_genome(inputs)
    (base / "stores").mkdir()
    (base / "tokens").write_text(f"# tokens of the test service\n{TOKEN}\n")
    port = free_port()
    with separate_ray(num_cpus=3):
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            app = build_app({"store_roots": [str(base / "stores")], "input_roots": [str(inputs)],
                             "token_file": str(base / "tokens"), **LIMITS})
            serve.run(app, name="screening", route_prefix="/")
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: httpx.get(f"{url}/healthz", timeout=10).status_code == 200, 120, "/healthz")
            yield {"url": url, "base": base, "paths": paths, "stores": base / "stores"}
        finally:
            serve.shutdown()


@pytest.fixture(scope="module")
def client(service):
    with Client(service["url"], TOKEN, timeout=300) as c:
        yield c


def toy_spec(service, store: str | None, **changes) -> dict:
    spec = toy_spec_dict(service["paths"], store or "unused", **changes)
    if store is None:
        del spec["output"]
    return spec


def long_spec(service, store: str) -> dict:
    """A few hundred perturbations in small units: long enough to cancel or restart things mid-way."""
    spec = toy_spec(service, store, regions=["chr1:300-5,700"])
    spec["perturbations"][0].update(step=10)
    spec["execution"].update(chunk_size=8, batch_size=1)
    return spec


@pytest.fixture(scope="module")
def finished(service, client):
    """One toy screen submitted with the client and followed to the end."""
    screen = client.submit(toy_spec(service, "e2e.zarr"))
    status = screen.wait(timeout=300, progress=False)
    return screen, status


# --------------------------------------------------------------------------- the full path


def test_full_screen_through_the_client(service, finished):
    screen, status = finished
    assert status["state"] == "completed" and status["errors"] == []
    assert status["store"] == str(Path(service["stores"]).resolve() / "e2e.zarr")
    progress = status["progress"]
    assert progress["units_done"] == progress["units_total"] == status["n_units"] == 8
    assert progress["perturbations_done"] == progress["perturbations_total"] == status["n_perturbations"] == 30
    assert progress["rate"] > 0 and progress["eta_s"] == 0

    local = open_results(status["store"])
    assert local.is_complete
    for region in ("chr1:2,000-2,400", "chr2:1,000-1,200"):
        remote = screen.query(region)  # Arrow by default
        expected = local.query(region).compute()
        # the same Dataset as a local query (tests/test_client_query.py checks dtypes and backing in detail)
        assert type(remote["impact_mean_abs"].data) is type(local.query(region)["impact_mean_abs"].data)
        xr.testing.assert_identical(remote.compute(), expected)
        np.testing.assert_array_equal(remote["start"].values, expected["start"].values)
        np.testing.assert_array_equal(remote["impact_mean_abs"].values, expected["impact_mean_abs"].values)
        assert remote["done"].values.all() and remote.attrs["analysis"] == "del20"
    small = screen.query("chr1:2,000-2,100", format="json")
    expected = local.query("chr1:2,000-2,100").compute()
    assert small.sizes["perturbation"] == 5
    np.testing.assert_array_equal(small["impact_abs_mean"].values, expected["impact_abs_mean"].values)
    info = screen.info()
    assert info["complete"] and info["analyses"] == {"del20": ["impact_mean_abs", "impact_abs_mean"]}
    assert info["chromosomes"] == {"chr1": 6000, "chr2": 3000}


def test_exports_match_local_exports(finished, tmp_path):
    screen, status = finished
    remote = screen.to_bedgraph(tmp_path / "remote.bedGraph")
    local = to_bedgraph(status["store"], tmp_path / "local.bedGraph", score="impact_mean_abs")
    assert remote.read_text() == local.read_text() and len(local.read_text().splitlines()) == 30
    screen.to_bigwig(tmp_path / "remote.bw", score="impact_abs_mean", region="chr2")
    to_bigwig(status["store"], tmp_path / "local.bw", score="impact_abs_mean", region="chr2")
    assert (tmp_path / "remote.bw").read_bytes() == (tmp_path / "local.bw").read_bytes()
    with pytest.raises(ServiceError, match="unknown score 'nope'") as caught:
        screen.to_bedgraph(tmp_path / "bad.bedGraph", score="nope")
    assert caught.value.status == 422 and not (tmp_path / "bad.bedGraph").exists()


def test_listing_status_and_metrics(service, client, finished):
    screen, _ = finished
    listed = client.screens(state="completed")
    assert screen.id in [s["id"] for s in listed]
    assert client.screen(screen.id).last_status["state"] == "completed"
    text = client.request("GET", "/metrics").text
    assert 'screening_screens{state="completed"}' in text
    assert 'screening_http_requests_total{method="GET",route="/screens/{job_id}",status="200"}' in text
    assert 'screening_screens{state="failed"}' in text  # every state, 0 when empty
    assert prometheus_naming_problems(text) == [] and promtool_problems(text) in (None, [])


def test_query_errors_name_the_problem(finished):
    screen, _ = finished
    cases = {
        "chr9:1-10": (422, "chr9"),
        "chr1:5,000-9,000": (422, "chr1"),
        "chr1:x-y": (422, "chr1:x-y"),
        "chr1": (413, "use format=arrow"),  # 20 rows > max_json_rows 12
    }
    for region, (status, words) in cases.items():
        with pytest.raises(ServiceError, match=words) as caught:
            screen.query(region, format="json")
        assert caught.value.status == status
    assert screen.query("chr1", format="arrow").sizes["perturbation"] == 20
    with pytest.raises(ServiceError, match="unknown analysis 'other'"):
        screen.query("chr1:2,000-2,100", analysis="other")


# --------------------------------------------------------------------------- auth


ROUTES = [("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/screens"), ("POST", "/screens"),
          ("GET", "/screens/" + "a" * 32), ("POST", "/screens/" + "a" * 32 + "/cancel"),
          ("POST", "/screens/" + "a" * 32 + "/resume"), ("GET", "/screens/" + "a" * 32 + "/results?region=chr1"),
          ("GET", "/screens/" + "a" * 32 + "/results/info"), ("GET", "/screens/" + "a" * 32 + "/export")]


@pytest.mark.parametrize("method, path", ROUTES)
def test_every_route_but_health_needs_a_valid_token(service, method, path):
    url = service["url"] + path
    missing = httpx.request(method, url, json={}, timeout=30)
    assert missing.status_code == 401 and "missing bearer token" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.request(method, url, json={}, headers={"Authorization": f"Bearer {TOKEN}x"}, timeout=30)
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid bearer token"
    basic = httpx.request(method, url, json={}, auth=("user", TOKEN), timeout=30)
    assert basic.status_code == 401


def test_health_needs_no_token(service):
    response = httpx.get(service["url"] + "/healthz", timeout=30)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_client_errors_carry_the_servers_message(service):
    with Client(service["url"], "wrong") as bad:
        with pytest.raises(ServiceError, match="401: invalid bearer token"):
            bad.screens()
    with Client(f"http://127.0.0.1:{free_port()}", TOKEN) as nowhere:
        with pytest.raises(ServiceError, match="cannot reach") as caught:
            nowhere.screens()
        assert caught.value.status == 0


# --------------------------------------------------------------------------- policy and limits


def refused(client, spec, status=422) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        client.submit(spec)
    assert caught.value.status == status, caught.value
    return caught.value


@pytest.mark.parametrize("store", ["../escape.zarr", "/tmp/escape.zarr", "s3://elsewhere/x.zarr", "https://evil.example/x.zarr"])
def test_stores_outside_the_roots_are_refused(service, client, store):
    error = refused(client, toy_spec(service, store))
    assert error.errors[0]["field"] == "output.store" and "output.store" in error.message
    assert not Path("/tmp/escape.zarr").exists() and not (service["base"] / "escape.zarr").exists()


def test_inputs_outside_the_input_roots_are_refused(service, client):
    spec = toy_spec(service, "x.zarr")
    spec["genome"]["fasta"] = "/etc/passwd"
    assert refused(client, spec).errors[0]["field"] == "genome.fasta"
    spec = toy_spec(service, "x.zarr")
    spec["tracks"][0]["path"] = "../../etc/hosts"
    assert refused(client, spec).errors[0]["field"] == "tracks.0.path"


def test_spec_errors_name_the_field_and_leave_nothing(service, client):
    spec = toy_spec(service, "bad.zarr")
    spec["perturbations"][0]["width"] = 0
    error = refused(client, spec)
    assert any("width" in e["field"] for e in error.errors), error.errors
    bad_region = toy_spec(service, "bad.zarr", regions=["chr1:5,900-7,000"])
    assert "chr1" in refused(client, bad_region).message
    missing = toy_spec(service, "bad.zarr")
    missing["tracks"][0]["path"] = str(service["paths"]["fasta"].parent / "absent.bw")
    assert "absent.bw" in refused(client, missing).message
    assert not (service["stores"] / "bad.zarr").exists()
    assert all(s["store"] != str(service["stores"] / "bad.zarr") for s in client.screens())


def test_a_store_of_another_spec_is_refused_at_submit(service, client, finished):
    other = toy_spec(service, "e2e.zarr")  # the finished screen's store
    other["perturbations"][0]["width"] = 40
    error = refused(client, other)
    assert error.errors[0]["field"] == "output.store" and "another spec" in error.message
    assert open_results(finished[1]["store"]).is_complete  # untouched


def test_oversize_requests_and_screens_are_refused(service, client):
    spec = toy_spec(service, "big.zarr")
    spec["name"] = "x" * (LIMITS["max_spec_bytes"] + 1)
    assert "max_spec_bytes" in refused(client, spec, 413).message
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def chunked():  # no Content-Length: the limit holds on the bytes actually received
        for _ in range(50):
            yield b" " * 1000
    response = httpx.post(service["url"] + "/screens", content=chunked(), headers=headers, timeout=60)
    assert response.status_code == 413
    many = toy_spec(service, "many.zarr", regions=["chr1:300-5,700"])
    many["perturbations"][0].update(step=1)  # 5,400 perturbations > max_perturbations 2,000
    error = refused(client, many)
    assert error.errors[0]["field"] == "perturbations" and "max_perturbations" in error.message
    workers = toy_spec(service, "w.zarr")
    workers["execution"]["num_workers"] = 3
    assert refused(client, workers).errors[0]["field"] == "execution.num_workers"


def test_malformed_bodies_are_4xx(service):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = service["url"] + "/screens"
    cases = [
        (b"{not json", "application/json", 400),
        (b"", "application/json", 400),
        (b"[1, 2]", "application/json", 422),
        (b"a: &x [1]\nb: *x\n", "application/yaml", 400),
        (b"name: x", "text/csv", 415),
    ]
    for body, content_type, status in cases:
        response = httpx.post(url, content=body, headers={**headers, "Content-Type": content_type}, timeout=60)
        assert response.status_code == status, (body, response.text)
        assert response.json()["detail"]


@pytest.mark.slow  # a whole screen; YAML bodies and relative inputs: test_malformed_bodies_are_4xx, test_service_policy.py
def test_yaml_body_with_relative_inputs(service, client):
    spec = toy_spec(service, None)
    spec["genome"]["fasta"] = "toy.fa"  # relative: resolved against the first input root
    response = client.request("POST", "/screens", content=yaml.safe_dump(spec), headers={"Content-Type": "application/yaml"})
    record = response.json()
    assert response.status_code == 201 and record["store"].endswith(f"/{record['id']}.zarr")
    assert client.screen(record["id"]).wait(timeout=300, progress=False)["state"] == "completed"


# --------------------------------------------------------------------------- cancel, resume, restarts


def _replica_actors():
    import ray

    return [a for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]]


def test_cancel_then_resume_continues_from_the_finished_chunks(service, client):
    screen = client.submit(long_spec(service, "long.zarr"))
    assert screen.last_status["n_perturbations"] == 540
    wait_until(lambda: (screen.status().get("progress") or {}).get("units_done", 0) >= 2, 120, "two units")
    cancelled = screen.cancel()
    assert cancelled["state"] in ("cancelling", "cancelled")
    final = wait_until(lambda: (s := screen.status())["state"] == "cancelled" and s, 120, "cancelled")
    assert final["resumable"] and 2 <= final["progress"]["units_done"] < final["progress"]["units_total"]
    results = open_results(final["store"])
    assert not results.is_complete and results.progress[0] < results.progress[1]
    with pytest.raises(ScreenFailedError, match="is cancelled"):
        screen.wait(timeout=10, progress=False)
    with pytest.raises(ServiceError, match="only a running screen can be cancelled") as caught:
        screen.cancel()
    assert caught.value.status == 409

    resumed = screen.resume()
    assert resumed["state"] == "running" and resumed["attempts"] == 2
    done = screen.wait(timeout=600, progress=False)
    assert done["progress"]["units_done"] == done["progress"]["units_total"] == 68
    values = open_results(done["store"]).query("chr1").compute()
    assert values["done"].all() and np.isfinite(values["impact_mean_abs"].values).all()
    with pytest.raises(ServiceError, match="completed; only") as caught:
        screen.resume()
    assert caught.value.status == 409


@pytest.mark.slow
def test_a_replica_restart_loses_no_running_screen(service, client):
    import ray

    spec = long_spec(service, "restart.zarr")
    spec["perturbations"][0].update(step=3)
    spec["execution"].update(chunk_size=1)  # 1,800 one-perturbation units: running while Serve replaces the replica
    screen = client.submit(spec)
    wait_until(lambda: (screen.status().get("progress") or {}).get("units_done", 0) >= 2, 120, "two units")
    assert screen.status()["state"] == "running"  # the replica goes while the screen runs
    replicas = _replica_actors()
    assert replicas
    for actor in replicas:
        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=False)
    wait_until(lambda: not _healthy(service["url"]) or _replica_actors() != replicas, 60, "the replica to go")
    wait_until(lambda: _healthy(service["url"]), 180, "a new replica")
    status = screen.status()
    # a new replica knows the screen, which ran on meanwhile (and may have finished while Serve restarted)
    assert status["state"] in ("running", "completed"), status
    done = screen.wait(timeout=600, progress=False)
    assert done["attempts"] == 1 and done["progress"]["units_done"] == done["progress"]["units_total"] == 1_800
    assert open_results(done["store"]).is_complete


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow  # the conflict rule itself: test_service_policy.py::test_another_screens_store_is_never_overwritten
def test_a_second_screen_on_a_busy_store_is_refused(service, client):
    screen = client.submit(long_spec(service, "busy.zarr"))
    try:
        error = refused(client, long_spec(service, "busy.zarr"), 409)
        assert error.errors[0]["field"] == "output.store" and screen.id in error.message
    finally:
        screen.cancel()
        wait_until(lambda: screen.status()["state"] == "cancelled", 120, "cancelled")


def test_job_manager_restart_reloads_the_registry(service, client, finished):
    import ray

    from screening.service.jobs import MANAGER_NAME

    screen, _ = finished
    manager = ray.get_actor(MANAGER_NAME, namespace="screening")
    ray.kill(manager, no_restart=False)  # Ray restarts it; it reloads every record from the registry
    status = wait_until(lambda: _status_or_none(client, screen.id), 120, "the restarted registry")
    assert status["state"] == "completed" and status["progress"]["units_done"] == 8


def _status_or_none(client, screen_id):
    try:
        return client.screen(screen_id).last_status
    except ServiceError:
        return None


# --------------------------------------------------------------------------- CLI server mode


def test_cli_server_mode(service, finished, tmp_path, capsys, monkeypatch):
    screen, status = finished
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    server = ["--server", service["url"], "--token-file", str(token_file)]
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(toy_spec(service, "cli.zarr")))
    assert main(["submit", str(spec_path), *server, "--wait", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "submitted" in out and "completed" in out and "30/30 perturbations" in out.replace(",", "")

    assert main(["status", screen.id, *server, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "completed"
    monkeypatch.setenv("SCREENING_TOKEN", TOKEN)
    assert main(["query", screen.id, "chr1:2,000-2,060", "--server", service["url"], "--format", "csv"]) == 0
    remote_rows = capsys.readouterr().out
    assert main(["query", status["store"], "chr1:2,000-2,060", "--format", "csv"]) == 0  # local mode unchanged
    assert remote_rows == capsys.readouterr().out and len(remote_rows.splitlines()) == 4
    out_file = tmp_path / "cli.bedGraph"
    assert main(["export", screen.id, str(out_file), "--server", service["url"]]) == 0
    assert len(out_file.read_text().splitlines()) == 30
    capsys.readouterr()

    assert main(["cancel", screen.id, *server]) == 2
    assert "screening: error: server answered 409" in capsys.readouterr().err
    monkeypatch.delenv("SCREENING_TOKEN")
    assert main(["status", "--server", service["url"]]) == 2
    assert "no token" in capsys.readouterr().err


# --------------------------------------------------------------------------- fuzz


def test_openapi_fuzz_finds_no_server_errors(service, finished):
    """Schemathesis cases for every operation from the served OpenAPI document, valid and invalid,
    with random and with real screen ids: no answer may be a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    screen, _ = finished
    headers = {"Authorization": f"Bearer {TOKEN}"}
    document = httpx.get(service["url"] + "/openapi.json", headers=headers, timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    seen: Counter = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        fixed = {"job_id": screen.id} if "{job_id}" in operation.path and operation.method.upper() == "GET" else None
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for path_parameters in (None, fixed) if fixed else (None,):
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

                @settings(max_examples=12, deadline=None, database=None, derandomize=True,
                          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
                @given(case=strategy)
                def call(case):
                    response = case.call(base_url=service["url"], headers=headers, timeout=120)
                    seen[(case.method, operation.path, response.status_code)] += 1
                    if response.status_code >= 500:
                        failures.append(f"{case.method} {case.formatted_path} {case.query} → "
                                        f"{response.status_code} {response.text[:300]}")

                try:
                    call()
                except Unsatisfiable:  # nothing invalid to generate (an operation without parameters)
                    assert mode == GenerationMode.NEGATIVE, operation.label
    print(sorted(seen.items()))
    statuses = Counter(status for (_, _, status), count in seen.items() for _ in range(count))
    assert sum(statuses.values()) >= 100 and statuses[200] > 0 and statuses[422] > 0 and statuses[404] > 0
    assert not failures, "\n".join(failures[:10])


# --------------------------------------------------------------------------- hostile requests (reliability issue)


def test_a_torchscript_checkpoint_is_refused_without_user_code(service, client, tmp_path):
    target = tmp_path / "outside-every-root.bin"
    target.write_bytes(b"safe")
    write_file_writer(service["paths"]["fasta"].parent / "innocent.ckpt", target)  # TorchScript, any name
    declare = {"window_length": 512, "bin_size": 32, "n_bins": 16, "input_layout": "NCL", "alphabet": "ACGT",
               "n_value": 0.25, "tracks": ["ctcf", "atac"]}
    for model in ({"kind": "user", "checkpoint": "innocent.ckpt", "declare": declare},
                  {"kind": "corigami", "checkpoint": "innocent.ckpt"}):
        error = refused(client, toy_spec(service, "ts.zarr", model=model))
        assert error.errors[0]["field"] == "model.checkpoint" and "allow_user_code" in error.message
    assert target.read_bytes() == b"safe" and not (service["stores"] / "ts.zarr").exists()


def test_another_screens_store_cannot_be_overwritten(service, client, finished):
    screen, status = finished
    before = open_results(status["store"]).query("chr1").compute()
    other = toy_spec(service, "e2e.zarr")
    other["perturbations"][0]["width"] = 40
    other["output"]["overwrite"] = True
    error = refused(client, other, 409)
    assert error.errors[0]["field"] == "output.store" and screen.id in error.message
    assert refused(client, toy_spec(service, "e2e.zarr/inner.zarr"), 409).errors[0]["field"] == "output.store"
    assert client.screen(screen.id).last_status["state"] == "completed"
    after = open_results(status["store"])
    assert after.is_complete
    np.testing.assert_array_equal(after.query("chr1").compute()["impact_mean_abs"].values, before["impact_mean_abs"].values)


def test_deeply_nested_bodies_are_refused_and_the_api_keeps_answering(service):
    import concurrent.futures

    headers = {"Authorization": f"Bearer {TOKEN}"}
    n = 9_000  # 18 KB, under max_spec_bytes: parsed whole, it took seconds per request
    bodies = [("application/yaml", "a: " + "[" * n + "]" * n), ("application/json", '{"a": ' + "[" * n + "]" * n + "}")]

    def submit(media, body):
        return httpx.post(service["url"] + "/screens", content=body.encode(),
                          headers={**headers, "Content-Type": media}, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        bad = [pool.submit(submit, *bodies[i % 2]) for i in range(6)]
        health = pool.submit(httpx.get, service["url"] + "/healthz", timeout=120)
        assert health.result().status_code == 200  # answered while the bad bodies are in flight
        for future in bad:
            response = future.result()
            assert response.status_code == 400 and "nested deeper" in response.json()["detail"], response.text


def test_workers_the_cluster_cannot_place_are_refused_at_submit(service, client):
    for change, field in [({"cpus_per_worker": 64.0}, "execution.cpus_per_worker"),
                          ({"gpus_per_worker": 1.0}, "execution.gpus_per_worker"),
                          ({"num_workers": 2, "cpus_per_worker": 1.5}, "execution.num_workers")]:
        spec = toy_spec(service, "infeasible.zarr")
        spec["execution"].update(change)
        error = refused(client, spec)
        assert error.errors[0]["field"] == field and field in error.message, error
    assert not (service["stores"] / "infeasible.zarr").exists()


def test_a_screen_that_ignores_cancel_is_killed_and_ends_cancelled(service, tmp_path):
    """A job actor that never answers (e.g. stuck waiting for workers) still ends: after the grace its
    driver is killed (its workers die with it) and the screen is cancelled, resumable."""
    import ray

    from screening.service.jobs import JobManager

    @ray.remote(num_cpus=0, max_concurrency=4)
    class Stuck:
        def status(self):
            time.sleep(3600)

        def cancel(self):
            pass  # never honoured

    stuck = Stuck.remote()
    lease = tmp_path / "none.zarr.screening-lock"  # the killed driver's lease, left behind
    lease.write_text('{"owner": {"host": "elsewhere", "pid": 1, "token": "t"}, "expires_unix": 4e9}')
    manager = JobManager(str(tmp_path / "jobs"), "test-stuck", poll_s=0.2)
    manager.cancel_grace_s = 1.0
    job_id = "f" * 32
    record = {"id": job_id, "name": "stuck", "state": "running", "store": str(tmp_path / "none.zarr"), "spec": {},
              "submitted": "2026-01-01T00:00:00+00:00", "started": None, "finished": None, "attempts": 1,
              "n_perturbations": 1, "n_units": 1, "progress": None, "errors": [], "actor": "stuck"}
    with manager.lock:
        manager.records[job_id] = record
        manager.handles[job_id] = stuck
    assert manager.cancel(job_id)["record"]["state"] == "cancelling"
    final = wait_until(lambda: (r := manager.get(job_id))["state"] == "cancelled" and r, 120, "the forced cancel")
    assert final["resumable"] and "were killed" in final["errors"][-1]
    assert not lease.exists()  # broken by the manager: a resume need not wait for it to expire
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(stuck.cancel.remote(), timeout=60)
