"""The ``attention`` verb: a window's attention maps with a stability check (``docs/filters_attention.md``)."""

from __future__ import annotations

import argparse

__all__ = ["add_attention_command", "cmd_attention"]


def cmd_attention(args: argparse.Namespace) -> int:
    """Record every layer's and head's attention for the window, check its stability and write the report."""
    from screening.cli.filters import check_outdir, load_model_inputs
    from screening.compute.engine import load_span
    from screening.core.regions import validate_region
    from screening.interpret.attention import Thresholds, attention_layers, attention_report, write_attention_outputs
    from screening.interpret.filters import centred_window

    out = check_outdir(args.outdir, "attention output")
    _, adapter, genome, tracks = load_model_inputs(args.config)
    attention_layers(adapter)  # a model without attention fails before any input is read
    region = validate_region(args.region, genome.chrom_sizes, source="REGION")
    length = adapter.geometry.window_length
    window = centred_window(region, genome.chrom_sizes, length)
    span = load_span(genome, tracks, window.chrom, window.start, window.start + length)
    result = attention_report(
        adapter,
        span.codes,
        span.tracks,
        window.chrom,
        window.start,
        n_substitutions=args.substitutions,
        repeats=args.repeats,
        margin=args.margin,
        seed=args.seed,
        thresholds=Thresholds(),
    )
    written = write_attention_outputs(result, out, plots=not args.no_plots)
    print(
        f"window {window.chrom}:{window.start:,}-{window.start + length:,}: {len(result.layers)} layers × "
        f"{result.weights.shape[1]} heads"
    )
    print(
        "attention is NOT a reliable explanation for this window:"
        if result.reasons
        else "no instability found in attention for this window"
    )
    for reason in result.reasons:
        print(f"  - {reason}")
    print(f"report: {written['report']}")
    return 0


def add_attention_command(sub, positive_int) -> None:
    """Register ``screening attention`` on the CLI's subparsers."""
    attention = sub.add_parser(
        "attention",
        help="a window's attention maps (every layer and head) with a stability check",
        epilog="Regions are 0-based, half-open; the model window is centred on REGION. Writes OUTDIR/attention.npz, "
        "stability.tsv, attention.png and report.md.",
    )
    attention.add_argument("config", help="screen spec (YAML or JSON): its model, genome and tracks")
    attention.add_argument("region", help="e.g. chr2:500,000-510,000 (0-based, half-open); the window is centred on it")
    attention.add_argument("outdir", help="folder for the weights, table, picture and report (created)")
    attention.add_argument(
        "--substitutions", type=positive_int, default=3, help="random substitutions per perturbation"
    )
    attention.add_argument("--repeats", type=positive_int, default=4, help="perturbations drawn (default 4)")
    attention.add_argument("--margin", type=int, default=1000, help="bp kept between substitutions and track peaks")
    attention.add_argument("--seed", type=int, default=0)
    attention.add_argument("--no-plots", action="store_true", help="skip the picture")
    attention.set_defaults(func=cmd_attention)
