"""The benchmark's config (YAML/JSON) and its registry of methods.

A config names a synthetic genome (a folder, generated there when empty), the models, how
many planted elements of each stratum to screen, and which methods to run::

    genome: {dir: bench/genome, synthetic: graded}   # or a SyntheticConfig dict; default: OUTDIR/genome, graded
    models:
      - {name: seed0, checkpoint: screening/data/benchmark_models/seed0/model.pt}
      - {name: seed1, checkpoint: screening/data/benchmark_models/seed1/model.pt}
    chromosomes: [chr1, chr2]
    per_stratum: 4
    methods: all                                      # or a list of METHODS names
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from screening.core.errors import ScreeningError

__all__ = [
    "METHODS",
    "BenchmarkError",
    "BenchmarkConfig",
    "ModelEntry",
    "MotifsEntry",
    "load_benchmark_config",
    "method_spec",
]


class BenchmarkError(ScreeningError, ValueError):
    """A benchmark config or input that cannot be run (the message names the field or file)."""


#: Every method: its perturbation kind and the settings that make it that method. Gradient
#: methods are read twice, raw and with the gradient correction (``+corr``). A ``motifs`` method is
#: the motif pipeline (``screening motifs``: seqlets, clustering, JASPAR) run on the store of its
#: ``source`` method: it screens nothing itself, and scores only the bases of the seqlets whose
#: motif matches one of ``motifs.match`` (see :class:`MotifsEntry`).
METHODS: dict[str, dict[str, Any]] = {
    "deletion": {"kind": "deletion", "padding": "zero"},
    "mask": {"kind": "mask"},
    "shuffle": {"kind": "shuffle"},
    "inversion": {"kind": "inversion"},
    "ism": {"kind": "mutagenesis"},
    "saliency": {"kind": "attribution", "method": "saliency"},
    "input_x_gradient": {"kind": "attribution", "method": "input_x_gradient"},
    "ig_zeros": {"kind": "attribution", "method": "integrated_gradients", "baseline": "zeros"},
    "ig_uniform": {"kind": "attribution", "method": "integrated_gradients", "baseline": "uniform"},
    "ig_shuffle": {"kind": "attribution", "method": "integrated_gradients", "baseline": "shuffle"},
    "deeplift": {"kind": "attribution", "method": "deeplift", "baseline": "zeros"},
    "deeplift_shap": {"kind": "attribution", "method": "deeplift_shap", "baseline": "shuffle"},
    "motifs_ism": {"kind": "motifs", "source": "ism"},
    "motifs_saliency": {"kind": "motifs", "source": "saliency"},
    "motifs_ig_shuffle": {"kind": "motifs", "source": "ig_shuffle"},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelEntry(_Strict):
    """A C.Origami checkpoint to benchmark, under a short name."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    checkpoint: str


class GenomeEntry(_Strict):
    """The synthetic genome: a folder (default: ``OUTDIR/genome``), generated there from ``synthetic`` when empty."""

    dir: str | None = None
    synthetic: Literal["graded", "default"] | dict[str, Any] = "graded"


class TilesEntry(_Strict):
    """The tiled perturbations (deletion, mask, shuffle, inversion): width and step in bp."""

    width: int = Field(20, gt=0)
    step: int = Field(10, gt=0)


class AttributionEntry(_Strict):
    """Settings every gradient method shares."""

    n_steps: int = Field(16, ge=2)
    n_shuffles: int = Field(4, ge=1)
    target: Literal["insulation", "whole_map"] = "insulation"
    target_window: int = Field(10, ge=1)


class RandomisationEntry(_Strict):
    """The model-parameter randomisation check: which models, and the flagging threshold."""

    models: list[str] | None = None  # default: the first model only
    levels: list[Literal["decoder", "attn", "encoder"]] = ["decoder", "attn", "encoder"]
    threshold: float = Field(0.5, gt=0, le=1)
    seed: int = 0


class MotifsEntry(_Strict):
    """The motif pipeline of the ``motifs_*`` methods (:func:`screening.interpret.motifs.find_motifs`).

    A base scores the attribution of the strongest seqlet over it whose motif's best JASPAR match is
    named in ``match`` with TOMTOM ``q <= q_value`` (the motif's aligned columns on the genome); every
    other base scores 0.
    """

    match: list[str] = Field(["CTCF", "CTCFL"], min_length=1)
    q_value: float = Field(0.05, gt=0, le=1)
    collection: str = "CORE"
    tax_group: str | None = "vertebrates"
    threshold: float = Field(0.01, gt=0, lt=1)
    min_seqlets: int = Field(3, ge=1)


class BenchmarkConfig(_Strict):
    """What :func:`screening.demo.benchmark.benchmark_methods` runs (see the module docstring)."""

    genome: GenomeEntry = GenomeEntry()
    models: list[ModelEntry] = Field(min_length=1)
    chromosomes: list[str] | None = None
    per_stratum: int = Field(4, ge=1)
    flank: int = Field(20, ge=0)
    sample_seed: int = 0
    methods: Literal["all"] | list[str] = "all"
    tiles: TilesEntry = TilesEntry()
    attribution: AttributionEntry = AttributionEntry()
    randomisation: RandomisationEntry | None = RandomisationEntry()
    motifs: MotifsEntry = MotifsEntry()
    min_information: float | None = Field(None, ge=0, le=2)
    cost_model: str | None = Field(
        None,
        description="the model whose methods run as separate, timed screens (default: the first; the others "
        "run all methods in one screen)",
    )
    time_methods: bool = True
    num_workers: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1)

    @field_validator("methods")
    @classmethod
    def _known(cls, value):
        if value == "all":
            return value
        unknown = [m for m in value if m not in METHODS]
        if unknown or not value:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
        orphans = [m for m in value if METHODS[m]["kind"] == "motifs" and METHODS[m]["source"] not in value]
        if orphans:
            sources = sorted({METHODS[m]["source"] for m in orphans})
            raise ValueError(f"{orphans} read the store of {sources}: list {' and '.join(sources)} too")
        return value

    @field_validator("models")
    @classmethod
    def _unique(cls, value: list[ModelEntry]) -> list[ModelEntry]:
        names = [m.name for m in value]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        return value

    @property
    def method_names(self) -> list[str]:
        return list(METHODS) if self.methods == "all" else list(self.methods)

    @property
    def randomised_models(self) -> list[str]:
        if self.randomisation is None:
            return []
        return self.randomisation.models if self.randomisation.models is not None else [self.models[0].name]


def load_benchmark_config(path: str | Path) -> tuple[BenchmarkConfig, Path]:
    """Read and validate a config; relative paths in it are resolved against its folder.

    Returns
    -------
    (config, base)
        The config and the folder its relative paths start from.

    Raises
    ------
    BenchmarkError
        Naming the file, or every invalid field.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"benchmark config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise BenchmarkError(f"{path}: not valid YAML/JSON: {err}") from None
    return parse_benchmark_config(raw, path), path.resolve().parent


def parse_benchmark_config(raw: Any, source: str | Path = "config") -> BenchmarkConfig:
    """Validate a config dict; :class:`BenchmarkError` lists every invalid field."""
    if not isinstance(raw, dict):
        raise BenchmarkError(f"{source}: expected a mapping of fields, got {type(raw).__name__}")
    try:
        config = BenchmarkConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in err.errors())
        raise BenchmarkError(f"{source}: {problems}") from None
    names = {m.name for m in config.models}
    if config.cost_model is not None and config.cost_model not in names:
        raise BenchmarkError(f"{source}: cost_model: {config.cost_model!r} is not among models ({sorted(names)})")
    if config.cost_model is None and config.time_methods:
        config = config.model_copy(update={"cost_model": config.models[0].name})
    missing = [m for m in config.randomised_models if m not in names]
    if missing:
        raise BenchmarkError(f"{source}: randomisation.models: {missing} are not among models ({sorted(names)})")
    return config


def method_spec(name: str, config: BenchmarkConfig, regions: list[str]) -> dict[str, Any]:
    """The screen's perturbation entry of one method over ``regions`` (not for ``motifs`` methods: they
    read their source's store)."""
    if METHODS[name]["kind"] == "motifs":
        raise BenchmarkError(f"{name} screens nothing itself: it reads the store of {METHODS[name]['source']}")
    entry = {"name": name, **METHODS[name], "regions": regions}
    if entry["kind"] == "attribution":
        att = config.attribution
        entry.update(
            n_steps=att.n_steps, n_shuffles=att.n_shuffles, target={"kind": att.target, "window": att.target_window}
        )
    elif entry["kind"] == "mutagenesis":
        entry["scores"] = ["impact_mean_abs"]
    else:
        entry.update(width=config.tiles.width, step=config.tiles.step, scores=["impact_mean_abs"])
    return entry
