"""The plan: perturbation coordinates per chromosome, cut into work units aligned to store chunks.

A work unit is exactly one chunk ``k`` of one ``(chrom, analysis)`` group: one
worker owns it at a time and writes only that chunk, so two writers never touch
the same chunk.

Window placement (0-based, half-open throughout):

* tiled kinds, insertions and variants: one model window centred on each
  perturbation, as C.Origami's deletion screen does;
* tiled kinds and insertions with ``window: shared``: consecutive perturbations
  of one unit share a window that holds them all in its central half (see
  :func:`shared_windows`), so the unit's reference is predicted once;
* saturation mutagenesis: the positions of one unit share a window centred on
  them, so the unit's reference is predicted once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, NotRequired, TypedDict

import numpy as np

from screening.models.base import WindowGeometry
from screening.core.regions import Region, RegionError, merge_sorted, parse_region, validate_region
from screening.perturb.kinds import kind_of
from screening.spec import ScreenSpec
from screening.store.layout import GroupLayout
from screening.maps.targets import windows_missing

__all__ = [
    "JointVariants", "WorkUnit", "UnitPayload", "ScreenPlan", "check_map_blocks", "deletion_starts", "partner_scores",
    "plan_screen", "shared_windows",
]

_MAX_LISTED = 1000  # skipped items listed by name in the store's metadata


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


class UnitPayload(TypedDict):
    """What a worker needs to compute one unit (:meth:`ScreenPlan.payload`): per perturbation, its
    interval ``[start, end)`` and its model window's start (``int64 [n]`` each), for a VCF
    analysis the :class:`~screening.io.vcf.Variant` alleles (or :class:`JointVariants` of a haplotype), for a
    rearrangement analysis the :class:`~screening.perturb.rearrange.PlacedRearrangement` s."""

    start: np.ndarray
    end: np.ndarray
    window_start: np.ndarray
    variants: NotRequired[list]
    rearrangements: NotRequired[list]


@dataclass
class ScreenPlan:
    """Every group's layout, the work units that fill it, and what was skipped."""

    layouts: list[GroupLayout]
    units: list[WorkUnit]
    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)
    variants: dict[tuple[str, str], list] = field(default_factory=dict)
    rearrangements: dict[tuple[str, str], list] = field(default_factory=dict)

    @property
    def n_perturbations(self) -> int:
        return sum(layout.n for layout in self.layouts)

    def layout(self, chrom: str, analysis: str) -> GroupLayout:
        for layout in self.layouts:
            if layout.chrom == chrom and layout.analysis == analysis:
                return layout
        raise KeyError(f"no group {chrom}/{analysis} in the plan")

    def windows(self, window: int) -> dict[str, list[tuple[int, int]]]:
        """Merged model windows ``[start, start + window)`` of every perturbation, per chromosome.

        What the workers will read (but a net deletion's few extra bp), for probing the inputs
        before the store is created.
        """
        out: dict[str, list[tuple[int, int]]] = {}
        partners: dict[str, list[int]] = {}  # a rearrangement's reference windows, on every partner's chromosome
        for placed in (r for group in self.rearrangements.values() for r in group):
            for partner in (p for at in placed.placements for p in at.partners):  # every shift's
                partners.setdefault(partner.chrom, []).append(partner.window_start)
        for chrom in dict.fromkeys([*(layout.chrom for layout in self.layouts), *partners]):
            starts = np.unique(np.concatenate([
                *(lay.window_start + shift for lay in self.layouts if lay.chrom == chrom
                  for shift in ((lay.params.get("shifts") or [0]) if lay.kind != "rearrangement" else [0])),
                np.array(partners.get(chrom, []), np.int64),
            ]))
            if not len(starts):
                continue
            # windows of one length: a new interval begins where a window starts past the previous one's end
            breaks = np.flatnonzero(starts[1:] > starts[:-1] + window) + 1
            out[chrom] = [(int(run[0]), int(run[-1]) + window) for run in np.split(starts, breaks)]
        return out

    def payload(self, unit: WorkUnit) -> UnitPayload:
        """What a worker needs to compute ``unit``: its coordinates (and variants)."""
        layout = self.layout(unit.chrom, unit.analysis)
        sl = slice(unit.lo, unit.hi)
        payload: UnitPayload = {"start": layout.start[sl], "end": layout.end[sl], "window_start": layout.window_start[sl]}
        if (unit.chrom, unit.analysis) in self.variants:
            payload["variants"] = self.variants[(unit.chrom, unit.analysis)][sl]
        if (unit.chrom, unit.analysis) in self.rearrangements:
            payload["rearrangements"] = self.rearrangements[(unit.chrom, unit.analysis)][sl]
        return payload


def deletion_starts(regions: Iterable[Region], step: int) -> np.ndarray:
    """Starts ``start + k·step`` for ``k < (end − start) // step`` over each region.

    The region end is exclusive, as in C.Origami's screen. Overlapping regions
    are merged first so nothing is planned twice.
    """
    starts = [np.arange(r.start, r.start + ((r.end - r.start) // step) * step, step, dtype=np.int64)
              for r in merge_sorted(regions)]
    return np.unique(np.concatenate(starts)) if starts else np.zeros(0, np.int64)


def _centred(start: np.ndarray, length: np.ndarray, window: int) -> np.ndarray:
    """Start of a window centred on ``[start, start + length)`` (C.Origami's rounding)."""
    return (2 * start + length - window) // 2


def _fits(window_start: np.ndarray, extra: np.ndarray, geometry: WindowGeometry, chrom_length: int) -> np.ndarray:
    """Windows whose loaded span (window + the bp a net deletion pulls in) stays on the chromosome."""
    return (window_start >= 0) & (window_start + geometry.window_length + extra <= chrom_length)


def _edge_error(kind: str, chrom: str, start: int, end: int, window_start: int, span_end: int, chrom_length: int, hint: str) -> RegionError:
    return RegionError(
        f"{kind} {chrom}:{start:,}-{end:,} needs the model window {chrom}:{window_start:,}-{span_end:,}, "
        f"which leaves {chrom} (length {chrom_length:,}){hint} (or set invalid_policy: skip)"
    )


def _deletion_range(width: int, window: int, chrom_length: int) -> str:
    lowest = -(-(window - width) // 2)
    # the largest w with centred start + window + width <= chrom_length
    highest = (2 * (chrom_length - window - width) + 1 - width + window) // 2
    return f"; {width:,} bp deletions can start from {lowest:,} to {highest:,}"


@dataclass
class _Candidates:
    """Perturbations of one group before the edge check."""

    start: np.ndarray
    end: np.ndarray
    window_start: np.ndarray
    extra: np.ndarray  # bp of downstream sequence a net deletion pulls into the window
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    variants: list | None = None
    rearrangements: list | None = None


def _tiled(spec, regions: list[Region], window: int) -> _Candidates:
    starts = deletion_starts(regions, spec.step)
    width = np.full(len(starts), spec.width, np.int64)
    extra = np.full(len(starts), kind_of(spec).downstream(spec, None), np.int64)
    return _Candidates(starts, starts + width, _centred(starts, width, window), extra)


def _insertion(spec, regions: list[Region], window: int) -> _Candidates:
    starts = deletion_starts(regions, spec.step)
    zero = np.zeros(len(starts), np.int64)
    # the stored interval is the 1-bp insertion point: the sequence goes in before base `start`
    return _Candidates(starts, starts + 1, _centred(starts, zero, window), zero)


def shared_windows(
    start: np.ndarray, end: np.ndarray, fallback: np.ndarray, extra: np.ndarray, chunk_size: int, window: int, chrom_length: int
) -> np.ndarray:
    """Window starts that consecutive perturbations of each chunk share (``window: shared``).

    Each chunk of ``chunk_size`` perturbations (one work unit) is cut greedily, in order,
    into groups whose span ``[start of the first, largest end)`` is at most half a window;
    a group's window is centred on its span and moved inside the chromosome (its loaded
    span, window + ``extra``, included). A perturbation keeps its ``fallback`` window (centred
    on it) unless it lies in the central half of the group's window, ``window // 4`` bp or
    more from either edge; so a unit of ``n`` perturbations spanning at most half a window
    needs one reference, away from chromosome ends.

    Parameters
    ----------
    start, end
        Perturbed intervals, sorted by start (an insertion: ``end = start + 1``).
    fallback
        Each perturbation's own centred window start.
    extra
        bp beyond the window that each perturbation's input loads (a deletion's width).
    chunk_size, window, chrom_length
        Perturbations per unit, the model window, the chromosome length.
    """
    margin = window // 4
    placed = np.asarray(fallback, np.int64).copy()
    starts, ends = np.asarray(start).tolist(), np.asarray(end).tolist()
    for lo in range(0, len(starts), chunk_size):
        hi = min(lo + chunk_size, len(starts))
        first = lo
        while first < hi:
            last, span_end = first + 1, ends[first]
            while last < hi and max(span_end, ends[last]) - starts[first] <= window - 2 * margin:
                span_end, last = max(span_end, ends[last]), last + 1
            group = slice(first, last)
            shared = (2 * starts[first] + span_end - starts[first] - window) // 2  # centred, as _centred
            shared = max(0, min(shared, chrom_length - window - int(extra[group].max())))
            inside = (start[group] >= shared + margin) & (end[group] <= shared + window - margin)
            placed[group] = np.where(inside, shared, placed[group])
            first = last
    return placed


def _place_shared(chrom, perturbation, candidates: _Candidates, geometry, chrom_length, chunk_size, policy, skipped) -> _Candidates:
    """Shared windows, then the edge check; repeated after skipping, as a skip changes the chunks."""
    centred = candidates.window_start
    while True:
        candidates.window_start = shared_windows(candidates.start, candidates.end, centred, candidates.extra, chunk_size,
                                                 geometry.window_length, chrom_length)
        keep = _fits_shifted(candidates.window_start, candidates.extra, geometry, chrom_length, perturbation)
        candidates = _check_edges(chrom, perturbation, candidates, geometry, chrom_length, policy, skipped)
        if keep.all():
            return candidates
        centred = centred[keep]


def _mutagenesis(regions: list[Region], window: int, chunk_size: int, genome) -> _Candidates:
    positions = np.concatenate([np.arange(r.start, r.end, dtype=np.int64) for r in merge_sorted(regions)])
    window_start = np.empty_like(positions)
    for lo in range(0, len(positions), chunk_size):
        chunk = positions[lo : lo + chunk_size]
        shared = int(_centred(np.int64(chunk[0]), np.int64(chunk[-1] + 1 - chunk[0]), window))
        # a chunk that spans far-apart regions falls back to one window per position
        inside = (chunk - shared >= window // 4) & (chunk - shared < window - window // 4)
        window_start[lo : lo + chunk_size] = np.where(inside, shared, _centred(chunk, np.ones_like(chunk), window))
    labels = {}
    if genome is not None and len(positions):
        chrom = regions[0].chrom
        lo, hi = int(positions[0]), int(positions[-1]) + 1
        codes = genome.fetch(chrom, lo, hi)[positions - lo]
        labels["ref_base"] = np.frombuffer(b"ACGTN", np.uint8)[codes].view("S1").astype(str)
    return _Candidates(positions, positions + 1, window_start, np.zeros_like(positions), labels)


def _contiguous_windows(regions: list[Region], window: int, step: int, genome) -> _Candidates:
    """Every base of the regions; each ``step``-sized piece of a region gets a window centred on it.

    The store's chunks are the pieces (chunk_size = step), so one unit computes one window
    per piece and keeps exactly the positions that window owns: no seams, nothing twice.
    """
    if step > window:
        raise RegionError(f"window_step {step:,} is longer than the model window {window:,}")
    candidates = _mutagenesis(regions, window, step, genome)
    positions = candidates.start
    for lo in range(0, len(positions), step):
        chunk = positions[lo : lo + step]
        # a chunk spanning two regions: one window per contiguous run of positions
        runs = np.split(np.arange(len(chunk)), np.flatnonzero(np.diff(chunk) > 1) + 1)
        for run in runs:
            first, last = chunk[run[0]], chunk[run[-1]]
            candidates.window_start[lo + run] = _centred(np.int64(first), np.int64(last + 1 - first), window)
    return candidates


def _place(perturbation, regions: list[Region], window: int, chunk_size: int, genome) -> _Candidates | None:
    """Candidates of an analysis laid out over its regions on one chromosome, by its kind's placement
    (every placement but ``vcf``, whose records are read once per screen)."""
    placement = kind_of(perturbation).placement
    if placement == "tiled":
        return _tiled(perturbation, regions, window)
    if placement == "insertion":
        return _insertion(perturbation, regions, window)
    if not regions:
        return None
    if placement == "positions":
        return _mutagenesis(regions, window, chunk_size, genome)
    return _contiguous_windows(regions, window, perturbation.window_step or window // 2, genome)


def _attribution_layout(chrom: str, chrom_length: int, spec, candidates: _Candidates, window: int, screen: ScreenSpec) -> GroupLayout:
    tracks = [f"track_{t.name}" for t in screen.tracks]
    scores = ["attribution", "attribution_corrected", *tracks, "target"]
    if spec.reports_completeness:
        scores.append("completeness_error")
    return GroupLayout(
        chrom=chrom,
        chrom_length=chrom_length,
        analysis=spec.label,
        kind=spec.kind,
        params=spec.model_dump(mode="json"),
        start=candidates.start,
        end=candidates.end,
        window_start=candidates.window_start,
        scores=scores,
        chunk_size=spec.window_step or window // 2,
        extra_dims={"base": 4},
        labels=candidates.labels,
        score_dims={name: (["base"] if name.startswith("attribution") else []) for name in scores},
    )


def _variant_candidates(variants: list, window: int) -> _Candidates:
    start = np.array([v.start for v in variants], np.int64)
    end = np.array([max(v.end, v.start + 1) for v in variants], np.int64)
    ref_len = np.array([v.ref_length for v in variants], np.int64)
    alt_len = np.array([v.alt_length for v in variants], np.int64)
    labels = {
        "id": np.array([v.id for v in variants], dtype=str),
        "ref": np.array([v.vcf_ref for v in variants], dtype=str),
        "alt": np.array([v.vcf_alt for v in variants], dtype=str),
        "variant_kind": np.array([v.kind for v in variants], dtype=str),
    }
    return _Candidates(start, end, _centred(start, ref_len, window), np.maximum(ref_len - alt_len, 0), labels, list(variants))


@dataclass(frozen=True)
class JointVariants:
    """The alleles of one haplotype of a sample that lie in the model window of one of them (the focus), applied
    together: a single edit from the first allele's start to the last one's end (what the engine splices in),
    scored against the reference. Reads like the focus (``id``, ``line``, ``vcf_alt``, ...) for labels and messages.
    """

    focus: Any
    members: tuple
    haplotype: int

    def __getattr__(self, name: str) -> Any:  # the focus's fields (id, line, vcf_pos, vcf_ref, vcf_alt, kind, ...)
        if name.startswith("__") or name in ("focus", "members", "haplotype"):  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.focus, name)

    @property
    def edit_start(self) -> int:
        """Where the joint edit starts (the first allele's start)."""
        return int(self.members[0].start)

    @property
    def ref_length(self) -> int:
        """Reference bp the joint edit replaces (first allele's start to last allele's end)."""
        return int(max(m.end for m in self.members) - self.edit_start)

    @property
    def alt_length(self) -> int:
        """bp in their place."""
        return self.ref_length + sum(int(m.alt_length) - int(m.ref_length) for m in self.members)


def _haplotype_overlaps(spec: ScreenSpec, perturbation, variants: list, haplotype: int, skipped) -> list:
    """A haplotype's alleles in order, refusing (or, with ``invalid_policy: skip``, skipping the later of) two that
    overlap: one haplotype cannot carry both."""
    kept: list = []
    problems = []
    for variant in sorted(variants, key=lambda v: (v.start, v.end, v.line)):
        last = kept[-1] if kept else None
        if last is not None and (variant.start < last.end or variant.start == last.start == last.end == variant.end):
            # the one later in the file goes; the one kept ends no later than the next can start (sorted by start)
            later, earlier = (variant, last) if variant.line > last.line else (last, variant)
            problems.append(
                f"{perturbation.vcf}:{later.line} {later.id} {later.chrom}:{later.vcf_pos} overlaps "
                f"{earlier.id} (line {earlier.line}) on haplotype {haplotype} of sample {perturbation.sample}"
            )
            kept[-1] = earlier
            continue
        kept.append(variant)
    if problems and spec.invalid_policy == "fail":
        from screening.io.vcf import VcfError

        raise VcfError(
            f"{len(problems)} variant(s) overlap another of the same haplotype (one haplotype cannot carry both; "
            "set invalid_policy: skip to skip the later one and list it):\n  " + "\n  ".join(problems[:20])
        )
    if problems:
        entry = skipped.setdefault(perturbation.label, {"count": 0, "items": []})
        entry["count"] += len(problems)
        entry["items"] += problems[: max(0, _MAX_LISTED - len(entry["items"]))]
    return kept


def _haplotype_candidates(spec: ScreenSpec, perturbation, on_chrom: list, chosen: list, window: int, skipped):
    """One perturbation per (allele, haplotype carrying it) of ``chosen``: the allele with every other allele of
    that haplotype inside its window (``on_chrom``: all of the chromosome's), applied together."""
    parts = []
    chosen_ids = {id(v) for v in chosen}
    for haplotype in perturbation.haplotypes:
        carried = _haplotype_overlaps(spec, perturbation, [v for v in on_chrom if haplotype in v.haplotypes], haplotype,
                                      skipped)
        focal = [v for v in carried if id(v) in chosen_ids]
        if not focal:
            continue
        candidates = _variant_candidates(focal, window)
        ends = np.array([max(v.end, v.start) for v in carried], np.int64)
        starts = np.array([v.start for v in carried], np.int64)
        joints = []
        for variant, ws in zip(focal, candidates.window_start.tolist()):
            inside = np.flatnonzero((starts >= ws) & (ends <= ws + window))
            members = tuple(carried[i] for i in inside) if any(carried[i] is variant for i in inside) else (variant,)
            joints.append(JointVariants(variant, members, haplotype))
        candidates.variants = joints
        candidates.extra = np.array([max(0, j.ref_length - j.alt_length) for j in joints], np.int64)
        candidates.labels["haplotype"] = np.full(len(joints), haplotype, np.int64)
        candidates.labels["n_joint"] = np.array([len(j.members) for j in joints], np.int64)
        parts.append(candidates)
    if not parts:
        return None
    return _merge(parts)


def _merge(parts: list[_Candidates]) -> _Candidates:
    """Candidates of several lists in one, sorted by start (stable: earlier lists first at one start)."""
    order = np.argsort(np.concatenate([c.start for c in parts]), kind="stable")

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(c, name) for c in parts])[order]

    labels = {k: np.concatenate([c.labels[k] for c in parts])[order] for k in parts[0].labels}
    variants = [v for c in parts for v in (c.variants or [])]
    return _Candidates(cat("start"), cat("end"), cat("window_start"), cat("extra"), labels,
                       [variants[i] for i in order.tolist()])


def partner_scores(perturbation) -> list[str]:
    """Stored score names of a rearrangement analysis: ``<score>_p<k>`` for each stored score (with
    ``keep_placements``, each placement's too) and partner ``k``."""
    return [f"{name}_p{k}" for name in perturbation.stored_scores for k in range(perturbation.max_partners)]


def _rearrangements(spec: ScreenSpec, perturbation, window: int, chrom_sizes, genome, skipped) -> list:
    """The analysis's rearrangements: its segments, or its VCF's breakend pairs (``window`` bp each side)."""
    from screening.perturb.rearrange import Inserted, Rearrangement, Segment, junction_segments

    index = next(i for i, p in enumerate(spec.perturbations) if p is perturbation)
    if perturbation.rearrangements is not None:
        return [
            Rearrangement(entry.name, tuple(Inserted(s.sequence) if s.inserted
                                            else Segment(s.chrom, s.start, s.end, s.strand) for s in entry.segments),
                          f"perturbations.{index}.rearrangements.{j}")
            for j, entry in enumerate(perturbation.rearrangements)
        ]
    from screening.io.vcf import read_breakends

    result = read_breakends(perturbation.vcf, genome=genome, policy=spec.invalid_policy)
    if result.skipped:
        entry = skipped.setdefault(perturbation.label, {"count": 0, "items": []})
        entry["count"] += len(result.skipped)
        entry["items"] += [f"line {s.line} {s.id}: {s.reason}" for s in result.skipped][:_MAX_LISTED]
    out: list = []
    for junction in result.junctions:
        source = f"{perturbation.vcf}:{junction.line}, mate {junction.mate_id} line {junction.mate_line}"
        try:
            out.append(Rearrangement(junction.id, junction_segments(junction.left, junction.right, window, chrom_sizes,
                                                                    junction.inserted), source))
        except ValueError as err:  # a junction at a chromosome's very end: nothing on one side
            out.append(f"breakend {junction.id} ({source}): {err}")
    return out


def _rearrangement_candidates(spec: ScreenSpec, perturbation, window: int, chrom_sizes, genome, skipped) -> dict:
    """Placed rearrangements of an analysis as candidates per chromosome (that of each one's first partner).

    Raises
    ------
    RegionError, VcfError
        Naming every rearrangement (spec entry, or VCF record and its mate) that cannot fill a model window or
        has more partners than ``max_partners``, with ``invalid_policy: fail``.
    """
    from screening.perturb.rearrange import RearrangementError, place

    placed, problems = [], []
    for rearrangement in _rearrangements(spec, perturbation, window, chrom_sizes, genome, skipped):
        if isinstance(rearrangement, str):
            problems.append((None, rearrangement))
            continue
        try:
            done = place(rearrangement, window, chrom_sizes, sorted({s for s, _ in perturbation.placements}))
        except RearrangementError as err:
            problems.append((rearrangement, str(err)))
            continue
        if len(done.partners) > perturbation.max_partners:
            loci = ", ".join(p.locus(window) for p in done.partners)
            problems.append((rearrangement, f"{rearrangement.described}: {len(done.partners)} partner loci ({loci}), "
                                            f"more than max_partners: {perturbation.max_partners}; raise max_partners"))
            continue
        placed.append(done)
    if problems and spec.invalid_policy == "fail":
        from screening.io.vcf import VcfError

        error = VcfError if perturbation.vcf is not None else RegionError
        listed = "\n  ".join(text for _, text in problems[:20])
        raise error(f"{len(problems)} rearrangement(s) cannot be placed in a model window (set invalid_policy: skip "
                    f"to skip and list them):\n  {listed}")
    if problems:
        entry = skipped.setdefault(perturbation.label, {"count": 0, "items": []})
        entry["count"] += len(problems)
        entry["items"] += [text for _, text in problems][: max(0, _MAX_LISTED - len(entry["items"]))]
    by_chrom: dict[str, list] = {}
    for item in placed:
        by_chrom.setdefault(item.partners[0].chrom, []).append(item)
    return {chrom: _placed_candidates(items, perturbation.max_partners, window) for chrom, items in by_chrom.items()}


def _placed_candidates(items: list, max_partners: int, window: int) -> _Candidates:
    """Stored interval: the first partner's sequence in the window; its reference window is the row's window."""
    def extent(item) -> tuple[int, int]:
        first = item.partners[0]
        return (first.window_start + min(p[2] for p in first.pieces), first.window_start + max(p[3] for p in first.pieces))

    items = sorted(items, key=lambda item: (extent(item), item.name))
    bounds = np.array([extent(item) for item in items], np.int64).reshape(-1, 2)
    labels = {
        "name": np.array([item.name for item in items], dtype=str),
        "segments": np.array([item.description for item in items], dtype=str),
        **{f"partner_p{k}": np.array([item.partners[k].locus(window) if k < len(item.partners) else "" for item in items],
                                     dtype=str) for k in range(max_partners)},
    }
    window_start = np.array([item.partners[0].window_start for item in items], np.int64)
    return _Candidates(bounds[:, 0], bounds[:, 1], window_start, np.zeros(len(items), np.int64), labels, None, items)


def _select(candidates: _Candidates, keep: np.ndarray) -> _Candidates:
    return _Candidates(
        candidates.start[keep], candidates.end[keep], candidates.window_start[keep], candidates.extra[keep],
        {k: v[keep] for k, v in candidates.labels.items()},
        None if candidates.variants is None else [v for v, k in zip(candidates.variants, keep) if k],
        None if candidates.rearrangements is None else [r for r, k in zip(candidates.rearrangements, keep) if k],
    )


def _read_variants(spec, genome, policy: str, skipped: dict[str, dict[str, Any]]) -> dict[str, list]:
    from screening.io.vcf import read_vcf

    result = read_vcf(spec.vcf, genome=genome, policy=policy, sample=spec.sample)
    if result.skipped:
        skipped.setdefault(spec.label, {"count": 0, "items": []})
        entry = skipped[spec.label]
        entry["count"] += len(result.skipped)
        entry["items"] += [f"line {s.line} {s.id}: {s.reason}" for s in result.skipped][:_MAX_LISTED]
    by_chrom: dict[str, list] = {}
    for variant in sorted(result.variants, key=lambda v: (v.start, v.end, v.id)):
        by_chrom.setdefault(variant.chrom, []).append(variant)
    return by_chrom


def _in_regions(variants: list, regions: list[Region] | None) -> list:
    if regions is None:
        return variants
    return [v for v in variants if any(r.overlaps(v.start, max(v.end, v.start + 1)) for r in regions)]


def plan_screen(
    spec: ScreenSpec,
    regions: list[Region],
    chrom_sizes: dict[str, int],
    geometry: WindowGeometry,
    genome=None,
) -> ScreenPlan:
    """Lay out every perturbation of the spec over validated regions and cut work units.

    Parameters
    ----------
    spec
        The screen spec.
    regions
        Regions validated against ``chrom_sizes`` (variants are filtered by them when given).
    chrom_sizes
        Chromosome lengths, in genome order.
    geometry
        The model's window geometry.
    genome
        The genome, for reference bases (mutagenesis) and VCF REF checks.

    Raises
    ------
    RegionError
        If a perturbation's model window leaves its chromosome (``invalid_policy: fail``).
    """
    window, policy = geometry.window_length, spec.invalid_policy
    skipped: dict[str, dict[str, Any]] = {}
    variant_sets = {
        p.label: _read_variants(p, genome, policy, skipped) for p in spec.perturbations if kind_of(p).placement == "vcf"
    }
    own = {
        p.label: [validate_region(r, chrom_sizes, source=f"perturbations[{i}].regions") for r in p.regions]
        for i, p in enumerate(spec.perturbations)
        if p.regions
    }
    placed_sets = {
        p.label: _rearrangement_candidates(spec, p, window, chrom_sizes, genome, skipped)
        for p in spec.perturbations if kind_of(p).placement == "rearrangement"
    }
    chroms = {r.chrom for r in regions} | {c for sets in (*variant_sets.values(), *placed_sets.values()) for c in sets}
    chroms |= {r.chrom for rs in own.values() for r in rs}
    layouts: list[GroupLayout] = []
    variants: dict[tuple[str, str], list] = {}
    placed: dict[tuple[str, str], list] = {}
    for chrom in [c for c in chrom_sizes if c in chroms]:
        for perturbation in spec.perturbations:
            on_chrom = [r for r in own.get(perturbation.label, regions) if r.chrom == chrom]
            if kind_of(perturbation).placement == "rearrangement":
                candidates = placed_sets[perturbation.label].get(chrom)
            elif kind_of(perturbation).placement == "vcf":
                restricted = perturbation.label in own or bool(regions)
                on_this = variant_sets[perturbation.label].get(chrom, [])
                chosen = _in_regions(on_this, on_chrom if restricted else None)
                if getattr(perturbation, "sample", None) is not None:
                    candidates = _haplotype_candidates(spec, perturbation, on_this, chosen, window, skipped)
                else:
                    candidates = _variant_candidates(chosen, window) if chosen else None
            else:
                candidates = _place(perturbation, on_chrom, window, spec.execution.chunk_size, genome)
            if candidates is None or not len(candidates.start):
                continue
            candidates = _check_fit(spec, perturbation, chrom, candidates, window, skipped)
            if not len(candidates.start):
                continue
            if getattr(perturbation, "window", "centred") == "shared":
                candidates = _place_shared(chrom, perturbation, candidates, geometry, chrom_sizes[chrom],
                                           spec.execution.chunk_size, policy, skipped)
            else:
                candidates = _check_edges(chrom, perturbation, candidates, geometry, chrom_sizes[chrom], policy, skipped)
            if not len(candidates.start):
                continue
            if kind_of(perturbation).gradients:
                layouts.append(_attribution_layout(chrom, chrom_sizes[chrom], perturbation, candidates, window, spec))
            else:
                layouts.append(
                    _layout(chrom, chrom_sizes[chrom], perturbation, candidates, spec.execution.chunk_size, geometry.n_bins)
                )
            if candidates.variants is not None:
                variants[(chrom, perturbation.label)] = candidates.variants
            if candidates.rearrangements is not None:
                placed[(chrom, perturbation.label)] = candidates.rearrangements
    if not layouts:
        raise RegionError("the screen has no perturbations (regions shorter than one step, or nothing left after skipping)")
    _check_strand_average(spec, geometry)
    check_map_blocks(spec, layouts, chrom_sizes, geometry)
    units = [
        WorkUnit(layout.chrom, layout.analysis, k, sl.start, sl.stop)
        for layout in layouts
        for k, sl in ((k, layout.chunk_slice(k)) for k in range(layout.n_chunks))
    ]
    return ScreenPlan(layouts, units, skipped, variants, placed)


def _check_strand_average(spec: ScreenSpec, geometry: WindowGeometry) -> None:
    """``strand_average`` flips the reverse strand's map back: the map must cover the window symmetrically."""
    covered = 2 * geometry.map_offset + geometry.n_bins * geometry.bin_size
    for i, perturbation in enumerate(spec.perturbations):
        if getattr(perturbation, "strand_average", False) and covered != geometry.window_length:
            raise RegionError(
                f"perturbations.{i}.strand_average: the model's map (bins from {geometry.map_offset:,} bp, "
                f"{geometry.n_bins} x {geometry.bin_size:,} bp) does not lie in the middle of its {geometry.window_length:,} "
                "bp window, so a reverse-strand map cannot be flipped onto the forward one; drop strand_average"
            )


def _map_blocks(perturbation) -> list[tuple[str, str, bool]]:
    """``(field, region, clip)`` of every map block an analysis reads in its windows.

    An attribution ``block``/``difference`` target must lie inside each window's map (clip
    False); an ROI, used only by the ``roi_mean_delta`` scores, is clipped to the map but
    must overlap it (clip True).
    """
    if kind_of(perturbation).gradients:
        names = {"block": ("rows", "cols"), "difference": ("rows", "cols", "rows_b", "cols_b")}
        target = perturbation.target
        return [(f"target.{name}", getattr(target, name), False) for name in names.get(target.kind, ())]
    if perturbation.roi is not None and any(name.startswith("roi_mean_delta") for name in perturbation.scores):
        return [(f"roi.{name}", getattr(perturbation.roi, name), True) for name in ("rows", "cols")]
    return []


def check_map_blocks(
    spec: ScreenSpec, layouts: list[GroupLayout], chrom_sizes: dict[str, int], geometry: WindowGeometry
) -> None:
    """Refuse ROIs and attribution targets that some window of the plan cannot read.

    A block is read in the map of each perturbation's (or attribution tile's) own model
    window, so it must lie on that window's chromosome and inside (a target) or across
    (an ROI) its map: checked here, before any store exists, instead of failing or
    silently reading another chromosome's bins in a worker.

    Raises
    ------
    RegionError
        Naming the field (``perturbations.<i>.roi.rows``, ``perturbations.<i>.target.cols``, ...),
        the block, and the chromosome or window that cannot hold it.
    """
    index = {p.label: i for i, p in enumerate(spec.perturbations)}
    for layout in layouts:
        i = index[layout.analysis]
        for name, text, clip in _map_blocks(spec.perturbations[i]):
            field = f"perturbations.{i}.{name}"
            block = validate_region(text, chrom_sizes, source=field)
            if parse_region(text).end is None:
                raise RegionError(f"{field}: {text!r} is a whole chromosome; a map block needs an interval chrom:start-end")
            if block.chrom != layout.chrom:
                raise RegionError(
                    f"{field}: {block} is on {block.chrom}, but analysis {layout.analysis!r} has perturbations on "
                    f"{layout.chrom} (e.g. {_describe(layout, 0)}); a map block is read in each perturbation's own "
                    f"window, so it must lie on that window's chromosome: give this analysis its own 'regions' on "
                    f"{block.chrom} only"
                )
            missing = np.flatnonzero(windows_missing(block.start, block.end, layout.window_start, geometry, clip))
            if len(missing):
                k = int(missing[0])
                ws, origin = int(layout.window_start[k]), int(layout.window_start[k]) + geometry.map_offset
                need = "overlap" if clip else "lie inside"
                raise RegionError(
                    f"{field}: {block} does not {need} the map of the model window {layout.chrom}:{ws:,}-"
                    f"{ws + geometry.window_length:,} (map {layout.chrom}:{origin:,}-"
                    f"{origin + geometry.n_bins * geometry.bin_size:,}) of {_describe(layout, k)}; every window of "
                    f"the analysis must {'overlap' if clip else 'hold'} it: screen nearer to it or choose a block "
                    f"nearer the perturbations"
                )


def _describe_candidate(perturbation, candidates: _Candidates, k: int) -> str:
    return f"the {perturbation.kind} at {int(candidates.start[k]):,}-{int(candidates.end[k]):,}"


def _describe(layout: GroupLayout, k: int) -> str:
    """``<kind> chrom:start-end`` of perturbation ``k`` of a group, for messages."""
    return f"{layout.kind} {layout.chrom}:{int(layout.start[k]):,}-{int(layout.end[k]):,}"


def _check_fit(spec: ScreenSpec, perturbation, chrom: str, candidates: _Candidates, window: int, skipped) -> _Candidates:
    """Refuse (or skip) perturbations whose edit cannot be made inside their model window.

    The worker applies the edit to the window's loaded span (:func:`screening.perturb.edits.apply_edit`):
    it must start inside the window and end inside the span (window + the bp a net deletion pulls
    in). A perturbation longer than the window (a 500 kb ``<DUP>`` in a 2 Mb model is fine, in a 1 Mb
    one is not) fails that rule, so it is refused here, before any store exists.

    Raises
    ------
    RegionError
        For a tiled kind whose ``width`` exceeds the model window (every perturbation would fail).
    VcfError
        Naming each variant (file, line, id, position) that does not fit, with ``invalid_policy: fail``.
    """
    placement = kind_of(perturbation).placement
    if placement in ("positions", "windows", "rearrangement"):
        return candidates  # one base in a window centred on it, or a window its segments fill: always fits
    edit_start = candidates.start
    if candidates.variants is not None:
        ref_length = np.array([v.ref_length for v in candidates.variants], np.int64)
        edit_start = np.array([getattr(v, "edit_start", v.start) for v in candidates.variants], np.int64)
    else:
        ref_length = candidates.end - candidates.start if placement != "insertion" else np.zeros_like(candidates.start)
    offsets = [edit_start - candidates.window_start - shift for shift in _shifts(perturbation)]
    bad = np.flatnonzero(np.logical_or.reduce([(o < 0) | (o + ref_length > window + candidates.extra) for o in offsets]))
    if not len(bad):
        return candidates
    index = next(i for i, p in enumerate(spec.perturbations) if p is perturbation)
    if _shifts(perturbation) != [0] and (candidates.variants is None or len(bad) == len(candidates.start)):
        raise RegionError(
            f"perturbations.{index}.shifts: shifted by {_shifts(perturbation)} bp, the model window of {window:,} bp "
            f"no longer holds {_describe_candidate(perturbation, candidates, int(bad[0]))}; choose smaller shifts "
            f"(at most a quarter of the window keeps a perturbation up to half a window long inside it)"
        )
    if candidates.variants is None:
        raise RegionError(
            f"perturbations.{index}.width: {perturbation.width:,} bp {perturbation.kind}s do not fit in the model "
            f"window of {window:,} bp; choose a width of at most {window:,} bp or a model with a longer window"
        )
    reasons = {
        int(i): f"{candidates.variants[i].vcf_alt} changes {int(ref_length[i]):,} bp, more than the model window "
                f"({window:,} bp) holds"
        for i in bad
    }
    if spec.invalid_policy == "fail":
        from screening.io.vcf import VcfError

        listed = [f"{perturbation.vcf}:{v.line} {v.id} {chrom}:{v.vcf_pos} {reasons[i]}"
                  for i, v in ((int(i), candidates.variants[int(i)]) for i in bad[:20])]
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise VcfError(
            f"{len(bad)} variant(s) of perturbations.{index} cannot be placed in a model window (set "
            "invalid_policy: skip to skip and list them):\n  " + "\n  ".join(listed) + more
        )
    entry = skipped.setdefault(perturbation.label, {"count": 0, "items": []})
    entry["count"] += len(bad)
    entry["items"] += [f"line {candidates.variants[i].line} {candidates.variants[i].id}: {reasons[int(i)]}"
                       for i in bad[: max(0, _MAX_LISTED - len(entry["items"]))]]
    keep = np.ones(len(candidates.start), bool)
    keep[bad] = False
    return _select(candidates, keep)


def _shifts(perturbation) -> list[int]:
    """The shifts of an analysis's windows (``[0]``: one placement; a rearrangement's shifted windows are placed and
    checked per partner by :func:`screening.perturb.rearrange.place`)."""
    if kind_of(perturbation).placement == "rearrangement":
        return [0]
    return sorted({shift for shift, _ in getattr(perturbation, "placements", ((0, False),))})


def _fits_shifted(window_start: np.ndarray, extra: np.ndarray, geometry, chrom_length: int, perturbation) -> np.ndarray:
    """Windows that stay on the chromosome in every placement of the analysis."""
    return np.logical_and.reduce([_fits(window_start + s, extra, geometry, chrom_length) for s in _shifts(perturbation)])


def _check_edges(chrom, perturbation, candidates: _Candidates, geometry, chrom_length, policy, skipped) -> _Candidates:
    fits = _fits_shifted(candidates.window_start, candidates.extra, geometry, chrom_length, perturbation)
    if fits.all():
        return candidates
    first = int(np.flatnonzero(~fits)[0])
    shift = next(s for s in _shifts(perturbation)
                 if not _fits(candidates.window_start[first : first + 1] + s, candidates.extra[first : first + 1],
                              geometry, chrom_length)[0])
    if policy == "fail":
        tiled_deletion = kind_of(perturbation).placement == "tiled" and candidates.extra.any()
        hint = _deletion_range(perturbation.width, geometry.window_length, chrom_length) if tiled_deletion else ""
        if getattr(perturbation, "window", "centred") == "shared":
            margin, extra = geometry.window_length // 4, int(candidates.extra[first])
            hint = f"; with window: shared, perturbations can lie within {margin:,}-{chrom_length - margin - extra:,}"
        if shift:
            hint += f"; it is the window shifted by {shift:+,} bp (shifts)"
        ws = int(candidates.window_start[first]) + shift
        raise _edge_error(perturbation.kind, chrom, int(candidates.start[first]), int(candidates.end[first]), ws,
                          ws + geometry.window_length + int(candidates.extra[first]), chrom_length, hint)
    entry = skipped.setdefault(perturbation.label, {"count": 0, "items": []})
    bad = np.flatnonzero(~fits)
    entry["count"] += len(bad)
    entry["items"] += [f"{chrom}:{int(candidates.start[i])}-{int(candidates.end[i])}: model window leaves {chrom}"
                       for i in bad[: max(0, _MAX_LISTED - len(entry["items"]))]]
    return _select(candidates, fits)


def _layout(chrom: str, chrom_length: int, perturbation, candidates: _Candidates, chunk_size: int, n_bins: int) -> GroupLayout:
    per_base = kind_of(perturbation).per_base
    scores = perturbation.stored_scores
    if kind_of(perturbation).placement == "rearrangement":
        scores = partner_scores(perturbation)
    return GroupLayout(
        chrom=chrom,
        chrom_length=chrom_length,
        analysis=perturbation.label,
        kind=perturbation.kind,
        params=perturbation.model_dump(mode="json"),
        start=candidates.start,
        end=candidates.end,
        window_start=candidates.window_start,
        scores=scores,
        chunk_size=chunk_size,
        extra_dims={"base": 4} if per_base else {},
        labels=candidates.labels,
        top_maps=(perturbation.keep_maps, n_bins) if perturbation.keep_maps else (0, 0),
    )
