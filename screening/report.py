"""After a screen: top hits and pictures, read back from the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from screening.engine import predict_deletion
from screening.plot import plot_impact_track, plot_map_pair

__all__ = ["top_hits", "plots_dir", "write_plots"]


def _tables(results):
    """``(analysis, first score, chrom, table)`` for every group of a store."""
    for analysis in results.analyses:
        score = results.scores(analysis)[0]
        for chrom in results.chromosomes:
            frame = results.to_dataframe(chrom, analysis=analysis)
            if len(frame):  # an analysis may have no perturbations on a chromosome
                yield analysis, score, chrom, frame


def top_hits(results, n: int = 5) -> pd.DataFrame:
    """The ``n`` strongest perturbations of every analysis by its first score."""
    frames = []
    for analysis, score, _, frame in _tables(results):
        frame = frame.dropna(subset=[score]).nlargest(n, score)
        frame.insert(0, "analysis", analysis)
        frames.append(frame.rename(columns={score: "score"}).assign(score_name=score))
    if not frames:
        return pd.DataFrame(columns=["analysis", "chrom", "start", "end", "score", "score_name"])
    table = pd.concat(frames, ignore_index=True).sort_values("score", ascending=False)
    return table[["analysis", "chrom", "start", "end", "score", "score_name"]].head(n).reset_index(drop=True)


def plots_dir(store: str | Path) -> Path:
    """Where a store's pictures go: ``<store without suffix>_plots`` beside it."""
    store = Path(store)
    return store.with_name(store.name.removesuffix(".zarr") + "_plots")


def write_plots(results, adapter, genome, tracks, spec, outdir: str | Path) -> list[Path]:
    """Impact track per analysis and chromosome, and the top hit's reference/perturbed/Δ maps."""
    outdir = Path(outdir)
    written = []
    for analysis, score, chrom, frame in _tables(results):
        centres = ((frame["start"] + frame["end"]) / 2).to_numpy()
        written.append(
            plot_impact_track(centres, frame[score].to_numpy(), outdir / f"{analysis}_{chrom}_{score}.png", chrom, score,
                              title=f"{spec.name}: {analysis} {score} along {chrom}")
        )
    hits = top_hits(results, n=1)
    if len(hits):
        hit = hits.iloc[0]
        perturbation = {p.label: p for p in spec.perturbations}[hit["analysis"]]
        start, end = int(hit["start"]), int(hit["end"])
        reference, perturbed, window_start = predict_deletion(
            adapter, genome, tracks, hit["chrom"], start, end - start, perturbation.padding
        )
        window = adapter.geometry.window_length
        written.append(
            plot_map_pair(
                reference, perturbed, outdir / f"top_hit_{hit['analysis']}.png",
                (window_start, window_start + window), hit["chrom"],
                f"top hit: deletion {hit['chrom']}:{start:,}-{end:,}  ({hit['score_name']} = {hit['score']:.4g})",
                highlight=(start, end),
            )
        )
    return written
