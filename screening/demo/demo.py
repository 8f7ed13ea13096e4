"""The bundled demo: a synthetic genome with planted CTCF truth and a small trained model.

``screening demo`` writes everything under one working folder::

    <workdir>/data/        synthetic genome, tracks, truth.bed (built once, seeded)
    <workdir>/demo.yaml    the spec that runs (the packaged template, paths filled in)
    <workdir>/results.zarr the result store; pictures in results_plots/
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import yaml

from screening.spec import ScreenSpec, load_spec

__all__ = ["demo_model_path", "demo_synthetic_config", "prepare_demo"]


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
