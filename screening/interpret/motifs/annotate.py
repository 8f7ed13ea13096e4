"""Which JASPAR motifs lie in each perturbed interval of a screen (FIMO via memelite), ``docs/motifs.md``.

A deletion, mask, shuffle, inversion, duplication, variant or substitution (mutagenesis) changes the
reference sequence over an interval ``[start, end)``. :func:`annotate_hits` scans the reference sequence of
every interval, extended by the widest motif less one base on each side, with FIMO (both strands) and keeps
the motif instances that overlap the interval: ``inside`` when the whole instance lies in it (a deletion
removes it), ``partial`` when the perturbation cuts it. Overlapping intervals (tiled perturbations) are
merged and scanned once, in blocks, so a whole-chromosome query reads each base once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from screening.interpret.motifs.core import MotifError
from screening.interpret.motifs.jaspar import DEFAULT_RELEASE, JasparDatabase, load_jaspar
from screening.perturb.kinds import KINDS

__all__ = [
    "ANNOTATION_COLUMNS",
    "DEFAULT_P_VALUE",
    "INTERVAL_KINDS",
    "MotifAnnotator",
    "annotate_hits",
    "interval_analyses",
    "select_motifs",
    "summarise_annotations",
]

DEFAULT_P_VALUE = 1e-4
"""FIMO's per-position p-value threshold (MEME's FIMO default)."""

INTERVAL_KINDS: tuple[str, ...] = tuple(
    name for name, kind in KINDS.items() if not kind.gradients and kind.placement != "insertion"
)
"""Kinds whose perturbation changes a reference interval (an insertion changes none; attribution edits nothing)."""

ANNOTATION_COLUMNS = [
    "hit",
    "chrom",
    "start",
    "end",
    "motif_id",
    "motif_name",
    "motif_start",
    "motif_end",
    "strand",
    "score",
    "p_value",
    "overlap",
]

_BLOCK = 1_000_000  # bases per piece; a FIMO call holds at most 4 pieces' worth (one-hot float32: ~64 MB)


def select_motifs(database: JasparDatabase, motifs: list[str] | None) -> JasparDatabase:
    """The matrices of ``database`` named in ``motifs`` (matrix ids with or without version, or TF names,
    case-insensitive); ``None`` keeps all.

    Raises
    ------
    MotifError
        When a name matches no matrix.
    """
    if not motifs:
        return database
    keep: list[int] = []
    for wanted in motifs:
        key = wanted.strip().upper()
        found = [
            i
            for i, (mid, name) in enumerate(zip(database.ids, database.names))
            if key in (mid.upper(), mid.split(".")[0].upper(), name.upper())
        ]
        if not found:
            raise MotifError(f"motif {wanted!r} is not in JASPAR {database.describe()}; give a matrix id or TF name")
        keep += [i for i in found if i not in keep]
    return JasparDatabase(
        database.release,
        database.collection,
        database.tax_group,
        [database.ids[i] for i in keep],
        [database.names[i] for i in keep],
        [database.ppms[i] for i in keep],
    )


def _check_hits(hits: pd.DataFrame) -> None:
    missing = [c for c in ("chrom", "start", "end") if c not in hits.columns]
    if missing:
        raise MotifError(f"hits table lacks the column(s) {missing}; it needs chrom, start, end")
    empty = hits["end"].to_numpy() <= hits["start"].to_numpy()
    if empty.any():
        row = hits[empty].iloc[0]
        raise MotifError(
            f"perturbation {row['chrom']}:{int(row['start']):,}-{int(row['end']):,} covers no reference "
            "interval (an insertion?): motifs can be annotated only in perturbed intervals"
        )


def _spans(hits: pd.DataFrame, pad: int, sizes: dict[str, int]) -> dict[str, list[tuple[int, int]]]:
    """Per chromosome, the merged intervals ``[start - pad, end + pad)`` (clipped to the chromosome)."""
    out: dict[str, list[tuple[int, int]]] = {}
    for chrom, group in hits.groupby("chrom", sort=False):
        size = sizes[str(chrom)]
        lo = np.maximum(group["start"].to_numpy(np.int64) - pad, 0)
        hi = np.minimum(group["end"].to_numpy(np.int64) + pad, size)
        order = np.argsort(lo, kind="stable")
        merged: list[tuple[int, int]] = []
        for a, b in zip(lo[order], hi[order]):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], int(b)))
            else:
                merged.append((int(a), int(b)))
        out[str(chrom)] = merged
    return out


def _scan(
    genome, database: JasparDatabase, spans: dict[str, list[tuple[int, int]]], p_value: float, bin_size: float
) -> pd.DataFrame:
    """FIMO instances (``chrom, motif, motif_start, motif_end, strand, score, p_value``) in the spans, each
    instance once: a span is cut into blocks that own the instances starting in them and read ``width - 1``
    bases past their end; instances over an ``N`` are dropped."""
    from memelite.fimo import fimo

    pad = max(p.shape[1] for p in database.ppms) - 1
    pieces = []  # (chrom, lo, own_end, hi): read [lo, hi), own instances starting in [lo, own_end)
    for chrom, merged in spans.items():
        for a, b in merged:
            for own in range(a, b, _BLOCK):
                own_end = min(own + _BLOCK, b)
                pieces.append((chrom, own, own_end, min(own_end + pad, b)))
    motifs = {str(i): ppm for i, ppm in enumerate(database.ppms)}
    frames = []
    for batch in _batches(sorted(pieces, key=lambda piece: piece[3] - piece[1])):
        read = [(chrom, lo, own_end, genome.fetch(chrom, lo, hi)) for chrom, lo, own_end, hi in batch]
        one_hot = np.zeros((len(read), 4, max(len(codes) for *_, codes in read)), np.float32)
        for k, (*_, codes) in enumerate(read):
            ok = np.flatnonzero(codes < 4)
            one_hot[k, codes[ok], ok] = 1.0
        found = fimo(motifs, one_hot, threshold=p_value, bin_size=bin_size, reverse_complement=True)
        for index, frame in enumerate(found):  # one table per motif, in the database's order
            frame = _fix_top_bin(frame, database.ppms[index], bin_size, p_value) if len(frame) else frame
            if len(frame):
                frames.append(_place(frame, read, index))
    columns = ["chrom", "motif", "motif_start", "motif_end", "strand", "score", "p_value"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def _batches(pieces: list) -> list[list]:
    """Pieces (sorted by length) grouped so that each FIMO call holds at most ``4 × _BLOCK`` padded bases: one-hot
    float32, about 64 MB."""
    batches: list[list] = []
    for piece in pieces:
        length = piece[3] - piece[1]
        if batches and (len(batches[-1]) + 1) * length <= 4 * _BLOCK:
            batches[-1].append(piece)
        else:
            batches.append([piece])
    return batches


def _top_bin_p(ppm: np.ndarray, bin_size: float, eps: float = 1e-4) -> float:
    """The p-value of a motif's best score bin, as FIMO's table defines it: every column at its highest
    rounded log-odds, ``∏_c (bases tied for the column's best) / 4``."""
    binned = np.round((np.log2(ppm + eps) + 2.0) / bin_size)
    return float(np.prod((binned == binned.max(axis=0)).sum(axis=0) / 4.0))


def _fix_top_bin(frame: pd.DataFrame, ppm: np.ndarray, bin_size: float, p_value: float) -> pd.DataFrame:
    """memelite 0.5 reports ``p = 0`` for a window whose truncated score lands past the motif's last bin
    (at or next to its best score): such a window gets the best bin's p-value, and is dropped if that
    misses the threshold (a 6-bp motif cannot reach ``1e-4``: ``4**-6 > 1e-4``)."""
    zero = frame["p-value"].to_numpy() <= 0
    if not zero.any():
        return frame
    top = _top_bin_p(ppm, bin_size)
    frame = frame.copy()
    frame.loc[zero, "p-value"] = top
    return frame[frame["p-value"].to_numpy() < p_value] if top >= p_value else frame


def _place(frame: pd.DataFrame, batch: list, motif: int) -> pd.DataFrame:
    """One motif's FIMO rows of a batch, on the genome: owned by their piece, not over an ``N``."""
    seq = frame["sequence_name"].to_numpy(np.int64)
    start = frame["start"].to_numpy(np.int64)
    end = frame["end"].to_numpy(np.int64)
    keep = np.zeros(len(frame), bool)
    offset = np.zeros(len(frame), np.int64)
    chroms = np.empty(len(frame), object)
    for k, (chrom, lo, own_end, codes) in enumerate(batch):
        rows = np.flatnonzero(seq == k)
        n_before = np.concatenate([[0], np.cumsum(codes >= 4)])  # N count up to each position
        inside = (end[rows] <= len(codes)) & (lo + start[rows] < own_end)
        clean = n_before[np.minimum(end[rows], len(codes))] == n_before[start[rows]]
        keep[rows] = inside & clean
        offset[rows] = lo
        chroms[rows] = chrom
    return pd.DataFrame(
        {
            "chrom": chroms[keep],
            "motif": motif,
            "motif_start": (start + offset)[keep],
            "motif_end": (end + offset)[keep],
            "strand": frame["strand"].to_numpy()[keep],
            "score": frame["score"].to_numpy(np.float64)[keep],
            "p_value": frame["p-value"].to_numpy(np.float64)[keep],
        }
    )


def annotate_hits(
    hits: pd.DataFrame,
    genome,
    database: JasparDatabase,
    *,
    p_value: float = DEFAULT_P_VALUE,
    max_per_hit: int | None = None,
    bin_size: float = 0.1,
) -> pd.DataFrame:
    """The JASPAR motif instances that overlap each perturbed interval of ``hits``.

    Parameters
    ----------
    hits
        A table with ``chrom, start, end`` (0-based, half-open), e.g. :func:`screening.report.hits.top_hits`
        or a query's table; one row per perturbation (per-base rows of the same position are fine).
    genome
        The reference: anything with ``fetch(chrom, start, end) -> uint8 codes`` (A0 C1 G2 T3, N4) and
        ``chrom_size(chrom)``, such as :class:`screening.io.genome.Genome`.
    database
        The matrices to scan (:func:`~screening.interpret.motifs.load_jaspar`, :func:`select_motifs`).
    p_value
        FIMO's per-position p-value threshold (each strand; no multiple-testing correction).
    max_per_hit
        Keep only the most significant instances of each hit (``None``: all).

    Returns
    -------
    pandas.DataFrame
        :data:`ANNOTATION_COLUMNS`: ``hit`` (the row's position in ``hits``), the hit's ``chrom, start, end``,
        ``motif_id, motif_name``, the instance's ``motif_start, motif_end`` (0-based, half-open), ``strand``
        (``+``: the JASPAR matrix as written matches the reference's forward strand; ``-``: its reverse
        complement does), FIMO's ``score`` (log2 odds) and ``p_value``, and ``overlap`` (``inside``: the
        instance lies wholly in the interval; ``partial``: the interval cuts it). Several rows per hit, most
        significant first; hits without a motif have none.

    Raises
    ------
    MotifError
        For a table without ``chrom, start, end``, a perturbation covering no interval, a bad threshold, or a
        chromosome the genome lacks.
    """
    if not 0 < p_value < 1:
        raise MotifError(f"motif p-value threshold must lie in (0, 1), not {p_value}")
    if not database.ppms:
        raise MotifError("no JASPAR matrices to scan")
    _check_hits(hits)
    if not len(hits):
        return pd.DataFrame(columns=ANNOTATION_COLUMNS)
    pad = max(p.shape[1] for p in database.ppms) - 1
    try:
        sizes = {str(c): int(genome.chrom_size(str(c))) for c in hits["chrom"].unique()}
    except (KeyError, ValueError) as err:
        raise MotifError(f"the reference genome cannot be read for these hits: {err}") from None
    instances = _scan(genome, database, _spans(hits, pad, sizes), p_value, bin_size)
    return _assign(hits, instances, database, pad + 1, max_per_hit)


def _assign(
    hits: pd.DataFrame, instances: pd.DataFrame, database: JasparDatabase, max_width: int, max_per_hit: int | None
) -> pd.DataFrame:
    """Each hit's overlapping instances (``motif_start < end`` and ``motif_end > start``), best first."""
    rows = []
    by_chrom = {
        chrom: group.sort_values("motif_start", kind="stable")
        for chrom, group in instances.groupby("chrom", sort=False)
    }
    for position, (chrom, start, end) in enumerate(zip(hits["chrom"], hits["start"], hits["end"])):
        found = by_chrom.get(str(chrom))
        if found is None:
            continue
        starts = found["motif_start"].to_numpy()
        lo, hi = np.searchsorted(starts, [int(start) - max_width + 1, int(end)])
        near = found.iloc[lo:hi]
        near = near[near["motif_end"].to_numpy() > int(start)].sort_values(["p_value", "motif_start"], kind="stable")
        if max_per_hit is not None:
            near = near.head(max_per_hit)
        for inst in near.itertuples(index=False):
            inside = int(start) <= inst.motif_start and inst.motif_end <= int(end)
            rows.append(
                (
                    position,
                    str(chrom),
                    int(start),
                    int(end),
                    database.ids[inst.motif],
                    database.names[inst.motif],
                    int(inst.motif_start),
                    int(inst.motif_end),
                    inst.strand,
                    float(inst.score),
                    float(inst.p_value),
                    "inside" if inside else "partial",
                )
            )
    return pd.DataFrame(rows, columns=ANNOTATION_COLUMNS)


def summarise_annotations(annotations: pd.DataFrame, n_hits: int, max_per_hit: int = 3) -> list[str]:
    """One short text per hit (``hit`` 0 … ``n_hits - 1``): its most significant motifs, e.g.
    ``CTCF MA0139.2 (+) p=3.6e-12 inside; …``; ``""`` for a hit without any."""
    texts = [[] for _ in range(n_hits)]
    for row in annotations.sort_values(["hit", "p_value"], kind="stable").itertuples(index=False):
        if len(texts[row.hit]) < max_per_hit:
            texts[row.hit].append(f"{row.motif_name} {row.motif_id} ({row.strand}) p={row.p_value:.2g} {row.overlap}")
    return ["; ".join(t) for t in texts]


def interval_analyses(results, analyses: list[str] | None = None) -> list[str]:
    """The analyses of ``results`` (or of ``analyses``) whose kind covers reference intervals.

    Raises
    ------
    MotifError
        When a named analysis is of another kind, or when none is (``analyses`` ``None``).
    """
    if analyses is not None:
        for analysis in analyses:
            kind = results.spec_kind(analysis)
            if kind not in INTERVAL_KINDS:
                raise MotifError(
                    f"analysis {analysis!r} ({kind}) has no perturbations that cover a reference interval; "
                    f"motif annotation needs one of the kinds {list(INTERVAL_KINDS)}"
                )
        return list(analyses)
    found = [a for a in results.analyses if results.spec_kind(a) in INTERVAL_KINDS]
    if not found:
        kinds = sorted({results.spec_kind(a) for a in results.analyses})
        raise MotifError(
            f"this store has no analysis whose perturbations cover reference intervals (kinds: {kinds}); motif "
            f"annotation needs one of the kinds {list(INTERVAL_KINDS)}"
        )
    return found


@dataclass(eq=False)
class MotifAnnotator:
    """:func:`annotate_hits` with a genome, a JASPAR selection and a threshold chosen once.

    >>> annotator = MotifAnnotator.for_results(results, motifs=["CTCF"])   # doctest: +SKIP
    >>> annotator.annotate(top_hits(results, n=10))                         # doctest: +SKIP
    """

    genome: object
    database: JasparDatabase
    p_value: float = DEFAULT_P_VALUE

    @classmethod
    def for_results(
        cls,
        results,
        *,
        collection: str = "CORE",
        tax_group: str | None = "vertebrates",
        release: str = DEFAULT_RELEASE,
        p_value: float = DEFAULT_P_VALUE,
        genome=None,
        motifs: list[str] | None = None,
    ) -> MotifAnnotator:
        """An annotator for a store: its spec's genome FASTA (or ``genome``, a path or a genome) and the JASPAR
        ``release``/``collection``/``tax_group`` (``None``: every group), limited to ``motifs`` if given.

        Raises
        ------
        MotifError
            For an unknown JASPAR selection or motif, a bad threshold, or a genome that cannot be read.
        """
        if not 0 < p_value < 1:
            raise MotifError(f"motif p-value threshold must lie in (0, 1), not {p_value}")
        database = select_motifs(load_jaspar(collection, tax_group, release), motifs)
        return cls(_open_genome(results, genome), database, p_value)

    def annotate(self, hits: pd.DataFrame, max_per_hit: int | None = None) -> pd.DataFrame:
        """:func:`annotate_hits` of ``hits``."""
        return annotate_hits(hits, self.genome, self.database, p_value=self.p_value, max_per_hit=max_per_hit)

    def summarise(self, hits: pd.DataFrame, max_per_hit: int = 3) -> list[str]:
        """:func:`summarise_annotations` of ``hits``: one text per row."""
        return summarise_annotations(self.annotate(hits, max_per_hit), len(hits), max_per_hit)


def _open_genome(results, genome):
    if genome is not None and not isinstance(genome, (str, bytes)) and hasattr(genome, "fetch"):
        return genome
    from screening.io.genome import Genome, GenomeError

    path = genome or (results.spec.get("genome") or {}).get("fasta")
    if not path:
        raise MotifError("the store's spec names no genome FASTA; give the reference (--genome)")
    try:
        return Genome(path)
    except (OSError, GenomeError) as err:
        raise MotifError(f"cannot read the reference genome {path}: {err}; give one (--genome)") from None
