"""Top hits with their motif annotation as files: a long TSV (one row per hit and motif) or a BED (one line per hit).

Both are written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from screening.interpret.motifs.output import _atomic_write

__all__ = ["hits_bed", "hits_long", "write_hits"]

_MOTIF_COLUMNS = {
    "motif_id": "motif_id",
    "motif_name": "motif_name",
    "motif_start": "motif_start",
    "motif_end": "motif_end",
    "strand": "motif_strand",
    "score": "motif_score",
    "p_value": "motif_p_value",
    "overlap": "motif_overlap",
}


def hits_long(hits: pd.DataFrame, annotations: pd.DataFrame | None) -> pd.DataFrame:
    """One row per hit and motif instance (a hit without any keeps one row with blank motif columns): the hit's
    columns (``rank`` first, 1 = strongest; not its ``motifs`` summary) then ``motif_id, motif_name, motif_start,
    motif_end, motif_strand, motif_score, motif_p_value, motif_overlap``."""
    table = hits.drop(columns=["motifs"], errors="ignore").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    if annotations is None:
        return table
    motifs = annotations[["hit", *_MOTIF_COLUMNS]].rename(columns=_MOTIF_COLUMNS)
    merged = table.merge(motifs, left_index=True, right_on="hit", how="left").drop(columns="hit")
    for column in ("motif_start", "motif_end"):
        merged[column] = merged[column].astype("Int64")
    return merged.reset_index(drop=True)


def hits_bed(hits: pd.DataFrame, annotations: pd.DataFrame | None, max_per_hit: int = 3) -> str:
    """BED6 of the hits (0-based, half-open): name ``analysis:CTCF(+),ZNF143(-)`` (its ``max_per_hit`` most
    significant motifs, each TF and strand once; ``analysis:none`` without any), score the hit's score scaled to 0–1000 of the strongest,
    strand ``.``."""
    names: list[list[str]] = [[] for _ in range(len(hits))]
    if annotations is not None:
        for row in annotations.sort_values(["hit", "p_value"], kind="stable").itertuples(index=False):
            label = f"{row.motif_name}({row.strand})".replace(" ", "_")
            if len(names[row.hit]) < max_per_hit and label not in names[row.hit]:  # one per TF and strand
                names[row.hit].append(label)
    scores = hits["score"].to_numpy(np.float64) if "score" in hits else np.zeros(len(hits))
    top = np.nanmax(np.abs(scores)) if len(scores) and np.isfinite(scores).any() else 1.0
    lines = ["#chrom\tstart\tend\tname\tscore\tstrand"]
    for i, hit in enumerate(hits.itertuples(index=False)):
        label = getattr(hit, "analysis", "hit")
        motifs = ",".join(names[i]) if annotations is not None else ""
        name = f"{label}:{motifs or 'none'}" if annotations is not None else str(label)
        value = scores[i]
        score = int(np.clip(round(1000 * abs(value) / top), 0, 1000)) if np.isfinite(value) and top else 0
        lines.append(f"{hit.chrom}\t{int(hit.start)}\t{int(hit.end)}\t{name}\t{score}\t.")
    return "\n".join(lines) + "\n"


def write_hits(
    hits: pd.DataFrame, annotations: pd.DataFrame | None, path: str | os.PathLike, max_per_hit: int = 3
) -> Path:
    """Write :func:`hits_long` (``.tsv``) or :func:`hits_bed` (``.bed``) to ``path``."""
    path = Path(path)
    if path.suffix.lower() == ".bed":
        return _atomic_write(path, hits_bed(hits, annotations, max_per_hit))
    return _atomic_write(path, hits_long(hits, annotations).to_csv(sep="\t", index=False, float_format="%.6g"))
