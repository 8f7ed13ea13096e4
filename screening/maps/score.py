"""Scores between reference and perturbed contact maps (pure, batched, NaN-safe).

Every score takes ``reference`` and ``perturbed`` maps of shape ``[B, n, n]`` and
returns ``float64 [B]``. Differences are taken in the maps' own precision (float32,
as the original C.Origami) and reduced in float64. NaN pixels (bins masked by an
alignment, see :mod:`screening.maps.align`) are left out of every reduction; a score with
no pixel left is NaN. Definitions, sign conventions and the aligned/unaligned
distinction are in ``docs/scores.md``.

Score names: every registered name ``X`` in :data:`SCORES` is computed on the maps as
predicted (bin ``i`` against bin ``i``); ``X_aligned`` is the same score on the aligned
maps (:func:`screening.maps.align.align_maps`). :func:`score_maps` takes both kinds of names,
and a result store holds one array per name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from screening.maps.align import BinAlignment, align_maps
from screening.maps.insulation import DEFAULT_IGNORE_DIAGS, DEFAULT_INSULATION_WINDOW, insulation
from screening.maps.masked import nan_mean as _mean
from screening.maps.structure import decay_mse, di_mse, insulation_mse, pc1_mse, scc, ssi, triangle_mse

__all__ = [
    "ALIGNED_SUFFIX",
    "AKITA_DIAGONAL_OFFSET",
    "DEFAULT_INSULATION_WINDOW",
    "DEFAULT_IGNORE_DIAGS",
    "Score",
    "SCORES",
    "impact_mean_abs",
    "impact_abs_mean",
    "scd",
    "ssd",
    "mse",
    "pearson",
    "spearman",
    "insulation",
    "insulation_delta",
    "roi_mean_delta",
    "ssi",
    "scc",
    "insulation_mse",
    "di_mse",
    "decay_mse",
    "triangle_mse",
    "pc1_mse",
    "available_scores",
    "parse_score_name",
    "parse_score_names",
    "score_maps",
]

ALIGNED_SUFFIX = "_aligned"
#: Akita stores maps as the upper triangle above the first two diagonals (``np.triu_indices(n, 2)``).
AKITA_DIAGONAL_OFFSET = 2


# --- masked reductions --------------------------------------------------------------------


def _diff(reference: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    if reference.shape != perturbed.shape:
        raise ValueError(f"map shapes differ: {reference.shape} vs {perturbed.shape}")
    return (perturbed - reference).astype(np.float64)


def _sum(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sum over ``axis`` without NaNs; NaN where nothing is left."""
    nan = np.isnan(x)
    total = np.where(nan, 0.0, x).sum(axis=axis)
    return np.where((~nan).any(axis=axis), total, np.nan)


def _joint(reference: np.ndarray, perturbed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both maps as float64 ``[B, n·n]`` vectors, NaN where either map is NaN."""
    if reference.shape != perturbed.shape:
        raise ValueError(f"map shapes differ: {reference.shape} vs {perturbed.shape}")
    x = reference.reshape(reference.shape[0], -1).astype(np.float64)
    y = perturbed.reshape(perturbed.shape[0], -1).astype(np.float64)
    bad = np.isnan(x) | np.isnan(y)
    x[bad] = np.nan
    y[bad] = np.nan
    return x, y


def _upper(x: np.ndarray, diagonal_offset: int) -> np.ndarray:
    """Akita's vector: pixels ``(i, j)`` with ``j − i ≥ diagonal_offset``, ``[B, m]``."""
    rows, cols = np.triu_indices(x.shape[-1], diagonal_offset)
    return x[..., rows, cols]


# --- C.Origami's scores (semantics fixed) -------------------------------------------------


def impact_mean_abs(reference: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """Mean over the map of ``|perturbed − reference|`` (C.Origami's current screen)."""
    return _mean(np.abs(_diff(reference, perturbed)))


def impact_abs_mean(reference: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """``|mean over the map of (perturbed − reference)|`` (the ``corigami==0.0.1`` release)."""
    return np.abs(_mean(_diff(reference, perturbed)))


# --- Akita / SuPreMo ----------------------------------------------------------------------


def scd(reference: np.ndarray, perturbed: np.ndarray, diagonal_offset: int = AKITA_DIAGONAL_OFFSET) -> np.ndarray:
    """Akita's SCD: ``sqrt(Σ (perturbed − reference)²)`` over the upper triangle.

    Parameters
    ----------
    reference, perturbed
        ``[B, n, n]`` maps.
    diagonal_offset
        Pixels with ``j − i ≥ diagonal_offset`` are summed (Akita: 2). On a symmetric map
        the whole-map value (without the ``|i − j| < diagonal_offset`` band) is √2 × this.

    Returns
    -------
    numpy.ndarray
        ``float64 [B]``, ≥ 0.
    """
    d = _upper(_diff(reference, perturbed), diagonal_offset)
    return np.sqrt(_sum(d * d))


def ssd(reference: np.ndarray, perturbed: np.ndarray, diagonal_offset: int = AKITA_DIAGONAL_OFFSET) -> np.ndarray:
    """Akita's SSD: ``sqrt(Σ perturbed²) − sqrt(Σ reference²)`` over the upper triangle.

    Pixels are those of :func:`scd`; a pixel NaN in either map is left out of both sums.
    Positive when the perturbed map has more signal (larger norm) than the reference.
    """
    x, y = _joint(_upper(reference, diagonal_offset), _upper(perturbed, diagonal_offset))
    return np.sqrt(_sum(y * y)) - np.sqrt(_sum(x * x))


def mse(reference: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """Mean over the whole map of ``(perturbed − reference)²`` (SuPreMo's MSE)."""
    d = _diff(reference, perturbed)
    return _mean(d * d)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson r of ``[B, m]`` vectors sharing NaN positions; NaN if either is constant."""
    valid = ~np.isnan(x)
    count = valid.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = np.where(valid, x - (np.where(valid, x, 0.0).sum(-1) / count)[:, None], 0.0)
        dy = np.where(valid, y - (np.where(valid, y, 0.0).sum(-1) / count)[:, None], 0.0)
        r = (dx * dy).sum(-1) / np.sqrt((dx * dx).sum(-1) * (dy * dy).sum(-1))
    # Rounding in the mean leaves a constant vector tiny residuals; call it constant outright.
    constant = _constant_rows(x, valid) | _constant_rows(y, valid)
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def _constant_rows(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.where(valid, x, np.inf).min(axis=-1) >= np.where(valid, x, -np.inf).max(axis=-1)


def pearson(reference: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """Pearson correlation of all map pixels of ``reference`` and ``perturbed``, per sample.

    1 means the perturbed map is an increasing affine function of the reference; NaN if
    either map is constant.
    """
    return _pearson_rows(*_joint(reference, perturbed))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Row-wise ranks 1..m of ``[B, m]``, ties get their mean rank, NaN stays NaN."""
    order = np.argsort(x, axis=-1)  # NaNs sort last; tied values get one rank, so order among them is moot
    ordered = np.take_along_axis(x, order, axis=-1)
    m = x.shape[-1]
    position = np.broadcast_to(np.arange(m), x.shape)
    starts = np.ones(x.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(x.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
    last = np.minimum.accumulate(np.where(ends, position, m - 1)[:, ::-1], axis=-1)[:, ::-1]
    ranks = np.empty(x.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=-1)
    ranks[np.isnan(x)] = np.nan
    return ranks


def spearman(reference: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of all map pixels, per sample (ties get average ranks).

    Pixels NaN in either map are dropped before ranking; NaN if either map is constant.
    """
    x, y = _joint(reference, perturbed)
    return _pearson_rows(_average_ranks(x), _average_ranks(y))


# --- insulation ---------------------------------------------------------------------------


def insulation_delta(
    reference: np.ndarray,
    perturbed: np.ndarray,
    position: int | Sequence[int] | np.ndarray,
    window: int = DEFAULT_INSULATION_WINDOW,
    ignore_diags: int = DEFAULT_IGNORE_DIAGS,
) -> np.ndarray:
    """Change of the normalised log2 insulation at one bin: ``ins_perturbed − ins_reference``.

    Parameters
    ----------
    reference, perturbed
        ``[B, n, n]`` maps.
    position
        Reference-map bin per sample (``[B]`` or one int for all), typically the bin at
        the perturbation's centre (:func:`screening.maps.align.centre_bin`).
    window, ignore_diags
        As in :func:`insulation`.

    Returns
    -------
    numpy.ndarray
        ``float64 [B]``; positive when the perturbation weakens insulation there (more
        contacts cross the bin, e.g. a deleted boundary); NaN for bins outside the map or
        without a full square.
    """
    if reference.shape != perturbed.shape:
        raise ValueError(f"map shapes differ: {reference.shape} vs {perturbed.shape}")
    batch, n = reference.shape[0], reference.shape[-1]
    pos = np.broadcast_to(np.asarray(position, dtype=np.int64), (batch,))
    inside = (pos >= 0) & (pos < n)
    delta = insulation(perturbed, window, ignore_diags) - insulation(reference, window, ignore_diags)
    picked = delta[np.arange(batch), np.where(inside, pos, 0)]
    return np.where(inside, picked, np.nan)


# --- region of interest -------------------------------------------------------------------

BinSelection = slice | Sequence[int] | np.ndarray


def _is_per_sample(selection: Any) -> bool:
    """True for one selection per sample: a 2-D array, or a sequence of slices / 1-D sequences."""
    if isinstance(selection, slice):
        return False
    if isinstance(selection, np.ndarray):
        return selection.ndim == 2
    items = list(selection)
    return bool(items) and all(isinstance(s, slice) or (not np.isscalar(s) and np.ndim(s) == 1) for s in items)


def _bin_mask(selection: BinSelection, n: int) -> np.ndarray:
    """Boolean ``[n]`` of the selected bins; bins outside ``[0, n)`` are ignored (no wrapping)."""
    mask = np.zeros(n, dtype=bool)
    if isinstance(selection, slice):
        if selection.step not in (None, 1):
            raise ValueError("ROI slices must have step 1")
        lo = 0 if selection.start is None else selection.start
        hi = n if selection.stop is None else selection.stop
        mask[max(lo, 0) : max(min(hi, n), 0)] = True
        return mask
    bins = np.asarray(selection, dtype=np.int64).reshape(-1)
    mask[bins[(bins >= 0) & (bins < n)]] = True
    return mask


def _bin_masks(selection: Any, batch: int, n: int) -> np.ndarray:
    """``[B, n]`` masks from one selection for all samples or one per sample."""
    if _is_per_sample(selection):
        if len(selection) != batch:
            raise ValueError(f"{len(selection)} per-sample ROI selections for a batch of {batch}")
        return np.stack([_bin_mask(s, n) for s in selection])
    return np.broadcast_to(_bin_mask(selection, n), (batch, n))


def roi_mean_delta(
    reference: np.ndarray,
    perturbed: np.ndarray,
    rows: BinSelection | Sequence[BinSelection],
    cols: BinSelection | Sequence[BinSelection],
) -> np.ndarray:
    """Mean of ``perturbed − reference`` over the block ``rows × cols`` (e.g. a loop anchor pair).

    Parameters
    ----------
    reference, perturbed
        ``[B, n, n]`` maps.
    rows, cols
        Reference-map bins: a ``slice`` (``[start, stop)``, step 1) or a 1-D sequence of
        bin indices, used for every sample; or a sequence of ``B`` such selections, one per
        sample. Bins outside ``[0, n)`` are ignored, never wrapped.

    Returns
    -------
    numpy.ndarray
        ``float64 [B]``; positive when the perturbation raises contacts in the block; NaN
        for an empty block.
    """
    d = _diff(reference, perturbed)
    batch, n = d.shape[0], d.shape[-1]
    block = _bin_masks(rows, batch, n)[:, :, None] & _bin_masks(cols, batch, n)[:, None, :]
    return _mean(np.where(block, d, np.nan))


# --- registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """A registered score.

    Attributes
    ----------
    name
        Registry key (unaligned name; ``name + "_aligned"`` is the aligned variant).
    func
        ``func(reference, perturbed, **kwargs) -> float64 [B]``.
    needs
        Context keys that must be given: ``"position"`` (bin per sample, passed as
        ``position``) or ``"roi"`` (a ``(rows, cols)`` pair, passed as ``rows``, ``cols``).
    params
        Optional context keys passed through as keyword arguments when present.
    summary
        One line for listings.
    direction
        How the value reads: ``"distance"`` (≥ 0, 0 = unchanged), ``"similarity"`` (1 = unchanged, lower =
        more change) or ``"signed"`` (a signed change, 0 = unchanged); e.g. turning mutagenesis scores into
        attributions asks it (:mod:`screening.interpret.motifs.source`).
    """

    name: str
    func: Callable[..., np.ndarray]
    needs: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    summary: str = ""
    direction: Literal["distance", "similarity", "signed"] = "signed"

    def __call__(self, reference: np.ndarray, perturbed: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.func(reference, perturbed, **kwargs)

    def kwargs(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments for :attr:`func` taken from a score context."""
        missing = [key for key in self.needs if key not in context]
        if missing:
            raise ValueError(f"score {self.name!r} needs context {missing}")
        out: dict[str, Any] = {}
        for key in self.needs:
            if key == "roi":
                out["rows"], out["cols"] = context["roi"]
            else:
                out[key] = context[key]
        out.update({key: context[key] for key in self.params if key in context})
        return out


SCORES: dict[str, Score] = {
    s.name: s
    for s in (
        Score("impact_mean_abs", impact_mean_abs, summary="mean |Δ| over the map (C.Origami)", direction="distance"),
        Score(
            "impact_abs_mean", impact_abs_mean, summary="|mean Δ| over the map (corigami 0.0.1)", direction="distance"
        ),
        Score(
            "scd",
            scd,
            params=("diagonal_offset",),
            summary="Akita SCD, sqrt(Σ Δ²), upper triangle",
            direction="distance",
        ),
        Score("ssd", ssd, params=("diagonal_offset",), summary="Akita SSD, ‖alt‖ − ‖ref‖, upper triangle"),
        Score("mse", mse, summary="mean Δ² over the map", direction="distance"),
        Score("pearson", pearson, summary="Pearson r of ref and alt pixels", direction="similarity"),
        Score("spearman", spearman, summary="Spearman ρ of ref and alt pixels", direction="similarity"),
        Score(
            "insulation_delta",
            insulation_delta,
            needs=("position",),
            params=("window", "ignore_diags"),
            summary="Δ log2 insulation at a bin",
        ),
        Score("roi_mean_delta", roi_mean_delta, needs=("roi",), summary="mean Δ over a block of bins"),
        # SuPreMo's structural scores (screening.maps.structure): two similarities, five track changes
        Score(
            "ssi",
            ssi,
            params=("ssi_window", "data_range"),
            summary="structural similarity index, 1 = unchanged",
            direction="similarity",
        ),
        Score(
            "scc",
            scc,
            params=("scc_smoothing", "scc_max_distance"),
            summary="HiCRep stratum-adjusted correlation, 1 = unchanged",
            direction="similarity",
        ),
        Score(
            "insulation_mse",
            insulation_mse,
            params=("window", "ignore_diags"),
            summary="mean squared change of the insulation track",
            direction="distance",
        ),
        Score(
            "di_mse",
            di_mse,
            params=("window",),
            summary="mean squared change of the directionality index",
            direction="distance",
        ),
        Score(
            "decay_mse",
            decay_mse,
            summary="mean squared change of the contact decay (median per distance)",
            direction="distance",
        ),
        Score(
            "triangle_mse",
            triangle_mse,
            params=("diagonal_offset",),
            summary="mean squared change of the sub-triangle means",
            direction="distance",
        ),
        Score("pc1_mse", pc1_mse, summary="mean squared change of the first principal component", direction="distance"),
    )
}


def parse_score_name(name: str) -> tuple[Score, bool]:
    """The registered score behind ``name`` and whether ``name`` asks for aligned maps."""
    aligned = name.endswith(ALIGNED_SUFFIX)
    base = name[: -len(ALIGNED_SUFFIX)] if aligned else name
    if base not in SCORES:
        raise ValueError(f"unknown score {name!r}; known: {', '.join(available_scores())}")
    return SCORES[base], aligned


def available_scores(aligned: bool = True) -> tuple[str, ...]:
    """Every valid score name: the registry's names, then (if ``aligned``) their ``_aligned`` forms."""
    names = tuple(SCORES)
    return names + tuple(n + ALIGNED_SUFFIX for n in names) if aligned else names


def parse_score_names(names: Sequence[str], alignments: object) -> tuple[dict[str, tuple[Score, bool]], bool]:
    """Parse score names for :func:`score_maps` and its torch twin.

    Returns ``({name: (score, aligned)}, whether any name is aligned)``; raises ``ValueError`` when an aligned
    name comes without ``alignments``.
    """
    parsed = {name: parse_score_name(name) for name in names}
    needs_alignment = any(aligned for _, aligned in parsed.values())
    if needs_alignment and alignments is None:
        raise ValueError("aligned scores need one alignment per sample")
    return parsed, needs_alignment


def score_maps(
    reference: np.ndarray,
    perturbed: np.ndarray,
    names: Sequence[str],
    alignments: Sequence[BinAlignment] | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Compute the named scores for a batch of map pairs.

    Parameters
    ----------
    reference, perturbed
        ``[B, n, n]`` maps, sample ``b`` of one paired with sample ``b`` of the other.
    names
        Score names: ``X`` (a key of :data:`SCORES`, computed bin ``i`` against bin ``i``)
        or ``X_aligned`` (computed on the aligned maps, needs ``alignments``).
    alignments
        One :class:`~screening.maps.align.BinAlignment` per sample, used by ``_aligned`` names
        only (unaligned names ignore it).
    context
        Inputs some scores need, in reference-map bins (valid for both kinds of names):
        ``"position"`` (int or ``[B]``) for ``insulation_delta``, ``"roi"`` = ``(rows,
        cols)`` for ``roi_mean_delta``; optional ``"window"``, ``"ignore_diags"``,
        ``"diagonal_offset"`` and the parameters of the structural scores (``"ssi_window"``,
        ``"data_range"``, ``"scc_smoothing"``, ``"scc_max_distance"``; ``"window"`` is also ``di_mse``'s).

    Returns
    -------
    dict
        ``name → float64 [B]``, in the order of ``names``.
    """
    parsed, needs_alignment = parse_score_names(names, alignments)
    context = {} if context is None else context
    aligned_maps = align_maps(alignments, reference, perturbed) if needs_alignment else None
    out = {}
    for name, (score, aligned) in parsed.items():
        ref, alt = aligned_maps if aligned_maps is not None and aligned else (reference, perturbed)
        out[name] = score(ref, alt, **score.kwargs(context))
    return out
