"""The ``filters`` verb: a model's first-layer convolution filters read as motifs (``docs/filters_attention.md``)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_filters_command", "cmd_filters", "load_model_inputs"]


def check_outdir(outdir: str, what: str) -> Path:
    """Refuse an output folder that is a file or cannot be created, before anything runs."""
    from screening.io.paths import OutputPathError, check_store_path

    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"{what} {out} is a file; give a folder")
    check_store_path(str(out), what)
    return out


def load_model_inputs(config: str):
    """The spec of ``config``, its model (on ``execution.device``, without compilation: hooks must see the modules),
    genome and tracks, checked against each other."""
    from screening.models.loader import load_model
    from screening.prepare import check_model_tracks, open_inputs
    from screening.spec import load_spec

    spec = load_spec(config)
    genome, tracks = open_inputs(spec)
    adapter = load_model(spec.model, spec.execution.device)
    check_model_tracks(adapter, tracks)
    return spec, adapter, genome, tracks


def cmd_filters(args: argparse.Namespace) -> int:
    """Read the filters as PPMs, match them to JASPAR, rank them by influence and write the report."""
    from screening.core.regions import validate_region
    from screening.interpret.filters import filter_motifs, sample_windows, write_filter_outputs
    from screening.interpret.motifs.jaspar import load_jaspar
    from screening.prepare import screen_regions

    out = check_outdir(args.outdir, "filters output")
    spec, adapter, genome, tracks = load_model_inputs(args.config)
    sizes = genome.chrom_sizes
    if args.region:
        regions = [validate_region(r, sizes, source="--region") for r in args.region]
    else:
        regions = screen_regions(spec, sizes) or [validate_region(c, sizes) for c in sizes]
    windows = sample_windows(regions, sizes, adapter.geometry.window_length, args.windows, args.seed)
    database = load_jaspar(args.collection, None if args.tax_group == "all" else args.tax_group, args.jaspar_release)
    result = filter_motifs(
        adapter,
        genome,
        tracks,
        windows,
        layer=args.layer,
        threshold=args.threshold,
        influence_windows=args.influence_windows,
        score=args.score,
        database=database,
        batch_size=spec.execution.batch_size,
        n_jobs=args.jobs,
    )
    written = write_filter_outputs(result, out, logos=not args.no_plots)
    print(
        f"layer {result.layer}: {len(result.filters)} filters of {result.width} bp over {len(windows)} windows "
        f"({result.database})"
    )
    for f in sorted(result.filters, key=lambda f: -f.influence if f.influence == f.influence else 0)[:10]:
        best = f.best
        match = f"{best.matrix_id} {best.name} ({best.orientation}) q={best.q_value:.2g}" if best else "-"
        print(
            f"  filter {f.index}: {f.n_sites:,} sites, {f.information:.1f} bits, {match}, influence {f.influence:.3g}"
        )
    print(f"report: {written['report']}")
    return 0


def add_filters_command(sub, positive_int) -> None:
    """Register ``screening filters`` on the CLI's subparsers."""
    from screening.interpret.motifs.jaspar import DEFAULT_RELEASE

    filters = sub.add_parser(
        "filters",
        help="a model's first-layer convolution filters as motifs (PPMs matched to JASPAR, influence)",
        epilog="Regions are 0-based, half-open. Writes OUTDIR/filters.tsv, filters.meme, logos/ and report.md. "
        "Nothing is downloaded: JASPAR comes from pyjaspar's bundled database.",
    )
    filters.add_argument("config", help="screen spec (YAML or JSON): its model, genome and tracks")
    filters.add_argument("outdir", help="folder for the table, MEME file, logos and report (created)")
    filters.add_argument(
        "--region",
        action="append",
        help="region windows are drawn from (repeatable; default: the spec's regions, else the genome)",
    )
    filters.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="fraction of a filter's maximum activation a site must exceed (default 0.5)",
    )
    filters.add_argument(
        "--layer",
        help="module name to read instead of the model's first sequence layer "
        "(e.g. encoder.res_blocks_seq.0.scale for C.Origami's first block)",
    )
    filters.add_argument("--windows", type=positive_int, default=16, help="model windows sampled (default 16)")
    filters.add_argument(
        "--influence-windows",
        type=int,
        default=4,
        help="windows the influence is averaged over (default 4; 0 skips it)",
    )
    filters.add_argument(
        "--score", default="impact_mean_abs", help="map score of the influence (default impact_mean_abs)"
    )
    filters.add_argument("--seed", type=int, default=0, help="seed of the window sampling")
    filters.add_argument("--collection", default="CORE", help="JASPAR collection (default CORE)")
    filters.add_argument(
        "--tax-group", default="vertebrates", help="JASPAR taxonomic group, or 'all' (default vertebrates)"
    )
    filters.add_argument(
        "--jaspar-release", default=DEFAULT_RELEASE, help=f"JASPAR release (default {DEFAULT_RELEASE})"
    )
    filters.add_argument("--jobs", type=positive_int, default=1, help="numba threads for TOMTOM")
    filters.add_argument("--no-plots", action="store_true", help="skip the logos")
    filters.set_defaults(func=cmd_filters)
