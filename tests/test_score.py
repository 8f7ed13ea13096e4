import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screening.maps.align import apply, bin_alignment, identity
from screening.maps.score import (
    SCORES,
    available_scores,
    impact_abs_mean,
    impact_mean_abs,
    insulation,
    insulation_delta,
    mse,
    pearson,
    roi_mean_delta,
    scd,
    score_maps,
    spearman,
    ssd,
)
from screening.maps.score import _average_ranks


def maps(*rows) -> np.ndarray:
    return np.array([rows], np.float32)


def test_scores_by_hand():
    reference = np.zeros((1, 2, 2), np.float32)
    perturbed = np.array([[[1.0, -1.0], [2.0, 0.0]]], np.float32)
    assert impact_mean_abs(reference, perturbed).tolist() == [1.0]  # (1+1+2+0)/4
    assert impact_abs_mean(reference, perturbed).tolist() == [0.5]  # |(1-1+2+0)/4|
    assert mse(reference, perturbed).tolist() == [1.5]  # (1+1+4+0)/4
    # Upper triangle with the diagonal: pixels 1, -1, 0; above it: -1 only; Akita's offset 2: none.
    assert scd(reference, perturbed, diagonal_offset=0).tolist() == [math.sqrt(2)]
    assert scd(reference, perturbed, diagonal_offset=1).tolist() == [1.0]
    assert np.isnan(scd(reference, perturbed)).all()
    assert ssd(reference, perturbed, diagonal_offset=0).tolist() == [math.sqrt(2)]
    assert ssd(perturbed, reference, diagonal_offset=0).tolist() == [-math.sqrt(2)]


def test_akita_scores_use_pixels_two_off_the_diagonal():
    reference = np.arange(9, dtype=np.float32).reshape(1, 3, 3)  # reference[0, 2] = 2
    perturbed = reference.copy()
    perturbed[0, 1:, :] += 100  # below the first row: nothing Akita counts
    perturbed[0, 0, 2] = -4
    assert scd(reference, perturbed).tolist() == [6.0]  # |-4 - 2|
    assert ssd(reference, perturbed).tolist() == [2.0]  # 4 - 2


def test_correlations_known_cases():
    reference = np.arange(16, dtype=np.float32).reshape(1, 4, 4) ** 1.5
    for score in (pearson, spearman):
        assert score(reference, 2 * reference + 1) == pytest.approx([1.0])
        assert score(reference, -reference) == pytest.approx([-1.0])
        assert np.isnan(score(reference, np.full_like(reference, 3.0))).all()
    curved = np.exp(reference / 10)
    assert spearman(reference, curved) == pytest.approx([1.0])
    assert pearson(reference, curved)[0] < 0.99


def test_spearman_ties_by_hand():
    # Ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): r = 4.5 / sqrt(4.5 · 5) = sqrt(0.9).
    assert spearman(maps([1, 3], [2, 4]), maps([1, 2], [2, 3])) == pytest.approx([math.sqrt(0.9)])
    assert pearson(maps([1, 3], [2, 4]), maps([1, 2], [2, 3])) == pytest.approx([math.sqrt(0.9)])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 4), min_size=7, max_size=7), min_size=1, max_size=3))
def test_average_ranks_match_a_direct_count(rows):
    x = np.array(rows, np.float64)
    x[0, 0] = np.nan
    got = _average_ranks(x)
    for row, ranks in zip(x, got):
        valid = row[~np.isnan(row)]
        for value, rank in zip(row, ranks):
            if np.isnan(value):
                assert np.isnan(rank)
            else:  # mean position (1-based) of the tied run
                assert rank == (valid < value).sum() + ((valid == value).sum() + 1) / 2


def test_insulation_by_hand():
    m = np.zeros((1, 4, 4))
    m[0, [0, 0, 1, 1], [1, 2, 1, 2]] = 1  # square of bin 1: rows 0-1, cols 1-2
    m[0, [1, 2, 2], [3, 2, 3]] = 5  # square of bin 2: rows 1-2, cols 2-3 (shares m[1, 2] = 1)
    track = insulation(m, window=2, ignore_diags=0)  # raw 1 and 16/4 = 4, mean 2.5
    np.testing.assert_allclose(track[0, 1:3], np.log2([1 / 2.5, 4 / 2.5]))
    assert np.isnan(track[0, [0, 3]]).all()  # squares leave the map
    # ignore_diags=1 drops m[1, 1] and m[2, 2]: raw 3/3 and 11/3.
    np.testing.assert_allclose(insulation(m, 2, 1)[0, 1:3], np.log2(np.array([1, 11 / 3]) / ((1 + 11 / 3) / 2)))


def boundary_map(n: int = 13, boundary: int = 6) -> np.ndarray:
    """Two domains with a non-interacting boundary bin between them."""
    domain = (np.arange(n) > boundary).astype(int) - (np.arange(n) < boundary)
    same = (domain[:, None] == domain[None, :]) & (domain[:, None] != 0)
    return np.where(same, 2.0, 0.1)[None].astype(np.float32)


def test_insulation_finds_a_planted_boundary():
    track = insulation(boundary_map(), window=3, ignore_diags=2)[0]
    assert np.nanargmin(track) == 6
    assert track[6] < -1
    # Remove the boundary: insulation at bin 6 rises; outside the map or the valid range: NaN.
    flat = np.full_like(boundary_map(), 2.0)
    delta = insulation_delta(np.repeat(boundary_map(), 3, 0), np.repeat(flat, 3, 0), [6, 0, 40], window=3)
    assert delta[0] > 1 and np.isnan(delta[1:]).all()
    assert insulation_delta(boundary_map(), boundary_map(), 6, window=3).tolist() == [0.0]


def test_roi_mean_delta_by_hand():
    reference = np.zeros((2, 3, 3), np.float32)
    perturbed = np.arange(18, dtype=np.float32).reshape(2, 3, 3)
    # Block rows 0-1 × column 2: (2 + 5) / 2 and (11 + 14) / 2.
    assert roi_mean_delta(reference, perturbed, slice(0, 2), [2]).tolist() == [3.5, 12.5]
    # One block per sample; bins outside the map are ignored, not wrapped.
    per_sample = roi_mean_delta(reference, perturbed, [slice(-1, 1), [2, 7]], [[0], slice(1, 9)])
    assert per_sample.tolist() == [0.0, (16 + 17) / 2]
    assert np.isnan(roi_mean_delta(reference, perturbed, slice(5, 9), slice(0, 3))).all()


NAMES = available_scores()
CONTEXT = {"position": [3, 4, 2, 5, 4], "roi": (slice(1, 3), [5, 6]), "window": 2}


def random_batch(seed: int = 1, b: int = 5, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(size=(2, b, n, n))).astype(np.float32) + 0.1


def test_scores_batched_equal_single():
    reference, perturbed = random_batch()
    alignments = [bin_alignment(8 * i, 4 * i, 0, 4, 8) for i in range(5)]
    batched = score_maps(reference, perturbed, NAMES, alignments, CONTEXT)
    assert set(batched) == set(NAMES)
    for i in range(5):
        context = dict(CONTEXT, position=CONTEXT["position"][i])
        single = score_maps(reference[i : i + 1], perturbed[i : i + 1], NAMES, alignments[i : i + 1], context)
        for name in NAMES:
            assert batched[name].dtype == np.float64 and batched[name].shape == (5,)
            np.testing.assert_allclose(batched[name][i], single[name][0], rtol=1e-12, equal_nan=True)


def test_legacy_call_and_registry_callables():
    reference, perturbed = random_batch()
    got = score_maps(reference, perturbed, ("impact_mean_abs", "impact_abs_mean"))
    assert list(got) == ["impact_mean_abs", "impact_abs_mean"]
    # Unmasked maps give the original scores bit for bit.
    assert np.array_equal(
        got["impact_mean_abs"], np.abs((perturbed - reference).astype(np.float64)).mean(axis=(-2, -1))
    )
    assert np.array_equal(SCORES["impact_abs_mean"](reference, perturbed), got["impact_abs_mean"])
    assert SCORES["insulation_delta"].needs == ("position",) and SCORES["roi_mean_delta"].needs == ("roi",)


def test_identity_alignment_changes_nothing():
    reference, perturbed = random_batch()
    names = [n for n in SCORES]
    plain = score_maps(reference, perturbed, names, context=CONTEXT)
    aligned = score_maps(reference, perturbed, [n + "_aligned" for n in names], [identity(8)] * 5, CONTEXT)
    for name in names:
        np.testing.assert_allclose(aligned[name + "_aligned"], plain[name], rtol=1e-12, equal_nan=True)


def test_aligned_scores_equal_scores_of_the_submatrices():
    reference, perturbed = random_batch(b=3)
    alignments = [bin_alignment(8, 8, 0, 4, 8), bin_alignment(6, 0, 4, 4, 8), bin_alignment(12, 3, 3, 4, 8)]
    names = ("impact_mean_abs", "impact_abs_mean", "mse", "pearson", "spearman", "scd", "ssd")
    context = {"diagonal_offset": 1}  # offsets 0 and 1 mean the same on a submatrix; 2+ count masked bins
    aligned = score_maps(reference, perturbed, [n + "_aligned" for n in names], alignments, context)
    for b, al in enumerate(alignments):
        ref_sub, alt_sub = apply(al, reference[b], perturbed[b])
        for name in names:
            kwargs = {"diagonal_offset": 1} if name in ("scd", "ssd") else {}
            want = SCORES[name](ref_sub[None], alt_sub[None], **kwargs)[0]
            assert np.isfinite(aligned[name + "_aligned"][b])
            assert aligned[name + "_aligned"][b] == pytest.approx(want, rel=1e-9)


def test_aligned_deletion_scores_remove_the_shift():
    """A deletion of whole bins in a map that depends only on genomic position scores 0 once aligned."""
    n, width = 16, 2
    coords = np.arange(n + width, dtype=np.float64)
    genome = np.exp(-np.abs(coords[:, None] - coords[None, :]) / 3) + np.sin(coords)[:, None] * np.cos(coords)[None, :]
    kept = np.r_[0:6, 6 + width : n + width]  # bins 6-7 deleted, downstream shifts in
    reference = genome[None, :n, :n].astype(np.float32)
    perturbed = genome[None][:, kept][:, :, kept].astype(np.float32)
    al = [bin_alignment(6 * 10, width * 10, 0, 10, n)]
    got = score_maps(reference, perturbed, ["mse", "mse_aligned", "pearson_aligned", "scd_aligned"], al)
    assert got["mse"][0] > 0.01
    assert got["mse_aligned"][0] == 0.0 and got["scd_aligned"][0] == 0.0
    assert got["pearson_aligned"][0] == pytest.approx(1.0)


def test_score_errors():
    reference, perturbed = random_batch()
    with pytest.raises(ValueError, match="unknown score 'nope'"):
        score_maps(reference, perturbed, ["nope"])
    with pytest.raises(ValueError, match="aligned scores need"):
        score_maps(reference, perturbed, ["mse_aligned"])
    with pytest.raises(ValueError, match=r"needs context \['position'\]"):
        score_maps(reference, perturbed, ["insulation_delta"])
    with pytest.raises(ValueError, match="shapes differ"):
        impact_mean_abs(np.zeros((1, 2, 2)), np.zeros((1, 3, 3)))


# --- the torch twins (screening.maps.score_torch): numpy above is the reference ----------------------------

import torch  # noqa: E402

from screening.maps import score_torch  # noqa: E402
from screening.maps.align import AlignmentCache, align_maps, alignment_index  # noqa: E402
from screening.maps.score_torch import TORCH_SCORES, align_tensors, score_tensors  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6  # the tolerance asked of the twins; they agree to float64 rounding (~1e-12)
BIN, N_BINS = 10, 16
#: (offset, ref_length, alt_length) on 16 bins of 10 bp: edits that shift bins, split them, or reach the edges
GEOMETRIES = [
    (60, 20, 0),  # deletion of whole bins: downstream shifts by 2
    (63, 14, 0),  # a bin and a half deleted, split bins masked
    (55, 0, 30),  # insertion: shift +3
    (55, 0, 4),  # small insertion: no shift, its bin masked
    (72, 1, 1),  # a substitution (mutagenesis)
    (40, 30, 30),  # inversion
    (0, 20, 0),  # at the left edge
    (150, 10, 0),  # the last bin
    (140, 0, 40),  # insertion pushing bins out of the map
    (10, 120, 0),  # most of the map deleted
    (30, 0, 0),  # nothing
]
B = len(GEOMETRIES)
EDGE_CONTEXT = {
    "position": [3, -1, 16, 0, 15, 7, 1, 14, 8, 2, 5],  # outside the map, and bins whose square leaves it
    "roi": (
        [
            slice(1, 3),
            [],
            [5, 6, 40],
            slice(12, None),
            slice(None, 2),
            [7],
            slice(20, 30),
            [0, 15],
            [3, 4],
            slice(0, 16),
            [-3, 2],
        ],
        [[5, 6], slice(0, 4), [], [15], slice(3, 9), [7], [1], slice(None), [9, 10, 11], slice(4, 5), [2]],
    ),
    "window": 3,
}


def twin_maps(seed: int, kind: str, n: int = N_BINS, b: int = B) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference, perturbed = (np.abs(rng.normal(size=(2, b, n, n))) + 0.1).astype(np.float32)
    if kind == "ties":  # few distinct values: Spearman's average ranks
        reference, perturbed = np.round(reference * 2) + 1, np.round(perturbed * 2) + 1
    elif kind == "nan":  # pixels no model predicted
        reference[0, 2, :] = np.nan
        perturbed[1, :, 3] = np.nan
        perturbed[2] = np.nan
    elif kind == "constant":  # correlations NaN
        reference[0], perturbed[1] = 2.0, 5.0
    elif kind == "float64":
        reference, perturbed = reference.astype(np.float64), perturbed.astype(np.float64)
    return reference, perturbed


def assert_twins(reference, perturbed, names, alignments, context, device: str = "cpu") -> float:
    """The torch scores equal numpy's on ``device``; returns the largest absolute difference."""
    want = score_maps(reference, perturbed, names, alignments, context)
    got = score_tensors(
        torch.from_numpy(reference).to(device), torch.from_numpy(perturbed).to(device), names, alignments, context
    )
    assert list(got) == list(names)
    worst = 0.0
    for name in names:
        value = got[name]
        assert value.dtype == torch.float64 and value.shape == (len(reference),) and value.device.type == device
        value = value.cpu().numpy()
        np.testing.assert_allclose(value, want[name], rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=name)
        np.testing.assert_array_equal(np.isnan(value), np.isnan(want[name]), err_msg=name)
        both = np.isfinite(value)
        worst = max(worst, float(np.abs(value[both] - want[name][both]).max(initial=0.0)))
    return worst


def test_every_score_has_a_torch_twin():
    assert set(TORCH_SCORES) == set(SCORES)


@pytest.mark.parametrize("kind", ["random", "ties", "nan", "constant", "float64"])
@pytest.mark.parametrize(
    "params",
    [{}, {"diagonal_offset": 0, "ignore_diags": 0}, {"diagonal_offset": 20, "window": 20}],
    ids=["defaults", "offsets 0", "empty triangle and squares"],
)
def test_torch_scores_equal_numpy(kind, params):
    reference, perturbed = twin_maps(5, kind)
    alignments = [bin_alignment(*g, BIN, N_BINS) for g in GEOMETRIES]
    assert_twins(reference, perturbed, NAMES, alignments, {**EDGE_CONTEXT, **params})


def test_torch_scores_equal_numpy_on_full_size_maps():
    """C.Origami's geometry (256 bins of 8,192 bp): sums over 65,536 pixels, the edits of a screen."""
    reference, perturbed = twin_maps(7, "random", n=256, b=6)
    perturbed = reference + 0.01 * (perturbed - reference)  # small differences, as a perturbation makes
    geometries = [
        (1_048_000, 1_000, 0),
        (1_000_000, 0, 20_000),
        (524_288, 1, 1),
        (0, 8_192, 0),
        (2_090_000, 7_152, 0),
        (700_000, 50_000, 50_000),
    ]
    alignments = [bin_alignment(*g, 8_192, 256) for g in geometries]
    context = {"position": [128, 122, 64, 0, 255, 90], "roi": (slice(100, 120), [130, 131, 200])}
    assert assert_twins(reference, perturbed, NAMES, alignments, context) < 1e-9


@pytest.mark.parametrize("kind", ["random", "ties", "nan"])
def test_torch_scores_of_a_shared_reference(kind):
    """The engine passes one window's reference map expanded over the batch (no copies): same scores as numpy's on
    the repeated map (Spearman ranks it, insulation takes its track, once)."""
    _, perturbed = twin_maps(3, kind)
    reference = twin_maps(4, kind)[0][:1]
    repeated = np.repeat(reference, B, axis=0)
    alignments = [bin_alignment(*g, BIN, N_BINS) for g in GEOMETRIES]
    want = score_maps(repeated, perturbed, NAMES, alignments, EDGE_CONTEXT)
    shared = torch.from_numpy(reference)[0].expand(B, N_BINS, N_BINS)
    got = score_tensors(shared, torch.from_numpy(perturbed), NAMES, alignments, EDGE_CONTEXT)
    for name in NAMES:
        np.testing.assert_allclose(got[name].numpy(), want[name], rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=name)


def test_torch_scores_take_the_alignment_index():
    reference, perturbed = twin_maps(2, "random")
    alignments = [bin_alignment(*g, BIN, N_BINS) for g in GEOMETRIES]
    names = [n for n in NAMES if n.endswith("_aligned")]
    by_objects = score_tensors(
        torch.from_numpy(reference), torch.from_numpy(perturbed), names, alignments, EDGE_CONTEXT
    )
    by_index = score_tensors(
        torch.from_numpy(reference),
        torch.from_numpy(perturbed),
        names,
        alignment_index(alignments, N_BINS),
        EDGE_CONTEXT,
    )
    for name in names:
        torch.testing.assert_close(by_index[name], by_objects[name], rtol=0, atol=0, equal_nan=True)
    ref_aligned, alt_aligned = align_maps(alignments, reference, perturbed)
    got = align_tensors(
        torch.from_numpy(alignment_index(alignments, N_BINS)), torch.from_numpy(reference), torch.from_numpy(perturbed)
    )
    np.testing.assert_array_equal(got[0].numpy(), ref_aligned)
    np.testing.assert_array_equal(got[1].numpy(), alt_aligned)


def test_torch_ranks_with_the_device_sort(monkeypatch):
    """Off the host the ranks come from torch.sort (NaN last, as numpy's): checked here on the CPU."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(4, 40)).astype(np.float64)
    x[0, [3, 7]] = np.nan
    x[1] = np.nan
    monkeypatch.setattr(score_torch, "_sorted", lambda t: torch.sort(t, dim=-1))
    np.testing.assert_array_equal(score_torch._average_ranks(torch.from_numpy(x)).numpy(), _average_ranks(x))
    np.testing.assert_array_equal(score_torch._average_ranks(torch.from_numpy(x).float()).numpy(), _average_ranks(x))


def test_torch_score_errors():
    reference, perturbed = (torch.from_numpy(m) for m in random_batch())
    with pytest.raises(ValueError, match="unknown score 'nope'"):
        score_tensors(reference, perturbed, ["nope"])
    with pytest.raises(ValueError, match="aligned scores need"):
        score_tensors(reference, perturbed, ["mse_aligned"])
    with pytest.raises(ValueError, match=r"needs context \['position'\]"):
        score_tensors(reference, perturbed, ["insulation_delta"])
    with pytest.raises(ValueError, match="shapes differ"):
        score_torch.impact_mean_abs(torch.zeros((1, 2, 2)), torch.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="alignment index of shape"):
        align_tensors(np.zeros((2, 8), np.int64), reference, perturbed)


def test_alignment_cache_aligns_each_geometry_once():
    cache = AlignmentCache(BIN, N_BINS, max_rows=4)
    edits = [g for g in GEOMETRIES for _ in range(3)]  # as mutagenesis repeats (position, 1, 1) per base
    index = cache.index(edits)
    np.testing.assert_array_equal(index, alignment_index([bin_alignment(*g, BIN, N_BINS) for g in edits], N_BINS))
    assert (cache.misses, cache.hits) == (len(GEOMETRIES), 2 * len(GEOMETRIES))
    assert len(cache._rows) == 4  # the least recently used dropped
    assert cache.index([]).shape == (0, N_BINS)
    with pytest.raises(ValueError, match="read-only"):
        cache.row(*GEOMETRIES[-1])[0] = 3


@pytest.mark.gpu
def test_torch_scores_equal_numpy_on_cuda():
    alignments = [bin_alignment(*g, BIN, N_BINS) for g in GEOMETRIES]
    for kind in ("random", "ties", "nan", "constant"):
        reference, perturbed = twin_maps(5, kind)
        assert_twins(reference, perturbed, NAMES, alignments, EDGE_CONTEXT, device="cuda")
    reference, perturbed = twin_maps(7, "random", n=256, b=4)
    alignments = [
        bin_alignment(*g, 8_192, 256)
        for g in [(1_048_000, 1_000, 0), (1_000_000, 0, 20_000), (524_288, 1, 1), (0, 8_192, 0)]
    ]
    assert_twins(
        reference,
        perturbed,
        NAMES,
        alignments,
        {"position": [128, 122, 64, 0], "roi": (slice(100, 120), [130])},
        device="cuda",
    )
