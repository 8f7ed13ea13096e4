"""The ``motifs`` verb: motifs from a store's per-base scores, matched to JASPAR (``docs/motifs.md``)."""

from __future__ import annotations

import argparse

__all__ = ["add_motifs_command", "cmd_motifs"]


def cmd_motifs(args: argparse.Namespace) -> int:
    """Call seqlets, cluster them into motifs, match them to JASPAR and write the report."""
    from screening.interpret.motifs import motifs_from_store

    result, written = motifs_from_store(
        args.store, args.outdir, logos=not args.no_plots,
        analysis=args.analysis, score=args.score, regions=args.region, method=args.method,
        collection=args.collection, tax_group=None if args.tax_group == "all" else args.tax_group,
        release=args.jaspar_release, genome=args.genome, block_size=args.block_size, threshold=args.threshold,
        max_seqlets=args.max_seqlets, min_seqlets=args.min_seqlets, n_jobs=args.jobs,
    )
    print(f"{result.n_positions:,} positions, {result.n_seqlets_called:,} seqlets called, {len(result.motifs)} motifs "
          f"({result.analysis}/{result.score}, {result.method}; {result.database})")
    for motif in result.motifs:
        best = motif.best
        match = f"{best.matrix_id} {best.name} ({best.orientation}) q={best.q_value:.2g}" if best else "-"
        print(f"  {motif.name}: {motif.n_seqlets} seqlets, width {motif.width}, best match {match}")
    print(f"report: {written['report']}")
    return 0


def add_motifs_command(sub, positive_int) -> None:
    """Register ``screening motifs`` on the CLI's subparsers."""
    from screening.interpret.motifs.jaspar import DEFAULT_RELEASE

    motifs = sub.add_parser(
        "motifs", help="motifs in a store's per-base attributions or mutagenesis scores, matched to JASPAR",
        epilog="Regions are 0-based, half-open. Writes OUTDIR/motifs.tsv, motifs.meme, seqlets.bed, logos/ and "
        "report.html. Nothing is downloaded: JASPAR comes from pyjaspar's bundled database.",
    )
    motifs.add_argument("store")
    motifs.add_argument("outdir", help="folder for the table, MEME file, BED, logos and report (created)")
    motifs.add_argument("--analysis", help="an attribution or mutagenesis analysis (default: the only one)")
    motifs.add_argument("--score", help="per-base score (default: attribution_corrected, or the analysis's first)")
    motifs.add_argument("--region", action="append", help="region to read (repeatable; default: every chromosome)")
    motifs.add_argument("--method", choices=["seqlets", "modisco"], default="seqlets",
                        help="seqlets: TOMTOM-similarity clustering (memelite); modisco: TF-MoDISco (modisco-lite)")
    motifs.add_argument("--collection", default="CORE", help="JASPAR collection (default CORE)")
    motifs.add_argument("--tax-group", default="vertebrates", help="JASPAR taxonomic group, or 'all' (default vertebrates)")
    motifs.add_argument("--jaspar-release", default=DEFAULT_RELEASE, help=f"JASPAR release (default {DEFAULT_RELEASE})")
    motifs.add_argument("--genome", help="reference FASTA, for stores without ref_base labels (default: the spec's)")
    motifs.add_argument("--block-size", type=positive_int, default=1_000_000, help="positions read at a time")
    motifs.add_argument("--threshold", type=float, default=0.01, help="seqlet p-value cut-off (tangermeme)")
    motifs.add_argument("--max-seqlets", type=positive_int, default=20_000, help="strongest seqlets kept")
    motifs.add_argument("--min-seqlets", type=positive_int, default=5, help="least seqlets of a motif")
    motifs.add_argument("--jobs", type=positive_int, default=1, help="numba threads for TOMTOM")
    motifs.add_argument("--no-plots", action="store_true", help="skip the logos")
    motifs.set_defaults(func=cmd_motifs)
