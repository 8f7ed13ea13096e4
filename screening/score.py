"""Scores between reference and perturbed contact maps (pure, batched).

Every score takes ``reference`` and ``perturbed`` maps of shape ``[B, n, n]`` and
returns ``float64 [B]``. Differences are taken in the maps' own precision
(float32, as the original) and reduced in float64.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["SCORES", "impact_mean_abs", "impact_abs_mean", "score_maps"]


def _diff(reference: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    if reference.shape != perturbed.shape:
        raise ValueError(f"map shapes differ: {reference.shape} vs {perturbed.shape}")
    return (perturbed - reference).astype(np.float64)


def impact_mean_abs(reference: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """Mean over the map of ``|perturbed − reference|`` (C.Origami's current screen)."""
    return np.abs(_diff(reference, perturbed)).mean(axis=(-2, -1))


def impact_abs_mean(reference: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """``|mean over the map of (perturbed − reference)|`` (the ``corigami==0.0.1`` release)."""
    return np.abs(_diff(reference, perturbed).mean(axis=(-2, -1)))


SCORES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "impact_mean_abs": impact_mean_abs,
    "impact_abs_mean": impact_abs_mean,
}


def score_maps(reference: np.ndarray, perturbed: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Compute the named scores for a batch of map pairs."""
    return {name: SCORES[name](reference, perturbed) for name in names}
