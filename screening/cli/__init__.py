"""The ``screening`` command line.

All genomic coordinates are 0-based, half-open: ``chr1:1,400,000-1,410,000``
covers bases 1,400,000 .. 1,409,999 (as BED and bioframe define them).
"""

# One module per group of verbs: screening.cli.run (run, validate, predict, demo: a model runs here),
# screening.cli.query (query, export, info, evaluate: a finished store is read) and screening.cli.remote
# (serve, submit, status, cancel, resume, and --server for query/export: the service). This module builds
# the parser and maps the package's user errors (screening.core.errors) to exit code 2.

from __future__ import annotations

import argparse
import re
import sys

from screening.cli.query import cmd_evaluate, cmd_export, cmd_info, cmd_query
from screening.cli.run import cmd_demo, cmd_predict, cmd_run, cmd_validate
from screening.core.errors import USER_ERRORS

__all__ = ["main"]

COORDS_NOTE = "Regions are 0-based, half-open: chr1:1,400,000-1,410,000 covers bases 1,400,000..1,409,999."


def _positive_int(text: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", text.strip()):  # int() would take "٣" or "1_0"
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _resolutions(text: str) -> list[int]:
    """``--resolutions``: comma-separated positive integers (bp)."""
    parts = [part.strip() for part in text.split(",")]
    try:
        return [_positive_int(part) for part in parts]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text} is not a comma-separated list of positive integers (bp, e.g. 8192,16384,65536)"
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="screening", description=__doc__.split("\n\n")[0], epilog=COORDS_NOTE)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run or resume a screen from a YAML/JSON spec", epilog=COORDS_NOTE)
    run.add_argument("config", help="screen spec (YAML or JSON)")
    run.add_argument("--store", help="result store path (overrides output.store)")
    run.add_argument("--workers", type=_positive_int, help="number of Ray workers (overrides execution.num_workers)")
    run.add_argument("--batch-size", type=_positive_int, help="inputs per forward pass (overrides execution.batch_size)")
    run.add_argument("--address", help="Ray cluster address (default: start an embedded local Ray); "
                     "a cluster with token authentication takes its token from $RAY_AUTH_TOKEN")
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
    evaluate.add_argument("--min-information", type=float, help="per-base analyses: leave out motif positions whose "
                          "PWM column holds fewer bits than this (reported as n_excluded)")
    evaluate.add_argument("--out", help="picture path (default: beside the store)")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser(
        "predict", help="predict reference contact maps along regions (tiled windows) and write a .cool or .mcool file",
        epilog=COORDS_NOTE + " Pixels are the mean over the windows that contain them; pixels farther apart than one "
        "map are not predicted. The 'count' column holds the model's output (log-scale, not read counts): do not "
        "balance it, and do not run 'cooler zoomify' on the .cool (it sums): write OUTPUT.mcool instead, whose "
        "coarser resolutions are the mean of the predicted pixels they cover.",
    )
    predict.add_argument("config", help="screen spec (YAML or JSON): its model, genome, tracks and execution settings")
    predict.add_argument("output", help="the file to write (replaced if it exists): .cool, or .mcool for several "
                         "resolutions (HiGlass)")
    predict.add_argument("--resolutions", type=_resolutions,
                         help="resolutions of a .mcool in bp, comma-separated, each a multiple of the model's bin size "
                         "(default: the bin size times 1, 2, 4, … up to one 256-bin tile over the genome)")
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

    from screening.cli.remote import add_service_commands

    add_service_commands(sub, query, export)  # serve, submit, status, cancel, resume; query/export --server

    from screening.cli.motifs import add_motifs_command

    add_motifs_command(sub, _positive_int, query, demo)  # motifs: seqlets -> motifs -> JASPAR (screening.interpret.motifs)

    from screening.cli.benchmark_methods import add_benchmark_command

    add_benchmark_command(sub)  # benchmark-methods: every method vs planted truth (screening.demo.benchmark)

    from screening.cli.attention import add_attention_command
    from screening.cli.filters import add_filters_command

    add_filters_command(sub, _positive_int)  # filters: first-layer filters as PPMs (screening.interpret.filters)
    add_attention_command(sub, _positive_int)  # attention: maps + stability (screening.interpret.attention)
    return parser


def _version() -> str:
    from screening.core.version import __version__

    return f"screening {__version__}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``screening`` console command."""
    from screening.io.paths import is_disk_full

    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
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
