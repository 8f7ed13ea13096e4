"""Preparing a screen: open and check every input, load the model, and plan, before anything is written.

What ``screening run`` (through :func:`workers.driver.run_screen`), ``screening validate``,
``screening predict`` and each Ray worker share: opening a spec's genome and tracks
(:func:`open_inputs`), loading its model as ``execution`` asks (:func:`load_configured_model`),
the regions it screens (:func:`screen_regions`), the provenance recorded with a result
(:func:`input_provenance`), and :func:`prepare_screen`, which runs every check that can fail on
bad input (spec, genome, tracks, regions, checkpoint) so bad input never leaves a half-written
store behind. No Ray here.
"""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from dataclasses import dataclass
from typing import Any

from screening.models.precision import configure_adapter, worker_precision
from screening.compute.threads import optimize_adapter, tune_cpu_allocator
from screening.core.regions import Region, read_bed, validate_region
from screening.core.version import __version__ as _package_version
from screening.interpret.attribution import check_attributions
from screening.io.genome import Genome
from screening.io.tracks import Track, TrackSet
from screening.models.base import ModelAdapter, ModelError
from screening.models.loader import load_model
from screening.plan import ScreenPlan, plan_screen
from screening.spec import ScreenSpec

__all__ = [
    "PreparedScreen", "check_model_tracks", "input_provenance", "load_configured_model", "open_inputs",
    "prepare_screen", "screen_regions",
]


@dataclass
class PreparedScreen:
    """A validated spec with its inputs, plan and provenance, ready to run."""

    spec: ScreenSpec
    regions: list[Region]
    plan: ScreenPlan
    provenance: dict[str, Any]
    adapter: Any = None  # the model loaded on the driver for checks (reused for plots)
    genome: Any = None
    tracks: Any = None


def open_inputs(spec: ScreenSpec) -> tuple[Genome, TrackSet]:
    """Genome and track handles for a spec (opened lazily, once per process).

    Inputs given as URLs (``s3://``, ``https://``, …) are staged once per node into the local
    cache by :mod:`screening.io.staging`; provenance still records the URL (from the spec).
    """
    genome = Genome(spec.genome.fasta, name=spec.genome.name)
    tracks = TrackSet([Track(t.path, t.name, t.transform) for t in spec.tracks])
    return genome, tracks


def load_configured_model(spec: ScreenSpec) -> tuple[ModelAdapter, str]:
    """The spec's model on its execution device, set up as ``execution`` asks; returns it and the precision used.

    Applies the CPU allocator tuning (``keep_freed_memory``), channels-last and ``torch.compile``,
    the precision (bf16/fp16 on CUDA only) and input overlap.
    """
    execution = spec.execution
    adapter = load_model(spec.model, execution.device)
    if adapter.device.type == "cpu" and execution.keep_freed_memory:
        tune_cpu_allocator()  # reuse freed activations instead of page-faulting them in every batch
    optimize_adapter(adapter, execution.channels_last, execution.compile)
    # On a CPU the model runs on the cores a thread ahead would take, and in a Ray worker (whose threads predate the
    # allocator tuning) that thread faults its buffers in anew: 7-25 % more CPU per perturbation, nothing to hide
    # (docs/benchmarks.md, end to end). Overlap pays where the model runs elsewhere.
    overlap = execution.overlap and adapter.device.type != "cpu"
    return adapter, configure_adapter(adapter, execution.precision, overlap)


def screen_regions(spec: ScreenSpec, chrom_sizes: dict[str, int]) -> list[Region]:
    """The spec's regions (``regions`` and ``bed``), checked against the chromosome sizes."""
    regions = [validate_region(r, chrom_sizes, source="regions") for r in spec.parsed_regions()]
    if spec.bed is not None:
        regions += [validate_region(r, chrom_sizes, source=f"bed {spec.bed}") for r in read_bed(spec.bed)]
    return regions


def _versions() -> dict[str, str]:
    import numpy
    import ray
    import torch
    import zarr

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "zarr": zarr.__version__,
        "ray": ray.__version__,
    }


def check_model_tracks(adapter: ModelAdapter, tracks: TrackSet) -> None:
    """Raise :class:`ModelError` unless the spec's tracks are the model's, in its order."""
    expected = tuple(adapter.track_names)
    if tuple(tracks.names) != expected:
        raise ModelError(
            f"tracks: the model takes tracks {list(expected)} in this order, the spec gives {list(tracks.names)}"
        )


def input_provenance(spec: ScreenSpec, adapter: ModelAdapter, genome: Genome, tracks: TrackSet) -> dict[str, Any]:
    """Versions, host, time, and the model, genome and tracks (with checksums) behind a result."""
    return {
        "package_version": _package_version,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        **_versions(),
        "model": {
            "kind": spec.model.kind,
            "name": adapter.name,
            "checksum": adapter.checksum,
            "window_length": adapter.geometry.window_length,
            "bin_size": adapter.geometry.bin_size,
            "n_bins": adapter.geometry.n_bins,
        },
        "genome": {"name": genome.name, "path": str(spec.genome.fasta), "sha256": genome.sha256()},
        "tracks": [
            {"name": t.name, "path": t.path, "transform": t.transform, "sha256": track.sha256()}
            for t, track in zip(spec.tracks, tracks.tracks)
        ],
    }


def prepare_screen(spec: ScreenSpec) -> PreparedScreen:
    """Open and check every input, load the model once, and plan the screen.

    Raises
    ------
    SpecError, RegionError, GenomeError, TrackError, ModelError
        On any bad input, before anything is written.
    """
    genome, tracks = open_inputs(spec)
    chrom_sizes = genome.chrom_sizes
    regions = screen_regions(spec, chrom_sizes)
    tracks.check({r.chrom: chrom_sizes[r.chrom] for r in regions})
    adapter = load_model(spec.model, "cpu")
    check_model_tracks(adapter, tracks)
    check_attributions(spec, adapter)  # e.g. DeepLIFT on a model with attention: refused now, not in a worker
    plan = plan_screen(spec, regions, chrom_sizes, adapter.geometry, genome)
    tracks.probe(plan.windows(adapter.geometry.window_length))  # corrupt data blocks fail here, not in a worker
    tracks.check_finite(sorted({layout.chrom for layout in plan.layouts}))  # inf in, NaN maps out
    provenance = {
        **input_provenance(spec, adapter, genome, tracks),
        "skipped": plan.skipped,
        "precision": worker_precision(spec.execution),  # {"requested", "used"}: CPU workers run fp32
    }
    return PreparedScreen(spec, regions, plan, provenance, adapter, genome, tracks)
