"""The verbs that run a model locally: ``run``, ``validate``, ``predict`` and ``demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from screening.core.urls import is_url

__all__ = ["cmd_demo", "cmd_predict", "cmd_run", "cmd_validate", "run_and_report"]


def _overrides(args: argparse.Namespace) -> dict:
    overrides = {}
    if args.store:
        overrides["output.store"] = args.store if is_url(args.store) else str(Path(args.store).resolve())
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
    from screening.store.layout import StoreError

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
    from screening.report.hits import plots_dir, top_hits, write_plots
    from screening.store.reader import open_results
    from screening.prepare import prepare_screen
    from workers.driver import run_screen

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
        from screening.interpret.evaluate import evaluate, plot_evaluation, read_truth_bed

        metrics, _ = evaluate(results, read_truth_bed(truth))
        print("\nagainst the planted truth:")
        print(metrics.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"picture: {plot_evaluation(metrics, plots_dir(summary.store) / 'evaluation.png')}")
    return 0


def _marks(truth: Path | None) -> dict[str, list[tuple[int, str]]]:
    """Functional truth elements per chromosome, to mark on impact tracks."""
    if truth is None:
        return {}
    from screening.interpret.evaluate import read_truth_bed

    marks: dict[str, list[tuple[int, str]]] = {}
    for element in read_truth_bed(truth):
        if element.role in ("ctcf_site", "positive"):
            marks.setdefault(element.chrom, []).append(((element.start + element.end) // 2, ""))
    return marks


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate a spec and all its inputs without running anything."""
    from screening.io.paths import check_store_path
    from screening.prepare import prepare_screen
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
    """Predict reference maps tiled along regions and write them as .cool or .mcool (with a picture)."""
    from screening.report.plot import plot_contact_map
    from screening.predict import dense_map, predict_to_cool
    from screening.spec import load_spec

    # --batch-size goes through the spec, so its validation names the field
    spec = load_spec(args.config, {"execution.batch_size": args.batch_size} if args.batch_size is not None else None)
    out = Path(args.output)
    done = predict_to_cool(spec, out, args.region, None, args.stride_bins, args.symmetrize, progress=not args.no_progress,
                           resolutions=args.resolutions)
    print(f"wrote {done.n_pixels:,} pixels ({done.n_windows:,} windows, {done.bin_size:,} bp bins) of "
          f"{', '.join(map(str, done.regions))} to {out}")
    if len(done.resolutions) > 1:
        print(f"resolutions: {', '.join(f'{r:,}' for r in done.resolutions)} bp (coarser ones: mean of the predicted "
              f"pixels they cover); open one with cooler as {out}::resolutions/{done.resolutions[-1]}")
    else:
        print("note: 'count' holds log-scale model output; 'cooler zoomify' would sum it: for several resolutions "
              "write a .mcool instead (same command, OUTPUT ending in .mcool)")
    if not args.no_plots:
        region = done.regions[0]
        bin_size = done.bin_size
        first = region.start // bin_size
        n = min(-(-region.end // bin_size) - first, args.plot_bins)
        matrix = dense_map(done.pixels[region.chrom], first, n, done.symmetric)
        extent = (first * bin_size, (first + n) * bin_size)
        title = f"{spec.model.kind} prediction, {region.chrom}:{extent[0]:,}-{extent[1]:,}"
        print(f"picture: {plot_contact_map(matrix, out.with_suffix('.png'), extent, region.chrom, title)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the bundled demo data (once) and run the demo screen."""
    from screening.demo.demo import prepare_demo

    spec = prepare_demo(Path(args.workdir), overwrite=args.overwrite)
    truth = Path(args.workdir).resolve() / "data" / "truth.bed"
    return run_and_report(spec, progress=not args.no_progress, truth=truth)
