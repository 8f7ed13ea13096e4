"""The screening engine: build batched perturbed inputs, predict once per batch, score.

The engine reads through :class:`~screening.io.genome.Genome` and
:class:`~screening.io.tracks.TrackSet` handles and calls the model adapter's one
batched ``predict``; perturbations, alignment and scores are the pure functions
of :mod:`screening.perturb.edits`, :mod:`screening.maps.align` and :mod:`screening.maps.score`.
Nothing here writes files.

Every perturbation is an :class:`~screening.perturb.edits.Edit` inside one model
window. Reference windows are predicted once and shared by every perturbation
that uses them; each forward pass holds at most ``batch_size`` inputs
(references and perturbed windows together), so memory stays flat however many
perturbations a unit has.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Iterator

import numpy as np

from screening.maps.align import bin_alignment, centre_bin
from screening.io.tracks import TrackError
from screening.models.base import ModelAdapter, ModelError
from screening.compute.prefetch import predict_batches, prefetch
from screening.perturb.edits import Edit, apply_edit, centered_window_start, dinucleotide_shuffle, duplicate, invert, mask, mutate
from screening.core.regions import parse_region
from screening.maps.score import score_maps
from screening.maps.targets import bins_of, make_target

__all__ = [
    "NonFiniteMapError",
    "Span",
    "Perturbed",
    "load_span",
    "stack_spans",
    "perturbed_items",
    "score_items",
    "run_unit",
    "run_attribution",
    "run_deletions",
    "predict_pair",
    "predict_deletion",
]


class NonFiniteMapError(ModelError):
    """The model predicted inf or NaN for a window: its unit fails rather than store NaN scores."""


@dataclass
class Span:
    """Sequence codes ``uint8 [L]`` and tracks ``float32 [T, L]`` (or None) of one interval."""

    codes: np.ndarray
    tracks: np.ndarray | None

    def window(self, length: int) -> "Span":
        return Span(self.codes[:length], None if self.tracks is None else self.tracks[:, :length])


@dataclass
class Perturbed:
    """One perturbed model input: its window, the edit inside it, and the input itself."""

    window_start: int
    edit: Edit
    span: Span
    base: int = -1  # mutagenesis: the alternative base code (A0 C1 G2 T3)


def load_span(genome, tracks, chrom: str, start: int, end: int) -> Span:
    """Read sequence and transformed tracks of ``chrom:[start, end)``.

    Raises
    ------
    TrackError
        If a track holds inf (or its transform gives inf/NaN) there: a model fed that
        predicts non-finite maps, and every score of the unit would be NaN.
    """
    codes = genome.fetch(chrom, start, end)
    values = tracks.fetch(chrom, start, end) if tracks is not None and len(tracks.names) else None
    if values is not None and not np.isfinite(values).all():
        _refuse_tracks(values, tracks.names, chrom, start, end)
    return Span(codes, values)


def _refuse_tracks(values: np.ndarray, names: list[str], chrom: str, start: int, end: int) -> None:
    row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
    bad = ~np.isfinite(values[row])
    first = start + int(np.flatnonzero(bad)[0])
    raise TrackError(
        f"track {names[row]} has {int(bad.sum()):,} non-finite value(s) (inf, or NaN after its transform) in "
        f"{chrom}:{start:,}-{end:,}, read for a model input, the first at {chrom}:{first:,}; the model cannot use them"
    )


def _segment(span: Span, offset: int, width: int) -> tuple[np.ndarray, np.ndarray | None]:
    tracks = None if span.tracks is None else span.tracks[:, offset : offset + width]
    return span.codes[offset : offset + width], tracks


def _replacement(spec, span: Span, offset: int, width: int, start: int, variant=None):
    """``(ref_length, alt_codes, alt_tracks)`` of one perturbation of the given kind."""
    kind = spec.kind
    if kind == "insertion":
        return 0, spec.inserted_codes(), None
    if kind == "variants":
        edit = variant.edit()
        ref_length = edit.ref_length
        if edit.op == "replace":
            # substitutions keep the measured tracks; inserted bases get 0 (no signal measured there)
            same_length = edit.alt_length == ref_length and span.tracks is not None
            return ref_length, edit.alt_codes, _segment(span, offset, ref_length)[1] if same_length else None
        operation = duplicate if edit.op == "duplicate" else invert
        return (ref_length, *operation(*_segment(span, offset, ref_length)))
    segment_codes, segment_tracks = _segment(span, offset, width)
    if kind == "deletion":
        return width, np.zeros(0, np.uint8), None
    if kind == "mask":
        return (width, *mask(segment_codes, segment_tracks, spec.mask_tracks))
    if kind == "shuffle":
        # seeded by the spec's seed and the position: the same result whatever the chunking
        return width, dinucleotide_shuffle(segment_codes, np.random.default_rng([spec.seed, start])), segment_tracks
    if kind == "inversion":
        return (width, *invert(segment_codes, segment_tracks))
    if kind == "duplication":
        return (width, *duplicate(segment_codes, segment_tracks))
    raise ValueError(f"unknown perturbation kind {kind!r}")


def _span_extra(spec, width: int, variant=None) -> int:
    """bp beyond the window that a net deletion pulls in (loaded so ``follow`` padding has it)."""
    if spec.kind == "deletion":
        return width
    if spec.kind == "variants":
        return max(0, variant.ref_length - variant.alt_length)
    return 0


def perturbed_items(
    spec, genome, tracks, chrom: str, payload: dict[str, Any], window: int
) -> Iterator[tuple[Perturbed, Span]]:
    """Yield ``(perturbed input, reference window)`` for every perturbation of a unit.

    ``payload`` holds the unit's ``start``, ``end`` and ``window_start`` arrays (and
    ``variants`` for VCF screens), as the plan made them.
    """
    if spec.kind == "mutagenesis":
        yield from _mutagenesis_items(genome, tracks, chrom, payload, window)
        return
    padding = getattr(spec, "padding", "zero")
    variants = payload.get("variants")
    loaded: tuple[tuple[int, int], Span] | None = None  # perturbations of a shared window read it once
    for i, (start, end, window_start) in enumerate(zip(payload["start"].tolist(), payload["end"].tolist(), payload["window_start"].tolist())):
        variant = variants[i] if variants is not None else None
        width = getattr(spec, "width", end - start)
        interval = (window_start, window_start + window + _span_extra(spec, width, variant))
        if loaded is None or loaded[0] != interval:
            loaded = interval, load_span(genome, tracks, chrom, *interval)
        span = loaded[1]
        offset = start - window_start
        ref_length, alt_codes, alt_tracks = _replacement(spec, span, offset, width, start, variant)
        codes, values = apply_edit(span.codes, span.tracks, offset, ref_length, alt_codes, alt_tracks, window, padding)
        edit = Edit(offset, ref_length, len(alt_codes))
        yield Perturbed(window_start, edit, Span(codes, values)), span.window(window)


def _mutagenesis_items(genome, tracks, chrom: str, payload: dict[str, Any], window: int):
    starts, window_starts = payload["start"], payload["window_start"]
    for window_start in np.unique(window_starts).tolist():
        reference = load_span(genome, tracks, chrom, window_start, window_start + window)
        positions = starts[window_starts == window_start] - window_start
        ref_bases = reference.codes[positions]
        for position, ref_base in zip(positions.tolist(), ref_bases.tolist()):
            alternatives = [b for b in range(4) if b != ref_base]  # N positions get all 4 bases
            for base, codes in zip(alternatives, mutate(reference.codes, [position] * len(alternatives), alternatives)):
                yield Perturbed(window_start, Edit(position, 1, 1), Span(codes, reference.tracks), base), reference


def stack_spans(spans: list[Span]) -> tuple[np.ndarray, np.ndarray | None]:
    """A batch of spans as ``(codes [B, L], tracks [B, T, L] or None)``, what :meth:`ModelAdapter.predict` takes."""
    codes = np.stack([s.codes for s in spans])
    tracks = None if spans[0].tracks is None else np.stack([s.tracks for s in spans])
    return codes, tracks


def _context(spec, items: list[Perturbed], adapter: ModelAdapter, chrom: str | None = None) -> dict[str, Any]:
    geometry = adapter.geometry
    context: dict[str, Any] = {
        "position": np.array([centre_bin(p.edit.offset, max(p.edit.ref_length, 1), geometry.bin_size, geometry.map_offset) for p in items]),
        "window": spec.insulation_window,
    }
    if spec.roi is not None and any(name.startswith("roi_mean_delta") for name in spec.scores):
        blocks = [_same_chrom(parse_region(text), chrom, f"roi {text}") for text in (spec.roi.rows, spec.roi.cols)]
        context["roi"] = tuple([_bins(block, p.window_start, geometry) for p in items] for block in blocks)
    return context


def _same_chrom(region, chrom: str | None, what: str):
    """``region``, unless it lies on another chromosome than the window it is read in (checked up front by
    :func:`screening.plan.check_map_blocks`; here so that no caller reads another chromosome's bins)."""
    if chrom is not None and region.chrom != chrom:
        raise ValueError(f"{what} is on {region.chrom}, but the window it is read in is on {chrom}")
    return region


def _bins(region, window_start: int, geometry) -> np.ndarray:
    """Map bins of this window covered by ``region`` (clipped to the map; empty when it lies outside)."""
    try:
        return np.asarray(bins_of(region.start, region.end, window_start, geometry, clip=True), dtype=np.int64)
    except ValueError:  # outside this window's map
        return np.zeros(0, np.int64)


def score_items(
    adapter: ModelAdapter, spec, items: Iterator[tuple[Perturbed, Span]], batch_size: int, keep_deltas: bool = False,
    chrom: str | None = None,
) -> Iterator[tuple[list[Perturbed], dict[str, np.ndarray], np.ndarray | None]]:
    """Predict and score perturbations in groups; yield ``(items, scores, Δ maps or None)`` per group.

    References are cached by window start, so a window shared by many
    perturbations (mutagenesis) is predicted once. ``chrom``, the items' chromosome,
    names them in errors and is checked against an ROI's.

    Raises
    ------
    NonFiniteMapError
        If a predicted map holds inf or NaN (naming the window and perturbation).
    """
    geometry = adapter.geometry
    if getattr(adapter, "overlap", False):  # read and perturb the next windows while a batch runs
        items = prefetch(items, depth=2 * batch_size)
    cache: OrderedDict[int, np.ndarray] = OrderedDict()
    group: list[Perturbed] = []
    pending_refs: dict[int, Span] = {}
    references: dict[int, Span] = {}  # reference window of every item in the group

    def flush():
        spans = list(pending_refs.values()) + [p.span for p in group]
        if spec.kind == "mutagenesis":  # substitutions of shared windows: the adapter may reuse the reference's work
            maps = _predict_substitutions(adapter, spans[: len(pending_refs)], group, references, batch_size)
        else:
            batches = (stack_spans(spans[i : i + batch_size]) for i in range(0, len(spans), batch_size))
            maps = np.concatenate(list(predict_batches(adapter, batches)))
        _check_maps(maps, list(pending_refs), group, geometry.window_length, chrom)
        for key, ref_map in zip(pending_refs, maps[: len(pending_refs)]):
            cache[key] = ref_map
        while len(cache) > 2 * batch_size + len(pending_refs):
            cache.popitem(last=False)
        reference = np.stack([cache[p.window_start] for p in group])
        alignments = [
            bin_alignment(p.edit.offset, p.edit.ref_length, p.edit.alt_length, geometry.bin_size, geometry.n_bins,
                          geometry.map_offset)
            for p in group
        ]
        perturbed = maps[len(pending_refs) :]
        scores = score_maps(reference, perturbed, spec.scores, alignments, _context(spec, group, adapter, chrom))
        return scores, (perturbed - reference if keep_deltas else None)

    for perturbed, reference in items:
        new_ref = perturbed.window_start not in cache and perturbed.window_start not in pending_refs
        if group and len(group) + len(pending_refs) + new_ref + 1 > batch_size:
            yield group, *flush()
            group, pending_refs, references = [], {}, {}
            new_ref = perturbed.window_start not in cache
        if new_ref:
            pending_refs[perturbed.window_start] = reference
        references[perturbed.window_start] = reference
        group.append(perturbed)
    if group:
        yield group, *flush()


def _check_maps(maps: np.ndarray, references: list[int], group: list[Perturbed], window: int, chrom: str | None) -> None:
    """Raise :class:`NonFiniteMapError` naming the first window whose predicted map is not all finite.

    ``maps`` holds the maps of the ``references`` (window starts), then of the ``group``'s items.
    """
    finite = np.isfinite(maps.reshape(len(maps), -1)).all(axis=1)
    if finite.all():
        return
    k = int(np.flatnonzero(~finite)[0])
    where = f"{chrom}:" if chrom else ""
    if k < len(references):
        what = f"the reference window {where}{references[k]:,}-{references[k] + window:,}"
    else:
        p = group[k - len(references)]
        start = p.window_start + p.edit.offset
        base = f" to {'ACGT'[p.base]}" if p.base >= 0 else ""
        what = (f"the perturbation at {where}{start:,}-{start + max(p.edit.ref_length, 1):,}{base} (window "
                f"{where}{p.window_start:,}-{p.window_start + window:,})")
    counts = f"{int(np.isnan(maps[k]).sum()):,} NaN, {int(np.isinf(maps[k]).sum()):,} inf"
    raise NonFiniteMapError(
        f"model output is not finite for {what}: {counts} of {maps[k].size:,} map values; the unit fails "
        "rather than store NaN scores"
    )


def _predict_substitutions(
    adapter: ModelAdapter, reference_spans: list[Span], group: list[Perturbed], references: dict[int, Span], batch_size: int
) -> np.ndarray:
    """Maps of the new references, then of the group's substitutions through ``adapter.predict_near``.

    Items of one window are consecutive (mutagenesis yields window by window); each run
    of them is passed with its reference, at most ``batch_size`` windows per call.
    """
    parts = [adapter.predict(*stack_spans(reference_spans[i : i + batch_size])) for i in range(0, len(reference_spans), batch_size)]
    for window_start, run in groupby(group, key=lambda p: p.window_start):
        run, reference = list(run), references[window_start]
        for i in range(0, len(run), batch_size):
            codes, tracks = stack_spans([p.span for p in run[i : i + batch_size]])
            parts.append(adapter.predict_near(reference.codes, reference.tracks, codes, tracks))
    return np.concatenate(parts)


class _TopMaps:
    """The K largest-scoring Δ maps seen so far (memory: K maps, whatever the unit size)."""

    def __init__(self, keep: int) -> None:
        self.keep, self.entries = keep, []  # (score, flat index, Δ map)

    def offer(self, values: np.ndarray, index: np.ndarray, deltas: np.ndarray) -> None:
        finite = np.isfinite(values)
        self.entries += list(zip(values[finite].tolist(), index[finite].tolist(), deltas[finite]))
        self.entries = sorted(self.entries, key=lambda e: -e[0])[: self.keep]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        index = np.array([e[1] for e in self.entries], np.int64)
        maps = np.stack([e[2] for e in self.entries]) if self.entries else np.zeros((0, 0, 0), np.float32)
        return index, maps


def run_unit(
    adapter: ModelAdapter, genome, tracks, spec, chrom: str, payload: dict[str, Any], batch_size: int = 4,
    top: dict | None = None,
) -> dict[str, np.ndarray]:
    """Scores of one work unit: ``name → float32 [n]`` (``[n, 4]`` for mutagenesis, reference base NaN).

    With ``spec.keep_maps = K`` and a ``top`` dict given, ``top["index"]`` and ``top["delta"]``
    receive the K strongest perturbations (by the first score; index within the unit, times 4
    plus the base for mutagenesis) and their Δ maps.
    """
    n = len(payload["start"])
    keeper = _TopMaps(spec.keep_maps) if spec.keep_maps and top is not None else None
    window = adapter.geometry.window_length
    mutagenesis = spec.kind == "mutagenesis"
    out = {name: np.full((n, 4) if mutagenesis else n, np.nan, np.float32) for name in spec.scores}
    index = {int(s): i for i, s in enumerate(payload["start"].tolist())} if mutagenesis else None
    done = 0
    items = perturbed_items(spec, genome, tracks, chrom, payload, window)
    for group, scores, deltas in score_items(adapter, spec, items, batch_size, keeper is not None, chrom):
        if mutagenesis:
            rows = np.array([index[p.window_start + p.edit.offset] for p in group])
            cols = np.array([p.base for p in group])
            flat = rows * 4 + cols
            for name, values in scores.items():
                out[name][rows, cols] = values
        else:
            flat = np.arange(done, done + len(group))
            for name, values in scores.items():
                out[name][done : done + len(group)] = values
        if keeper is not None:
            keeper.offer(scores[spec.scores[0]], flat, deltas)
        done += len(group)
    if keeper is not None:
        top["index"], top["delta"] = keeper.result()
    return out


def _target(spec, window_start: int, geometry, chrom: str | None = None):
    target = spec.target

    def block(rows: str, cols: str):
        r, c = (_same_chrom(parse_region(text), chrom, f"target block {text}") for text in (rows, cols))
        return bins_of(r.start, r.end, window_start, geometry), bins_of(c.start, c.end, window_start, geometry)

    if target.kind == "whole_map":
        return make_target("whole_map")
    if target.kind == "insulation":
        return make_target("insulation", bin=geometry.n_bins // 2, window=target.window)
    if target.kind == "block":
        rows, cols = block(target.rows, target.cols)
        return make_target("block", rows=rows, cols=cols)
    return make_target("difference", a=block(target.rows, target.cols), b=block(target.rows_b, target.cols_b))


def run_attribution(adapter: ModelAdapter, genome, tracks, spec, chrom: str, payload: dict[str, Any]) -> dict[str, np.ndarray]:
    """Attributions of one unit: each distinct window is computed once and keeps the positions it owns.

    Returns ``attribution`` and ``attribution_corrected`` ``float32 [n, 4]`` (A, C, G, T),
    ``track_<name> [n]``, and the window's ``target`` (and ``completeness_error``) per position.
    """
    from screening.interpret.attribution import attribute

    window = adapter.geometry.window_length
    starts, window_starts = payload["start"], payload["window_start"]
    n = len(starts)
    names = list(tracks.names) if tracks is not None else []
    out = {"attribution": np.full((n, 4), np.nan, np.float32), "attribution_corrected": np.full((n, 4), np.nan, np.float32),
           **{f"track_{t}": np.full(n, np.nan, np.float32) for t in names}, "target": np.full(n, np.nan, np.float32)}
    if spec.reports_completeness:
        out["completeness_error"] = np.full(n, np.nan, np.float32)
    for window_start in np.unique(window_starts).tolist():
        rows = np.flatnonzero(window_starts == window_start)
        span = load_span(genome, tracks, chrom, window_start, window_start + window)
        result = attribute(
            adapter, span.codes[None], None if span.tracks is None else span.tracks[None],
            _target(spec, window_start, adapter.geometry, chrom), spec.method,
            baseline=spec.baseline, track_baseline=spec.track_baseline, n_shuffles=spec.n_shuffles, seed=spec.seed,
            n_steps=spec.n_steps, internal_batch_size=spec.internal_batch_size, checkpoint=spec.checkpoint,
        )
        _check_attribution(result, chrom, window_start, window)
        offsets = starts[rows] - window_start
        out["attribution"][rows] = result.sequence[0][offsets]
        out["attribution_corrected"][rows] = result.sequence_corrected[0][offsets]
        for i, name in enumerate(names):
            out[f"track_{name}"][rows] = 0.0 if result.tracks is None else result.tracks[0, i][offsets]
        out["target"][rows] = result.target[0]
        if "completeness_error" in out and result.completeness_error is not None:
            out["completeness_error"][rows] = result.completeness_error[0]
    return out


def _check_attribution(result, chrom: str, window_start: int, window: int) -> None:
    """Raise :class:`NonFiniteMapError` when a window's target (read from the predicted map) or its
    attributions are not finite, rather than store them as results."""
    for what, values in (("the target of the predicted map", result.target), ("the attribution", result.sequence)):
        if not np.isfinite(values).all():
            raise NonFiniteMapError(
                f"model output is not finite for the window {chrom}:{window_start:,}-{window_start + window:,}: "
                f"{what} holds inf or NaN; the unit fails rather than store it"
            )


def run_deletions(
    adapter: ModelAdapter,
    genome,
    tracks,
    chrom: str,
    starts: np.ndarray,
    width: int,
    padding: str,
    scores: tuple[str, ...],
    batch_size: int = 4,
    window_starts: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Score deletions ``[start, start + width)`` on ``chrom``, each in a window centred on it (C.Origami)."""
    from screening.spec import DeletionSpec

    spec = DeletionSpec(width=width, step=width, padding=padding, scores=tuple(scores))
    starts = np.asarray(starts, np.int64)
    if window_starts is None:
        window_starts = np.array([centered_window_start(int(s), width, adapter.geometry.window_length) for s in starts], np.int64)
    payload = {"start": starts, "end": starts + width, "window_start": np.asarray(window_starts, np.int64)}
    return run_unit(adapter, genome, tracks, spec, chrom, payload, batch_size)


def predict_pair(
    adapter: ModelAdapter, genome, tracks, spec, chrom: str, payload: dict[str, Any], base: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Reference and perturbed maps of the first perturbation in ``payload`` (for plots and checks).

    ``base`` picks the alternative base of a mutagenesis position (default: the first).

    Returns
    -------
    (reference_map, perturbed_map, window_start)
    """
    items = perturbed_items(spec, genome, tracks, chrom, payload, adapter.geometry.window_length)
    perturbed, reference = next((p, r) for p, r in items if base is None or p.base == base)
    maps = adapter.predict(*stack_spans([reference, perturbed.span]))
    return maps[0], maps[1], perturbed.window_start


def predict_deletion(
    adapter: ModelAdapter, genome, tracks, chrom: str, start: int, width: int, padding: str = "zero"
) -> tuple[np.ndarray, np.ndarray, int]:
    """Reference and deleted maps for one deletion centred in its window (C.Origami)."""
    from screening.spec import DeletionSpec

    window_start = centered_window_start(start, width, adapter.geometry.window_length)
    payload = {"start": np.array([start]), "end": np.array([start + width]), "window_start": np.array([window_start])}
    return predict_pair(adapter, genome, tracks, DeletionSpec(width=width, step=width, padding=padding), chrom, payload)
