"""SuPreMo's structural scores of a map pair (pure, batched, NaN-safe numpy).

Two similarities of whole maps, :func:`ssi` (structural similarity index) and :func:`scc` (HiCRep's
stratum-adjusted correlation), and five "track" scores (:func:`insulation_mse`, :func:`di_mse`,
:func:`decay_mse`, :func:`triangle_mse`, :func:`pc1_mse`): each map is reduced to a track (insulation or
directionality index per bin, contact decay per distance, mean contact per sub-triangle, first principal
component per bin) and the score is the mean squared difference of the two tracks, as SuPreMo's
``vectorMethodToScalar(..., finalCompMetric='mse')`` (Gunsalus, McArthur et al. 2023; SuPreMo
``scripts/scoring.py``).

Every function takes ``reference`` and ``perturbed`` maps ``[B, n, n]`` and returns ``float64 [B]``.
Pixels NaN in either map (bins masked by an alignment) are made NaN in both first, as SuPreMo does, and
then left out of every statistic (SuPreMo fills them with 0 for SSI, SCC, decay and PC1; leaving them
out is this package's rule). Track values that need no pixel left are NaN and left out of the MSE; a
score with nothing left is NaN. :mod:`screening.maps.structure_torch` holds the torch twins; the
definitions, defaults and their differences from SuPreMo's code are in ``docs/scores.md``.
"""

from __future__ import annotations

import numpy as np

from screening.maps.insulation import DEFAULT_IGNORE_DIAGS, DEFAULT_INSULATION_WINDOW, insulation

__all__ = [
    "DEFAULT_DATA_RANGE",
    "DEFAULT_DI_WINDOW",
    "DEFAULT_SSI_WINDOW",
    "SSI_K1",
    "SSI_K2",
    "TRIANGLE_DIAGONAL_OFFSET",
    "decay_mse",
    "decay_track",
    "di_mse",
    "di_track",
    "insulation_mse",
    "pc1_mse",
    "pc1_track",
    "scc",
    "ssi",
    "triangle_mse",
    "triangle_track",
]

#: SSIM window side in bins (scikit-image's default, which SuPreMo uses).
DEFAULT_SSI_WINDOW = 7
#: SSIM's dynamic range ``L``: scikit-image's range of float images, (−1, 1), which SuPreMo's call relied on.
DEFAULT_DATA_RANGE = 2.0
#: SSIM's constants (Wang et al. 2004; scikit-image's defaults): ``C1 = (K1 L)²``, ``C2 = (K2 L)²``.
SSI_K1, SSI_K2 = 0.01, 0.03
#: Directionality-index window in bins, upstream and downstream of each bin.
DEFAULT_DI_WINDOW = 10
#: Sub-triangles count pixels with ``j − i ≥ 2`` (SuPreMo's ``DIAG_OFFSET``, Akita's unpredicted band).
TRIANGLE_DIAGONAL_OFFSET = 2


# --- shared pieces ------------------------------------------------------------------------


def _joint(reference: np.ndarray, perturbed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both maps as float64 ``[B, n, n]``, NaN where either is NaN (SuPreMo's ``fill_missing_points_map``)."""
    if reference.shape != perturbed.shape or reference.ndim != 3:
        raise ValueError(f"expected two [B, n, n] maps of one shape, got {reference.shape} and {perturbed.shape}")
    x = np.array(reference, dtype=np.float64)
    y = np.array(perturbed, dtype=np.float64)
    bad = np.isnan(x) | np.isnan(y)
    x[bad] = np.nan
    y[bad] = np.nan
    return x, y


def _track_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean of ``(b − a)²`` over the entries finite in both ``[B, m]`` tracks; NaN where none is."""
    both = np.isfinite(a) & np.isfinite(b)
    d = np.where(both, b - a, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (d * d).sum(axis=-1) / both.sum(axis=-1)


def _shifted_sum(x: np.ndarray, width: int, axis: int) -> np.ndarray:
    """Sums of ``width`` consecutive entries along ``axis`` (−1 or −2), added in a fixed order so that the
    torch twin, doing the same additions, agrees bit for bit."""
    m = x.shape[axis] - width + 1
    take = (lambda k: x[..., k : k + m, :]) if axis == -2 else (lambda k: x[..., k : k + m])
    total = take(0)
    for k in range(1, width):
        total = total + take(k)
    return total


def _window_sums(x: np.ndarray, width: int) -> np.ndarray:
    """Sums over every ``width × width`` window inside the map: ``[B, n − w + 1, n − w + 1]``."""
    return _shifted_sum(_shifted_sum(x, width, -2), width, -1)


def _diagonals(x: np.ndarray, first: int, last: int) -> np.ndarray:
    """Upper diagonals ``first..last`` of ``[B, n, n]`` as rows of ``[B, K, n]``: ``out[b, k, i] = x[b, i, i + first
    + k]``, NaN past the map's edge."""
    n = x.shape[-1]
    offsets = np.arange(first, last + 1)[:, None]
    rows = np.broadcast_to(np.arange(n)[None, :], (len(offsets), n))
    cols = rows + offsets
    out = x[:, rows, np.minimum(cols, n - 1)]
    return np.where(cols < n, out, np.nan)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis of float64 arrays sharing NaN positions; NaN with fewer than two values or
    when either side is constant (HiCRep leaves such strata out)."""
    valid = ~np.isnan(x)
    count = valid.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = np.where(valid, x - np.where(valid, x, 0.0).sum(-1, keepdims=True) / count, 0.0)
        dy = np.where(valid, y - np.where(valid, y, 0.0).sum(-1, keepdims=True) / count, 0.0)
        r = (dx * dy).sum(-1) / np.sqrt((dx * dx).sum(-1) * (dy * dy).sum(-1))
    constant = _constant(x, valid) | _constant(y, valid)
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def _constant(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rows whose valid values are all equal, or absent (rounding leaves a constant row tiny residuals)."""
    return np.where(valid, x, np.inf).min(axis=-1) >= np.where(valid, x, -np.inf).max(axis=-1)


# --- SSI ----------------------------------------------------------------------------------


def ssi(
    reference: np.ndarray,
    perturbed: np.ndarray,
    ssi_window: int = DEFAULT_SSI_WINDOW,
    data_range: float = DEFAULT_DATA_RANGE,
) -> np.ndarray:
    """Structural similarity index (SSIM, Wang et al. 2004) of the two maps, as SuPreMo's ``ssi``.

    For every ``w × w`` window lying inside the map, with means ``μ``, sample variances ``σ²`` and
    covariance ``σ_RA`` of the pixels valid in both maps,
    ``SSIM = (2 μ_R μ_A + C1)(2 σ_RA + C2) / ((μ_R² + μ_A² + C1)(σ_R² + σ_A² + C2))``, ``C1 = (0.01 L)²``,
    ``C2 = (0.03 L)²``; the score is the mean over windows (scikit-image's ``structural_similarity`` with
    its defaults: uniform window of 7, sample covariance, the mean over windows that do not touch the
    padding). Windows with fewer than two valid pixels are left out.

    Parameters
    ----------
    reference, perturbed
        ``[B, n, n]`` maps.
    ssi_window
        Window side ``w`` in bins (≥ 2).
    data_range
        ``L``, the maps' dynamic range (default 2: scikit-image's range of float images, which SuPreMo's
        call used implicitly).

    Returns
    -------
    numpy.ndarray
        ``float64 [B]`` in [−1, 1]: 1 for identical maps, lower with more disruption; NaN for a map smaller
        than the window.
    """
    if ssi_window < 2 or data_range <= 0:
        raise ValueError(f"need ssi_window >= 2 and data_range > 0, got {ssi_window}, {data_range}")
    x, y = _joint(reference, perturbed)
    if x.shape[-1] < ssi_window:
        return np.full(x.shape[0], np.nan)
    valid = ~np.isnan(x)
    x, y = np.where(valid, x, 0.0), np.where(valid, y, 0.0)
    count = _window_sums(valid.astype(np.float64), ssi_window)
    sx, sy = _window_sums(x, ssi_window), _window_sums(y, ssi_window)
    sxx, syy, sxy = _window_sums(x * x, ssi_window), _window_sums(y * y, ssi_window), _window_sums(x * y, ssi_window)
    c1, c2 = (SSI_K1 * data_range) ** 2, (SSI_K2 * data_range) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = sx / count, sy / count
        vx, vy, vxy = (sxx - sx * mx) / (count - 1), (syy - sy * my) / (count - 1), (sxy - sx * my) / (count - 1)
        s = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    s = np.where(count >= 2, s, np.nan).reshape(len(s), -1)
    used = ~np.isnan(s)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(used, s, 0.0).sum(axis=-1) / used.sum(axis=-1)


# --- SCC ----------------------------------------------------------------------------------


def _smooth(x: np.ndarray, h: int) -> np.ndarray:
    """HiCRep's 2-D mean filter: each valid pixel becomes the mean of the valid pixels of its ``(2h + 1)²``
    square, cut at the map's edges; NaN pixels stay NaN."""
    valid = ~np.isnan(x)
    pad = ((0, 0), (h, h), (h, h))
    side = 2 * h + 1
    totals = _window_sums(np.pad(np.where(valid, x, 0.0), pad), side)
    counts = _window_sums(np.pad(valid.astype(np.float64), pad), side)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, totals / counts, np.nan)


def scc(
    reference: np.ndarray,
    perturbed: np.ndarray,
    scc_smoothing: int = 0,
    scc_max_distance: int | None = None,
) -> np.ndarray:
    """HiCRep's stratum-adjusted correlation coefficient (Yang et al. 2017), as SuPreMo's ``scc``.

    Both maps are smoothed by a ``(2h + 1)²`` mean filter (``h = scc_smoothing``; 0, SuPreMo's choice, leaves
    them as they are). Each upper diagonal ``k = 1 … K`` (a stratum; ``K = scc_max_distance``) gives the
    pixels ``(i, i + k)`` valid in both maps and not zero in both (HiCRep's filter); its Pearson ``ρ_k`` of
    the two maps' values is weighted by ``N_k · sd(rank_R / N_k) · sd(rank_A / N_k) = (N_k + 1) / 12``
    (HiCRep's variance-stabilised weight: ranks with ties broken apart, sample variance), and
    ``SCC = Σ w_k ρ_k / Σ w_k``. Strata with fewer than two pixels, or constant in either map, are left out
    (as HiCRep's R code does).

    Parameters
    ----------
    reference, perturbed
        ``[B, n, n]`` maps (read in their upper triangle).
    scc_smoothing
        Mean-filter half width ``h`` in bins (≥ 0).
    scc_max_distance
        Largest diagonal ``K`` in bins (≥ 1); None for every diagonal (``n − 1``, as SuPreMo).

    Returns
    -------
    numpy.ndarray
        ``float64 [B]`` in [−1, 1]: 1 for identical maps; NaN when no stratum is left.
    """
    if scc_smoothing < 0 or (scc_max_distance is not None and scc_max_distance < 1):
        raise ValueError(f"need scc_smoothing >= 0 and scc_max_distance >= 1, got {scc_smoothing}, {scc_max_distance}")
    x, y = _joint(reference, perturbed)
    n = x.shape[-1]
    last = n - 1 if scc_max_distance is None else min(scc_max_distance, n - 1)
    if last < 1:
        return np.full(x.shape[0], np.nan)
    if scc_smoothing:
        x, y = _smooth(x, scc_smoothing), _smooth(y, scc_smoothing)
    dx, dy = _diagonals(x, 1, last), _diagonals(y, 1, last)
    drop = (dx == 0) & (dy == 0)
    dx, dy = np.where(drop, np.nan, dx), np.where(drop, np.nan, dy)
    rho = _pearson_rows(dx, dy)
    weight = ((~np.isnan(dx)).sum(axis=-1) + 1) / 12.0
    used = ~np.isnan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(used, weight * rho, 0.0).sum(axis=-1) / np.where(used, weight, 0.0).sum(axis=-1)


# --- tracks -------------------------------------------------------------------------------


def di_track(maps: np.ndarray, window: int = DEFAULT_DI_WINDOW) -> np.ndarray:
    """Directionality index of every bin (Dixon et al. 2012), ``float64 [B, n]``.

    ``A`` and ``B`` are the contacts of bin ``i`` with the ``w`` bins upstream (``(i − t, i)``) and downstream
    (``(i, i + t)``, ``t = 1 … w``), read in the upper triangle; ``E = (A + B) / 2`` and
    ``DI = sign(B − A) ((A − E)² / E + (B − E)² / E)``. NaN pixels are left out of a sum, which is scaled back
    to ``w`` pixels (the window's mean × ``w``). NaN where a window leaves the map, a side has no valid pixel
    or ``E ≤ 0`` (DI needs non-negative contacts).
    """
    if window < 1:
        raise ValueError(f"need window >= 1, got {window}")
    x = np.asarray(maps, dtype=np.float64)
    n, w = x.shape[-1], window
    i = np.arange(n)[:, None]
    t = np.arange(1, w + 1)[None, :]
    up = x[:, np.clip(i - t, 0, n - 1), np.broadcast_to(i, (n, w))]
    down = x[:, np.broadcast_to(i, (n, w)), np.clip(i + t, 0, n - 1)]
    inside = (np.arange(n) >= w) & (np.arange(n) + w < n)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = w * _nan_mean_last(up)
        b = w * _nan_mean_last(down)
        e = (a + b) / 2
        di = np.sign(b - a) * ((a - e) ** 2 / e + (b - e) ** 2 / e)
    return np.where(inside & (e > 0), di, np.nan)


def _nan_mean_last(x: np.ndarray) -> np.ndarray:
    valid = ~np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, x, 0.0).sum(axis=-1) / valid.sum(axis=-1)


def decay_track(maps: np.ndarray) -> np.ndarray:
    """Contact decay: the median of the valid pixels of each upper diagonal ``d = 0 … n − 1``, ``float64 [B, n]``
    (NaN for a diagonal with none)."""
    x = np.asarray(maps, dtype=np.float64)
    ordered = np.sort(_diagonals(x, 0, x.shape[-1] - 1), axis=-1)  # NaN sort last
    count = (~np.isnan(ordered)).sum(axis=-1, keepdims=True)
    lower = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0), axis=-1)
    upper = np.take_along_axis(ordered, count // 2, axis=-1)  # the same pixel when count is odd
    return ((lower + upper) / 2)[..., 0]


def triangle_track(maps: np.ndarray, diagonal_offset: int = TRIANGLE_DIAGONAL_OFFSET) -> np.ndarray:
    """Mean contact of every sub-triangle, ``float64 [B, n·n]`` (entry ``a·n + b``).

    The sub-triangle of bins ``a < b`` holds the pixels ``(i, j)`` with ``a ≤ i``, ``j ≤ b`` and ``j − i ≥
    diagonal_offset`` (the contacts within the segment ``a … b``); segments with ``b − a > diagonal_offset``
    are kept (SuPreMo's sub-triangles of at least three pixels), the rest of the ``n × n`` entries are NaN, and
    so is a triangle without a valid pixel.
    """
    x = np.asarray(maps, dtype=np.float64)
    batch, n = x.shape[0], x.shape[-1]
    i = np.arange(n)
    keep = ~np.isnan(x) & (i[None, :] - i[:, None] >= diagonal_offset)
    sums = _prefix_block(np.where(keep, x, 0.0))
    counts = _prefix_block(keep.astype(np.float64))
    segment = i[None, :] - i[:, None] > max(diagonal_offset, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(segment & (counts > 0), sums / counts, np.nan)
    return mean.reshape(batch, n * n)


def _prefix_block(x: np.ndarray) -> np.ndarray:
    """``out[:, a, b]`` = sum of ``x[:, a:b + 1, a:b + 1]``, from a 2-D prefix sum (a summed-area table)."""
    n = x.shape[-1]
    table = np.zeros((x.shape[0], n + 1, n + 1))
    table[:, 1:, 1:] = x.cumsum(axis=1).cumsum(axis=2)
    a, b = np.arange(n)[:, None], np.arange(n)[None, :] + 1
    return table[:, b, b] - table[:, a, b] - table[:, b, a] + table[:, a, a]


def pc1_track(maps: np.ndarray) -> np.ndarray:
    """First principal component of the map's rows (SuPreMo's ``contact_pca_track``), ``float64 [B, n]``.

    Each column is centred on the mean of its valid pixels, NaN pixels then count as that mean (0 once
    centred), and the track is the centred rows projected on the leading eigenvector of ``XᵀX``
    (scikit-learn's ``PCA(1).fit_transform``). A bin whose row has no valid pixel is NaN; with
    whole masked bins (an alignment's) this is the PCA of the map without them. The sign of an eigenvector
    is arbitrary: :func:`pc1_mse` orients the tracks it compares. NaN for a constant map.
    """
    x = np.asarray(maps, dtype=np.float64)
    valid = ~np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = np.where(valid, x, 0.0).sum(axis=-2, keepdims=True) / valid.sum(axis=-2, keepdims=True)
    centred = np.where(valid, x - centre, 0.0)
    _, vectors = np.linalg.eigh(np.matmul(np.swapaxes(centred, -1, -2), centred))
    track = np.matmul(centred, vectors[..., -1:])[..., 0]
    flat = (centred == 0).all(axis=(-2, -1))[:, None]
    return np.where(valid.any(axis=-1) & ~flat, track, np.nan)


def _oriented(reference: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """``perturbed`` tracks with their sign flipped where they anti-correlate with ``reference``'s."""
    both = np.isfinite(reference) & np.isfinite(perturbed)
    dot = np.where(both, reference * perturbed, 0.0).sum(axis=-1, keepdims=True)
    return np.where(dot < 0, -perturbed, perturbed)


# --- the scores ---------------------------------------------------------------------------


def di_mse(reference: np.ndarray, perturbed: np.ndarray, window: int = DEFAULT_DI_WINDOW) -> np.ndarray:
    """Mean squared change of the directionality-index track (:func:`di_track`), SuPreMo's ``di``; ≥ 0.

    ``window`` is the context key of the insulation window too: in a screen, the spec's
    ``insulation_window`` sets both boundary tracks' window.
    """
    x, y = _joint(reference, perturbed)
    return _track_mse(di_track(x, window), di_track(y, window))


def insulation_mse(
    reference: np.ndarray,
    perturbed: np.ndarray,
    window: int = DEFAULT_INSULATION_WINDOW,
    ignore_diags: int = DEFAULT_IGNORE_DIAGS,
) -> np.ndarray:
    """Mean squared change of the whole insulation track (:func:`screening.maps.insulation.insulation`, the track
    of ``insulation_delta``), SuPreMo's ``ins``; ≥ 0."""
    x, y = _joint(reference, perturbed)
    return _track_mse(insulation(x, window, ignore_diags), insulation(y, window, ignore_diags))


def decay_mse(reference: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """Mean squared change of the contact-decay track (:func:`decay_track`), SuPreMo's ``dec``; ≥ 0."""
    x, y = _joint(reference, perturbed)
    return _track_mse(decay_track(x), decay_track(y))


def triangle_mse(
    reference: np.ndarray, perturbed: np.ndarray, diagonal_offset: int = TRIANGLE_DIAGONAL_OFFSET
) -> np.ndarray:
    """Mean squared change of the sub-triangle means (:func:`triangle_track`), SuPreMo's ``tri``; ≥ 0."""
    x, y = _joint(reference, perturbed)
    return _track_mse(triangle_track(x, diagonal_offset), triangle_track(y, diagonal_offset))


def pc1_mse(reference: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """Mean squared change of the first principal component (:func:`pc1_track`), SuPreMo's ``pca``; ≥ 0.

    The perturbed track's sign is chosen to agree with the reference's (non-negative dot product), so a
    map whose eigenvector merely flipped sign scores 0.
    """
    x, y = _joint(reference, perturbed)
    a = pc1_track(x)
    return _track_mse(a, _oriented(a, pc1_track(y)))
