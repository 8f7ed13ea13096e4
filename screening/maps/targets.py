"""Scalar targets of a predicted contact map, for attribution (differentiable, batched).

A target turns predicted maps ``[B, n, n]`` into one number per window ``[B]`` with
plain torch operations, so that gradients flow back to the model input
(:mod:`screening.interpret.attribution`). Each kind is a small frozen dataclass whose instances
are callables; :func:`make_target` builds one from a kind name and already-resolved
map bins, and :data:`TARGETS` lists the kinds with their parameters.

Bins are map bins of one window, given as ``range``/``slice`` (step 1) or a
``(start, stop)`` pair, half-open. :func:`bins_of` converts a genomic interval
(0-based, half-open) to the bins it overlaps in a window. Definitions and signs are in
``docs/attribution.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch

from screening.core.regions import Region, parse_region
from screening.models.base import WindowGeometry
from screening.maps.insulation import DEFAULT_IGNORE_DIAGS, DEFAULT_INSULATION_WINDOW, raw_insulation_at

__all__ = [
    "BinSpan",
    "Block",
    "Difference",
    "Insulation",
    "TARGETS",
    "TargetKind",
    "WholeMap",
    "available_targets",
    "bins_of",
    "make_target",
    "map_block",
    "window_target",
    "windows_missing",
]

BinSpan = range | slice | tuple[int, int]
"""Map bins ``[start, stop)``: a ``range`` or ``slice`` with step 1, or a ``(start, stop)`` pair."""


def _span(bins: BinSpan, what: str) -> tuple[int, int]:
    """Normalise a bin span to a hashable ``(start, stop)`` with ``0 <= start < stop``."""
    if isinstance(bins, (range, slice)):
        if bins.step not in (None, 1):
            raise ValueError(f"{what}: bins must have step 1, got {bins}")
        if bins.start is None or bins.stop is None:
            raise ValueError(f"{what}: bins need an explicit start and stop, got {bins}")
        start, stop = bins.start, bins.stop
    else:
        try:
            start, stop = bins
        except (TypeError, ValueError):
            raise ValueError(f"{what}: bins must be a range, slice or (start, stop), got {bins!r}") from None
    start, stop = int(start), int(stop)
    if not 0 <= start < stop:
        raise ValueError(f"{what}: need 0 <= start < stop, got [{start}, {stop})")
    return start, stop


def _check_maps(maps: torch.Tensor, stop: int, what: str) -> None:
    if maps.ndim != 3 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"{what}: maps must be [B, n, n], got {tuple(maps.shape)}")
    if stop > maps.shape[-1]:
        raise ValueError(f"{what}: bin {stop - 1} is outside a map of {maps.shape[-1]} bins")


# --- target kinds -------------------------------------------------------------------------


@dataclass(frozen=True)
class WholeMap:
    """Sum of every pixel of the map."""

    kind = "whole_map"

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        """``[B, n, n]`` → ``[B]``."""
        _check_maps(maps, 0, self.kind)
        return maps.sum(dim=(-2, -1))


@dataclass(frozen=True)
class Block:
    """Mean over the block ``rows × cols`` of the map (e.g. a loop between two anchors).

    Parameters
    ----------
    rows, cols
        Map bins (:data:`BinSpan`). Maps that are not symmetrised (C.Origami) are read
        as given: ``(rows, cols)`` and ``(cols, rows)`` are different blocks.
    """

    rows: BinSpan
    cols: BinSpan
    kind = "block"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", _span(self.rows, "block rows"))
        object.__setattr__(self, "cols", _span(self.cols, "block cols"))

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        """``[B, n, n]`` → ``[B]``."""
        (r0, r1), (c0, c1) = self.rows, self.cols
        _check_maps(maps, max(r1, c1), self.kind)
        return maps[:, r0:r1, c0:c1].mean(dim=(-2, -1))


@dataclass(frozen=True)
class Insulation:
    """Raw insulation at one bin: mean of the square touching the diagonal there.

    The square has rows ``bin − window + 1 … bin`` and columns ``bin … bin + window − 1``
    (cooltools' dense diamond, as :func:`screening.maps.insulation.insulation`), leaving out pixels
    with ``|i − j| < ignore_diags``. Lower values mean fewer contacts cross the bin, i.e.
    a stronger boundary. Unlike the score's track it is not log2-normalised by the mean
    over all bins, so the target depends on the square alone.

    Parameters
    ----------
    bin
        Map bin.
    window
        Square side in bins (≥ 1).
    ignore_diags
        Diagonals next to the main one left out (``0 <= ignore_diags <= 2 window − 2``,
        so that at least one pixel remains).
    """

    bin: int
    window: int = DEFAULT_INSULATION_WINDOW
    ignore_diags: int = DEFAULT_IGNORE_DIAGS
    kind = "insulation"

    def __post_init__(self) -> None:
        for name in ("bin", "window", "ignore_diags"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.window < 1:
            raise ValueError(f"insulation: window must be >= 1, got {self.window}")
        if not 0 <= self.ignore_diags <= 2 * self.window - 2:
            raise ValueError(
                f"insulation: ignore_diags must be in [0, {2 * self.window - 2}] for window {self.window}, "
                f"got {self.ignore_diags}"
            )
        if self.bin - self.window + 1 < 0:
            raise ValueError(f"insulation: the square at bin {self.bin} (window {self.window}) leaves the map")

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        """``[B, n, n]`` → ``[B]``."""
        _check_maps(maps, self.bin + self.window, self.kind)
        return raw_insulation_at(maps, self.bin, self.window, self.ignore_diags)


def _block(value: Block | Mapping[str, Any] | tuple, what: str) -> Block:
    if isinstance(value, Block):
        return value
    if isinstance(value, Mapping):
        return Block(**value)
    try:
        rows, cols = value
    except (TypeError, ValueError):
        raise ValueError(f"difference: {what} must be a Block, {{rows, cols}} or (rows, cols), got {value!r}") from None
    return Block(rows, cols)


@dataclass(frozen=True)
class Difference:
    """``mean(block a) − mean(block b)``: contacts at one locus relative to another.

    Parameters
    ----------
    a, b
        :class:`Block`, or ``(rows, cols)`` pairs / ``{"rows": ..., "cols": ...}``
        mappings of map bins.
    """

    a: Block
    b: Block
    kind = "difference"

    def __post_init__(self) -> None:
        object.__setattr__(self, "a", _block(self.a, "a"))
        object.__setattr__(self, "b", _block(self.b, "b"))

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        """``[B, n, n]`` → ``[B]``."""
        return self.a(maps) - self.b(maps)


# --- registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetKind:
    """A registered target kind.

    Attributes
    ----------
    name
        Registry key.
    factory
        Class building the target from keyword parameters.
    params
        Required parameters.
    optional
        Optional parameters (with defaults).
    summary
        One line for listings.
    """

    name: str
    factory: Callable[..., Callable[[torch.Tensor], torch.Tensor]]
    params: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    summary: str = ""


TARGETS: dict[str, TargetKind] = {
    k.name: k
    for k in (
        TargetKind("whole_map", WholeMap, summary="sum of all pixels"),
        TargetKind("block", Block, ("rows", "cols"), summary="mean over a rows × cols block (a loop)"),
        TargetKind(
            "insulation",
            Insulation,
            ("bin",),
            ("window", "ignore_diags"),
            summary="mean of the square next to the diagonal at a bin; lower = stronger boundary",
        ),
        TargetKind("difference", Difference, ("a", "b"), summary="mean(block a) − mean(block b)"),
    )
}


def available_targets() -> dict[str, dict[str, Any]]:
    """Target kinds with their required and optional parameters and a summary."""
    return {
        name: {"params": kind.params, "optional": kind.optional, "summary": kind.summary}
        for name, kind in TARGETS.items()
    }


def make_target(kind: str, **params: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """Build a target from its kind and already-resolved map bins.

    Parameters
    ----------
    kind
        A key of :data:`TARGETS`.
    **params
        The kind's parameters, e.g. ``rows=range(3, 5), cols=range(9, 11)`` for ``block``.

    Returns
    -------
    Callable[[torch.Tensor], torch.Tensor]
        A frozen, hashable callable mapping ``[B, n, n]`` maps to ``[B]``.

    Raises
    ------
    ValueError
        Unknown kind, missing or unknown parameters, or invalid bins.
    """
    if kind not in TARGETS:
        raise ValueError(f"unknown target kind {kind!r}; choose from {sorted(TARGETS)}")
    entry = TARGETS[kind]
    missing = [p for p in entry.params if p not in params]
    unknown = [p for p in params if p not in entry.params + entry.optional]
    if missing or unknown:
        raise ValueError(
            f"target {kind!r} takes {list(entry.params)} (optional {list(entry.optional)}); "
            f"missing {missing}, unknown {unknown}"
        )
    return entry.factory(**params)


def window_target(target: Any, window_start: int, geometry: WindowGeometry, chrom: str | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The target a spec's ``target`` (``kind``, and ``rows``/``cols``/``rows_b``/``cols_b`` regions or
    ``window``) names, in the bins of the model window at ``window_start`` on ``chrom``.

    Raises
    ------
    ValueError
        A block on another chromosome than ``chrom``, or outside the window's map.
    """

    def block(rows: str, cols: str) -> tuple[range, range]:
        r, c = (map_block(text, chrom, f"target block {text}") for text in (rows, cols))
        return bins_of(r.start, r.end, window_start, geometry), bins_of(c.start, c.end, window_start, geometry)

    if target.kind == "whole_map":
        return make_target("whole_map")
    if target.kind == "insulation":
        return make_target("insulation", bin=geometry.n_bins // 2, window=target.window)
    if target.kind == "block":
        rows, cols = block(target.rows, target.cols)
        return make_target("block", rows=rows, cols=cols)
    return make_target("difference", a=block(target.rows, target.cols), b=block(target.rows_b, target.cols_b))


# --- genomic intervals → bins -------------------------------------------------------------


def map_block(text: str, chrom: str | None, what: str) -> Region:
    """The region ``text`` of a map block, refused when it lies on another chromosome than ``chrom``, the
    window's it is read in (checked up front by :func:`screening.plan.check_map_blocks`; here as well so
    that no caller reads another chromosome's bins)."""
    region = parse_region(text)
    if chrom is not None and region.chrom != chrom:
        raise ValueError(f"{what} is on {region.chrom}, but the window it is read in is on {chrom}")
    return region


def bins_of(start: int, end: int, window_start: int, geometry: WindowGeometry, clip: bool = False) -> range:
    """Map bins of a window that overlap the genomic interval ``[start, end)``.

    Bin ``k`` covers ``[origin + k·bin_size, origin + (k + 1)·bin_size)`` with
    ``origin = window_start + geometry.map_offset``; a bin partly overlapped counts.

    Parameters
    ----------
    start, end
        0-based, half-open genomic interval on the window's chromosome.
    window_start
        Genomic start of the model input window.
    geometry
        The model's window geometry.
    clip
        Clip an interval that reaches past the map to the map's bins; by default such an
        interval is an error (a silently shrunk target would mislead).

    Returns
    -------
    range
        The overlapped bins, step 1, non-empty.

    Raises
    ------
    ValueError
        Empty interval, interval outside the map, or past its edge without ``clip``.
    """
    if end <= start:
        raise ValueError(f"empty interval [{start:,}, {end:,})")
    origin = window_start + geometry.map_offset
    first = (start - origin) // geometry.bin_size
    stop = -(-(end - origin) // geometry.bin_size)  # ceil division
    if stop <= 0 or first >= geometry.n_bins:
        raise ValueError(
            f"interval [{start:,}, {end:,}) lies outside the map of the window at {window_start:,} "
            f"(bins cover [{origin:,}, {origin + geometry.n_bins * geometry.bin_size:,}))"
        )
    if (first < 0 or stop > geometry.n_bins) and not clip:
        raise ValueError(
            f"interval [{start:,}, {end:,}) reaches past the map of the window at {window_start:,} "
            f"(bins cover [{origin:,}, {origin + geometry.n_bins * geometry.bin_size:,})); pass clip=True to clip it"
        )
    return range(max(first, 0), min(stop, geometry.n_bins))


def windows_missing(start: int, end: int, window_starts: np.ndarray, geometry: WindowGeometry, clip: bool = False) -> np.ndarray:
    """Which windows' maps cannot take the genomic interval ``[start, end)`` as a block.

    The vectorised counterpart of :func:`bins_of`, for checking every window of a plan
    before anything runs: a window is missing the interval when :func:`bins_of` with the
    same ``clip`` would raise for it.

    Parameters
    ----------
    start, end
        0-based, half-open genomic interval on the windows' chromosome (``end > start``).
    window_starts
        Genomic starts of the model input windows.
    geometry
        The model's window geometry.
    clip
        False: the map must hold the whole interval (an attribution target);
        True: it must overlap the interval (an ROI, clipped to the map).

    Returns
    -------
    numpy.ndarray
        ``bool`` per window, True where the map does not hold (or, with ``clip``, overlap) it.
    """
    origin = np.asarray(window_starts, dtype=np.int64) + geometry.map_offset
    map_end = origin + geometry.n_bins * geometry.bin_size
    if clip:
        return (end <= origin) | (start >= map_end)
    # bins_of counts a partly covered bin, so the interval fits when its covering bins are inside the map
    return (start < origin) | (end > map_end)
