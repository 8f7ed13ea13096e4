"""Seqlets (tangermeme's recursive seqlet caller) and their clustering into motifs: by TOMTOM similarity
(memelite; ``method="seqlets"``) or by TF-MoDISco (modisco-lite; ``method="modisco"``)."""

from __future__ import annotations

import heapq
import itertools
import warnings

import numpy as np

from screening.interpret.motifs.core import Motif, MotifError, Seqlet, reverse_complement
from screening.interpret.motifs.source import Block

__all__ = ["SeqletCollector", "cluster_seqlets", "modisco_motifs", "soft_ppm", "trim_columns"]


class SeqletCollector:
    """Calls seqlets block by block and keeps the ``max_seqlets`` strongest (a heap: memory stays bounded)."""

    def __init__(
        self,
        threshold: float = 0.01,
        min_len: int = 4,
        max_len: int = 25,
        flank: int = 10,
        max_seqlets: int = 20_000,
        context: int = 0,
    ) -> None:
        self.threshold, self.min_len, self.max_len, self.flank = threshold, min_len, max_len, flank
        self.max_seqlets, self.context = max_seqlets, context
        self._heap: list[tuple[float, int, Seqlet, tuple | None]] = []
        self._counter = itertools.count()
        self.n_called = 0
        self.n_positions = 0

    @property
    def margin(self) -> int:
        """Bases of context each block needs beyond the positions it owns."""
        return self.max_len + max(self.flank, self.context)

    def add(self, block: Block) -> None:
        from tangermeme.seqlet import recursive_seqlets

        self.n_positions += block.n_owned  # each position once: the margins belong to the neighbours
        projected = block.projected.astype(np.float64)
        if not np.any(projected > 0) or np.ptp(projected) == 0:
            return
        frame = recursive_seqlets(
            projected[None, :], threshold=self.threshold, min_seqlet_len=self.min_len, max_seqlet_len=self.max_len
        )
        for start, end, attribution, p_value in frame[["start", "end", "attribution", "p-value"]].itertuples(
            index=False
        ):
            g_start = block.start + int(start)
            if not block.own_start <= g_start < block.own_end:
                continue  # a neighbouring block owns it
            self.n_called += 1
            seqlet = Seqlet(
                block.chrom,
                g_start,
                block.start + int(end),
                float(attribution),
                float(p_value),
                _window(block.one_hot, int(start) - self.flank, int(end) + self.flank),
                _window(block.contrib, int(start) - self.flank, int(end) + self.flank),
                self.flank,
            )
            wide = None
            if self.context:
                centre = (int(start) + int(end)) // 2
                lo = centre - self.context
                wide = (
                    _window(block.one_hot, lo, lo + 2 * self.context),
                    _window(block.contrib, lo, lo + 2 * self.context),
                )
            item = (seqlet.attribution, next(self._counter), seqlet, wide)
            if len(self._heap) < self.max_seqlets:
                heapq.heappush(self._heap, item)
            elif item[0] > self._heap[0][0]:
                heapq.heapreplace(self._heap, item)

    def seqlets(self) -> list[Seqlet]:
        """The kept seqlets, strongest first."""
        return [item[2] for item in sorted(self._heap, key=lambda item: (-item[0], item[1]))]

    def windows(self) -> tuple[list[Seqlet], np.ndarray, np.ndarray]:
        """The kept seqlets (strongest first) and their ``2·context``-wide one-hot and contribution windows."""
        items = sorted(self._heap, key=lambda item: (-item[0], item[1]))
        one_hot = np.stack([item[3][0] for item in items]) if items else np.zeros((0, 2 * self.context, 4), np.float32)
        contrib = np.stack([item[3][1] for item in items]) if items else np.zeros((0, 2 * self.context, 4), np.float32)
        return [item[2] for item in items], one_hot, contrib


def _window(array: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``array[lo:hi]``, zero-padded where it leaves the array."""
    out = np.zeros((hi - lo, array.shape[1]), np.float32)
    a, b = max(lo, 0), min(hi, len(array))
    if b > a:
        out[a - lo : b - lo] = array[a:b]
    return out


def trim_columns(cwm: np.ndarray, fraction: float = 0.3) -> slice:
    """Columns ``[first, last]`` whose ``Σ|cwm|`` reaches ``fraction`` of the maximum (modisco-lite's
    report trims motifs this way before matching them); ``cwm`` is ``[4, w]``."""
    score = np.abs(cwm).sum(axis=0)
    keep = np.flatnonzero(score >= fraction * score.max()) if score.max() > 0 else np.arange(cwm.shape[1])
    return slice(int(keep[0]), int(keep[-1]) + 1)


def soft_ppm(contrib: np.ndarray, beta: float = 2.0) -> np.ndarray:
    """Letter probabilities ``[4, w]`` of a seqlet from its hypothetical contributions ``[w, 4]``: a softmax of
    the contributions scaled to the seqlet's largest ``|value|`` (times ``beta``). Columns the model does not
    care about come out near uniform, so TOMTOM compares what the model responds to, not the bases that
    happen to be there."""
    z = beta * np.asarray(contrib, np.float64) / max(float(np.abs(contrib).max()), 1e-12)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asfortranarray((e / e.sum(axis=1, keepdims=True)).T)


def cluster_seqlets(
    seqlets: list[Seqlet],
    cluster_p: float = 1e-5,
    min_seqlets: int = 5,
    max_motifs: int = 50,
    trim: float = 0.3,
    n_jobs: int = 1,
) -> list[Motif]:
    """Group seqlets into motifs by TOMTOM similarity of their sequences.

    Seqlets are taken strongest first; each one not yet in a motif seeds one, joined by every free seqlet
    whose :func:`soft_ppm` TOMTOM matches the seed's with ``p < cluster_p`` (either strand), aligned to the seed by
    TOMTOM's offset and strand. A seed with fewer than ``min_seqlets`` members makes no motif. Each motif's
    PPM, CWM and hypothetical CWM average the aligned members over the columns most of them cover, trimmed
    to the columns whose ``Σ|CWM|`` reaches ``trim`` of the maximum. Sets ``seqlet.motif``, ``strand``
    (relative to the motif) and ``motif_start``/``motif_end``.
    """
    if len(seqlets) < max(min_seqlets, 2):
        return []
    cores = [soft_ppm(s.contrib[s.flank : s.flank + s.length]) for s in seqlets]
    ptr, index, offset, strand = _similar(cores, cluster_p, n_jobs)
    del cores
    free = np.ones(len(seqlets), bool)
    motifs: list[Motif] = []
    for seed in range(len(seqlets)):
        if not free[seed] or len(motifs) >= max_motifs:
            continue
        members = [(seed, 0, 0)]
        lo, hi = int(ptr[seed]), int(ptr[seed + 1])
        for j, off, on_minus in zip(index[lo:hi].tolist(), offset[lo:hi].tolist(), strand[lo:hi].tolist()):
            if free[j]:
                members.append((j, off, on_minus))
        if len(members) < min_seqlets:
            continue
        motif = _aligned_motif(f"motif_{len(motifs) + 1}", seqlets, members, trim)
        if motif is None:
            continue
        for j, _, _ in members:
            free[j] = False
        motifs.append(motif)
    return motifs


# Seqlets per TOMTOM call: its six (queries × 512) float64 results (~25 kB per query) stay ~25 MB, not
# ~490 MB for 20,000 seqlets at once. Queries are scored independently against the same targets (the
# background of each query column comes from the targets), so the split changes no value.
_TOMTOM_QUERIES = 1_024


def _similar(cores: list[np.ndarray], cluster_p: float, n_jobs: int) -> tuple[np.ndarray, ...]:
    """For each seqlet, the other seqlets among its 512 nearest by TOMTOM (all seqlets as targets) with
    ``p < cluster_p``, nearest first, in compressed rows: ``ptr`` (``n + 1``), ``index``, ``offset``,
    ``strand`` (seqlet ``i``'s are ``[ptr[i], ptr[i + 1])``)."""
    from memelite.tomtom import tomtom

    n_nearest = min(len(cores), 512)
    counts, index, offset, strand = [np.zeros(1, np.int64)], [], [], []
    for a in range(0, len(cores), _TOMTOM_QUERIES):
        with warnings.catch_warnings():  # few seqlets: their p-values only rank similarity, they are not reported
            warnings.filterwarnings("ignore", message="tomtom was given")
            p, _, offsets, _, strands, idxs = tomtom(
                cores[a : a + _TOMTOM_QUERIES], cores, n_nearest=n_nearest, n_jobs=n_jobs
            )
        idxs = idxs.astype(np.int64)
        keep = (p < cluster_p) & (idxs != np.arange(a, a + len(p))[:, None])
        counts.append(keep.sum(axis=1))
        index.append(idxs[keep])
        offset.append(offsets[keep].astype(np.int64))
        strand.append(strands[keep].astype(np.int8))
        del p, offsets, strands, idxs, keep
    return np.cumsum(np.concatenate(counts)), *(np.concatenate(x) for x in (index, offset, strand))


def _aligned_motif(name: str, seqlets: list[Seqlet], members: list[tuple[int, int, int]], trim: float) -> Motif | None:
    seed = seqlets[members[0][0]]
    width = seed.one_hot.shape[0]
    one_hot = np.zeros((width, 4))
    contrib = np.zeros((width, 4))
    hyp = np.zeros((width, 4))
    cover = np.zeros(width)
    placed = []
    for j, off, strand in members:
        s = seqlets[j]
        oh, hc = (reverse_complement(s.one_hot), reverse_complement(s.contrib)) if strand else (s.one_hot, s.contrib)
        # seed window column X faces member window column X + off (the member reverse-complemented when strand)
        cols = np.arange(width)
        theirs = cols + off
        ok = (theirs >= 0) & (theirs < len(oh))
        one_hot[cols[ok]] += oh[theirs[ok]]
        contrib[cols[ok]] += oh[theirs[ok]] * hc[theirs[ok]]
        hyp[cols[ok]] += hc[theirs[ok]]
        cover[cols[ok]] += 1
        placed.append((s, off, strand))
    covered = np.flatnonzero(cover >= 0.5 * len(members))
    if covered.size == 0:
        return None
    lo, hi = int(covered[0]), int(covered[-1]) + 1
    denom = np.maximum(cover[lo:hi], 1)[:, None]
    ppm_rows = one_hot[lo:hi] / np.maximum(one_hot[lo:hi].sum(axis=1, keepdims=True), 1e-12)
    cwm = (contrib[lo:hi] / denom).T
    cut = trim_columns(cwm, trim)
    a, b = lo + cut.start, lo + cut.stop  # motif columns in the seed window
    ppm = ppm_rows.T[:, cut]
    ppm = (ppm + 1e-3) / (ppm + 1e-3).sum(axis=0, keepdims=True)
    motif = Motif(name, ppm, cwm[:, cut], (hyp[lo:hi] / denom).T[:, cut])
    for s, off, strand in placed:
        s.motif, s.strand = name, "-" if strand else "+"
        w = s.one_hot.shape[0]
        first = s.start - s.flank  # genomic position of the member window's column 0
        if strand:  # the reverse-complemented window's column k is the forward window's column w - 1 - k
            s.motif_start, s.motif_end = first + w - (b + off), first + w - (a + off)
        else:
            s.motif_start, s.motif_end = first + a + off, first + b + off
        motif.seqlets.append(s)
    return motif


def modisco_motifs(
    seqlets: list[Seqlet], one_hot: np.ndarray, contrib: np.ndarray, min_seqlets: int = 20, trim: float = 0.3, **options
) -> tuple[list[Motif], list[Seqlet]]:
    """TF-MoDISco (modisco-lite) on windows centred on the called seqlets (``[n, 2·context, 4]``).

    TF-MoDISco calls its own seqlets in these windows and clusters them; the returned seqlets are TF-MoDISco's,
    placed back on the genome (``strand`` relative to the motif). Only positive patterns are kept.
    """
    if len(seqlets) < 2:
        return [], []
    from modiscolite.tfmodisco import TFMoDISco

    settings = dict(
        sliding_window_size=15,
        flank_size=5,
        min_metacluster_size=min_seqlets,
        final_min_cluster_size=min_seqlets,
        target_seqlet_fdr=0.05,
        max_seqlets_per_metacluster=20_000,
        n_leiden_runs=4,
        verbose=False,
    )
    settings.update(options)
    try:
        patterns, _ = TFMoDISco(
            one_hot=one_hot.astype(np.float32), hypothetical_contribs=contrib.astype(np.float32), **settings
        )
    except (ValueError, IndexError) as err:
        raise MotifError(f"TF-MoDISco could not cluster the {len(seqlets)} seqlets: {err}") from err
    context = one_hot.shape[1] // 2
    motifs: list[Motif] = []
    placed: dict[tuple[str, int, int], Seqlet] = {}
    for pattern in patterns or []:
        name = f"motif_{len(motifs) + 1}"
        cwm = np.asarray(pattern.contrib_scores, np.float64).T
        cut = trim_columns(cwm, trim)
        ppm = np.asarray(pattern.sequence, np.float64).T[:, cut] + 1e-3
        motif = Motif(
            name,
            ppm / ppm.sum(axis=0, keepdims=True),
            cwm[:, cut],
            np.asarray(pattern.hypothetical_contribs, np.float64).T[:, cut],
        )
        for hit in pattern.seqlets:
            anchor = seqlets[int(hit.example_idx)]
            window_start = (anchor.start + anchor.end) // 2 - context
            start, end = window_start + int(hit.start), window_start + int(hit.end)
            key = (anchor.chrom, start, end)
            if key in placed:
                continue
            strand = "-" if hit.is_revcomp else "+"
            if hit.is_revcomp:
                m_start, m_end = end - cut.stop, end - cut.start
            else:
                m_start, m_end = start + cut.start, start + cut.stop
            attribution = float(np.sum(np.asarray(hit.contrib_scores)))
            s = Seqlet(
                anchor.chrom,
                start,
                end,
                attribution,
                float("nan"),
                np.zeros((0, 4), np.float32),
                np.zeros((0, 4), np.float32),
                0,
                name,
                strand,
                m_start,
                m_end,
            )
            placed[key] = s
            motif.seqlets.append(s)
        motifs.append(motif)
    return motifs, list(placed.values())
