"""Shared pytest fixtures."""

from __future__ import annotations

import os
import random
import socket
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


# --- toy inputs shared by engine, worker, runner and CLI tests -------------------------------

#: A tiny C.Origami-architecture configuration: 4 encoder blocks (bins of 32 bp), 16 bins, 512 bp window.
TOY_CONFIG = {
    "mid_hidden": 16,
    "stem_width": 4,
    "block_widths": [4, 4, 8, 8],
    "n_layers": 1,
    "n_heads": 2,
    "ff_hidden": 16,
    "decoder_hidden": 8,
    "decoder_blocks": 2,
    "window_length": 512,
}


def write_toy_genome(directory: Path, sizes: dict[str, int] | None = None, seed: int = 3) -> dict[str, Path]:
    """A random FASTA and CTCF/ATAC bigWigs (50 bp steps) over the same chromosomes."""
    import numpy as np
    import pyBigWig

    sizes = sizes or {"chr1": 6_000, "chr2": 3_000}
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    fasta = directory / "toy.fa"
    with fasta.open("w") as handle:
        for chrom, size in sizes.items():
            seq = "".join(rng.choice(list("ACGT"), size))
            handle.write(f">{chrom}\n" + "\n".join(seq[i : i + 60] for i in range(0, size, 60)) + "\n")
    paths = {"fasta": fasta}
    for name in ("ctcf", "atac"):
        path = directory / f"{name}.bw"
        bw = pyBigWig.open(str(path), "w")
        bw.addHeader(list(sizes.items()))
        for chrom, size in sizes.items():
            starts = list(range(0, size, 50))
            values = rng.gamma(1.0, 2.0, len(starts)).astype(float).tolist()
            bw.addEntries([chrom] * len(starts), starts, ends=[s + 50 for s in starts], values=values)
        bw.close()
        paths[name] = path
    return paths


def toy_spec_dict(paths: dict[str, Path], store: Path, **changes) -> dict:
    """A spec over the toy genome with the toy model (random weights, seed 0)."""
    spec = {
        "name": "toy",
        "model": {"kind": "corigami", "random_seed": 0, "config": TOY_CONFIG},
        "genome": {"fasta": str(paths["fasta"]), "name": "toy"},
        "tracks": [
            {"name": "ctcf", "path": str(paths["ctcf"]), "transform": "none"},
            {"name": "atac", "path": str(paths["atac"]), "transform": "log1p"},
        ],
        "regions": ["chr1:2,000-2,400", "chr2:1,000-1,200"],
        "perturbations": [{"kind": "deletion", "name": "del20", "width": 20, "step": 20}],
        "execution": {"num_workers": 1, "batch_size": 4, "chunk_size": 4, "device": "cpu"},
        "output": {"store": str(store)},
    }
    spec.update(changes)
    return spec


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server a test starts later.

    Chosen below the kernel's ephemeral range and above Ray's worker ports (10002-19999): a port
    the kernel hands out (bind to port 0) can be taken again by any of the dozens of sockets Ray
    opens on ephemeral ports before the test's server binds it ("Failed to bind", seen on CI).
    """
    port_range = Path("/proc/sys/net/ipv4/ip_local_port_range")
    first_ephemeral = int(port_range.read_text().split()[0]) if port_range.exists() else 32768
    candidates = list(range(20_000, max(first_ephemeral, 20_100)))
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port between 20000 and the ephemeral range")


#: Folder of test-only user models (``python_path`` of ``slow_model_section``).
TEST_MODELS = Path(__file__).resolve().parent / "models"


def slow_model_section(delay_s: float) -> dict:
    """``model`` section of a tiny user model whose forward takes at least ``delay_s`` s.

    The same seed gives the same weights and maps at any delay; fault-tolerance tests use it
    so that units last long enough to be interrupted mid-way on any machine.
    """
    return {
        "kind": "user",
        "import_path": "screening_slow_model:SlowContactModel",
        "python_path": [str(TEST_MODELS)],
        "config": {"delay_s": delay_s, "n_tracks": 2, "bin_size": 32, "hidden": 4},
        "random_seed": 0,
        "declare": {"window_length": 512, "bin_size": 32, "n_bins": 16, "input_layout": "NCL", "alphabet": "ACGT",
                    "n_value": 0.25, "tracks": ["ctcf", "atac"], "symmetric": True},
    }


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
    return write_toy_genome(tmp_path_factory.mktemp("toy"))


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
