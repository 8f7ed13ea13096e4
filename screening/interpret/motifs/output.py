"""Writing a :class:`MotifResult`: table, MEME file, BED of seqlets, logos and one HTML report.

Every file is written to a temporary sibling and renamed into place, the report last, so a reader never
sees a half-written file.
"""

from __future__ import annotations

import html
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from screening.interpret.motifs.core import Motif, MotifResult

__all__ = ["OUTPUTS", "motif_table", "write_bed", "write_meme", "write_outputs"]

OUTPUTS = ("motifs.tsv", "motifs.meme", "seqlets.bed", "logos/", "report.html")


def _atomic_write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def motif_table(result: MotifResult, n_matches: int = 3) -> pd.DataFrame:
    """One row per motif: ``motif, n_seqlets, width`` and its best JASPAR matches (id, name, p, q, orientation)."""
    rows = []
    for motif in result.motifs:
        row = {"motif": motif.name, "n_seqlets": motif.n_seqlets, "width": motif.width}
        for i in range(n_matches):
            match = motif.matches[i] if i < len(motif.matches) else None
            row[f"match{i + 1}_id"] = match.matrix_id if match else ""
            row[f"match{i + 1}_name"] = match.name if match else ""
            row[f"match{i + 1}_p"] = match.p_value if match else np.nan
            row[f"match{i + 1}_q"] = match.q_value if match else np.nan
            row[f"match{i + 1}_orientation"] = match.orientation if match else ""
        rows.append(row)
    columns = ["motif", "n_seqlets", "width"] + [
        f"match{i + 1}_{f}" for i in range(n_matches) for f in ("id", "name", "p", "q", "orientation")
    ]
    return pd.DataFrame(rows, columns=columns)


#: The header of a MEME motif file (version 4, DNA, both strands, uniform background).
MEME_HEADER = (
    "MEME version 4",
    "",
    "ALPHABET= ACGT",
    "",
    "strands: + -",
    "",
    "Background letter frequencies",
    "A 0.25 C 0.25 G 0.25 T 0.25",
    "",
)


def meme_text(motifs: list[Motif]) -> str:
    """MEME motif format (version 4) of the motifs' PPMs."""
    lines = list(MEME_HEADER)
    for motif in motifs:
        best = motif.best
        label = f"{motif.name} {best.name}" if best else motif.name
        lines.append(f"MOTIF {label}")
        lines.append(f"letter-probability matrix: alength= 4 w= {motif.width} nsites= {motif.n_seqlets} E= 0")
        lines += ["  " + "  ".join(f"{v:.6f}" for v in column) for column in motif.ppm.T]
        lines.append("")
    return "\n".join(lines)


def write_meme(motifs: list[Motif], path: str | os.PathLike) -> Path:
    return _atomic_write(Path(path), meme_text(motifs))


def bed_text(result: MotifResult) -> str:
    """BED6+4 of every seqlet (0-based, half-open): ``chrom start end motif score strand attribution p_value
    motif_start motif_end``; ``score`` is the attribution scaled to 0-1000, ``strand`` is relative to the
    motif as written (``.`` for a seqlet in no motif), ``motif_start``/``motif_end`` the motif's aligned span."""
    seqlets = sorted(result.seqlets, key=lambda s: (s.chrom, s.start, s.end))
    top = max((s.attribution for s in seqlets), default=1.0) or 1.0
    lines = ["#chrom\tstart\tend\tmotif\tscore\tstrand\tattribution\tp_value\tmotif_start\tmotif_end"]
    for s in seqlets:
        score = int(np.clip(round(1000 * s.attribution / top), 0, 1000))
        m_start = "." if s.motif_start is None else str(s.motif_start)
        m_end = "." if s.motif_end is None else str(s.motif_end)
        lines.append(
            f"{s.chrom}\t{s.start}\t{s.end}\t{s.motif or 'unclustered'}\t{score}\t{s.strand}\t"
            f"{s.attribution:.6g}\t{s.p_value:.3g}\t{m_start}\t{m_end}"
        )
    return "\n".join(lines) + "\n"


def write_bed(result: MotifResult, path: str | os.PathLike) -> Path:
    return _atomic_write(Path(path), bed_text(result))


def _information(ppm: np.ndarray) -> pd.DataFrame:
    """A PPM ``[4, w]`` as logomaker's information matrix (bits)."""
    import logomaker

    counts = pd.DataFrame(ppm.T, columns=list("ACGT"))
    return logomaker.transform_matrix(counts, from_type="probability", to_type="information")


def jaspar_panel(best, jaspar: dict) -> tuple[pd.DataFrame, str, int] | None:
    """The logo panel ``(information frame, title, shift)`` of a match's JASPAR matrix, oriented and shifted as
    TOMTOM aligned it (JASPAR column j under query column j - offset); None without a match in ``jaspar``."""
    reference = jaspar.get(best.matrix_id) if best is not None else None
    if reference is None:
        return None
    ppm = reference[1][::-1, ::-1] if best.orientation == "-" else reference[1]
    strand = " (reverse complement)" if best.orientation == "-" else ""
    return _information(ppm), f"JASPAR {best.matrix_id} {best.name}{strand}: q = {best.q_value:.2g}", -best.offset


def write_logo_panels(panels: list[tuple[pd.DataFrame, str, int]], path: Path) -> Path:
    """Logos stacked one per row, each ``(frame [width, ACGT], title, shift)`` drawn from column ``shift`` on."""
    import logomaker

    from screening.report.plot import plt, save_figure

    left = min(shift for *_, shift in panels)
    right = max(frame.shape[0] + shift for frame, _, shift in panels)
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(max(4.0, 0.35 * (right - left) + 1.5), 1.6 * len(panels)), squeeze=False
    )
    for ax, (frame, title, shift) in zip(axes[:, 0], panels):
        frame = frame.copy()
        frame.index = frame.index + shift
        logomaker.Logo(frame, ax=ax, color_scheme="classic")
        ax.set_xlim(left - 0.5, right - 0.5)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def write_logo(motif: Motif, jaspar: dict, path: Path) -> Path:
    """The motif's CWM and PPM logos above the JASPAR logo of its best match (oriented and aligned as TOMTOM
    aligned them)."""
    panels = [
        (
            pd.DataFrame(motif.cwm.T, columns=list("ACGT")),
            f"{motif.name}: contribution (CWM), {motif.n_seqlets} seqlets",
            0,
        ),
        (_information(motif.ppm), f"{motif.name}: information (PPM)", 0),
    ]
    reference = jaspar_panel(motif.best, jaspar)
    return write_logo_panels(panels + ([reference] if reference is not None else []), path)


def report_html(result: MotifResult, table: pd.DataFrame, logos: dict[str, str]) -> str:
    esc = html.escape
    head = (
        f"<p>Store analysis <b>{esc(result.analysis)}</b>, score <b>{esc(result.score)}</b>, method "
        f"<b>{esc(result.method)}</b>; regions: {esc(', '.join(result.regions))}.<br>"
        f"{result.n_positions:,} positions read, {result.n_seqlets_called:,} seqlets called, "
        f"{len(result.seqlets):,} kept; {len(result.motifs)} motifs. Matched with TOMTOM (memelite) against "
        f"{esc(result.database)}; q-values are Benjamini–Hochberg over the database's matrices for each motif.<br>"
        "Coordinates are 0-based, half-open (seqlets.bed).</p>"
    )
    rows = []
    for _, row in table.iterrows():
        picture = logos.get(row["motif"])
        img = f'<img src="{esc(picture)}" style="max-width:640px">' if picture else ""
        matches = "<br>".join(
            f"{esc(str(row[f'match{i}_id']))} {esc(str(row[f'match{i}_name']))} ({esc(str(row[f'match{i}_orientation']))}) "
            f"p={row[f'match{i}_p']:.2g} q={row[f'match{i}_q']:.2g}"
            for i in (1, 2, 3)
            if row.get(f"match{i}_id")
        )
        rows.append(
            f"<tr><td>{esc(row['motif'])}</td><td>{row['n_seqlets']}</td><td>{row['width']}</td>"
            f"<td>{matches}</td><td>{img}</td></tr>"
        )
    body = (
        "<table border=1 cellpadding=4><tr><th>motif</th><th>seqlets</th><th>width</th>"
        "<th>best JASPAR matches (orientation)</th><th>logos</th></tr>" + "".join(rows) + "</table>"
        if rows
        else "<p><b>No motif was found</b>: no group of seqlets was large enough.</p>"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>screening motifs</title></head><body>"
        f"<h1>Motifs</h1>{head}{body}</body></html>\n"
    )


def write_outputs(result: MotifResult, outdir: str | os.PathLike, logos: bool = True) -> dict[str, Path]:
    """Write ``motifs.tsv``, ``motifs.meme``, ``seqlets.bed``, ``logos/<motif>.png`` and ``report.html``."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    table = motif_table(result)
    written = {
        "table": _atomic_write(out / "motifs.tsv", table.to_csv(sep="\t", index=False, float_format="%.4g")),
        "meme": write_meme(result.motifs, out / "motifs.meme"),
        "bed": write_bed(result, out / "seqlets.bed"),
    }
    pictures: dict[str, str] = {}
    if logos:
        for motif in result.motifs:
            path = write_logo(motif, result.jaspar, out / "logos" / f"{motif.name}.png")
            pictures[motif.name] = f"logos/{path.name}"
    written["report"] = _atomic_write(out / "report.html", report_html(result, table, pictures))
    return written
