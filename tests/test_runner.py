"""Fault tolerance on a real local Ray: a worker process killed with SIGKILL mid-screen."""

import os
import signal
import threading
import time

from pathlib import Path

import numpy as np
import yaml

from screening import open_results
from screening.runner import run_screen
from screening.spec import load_spec

from conftest import toy_spec_dict


def worker_pids() -> list[int]:
    """PIDs of Ray actor processes running ScreenWorker (Ray sets their title to ray::ScreenWorker…)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"ScreenWorker" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def spec_file(toy_paths, tmp_path, name):
    raw = toy_spec_dict(toy_paths, tmp_path / f"{name}.zarr", regions=["chr1:2,000-5,500"])
    raw["execution"].update(chunk_size=8, batch_size=1, max_retries=3)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


def test_killed_worker_unit_is_redone_elsewhere_with_identical_results(toy_paths, tmp_path):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        reference = run_screen(spec_file(toy_paths, tmp_path, "clean"), progress=False)
        killed: list[int] = []

        def killer():
            deadline = time.time() + 60
            while time.time() < deadline and not killed:
                store = tmp_path / "killed.zarr"
                pids = worker_pids()
                if pids and store.exists() and open_results(store).progress[0] >= 2:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                time.sleep(0.02)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        summary = run_screen(spec_file(toy_paths, tmp_path, "killed"), progress=False)
        thread.join()
    finally:
        ray.shutdown()
    assert killed, "no worker was killed (the screen finished first)"
    assert summary.retries >= 1
    clean = open_results(tmp_path / "clean.zarr").query("chr1").compute()
    redone = open_results(tmp_path / "killed.zarr").query("chr1").compute()
    assert redone["done"].all() and open_results(tmp_path / "killed.zarr").is_complete
    np.testing.assert_array_equal(redone["start"].values, clean["start"].values)
    np.testing.assert_allclose(redone["impact_mean_abs"].values, clean["impact_mean_abs"].values, rtol=1e-6)
    assert reference.n_perturbations == summary.n_perturbations == 175
