"""Shared pytest fixtures (plain helpers and constants live in helpers.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ``shared`` folder beside the repository (reference data and notes).

    Skipped when absent, unless ``SCREENING_REQUIRE_SHARED=1``, which turns its absence
    into a failure (for CI that must exercise the reference comparisons).
    """
    path = Path(__file__).resolve().parents[2] / "shared"
    if not path.is_dir():
        message = f"shared reference data not found at {path}"
        if os.environ.get("SCREENING_REQUIRE_SHARED") == "1":
            pytest.fail(f"{message} (SCREENING_REQUIRE_SHARED=1)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for tiny models: on a shared 2-core machine two threads spin-wait on
    each other under load (14.5 s against 3.9 s for the same tests, measured)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def toy_paths(tmp_path_factory) -> dict[str, Path]:
    from helpers import write_toy_genome

    return write_toy_genome(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def toy(toy_paths):
    """``(adapter, genome, tracks)``: the toy C.Origami (random weights, seed 0) on the toy genome and its two
    tracks. Modules that need another toy define their own ``toy``."""
    from helpers import TOY_CONFIG

    from screening.io.genome import Genome
    from screening.io.tracks import Track, TrackSet
    from screening.models.corigami import CorigamiAdapter, CorigamiConfig

    adapter = CorigamiAdapter.random_init(CorigamiConfig(**TOY_CONFIG), seed=0)
    genome = Genome(toy_paths["fasta"])
    tracks = TrackSet([Track(toy_paths["ctcf"], "ctcf"), Track(toy_paths["atac"], "atac", "log1p")])
    return adapter, genome, tracks


# --- one local Ray for the test session -----------------------------------------------------------


def _start_session_ray() -> None:
    import ray

    from helpers import RAY_OPTIONS

    if not ray.is_initialized():
        ray.init(**RAY_OPTIONS)


@pytest.fixture(scope="session")
def ray_session():
    """The local Ray every test that needs a cluster shares (``helpers.RAY_OPTIONS``: 2 CPUs, no dashboard).

    Started on first use and shut down at the end of the session. The runner and the CLI find it
    initialised and use it (``workers.driver._init_ray``) instead of starting an embedded one. A module
    that needs a cluster of its own (other resources, an environment its workers must inherit, the
    dashboard, Serve's detached actors, several nodes) ends this one first (``helpers.separate_ray``);
    the next test that asks for ``ray_session`` starts it again (``pytest_runtest_setup`` below).
    """
    import ray

    _start_session_ray()
    yield
    ray.shutdown()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Start the session Ray again before a test that needs it, if a separate cluster ended it meanwhile."""
    if "ray_session" in getattr(item, "fixturenames", ()) and "ray" in sys.modules:
        _start_session_ray()


def pytest_collection_modifyitems(config, items):
    """Skip ``gpu``-marked tests when torch sees no CUDA device."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
