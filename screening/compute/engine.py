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

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Iterator

import numpy as np
import torch

from screening.compute.assemble import EditedInput, InputAssembler
from screening.compute.prefetch import predict_batches, prefetch
from screening.core.encode import encode, reverse_complement
from screening.io.genome import Genome
from screening.io.tracks import TrackError, TrackSet
from screening.maps.align import AlignmentCache, centre_bin, pieces_index
from screening.maps.score import parse_score_name
from screening.maps.score_torch import maybe_finite, score_tensors
from screening.maps.targets import bins_of, map_block
from screening.models.base import ModelAdapter, ModelError
from screening.perturb.edits import Edit, apply_edit, centered_window_start, invert
from screening.perturb.kinds import kind_of
from screening.perturb.rearrange import PlacedRearrangement
from screening.plan import UnitPayload

__all__ = [
    "NonFiniteMapError",
    "Span",
    "Perturbed",
    "load_span",
    "stack_spans",
    "perturbed_items",
    "score_items",
    "UnitResult",
    "run_unit",
    "run_rearrangements",
    "rearranged_span",
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
    """One perturbed model input: its window, the edit inside it, and the input as that edit of the
    loaded span (built only where needed: on the device by :mod:`screening.compute.assemble`, or on
    the host by :attr:`span`)."""

    window_start: int
    edit: Edit
    input: EditedInput
    base: int = -1  # mutagenesis: the alternative base code (A0 C1 G2 T3)
    # a haplotype's alleles applied together: each one's (offset, ref_length, alt_length), for the alignment, and
    # the focal allele's (offset, ref_length), for the scores' position
    parts: tuple[tuple[int, int, int], ...] = ()
    focus: tuple[int, int] | None = None

    @property
    def aligned_as(self) -> tuple:
        """What the alignment of this input is computed from: its edit, or its several edits."""
        return self.parts or (self.edit.offset, self.edit.ref_length, self.edit.alt_length)

    @property
    def span(self) -> Span:
        """The edited window's codes and tracks, built on the host."""
        return materialize(self.input)


def materialize(item: EditedInput) -> Span:
    """The input an :class:`EditedInput` describes, as host arrays (:func:`~screening.perturb.edits.apply_edit`)."""
    window = Span(item.window_codes(), item.window_tracks())
    if item.offset >= item.length and item.ref_length == 0 and not len(item.alt_codes):
        return window.window(item.length)
    codes, tracks = apply_edit(window.codes, window.tracks, item.offset, item.ref_length, item.alt_codes,
                               item.alt_tracks, item.length, item.padding)
    return Span(codes, tracks)


def load_span(genome: Genome, tracks: TrackSet | None, chrom: str, start: int, end: int) -> Span:
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


def perturbed_items(
    spec: Any, genome: Genome, tracks: TrackSet | None, chrom: str, payload: UnitPayload, window: int
) -> Iterator[tuple[Perturbed, Span]]:
    """Yield ``(perturbed input, reference window)`` for every perturbation of a unit.

    ``payload`` holds the unit's ``start``, ``end`` and ``window_start`` arrays (and
    ``variants`` for VCF screens), as the plan made them. Sequence and tracks are read once
    for runs of perturbations whose windows (plus the bp a net deletion pulls in) fit in
    :data:`LOAD_WINDOWS` windows, as neighbouring centred windows or a shared window do; each
    input is an edit of that read (:attr:`Perturbed.input`), not a copy.
    """
    kind = kind_of(spec)
    if kind.per_base:
        yield from _substitution_items(genome, tracks, chrom, payload, window)
        return
    padding = getattr(spec, "padding", "zero")
    variants = payload.get("variants")
    starts, window_starts = payload["start"].tolist(), payload["window_start"].tolist()
    needed = [ws + window + kind.downstream(spec, None if variants is None else variants[i])
              for i, ws in enumerate(window_starts)]
    loaded: tuple[int, int, Span] | None = None  # [lo, hi) read, and its span
    for i, (start, window_start) in enumerate(zip(starts, window_starts)):
        variant = variants[i] if variants is not None else None
        if loaded is None or not loaded[0] <= window_start or needed[i] > loaded[1]:
            loaded = _load_run(genome, tracks, chrom, window_starts, needed, i, window)
        lo, _, span = loaded
        members = getattr(variant, "members", None)  # a haplotype: its edit starts at its first allele
        base, offset = window_start - lo, (members[0].start if members else start) - window_start
        ref_length, alt_codes, alt_tracks = kind.alternative(
            spec, span.codes[base + offset :], None if span.tracks is None else span.tracks[:, base + offset :], start,
            variant,
        )
        edited = EditedInput(span.codes, span.tracks, offset, ref_length, alt_codes, alt_tracks, window, padding, base)
        item = Perturbed(window_start, Edit(offset, ref_length, len(alt_codes)), edited)
        if members:
            item.parts = tuple((m.start - window_start, m.ref_length, m.alt_length) for m in members)
            item.focus = (start - window_start, variant.focus.ref_length)
        yield item, materialize(edited.unedited())


#: Perturbations whose windows fall within this many window lengths are read from the genome and tracks at once.
LOAD_WINDOWS = 2


def _load_run(
    genome: Genome, tracks: TrackSet | None, chrom: str, window_starts: list[int], needed: list[int], i: int, window: int
) -> tuple[int, int, Span]:
    """Read the span ``[window_starts[i], end)`` covering perturbation ``i`` and those after it whose windows
    end within :data:`LOAD_WINDOWS` window lengths of its start (in order, windows never start before it)."""
    lo, hi, j = window_starts[i], needed[i], i + 1
    while j < len(needed) and window_starts[j] >= lo and needed[j] - lo <= LOAD_WINDOWS * window:
        hi, j = max(hi, needed[j]), j + 1
    return lo, hi, load_span(genome, tracks, chrom, lo, hi)


def _substitution_items(
    genome: Genome, tracks: TrackSet | None, chrom: str, payload: UnitPayload, window: int
) -> Iterator[tuple[Perturbed, Span]]:
    starts, window_starts = payload["start"], payload["window_start"]
    for window_start in np.unique(window_starts).tolist():
        reference = load_span(genome, tracks, chrom, window_start, window_start + window)
        positions = starts[window_starts == window_start] - window_start
        ref_bases = reference.codes[positions]
        for position, ref_base in zip(positions.tolist(), ref_bases.tolist()):
            kept = None if reference.tracks is None else reference.tracks[:, position : position + 1]  # tracks unchanged
            for base in (b for b in range(4) if b != ref_base):  # N positions get all 4 bases
                edited = EditedInput(reference.codes, reference.tracks, position, 1, np.array([base], np.uint8), kept, window)
                yield Perturbed(window_start, Edit(position, 1, 1), edited, base), reference


def stack_spans(spans: list[Span]) -> tuple[np.ndarray, np.ndarray | None]:
    """A batch of spans as ``(codes [B, L], tracks [B, T, L] or None)``, what :meth:`ModelAdapter.predict` takes."""
    codes = np.stack([s.codes for s in spans])
    tracks = None if spans[0].tracks is None else np.stack([s.tracks for s in spans])
    return codes, tracks


def _context(spec: Any, items: list[Perturbed], adapter: ModelAdapter, chrom: str | None = None) -> dict[str, Any]:
    geometry = adapter.geometry
    context: dict[str, Any] = {
        "position": np.array([centre_bin(*_focus(p), geometry.bin_size, geometry.map_offset) for p in items]),
        "window": spec.insulation_window,
    }
    if spec.roi is not None and any(name.startswith("roi_mean_delta") for name in spec.scores):
        blocks = [map_block(text, chrom, f"roi {text}") for text in (spec.roi.rows, spec.roi.cols)]
        context["roi"] = tuple([_bins(block, p.window_start, geometry) for p in items] for block in blocks)
    return context


def _focus(p: Perturbed) -> tuple[int, int]:
    """``(offset, length)`` whose centre is the perturbation's position: its edit, or a haplotype's focal allele."""
    offset, length = p.focus if p.focus is not None else (p.edit.offset, p.edit.ref_length)
    return offset, max(length, 1)


def _bins(region, window_start: int, geometry) -> np.ndarray:
    """Map bins of this window covered by ``region`` (clipped to the map; empty when it lies outside)."""
    try:
        return np.asarray(bins_of(region.start, region.end, window_start, geometry, clip=True), dtype=np.int64)
    except ValueError:  # outside this window's map
        return np.zeros(0, np.int64)


def score_items(
    adapter: ModelAdapter, spec: Any, items: Iterator[tuple[Perturbed, Span]], batch_size: int, keep_deltas: bool = False,
    chrom: str | None = None, reverse: bool = False,
) -> Iterator[tuple[list[Perturbed], dict[str, np.ndarray], torch.Tensor | None]]:
    """Predict and score perturbations in groups; yield ``(items, scores, Δ maps or None)`` per group.

    References are cached by window start, so a window shared by many
    perturbations (mutagenesis) is predicted once. ``chrom``, the items' chromosome,
    names them in errors and is checked against an ROI's.

    Maps stay where the model ran: reference maps are cached there, finiteness is checked and
    every score computed there (:func:`screening.maps.score_torch.score_tensors`); the scores
    (``float64 [B]`` numpy) and the finiteness flags cross to the host, once per group. The Δ
    maps are a tensor on the device too (``float32 [B, n, n]``): the caller moves those it keeps.

    With ``reverse``, every input (references too) is reverse complemented before the forward pass and its map
    flipped back (:func:`_predict_reversed`), so maps, alignments and positions stay in forward coordinates.

    Raises
    ------
    NonFiniteMapError
        If a predicted map holds inf or NaN (naming the window and perturbation).
    """
    geometry = adapter.geometry
    overlap = getattr(adapter, "overlap", False)
    if overlap:  # read and perturb the next windows while a batch runs
        items = prefetch(items, depth=2 * batch_size)
    # substitutions of shared windows go through the adapter's predict_near when it reuses the reference's work
    near = not reverse and kind_of(spec).per_base and type(adapter).predict_near is not ModelAdapter.predict_near
    assembler = None
    if not near and not reverse and adapter.position_encoding() is not None:  # inputs built on the device from encoded spans
        assembler = _assembler(adapter, buffers=3 if overlap and adapter.device.type != "cpu" else 1)
    cache: OrderedDict[int, torch.Tensor] = OrderedDict()  # reference maps, where the model ran
    # alignments only for aligned scores, each edit geometry aligned once per unit (mutagenesis repeats them)
    aligned = any(parse_score_name(name)[1] for name in spec.scores)
    alignments = AlignmentCache(geometry.bin_size, geometry.n_bins, geometry.map_offset) if aligned else None
    group: list[Perturbed] = []
    pending_refs: dict[int, Span] = {}  # references to predict with the group: their windows ...
    references_in: dict[int, EditedInput] = {}  # ... as inputs (the unedited read the items edit)
    references: dict[int, Span] = {}  # reference window of every item in the group

    def flush():
        if near:
            maps = _predict_substitutions(adapter, list(pending_refs.values()), group, references, batch_size)
        elif reverse:
            maps = _predict_reversed(adapter, [references_in[key] for key in pending_refs] + [p.input for p in group],
                                     batch_size)
        else:
            inputs = [references_in[key] for key in pending_refs] + [p.input for p in group]
            maps = _predict_inputs(adapter, assembler, inputs, batch_size)
        # everything stays where the model ran; the one synchronisation is the transfer of the flags and scores
        for key, ref_map in zip(pending_refs, maps[: len(pending_refs)]):
            cache[key] = ref_map.clone()  # not a view: the batch's other maps are freed
        while len(cache) > 2 * batch_size + len(pending_refs):
            cache.popitem(last=False)
        starts = [p.window_start for p in group]
        perturbed = maps[len(pending_refs) :]
        if all(start == starts[0] for start in starts):  # one shared window: no copies of its map
            reference = cache[starts[0]].expand(perturbed.shape)
        else:
            reference = torch.stack([cache[start] for start in starts])
        index = None if alignments is None else alignments.index([p.aligned_as for p in group])
        scores = score_tensors(reference, perturbed, spec.scores, index, _context(spec, group, adapter, chrom))
        host = torch.cat([maybe_finite(maps).to(torch.float64), *scores.values()]).cpu().numpy()
        _check_maps(maps, host[: len(maps)].astype(bool), list(pending_refs), group, geometry.window_length, chrom)
        values = host[len(maps) :].reshape(len(scores), len(group))
        return dict(zip(scores, values)), (perturbed - reference if keep_deltas else None)

    for perturbed, reference in items:
        new_ref = perturbed.window_start not in cache and perturbed.window_start not in pending_refs
        if group and len(group) + len(pending_refs) + new_ref + 1 > batch_size:
            yield group, *flush()
            group, pending_refs, references_in, references = [], {}, {}, {}
            new_ref = perturbed.window_start not in cache
        if new_ref:
            pending_refs[perturbed.window_start] = reference
            references_in[perturbed.window_start] = perturbed.input.unedited()
        references[perturbed.window_start] = reference
        group.append(perturbed)
    if group:
        yield group, *flush()


_ASSEMBLERS: "weakref.WeakKeyDictionary[ModelAdapter, InputAssembler]" = weakref.WeakKeyDictionary()


def _assembler(adapter: ModelAdapter, buffers: int) -> InputAssembler:
    """The adapter's input assembler, kept with it so its buffers are reused unit after unit (a fresh
    batch-32 buffer of C.Origami's inputs is 1.9 GB of memory to fault in again)."""
    assembler = _ASSEMBLERS.get(adapter)
    if assembler is None or len(assembler.buffers) != buffers:
        assembler = _ASSEMBLERS[adapter] = InputAssembler(adapter, buffers)
    return assembler


def _predict_inputs(
    adapter: ModelAdapter, assembler: InputAssembler | None, inputs: list[EditedInput], batch_size: int
) -> torch.Tensor:
    """Maps of the inputs, ``batch_size`` per forward pass, on the device: inputs built there by ``assembler``,
    else on the host (edited, stacked and encoded by the adapter)."""
    batches = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
    if assembler is not None and adapter.device.type == "cpu":
        # building is memory copies on the cores the forward pass uses: a thread ahead would only hold more buffers
        return _cat([adapter.predict_maps(assembler.build(batch)) for batch in batches])
    if assembler is not None:  # on an accelerator a thread ahead queues the next batch's splices during the forward
        return _cat(list(predict_batches(adapter, batches, build=assembler.build, on_device=True)))
    spans = ([materialize(item) for item in batch] for batch in batches)
    return _cat(list(predict_batches(adapter, (stack_spans(batch) for batch in spans), on_device=True)))


def _predict_reversed(adapter: ModelAdapter, inputs: list[EditedInput], batch_size: int) -> torch.Tensor:
    """Maps of the inputs' reverse strands (sequence reverse complemented, tracks reversed), each flipped back along
    both axes into the forward window's bin order (the plan checks the map lies in the middle of the window)."""
    spans = [materialize(item) for item in inputs]
    reversed_spans = [Span(reverse_complement(s.codes), None if s.tracks is None else s.tracks[:, ::-1].copy())
                      for s in spans]
    batches = (stack_spans(reversed_spans[i : i + batch_size]) for i in range(0, len(reversed_spans), batch_size))
    return _cat(list(predict_batches(adapter, batches, on_device=True))).flip(-2, -1)


def _cat(maps: list[torch.Tensor]) -> torch.Tensor:
    return maps[0] if len(maps) == 1 else torch.cat(maps)


def _check_maps(
    maps: torch.Tensor, finite: np.ndarray, references: list[int], group: list[Perturbed], window: int, chrom: str | None
) -> None:
    """Raise :class:`NonFiniteMapError` naming the first window whose predicted map is not all finite.

    ``maps`` holds the maps of the ``references`` (window starts), then of the ``group``'s items; ``finite``
    says which of them may be all finite (:func:`~screening.maps.score_torch.maybe_finite`, computed where they are,
    with the scores): its False are confirmed here.
    """
    if finite.all():
        return
    finite = torch.isfinite(maps.reshape(len(maps), -1)).all(dim=1).cpu().numpy()
    if finite.all():  # a sum overflowed
        return
    k = int(np.flatnonzero(~finite)[0])
    bad = maps[k].cpu().numpy()
    where = f"{chrom}:" if chrom else ""
    if k < len(references):
        what = f"the reference window {where}{references[k]:,}-{references[k] + window:,}"
    else:
        p = group[k - len(references)]
        start = p.window_start + p.edit.offset
        base = f" to {'ACGT'[p.base]}" if p.base >= 0 else ""
        what = (f"the perturbation at {where}{start:,}-{start + max(p.edit.ref_length, 1):,}{base} (window "
                f"{where}{p.window_start:,}-{p.window_start + window:,})")
    counts = f"{int(np.isnan(bad).sum()):,} NaN, {int(np.isinf(bad).sum()):,} inf"
    raise NonFiniteMapError(
        f"model output is not finite for {what}: {counts} of {bad.size:,} map values; the unit fails "
        "rather than store NaN scores"
    )


def _predict_substitutions(
    adapter: ModelAdapter, reference_spans: list[Span], group: list[Perturbed], references: dict[int, Span], batch_size: int
) -> torch.Tensor:
    """Maps of the new references, then of the group's substitutions through ``adapter.predict_near``, on the device.

    Items of one window are consecutive (mutagenesis yields window by window); each run
    of them is passed with its reference, at most ``batch_size`` windows per call.
    """
    parts = [adapter.predict_maps(adapter.build_input(*stack_spans(reference_spans[i : i + batch_size])))
             for i in range(0, len(reference_spans), batch_size)]
    for window_start, run in groupby(group, key=lambda p: p.window_start):
        run, reference = list(run), references[window_start]
        for i in range(0, len(run), batch_size):
            codes, tracks = stack_spans([p.span for p in run[i : i + batch_size]])
            near = adapter.predict_near(reference.codes, reference.tracks, codes, tracks)  # numpy (the adapter's API)
            parts.append(torch.as_tensor(near, device=adapter.device))
    return _cat([part.to(adapter.device) for part in parts])


class _TopMaps:
    """The K largest-scoring Δ maps seen so far (memory: K maps, whatever the unit size)."""

    def __init__(self, keep: int) -> None:
        self.keep, self.entries = keep, []  # (score, flat index, Δ map)

    def offer(self, values: np.ndarray, index: np.ndarray, deltas: torch.Tensor | np.ndarray) -> None:
        """Keep the group's Δ maps (``[B, n, n]``, on the device or the host) that enter the top K: only those
        cross to the host."""
        rows = np.flatnonzero(np.isfinite(values))
        # an entry offered now carries its row in deltas (an int), a kept one its host map
        candidates = self.entries + list(zip(values[rows].tolist(), index[rows].tolist(), rows.tolist()))
        kept = sorted(candidates, key=lambda e: -e[0])[: self.keep]
        new = [e[2] for e in kept if isinstance(e[2], int)]
        if new:
            if isinstance(deltas, torch.Tensor):
                moved = deltas[torch.as_tensor(new, device=deltas.device)].cpu().numpy()
            else:
                moved = np.asarray(deltas[new])
            by_row = dict(zip(new, moved))
            kept = [(score, i, by_row[e] if isinstance(e, int) else e) for score, i, e in kept]
        self.entries = kept

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        index = np.array([e[1] for e in self.entries], np.int64)
        maps = np.stack([e[2] for e in self.entries]) if self.entries else np.zeros((0, 0, 0), np.float32)
        return index, maps


@dataclass
class UnitResult:
    """What one work unit computed.

    Attributes
    ----------
    values
        Stored values by name: ``float32 [n]`` per score (``[n, 4]`` for per-base kinds, the
        reference base NaN; attribution: its arrays).
    top_index, top_delta
        With ``keep_maps = K``: the K strongest perturbations by the first score (index within the
        unit; ``row·4 + base`` for per-base kinds) and their Δ maps ``[K, bins, bins]``; else ``None``.
    """

    values: dict[str, np.ndarray]
    top_index: np.ndarray | None = None
    top_delta: np.ndarray | None = None


def run_unit(
    adapter: ModelAdapter, genome: Genome, tracks: TrackSet | None, spec: Any, chrom: str, payload: UnitPayload,
    batch_size: int = 4,
) -> UnitResult:
    """Scores of one work unit of a perturbation analysis (every kind but the gradient kinds).

    Parameters
    ----------
    adapter
        The model.
    genome, tracks
        Where the inputs are read.
    spec
        The analysis (a perturbation spec of :mod:`screening.spec`); with ``keep_maps = K``
        the result keeps the K strongest Δ maps.
    chrom, payload
        The unit's chromosome and :meth:`screening.plan.ScreenPlan.payload`.
    batch_size
        Inputs per forward pass (references and perturbed windows together).
    """
    if kind_of(spec).placement == "rearrangement":
        return _rearrangement_unit(adapter, genome, tracks, spec, payload, batch_size)
    placements = getattr(spec, "placements", ((0, False),))
    if placements != ((0, False),):
        return UnitResult(_run_placements(adapter, genome, tracks, spec, chrom, payload, batch_size, placements))
    return _run_once(adapter, genome, tracks, spec, chrom, payload, batch_size)


def _run_placements(
    adapter: ModelAdapter, genome: Genome, tracks: TrackSet | None, spec: Any, chrom: str, payload: UnitPayload,
    batch_size: int, placements: tuple[tuple[int, bool], ...],
) -> dict[str, np.ndarray]:
    """Each score averaged over the placements (``shifts`` × strands; NaN placements left out), and each placement's
    own scores when the spec keeps them. Every placement is one pass of the unit: its reference windows are predicted
    once and shared by its perturbations, as in a single placement."""
    per_placement = {}
    for shift, reverse in placements:
        shifted: UnitPayload = {**payload, "window_start": payload["window_start"] + shift}  # type: ignore[typeddict-item]
        per_placement[(shift, reverse)] = _run_once(adapter, genome, tracks, spec, chrom, shifted, batch_size,
                                                    reverse).values
    out = {name: _placement_mean([values[name] for values in per_placement.values()]) for name in spec.scores}
    for placement, names in getattr(spec, "placement_scores", {}).items():
        out.update({stored: per_placement[placement][name] for stored, name in zip(names, spec.scores)})
    return out


def _placement_mean(values: list[np.ndarray]) -> np.ndarray:
    """The mean over placements of one score, NaN placements left out (NaN only where every placement is)."""
    stacked = np.stack(values)
    finite = np.isfinite(stacked)
    total = np.where(finite, stacked, 0).sum(axis=0, dtype=np.float64)
    count = finite.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def _run_once(
    adapter: ModelAdapter, genome: Genome, tracks: TrackSet | None, spec: Any, chrom: str, payload: UnitPayload,
    batch_size: int, reverse: bool = False,
) -> UnitResult:
    """:func:`run_unit` in one placement: the payload's windows, on the forward strand or (``reverse``) the reverse."""
    n = len(payload["start"])
    keeper = _TopMaps(spec.keep_maps) if spec.keep_maps else None
    window = adapter.geometry.window_length
    per_base = kind_of(spec).per_base
    out = {name: np.full((n, 4) if per_base else n, np.nan, np.float32) for name in spec.scores}
    index = {int(s): i for i, s in enumerate(payload["start"].tolist())} if per_base else None
    done = 0
    items = perturbed_items(spec, genome, tracks, chrom, payload, window)
    for group, scores, deltas in score_items(adapter, spec, items, batch_size, keeper is not None, chrom, reverse):
        if index is not None:
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
    if keeper is None:
        return UnitResult(out)
    return UnitResult(out, *keeper.result())


def rearranged_span(genome: Genome, tracks: TrackSet | None, placed: PlacedRearrangement) -> Span:
    """The model input of a rearrangement: its pieces read in order, ``-`` pieces reverse complemented (their
    tracks reversed, as :func:`~screening.perturb.edits.invert` does), inserted bases encoded with tracks of 0
    (no signal measured there, as for the inserted bases of an indel)."""
    codes, values = [], []
    n_tracks = len(tracks.names) if tracks is not None and len(tracks.names) else 0
    for piece in placed.pieces:
        if piece.inserted:
            codes.append(encode(piece.sequence))
            values.append(np.zeros((n_tracks, len(piece.sequence)), np.float32) if n_tracks else None)
            continue
        span = load_span(genome, tracks, piece.chrom, piece.ref_lo, piece.ref_hi)
        piece_codes, piece_tracks = invert(span.codes, span.tracks) if piece.strand == "-" else (span.codes, span.tracks)
        codes.append(piece_codes)
        values.append(piece_tracks)
    if values[0] is None:
        return Span(np.concatenate(codes), None)
    return Span(np.concatenate(codes), np.concatenate([v.astype(np.float32, copy=False) for v in values], axis=1))


def run_rearrangements(
    adapter: ModelAdapter, genome: Genome, tracks: TrackSet | None, spec: Any, payload: UnitPayload, batch_size: int = 4,
) -> dict[str, np.ndarray]:
    """Scores of a unit of rearrangements, each against the reference map of every partner locus.

    Each rearranged window is predicted once per placement, each partner's reference window once per unit and
    placement; partner ``k``'s scores are stored as ``<score>_p<k>`` (NaN where a rearrangement has fewer partners).
    Aligned scores compare the bins of the partner's pieces only (:func:`screening.maps.align.pieces_index`).
    With ``shifts`` / ``strand_average``, each score is the mean over the placements, per partner (a NaN placement
    left out), and with ``keep_placements`` each placement's is stored too, as ``<score>_at<shift>[_rc]_p<k>``.

    Raises
    ------
    NonFiniteMapError
        Naming the rearrangement or the reference window whose map is not finite.
    """
    return _rearrangement_unit(adapter, genome, tracks, spec, payload, batch_size).values


def _rearrangement_unit(
    adapter: ModelAdapter, genome: Genome, tracks: TrackSet | None, spec: Any, payload: UnitPayload, batch_size: int,
) -> UnitResult:
    """:func:`run_rearrangements`, with the kept Δ maps of ``keep_maps`` (:func:`_rearranged_delta`)."""
    placed_list: list[PlacedRearrangement] = payload["rearrangements"]
    placements = getattr(spec, "placements", ((0, False),))
    keeper = _TopMaps(spec.keep_maps) if spec.keep_maps else None  # the spec allows it with one placement only
    per_placement = {
        (shift, reverse): _rearrangement_pass(adapter, genome, tracks, spec, [r.at(shift) for r in placed_list],
                                              shift, reverse, batch_size, keeper)
        for shift, reverse in placements
    }
    if len(placements) == 1:
        values = per_placement[placements[0]]
    else:
        values = {name: _placement_mean([v[name] for v in per_placement.values()]) for name in per_placement[placements[0]]}
        for placement, names in getattr(spec, "placement_scores", {}).items():
            for stored, name in zip(names, spec.scores):
                values.update({f"{stored}_p{k}": per_placement[placement][f"{name}_p{k}"] for k in range(spec.max_partners)})
    if keeper is None:
        return UnitResult(values)
    return UnitResult(values, *keeper.result())


def _rearrangement_pass(
    adapter: ModelAdapter, genome: Genome, tracks: TrackSet | None, spec: Any, placed_list: list[PlacedRearrangement],
    shift: int, reverse: bool, batch_size: int, keeper: "_TopMaps | None" = None,
) -> dict[str, np.ndarray]:
    """``<score>_p<k>`` of the rearrangements in one placement (their windows as given, moved ``shift`` bp from
    the junctions' midpoint, forward or ``reverse`` strand); offers each one's Δ map to ``keeper``, ranked by its
    first score's largest value over partners."""
    geometry, window = adapter.geometry, adapter.geometry.window_length
    out = {f"{name}_p{k}": np.full(len(placed_list), np.nan, np.float32)
           for name in spec.scores for k in range(spec.max_partners)}
    assembler = None
    if not reverse and adapter.position_encoding() is not None:
        assembler = _assembler(adapter, buffers=1)
    references: dict[tuple[str, int], torch.Tensor] = {}
    # the junctions' midpoint: the window's centre, less the shift (maps of the reverse strand are flipped back)
    position = centre_bin(window // 2 - shift, 0, geometry.bin_size, geometry.map_offset)
    step = max(1, batch_size // 2)
    for lo in range(0, len(placed_list), step):
        group = placed_list[lo : lo + step]
        keys = list(dict.fromkeys((p.chrom, p.window_start) for r in group for p in r.partners if
                                  (p.chrom, p.window_start) not in references))
        spans = [rearranged_span(genome, tracks, r) for r in group]
        spans += [load_span(genome, tracks, chrom, start, start + window) for chrom, start in keys]
        inputs = [EditedInput(s.codes, s.tracks, window, 0, np.zeros(0, np.uint8), None, window) for s in spans]
        if reverse:
            maps = _predict_reversed(adapter, inputs, batch_size)
        else:
            maps = _predict_inputs(adapter, assembler, inputs, batch_size)
        _check_rearranged(maps, group, keys, window)
        references.update({key: maps[len(group) + i].clone() for i, key in enumerate(keys)})
        pairs = [(i, k, partner) for i, r in enumerate(group) for k, partner in enumerate(r.partners)]
        index = np.stack([pieces_index(p.pieces, geometry.bin_size, geometry.n_bins, geometry.map_offset)
                          for _, _, p in pairs])
        reference = torch.stack([references[(p.chrom, p.window_start)] for _, _, p in pairs])
        perturbed = maps[[i for i, _, _ in pairs]]
        context = {"position": np.full(len(pairs), position), "window": spec.insulation_window}
        scores = score_tensors(reference, perturbed, spec.scores, index, context)
        for name, values in scores.items():
            for (i, k, _), value in zip(pairs, values.cpu().numpy().tolist()):
                out[f"{name}_p{k}"][lo + i] = value
        if keeper is not None:
            first = np.stack([out[f"{spec.scores[0]}_p{k}"][lo : lo + len(group)] for k in range(spec.max_partners)])
            strongest = np.where(np.isnan(first), -np.inf, first).max(axis=0)
            strongest[np.isneginf(strongest)] = np.nan  # no partner scored: never kept
            deltas = _rearranged_delta(maps[: len(group)], reference, index, [i for i, _, _ in pairs])
            keeper.offer(strongest, np.arange(lo, lo + len(group)), deltas)
    return out


def _rearranged_delta(perturbed: torch.Tensor, reference: torch.Tensor, index: np.ndarray, owner: list[int]) -> torch.Tensor:
    """Δ maps of rearrangements in their own (rearranged) bin frame, ``[G, n, n]``: where both bins of a pair belong
    to one partner's pieces, the rearranged map minus that partner's reference map at the aligned bins; NaN
    elsewhere (inserted bases, bins straddling a junction or a piece's end, pairs joining two partners).

    ``reference`` and ``index`` (reference bin → rearranged bin, −1 unaligned) hold one row per (rearrangement,
    partner) pair, ``owner`` each pair's rearrangement (row of ``perturbed``)."""
    delta = torch.full_like(perturbed, float("nan"))
    for row, (i, aligned) in enumerate(zip(owner, index)):
        ref_bins = np.flatnonzero(aligned >= 0)
        if not len(ref_bins):
            continue
        rows = torch.as_tensor(aligned[ref_bins], device=perturbed.device)
        ref = torch.as_tensor(ref_bins, device=perturbed.device)
        delta[i][rows[:, None], rows[None, :]] = (perturbed[i][rows[:, None], rows[None, :]]
                                                 - reference[row][ref[:, None], ref[None, :]])
    return delta


def _check_rearranged(maps: torch.Tensor, group: list[PlacedRearrangement], keys: list[tuple[str, int]], window: int) -> None:
    finite = torch.isfinite(maps.reshape(len(maps), -1)).all(dim=1).cpu().numpy()
    if finite.all():
        return
    k = int(np.flatnonzero(~finite)[0])
    what = (f"rearrangement {group[k].name!r} ({group[k].description})" if k < len(group)
            else f"the reference window {keys[k - len(group)][0]}:{keys[k - len(group)][1]:,}-"
                 f"{keys[k - len(group)][1] + window:,}")
    raise NonFiniteMapError(f"model output is not finite for {what}; the unit fails rather than store NaN scores")


def run_deletions(
    adapter: ModelAdapter,
    genome: Genome,
    tracks: TrackSet | None,
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
    payload: UnitPayload = {"start": starts, "end": starts + width, "window_start": np.asarray(window_starts, np.int64)}
    return run_unit(adapter, genome, tracks, spec, chrom, payload, batch_size).values


def predict_pair(
    adapter: ModelAdapter, genome: Genome, tracks: TrackSet | None, spec: Any, chrom: str, payload: UnitPayload,
    base: int | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Reference and perturbed maps of the first perturbation in ``payload`` (for plots and checks).

    A rearrangement's reference is its first partner's window. ``base`` picks the alternative base of a mutagenesis position (default: the first).

    Returns
    -------
    (reference_map, perturbed_map, window_start)
    """
    if kind_of(spec).placement == "rearrangement":  # the rearranged window against its first partner's
        placed, window = payload["rearrangements"][0], adapter.geometry.window_length
        first = placed.partners[0]
        reference = load_span(genome, tracks, first.chrom, first.window_start, first.window_start + window)
        maps = adapter.predict(*stack_spans([reference, rearranged_span(genome, tracks, placed)]))
        return maps[0], maps[1], first.window_start
    items = perturbed_items(spec, genome, tracks, chrom, payload, adapter.geometry.window_length)
    perturbed, reference = next((p, r) for p, r in items if base is None or p.base == base)
    maps = adapter.predict(*stack_spans([reference, perturbed.span]))
    return maps[0], maps[1], perturbed.window_start


def predict_deletion(
    adapter: ModelAdapter, genome: Genome, tracks: TrackSet | None, chrom: str, start: int, width: int,
    padding: str = "zero",
) -> tuple[np.ndarray, np.ndarray, int]:
    """Reference and deleted maps for one deletion centred in its window (C.Origami)."""
    from screening.spec import DeletionSpec

    window_start = centered_window_start(start, width, adapter.geometry.window_length)
    payload: UnitPayload = {"start": np.array([start]), "end": np.array([start + width]), "window_start": np.array([window_start])}
    return predict_pair(adapter, genome, tracks, DeletionSpec(width=width, step=width, padding=padding), chrom, payload)
