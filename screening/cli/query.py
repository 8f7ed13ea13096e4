"""The verbs that read a finished result store: ``query``, ``export``, ``info`` and ``evaluate``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["cmd_evaluate", "cmd_export", "cmd_info", "cmd_query", "print_frame"]


def cmd_query(args: argparse.Namespace) -> int:
    """Print the perturbations overlapping a region (with ``--motifs``, the JASPAR motifs each one covers)."""
    from screening.store.reader import open_results

    results = open_results(args.store)
    annotator = None
    if getattr(args, "motifs", False):  # checked before the scores are read
        from screening.cli.motifs import annotator_from_args
        from screening.interpret.motifs.annotate import interval_analyses

        interval_analyses(results, [results.resolve_analysis(args.analysis)])
        annotator = annotator_from_args(args, results)
    frame = results.to_dataframe(args.region, analysis=args.analysis)
    if annotator is not None:
        frame["motifs"] = annotator.summarise(frame, args.motif_max)
    print_frame(frame, args.format)
    return 0


def print_frame(frame, fmt: str) -> None:
    """Print a query's table as ``table``, ``json``, ``tsv`` or ``csv``."""
    if fmt == "table":
        print(
            frame.to_string(index=False, float_format=lambda v: f"{v:.6g}")
            if len(frame)
            else "(no perturbations overlap the region)"
        )
    elif fmt == "json":
        print(frame.to_json(orient="records"))
    else:
        sys.stdout.write(frame.to_csv(index=False, sep="\t" if fmt == "tsv" else ","))


def cmd_export(args: argparse.Namespace) -> int:
    """Write a score as bedGraph or bigWig."""
    from screening.store.export import export_format, to_bedgraph, to_bigwig
    from screening.io.paths import check_output_file
    from screening.store.reader import open_results

    out = check_output_file(args.output, "export output")  # before the store is read
    results = open_results(args.store)
    fmt = export_format(out, args.format)
    score = args.score or results.scores(args.analysis or results.analyses[0])[0]
    writer = to_bigwig if fmt == "bigwig" else to_bedgraph
    writer(results, out, score=score, analysis=args.analysis, region=args.region)
    print(f"wrote {fmt} of {score} to {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a store: spec, provenance and progress."""
    from screening.store.reader import open_results

    results = open_results(args.store)
    done, total = results.progress
    info = {
        "store": str(args.store),
        "complete": results.is_complete,
        "chunks_done": done,
        "chunks_total": total,
        "integrity": "crc32c checksums on every chunk, verified on read; per-chunk digests"
        if results.checksummed
        else "unverified: format version 1 store, chunks carry no checksums",
        "analyses": {a: results.scores(a) for a in results.analyses},
        "chromosomes": results.chromosomes,
        "provenance": results.provenance,
    }
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """AUROC/AUPR of a store's scores against truth elements, as a table and a picture."""
    from screening.interpret.evaluate import evaluate, plot_evaluation, read_truth_bed
    from screening.report.hits import plots_dir
    from screening.store.reader import open_results

    results = open_results(args.store)
    metrics, by_role = evaluate(
        results, read_truth_bed(args.truth), positive_role=args.positive_role, min_information=args.min_information
    )
    print(metrics.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nmean score by truth role:")
    print(by_role.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    out = Path(args.out) if args.out else plots_dir(args.store) / "evaluation.png"
    print(f"\npicture: {plot_evaluation(metrics, out)}")
    return 0
