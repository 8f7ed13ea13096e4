"""Motifs from a screen's per-base scores: seqlets, clustering, JASPAR matching, report (``docs/motifs.md``).

>>> from screening import open_results
>>> from screening.interpret.motifs import find_motifs, write_outputs
>>> result = find_motifs(open_results("demo/results.zarr"), analysis="saliency")     # doctest: +SKIP
>>> write_outputs(result, "demo/motifs")                                              # doctest: +SKIP

The store is read region by region (blocks of ``block_size`` positions with a small margin), seqlets
are called in each block with tangermeme's recursive seqlet caller, the ``max_seqlets`` strongest are
kept, clustered (TOMTOM similarity with memelite, or TF-MoDISco with modisco-lite) and every motif is
matched to JASPAR (pyjaspar's bundled database) with TOMTOM. Nothing is downloaded.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import numpy as np

from screening.core.regions import Region, RegionError
from screening.interpret.motifs.core import JasparMatch, Motif, MotifError, MotifResult, Seqlet
from screening.interpret.motifs.jaspar import DEFAULT_RELEASE, JasparDatabase, load_jaspar, match_motifs
from screening.interpret.motifs.output import OUTPUTS, write_outputs
from screening.interpret.motifs.source import ism_to_hypothetical, open_source

__all__ = [
    "DEFAULT_RELEASE",
    "METHODS",
    "OUTPUTS",
    "JasparDatabase",
    "JasparMatch",
    "Motif",
    "MotifError",
    "MotifResult",
    "Seqlet",
    "find_motifs",
    "ism_to_hypothetical",
    "load_jaspar",
    "match_motifs",
    "motifs_from_store",
    "write_outputs",
]

METHODS = ("seqlets", "modisco")
"""How seqlets are grouped into motifs: TOMTOM similarity (memelite) or TF-MoDISco (modisco-lite)."""


def _regions(results, analysis: str, regions: Iterable[str | Region] | None) -> list[Region]:
    if regions is None:
        found = [
            results.resolve_region(chrom)
            for chrom in results.chromosomes
            if results._group(chrom, analysis) is not None
        ]
        if not found:
            raise MotifError(f"analysis {analysis!r} has no results on any chromosome of this store")
        return found
    resolved = []
    for region in regions:
        try:
            resolved.append(results.resolve_region(region))
        except RegionError as err:
            raise MotifError(str(err)) from None
    return resolved


def _shuffled(block, rng: np.random.Generator):
    """``block`` with the contribution rows of its computed positions permuted (the control of
    :func:`find_motifs`)."""
    valid = np.flatnonzero(block.one_hot.sum(axis=1) > 0)
    contrib = block.contrib.copy()
    contrib[valid] = block.contrib[rng.permutation(valid)]
    return replace(block, contrib=contrib)


def find_motifs(
    results,
    analysis: str | None = None,
    *,
    score: str | None = None,
    regions: Iterable[str | Region] | None = None,
    method: str = "seqlets",
    collection: str = "CORE",
    tax_group: str | None = "vertebrates",
    release: str = DEFAULT_RELEASE,
    genome: str | os.PathLike | None = None,
    block_size: int = 1_000_000,
    threshold: float = 0.01,
    min_seqlet_len: int = 4,
    max_seqlet_len: int = 25,
    flank: int = 10,
    max_seqlets: int = 20_000,
    cluster_p: float = 1e-5,
    min_seqlets: int = 5,
    max_motifs: int = 50,
    trim: float = 0.3,
    n_jobs: int = 1,
    modisco_context: int = 50,
    database: JasparDatabase | None = None,
    shuffle_seed: int | None = None,
) -> MotifResult:
    """Motifs in the per-base scores of ``analysis`` (an open :class:`~screening.store.reader.Results`).

    Parameters
    ----------
    analysis, score
        The analysis (default: the only one) and its per-base score (default ``attribution_corrected`` of an
        attribution analysis; the first score of a mutagenesis analysis, turned into attributions as
        tangermeme does, see :mod:`screening.interpret.motifs.source`).
    regions
        Regions to read (0-based, half-open strings or :class:`Region`); default: every chromosome of the analysis.
    method
        ``"seqlets"`` (TOMTOM-similarity clustering of the seqlets) or ``"modisco"`` (TF-MoDISco on windows
        of ``2·modisco_context`` bp centred on the seqlets).
    collection, tax_group, release
        The JASPAR matrices matched against (``tax_group=None``: every group).
    genome
        Reference FASTA, when the store holds no ``ref_base`` labels (default: the spec's ``genome.fasta``).
    block_size
        Positions read at a time; memory is about ``block_size × 70`` bytes plus the kept seqlets
        (``max_seqlets × ~1.5 kB``, ``~3.2 kB`` more each for ``modisco``).
    threshold, min_seqlet_len, max_seqlet_len
        tangermeme's ``recursive_seqlets`` settings (a ranking p-value cut-off, not a false discovery rate).
    flank, cluster_p, min_seqlets, max_motifs, trim
        Clustering (``method="seqlets"``): bases kept around each seqlet for alignment, the TOMTOM p-value that
        joins a seqlet to a seed, the least seqlets of a motif, the most motifs, and the CWM trimming fraction.
    shuffle_seed
        A control (null) run: the contributions of the computed positions of each block are permuted (seeded)
        while the sequence stays, so any motif found matches the sequence only by chance.

    Raises
    ------
    MotifError
        For an unknown analysis, score, region, method or JASPAR collection/group/release, an analysis
        without per-base scores, or one with no computed scores in the regions.
    """
    if method not in METHODS:
        raise MotifError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if block_size < 1 or max_seqlets < 1 or min_seqlets < 1:
        raise MotifError("block_size, max_seqlets and min_seqlets must be positive")
    source = open_source(results, analysis, score, None if genome is None else str(genome))
    resolved = _regions(results, source.analysis, regions)
    db = database or load_jaspar(collection, tax_group, release)  # before the long part: a bad name fails fast

    from screening.interpret.motifs.discover import SeqletCollector, cluster_seqlets, modisco_motifs

    collector = SeqletCollector(
        threshold=threshold,
        min_len=min_seqlet_len,
        max_len=max_seqlet_len,
        flank=flank,
        max_seqlets=max_seqlets,
        context=modisco_context if method == "modisco" else 0,
    )
    rng = None if shuffle_seed is None else np.random.default_rng(shuffle_seed)
    for region in resolved:
        for block in source.blocks(region, block_size, collector.margin):
            collector.add(block if rng is None else _shuffled(block, rng))
            del block  # freed before the next block is read
    if collector.n_positions == 0:
        raise MotifError(
            f"analysis {source.analysis!r} has no computed per-base scores ({source.score}) in "
            f"{', '.join(map(str, resolved))}"
        )
    if method == "modisco":
        anchors, one_hot, contrib = collector.windows()
        motifs, seqlets = modisco_motifs(anchors, one_hot, contrib, min_seqlets=min_seqlets, trim=trim)
    else:
        seqlets = collector.seqlets()
        motifs = cluster_seqlets(
            seqlets, cluster_p=cluster_p, min_seqlets=min_seqlets, max_motifs=max_motifs, trim=trim, n_jobs=n_jobs
        )
    for motif, matches in zip(motifs, match_motifs([m.ppm for m in motifs], db, n_jobs=n_jobs)):
        motif.matches = matches
    index = {matrix_id: i for i, matrix_id in enumerate(db.ids)}
    jaspar = {m.best.matrix_id: (m.best.name, db.ppms[index[m.best.matrix_id]]) for m in motifs if m.best}
    return MotifResult(
        motifs,
        seqlets,
        source.analysis,
        source.score,
        method,
        [str(r) for r in resolved],
        db.describe(),
        collector.n_positions,
        collector.n_called,
        jaspar,
    )


def motifs_from_store(
    store: str | os.PathLike,
    outdir: str | os.PathLike,
    *,
    logos: bool = True,
    storage_options: dict | None = None,
    **options,
) -> tuple[MotifResult, dict[str, Path]]:
    """Open ``store``, :func:`find_motifs` (``options``) and :func:`write_outputs` into ``outdir``.

    ``outdir`` is checked before anything is read and created only once the motifs are found, so a bad
    input leaves nothing behind.
    """
    from screening.io.paths import OutputPathError, check_store_path
    from screening.store.reader import open_results

    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"motifs output {out} is a file; give a folder")
    check_store_path(str(out), "motifs output")
    result = find_motifs(open_results(store, storage_options), **options)
    return result, write_outputs(result, out, logos=logos)
