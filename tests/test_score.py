import numpy as np
import pytest

from screening.score import impact_abs_mean, impact_mean_abs, score_maps


def test_scores_by_hand():
    reference = np.zeros((1, 2, 2), np.float32)
    perturbed = np.array([[[1.0, -1.0], [2.0, 0.0]]], np.float32)
    assert impact_mean_abs(reference, perturbed).tolist() == [1.0]  # (1+1+2+0)/4
    assert impact_abs_mean(reference, perturbed).tolist() == [0.5]  # |(1-1+2+0)/4|


def test_scores_batched_equal_single():
    rng = np.random.default_rng(1)
    reference, perturbed = rng.normal(size=(2, 5, 8, 8)).astype(np.float32)
    batched = score_maps(reference, perturbed, ("impact_mean_abs", "impact_abs_mean"))
    for i in range(5):
        single = score_maps(reference[i : i + 1], perturbed[i : i + 1], ("impact_mean_abs", "impact_abs_mean"))
        for name in batched:
            assert batched[name][i] == single[name][0]


def test_score_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        impact_mean_abs(np.zeros((1, 2, 2)), np.zeros((1, 3, 3)))
