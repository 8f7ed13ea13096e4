"""The screening engine: build batched perturbed inputs, predict once per batch, score.

The engine reads through :class:`~screening.io.genome.Genome` and
:class:`~screening.io.tracks.TrackSet` handles and calls the model adapter's one
batched ``predict``; perturbations and scores are the pure functions of
:mod:`screening.perturb` and :mod:`screening.score`. Nothing here writes files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from screening.models.base import ModelAdapter
from screening.perturb import centered_window_start, delete
from screening.score import score_maps

__all__ = ["Span", "load_span", "deletion_pair", "run_deletions", "predict_deletion"]


@dataclass
class Span:
    """Sequence codes ``uint8 [L]`` and tracks ``float32 [T, L]`` (or None) of one interval."""

    codes: np.ndarray
    tracks: np.ndarray | None


def load_span(genome, tracks, chrom: str, start: int, end: int) -> Span:
    """Read sequence and transformed tracks of ``chrom:[start, end)``."""
    codes = genome.fetch(chrom, start, end)
    values = tracks.fetch(chrom, start, end) if tracks is not None and len(tracks.names) else None
    return Span(codes, values)


def deletion_pair(span: Span, window_start: int, start: int, width: int, window: int, padding: str) -> tuple[Span, Span]:
    """Reference and deleted inputs for one deletion from its loaded span.

    The span starts at ``window_start`` and holds ``window + width`` bp; the
    reference is its first ``window`` bp.
    """
    reference = Span(span.codes[:window], None if span.tracks is None else span.tracks[:, :window])
    codes, values = delete(span.codes, span.tracks, start - window_start, width, window, padding)
    return reference, Span(codes, values)


def _stack(spans: list[Span]) -> tuple[np.ndarray, np.ndarray | None]:
    codes = np.stack([s.codes for s in spans])
    tracks = None if spans[0].tracks is None else np.stack([s.tracks for s in spans])
    return codes, tracks


def _predict(adapter: ModelAdapter, spans: list[Span], batch_size: int) -> np.ndarray:
    maps = []
    for i in range(0, len(spans), batch_size):
        maps.append(adapter.predict(*_stack(spans[i : i + batch_size])))
    return np.concatenate(maps)


def _groups(n: int, size: int) -> Iterator[slice]:
    for lo in range(0, n, size):
        yield slice(lo, min(lo + size, n))


def run_deletions(
    adapter: ModelAdapter,
    genome,
    tracks,
    chrom: str,
    starts: np.ndarray,
    width: int,
    padding: str,
    scores: tuple[str, ...],
    batch_size: int = 4,
    window_starts: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Score deletions ``[start, start + width)`` on ``chrom``, each in a window centred on it.

    Work proceeds in groups of ``max(1, batch_size // 2)`` deletions so every
    forward pass holds up to ``batch_size`` inputs (reference windows and deleted
    windows together) and memory stays flat however many deletions there are.
    Each reference window is predicted once, shared by every deletion that uses it.

    Returns
    -------
    dict
        ``score name → float32 [len(starts)]``.
    """
    window = adapter.geometry.window_length
    if window_starts is None:
        window_starts = np.array([centered_window_start(int(s), width, window) for s in starts], np.int64)
    out = {name: np.empty(len(starts), np.float32) for name in scores}
    for group in _groups(len(starts), max(1, batch_size // 2)):
        references: dict[int, Span] = {}
        deleted: list[Span] = []
        for start, window_start in zip(starts[group].tolist(), window_starts[group].tolist()):
            span = load_span(genome, tracks, chrom, window_start, window_start + window + width)
            reference, perturbed = deletion_pair(span, window_start, start, width, window, padding)
            references.setdefault(window_start, reference)
            deleted.append(perturbed)
        keys = list(references)
        maps = _predict(adapter, [references[k] for k in keys] + deleted, batch_size)
        reference_maps = maps[: len(keys)][[keys.index(w) for w in window_starts[group].tolist()]]
        for name, values in score_maps(reference_maps, maps[len(keys) :], scores).items():
            out[name][group] = values
    return out


def predict_deletion(
    adapter: ModelAdapter, genome, tracks, chrom: str, start: int, width: int, padding: str = "zero"
) -> tuple[np.ndarray, np.ndarray, int]:
    """Reference and deleted maps for one deletion (for plots and checks).

    Returns
    -------
    (reference_map, deleted_map, window_start)
    """
    window = adapter.geometry.window_length
    window_start = centered_window_start(start, width, window)
    span = load_span(genome, tracks, chrom, window_start, window_start + window + width)
    reference, perturbed = deletion_pair(span, window_start, start, width, window, padding)
    maps = _predict(adapter, [reference, perturbed], 2)
    return maps[0], maps[1], window_start
