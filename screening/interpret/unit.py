"""One work unit of an attribution analysis: the gradient kinds' counterpart of
:func:`screening.compute.engine.run_unit`.

Each distinct model window of the unit is attributed once (a batched backward pass through
:func:`screening.interpret.attribution.attribute`) and keeps the positions it owns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from screening.compute.engine import NonFiniteMapError, UnitResult, load_span
from screening.interpret.attribution import Attribution, attribute
from screening.io.genome import Genome
from screening.io.tracks import TrackSet
from screening.maps.targets import window_target
from screening.models.base import ModelAdapter
from screening.plan import UnitPayload

__all__ = ["run_attribution"]


def run_attribution(
    adapter: ModelAdapter, genome: Genome, tracks: TrackSet | None, spec: Any, chrom: str, payload: UnitPayload
) -> UnitResult:
    """Attributions of one unit: each distinct window is computed once and keeps the positions it owns.

    Parameters
    ----------
    adapter
        The model (its adapter must support attribution).
    genome, tracks
        Where the inputs are read.
    spec
        The analysis (:class:`screening.spec.AttributionSpec`).
    chrom, payload
        The unit's chromosome and :meth:`screening.plan.ScreenPlan.payload`.

    Returns
    -------
    UnitResult
        ``values``: ``attribution`` and ``attribution_corrected`` ``float32 [n, 4]`` (A, C, G, T),
        ``track_<name> [n]``, and the window's ``target`` (and ``completeness_error``) per position.

    Raises
    ------
    NonFiniteMapError
        If a window's target or attributions hold inf or NaN.
    """
    window = adapter.geometry.window_length
    starts, window_starts = payload["start"], payload["window_start"]
    n = len(starts)
    names = list(tracks.names) if tracks is not None else []
    out = {"attribution": np.full((n, 4), np.nan, np.float32), "attribution_corrected": np.full((n, 4), np.nan, np.float32),
           **{f"track_{t}": np.full(n, np.nan, np.float32) for t in names}, "target": np.full(n, np.nan, np.float32)}
    if spec.reports_completeness:
        out["completeness_error"] = np.full(n, np.nan, np.float32)
    for window_start in np.unique(window_starts).tolist():
        rows = np.flatnonzero(window_starts == window_start)
        span = load_span(genome, tracks, chrom, window_start, window_start + window)
        result = attribute(
            adapter, span.codes[None], None if span.tracks is None else span.tracks[None],
            window_target(spec.target, window_start, adapter.geometry, chrom), spec.method,
            baseline=spec.baseline, track_baseline=spec.track_baseline, n_shuffles=spec.n_shuffles, seed=spec.seed,
            n_steps=spec.n_steps, internal_batch_size=spec.internal_batch_size, checkpoint=spec.checkpoint,
        )
        _check_finite(result, chrom, window_start, window)
        offsets = starts[rows] - window_start
        out["attribution"][rows] = result.sequence[0][offsets]
        out["attribution_corrected"][rows] = result.sequence_corrected[0][offsets]
        for i, name in enumerate(names):
            out[f"track_{name}"][rows] = 0.0 if result.tracks is None else result.tracks[0, i][offsets]
        out["target"][rows] = result.target[0]
        if "completeness_error" in out and result.completeness_error is not None:
            out["completeness_error"][rows] = result.completeness_error[0]
    return UnitResult(out)


def _check_finite(result: Attribution, chrom: str, window_start: int, window: int) -> None:
    """Raise :class:`NonFiniteMapError` when a window's target (read from the predicted map) or its
    attributions are not finite, rather than store them as results."""
    for what, values in (("the target of the predicted map", result.target), ("the attribution", result.sequence)):
        if not np.isfinite(values).all():
            raise NonFiniteMapError(
                f"model output is not finite for the window {chrom}:{window_start:,}-{window_start + window:,}: "
                f"{what} holds inf or NaN; the unit fails rather than store it"
            )
