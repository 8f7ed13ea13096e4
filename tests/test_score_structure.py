"""SuPreMo's structural scores (screening.maps.structure) and their torch twins (screening.maps.structure_torch)."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from screening.maps import structure
from screening.maps.align import bin_alignment
from screening.maps.score import SCORES, score_maps
from screening.maps.score_torch import TORCH_SCORES, score_tensors
from screening.maps.structure import (
    decay_mse,
    decay_track,
    di_mse,
    insulation_mse,
    di_track,
    pc1_mse,
    pc1_track,
    scc,
    ssi,
    triangle_mse,
    triangle_track,
)

STRUCTURAL = ("ssi", "scc", "insulation_mse", "di_mse", "decay_mse", "triangle_mse", "pc1_mse")
SIMILARITIES = ("ssi", "scc")


def one(*rows) -> np.ndarray:
    return np.array([rows], np.float64)


def random_maps(seed: int = 0, b: int = 4, n: int = 20, symmetric: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = np.abs(rng.normal(size=(b, n, n))) + 0.1
    perturbed = reference + 0.3 * np.abs(rng.normal(size=(b, n, n)))
    if symmetric:
        reference, perturbed = reference + reference.transpose(0, 2, 1), perturbed + perturbed.transpose(0, 2, 1)
    return reference.astype(np.float32), perturbed.astype(np.float32)


def test_every_structural_score_is_registered_with_its_twin():
    for name in STRUCTURAL:
        assert name in SCORES and name in TORCH_SCORES
    assert SCORES["ssi"].params == ("ssi_window", "data_range")
    assert SCORES["scc"].params == ("scc_smoothing", "scc_max_distance")
    assert SCORES["insulation_mse"].params == ("window", "ignore_diags")
    assert SCORES["di_mse"].params == ("window",) and SCORES["triangle_mse"].params == ("diagonal_offset",)


@pytest.mark.parametrize("name", list(SCORES))
def test_direction_says_what_unchanged_reads(name):
    """Score.direction (read by the ISM → attribution conversion): identical maps score 0 (distance, signed) or 1
    (similarity); a distance is never negative."""
    reference, perturbed = random_maps(31, b=2, n=24)
    context = {"position": 12, "roi": (slice(2, 6), slice(10, 14)), "window": 3}
    score = SCORES[name]
    same = score(reference, reference.copy(), **score.kwargs(context))
    np.testing.assert_allclose(same, 1.0 if score.direction == "similarity" else 0.0, atol=1e-12)
    if score.direction == "distance":
        assert (score(reference, perturbed, **score.kwargs(context)) > 0).all()


# --- by hand ------------------------------------------------------------------------------


def test_ssi_by_hand():
    # One 2 × 2 window: means 1.5 and 2, sample variances 5/3 and 14/3, covariance 8/3; L = 2.
    reference, perturbed = one([0, 1], [2, 3]), one([0, 1], [2, 5])
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    want = (2 * 1.5 * 2 + c1) * (2 * 8 / 3 + c2) / ((1.5**2 + 2**2 + c1) * (5 / 3 + 14 / 3 + c2))
    assert ssi(reference, perturbed, ssi_window=2) == pytest.approx([want], rel=1e-12)
    # A NaN pixel leaves the window's other three: 0, 1, 2 against 0, 1, 2.
    masked = one([0, 1], [2, np.nan])
    assert ssi(masked, perturbed, ssi_window=2) == pytest.approx([1.0])
    assert np.isnan(ssi(reference, perturbed, ssi_window=3)).all()  # no window fits


def test_scc_by_hand():
    # Diagonal 1: (1, 2, 3) vs (1, 3, 2), r = 0.5, weight (3 + 1) / 12; diagonal 2: (1, 2) vs (2, 1), r = −1,
    # weight 3 / 12; diagonal 3: one pixel, left out. SCC = (0.5 / 3 − 1 / 4) / (1 / 3 + 1 / 4) = −1 / 7.
    reference = one([0, 1, 1, 9], [0, 0, 2, 2], [0, 0, 0, 3], [0, 0, 0, 0])
    perturbed = one([5, 1, 2, 7], [0, 5, 3, 1], [0, 0, 5, 2], [0, 0, 0, 5])
    assert scc(reference, perturbed) == pytest.approx([-1 / 7])
    assert scc(reference, perturbed, scc_max_distance=1) == pytest.approx([0.5])
    # Pixels zero in both maps are left out (HiCRep's filter): a zero pair on diagonal 1 changes nothing.
    ref5, alt5 = np.zeros((1, 5, 5)), np.zeros((1, 5, 5))
    ref5[:, :4, :4], alt5[:, :4, :4] = reference, perturbed
    assert scc(ref5, alt5) == pytest.approx([-1 / 7])
    # A stratum constant in one map is left out: diagonal 2 then carries everything.
    flat = perturbed.copy()
    flat[0, 0, 1] = flat[0, 1, 2] = flat[0, 2, 3] = 4.0
    assert scc(reference, flat) == pytest.approx([-1.0])
    assert np.isnan(scc(reference, np.full_like(reference, 2.0))).all()


def test_scc_smoothing_is_the_mean_of_the_valid_square():
    x = np.arange(9, dtype=np.float64).reshape(1, 3, 3)
    smooth = structure._smooth(x, 1)
    assert smooth[0, 1, 1] == 4.0  # all nine
    assert smooth[0, 0, 0] == (0 + 1 + 3 + 4) / 4  # cut at the edges
    x[0, 2, 2] = np.nan
    smooth = structure._smooth(x, 1)
    assert np.isnan(smooth[0, 2, 2]) and smooth[0, 1, 1] == pytest.approx(28 / 8)


def test_di_track_by_hand():
    m = np.zeros((1, 5, 5))
    m[0, 0, 2], m[0, 1, 2], m[0, 2, 3], m[0, 2, 4] = 1, 2, 4, 5  # A = 3, B = 9 around bin 2
    track = di_track(m, window=2)
    # E = 6: (3 − 6)² / 6 + (9 − 6)² / 6 = 3, positive (more contacts downstream).
    np.testing.assert_allclose(track, [[np.nan, np.nan, 3.0, np.nan, np.nan]])
    m[0, 0, 2] = np.nan  # A = 2 × mean(2) = 4, E = 6.5
    assert di_track(m, window=2)[0, 2] == pytest.approx(2 * 2.5**2 / 6.5)
    alt = m.copy()
    alt[0, 2, 3] = 1  # B = 6, A = 4: DI = 2 · 1² / 5
    assert di_mse(m, alt, window=2) == pytest.approx([(0.4 - 12.5 / 6.5) ** 2])
    mirrored = np.zeros((1, 5, 5))
    mirrored[0, 0, 2], mirrored[0, 1, 2] = 4, 5  # only upstream contacts: DI = −(A − E)²/E − (B − E)²/E = −9
    assert di_track(mirrored, window=2)[0, 2] == pytest.approx(-9.0)


def test_insulation_mse_by_hand():
    # Window 2: bin 1's square is rows 0-1 × cols 1-2, bin 2's rows 1-2 × cols 2-3 (they share (1, 2)).
    m = np.zeros((1, 4, 4))
    m[0, [0, 0, 1, 1], [1, 2, 1, 2]] = 1
    m[0, [1, 2, 2], [3, 2, 3]] = 5  # raw insulation 1 and 4, mean 2.5
    alt = np.zeros((1, 4, 4))
    alt[0, [0, 0, 1], [1, 2, 1]] = 5
    alt[0, [1, 1, 2, 2], [2, 3, 2, 3]] = 1  # raw 4 and 1: each normalised log2 value moves by ±2
    assert insulation_mse(m, alt, window=2, ignore_diags=0) == pytest.approx([4.0])
    assert insulation_mse(m, 3 * m, window=2, ignore_diags=0) == pytest.approx([0.0], abs=1e-24)  # normalised


def test_decay_track_by_hand():
    m = one([1, 5, 9], [0, 2, 7], [0, 0, 4])
    # d = 0: median(1, 2, 4) = 2; d = 1: (5 + 7) / 2; d = 2: 9.
    np.testing.assert_allclose(decay_track(m), [[2.0, 6.0, 9.0]])
    m[0, 1, 1] = np.nan
    np.testing.assert_allclose(decay_track(m), [[2.5, 6.0, 9.0]])
    alt = m + np.array([0.0, 1.0, 2.0])[None, None, :]  # columns raised: d = 0 by (0 + 2) / 2, d = 1 by 1.5, d = 2 by 2
    assert decay_mse(m, alt) == pytest.approx([(1.0**2 + 1.5**2 + 2.0**2) / 3])


def test_triangle_track_by_hand():
    m = np.arange(16, dtype=np.float64).reshape(1, 4, 4)
    # Offset 2: the one segment 0..3 holds (0, 2), (0, 3), (1, 3) = 2, 3, 7.
    track = triangle_track(m)
    assert np.flatnonzero(np.isfinite(track[0])).tolist() == [3] and track[0, 3] == 4.0
    # Offset 1: segments 0..2 (1, 2, 6), 1..3 (6, 7, 11) and 0..3 (all six).
    track = triangle_track(m, diagonal_offset=1).reshape(4, 4)
    assert track[0, 2] == 3.0 and track[1, 3] == 8.0 and track[0, 3] == (1 + 2 + 3 + 6 + 7 + 11) / 6
    assert np.isfinite(track).sum() == 3
    alt = m.copy()
    alt[0, 0, 3] += 3  # segment 0..3 only
    assert triangle_mse(m, alt) == pytest.approx([1.0])
    assert triangle_mse(m, alt, diagonal_offset=1) == pytest.approx([(0.5**2) / 3])


def test_pc1_of_a_rank_one_map_by_hand():
    # Rows u_i · v: centred rows (u_i − ū) v, leading axis ±v / |v|, track ±(u_i − ū) |v|.
    u, v = np.array([1.0, 2.0, 4.0, 5.0]), np.array([1.0, 2.0, 2.0, 4.0])
    track = pc1_track(np.outer(u, v)[None])[0]
    want = (u - u.mean()) * np.linalg.norm(v)
    np.testing.assert_allclose(track * np.sign(track[0] * want[0]), want, rtol=1e-10)
    # The perturbed map's eigenvector sign is free: a map whose track is only mirrored (rows −u_i v) scores 0.
    assert pc1_mse(np.outer(u, v)[None], np.outer(-u, v)[None]) == pytest.approx([0.0], abs=1e-20)
    shifted = np.outer(u + np.array([0, 0, 0, 1.0]), v)[None]
    want_shift = (u + np.array([0, 0, 0, 1.0])) - (u + np.array([0, 0, 0, 1.0])).mean()
    assert pc1_mse(np.outer(u, v)[None], shifted) == pytest.approx(
        [np.mean((want_shift * np.linalg.norm(v) - want) ** 2)], rel=1e-9
    )
    assert np.isnan(pc1_track(np.full((1, 4, 4), 3.0))).all()


# --- unchanged maps, masks, batches -------------------------------------------------------


@pytest.mark.parametrize("name", STRUCTURAL)
def test_identical_maps_score_unchanged(name):
    reference, _ = random_maps(3)
    got = SCORES[name](reference, reference.copy(), **({"window": 3} if name == "di_mse" else {}))
    if name in SIMILARITIES:
        np.testing.assert_allclose(got, 1.0, rtol=1e-12)
    else:
        np.testing.assert_array_equal(got, 0.0)


def test_aligned_deletion_scores_unchanged():
    """A deletion of whole bins in a map that depends only on genomic position: once aligned, nothing changed."""
    n, width = 24, 2
    coords = np.arange(n + width, dtype=np.float64)
    genome = (
        np.exp(-np.abs(coords[:, None] - coords[None, :]) / 4) + 0.3 * np.cos(coords)[:, None] * np.cos(coords)[None, :]
    )
    kept = np.r_[0:10, 10 + width : n + width]
    reference = genome[None, :n, :n].astype(np.float32)
    perturbed = genome[None][:, kept][:, :, kept].astype(np.float32)
    alignments = [bin_alignment(10 * 10, width * 10, 0, 10, n)]
    names = [f"{name}{suffix}" for name in STRUCTURAL for suffix in ("", "_aligned")]
    got = score_maps(reference, perturbed, names, alignments, {"window": 3})
    for name in STRUCTURAL:
        moved, aligned = got[name][0], got[name + "_aligned"][0]
        if name in SIMILARITIES:
            assert moved < 0.999 and aligned == pytest.approx(1.0, abs=1e-12), name
        else:
            assert moved > 1e-6 and aligned == pytest.approx(0.0, abs=1e-20), name


def test_masked_bins_are_left_out():
    """NaN rows and columns (an alignment's masked bins) are left out: the score of the map without them."""
    reference, perturbed = random_maps(5, b=1, n=12)
    masked_ref, masked_alt = reference.copy(), perturbed.copy()
    masked_ref[:, 4, :] = masked_ref[:, :, 4] = masked_alt[:, 4, :] = masked_alt[:, :, 4] = np.nan
    keep = np.r_[0:4, 5:12]
    sub_ref, sub_alt = reference[:, keep][:, :, keep], perturbed[:, keep][:, :, keep]
    # PCA: exactly the map without bin 4 (its track NaN there).
    track = pc1_track(masked_ref.astype(np.float64))[0]
    want = pc1_track(sub_ref.astype(np.float64))[0]
    assert np.isnan(track[4])
    np.testing.assert_allclose(np.abs(track[keep]), np.abs(want), rtol=1e-9)
    assert pc1_mse(masked_ref, perturbed) == pytest.approx(pc1_mse(sub_ref, sub_alt), rel=1e-9)
    # NaN in one map is NaN in both (SuPreMo's fill_missing_points_map): a mask on either side is the same.
    for name in STRUCTURAL:
        np.testing.assert_allclose(
            SCORES[name](masked_ref, perturbed), SCORES[name](reference, masked_alt), err_msg=name
        )
        assert np.isfinite(
            SCORES[name](masked_ref, perturbed, **({"window": 2} if name in ("di_mse", "insulation_mse") else {}))
        ).all(), name
    # SCC: a NaN pixel counts as a pixel zero in both maps (both are left out).
    zeroed_ref, zeroed_alt = reference.copy(), perturbed.copy()
    zeroed_ref[:, 4, :] = zeroed_ref[:, :, 4] = zeroed_alt[:, 4, :] = zeroed_alt[:, :, 4] = 0
    assert scc(masked_ref, perturbed) == pytest.approx(scc(zeroed_ref, zeroed_alt), rel=1e-12)
    # Everything masked: NaN.
    for name in STRUCTURAL:
        assert np.isnan(SCORES[name](np.full_like(reference, np.nan), perturbed)).all(), name


PARAMS = {
    "ssi_window": 3,
    "data_range": 5.0,
    "scc_smoothing": 1,
    "scc_max_distance": 6,
    "window": 3,
    "diagonal_offset": 1,
}


def test_scores_batched_equal_single():
    reference, perturbed = random_maps(7, b=4, n=14, symmetric=False)
    reference[1, 3, :] = np.nan
    alignments = [bin_alignment(*g, 10, 14) for g in [(40, 20, 0), (33, 0, 30), (70, 1, 1), (0, 0, 0)]]
    names = [f"{name}{suffix}" for name in STRUCTURAL for suffix in ("", "_aligned")]
    for context in ({}, PARAMS):
        batched = score_maps(reference, perturbed, names, alignments, context)
        for i in range(4):
            single = score_maps(reference[i : i + 1], perturbed[i : i + 1], names, alignments[i : i + 1], context)
            for name in names:
                assert batched[name].dtype == np.float64 and batched[name].shape == (4,)
                np.testing.assert_allclose(batched[name][i], single[name][0], rtol=1e-12, equal_nan=True, err_msg=name)


def test_parameter_errors():
    reference, perturbed = random_maps()
    with pytest.raises(ValueError, match="ssi_window"):
        ssi(reference, perturbed, ssi_window=1)
    with pytest.raises(ValueError, match="scc_max_distance"):
        scc(reference, perturbed, scc_max_distance=0)
    with pytest.raises(ValueError, match="window"):
        di_mse(reference, perturbed, window=0)
    with pytest.raises(ValueError, match="shape"):
        triangle_mse(reference, perturbed[:, :3, :3])


# --- the torch twins ----------------------------------------------------------------------


def twin_inputs(kind: str, n: int = 16, b: int = 6):
    reference, perturbed = random_maps(11, b=b, n=n, symmetric=False)
    if kind == "ties":
        reference, perturbed = np.round(reference * 2), np.round(perturbed * 2)  # zeros too: SCC's filter
    elif kind == "nan":
        reference[0, 2, :] = np.nan
        perturbed[1, :, 3] = np.nan
        perturbed[2] = np.nan
    elif kind == "constant":
        reference[0], perturbed[1] = 2.0, 5.0
    geometries = [(60, 20, 0), (63, 14, 0), (55, 0, 30), (72, 1, 1), (40, 30, 30), (0, 0, 0)][:b]
    return reference, perturbed, [bin_alignment(*g, 10, n) for g in geometries]


@pytest.mark.parametrize("kind", ["random", "ties", "nan", "constant"])
@pytest.mark.parametrize(
    "context",
    [{}, PARAMS, {"scc_smoothing": 2, "window": 1, "diagonal_offset": 0, "ssi_window": 16}],
    ids=["defaults", "parameters", "edges"],
)
def test_torch_twins_equal_numpy(kind, context):
    reference, perturbed, alignments = twin_inputs(kind)
    names = [f"{name}{suffix}" for name in STRUCTURAL for suffix in ("", "_aligned")]
    want = score_maps(reference, perturbed, names, alignments, context)
    got = score_tensors(torch.from_numpy(reference), torch.from_numpy(perturbed), names, alignments, context)
    for name in names:
        value = got[name]
        assert value.dtype == torch.float64 and value.shape == (len(reference),)
        np.testing.assert_allclose(value.numpy(), want[name], rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=name)
        np.testing.assert_array_equal(np.isnan(value.numpy()), np.isnan(want[name]), err_msg=name)


def test_torch_twins_take_a_shared_reference():
    """The engine passes one reference map expanded over the batch (stride 0): the twins read it as repeated."""
    reference, perturbed, alignments = twin_inputs("random")
    repeated = np.repeat(reference[:1], len(reference), axis=0)
    shared = torch.from_numpy(reference[0]).expand(len(reference), *reference.shape[1:])
    names = [f"{name}{suffix}" for name in STRUCTURAL for suffix in ("", "_aligned")]
    want = score_maps(repeated, perturbed, names, alignments, {"window": 3})
    got = score_tensors(shared, torch.from_numpy(perturbed), names, alignments, {"window": 3})
    for name in names:
        np.testing.assert_allclose(got[name].numpy(), want[name], rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=name)


# --- against the public implementations SuPreMo calls --------------------------------------


def test_ssi_equals_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    reference, perturbed = random_maps(13, b=2, n=24)
    reference, perturbed = reference.astype(np.float64), perturbed.astype(np.float64)
    for kwargs, theirs in (
        ({}, {"data_range": 2.0}),
        ({"ssi_window": 5, "data_range": 4.0}, {"win_size": 5, "data_range": 4.0}),
    ):
        want = [metrics.structural_similarity(reference[b], perturbed[b], **theirs) for b in range(2)]
        np.testing.assert_allclose(ssi(reference, perturbed, **kwargs), want, rtol=1e-10)


def test_scc_equals_hicrep():
    """hicrep (0.2.6) is the package SuPreMo vendors (scripts/hicrep.py): ``sccByDiag`` on the dense maps as COO,
    ``meanFilterSparse`` for the smoothing."""
    hicrep = pytest.importorskip("hicrep.hicrep")
    utils = pytest.importorskip("hicrep.utils")
    reference, perturbed = random_maps(17, b=2, n=24)
    reference, perturbed = reference.astype(np.float64), perturbed.astype(np.float64)

    def theirs(b: int, h: int, diagonals: int) -> float:
        ref, alt = sp.coo_matrix(reference[b]), sp.coo_matrix(perturbed[b])
        if h:
            ref, alt = utils.meanFilterSparse(ref, h), utils.meanFilterSparse(alt, h)
        return float(hicrep.sccByDiag(ref, alt, diagonals))

    for h, distance in ((0, None), (0, 7), (2, None), (1, 10)):
        want = [theirs(b, h, 24 if distance is None else distance + 1) for b in range(2)]
        got = scc(reference, perturbed, scc_smoothing=h, scc_max_distance=distance)
        np.testing.assert_allclose(got, want, rtol=1e-10)


def akita_like(seed: int, n: int = 20) -> np.ndarray:
    """A symmetric map with the unpredicted band |i − j| < 2 as NaN, as SuPreMo's ``map_from_vector`` makes."""
    m = random_maps(seed, b=1, n=n)[0][0].astype(np.float64)
    i = np.arange(n)
    m[np.abs(i[:, None] - i[None, :]) < 2] = np.nan
    return m


def test_triangle_track_equals_supremos_formula():
    """SuPreMo's ``triangle_track``: lower triangle NaN, ``map[:-2, 2:]``, ``nanmean(T[r:, :c + 1])`` for r < c."""
    m = akita_like(19)
    filled = m.copy()
    filled[np.tril_indices(len(m))] = np.nan
    trimmed = filled[:-2, 2:]
    length = len(trimmed)
    theirs = np.array([np.nanmean(trimmed[r:, : c + 1]) for r in range(length) for c in range(length) if c > r])
    ours = triangle_track(m[None])[0].reshape(len(m), len(m))
    np.testing.assert_allclose(
        [ours[r, c + 2] for r in range(length) for c in range(length) if c > r], theirs, rtol=1e-12
    )
    assert np.isfinite(ours).sum() == len(theirs)


def test_decay_track_equals_supremos_formula_up_to_its_shift():
    """SuPreMo's ``decay_track``: NaN → 0, zeros dropped, + |min|, median per distance |i − j| over the whole map.
    On a symmetric map that is our track (upper diagonals) plus |min|, from distance 2 on (the NaN band)."""
    pd = pytest.importorskip("pandas")
    m = akita_like(23)
    valid = np.nan_to_num(m)
    xx, yy = np.meshgrid(np.arange(len(m)), np.arange(len(m)))
    table = pd.DataFrame({"val": valid.ravel(), "distance": np.abs(xx - yy).ravel()})
    table = table[table["val"] != 0]
    table["val"] = table["val"] + abs(table["val"].min())
    theirs = table.groupby("distance")["val"].median().to_numpy()
    ours = decay_track(m[None])[0]
    assert np.isnan(ours[:2]).all()
    np.testing.assert_allclose(ours[2:] + abs(np.nanmin(m)), theirs, rtol=1e-12)


def test_pc1_track_equals_scikit_learn_pca():
    """SuPreMo's ``contact_pca_track``: ``PCA(1).fit_transform(map)``, equal up to the eigenvector's sign."""
    decomposition = pytest.importorskip("sklearn.decomposition")
    reference, _ = random_maps(29, b=3, n=18)
    for m in reference.astype(np.float64):
        theirs = decomposition.PCA(1).fit_transform(m)[:, 0]
        ours = pc1_track(m[None])[0]
        np.testing.assert_allclose(ours * math.copysign(1.0, ours @ theirs), theirs, rtol=1e-8, atol=1e-10)


@pytest.mark.gpu
def test_torch_twins_equal_numpy_on_cuda():
    """On the device: torch.sort's medians, torch.linalg.eigh's PC1 and the window sums against numpy."""
    names = [f"{name}{suffix}" for name in STRUCTURAL for suffix in ("", "_aligned")]
    for kind in ("random", "ties", "nan", "constant"):
        reference, perturbed, alignments = twin_inputs(kind)
        for context in ({}, PARAMS):
            want = score_maps(reference, perturbed, names, alignments, context)
            got = score_tensors(
                torch.from_numpy(reference).cuda(), torch.from_numpy(perturbed).cuda(), names, alignments, context
            )
            for name in names:
                assert got[name].device.type == "cuda"
                np.testing.assert_allclose(
                    got[name].cpu().numpy(), want[name], rtol=1e-8, atol=1e-11, equal_nan=True, err_msg=f"{kind} {name}"
                )
