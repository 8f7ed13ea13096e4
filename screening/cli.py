"""The ``screening`` command line.

All genomic coordinates are 0-based, half-open: ``chr1:1,400,000-1,410,000``
covers bases 1,400,000 .. 1,409,999 (as BED and bioframe define them).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

__all__ = ["main"]

COORDS_NOTE = "Regions are 0-based, half-open: chr1:1,400,000-1,410,000 covers bases 1,400,000..1,409,999."


def _user_errors() -> tuple[type[BaseException], ...]:
    from screening.io.genome import GenomeError
    from screening.io.tracks import TrackError
    from screening.io.vcf import VcfError
    from screening.models.base import ModelError
    from screening.regions import RegionError
    from screening.evaluate import EvaluationError
    from screening.results import ResultsError
    from screening.spec import SpecError
    from screening.store import StoreError
    from screening.client import ScreenFailedError, ServiceError
    from screening.service.commands import ClientSetupError
    from screening.service.config import ConfigError
    from screening.predict import PredictError
    from screening.io.paths import OutputPathError

    return (SpecError, RegionError, GenomeError, TrackError, ModelError, StoreError, ResultsError, EvaluationError, VcfError, FileNotFoundError,
            ServiceError, ScreenFailedError, ClientSetupError, ConfigError, PredictError, OutputPathError)


def _overrides(args: argparse.Namespace) -> dict:
    overrides = {}
    if args.store:
        overrides["output.store"] = args.store if "://" in args.store else str(Path(args.store).resolve())
    if args.workers is not None:
        overrides["execution.num_workers"] = args.workers
    if args.address:
        overrides["execution.address"] = args.address
    if args.batch_size is not None:
        overrides["execution.batch_size"] = args.batch_size
    if args.overwrite:
        overrides["output.overwrite"] = True
    if args.metrics_port is not None:
        overrides["execution.metrics_port"] = args.metrics_port
    if args.metrics_host:
        overrides["execution.metrics_host"] = args.metrics_host
    return overrides


def cmd_run(args: argparse.Namespace) -> int:
    """Run or resume a screen from a spec file."""
    from screening.io.paths import check_store_path, is_disk_full
    from screening.spec import load_spec
    from screening.store import StoreError

    spec = load_spec(args.config, _overrides(args))
    check_store_path(spec.output.store)  # before the inputs are read and Ray starts
    try:
        return run_and_report(spec, progress=not args.no_progress, plots=not args.no_plots, verify=args.verify)
    except Exception as err:
        if not is_disk_full(err):  # also when a Ray worker's write hit it
            raise
        raise StoreError(
            f"disk full while writing {spec.output.store}; free space and run the same command again to resume "
            "(finished chunks are kept)"
        ) from None


def run_and_report(spec, progress: bool = True, plots: bool = True, truth: Path | None = None, verify: bool = False) -> int:
    """Run a spec, then print the summary and top hits and write the pictures.

    With ``truth`` (a BED of known elements), the pictures mark them and the scores are
    evaluated against them (AUROC/AUPR).
    """
    from screening.report import plots_dir, top_hits, write_plots
    from screening.results import open_results
    from screening.runner import prepare_screen, run_screen

    prepared = prepare_screen(spec)
    _report_skipped(prepared.plan.skipped, f"provenance.skipped of the store {spec.output.store} (screening info)")
    print(
        f"screen {spec.name!r}: {prepared.plan.n_perturbations:,} perturbations in {len(prepared.plan.units):,} "
        f"units on {', '.join(sorted({r.chrom for r in prepared.regions}))}; model {prepared.provenance['model']['name']}"
    )
    summary = run_screen(spec, progress=progress, prepared=prepared, verify=verify)
    for damaged in summary.damaged:  # found by --verify, recomputed by this run
        print(f"recomputed damaged {damaged}")
    results = open_results(summary.store, spec.output.storage_options)
    verb = "resumed" if summary.resumed else "ran"
    print(
        f"\n{verb} {summary.n_computed:,} of {summary.n_perturbations:,} perturbations in {summary.seconds:.1f} s "
        f"({summary.rate:.2f}/s) on {len(summary.workers) or 0} worker(s)"
        + (f", {summary.retries} unit(s) retried" if summary.retries else "")
    )
    hits = top_hits(results, n=5, per_analysis=True)
    if len(hits):
        print("\ntop hits:")
        print(hits.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    print(f"\nresults: {summary.store}")
    if plots and spec.output.plots:
        written = write_plots(
            results, prepared.adapter, prepared.genome, prepared.tracks, spec, plots_dir(summary.store), prepared.plan,
            marks=_marks(truth),
        )
        for path in written:
            print(f"picture: {path}")
    if truth is not None:
        from screening.evaluate import evaluate, plot_evaluation, read_truth_bed

        metrics, _ = evaluate(results, read_truth_bed(truth))
        print("\nagainst the planted truth:")
        print(metrics.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"picture: {plot_evaluation(metrics, plots_dir(summary.store) / 'evaluation.png')}")
    return 0


def _marks(truth: Path | None) -> dict[str, list[tuple[int, str]]]:
    """Functional truth elements per chromosome, to mark on impact tracks."""
    if truth is None:
        return {}
    from screening.evaluate import read_truth_bed

    marks: dict[str, list[tuple[int, str]]] = {}
    for element in read_truth_bed(truth):
        if element.role in ("ctcf_site", "positive"):
            marks.setdefault(element.chrom, []).append(((element.start + element.end) // 2, ""))
    return marks


def cmd_query(args: argparse.Namespace) -> int:
    """Print the perturbations overlapping a region."""
    from screening.results import open_results

    results = open_results(args.store)
    frame = results.to_dataframe(args.region, analysis=args.analysis)
    print_frame(frame, args.format)
    return 0


def print_frame(frame, fmt: str) -> None:
    """Print a query's table as ``table``, ``json``, ``tsv`` or ``csv``."""
    if fmt == "table":
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.6g}") if len(frame) else "(no perturbations overlap the region)")
    elif fmt == "json":
        print(frame.to_json(orient="records"))
    else:
        sys.stdout.write(frame.to_csv(index=False, sep="\t" if fmt == "tsv" else ","))


def cmd_export(args: argparse.Namespace) -> int:
    """Write a score as bedGraph or bigWig."""
    from screening.export import to_bedgraph, to_bigwig
    from screening.io.paths import check_output_file
    from screening.results import open_results

    out = check_output_file(args.output, "export output")  # before the store is read
    results = open_results(args.store)
    fmt = args.format or ("bigwig" if out.suffix.lower() in {".bw", ".bigwig"} else "bedgraph")
    score = args.score or results.scores(args.analysis or results.analyses[0])[0]
    writer = to_bigwig if fmt == "bigwig" else to_bedgraph
    writer(results, out, score=score, analysis=args.analysis, region=args.region)
    print(f"wrote {fmt} of {score} to {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a store: spec, provenance and progress."""
    from screening.results import open_results

    results = open_results(args.store)
    done, total = results.progress
    info = {
        "store": str(args.store),
        "complete": results.is_complete,
        "chunks_done": done,
        "chunks_total": total,
        "integrity": "crc32c checksums on every chunk, verified on read; per-chunk digests" if results.checksummed
        else "unverified: format version 1 store, chunks carry no checksums",
        "analyses": {a: results.scores(a) for a in results.analyses},
        "chromosomes": results.chromosomes,
        "provenance": results.provenance,
    }
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """AUROC/AUPR of a store's scores against truth elements, as a table and a picture."""
    from screening.evaluate import evaluate, plot_evaluation, read_truth_bed
    from screening.report import plots_dir
    from screening.results import open_results

    results = open_results(args.store)
    metrics, by_role = evaluate(results, read_truth_bed(args.truth), positive_role=args.positive_role)
    print(metrics.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nmean score by truth role:")
    print(by_role.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    out = Path(args.out) if args.out else plots_dir(args.store) / "evaluation.png"
    print(f"\npicture: {plot_evaluation(metrics, out)}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate a spec and all its inputs without running anything."""
    from screening.io.paths import check_store_path
    from screening.runner import prepare_screen
    from screening.spec import load_spec

    spec = load_spec(args.config)
    check_store_path(spec.output.store)
    prepared = prepare_screen(spec)
    _report_skipped(prepared.plan.skipped, "the store's provenance.skipped once the screen runs (screening info)")
    print(f"ok: {prepared.plan.n_perturbations:,} perturbations in {len(prepared.plan.units):,} work units")
    return 0


def _report_skipped(skipped: dict[str, dict], where: str) -> None:
    """Say on stderr how many perturbations (VCF records, windows off a chromosome) are left out, and where
    they are listed: nothing is dropped silently."""
    for analysis, entry in skipped.items():
        first = entry["items"][0] if entry["items"] else ""
        print(
            f"screening: {analysis}: skipped {entry['count']:,} perturbation(s) that cannot be modelled or placed"
            + (f" (first: {first})" if first else "") + f"; they are listed (up to 1,000) in {where}",
            file=sys.stderr,
        )


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict reference maps tiled along regions and write them as .cool (with a picture)."""
    from screening.plot import plot_contact_map
    from screening.predict import dense_map, predict_to_cool
    from screening.spec import load_spec

    # --batch-size goes through the spec, so its validation names the field
    spec = load_spec(args.config, {"execution.batch_size": args.batch_size} if args.batch_size is not None else None)
    out = Path(args.output)
    done = predict_to_cool(spec, out, args.region, None, args.stride_bins, args.symmetrize, progress=not args.no_progress)
    print(f"wrote {done['n_pixels']:,} pixels ({done['n_windows']:,} windows, {done['bin_size']:,} bp bins) of "
          f"{', '.join(map(str, done['regions']))} to {out}")
    if not args.no_plots:
        region = done["regions"][0]
        bin_size = done["bin_size"]
        first = region.start // bin_size
        n = min(-(-region.end // bin_size) - first, args.plot_bins)
        matrix = dense_map(done["pixels"][region.chrom], first, n, done["symmetric"])
        extent = (first * bin_size, (first + n) * bin_size)
        title = f"{spec.model.kind} prediction, {region.chrom}:{extent[0]:,}-{extent[1]:,}"
        print(f"picture: {plot_contact_map(matrix, out.with_suffix('.png'), extent, region.chrom, title)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the bundled demo data (once) and run the demo screen."""
    from screening.demo import prepare_demo

    spec = prepare_demo(Path(args.workdir), overwrite=args.overwrite)
    truth = Path(args.workdir).resolve() / "data" / "truth.bed"
    return run_and_report(spec, progress=not args.no_progress, truth=truth)


def _positive_int(text: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", text.strip()):  # int() would take "٣" or "1_0"
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="screening", description=__doc__.split("\n\n")[0], epilog=COORDS_NOTE)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run or resume a screen from a YAML/JSON spec", epilog=COORDS_NOTE)
    run.add_argument("config", help="screen spec (YAML or JSON)")
    run.add_argument("--store", help="result store path (overrides output.store)")
    run.add_argument("--workers", type=_positive_int, help="number of Ray workers (overrides execution.num_workers)")
    run.add_argument("--batch-size", type=_positive_int, help="inputs per forward pass (overrides execution.batch_size)")
    run.add_argument("--address", help="Ray cluster address (default: start an embedded local Ray)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing store of another spec")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on http://HOST:PORT/metrics")
    run.add_argument("--metrics-host", help="address the metrics endpoint binds (default 127.0.0.1; 0.0.0.0 in a pod)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-plots", action="store_true", help="skip the pictures")
    run.add_argument("--verify", action="store_true",
                     help="check every finished chunk of an existing store (checksums) and recompute damaged ones")
    run.set_defaults(func=cmd_run)

    query = sub.add_parser("query", help="print results overlapping a region", epilog=COORDS_NOTE)
    query.add_argument("store")
    query.add_argument("region", help="e.g. chr1:1,400,000-1,410,000 (0-based, half-open) or chr1")
    query.add_argument("--analysis", help="which perturbation set (default: the only one)")
    query.add_argument("--format", choices=["table", "tsv", "csv", "json"], default="table")
    query.set_defaults(func=cmd_query)

    export = sub.add_parser("export", help="export a score track as bedGraph or bigWig", epilog=COORDS_NOTE)
    export.add_argument("store")
    export.add_argument("output", help="output file (.bedGraph or .bw)")
    export.add_argument("--score", help="score to export (default: the analysis's first)")
    export.add_argument("--analysis")
    export.add_argument("--region", help="only this region")
    export.add_argument("--format", choices=["bedgraph", "bigwig"], help="default: from the file extension")
    export.set_defaults(func=cmd_export)

    info = sub.add_parser("info", help="describe a result store")
    info.add_argument("store")
    info.set_defaults(func=cmd_info)

    validate = sub.add_parser("validate", help="check a spec and its inputs without running")
    validate.add_argument("config")
    validate.set_defaults(func=cmd_validate)

    evaluate = sub.add_parser("evaluate", help="AUROC/AUPR of a store's scores against truth elements (BED)")
    evaluate.add_argument("store")
    evaluate.add_argument("truth", help="BED of known elements; a 7th column is the role (e.g. truth.bed of the demo)")
    evaluate.add_argument("--positive-role", help="role counted as positive (default: ctcf_site, else every element)")
    evaluate.add_argument("--out", help="picture path (default: beside the store)")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser(
        "predict", help="predict reference contact maps along regions (tiled windows) and write a .cool file",
        epilog=COORDS_NOTE + " Pixels are the mean over the windows that contain them; pixels farther apart than one "
        "map are not predicted. The .cool 'count' column holds the model's output (not read counts): do not balance it.",
    )
    predict.add_argument("config", help="screen spec (YAML or JSON): its model, genome, tracks and execution settings")
    predict.add_argument("output", help="the .cool file to write (replaced if it exists)")
    predict.add_argument("--region", action="append",
                         help="region to predict, e.g. chr1:1,000,000-9,000,000 or chr1 (repeatable; default: the spec's regions)")
    predict.add_argument("--stride-bins", type=int, help="bins between consecutive windows' maps (default: half a map)")
    predict.add_argument("--batch-size", type=int, help="windows per forward pass (default: execution.batch_size)")
    predict.add_argument("--symmetrize", action="store_true",
                         help="average each map with its transpose (models whose maps are not symmetric, e.g. C.Origami)")
    predict.add_argument("--plot-bins", type=_positive_int, default=1000, help="bins of the first region shown in the picture")
    predict.add_argument("--no-progress", action="store_true")
    predict.add_argument("--no-plots", action="store_true", help="skip the picture (OUTPUT with .png)")
    predict.set_defaults(func=cmd_predict)

    demo = sub.add_parser("demo", help="run the bundled demo screen (synthetic genome, small model)")
    demo.add_argument("--workdir", default="demo", help="where demo data, store and pictures go (default: ./demo)")
    demo.add_argument("--overwrite", action="store_true", help="rebuild the demo data and store")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=cmd_demo)

    from screening.service.commands import add_service_commands

    add_service_commands(sub, query, export)  # serve, submit, status, cancel, resume; query/export --server
    return parser


def _version() -> str:
    from screening import __version__

    return f"screening {__version__}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``screening`` console command."""
    from screening.io.paths import is_disk_full

    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as err:
        print(f"screening: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if not is_disk_full(err):
            raise
        where = f" while writing {err.filename}" if err.filename else ""
        print(f"screening: error: disk full{where}; free space and run the same command again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("screening: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
