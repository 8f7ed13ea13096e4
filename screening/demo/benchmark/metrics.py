"""Pure metrics of the method benchmark: labels, strata, AUROC/AUPR, consistency, randomisation.

Every function takes arrays aligned to one table of evaluated positions (:func:`position_table`)
and returns plain numbers or frames; nothing here reads a store or runs a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from screening.demo.synthetic import Site, stratum_of
from screening.interpret.evaluate import auroc, average_precision

__all__ = [
    "POSITIVE_STRATA",
    "NEGATIVE_STRATA",
    "position_table",
    "element_scores",
    "discrimination",
    "rank_correlation",
    "consistency",
    "randomisation_check",
]

#: Strata of functional sites (positives) and of the elements without function (negatives).
POSITIVE_STRATA = ("standard", "weak", "redundant")
NEGATIVE_STRATA = ("decoy_peak", "motif_only", "unpaired_site", "gc_stretch")


def position_table(
    sites: list[Site], regions: list[tuple[str, int, int]], excluded: set[tuple[str, int]] = frozenset()
) -> pd.DataFrame:
    """One row per evaluated base: ``chrom, pos, element, stratum, label, excluded``.

    ``element`` is the index (into ``sites``) of the planted element covering the base (-1 for
    background), ``stratum`` its :func:`~screening.demo.synthetic.stratum_of` (``background``),
    ``label`` whether it is a functional site's base, ``excluded`` whether per-base evaluation
    leaves it out (a low-information motif position).
    """
    frames = []
    for chrom, start, end in regions:
        pos = np.arange(start, end, dtype=np.int64)
        element = np.full(pos.size, -1, np.int64)
        for index, site in enumerate(sites):
            if site.chrom == chrom and site.start < end and site.end > start:
                element[(pos >= site.start) & (pos < site.end)] = index
        frames.append(pd.DataFrame({"chrom": chrom, "pos": pos, "element": element}))
    table = pd.concat(frames, ignore_index=True).drop_duplicates(["chrom", "pos"]).reset_index(drop=True)
    strata = np.array([stratum_of(s) for s in sites] + ["background"], dtype=object)
    table["stratum"] = strata[table["element"].to_numpy()]  # -1 picks the trailing "background"
    table["label"] = table["stratum"].isin(POSITIVE_STRATA)
    table["excluded"] = [(c, int(p)) in excluded for c, p in zip(table["chrom"], table["pos"])]
    return table


def element_scores(table: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """Per planted element: the largest score over its evaluated bases, with its stratum and label."""
    frame = table.assign(score=scores)
    frame = frame[frame["element"] >= 0]
    grouped = frame.groupby("element", sort=True)
    return pd.DataFrame(
        {
            "score": grouped["score"].max(),
            "stratum": grouped["stratum"].first(),
            "label": grouped["label"].first(),
        }
    ).reset_index()


def _pair(
    scores: np.ndarray, labels: np.ndarray, strata: np.ndarray, stratum: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels of one comparison: a positive stratum against every negative, or every
    positive against one negative stratum, or (``None``) everything."""
    if stratum is None:
        keep = np.ones(len(labels), bool)
    elif stratum in POSITIVE_STRATA:
        keep = (strata == stratum) | ~labels
    else:
        keep = labels | (strata == stratum)
    keep &= np.isfinite(scores)
    return scores[keep], labels[keep]


def discrimination(
    scores: np.ndarray,
    labels: np.ndarray,
    strata: np.ndarray,
    strata_order: Iterable[str] = POSITIVE_STRATA + NEGATIVE_STRATA,
) -> list[dict]:
    """AUROC and AUPR overall and per stratum.

    A positive stratum (``weak`` …) is scored against every negative; a negative stratum
    (``decoy_peak`` …) is every positive against that stratum alone, so its AUROC says
    whether the method tells functional sites from that kind of decoy. A stratum with no
    member (or a comparison with one class empty) gives NaN.
    """
    scores, labels, strata = np.asarray(scores, float), np.asarray(labels, bool), np.asarray(strata, object)
    rows = []
    for stratum in (None, *strata_order):
        s, y = _pair(scores, labels, strata, stratum)
        present = stratum is None or (strata == stratum).any()
        rows.append(
            {
                "stratum": stratum or "all",
                "n": int(len(y)),
                "n_positive": int(y.sum()),
                "auroc": auroc(s, y) if present and len(y) else float("nan"),
                "aupr": average_precision(s, y) if present and len(y) else float("nan"),
                "aupr_random": float(y.mean()) if present and len(y) else float("nan"),
            }
        )
    return rows


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation over positions finite in both (average ranks for ties); NaN if constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return float("nan")
    ra = pd.Series(a[keep]).rank().to_numpy()
    rb = pd.Series(b[keep]).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def consistency(maps: Mapping[str, np.ndarray]) -> float:
    """Mean pairwise Spearman correlation of one method's maps across models (NaN for < 2 models)."""
    names = list(maps)
    values = [rank_correlation(maps[a], maps[b]) for i, a in enumerate(names) for b in names[i + 1 :]]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def randomisation_check(original: np.ndarray, randomised: Mapping[str, np.ndarray], threshold: float = 0.5) -> dict:
    """Model-parameter randomisation test (Adebayo et al. 2018) of one method on one model.

    Parameters
    ----------
    original
        The method's map on the trained model.
    randomised
        Its maps on progressively randomised copies, in cascade order (the last is the most randomised).
    threshold
        A method whose map on the most randomised model still has a Spearman correlation of at
        least this with the original is flagged: its map does not depend on what the model learned.

    Returns
    -------
    dict
        ``similarity_<level>`` per level, ``similarity_final`` and ``flagged``.
    """
    out: dict[str, object] = {
        f"similarity_{level}": _similarity(original, values) for level, values in randomised.items()
    }
    final = _similarity(original, list(randomised.values())[-1]) if randomised else float("nan")
    out["similarity_final"] = final
    # a constant original map carries no ranking at all (NaN): nothing it could lose, so flag it too
    out["flagged"] = bool(not np.isfinite(final) or abs(final) >= threshold) if randomised else False
    return out


def _similarity(original: np.ndarray, randomised: np.ndarray) -> float:
    """Spearman similarity; 0 when the randomised map is constant and the original is not (it lost its
    whole ranking, as a motif pipeline that finds nothing on a random model should)."""
    value = rank_correlation(original, randomised)
    finite = np.isfinite(randomised)
    if not np.isfinite(value) and finite.sum() >= 3 and np.ptp(np.asarray(randomised, float)[finite]) == 0:
        finite_original = np.asarray(original, float)[np.isfinite(original)]
        return 0.0 if finite_original.size and np.ptp(finite_original) > 0 else value
    return value
