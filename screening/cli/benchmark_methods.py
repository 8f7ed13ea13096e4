"""The ``benchmark-methods`` verb: every interpretation method on every model against planted truth
(``docs/method_evaluation.md``)."""

from __future__ import annotations

import argparse

__all__ = ["add_benchmark_command", "cmd_benchmark_methods"]


def cmd_benchmark_methods(args: argparse.Namespace) -> int:
    """Run the benchmark of a config into OUTDIR and print its summary."""
    from screening.demo.benchmark import benchmark_methods, load_benchmark_config
    from workers.driver import run_screen

    config, base = load_benchmark_config(args.config)
    result = benchmark_methods(config, args.outdir, run_screen, base, log=None if args.quiet else print)
    print(result.files["markdown"].read_text())
    for name, path in result.files.items():
        print(f"{name}: {path}")
    return 0


def add_benchmark_command(sub) -> None:
    """Register ``screening benchmark-methods`` on the CLI's subparsers."""
    bench = sub.add_parser(
        "benchmark-methods",
        help="score every interpretation method on every model against a synthetic genome's planted truth",
        epilog="Writes OUTDIR/results.tsv, summary.tsv, summary.md, figures/, specs/ (every screen's spec), stores/ "
        "and benchmark.json. A rerun of the same config resumes the stores.",
    )
    bench.add_argument(
        "config", help="benchmark config (YAML/JSON): genome, models, methods (docs/method_evaluation.md)"
    )
    bench.add_argument("outdir", help="output folder (created)")
    bench.add_argument("--quiet", action="store_true", help="no progress lines")
    bench.set_defaults(func=cmd_benchmark_methods)
