"""The bundled demo: a synthetic genome with planted CTCF truth and a small trained model.

``screening demo`` writes everything under one working folder::

    <workdir>/data/        synthetic genome, tracks, truth.bed (built once, seeded)
    <workdir>/demo.yaml    the spec that runs (the packaged template, paths filled in)
    <workdir>/results.zarr the result store; pictures in results_plots/

``screening demo --motifs`` then runs :func:`prepare_motif_demo`'s spec (attribution and mutagenesis over
the planted CTCF sites of chr2) and :func:`demo_motif_report`::

    <workdir>/motifs.yaml, motifs.zarr      the spec and store of that screen
    <workdir>/motifs/<analysis>[_shuffled]/ ``screening motifs`` reports, and of its shuffled control
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from screening.spec import ScreenSpec, load_spec

__all__ = [
    "MOTIF_DEMO_RELEASE",
    "MotifDemoSummary",
    "demo_annotated_hits",
    "demo_model_path",
    "demo_motif_report",
    "demo_synthetic_config",
    "motif_demo_raw",
    "prepare_demo",
    "prepare_motif_demo",
]


#: The demo model's architecture (:data:`screening.demo.training.DEMO_CONFIG`, recorded in
#: ``screening/data/demo_model/config.json``), for a source tree without the trained weights: the demo
#: then runs a random-weight model of the same size. Written out rather than imported so that
#: ``screening demo`` does not import the training code; ``tests/test_training.py`` checks they agree.
_FALLBACK_CONFIG = {
    "num_genomic_features": 2,
    "mid_hidden": 64,
    "stem_width": 16,
    "block_widths": [16, 16, 32, 32, 32, 48, 48, 48, 48],
    "kernel_size": 11,
    "n_layers": 2,
    "n_heads": 4,
    "ff_hidden": 128,
    "dropout": 0.0,
    "decoder_hidden": 32,
    "decoder_blocks": 4,
    "window_length": 131_072,
}


def _data(*parts: str) -> Path:
    return Path(str(resources.files("screening").joinpath("data", *parts)))


def demo_model_path() -> Path:
    """The packaged demo model checkpoint."""
    return _data("demo_model", "model.pt")


def demo_synthetic_config():
    """The synthetic-genome config the demo model was trained on (seeded)."""
    from screening.demo.synthetic import SyntheticConfig

    recorded = _data("demo_model", "config.json")
    if recorded.is_file():
        synthetic = json.loads(recorded.read_text()).get("synthetic")
        if synthetic:
            return SyntheticConfig.from_dict(synthetic)
    return SyntheticConfig()


def _ensure_data(data_dir: Path, overwrite: bool) -> None:
    from screening.demo.synthetic import generate

    if overwrite and data_dir.exists():
        shutil.rmtree(data_dir)
    if (data_dir / "truth.bed").is_file() and (data_dir / "genome.fa").is_file():
        return
    if data_dir.exists():
        shutil.rmtree(data_dir)  # a half-built folder from an interrupted run
    print(f"building the synthetic demo genome in {data_dir} …")
    tmp = data_dir.with_name(data_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    generate(demo_synthetic_config(), tmp)
    tmp.rename(data_dir)


def strongest_site(truth_bed: Path, chrom: str, flank: int) -> str:
    """Region string of the strongest functional CTCF site on ``chrom``, ± ``flank`` bp."""
    from screening.demo.synthetic import read_truth

    sites = [s for s in read_truth(truth_bed) if s.chrom == chrom and s.role == "ctcf_site"]
    site = max(sites, key=lambda s: s.strength)
    return f"{chrom}:{site.start - flank}-{site.end + flank}"


def prepare_demo(workdir: Path, overwrite: bool = False) -> ScreenSpec:
    """Build the demo data (once), write ``demo.yaml`` into ``workdir`` and return its spec."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    _ensure_data(workdir / "data", overwrite)
    raw = yaml.safe_load(_data("demo.yaml").read_text())
    if demo_model_path().is_file():
        raw["model"]["checkpoint"] = str(demo_model_path())
    else:  # a source tree without the trained weights: same architecture, random weights
        print("note: the trained demo model is not installed; using a random-weight model of the same size")
        raw["model"] = {"kind": "corigami", "random_seed": 0, "config": _FALLBACK_CONFIG}
    truth = workdir / "data" / "truth.bed"
    flanks = {"PLANTED_SITE": 10, "PLANTED_SITE_WIDE": 2000}
    for perturbation in raw["perturbations"]:
        placeholder = (perturbation.get("regions") or [None])[0]
        if placeholder in flanks:
            perturbation["regions"] = [strongest_site(truth, "chr2", flank=flanks[placeholder])]
    spec_path = workdir / "demo.yaml"
    spec_path.write_text(
        "# Written by `screening demo`; re-run with `screening run demo.yaml` (it resumes the store).\n"
        + yaml.safe_dump(raw, sort_keys=False)
    )
    overrides = {"output.overwrite": True} if overwrite else None
    return load_spec(spec_path, overrides)


#: JASPAR release the demo's motifs are matched against: its latest CTCF matrix is MA0139.1, the one planted
#: in the synthetic genome (JASPAR2024 adds the revision MA0139.2).
MOTIF_DEMO_RELEASE = "JASPAR2022"
_MOTIF_FLANK = {"saliency_sites": 40, "ism_sites": 3}  # bp around each 19-bp site
_ISM_SITES = 8  # mutagenesis on the strongest sites only: 3 forward passes per base


def _sites(truth_bed: Path, chrom: str, window: int) -> list:
    """Functional CTCF sites of ``chrom`` whose centred model window stays on it, strongest first."""
    from screening.demo.synthetic import read_truth

    length = {
        line.split()[0]: int(line.split()[1]) for line in (truth_bed.parent / "genome.fa.fai").read_text().splitlines()
    }[chrom]
    sites = [
        s
        for s in read_truth(truth_bed)
        if s.chrom == chrom and s.role == "ctcf_site" and s.start - window // 2 >= 0 and s.end + window // 2 <= length
    ]
    return sorted(sites, key=lambda s: -s.strength)


def motif_demo_raw(workdir: Path, n_ism_sites: int = _ISM_SITES) -> dict:
    """The motif demo's spec (a dict) from the demo's ``demo.yaml``: saliency over every functional CTCF site of
    chr1 and chr2 whose centred window stays on its chromosome (each ± 40 bp, in its own window centred on it:
    about 50 sites, enough seqlets to cluster) and mutagenesis over the ``n_ism_sites`` strongest of chr2 (± 3 bp)."""
    workdir = Path(workdir).resolve()
    raw = yaml.safe_load((workdir / "demo.yaml").read_text())
    window = int((raw["model"].get("config") or {}).get("window_length", _FALLBACK_CONFIG["window_length"]))
    truth = workdir / "data" / "truth.bed"
    held_out = _sites(truth, "chr2", window)
    every = _sites(truth, "chr1", window) + held_out

    def regions(chosen, flank):
        return [
            f"{s.chrom}:{s.start - flank}-{s.end + flank}" for s in sorted(chosen, key=lambda s: (s.chrom, s.start))
        ]

    raw["name"] = "demo_motifs"
    raw["regions"] = sorted({s.chrom for s in every})
    raw["perturbations"] = [
        {
            "kind": "attribution",
            "name": "saliency_sites",
            "method": "saliency",
            "target": {"kind": "insulation"},
            "regions": regions(every, _MOTIF_FLANK["saliency_sites"]),
        },
        {
            "kind": "mutagenesis",
            "name": "ism_sites",
            "regions": regions(held_out[:n_ism_sites], _MOTIF_FLANK["ism_sites"]),
        },
    ]
    raw["output"] = {"store": "motifs.zarr", "plots": False}
    return raw


def prepare_motif_demo(workdir: Path, n_ism_sites: int = _ISM_SITES) -> ScreenSpec:
    """Write ``motifs.yaml`` (:func:`motif_demo_raw`) beside the demo's ``demo.yaml`` and return its spec (its store
    replaces one of another spec: it is derived data)."""
    workdir = Path(workdir).resolve()
    spec_path = workdir / "motifs.yaml"
    spec_path.write_text(
        "# Written by `screening demo --motifs`: attribution and mutagenesis over the planted CTCF sites.\n"
        + yaml.safe_dump(motif_demo_raw(workdir, n_ism_sites), sort_keys=False)
    )
    return load_spec(spec_path, {"output.overwrite": True})


@dataclass
class MotifDemoSummary:
    """What :func:`demo_motif_report` found: per run (``<analysis>`` and ``<analysis>_shuffled``) the top motif's
    best JASPAR match ``(matrix_id, name, q_value, n_seqlets)`` or ``None``, the report folders and a text."""

    top: dict = field(default_factory=dict)
    reports: dict = field(default_factory=dict)
    text: str = ""


def demo_annotated_hits(workdir: Path, n: int = 5, release: str = MOTIF_DEMO_RELEASE):
    """The demo store's top ``n`` hits of its interval analyses (the 2-kb deletions), each with the JASPAR motifs
    in its perturbed interval (FIMO, p < 1e-4, the most significant three; ``docs/motifs.md``)."""
    from screening.interpret.motifs.annotate import MotifAnnotator, interval_analyses
    from screening.report.hits import top_hits
    from screening.store.reader import open_results

    results = open_results(Path(workdir).resolve() / "results.zarr")
    annotator = MotifAnnotator.for_results(results, release=release)
    return top_hits(results, n=n, analyses=interval_analyses(results)[:1], motifs=annotator)


def demo_motif_report(
    workdir: Path, store: Path | None = None, release: str = MOTIF_DEMO_RELEASE, seed: int = 0, **options
) -> MotifDemoSummary:
    """Motifs (``screening motifs``) of every attribution and mutagenesis analysis of the motif demo's store,
    each beside a control on its shuffled contributions, written to ``<workdir>/motifs/<run>/``.

    ``options`` go to :func:`~screening.interpret.motifs.find_motifs`.
    """
    from screening.interpret.motifs import find_motifs, load_jaspar, write_outputs
    from screening.store.reader import open_results

    workdir = Path(workdir).resolve()
    results = open_results(store or workdir / "motifs.zarr")
    database = load_jaspar("CORE", "vertebrates", release)
    summary = MotifDemoSummary()
    lines = [f"motifs (seqlets -> TOMTOM against {database.describe()}); a control permutes the contributions:"]
    for analysis in results.analyses:
        if results.spec_kind(analysis) not in ("attribution", "mutagenesis"):
            continue
        for run, shuffle in ((analysis, None), (f"{analysis}_shuffled", seed)):
            result = find_motifs(results, analysis, database=database, shuffle_seed=shuffle, **options)
            summary.reports[run] = write_outputs(result, workdir / "motifs" / run)["report"]
            best = min((m for m in result.motifs if m.best), key=lambda m: m.best.q_value, default=None)
            summary.top[run] = (
                (best.best.matrix_id, best.best.name, best.best.q_value, best.n_seqlets) if best else None
            )
            lines.append(
                f"  {run:<24} {result.n_seqlets_called:>4} seqlets, {len(result.motifs)} motifs; "
                + (
                    f"most significant: {best.name} ({best.n_seqlets} seqlets) = {best.best.matrix_id} {best.best.name} "
                    f"q = {best.best.q_value:.2g}"
                    if best
                    else "no motif"
                )
                + f"  ({summary.reports[run]})"
            )
    summary.text = "\n".join(lines)
    return summary
