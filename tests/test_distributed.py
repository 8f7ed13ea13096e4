"""Fault tolerance on a multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``).

Every node runs locally. They are not bound to 127.0.0.1: ``ray.init(address="127.0.0.1:…")``
rewrites a loopback address to the host's own IP (``resolve_ip_for_localhost``), so a driver
could not reach a GCS listening on loopback only.

The runner connects through ``execution.address``. Worker processes are SIGKILLed while a
unit runs (found through Ray's state API), and a whole non-head node is removed mid-screen;
every unit is redone by a live worker, none is lost or reported twice, and the results equal
an uninterrupted run computed in-process.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from helpers import slow_model_section, toy_spec_dict
from screening.store.reader import open_results
from screening.prepare import prepare_screen
from workers.driver import run_screen
from screening.spec import parse_spec
from screening.store.writer import open_or_create_store

SCORES = ("impact_mean_abs", "impact_abs_mean")

# Several nodes of their own (not the session Ray), with the dashboard: the default run keeps the single-node
# retry (test_runner.py::test_killed_worker_unit_is_redone_elsewhere_with_identical_results).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """A head and two worker nodes, 1 CPU each, all on this machine (dashboard: the state API)."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the session Ray, if another module started it: the runner must connect to this cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def spec_for(toy_paths, store, address, delay_s: float = 0.3):
    """80 deletions in 14 units of 6; each unit makes 7 forward passes of at least ``delay_s`` s."""
    raw = toy_spec_dict(toy_paths, store, regions=["chr1:2,000-3,600"], model=slow_model_section(delay_s))
    raw["execution"].update(num_workers=2, chunk_size=6, batch_size=1, max_retries=3, address=address)
    return parse_spec(raw)


@pytest.fixture(scope="module")
def reference(toy_paths, tmp_path_factory):
    """The screen computed without Ray, unit by unit in this process."""
    from workers.screen_worker import ScreenWorker, run_in_process

    store_path = tmp_path_factory.mktemp("reference") / "clean.zarr"
    spec = spec_for(toy_paths, store_path, None, delay_s=0.0)  # same weights, no wait
    prepared = prepare_screen(spec)
    open_or_create_store(store_path, spec.model_dump(mode="json"), spec.science_hash(), prepared.provenance,
                         prepared.plan.layouts)
    worker = ScreenWorker(spec.model_dump(mode="json"), torch_threads=1)
    run_in_process(worker, ((unit, prepared.plan.payload(unit)) for unit in prepared.plan.units))
    return open_results(store_path).query("chr1").compute(), len(prepared.plan.units)


def alive_workers() -> list:
    from ray.util.state import list_actors

    return list_actors(filters=[("class_name", "=", "ScreenWorker"), ("state", "=", "ALIVE")])


def running_unit_actor_ids() -> set[str]:
    """Actors that are executing ``ScreenWorker.run`` right now."""
    from ray.util.state import list_tasks

    tasks = list_tasks(filters=[("state", "=", "RUNNING")])
    return {t.actor_id for t in tasks if t.actor_id and t.name and t.name.endswith("ScreenWorker.run")}


def run_with(spec, action) -> tuple[object, list, list]:
    """Run ``spec`` while ``action(progress_log)`` runs in a thread; returns the summary, what the
    action did, and every progress report."""
    log: list = []
    done: list = []
    thread = threading.Thread(target=lambda: done.extend(action(log)), daemon=True)
    thread.start()
    summary = run_screen(spec, progress=False, on_progress=log.append)
    thread.join(timeout=120)
    return summary, done, log


def check_complete_and_equal(store, reference, log, summary):
    want, n_units = reference
    results = open_results(store)
    got = results.query("chr1").compute()
    assert results.is_complete and bool(got["done"].all())
    np.testing.assert_array_equal(got["start"].values, want["start"].values)
    for score in SCORES:
        np.testing.assert_allclose(got[score].values, want[score].values, rtol=1e-6, err_msg=score)
    # one report per finished unit (after a first one at 0): nothing lost, nothing counted twice
    assert [p.units_done for p in log if p.units_done] == list(range(1, n_units + 1))
    assert summary.n_units == n_units and summary.retries >= 1


def test_sigkilled_workers_mid_unit_are_redone_on_a_multinode_cluster(cluster, toy_paths, tmp_path, reference):
    store = tmp_path / "killed.zarr"

    def killer(log):
        killed = []
        deadline = time.time() + 90
        while time.time() < deadline and len(killed) < 2:
            if len(log) >= 2 + 4 * len(killed):  # after 2 units, then again 4 units later
                busy = running_unit_actor_ids()
                victims = [a for a in alive_workers() if a.actor_id in busy and a.pid not in killed]
                if victims:
                    os.kill(victims[0].pid, signal.SIGKILL)
                    killed.append(victims[0].pid)
            time.sleep(0.02)
        return killed

    summary, killed, log = run_with(spec_for(toy_paths, store, cluster.address), killer)
    assert len(killed) == 2, "the screen finished before two workers could be killed mid-unit"
    check_complete_and_equal(store, reference, log, summary)
    assert summary.retries >= 2


def test_removed_node_mid_screen_is_survived(cluster, toy_paths, tmp_path, reference):
    store = tmp_path / "node_lost.zarr"
    head_id = cluster.head_node.node_id

    def remove_a_worker_node(log):
        deadline = time.time() + 90
        while time.time() < deadline:
            if len(log) >= 2:  # a node whose worker is computing a unit right now
                busy = running_unit_actor_ids()
                hosts = {a.node_id for a in alive_workers() if a.actor_id in busy} - {head_id}
                nodes = [n for n in cluster.worker_nodes if n.node_id in hosts]
                if nodes:
                    cluster.remove_node(nodes[0], allow_graceful=False)
                    return [nodes[0].node_id]
            time.sleep(0.02)
        return []

    summary, removed, log = run_with(spec_for(toy_paths, store, cluster.address), remove_a_worker_node)
    assert removed, "no worker node was removed (the screen finished first)"
    check_complete_and_equal(store, reference, log, summary)
