"""The ``motifs`` and ``hits`` verbs and ``query --motifs`` (``docs/motifs.md``).

``screening motifs``: motifs from a store's per-base scores, matched to JASPAR. ``screening hits``: a store's
top hits, optionally with the JASPAR motifs in each perturbed interval, printed or written as TSV/BED.
``screening query --motifs``: the same motif column on a query. ``screening demo --motifs``: the demo, then
motifs from attribution and mutagenesis over its planted CTCF sites with a shuffled control.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_motifs_command", "annotator_from_args", "cmd_demo_motifs", "cmd_hits", "cmd_motifs"]


def cmd_motifs(args: argparse.Namespace) -> int:
    """Call seqlets, cluster them into motifs, match them to JASPAR and write the report."""
    from screening.interpret.motifs import motifs_from_store

    result, written = motifs_from_store(
        args.store,
        args.outdir,
        logos=not args.no_plots,
        analysis=args.analysis,
        score=args.score,
        regions=args.region,
        method=args.method,
        collection=args.collection,
        tax_group=None if args.tax_group == "all" else args.tax_group,
        release=args.jaspar_release,
        genome=args.genome,
        block_size=args.block_size,
        threshold=args.threshold,
        max_seqlets=args.max_seqlets,
        min_seqlets=args.min_seqlets,
        n_jobs=args.jobs,
    )
    print(
        f"{result.n_positions:,} positions, {result.n_seqlets_called:,} seqlets called, {len(result.motifs)} motifs "
        f"({result.analysis}/{result.score}, {result.method}; {result.database})"
    )
    for motif in result.motifs:
        best = motif.best
        match = f"{best.matrix_id} {best.name} ({best.orientation}) q={best.q_value:.2g}" if best else "-"
        print(f"  {motif.name}: {motif.n_seqlets} seqlets, width {motif.width}, best match {match}")
    print(f"report: {written['report']}")
    return 0


def annotator_from_args(args: argparse.Namespace, results):
    """The :class:`~screening.interpret.motifs.annotate.MotifAnnotator` the ``--motifs`` options ask for."""
    from screening.interpret.motifs.annotate import MotifAnnotator

    return MotifAnnotator.for_results(
        results,
        collection=args.jaspar_collection,
        tax_group=None if args.tax_group == "all" else args.tax_group,
        release=args.jaspar_release,
        p_value=args.motif_pvalue,
        genome=args.genome,
        motifs=args.motif,
    )


def cmd_hits(args: argparse.Namespace) -> int:
    """Print (and write) a store's top hits, with ``--motifs`` the JASPAR motifs in each perturbed interval."""
    from screening.interpret.motifs.annotate import interval_analyses
    from screening.interpret.motifs.core import MotifError
    from screening.io.paths import check_output_file
    from screening.report.hits import top_hits
    from screening.store.reader import open_results

    out = None
    if args.output:
        out = check_output_file(args.output, "hits output")
        if out.suffix.lower() not in (".tsv", ".bed"):
            raise MotifError(f"hits output {out}: give a .tsv (one row per hit and motif) or .bed (one line per hit)")
    results = open_results(args.store)
    analyses = None
    if args.analysis:
        analyses = [results.resolve_analysis(a) for a in args.analysis]
    annotator = None
    if args.motifs:  # every check before the scores are read
        analyses = interval_analyses(results, analyses)
        annotator = annotator_from_args(args, results)
    hits = top_hits(results, n=args.top, per_analysis=args.per_analysis, analyses=analyses)
    annotations = annotator.annotate(hits, args.motif_max) if annotator is not None else None
    if annotations is not None:
        from screening.interpret.motifs.annotate import summarise_annotations

        hits["motifs"] = summarise_annotations(annotations, len(hits), args.motif_max)
    print(hits.to_string(index=False, float_format=lambda v: f"{v:.6g}") if len(hits) else "(no computed hits)")
    if out is not None:
        from screening.interpret.motifs.hits_io import write_hits

        print(f"wrote {write_hits(hits, annotations, out, args.motif_max)}")
    return 0


def _motif_options(parser: argparse.ArgumentParser, what: str) -> None:
    from screening.interpret.motifs.annotate import DEFAULT_P_VALUE
    from screening.interpret.motifs.jaspar import DEFAULT_RELEASE

    parser.add_argument(
        "--motifs",
        action="store_true",
        help=f"name the JASPAR motifs (FIMO, both strands) in {what}'s perturbed interval",
    )
    parser.add_argument("--jaspar-collection", default="CORE", help="with --motifs: JASPAR collection (default CORE)")
    parser.add_argument(
        "--tax-group",
        default="vertebrates",
        help="with --motifs: JASPAR taxonomic group, or 'all' (default vertebrates)",
    )
    parser.add_argument("--jaspar-release", default=DEFAULT_RELEASE, help=f"with --motifs (default {DEFAULT_RELEASE})")
    parser.add_argument(
        "--motif-pvalue",
        type=float,
        default=DEFAULT_P_VALUE,
        help=f"with --motifs: FIMO p-value threshold per position and strand (default {DEFAULT_P_VALUE:g})",
    )
    parser.add_argument(
        "--motif", action="append", help="with --motifs: scan only this matrix id or TF name, e.g. CTCF (repeatable)"
    )
    parser.add_argument("--motif-max", type=int, default=3, help="with --motifs: most significant motifs shown per hit")
    if not any("--genome" in a.option_strings for a in parser._actions):
        parser.add_argument("--genome", help="with --motifs: reference FASTA (default: the store's spec's genome)")


def cmd_demo_motifs(args: argparse.Namespace, run_demo) -> int:
    """``screening demo --motifs``: the demo, then its motif step (:mod:`screening.demo.demo`)."""
    from screening.cli.run import run_and_report
    from screening.demo.demo import demo_annotated_hits, demo_motif_report, prepare_motif_demo

    code = run_demo(args)
    if code or not args.motifs:
        return code
    hits = demo_annotated_hits(Path(args.workdir))
    print("\ntop hits with the JASPAR motifs in each deleted interval (FIMO p < 1e-4, most significant first):")
    print(hits.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    spec = prepare_motif_demo(Path(args.workdir))
    print("\n== motifs: saliency and mutagenesis over the planted CTCF sites ==", flush=True)
    run_and_report(spec, progress=not args.no_progress, plots=False)
    summary = demo_motif_report(Path(args.workdir))
    print(summary.text)
    sys.stdout.flush()
    return 0


def add_motifs_command(sub, positive_int, query: argparse.ArgumentParser, demo: argparse.ArgumentParser) -> None:
    """Register ``screening motifs`` and ``screening hits`` on the CLI's subparsers, and the ``--motifs``
    options of the ``query`` and ``demo`` parsers given."""
    from screening.interpret.motifs.jaspar import DEFAULT_RELEASE

    hits = sub.add_parser(
        "hits",
        help="a store's top hits, optionally with the JASPAR motifs in each perturbed interval",
        epilog="Coordinates are 0-based, half-open. --output FILE.tsv: one row per hit and motif instance (every "
        "instance passing --motif-pvalue, at most --motif-max per hit); FILE.bed: one line per hit, its name "
        "'analysis:MOTIF(strand),…'.",
    )
    hits.add_argument("store")
    hits.add_argument("--top", type=positive_int, default=10, help="hits to list (default 10)")
    hits.add_argument("--analysis", action="append", help="only this analysis (repeatable; default: every one)")
    hits.add_argument("--per-analysis", action="store_true", help="the top hits of each analysis")
    hits.add_argument("--output", help="also write the hits: .tsv (one row per hit and motif) or .bed")
    _motif_options(hits, "each hit")
    hits.set_defaults(func=cmd_hits)

    _motif_options(query, "each perturbation")  # --server refuses them (screening.cli.remote.cmd_query_remote)
    demo.add_argument(
        "--motifs",
        action="store_true",
        help="then find motifs in attribution and mutagenesis over the planted CTCF sites, with a "
        "shuffled control (a few more minutes; docs/motifs.md)",
    )
    run_demo = demo.get_default("func")
    demo.set_defaults(func=lambda args: cmd_demo_motifs(args, run_demo))

    motifs = sub.add_parser(
        "motifs",
        help="motifs in a store's per-base attributions or mutagenesis scores, matched to JASPAR",
        epilog="Regions are 0-based, half-open. Writes OUTDIR/motifs.tsv, motifs.meme, seqlets.bed, logos/ and "
        "report.html. Nothing is downloaded: JASPAR comes from pyjaspar's bundled database.",
    )
    motifs.add_argument("store")
    motifs.add_argument("outdir", help="folder for the table, MEME file, BED, logos and report (created)")
    motifs.add_argument("--analysis", help="an attribution or mutagenesis analysis (default: the only one)")
    motifs.add_argument("--score", help="per-base score (default: attribution_corrected, or the analysis's first)")
    motifs.add_argument("--region", action="append", help="region to read (repeatable; default: every chromosome)")
    motifs.add_argument(
        "--method",
        choices=["seqlets", "modisco"],
        default="seqlets",
        help="seqlets: TOMTOM-similarity clustering (memelite); modisco: TF-MoDISco (modisco-lite)",
    )
    motifs.add_argument("--collection", default="CORE", help="JASPAR collection (default CORE)")
    motifs.add_argument(
        "--tax-group", default="vertebrates", help="JASPAR taxonomic group, or 'all' (default vertebrates)"
    )
    motifs.add_argument("--jaspar-release", default=DEFAULT_RELEASE, help=f"JASPAR release (default {DEFAULT_RELEASE})")
    motifs.add_argument("--genome", help="reference FASTA, for stores without ref_base labels (default: the spec's)")
    motifs.add_argument("--block-size", type=positive_int, default=1_000_000, help="positions read at a time")
    motifs.add_argument("--threshold", type=float, default=0.01, help="seqlet p-value cut-off (tangermeme)")
    motifs.add_argument("--max-seqlets", type=positive_int, default=20_000, help="strongest seqlets kept")
    motifs.add_argument("--min-seqlets", type=positive_int, default=5, help="least seqlets of a motif")
    motifs.add_argument("--jobs", type=positive_int, default=1, help="numba threads for TOMTOM")
    motifs.add_argument("--no-plots", action="store_true", help="skip the logos")
    motifs.set_defaults(func=cmd_motifs)
