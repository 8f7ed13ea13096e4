"""The deployment: Dockerfile, kustomize base and overlays, KubeRay custom resources, monitoring.

Rendering uses ``kubectl kustomize`` when kubectl is installed; without it those tests skip and
say so, and ``test_kustomization_references_resolve`` still checks every kustomization's files and
applies its JSON patches to their targets. RayService, RayJob and the RayCluster inside them are
validated against the KubeRay v1 CRD schemas in ``../shared/k8s`` (made strict: unknown fields
are errors, as the API server would silently drop them).
"""

from __future__ import annotations

import copy
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import yaml
from helpers import free_port, separate_ray, toy_spec_dict

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
KUSTOMIZATIONS = ["base", "overlays/dev", "overlays/prod"]
KUBECTL = shutil.which("kubectl")
NO_KUBECTL = (
    "kubectl not found: the kustomize output (overlay patches applied, namespaces, image names and "
    "labels) was not rendered or checked here; test_kustomization_references_resolve checked files, "
    "patch targets and patch application only"
)
RAY_KINDS = ("RayService", "RayJob")
GPU = "nvidia.com/gpu"


# --------------------------------------------------------------------------- helpers


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _pin(name: str) -> str:
    """The exact version constraints.txt pins for ``name`` (``name==X``), which pyproject.toml's range for it admits."""
    from packaging.requirements import Requirement

    match = re.search(rf"^{re.escape(name)}==(\S+)$", (REPO / "constraints.txt").read_text(), re.M | re.I)
    assert match, f"constraints.txt pins no exact version of {name}"
    (wanted,) = [r for r in map(Requirement, _pyproject()["project"]["dependencies"]) if r.name == name]
    assert match.group(1) in wanted.specifier, f"constraints.txt's {name}=={match.group(1)} is outside {wanted}"
    return match.group(1)


def _load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@lru_cache(maxsize=None)
def _render(kustomization: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [KUBECTL, "kustomize", str(DEPLOY / kustomization)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc is not None)


def rendered(kustomization: str) -> list[dict[str, Any]]:
    """The documents ``kubectl kustomize`` renders (a deep copy), or a skip saying what was not checked."""
    if KUBECTL is None:
        pytest.skip(NO_KUBECTL)
    return copy.deepcopy(list(_render(kustomization)))


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def cluster_spec(resource: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec inside a RayService or RayJob."""
    spec = resource["spec"]
    return spec["rayClusterConfig"] if resource["kind"] == "RayService" else spec["rayClusterSpec"]


def pod_templates(resource: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(group name, group spec, pod template) of the head and every worker group."""
    cluster = cluster_spec(resource)
    yield "head", cluster["headGroupSpec"], cluster["headGroupSpec"]["template"]
    for group in cluster.get("workerGroupSpecs", []):
        yield group["groupName"], group, group["template"]


def serve_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(one(docs, "RayService")["spec"]["serveConfigV2"])


def config_map_file(docs: list[dict[str, Any]], name: str, key: str) -> str:
    return one(docs, "ConfigMap", name)["data"][key]


# --------------------------------------------------------------------------- parsing and rendering


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml", ".json"})


def test_every_manifest_parses():
    files = deploy_files()
    assert len(files) >= 10, files
    for path in files:
        if path.suffix == ".json":
            assert isinstance(json.loads(path.read_text()), dict), path
            continue
        docs = _load_yaml_docs(path)
        assert docs, f"{path} is empty"
        for doc in docs:
            if isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc and path.name != "kustomization.yaml":
                assert doc.get("metadata", {}).get("name"), f"{path}: a {doc['kind']} without metadata.name"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kustomization_renders(kustomization):
    docs = rendered(kustomization)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["RayService", "RayJob", "PodMonitor", "PodMonitor", "ServiceMonitor", "ConfigMap", "ConfigMap"]
    ), kinds
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "screening", doc["metadata"]["name"]
    namespaces = {d["metadata"].get("namespace") for d in docs}
    assert namespaces == {{"base": None, "overlays/dev": "screening-dev", "overlays/prod": "screening"}[kustomization]}


def test_overlays_differ_as_intended():
    """dev: CPU image, no GPU anywhere, small; prod: CUDA image with autoscaled GPU workers."""
    dev, prod = rendered("overlays/dev"), rendered("overlays/prod")
    assert GPU not in json.dumps(dev)
    for docs, suffix in ((dev, "-cpu"), (prod, "")):
        for resource in (d for d in docs if d["kind"] in RAY_KINDS):
            for group, _, template in pod_templates(resource):
                image = template["spec"]["containers"][0]["image"]
                assert image.startswith("registry.example.com/screening:"), image
                assert image.endswith(suffix) and (suffix or not image.endswith("-cpu")), (group, image)
    dev_groups = {g: spec.get("maxReplicas") for g, spec, _ in pod_templates(one(dev, "RayService"))}
    assert dev_groups == {"head": None, "cpu": 2}
    prod_gpu = [spec for g, spec, _ in pod_templates(one(prod, "RayService")) if g == "gpu"]
    assert prod_gpu and prod_gpu[0]["minReplicas"] >= 1 and prod_gpu[0]["maxReplicas"] >= 8


# --------------------------------------------------------------------------- kustomize without kubectl


def _json_pointer(path: str) -> list[str]:
    assert path.startswith("/"), path
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _apply_json_patch(doc: Any, ops: list[dict[str, Any]], where: str) -> Any:
    """Apply RFC 6902 ``test``/``add``/``remove``/``replace`` operations, failing on a path that
    does not resolve or a ``test`` that does not hold (what kustomize would refuse)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = _json_pointer(op["path"])
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        kind = op["op"]
        if isinstance(node, list):
            index = len(node) if (last == "-" and kind == "add") else int(last)
            assert 0 <= index <= len(node) - (kind != "add"), f"{where}: {op['path']} is past the list's end"
        else:
            index = last
            assert kind == "add" or index in node, f"{where}: {op['path']} does not exist in the target"
        if kind == "test":
            assert node[index] == op["value"], f"{where}: test {op['path']} == {op['value']!r} fails: {node[index]!r}"
        elif kind == "remove":
            del node[index]
        elif kind == "replace":
            node[index] = op["value"]
        elif kind == "add":
            node.insert(index, op["value"]) if isinstance(node, list) else node.__setitem__(index, op["value"])
        else:
            raise AssertionError(f"{where}: unsupported op {kind}")
    return doc


def _resources(directory: Path) -> list[dict[str, Any]]:
    """The documents of a kustomization's resources, its bases' included (unpatched)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs = []
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        assert target.exists(), f"{directory}: resource {entry} does not exist"
        docs += _resources(target) if target.is_dir() else _load_yaml_docs(target)
    return docs


def _matches(doc: dict[str, Any], target: dict[str, Any]) -> bool:
    group, version = (doc["apiVersion"].split("/", 1) if "/" in doc["apiVersion"] else ("", doc["apiVersion"]))
    return (
        target.get("kind", doc["kind"]) == doc["kind"]
        and target.get("name", doc["metadata"]["name"]) == doc["metadata"]["name"]
        and target.get("group", group) == group
        and target.get("version", version) == version
    )


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kustomization_references_resolve(kustomization, shared_dir):
    """Without rendering: resources and generator files exist and parse, every patch names a target
    that exists and applies to it cleanly, and the patched Ray resources still match the CRD schemas."""
    directory = DEPLOY / kustomization
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs = _resources(directory)
    assert docs
    for generator in spec.get("configMapGenerator", []) + spec.get("secretGenerator", []):
        for entry in generator.get("files", []):
            path = directory / entry.split("=", 1)[-1]
            assert path.is_file(), f"{kustomization}: generator {generator['name']} file {path} is missing"
            json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
        if generator.get("behavior") in ("replace", "merge"):
            base_maps = _generated_names(directory)
            assert generator["name"] in base_maps, f"{kustomization}: {generator['name']} replaces nothing"
    for patch in spec.get("patches", []):
        path = directory / patch["path"]
        assert path.is_file(), f"{kustomization}: patch {patch['path']} is missing"
        ops = yaml.safe_load(path.read_text())
        assert isinstance(ops, list), f"{path}: expected a JSON 6902 patch (a list of operations)"
        targets = [d for d in docs if _matches(d, patch["target"])]
        assert targets, f"{kustomization}: patch {patch['path']} targets {patch['target']}, which no resource is"
        for index, doc in enumerate(docs):
            if _matches(doc, patch["target"]):
                docs[index] = _apply_json_patch(doc, ops, f"{kustomization}/{patch['path']}")
    for doc in docs:
        if doc["kind"] in RAY_KINDS:
            _validate_ray_resource(doc, shared_dir)


def _generated_names(directory: Path) -> set[str]:
    """ConfigMap names generated by the bases of a kustomization."""
    names: set[str] = set()
    for entry in yaml.safe_load((directory / "kustomization.yaml").read_text()).get("resources", []):
        base = (directory / entry).resolve()
        if base.is_dir():
            spec = yaml.safe_load((base / "kustomization.yaml").read_text())
            names |= {g["name"] for g in spec.get("configMapGenerator", [])} | _generated_names(base)
    return names


# --------------------------------------------------------------------------- KubeRay CRD schemas


def _strict(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` on every object that lists its properties."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@lru_cache(maxsize=None)
def _validator(schema_dir: str, kind: str):
    import jsonschema

    schema = json.loads((Path(schema_dir) / f"{kind}.v1.schema.json").read_text())
    return jsonschema.Draft7Validator(_strict(schema))


def _schema_errors(resource: dict[str, Any], shared_dir: Path) -> list[str]:
    validator = _validator(str(shared_dir / "k8s"), resource["kind"])
    return [
        f"{resource['kind']} {'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(resource)
    ]


def _as_ray_cluster(resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": resource["metadata"]["name"]},
        "spec": cluster_spec(resource),
    }


#: Enum-like strings the operator checks at run time (the schemas declare them as plain strings).
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
UPGRADE_TYPES = {"NewCluster", "NewClusterWithIncrementalUpgrade", "None"}


def _validate_ray_resource(resource: dict[str, Any], shared_dir: Path) -> None:
    errors = _schema_errors(resource, shared_dir) + _schema_errors(_as_ray_cluster(resource), shared_dir)
    assert not errors, "\n".join(errors)
    if resource["kind"] == "RayJob":
        assert resource["spec"].get("submissionMode", "K8sJobMode") in SUBMISSION_MODES
    else:
        assert resource["spec"].get("upgradeStrategy", {}).get("type", "NewCluster") in UPGRADE_TYPES


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_ray_resources_validate_against_kuberay_schemas(kustomization, shared_dir):
    docs = rendered(kustomization)
    ray_resources = [d for d in docs if d["kind"] in RAY_KINDS]
    assert sorted(d["kind"] for d in ray_resources) == ["RayJob", "RayService"]
    for resource in ray_resources:
        _validate_ray_resource(resource, shared_dir)


def test_base_files_validate_against_kuberay_schemas(shared_dir):
    """The base's files as written (what the fallback check patches), kubectl or not."""
    for name in ("rayservice.yaml", "rayjob.yaml"):
        for resource in _load_yaml_docs(DEPLOY / "base" / name):
            _validate_ray_resource(resource, shared_dir)


@pytest.mark.parametrize(
    "plant, where",
    [
        # rayStartParams are strings: an unquoted 0 is an integer.
        (lambda c: c["headGroupSpec"]["rayStartParams"].__setitem__("num-cpus", 0), "rayStartParams/num-cpus"),
        (lambda c: c["workerGroupSpecs"][0].__setitem__("maxReplicas", "4"), "workerGroupSpecs/0/maxReplicas"),
        (lambda c: c.__setitem__("enableInTreeAutoscaling", "true"), "enableInTreeAutoscaling"),
        # A misspelt field would be dropped silently by the API server; the strict schema refuses it.
        (lambda c: c["workerGroupSpecs"][0].__setitem__("minReplica", 1), "workerGroupSpecs/0"),
    ],
    ids=["num-cpus-int", "maxReplicas-string", "autoscaling-string", "misspelt-field"],
)
def test_planted_wrong_type_is_rejected(plant, where, shared_dir):
    for name in ("rayservice.yaml", "rayjob.yaml"):
        resource = _load_yaml_docs(DEPLOY / "base" / name)[0]
        assert not _schema_errors(resource, shared_dir)
        plant(cluster_spec(resource))
        errors = _schema_errors(resource, shared_dir)
        assert errors and any(where in error for error in errors), errors
        assert _schema_errors(_as_ray_cluster(resource), shared_dir)


def test_runtime_enums_are_checked(shared_dir):
    job = _load_yaml_docs(DEPLOY / "base" / "rayjob.yaml")[0]
    job["spec"]["submissionMode"] = "K8sJob"
    with pytest.raises(AssertionError):
        _validate_ray_resource(job, shared_dir)


# --------------------------------------------------------------------------- what the manifests say


def _base_docs() -> list[dict[str, Any]]:
    return _resources(DEPLOY / "base")


def test_api_cluster_has_autoscaled_gpu_workers_and_an_idle_head():
    service = one(_base_docs(), "RayService", "screening-api")
    cluster = cluster_spec(service)
    assert cluster["rayVersion"] == _pin("ray")
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    gpu = groups["gpu"]
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"] and gpu["maxReplicas"] >= 1
    pod = gpu["template"]["spec"]
    assert int(pod["containers"][0]["resources"]["limits"][GPU]) >= 1
    assert any(t["key"] == GPU and t["effect"] == "NoSchedule" for t in pod["tolerations"])
    assert pod["nodeSelector"]
    assert GPU not in json.dumps(groups["cpu"]), "the API's CPU group asks for GPUs"


def test_serve_config_names_the_real_builder():
    config = serve_config(_base_docs())
    (app,) = config["applications"]
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000}
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config)
    module_name, attribute = app["import_path"].split(":")
    assert (REPO / Path(*module_name.split("."))).with_suffix(".py").exists(), f"no module {module_name} here"
    import importlib

    assert callable(getattr(importlib.import_module(module_name), attribute)), app["import_path"]


def test_secrets_feed_every_ray_container():
    """Object-store credentials reach every Ray pod; the API's token file lies in the token Secret."""
    for resource in (d for d in _base_docs() if d["kind"] in RAY_KINDS):
        for group, _, template in pod_templates(resource):
            pod = template["spec"]
            container = pod["containers"][0]
            secret_refs = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
            assert secret_refs == ["screening-object-store"], (resource["kind"], group)
            assert pod["securityContext"]["runAsNonRoot"] is True
            token_file = {e["name"]: e.get("value") for e in container.get("env", [])}.get("SCREENING_TOKEN_FILE")
            if token_file is None:
                continue
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = [m for m in container["volumeMounts"] if token_file.startswith(m["mountPath"].rstrip("/") + "/")]
            assert mounts and volumes[mounts[0]["name"]]["secret"]["secretName"] == "screening-api-tokens", group
    for resource in (d for d in _base_docs() if d["kind"] in RAY_KINDS):
        assert cluster_spec(resource)["authOptions"] == {"mode": "token", "secretName": "screening-ray-auth"}
    service = one(_base_docs(), "RayService")
    assert all(
        "SCREENING_TOKEN_FILE" in json.dumps(template) for group, _, template in pod_templates(service) if group != "gpu"
    )


def _capacity(template: dict[str, Any]) -> tuple[float, float]:
    limits = template["spec"]["containers"][0]["resources"]["limits"]
    return float(limits["cpu"]), float(limits.get(GPU, 0))


@pytest.mark.parametrize("kustomization", ["base", "overlays/dev", "overlays/prod"])
def test_batch_screen_fits_its_cluster(kustomization):
    """The RayJob's spec is a valid screen whose workers fit on the job's worker pods."""
    from screening.spec import ScreenSpec

    docs = _base_docs() if kustomization == "base" else rendered(kustomization)
    job = one(docs, "RayJob", "screening-batch")
    spec_text = config_map_file(docs, "screening-batch-spec", "screen.yaml") if kustomization != "base" else (
        DEPLOY / "base" / "batch" / "screen.yaml"
    ).read_text()
    spec = ScreenSpec.model_validate(yaml.safe_load(spec_text))
    assert "://" in spec.output.store, "workers on other pods write the store: it must be object storage"
    head = cluster_spec(job)["headGroupSpec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    config_volume = next(v["name"] for v in head["volumes"] if v.get("configMap", {}).get("name") == "screening-batch-spec")
    assert f"{mounts[config_volume]}/screen.yaml" in job["spec"]["entrypoint"]
    assert "--metrics-port 9100" in job["spec"]["entrypoint"]
    assert job["spec"]["suspend"] is True, "applying an overlay must not start a screen by itself"
    assert job["spec"]["backoffLimit"] >= 1, "a failed attempt should be retried (and resume the store)"
    capacity = 0
    for group, spec_group, template in pod_templates(job):
        if group == "head":
            continue
        cpus, gpus = _capacity(template)
        per_pod = int(cpus // spec.execution.cpus_per_worker)
        if spec.execution.gpus_per_worker:
            per_pod = min(per_pod, int(gpus // spec.execution.gpus_per_worker))
        capacity += per_pod * spec_group["maxReplicas"]
    assert capacity >= spec.execution.num_workers, f"{kustomization}: room for {capacity} workers"
    assert (spec.execution.device == "cpu") == (spec.execution.gpus_per_worker == 0)


def _pod_labels_with_port(docs: list[dict[str, Any]], port: str) -> list[dict[str, str]]:
    labels = []
    for resource in (d for d in docs if d["kind"] in RAY_KINDS):
        for _, _, template in pod_templates(resource):
            ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
            if port in ports:
                labels.append(template["metadata"]["labels"])
    return labels


def test_monitors_select_pods_and_ports_that_exist():
    docs = _base_docs()
    for monitor in (d for d in docs if d["kind"] == "PodMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            matching = [
                labels for labels in _pod_labels_with_port(docs, endpoint["port"])
                if selector.items() <= labels.items()
            ]
            assert matching, f"PodMonitor {monitor['metadata']['name']}: no pod has {selector} and port {endpoint['port']}"
    (service_monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    service = one(docs, "RayService")
    # KubeRay labels the Serve service ray.io/serve=<RayService name>-serve and names its port "serve".
    assert service_monitor["spec"]["selector"]["matchLabels"] == {"ray.io/serve": f"{service['metadata']['name']}-serve"}
    head_ports = {p["name"]: p["containerPort"] for p in cluster_spec(service)["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert head_ports["serve"] == serve_config(docs)["http_options"]["port"]
    (endpoint,) = service_monitor["spec"]["endpoints"]
    assert endpoint["port"] == "serve" and endpoint["path"] == "/metrics"
    # /metrics wants a bearer token: Prometheus sends one from the Secret that holds the API's tokens.
    assert endpoint["authorization"]["type"] == "Bearer"
    assert endpoint["authorization"]["credentials"]["name"] == "screening-api-tokens"


def _screening_metric_names() -> set[str]:
    """Every sample name the screen metrics expose (counters' _total, histograms' _bucket, …)."""
    from test_metrics import runner_scrape

    return _sample_names(runner_scrape())


def _service_metric_names() -> set[str]:
    """Every sample name the service's /metrics exposes, with one running screen."""
    from test_metrics import service_scrape

    return _sample_names(service_scrape())


def _screening_metric_labels() -> dict[str, set[str]]:
    """Sample name → its label names, over the runner's and the service's scrapes."""
    from prometheus_client.parser import text_string_to_metric_families
    from test_metrics import runner_scrape, service_scrape

    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(runner_scrape() + service_scrape()):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def _sample_names(text: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def _ray_metric_names() -> set[str]:
    """Ray's node metrics, from the dashboard agent's gauge table (exported with the ray_ prefix)."""
    import importlib.util

    origin = importlib.util.find_spec("ray.dashboard.modules.reporter.reporter_agent").origin
    return {f"ray_{name}" for name in re.findall(r'^\s+"(node_\w+)": Gauge\(', Path(origin).read_text(), re.M)}


def _metric_names_in(expr: str) -> set[str]:
    names_only = re.sub(r"\b(by|without) \([^)]*\)|\{[^}]*\}|\"[^\"]*\"", "", expr)  # drop labels and strings
    return set(re.findall(r"\b((?:screening|ray)_\w+)\b", names_only))


def test_grafana_dashboard_queries_defined_metrics():
    """Every metric a panel or variable queries is one that the runner, the service or Ray exports, and
    throughput, progress, failures and GPU memory are all shown."""
    dashboard = json.loads((DEPLOY / "base" / "monitoring" / "grafana-dashboard.json").read_text())
    exprs = {
        panel["title"]: [t["expr"] for t in panel["targets"]] for panel in dashboard["panels"] if panel.get("targets")
    }
    exprs["variable $name"] = [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    known = _screening_metric_names() | _service_metric_names() | _ray_metric_names()
    labels = _screening_metric_labels()
    assert {"ray_node_gram_used", "screening_screen_units_done", "screening_units_done"} <= known
    for title, expressions in exprs.items():
        for expr in expressions:
            used = _metric_names_in(expr)
            assert used and used <= known, f"{title}: unknown metrics {used - known} in {expr}"
            # the labels a selector filters on are labels those series have (screen: the id; name: the spec's name)
            for metric, selector in re.findall(r"\b(screening_\w+)\{([^}]*)\}", expr):
                filtered = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector))
                assert filtered <= labels[metric], f"{title}: {metric} has no label {filtered - labels[metric]}"
    shown = set().union(*(_metric_names_in(e) for es in exprs.values() for e in es))
    for needed in (
        "screening_screen_perturbations_per_second", "screening_perturbations_total",  # throughput
        "screening_screen_attributed_positions_per_second", "screening_attributed_positions_total",  # attribution
        "screening_screen_units_done", "screening_units_done", "screening_screen_units_planned",  # progress
        "screening_units_planned",
        "screening_screens", "screening_unit_failures_total", "screening_unit_retries_total",  # failures
        "screening_worker_gpu_memory_bytes", "ray_node_gram_used",  # GPU memory
    ):
        assert needed in shown, f"the dashboard shows nothing of {needed}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------- the image


def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text().replace("\\\n", " ")


def _arg_defaults() -> dict[str, set[str]]:
    defaults: dict[str, set[str]] = {}
    for name, value in re.findall(r"^ARG (\w+)=(\S+)", _dockerfile(), re.M):
        defaults.setdefault(name, set()).add(value)
    return defaults


def test_image_versions_agree_with_pyproject():
    from packaging.specifiers import SpecifierSet

    args = _arg_defaults()
    assert args["TORCH_VERSION"] == {_pin("torch")}
    assert args["RAY_VERSION"] == {_pin("ray")}
    (python,) = args["PYTHON_VERSION"]
    assert f"{python}.0" in SpecifierSet(_pyproject()["project"]["requires-python"])
    assert "FROM python:${PYTHON_VERSION}-slim" in _dockerfile()
    # both torch variants install exactly the pinned version, each from its own index
    installs = re.findall(r'pip install --no-cache-dir --index-url "\$\{TORCH_INDEX_URL\}" "torch==\$\{TORCH_VERSION\}"', _dockerfile())
    assert len(installs) == 2
    assert args["TORCH_INDEX_URL"] == {"https://pypi.org/simple", "https://download.pytorch.org/whl/cpu"}
    # the package and the rest of its dependencies at constraints.txt's pins (which keep the variant's torch)
    assert "pip install --no-cache-dir -c constraints.txt . " in _dockerfile()
    # and the build refuses an image whose versions differ
    for check in ("torch.__version__", "ray.__version__", "sys.version_info"):
        assert check in _dockerfile()
    # the local environment that the tests run in agrees too
    import ray
    import torch

    assert torch.__version__.split("+")[0] == _pin("torch") and ray.__version__ == _pin("ray")


def _copy_sources() -> list[str]:
    return [src for line in re.findall(r"^COPY (?!--from)(.+)$", _dockerfile(), re.M) for src in line.split()[:-1]]


def test_image_copies_what_the_package_needs():
    """The COPY set holds pyproject's readme and every top-level package it builds, and .dockerignore
    lets each through; the installed healthcheck is the tested one."""
    from setuptools import find_packages

    project = _pyproject()
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    top_level = {name.split(".")[0] for name in find_packages(str(REPO), include=include)}
    sources = _copy_sources()
    assert {"pyproject.toml", project["project"]["readme"], "constraints.txt", *top_level} <= set(sources), sources
    assert "deploy/docker/healthcheck.py" in sources
    allowed = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    for source in sources:
        assert any(source == a or source.startswith(a + "/") for a in allowed), f".dockerignore excludes {source}"


def test_image_build_context_makes_a_complete_wheel(tmp_path):
    """`pip install .` on exactly what the Dockerfile copies yields the package with its workers and
    data (the image's install step, short of downloading dependencies)."""
    context = tmp_path / "context"
    for source in _copy_sources():
        if source.startswith("deploy/"):
            continue
        src = REPO / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            context.mkdir(exist_ok=True)
            shutil.copy2(src, context / source)
    # No build isolation (no download): the environment's setuptools builds it (torch 2.13 requires >= 77).
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(context)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("screening-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"workers/screen_worker.py", "screening/cli/__init__.py", "screening/data/demo_model/model.pt"}
    builder = REPO / "screening" / "service" / "app.py"
    if builder.exists():
        expected.add("screening/service/app.py")
    assert expected <= names, expected - names


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status, exit_code", [(200, 0), (503, 1), (None, 1)])
def test_image_healthcheck(status, exit_code, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Health,), {"status": status or 200}))
    port = server.server_address[1]
    if status is None:
        server.server_close()  # nothing listens there
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = subprocess.run(
            [sys.executable, str(DEPLOY / "docker" / "healthcheck.py")],
            env={"SCREENING_HEALTHCHECK_URL": f"http://127.0.0.1:{port}/healthz", "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=60,
        )
    finally:
        if status is not None:
            server.shutdown()
            server.server_close()
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert ("healthy: " if exit_code == 0 else "unhealthy: ") in result.stdout
    assert "HEALTHCHECK" in _dockerfile() and "/opt/screening/healthcheck.py" in _dockerfile()
    assert re.search(r"^USER 1000", _dockerfile(), re.M), "the image must run as a non-root user"


# --------------------------------------------------------------------------- serveConfigV2 on a local Ray


def _deployed_serve_config() -> dict[str, Any]:
    """serveConfigV2 as the overlays render it (all the same), or the base's where kubectl is missing
    (the overlays do not patch it: test_kustomization_renders and this check so where kubectl exists)."""
    if KUBECTL is None:
        return serve_config(_base_docs())
    configs = [serve_config(list(_render(k))) for k in KUSTOMIZATIONS]
    assert all(config == configs[0] for config in configs), "an overlay changes serveConfigV2"
    return configs[0]


def _wait_until_running(client, app: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    status = message = None
    while time.monotonic() < deadline:
        details = client.get_serve_details().get("applications", {}).get(app, {})
        status, message = details.get("status"), details.get("message", "")
        if status == "RUNNING":
            return
        if status in ("DEPLOY_FAILED", "UNHEALTHY"):
            pytest.fail(f"application {app} is {status}: {message}")
        time.sleep(1.0)
    pytest.fail(f"application {app} still {status} after {timeout_s} s: {message}")


@pytest.mark.slow  # a Ray with the dashboard and Serve of its own; the default run keeps test_service.py's HTTP end to end
def test_serve_config_starts_on_local_ray_and_answers_the_client(tmp_path, toy_paths, monkeypatch):
    """The manifest's serveConfigV2, deployed the way KubeRay deploys it (Serve's deploy schema sent to
    the dashboard's /api/serve/applications/, the `serve deploy` path), answers screening.Client.

    Made local, and nothing else: ``args.store_roots`` and ``args.input_roots`` (a temporary folder and
    the toy inputs instead of the bucket and the /data volume) and ``http_options`` (127.0.0.1 and a
    free port instead of 0.0.0.0:8000). The API token comes from the environment, as the pods'
    SCREENING_TOKEN_FILE would give it.
    """
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient
    from ray.serve.schema import ServeDeploySchema

    import screening
    from screening.client import ServiceError

    config = _deployed_serve_config()
    (app,) = config["applications"]
    assert app["import_path"] == "screening.service.app:build_app"
    port = free_port()
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    app["args"].update(store_roots=str(tmp_path / "stores"), input_roots=str(toy_paths["fasta"].parent))
    (tmp_path / "stores").mkdir()
    token = "deploy-test-token"
    monkeypatch.setenv("SCREENING_API_TOKENS", token)  # inherited by the Ray processes started below
    for name in ("SCREENING_TOKEN_FILE", "SCREENING_STORE_ROOTS", "SCREENING_INPUT_ROOTS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)

    dashboard_port = free_port()
    # a Ray of its own: the dashboard (KubeRay's deploy path) and the token in its processes' environment
    with separate_ray(include_dashboard=True, dashboard_port=dashboard_port):
        deployer = ServeSubmissionClient(f"http://127.0.0.1:{dashboard_port}")
        deployer.deploy_applications(ServeDeploySchema.model_validate(config).model_dump(exclude_unset=True))
        _wait_until_running(deployer, app["name"], timeout_s=240)

        url = f"http://127.0.0.1:{port}"
        with screening.Client(url, token=token, timeout=300) as client:
            assert client.health() == {"status": "ok"}
            with pytest.raises(ServiceError) as refused, screening.Client(url, token="wrong") as stranger:
                stranger.screens()
            assert refused.value.status == 401

            spec = toy_spec_dict(toy_paths, "unused")
            spec["output"] = {"store": "deploy-test.zarr", "plots": False}  # relative: under the store root
            screen = client.submit(spec)
            status = screen.wait(timeout=300, poll_s=0.5, progress=False)
            assert status["store"] == str(tmp_path / "stores" / "deploy-test.zarr")
            ds = screen.query("chr1:2,000-2,400")
            assert ds.sizes["perturbation"] == 20 and bool(ds["done"].all())
            assert np.isfinite(ds["impact_mean_abs"].values).all()
            # what Prometheus scrapes through the ServiceMonitor, with its token
            assert 'screening_screens{state="completed"} 1.0' in client.request("GET", "/metrics").text
