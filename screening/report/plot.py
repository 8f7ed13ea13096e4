"""Pictures a person would rather look at than read: impact tracks and contact maps."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_contact_map", "plot_impact_track", "plot_map_pair", "save_figure"]


def _unit(span_bp: float) -> tuple[float, str]:
    """Axis scale for a genomic span: Mb for large windows, kb or bp for small ones."""
    if span_bp >= 2e6:
        return 1e6, "Mb"
    return (1e3, "kb") if span_bp >= 2e3 else (1.0, "bp")


def _break_gaps(centres: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert NaN between regions that are not adjacent, so the line does not bridge them."""
    if len(centres) < 3:
        return centres, values
    steps = np.diff(centres)
    gaps = np.flatnonzero(steps > 1.5 * np.median(steps))
    return np.insert(centres, gaps + 1, centres[gaps] + steps[gaps] / 2), np.insert(values, gaps + 1, np.nan)


def plot_impact_track(
    centres: np.ndarray,
    values: np.ndarray,
    path: str | Path,
    chrom: str,
    score: str,
    marks: Sequence[tuple[int, str]] = (),
    title: str | None = None,
    marks_label: str = "known sites",
) -> Path:
    """Score along the chromosome (x: perturbation centre in Mb), with optional marked positions."""
    scale, unit = _unit(float(np.ptp(centres)) if len(centres) else 1.0)
    centres, values = _break_gaps(np.asarray(centres, float), np.asarray(values, float))
    fig, ax = plt.subplots(figsize=(10, 2.8), constrained_layout=True)
    ax.plot(centres / scale, values, lw=1.0, color="#1f5fa8", drawstyle="steps-mid")
    ax.fill_between(centres / scale, values, step="mid", alpha=0.25, color="#1f5fa8")
    for i, (position, label) in enumerate(marks):
        ax.axvline(position / scale, color="#d62728", lw=0.8, alpha=0.7, label=marks_label if i == 0 else None)
        if label:
            ax.text(position / scale, ax.get_ylim()[1], label, rotation=90, va="top", ha="right", fontsize=7, color="#d62728")
    ax.set_xlabel(f"{chrom} position ({unit}, perturbation centre)")
    ax.set_ylabel(score)
    ax.set_title(title or f"{score} along {chrom}")
    if len(marks):
        ax.legend(loc="upper right", fontsize=8)
    ax.margins(x=0)
    return _save(fig, path)


def plot_map_pair(
    reference: np.ndarray,
    perturbed: np.ndarray,
    path: str | Path,
    extent_bp: tuple[int, int],
    chrom: str,
    title: str,
    highlight: tuple[int, int] | None = None,
) -> Path:
    """Reference, perturbed and Δ = perturbed − reference maps side by side."""
    diff = perturbed - reference
    lo, hi = np.percentile(np.concatenate([reference.ravel(), perturbed.ravel()]), [1, 99.5])
    bound = float(np.abs(diff).max()) or 1.0
    scale, unit = _unit(extent_bp[1] - extent_bp[0])
    extent = [extent_bp[0] / scale, extent_bp[1] / scale, extent_bp[1] / scale, extent_bp[0] / scale]
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.6), constrained_layout=True)
    panels = [
        (reference, "reference", "Reds", lo, hi),
        (perturbed, "perturbed", "Reds", lo, hi),
        (diff, "perturbed − reference", "RdBu_r", -bound, bound),
    ]
    for ax, (data, name, cmap, vmin, vmax) in zip(axes, panels):
        image = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel(f"{chrom} ({unit})")
        if highlight is not None:
            for edge in highlight:
                ax.axvline(edge / scale, color="k", lw=0.6, ls=":")
        fig.colorbar(image, ax=ax, shrink=0.8)
    axes[0].set_ylabel(f"{chrom} ({unit})")
    fig.suptitle(title)
    return _save(fig, path)


def plot_contact_map(matrix: np.ndarray, path: str | Path, extent_bp: tuple[int, int], chrom: str, title: str,
                     label: str = "predicted") -> Path:
    """One contact map over ``chrom:[extent_bp)``; pixels that were not predicted (NaN) are grey."""
    finite = matrix[np.isfinite(matrix)]
    lo, hi = np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0)
    scale, unit = _unit(extent_bp[1] - extent_bp[0])
    extent = [extent_bp[0] / scale, extent_bp[1] / scale, extent_bp[1] / scale, extent_bp[0] / scale]
    cmap = plt.get_cmap("Reds").with_extremes(bad="#d9d9d9")
    fig, ax = plt.subplots(figsize=(6.4, 5.6), constrained_layout=True)
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=lo, vmax=hi, extent=extent, interpolation="nearest")
    ax.set_xlabel(f"{chrom} ({unit})")
    ax.set_ylabel(f"{chrom} ({unit})")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.8, label=label)
    return _save(fig, path)


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (a reader never sees half a picture) and close it."""
    from screening.store.export import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path


def _save(fig, path: str | Path) -> Path:
    return save_figure(fig, path)
