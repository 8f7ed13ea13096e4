"""Ground-truth evaluation: how well do a screen's scores point at the planted elements?

For element-level analyses (deletions, masks, …) every perturbation is one
prediction: positive when its interval overlaps a truth element of the positive
role, negative otherwise. For per-base analyses (saturation mutagenesis) every
position is one prediction, scored by its strongest alternative base: motif
positions against background. AUROC and AUPR (average precision) are computed per
analysis and score, and the mean score per truth role says what each method
responds to (functional sites vs decoy peaks vs motif-only sites vs background).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from screening.core.errors import ScreeningError

__all__ = [
    "TruthElement",
    "EvaluationError",
    "read_truth_bed",
    "auroc",
    "average_precision",
    "information_content",
    "low_information_positions",
    "evaluate",
    "plot_evaluation",
]


class EvaluationError(ScreeningError, ValueError):
    """Truth and store that cannot be evaluated together."""


@dataclass(frozen=True)
class TruthElement:
    """One truth interval (0-based, half-open) with its role (``positive`` for plain BED files) and strand."""

    chrom: str
    start: int
    end: int
    role: str = "positive"
    strand: str = "."


def read_truth_bed(path: str | Path) -> list[TruthElement]:
    """Read a truth BED: 3+ columns; a 7th column, when present, is the element's role.

    The synthetic genome's ``truth.bed`` (``chrom start end name score strand role strength``)
    and any plain BED of known elements both work.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"truth BED {path} does not exist")
    elements = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        fields = line.split("\t")
        try:
            start, end = int(fields[1]), int(fields[2])
        except (IndexError, ValueError):
            raise EvaluationError(f"{path}:{lineno}: expected chrom, start, end (tab-separated)") from None
        role = fields[6] if len(fields) > 6 else "positive"
        strand = fields[5] if len(fields) > 5 and fields[5] in ("+", "-") else "."
        elements.append(TruthElement(fields[0], start, end, role, strand))
    if not elements:
        raise EvaluationError(f"truth BED {path} holds no elements")
    return elements


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U with average ranks for ties); NaN if one class is empty."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision, ``AP = Σ_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds.

    Tied scores form one threshold, so a tie is neither broken for nor against the method:
    the same definition as scikit-learn's ``average_precision_score`` (all scores tied gives
    the positive fraction). NaN when there is no positive.
    """
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    n_pos = labels.sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    # the last index of each run of equal scores: one point of the curve per distinct threshold
    last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    true_pos = np.cumsum(hits)[last]
    precision = true_pos / (last + 1)
    recall_step = np.diff(np.r_[0, true_pos]) / n_pos
    return float((recall_step * precision).sum())


def information_content(probabilities: np.ndarray) -> np.ndarray:
    """Information content (bits) of each column of a ``[4, width]`` probability matrix: ``2 - H``."""
    p = np.asarray(probabilities, float)
    p = p / p.sum(axis=0, keepdims=True)
    return 2.0 + (p * np.log2(np.where(p > 0, p, 1.0))).sum(axis=0)


def low_information_positions(elements: list[TruthElement], min_information: float, motif=None) -> set[tuple[str, int]]:
    """``(chrom, position)`` of every motif base whose PWM column holds less than ``min_information`` bits.

    Only stranded elements as wide as the motif are motif instances (a ``-`` one reads the
    columns in reverse); the others are left alone. ``motif`` defaults to the bundled CTCF.
    """
    if motif is None:
        from screening.perturb.motif import load_ctcf

        motif = load_ctcf()
    ic = information_content(motif.probabilities(0.0))
    low = np.flatnonzero(ic < min_information)
    out: set[tuple[str, int]] = set()
    for e in elements:
        if e.strand not in ("+", "-") or e.end - e.start != motif.width:
            continue
        columns = low if e.strand == "+" else motif.width - 1 - low
        out.update((e.chrom, e.start + int(c)) for c in columns)
    return out


def _overlap_roles(starts: np.ndarray, ends: np.ndarray, elements: list[TruthElement]) -> np.ndarray:
    """For each interval, the role of an overlapping truth element ('' when none; positives win)."""
    roles = np.full(len(starts), "", dtype=object)
    for element in sorted(elements, key=lambda e: e.role == "ctcf_site" or e.role == "positive"):
        hit = (starts < element.end) & (ends > element.start)
        roles[hit] = element.role
    return roles


def evaluate(
    results,
    elements: list[TruthElement],
    positive_role: str | None = None,
    min_information: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """AUROC/AUPR of every analysis and score against truth elements.

    Parameters
    ----------
    results
        An open :class:`~screening.store.reader.Results`.
    elements
        Truth elements; those of ``positive_role`` are positives.
    positive_role
        Role that counts as positive (default ``ctcf_site`` when present, else ``positive``).
    min_information
        Per-base analyses only: leave out motif positions whose PWM column holds fewer bits
        than this (:func:`low_information_positions`), as the Koo-lab benchmarks do; ``None``
        keeps every position.

    Returns
    -------
    (metrics, by_role)
        ``metrics``: one row per analysis × score with n, n_positive, auroc, aupr, the
        AUPR of a random ranking (the positive fraction), ``min_information`` (NaN when not
        applied) and ``n_excluded`` (positions left out by it); ``by_role``: mean score per role.
    """
    roles_present = {e.role for e in elements}
    positive_role = positive_role or ("ctcf_site" if "ctcf_site" in roles_present else "positive")
    if positive_role not in roles_present:
        raise EvaluationError(f"no truth element has the role {positive_role!r} (roles: {sorted(roles_present)})")
    chroms = [c for c in results.chromosomes if any(e.chrom == c for e in elements)]
    if not chroms:
        raise EvaluationError(
            f"none of the truth chromosomes ({', '.join(sorted({e.chrom for e in elements}))}) "
            f"holds results in this store ({', '.join(results.chromosomes)})"
        )
    excluded = low_information_positions(elements, min_information) if min_information is not None else set()
    metrics, by_role = [], []
    for analysis in results.analyses:
        attribution = results.spec_kind(analysis) == "attribution"
        frame = pd.concat(
            [
                (
                    _attribution_frame(results, c, analysis)
                    if attribution
                    else results.to_dataframe(c, analysis=analysis)
                )
                for c in chroms
            ],
            ignore_index=True,
        )
        if frame.empty:
            continue
        scores = (
            [c for c in frame.columns if c not in ("chrom", "start", "end", "base", "ref_base")]
            if attribution
            else results.scores(analysis)
        )
        per_base = "base" in frame or attribution
        if "base" in frame:  # per-base analyses (mutagenesis): a position's score is its strongest alternative
            frame = frame.groupby(["chrom", "start", "end"], as_index=False, sort=False)[scores].max()
        n_excluded = 0
        if per_base and excluded:
            keep = np.array([(c, int(p)) not in excluded for c, p in zip(frame["chrom"], frame["start"])], bool)
            n_excluded = int((~keep).sum())
            frame = frame[keep].reset_index(drop=True)
        frame["role"] = (
            np.concatenate(
                [
                    _overlap_roles(g["start"].to_numpy(), g["end"].to_numpy(), [e for e in elements if e.chrom == c])
                    for c, g in frame.groupby("chrom", sort=False)
                ]
            )
            if len(frame)
            else []
        )
        frame["role"] = frame["role"].replace("", "background")
        for score in scores:
            valid = frame[np.isfinite(frame[score])]
            if valid.empty:  # not computed (yet): nothing to evaluate
                continue
            labels = (valid["role"] == positive_role).to_numpy()
            metrics.append(
                {
                    "analysis": analysis,
                    "score": score,
                    "n": len(valid),
                    "n_positive": int(labels.sum()),
                    "auroc": auroc(valid[score].to_numpy(), labels),
                    "aupr": average_precision(valid[score].to_numpy(), labels),
                    "aupr_random": float(labels.mean()) if len(labels) else float("nan"),
                    "min_information": float(min_information)
                    if per_base and min_information is not None
                    else float("nan"),
                    "n_excluded": n_excluded,
                }
            )
            means = valid.groupby("role")[score].agg(["mean", "count"]).reset_index()
            by_role.append(means.assign(analysis=analysis, score=score))
    if not metrics:
        raise EvaluationError("the store holds no computed scores on the truth chromosomes")
    by_role_frame = pd.concat(by_role, ignore_index=True)[["analysis", "score", "role", "count", "mean"]]
    return pd.DataFrame(metrics), by_role_frame


def _attribution_frame(results, chrom: str, analysis: str) -> pd.DataFrame:
    """Per position: |attribution at the reference base| (attribution × one-hot input), raw and corrected."""
    ds = results.query(chrom, analysis=analysis).compute()
    if ds.sizes["perturbation"] == 0:
        return pd.DataFrame(columns=["chrom", "start", "end"])
    ref = np.array(["ACGT".find(b) for b in ds["ref_base"].values])
    rows = np.arange(len(ref))
    frame = pd.DataFrame({"chrom": chrom, "start": ds["start"].values, "end": ds["end"].values})
    for name in ("attribution", "attribution_corrected"):
        values = ds[name].values[rows, np.maximum(ref, 0)]
        frame[f"|{name}|"] = np.where(ref >= 0, np.abs(values), np.nan)
    return frame


def plot_evaluation(metrics: pd.DataFrame, path: str | Path) -> Path:
    """Bar chart of AUROC and AUPR per analysis × score, with chance levels."""
    from screening.report.plot import _save, plt

    labels = [f"{a}\n{s}" for a, s in zip(metrics["analysis"], metrics["score"])]
    x = np.arange(len(metrics))
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 2.2 * len(metrics) + 2), 3.8), constrained_layout=True)
    for ax, column, chance in (
        (axes[0], "auroc", np.full(len(x), 0.5)),
        (axes[1], "aupr", metrics["aupr_random"].to_numpy()),
    ):
        ax.bar(x, metrics[column], color="#1f5fa8", width=0.6)
        ax.scatter(x, chance, marker="_", s=400, color="#d62728", label="random ranking", zorder=3)
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(column.upper())
        for xi, value in zip(x, metrics[column]):
            ax.text(xi, min(value + 0.02, 0.95), f"{value:.2f}", ha="center", fontsize=8)
    axes[1].legend(loc="lower right", fontsize=8)
    return _save(fig, path)
