"""The plan: perturbation coordinates per chromosome, cut into work units aligned to store chunks.

A work unit is exactly one chunk ``k`` of one ``(chrom, analysis)`` group: one
worker owns it at a time and writes only that chunk, so two writers never touch
the same chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from screening.models.base import WindowGeometry
from screening.regions import Region, RegionError, merge_sorted
from screening.spec import DeletionSpec, ScreenSpec
from screening.store import GroupLayout

__all__ = ["WorkUnit", "ScreenPlan", "deletion_starts", "plan_screen"]


@dataclass(frozen=True, order=True)
class WorkUnit:
    """One chunk of perturbations: indices ``[lo, hi)`` of group ``(chrom, analysis)``."""

    chrom: str
    analysis: str
    chunk: int
    lo: int
    hi: int

    @property
    def size(self) -> int:
        return self.hi - self.lo

    def __str__(self) -> str:
        return f"{self.chrom}/{self.analysis}#{self.chunk}"


@dataclass
class ScreenPlan:
    """Every group's layout and the work units that fill it."""

    layouts: list[GroupLayout]
    units: list[WorkUnit]

    @property
    def n_perturbations(self) -> int:
        return sum(layout.n for layout in self.layouts)

    def layout(self, chrom: str, analysis: str) -> GroupLayout:
        for layout in self.layouts:
            if layout.chrom == chrom and layout.analysis == analysis:
                return layout
        raise KeyError(f"no group {chrom}/{analysis} in the plan")


def deletion_starts(regions: Iterable[Region], step: int) -> np.ndarray:
    """Deletion starts ``start + k·step`` for ``k < (end − start) // step`` over each region.

    The region end is exclusive, as in C.Origami's screen. Overlapping regions
    are merged first so no deletion is planned twice.
    """
    starts = [np.arange(r.start, r.start + ((r.end - r.start) // step) * step, step, dtype=np.int64)
              for r in merge_sorted(regions)]
    return np.unique(np.concatenate(starts)) if starts else np.zeros(0, np.int64)


def _check_windows(
    chrom: str, starts: np.ndarray, width: int, geometry: WindowGeometry, chrom_length: int, policy: str
) -> tuple[np.ndarray, np.ndarray]:
    """Window starts of centred windows, and which deletions fit (their windows stay on the chromosome)."""
    window = geometry.window_length
    window_starts = (2 * starts + width - window) // 2
    span_ends = window_starts + window + width
    bad = (window_starts < 0) | (span_ends > chrom_length)
    if bad.any() and policy == "fail":
        first = int(np.flatnonzero(bad)[0])
        w = int(starts[first])
        lowest = -(-(window - width) // 2)
        # the largest w with centered_window_start(w) + window + width <= chrom_length
        highest = (2 * (chrom_length - window - width) + 1 - width + window) // 2
        raise RegionError(
            f"deletion {chrom}:{w:,}-{w + width:,} needs the model window "
            f"{chrom}:{int(window_starts[first]):,}-{int(span_ends[first]):,}, which leaves {chrom} "
            f"(length {chrom_length:,}); on {chrom}, {width:,} bp deletions can start from {lowest:,} to {highest:,} "
            "(or set edge_policy: skip)"
        )
    return window_starts, ~bad


def plan_screen(
    spec: ScreenSpec,
    regions: list[Region],
    chrom_sizes: dict[str, int],
    geometry: WindowGeometry,
) -> ScreenPlan:
    """Lay out every perturbation of the spec over validated regions and cut work units.

    Raises
    ------
    RegionError
        If a perturbation's model window leaves its chromosome.
    """
    chunk_size = spec.execution.chunk_size
    layouts: list[GroupLayout] = []
    chroms = sorted({r.chrom for r in regions}, key=list(chrom_sizes).index)
    for chrom in chroms:
        on_chrom = [r for r in regions if r.chrom == chrom]
        for perturbation in spec.perturbations:
            layouts.append(
                _deletion_layout(chrom, on_chrom, perturbation, chrom_sizes[chrom], geometry, chunk_size, spec.edge_policy)
            )
    layouts = [layout for layout in layouts if layout.n > 0]
    if not layouts:
        raise RegionError("the regions are shorter than one step: the screen has no perturbations")
    units = [
        WorkUnit(layout.chrom, layout.analysis, k, sl.start, sl.stop)
        for layout in layouts
        for k, sl in ((k, layout.chunk_slice(k)) for k in range(layout.n_chunks))
    ]
    return ScreenPlan(layouts, units)


def _deletion_layout(
    chrom: str,
    regions: list[Region],
    spec: DeletionSpec,
    chrom_length: int,
    geometry: WindowGeometry,
    chunk_size: int,
    policy: str = "fail",
) -> GroupLayout:
    starts = deletion_starts(regions, spec.step)
    window_starts, fits = _check_windows(chrom, starts, spec.width, geometry, chrom_length, policy)
    params = spec.model_dump(mode="json")
    if not fits.all():
        skipped = starts[~fits]
        params["skipped"] = {
            "reason": "model window leaves the chromosome",
            "count": int(len(skipped)),
            "starts": skipped.tolist() if len(skipped) <= 1000 else skipped[:1000].tolist(),
        }
    starts, window_starts = starts[fits], window_starts[fits]
    return GroupLayout(
        chrom=chrom,
        chrom_length=chrom_length,
        analysis=spec.label,
        kind=spec.kind,
        params=params,
        start=starts,
        end=starts + spec.width,
        window_start=window_starts.astype(np.int64),
        scores=list(spec.scores),
        chunk_size=chunk_size,
    )
