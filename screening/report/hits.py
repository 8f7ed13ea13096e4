"""After a screen: top hits and pictures, read back from the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from screening.compute.engine import predict_pair
from screening.core.urls import is_url
from screening.perturb.kinds import kind_of
from screening.report.plot import plot_impact_track, plot_map_pair

__all__ = ["top_hits", "plots_dir", "write_plots"]


def _tables(results):
    """``(analysis, first score, chrom, table)`` for every group of a store."""
    for analysis in results.analyses:
        score = results.scores(analysis)[0]
        for chrom in results.chromosomes:
            frame = results.to_dataframe(chrom, analysis=analysis)
            if len(frame):  # an analysis may have no perturbations on a chromosome
                yield analysis, score, chrom, frame


def top_hits(
    results, n: int = 5, per_analysis: bool = False, analyses: list[str] | None = None, motifs=None, max_motifs: int = 3
) -> pd.DataFrame:
    """The ``n`` strongest perturbations by each analysis's first score (overall, or per analysis).

    Each chromosome's done units are streamed in blocks with a running top ``n``
    (:meth:`~screening.store.reader.Results.nlargest`), so memory and time do not depend on building
    whole-chromosome tables.

    Parameters
    ----------
    analyses
        Only these analyses (default: every one).
    motifs
        A :class:`~screening.interpret.motifs.annotate.MotifAnnotator`: adds a ``motifs`` column naming the
        ``max_motifs`` most significant JASPAR motifs in each hit's perturbed interval (blank for analyses whose
        kind covers no interval, e.g. attribution).
    """
    table = _top(results, n, per_analysis, analyses)
    if motifs is not None:
        from screening.interpret.motifs.annotate import INTERVAL_KINDS

        texts = [""] * len(table)
        covered = table["analysis"].map(results.spec_kind).isin(INTERVAL_KINDS).to_numpy() if len(table) else []
        rows = np.flatnonzero(covered)
        if len(rows):
            for row, text in zip(rows, motifs.summarise(table.iloc[rows].reset_index(drop=True), max_motifs)):
                texts[row] = text
        table["motifs"] = texts
    return table


def _top(results, n: int, per_analysis: bool, analyses: list[str] | None) -> pd.DataFrame:
    frames = []
    for analysis in analyses or results.analyses:
        score = results.scores(analysis)[0]
        for chrom in results.chromosomes:
            frame = results.nlargest(chrom, score, n, analysis=analysis)
            if not len(frame):
                continue
            frame.insert(0, "analysis", analysis)
            frames.append(frame.rename(columns={score: "score"}).assign(score_name=score))
    if not frames:
        return pd.DataFrame(columns=["analysis", "chrom", "start", "end", "score", "score_name"])
    table = pd.concat(frames, ignore_index=True).sort_values("score", ascending=False)
    if per_analysis:
        table = table.groupby("analysis", sort=False).head(n)
    else:
        table = table.head(n)
    extra = [c for c in ("base", "id") if c in table.columns]
    table[extra] = table[extra].fillna("")  # analyses without bases or ids leave these blank
    return table[["analysis", "chrom", "start", "end", *extra, "score", "score_name"]].reset_index(drop=True)


def plots_dir(store: str | Path) -> Path:
    """Where a store's pictures go: ``<store without suffix>_plots`` beside it (in the working
    directory for a URL store such as ``s3://bucket/screen.zarr``)."""
    if is_url(store, include_file=False):
        return Path.cwd() / (str(store).rstrip("/").rsplit("/", 1)[-1].removesuffix(".zarr") + "_plots")
    store = Path(str(store).removeprefix("file://"))
    return store.with_name(store.name.removesuffix(".zarr") + "_plots")


def _base_code(hit) -> int | None:
    base = hit.get("base")
    return "ACGT".index(base) if isinstance(base, str) and len(base) == 1 and base in "ACGT" else None


def _base(hit) -> str:
    return f" → {hit['base']}" if _base_code(hit) is not None else ""


def _hit_payload(plan, hit) -> dict:
    """The plan's payload for the one perturbation a top-hit row names."""
    from screening.plan import WorkUnit

    layout = plan.layout(hit["chrom"], hit["analysis"])
    match = (layout.start == int(hit["start"])) & (layout.end == int(hit["end"]))
    if "id" in layout.labels and isinstance(hit.get("id"), str):
        match &= layout.labels["id"] == hit["id"]
    index = int(np.flatnonzero(match)[0])
    return plan.payload(WorkUnit(hit["chrom"], hit["analysis"], -1, index, index + 1))


def write_plots(results, adapter, genome, tracks, spec, outdir: str | Path, plan=None, marks=None) -> list[Path]:
    """Impact track per analysis and chromosome, and each analysis's top hit as reference/perturbed/Δ maps.

    ``marks`` maps a chromosome to ``(position, label)`` pairs drawn on its tracks (e.g. known sites).
    """
    marks = marks or {}
    outdir = Path(outdir)
    written = []
    for analysis, score, chrom, frame in _tables(results):
        if "base" in frame:  # mutagenesis: the strongest alternative at each position
            frame = frame.groupby(["start", "end"], as_index=False)[score].max()
        centres = ((frame["start"] + frame["end"]) / 2).to_numpy()
        written.append(
            plot_impact_track(
                centres,
                frame[score].to_numpy(),
                outdir / f"{analysis}_{chrom}_{score}.png",
                chrom,
                score,
                marks=[m for m in marks.get(chrom, []) if centres.min() <= m[0] <= centres.max()],
                title=f"{spec.name}: {analysis} {score} along {chrom}",
            )
        )
    for _, hit in top_hits(results, n=1, per_analysis=True).iterrows():
        if plan is None:
            break
        perturbation = {p.label: p for p in spec.perturbations}[hit["analysis"]]
        if kind_of(perturbation).gradients:
            continue  # no perturbed map to show
        start, end = int(hit["start"]), int(hit["end"])
        payload = _hit_payload(plan, hit)
        reference, perturbed, window_start = predict_pair(
            adapter, genome, tracks, perturbation, hit["chrom"], payload, base=_base_code(hit)
        )
        window = adapter.geometry.window_length
        written.append(
            plot_map_pair(
                reference,
                perturbed,
                outdir / f"top_hit_{hit['analysis']}.png",
                (window_start, window_start + window),
                hit["chrom"],
                f"top hit: {perturbation.kind} {hit['chrom']}:{start:,}-{end:,}{_base(hit)}  "
                f"({hit['score_name']} = {hit['score']:.4g})",
                highlight=(start, end),
            )
        )
    return written
