"""Run every interpretation method on every model through the normal screen machinery, and score them.

:func:`benchmark_methods` is what ``screening benchmark-methods CONFIG OUTDIR`` runs. Each
(model, method) pair is one ordinary screen (a spec, a store, ``run_screen``), so the benchmark
measures exactly what users run. The screen runner is passed in (``workers.driver.run_screen``
from the CLI): this package sits below the Ray driver in the layers.

Written into ``OUTDIR``::

    results.tsv        per model × method × variant × level (base, element) × stratum: AUROC, AUPR
    summary.tsv, summary.md   per method × variant: the headline numbers (mean over models),
                              consistency across models, randomisation check, completeness, cost
    figures/           element AUROC per stratum (heatmap), base-level AUPR (bars)
    specs/<model>/<method>.yaml   the spec of every screen; stores/ the stores (reruns resume)
    benchmark.json     config, genome, regions, versions, per-run seconds and passes
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from screening.demo.benchmark.config import METHODS, BenchmarkConfig, BenchmarkError, MotifsEntry, method_spec
from screening.demo.benchmark.metrics import (
    NEGATIVE_STRATA,
    POSITIVE_STRATA,
    consistency,
    discrimination,
    element_scores,
    position_table,
    randomisation_check,
)
from screening.demo.synthetic import Site, SyntheticConfig, SyntheticGenome, generate, graded_config, stratum_of
from screening.interpret.evaluate import low_information_positions

__all__ = [
    "BenchmarkResult",
    "benchmark_methods",
    "matching_motifs",
    "randomised_checkpoints",
    "select_regions",
    "seqlet_scores",
]

RunScreen = Callable[..., Any]
_CHUNK = 64  # execution.chunk_size of every benchmark screen
_STRATA = POSITIVE_STRATA + NEGATIVE_STRATA


@dataclass
class BenchmarkResult:
    """What a benchmark run produced: the long table, the summary and the files written."""

    results: pd.DataFrame
    summary: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)


# --------------------------------------------------------------------------- inputs


def _genome(config: BenchmarkConfig, base: Path, outdir: Path, log) -> SyntheticGenome:
    root = (base / config.genome.dir).resolve() if config.genome.dir else outdir / "genome"
    if (root / "config.json").is_file():
        return SyntheticGenome.open(root)
    synthetic = config.genome.synthetic
    if synthetic == "graded":
        chosen = graded_config()
    elif synthetic == "default":
        chosen = SyntheticConfig()
    else:
        try:
            chosen = SyntheticConfig.from_dict(synthetic)
        except (TypeError, ValueError) as err:
            raise BenchmarkError(f"genome.synthetic: {err}") from None
    log(f"generating the synthetic genome in {root}")
    try:
        return generate(chosen, root)
    except ValueError as err:
        raise BenchmarkError(f"genome.synthetic: {err}") from None


def _window(checkpoint: Path) -> int:
    from screening.models.corigami import CorigamiAdapter

    return CorigamiAdapter.from_checkpoint(checkpoint).config.window_length


def select_regions(
    genome: SyntheticGenome, config: BenchmarkConfig, window: int
) -> tuple[list[Site], list[tuple[str, int, int]]]:
    """Up to ``per_stratum`` elements of each stratum (seeded), and the region screened around each.

    An element qualifies when a model window (plus two tiles) centred on it stays inside its
    chromosome. Its region is its 19 bp motif (a GC stretch: its central 19 bp) ± ``flank``.
    """
    chroms = config.chromosomes or list(genome.chrom_sizes)
    unknown = [c for c in chroms if c not in genome.chrom_sizes]
    if unknown:
        raise BenchmarkError(f"chromosomes: {unknown} are not in the genome ({list(genome.chrom_sizes)})")
    margin = window // 2 + 2 * config.tiles.width + config.flank + 64
    rng = np.random.default_rng(config.sample_seed)
    chosen: list[Site] = []
    for stratum in _STRATA:
        pool = [
            s
            for s in genome.sites
            if s.chrom in chroms
            and stratum_of(s) == stratum
            and margin <= s.center <= genome.chrom_sizes[s.chrom] - margin
        ]
        if len(pool) > config.per_stratum:
            pool = [pool[i] for i in sorted(rng.choice(len(pool), config.per_stratum, replace=False))]
        chosen += pool
    if not any(stratum_of(s) in POSITIVE_STRATA for s in chosen):
        raise BenchmarkError("the genome holds no functional site far enough from the chromosome ends to screen")
    regions = []
    for site in sorted(chosen, key=lambda s: (chroms.index(s.chrom), s.start)):
        centre = int(site.center)
        regions.append((site.chrom, centre - 10 - config.flank, centre + 9 + config.flank))
    return chosen, _merge(regions)


def _merge(regions: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    merged: list[tuple[str, int, int]] = []
    for chrom, start, end in regions:
        if merged and merged[-1][0] == chrom and start <= merged[-1][2]:
            merged[-1] = (chrom, merged[-1][1], max(end, merged[-1][2]))
        else:
            merged.append((chrom, start, end))
    return merged


def randomised_checkpoints(checkpoint: Path, levels: list[str], seed: int, outdir: Path) -> dict[str, Path]:
    """Cascading randomisation: re-initialise the model's top parts one after another and save each step.

    Level ``k`` has the first ``k`` parts of ``levels`` (``decoder``, ``attn``, ``encoder``:
    output side first, as Adebayo et al. cascade) drawn afresh from their initialisation.
    """
    import torch

    from screening.models.corigami import CorigamiAdapter, save_corigami_checkpoint

    model = CorigamiAdapter.from_checkpoint(checkpoint).module
    outdir.mkdir(parents=True, exist_ok=True)
    written = {}
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        for level in levels:
            for module in getattr(model, level).modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            path = outdir / f"{checkpoint.parent.name}_{checkpoint.stem}_rand_{level}.pt"
            save_corigami_checkpoint(path, model)
            written[level] = path
    finally:
        torch.random.set_rng_state(generator_state)
    return written


# --------------------------------------------------------------------------- running


_TRACKS = [
    {"name": "ctcf", "path": "ctcf.bw", "transform": "none"},
    {"name": "atac", "path": "atac.bw", "transform": "log1p"},
]


def _screen_spec(
    genome: SyntheticGenome,
    checkpoint: Path,
    methods: list[str],
    config: BenchmarkConfig,
    regions: list[str],
    store: Path,
) -> dict[str, Any]:
    """One screen of ``methods`` over ``regions``; no method: one 1 bp mask (the fixed cost of a screen)."""
    perturbations = [method_spec(m, config, regions) for m in methods] or [
        {
            "kind": "mask",
            "width": 1,
            "step": 1,
            "regions": [regions[0].rsplit("-", 1)[0] + "-" + str(int(regions[0].rsplit(":", 1)[1].split("-")[0]) + 1)],
            "scores": ["impact_mean_abs"],
        }
    ]
    return {
        "name": "benchmark",
        "model": {"kind": "corigami", "checkpoint": str(checkpoint)},
        "genome": {"fasta": str(genome.fasta), "name": "synthetic"},
        "tracks": [{**t, "path": str(genome.root / t["path"])} for t in _TRACKS],
        "invalid_policy": "skip",
        "perturbations": perturbations,
        "execution": {
            "num_workers": config.num_workers,
            "cpus_per_worker": 1.0,
            "batch_size": config.batch_size,
            "chunk_size": _CHUNK,
            "device": "cpu",
        },
        "output": {"store": str(store), "plots": False},
    }


def _passes(method: str, config: BenchmarkConfig, table: pd.DataFrame, n_regions: int) -> tuple[int, int]:
    """Forward and backward passes (one input each) a method takes over the screened bases.

    Counted from the kind and the sizes: a centred tiled edit takes a reference and a perturbed
    prediction per tile; ISM 3 alternatives per base plus one reference per unit of ``chunk_size``
    positions; a gradient method one window per region (each region is far shorter than a window), integrated
    gradients ``n_steps`` per baseline (``n_shuffles`` dinucleotide-shuffled baselines, else one).
    """
    entry = METHODS[method]
    if entry["kind"] == "motifs":  # the pipeline reads its source's scores: no pass of its own
        return _passes(entry["source"], config, table, n_regions)
    per_chrom = table.groupby("chrom").size().to_numpy()
    if entry["kind"] == "mutagenesis":
        return int(3 * per_chrom.sum() + np.ceil(per_chrom / _CHUNK).sum()), 0
    if entry["kind"] != "attribution":
        tiles = int(sum(-(-(n - config.tiles.width) // config.tiles.step) + 1 for n in _region_lengths(table)))
        return 2 * tiles, 0
    att, windows = config.attribution, n_regions
    baselines = att.n_shuffles if entry.get("baseline") == "shuffle" else 1  # IG runs its path from each
    per_window = {
        "saliency": (1, 1),
        "input_x_gradient": (1, 1),
        "integrated_gradients": (att.n_steps * baselines, att.n_steps * baselines),
        "deeplift": (2, 1),
        "deeplift_shap": (2 * att.n_shuffles, att.n_shuffles),
    }[entry["method"]]
    return per_window[0] * windows, per_window[1] * windows


def _region_lengths(table: pd.DataFrame) -> list[int]:
    """Lengths of the contiguous runs of screened positions (the regions, as merged)."""
    lengths = []
    for _, rows in table.groupby("chrom", sort=False):
        pos = np.sort(rows["pos"].to_numpy())
        breaks = np.flatnonzero(np.diff(pos) > 1)
        lengths += np.diff(np.r_[0, breaks + 1, len(pos)]).tolist()
    return lengths


def _read_scores(store: Path, method: str, table: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per evaluated base, aligned to ``table``: ``raw`` (and ``corr`` for gradients) scores, and the
    completeness error where the method has one."""
    from screening.store.reader import open_results

    results = open_results(store)
    kind = METHODS[method]["kind"]
    out: dict[str, np.ndarray] = {}
    names = ["raw", "corr", "completeness"] if kind == "attribution" else ["raw"]
    for name in names:
        out[name] = np.full(len(table), np.nan)
    for chrom, rows in table.groupby("chrom", sort=False):
        if chrom not in results.chromosomes:
            continue
        index = rows.index.to_numpy()
        positions = rows["pos"].to_numpy()
        if kind == "attribution":
            ds = results.query(chrom, analysis=method).compute()
            ref = np.array(["ACGT".find(b) for b in ds["ref_base"].values])
            where = _locate(positions, ds["start"].values)
            ok = (where >= 0) & (ref >= 0)
            rows_ = np.arange(len(ref))[ok]
            for name, array in (("raw", "attribution"), ("corr", "attribution_corrected")):
                out[name][index[where[ok]]] = np.abs(ds[array].values[rows_, ref[ok]])
            if "completeness_error" in ds:
                out["completeness"][index[where[ok]]] = np.abs(ds["completeness_error"].values[rows_])
        elif kind == "mutagenesis":
            frame = results.to_dataframe(chrom, analysis=method)
            best = frame.groupby("start")["impact_mean_abs"].max()
            where = _locate(positions, best.index.to_numpy())
            out["raw"][index[where[where >= 0]]] = best.to_numpy()[where >= 0]
        else:  # tiled: a base scores the strongest tile covering it
            frame = results.to_dataframe(chrom, analysis=method)
            values = np.full(len(positions), np.nan)
            for start, end, score in zip(frame["start"], frame["end"], frame["impact_mean_abs"]):
                lo, hi = np.searchsorted(positions, [start, end])
                if np.isfinite(score):
                    values[lo:hi] = np.fmax(values[lo:hi], score)
            out["raw"][index] = values
    return out


def _locate(sorted_positions: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """For each of ``wanted``, its index in ``sorted_positions`` (-1 when absent)."""
    wanted = np.asarray(wanted, np.int64)
    at = np.searchsorted(sorted_positions, wanted).clip(0, max(len(sorted_positions) - 1, 0))
    found = len(sorted_positions) > 0
    return np.where(found & (sorted_positions[at] == wanted), at, -1) if found else np.full(len(wanted), -1)


def _motif_scores(
    store: Path, method: str, config: BenchmarkConfig, table: pd.DataFrame, regions: list[str], database
) -> tuple[np.ndarray, float, int]:
    """Per evaluated base, the motif pipeline's score (:class:`~screening.demo.benchmark.config.MotifsEntry`),
    the seconds the pipeline took, and how many motifs matched."""
    from screening.interpret.motifs import find_motifs
    from screening.store.reader import open_results

    settings, source = config.motifs, METHODS[method]["source"]
    began = time.perf_counter()
    found = find_motifs(
        open_results(store),
        analysis=source,
        regions=regions,
        database=database,
        threshold=settings.threshold,
        min_seqlets=settings.min_seqlets,
    )
    seconds = time.perf_counter() - began
    matched = matching_motifs(found.motifs, settings)
    return seqlet_scores(matched, table), seconds, len(matched)


def matching_motifs(motifs: list, settings: MotifsEntry) -> list:
    """The motifs whose best JASPAR match is named in ``settings.match`` with ``q <= settings.q_value``."""
    wanted = {name.upper() for name in settings.match}
    return [
        m for m in motifs if m.best is not None and m.best.name.upper() in wanted and m.best.q_value <= settings.q_value
    ]


def seqlet_scores(motifs: list, table: pd.DataFrame) -> np.ndarray:
    """Per evaluated base of ``table``: the largest attribution of a seqlet of ``motifs`` over it (over
    the motif's aligned columns on the genome where clustering set them), else 0."""
    scores = np.zeros(len(table))
    for chrom, rows in table.groupby("chrom", sort=False):
        index, positions = rows.index.to_numpy(), rows["pos"].to_numpy()
        for seqlet in (s for m in motifs for s in m.seqlets if s.chrom == chrom):
            start = seqlet.start if seqlet.motif_start is None else seqlet.motif_start
            end = seqlet.end if seqlet.motif_end is None else seqlet.motif_end
            lo, hi = np.searchsorted(positions, [start, end])
            scores[index[lo:hi]] = np.fmax(scores[index[lo:hi]], seqlet.attribution)
    return scores


def _jaspar(config: BenchmarkConfig):
    """The JASPAR matrices the ``motifs_*`` methods match against (``None`` when none runs); a bad
    collection or group fails here, before any screen."""
    if not any(METHODS[m]["kind"] == "motifs" for m in config.method_names):
        return None
    from screening.core.errors import ScreeningError
    from screening.interpret.motifs import load_jaspar

    try:
        return load_jaspar(config.motifs.collection, config.motifs.tax_group)
    except ScreeningError as err:
        raise BenchmarkError(f"motifs: {err}") from None


def _applicable(
    checkpoint: Path,
    config: BenchmarkConfig,
    genome: SyntheticGenome,
    regions: list[str],
    skipped: dict[str, str],
    tag: str,
) -> list[str]:
    """The configured methods this model can run; the others (DeepLIFT on attention) go to ``skipped``."""
    from screening.core.errors import ScreeningError
    from screening.interpret.attribution import check_attributions
    from screening.models.corigami import CorigamiAdapter
    from screening.spec import parse_spec

    adapter = CorigamiAdapter.from_checkpoint(checkpoint)
    kept = []
    for method in config.method_names:
        if METHODS[method]["kind"] == "motifs":
            continue  # below: each follows its source
        if METHODS[method]["kind"] == "attribution":
            spec = parse_spec(_screen_spec(genome, checkpoint, [method], config, regions, Path("unused.zarr")))
            try:
                check_attributions(spec, adapter)
            except ScreeningError as err:
                skipped[f"{tag}/{method}"] = str(err).split(": ", 2)[-1]
                continue
        kept.append(method)
    for method in config.method_names:
        if METHODS[method]["kind"] == "motifs":
            if METHODS[method]["source"] in kept:
                kept.append(method)
            else:
                skipped[f"{tag}/{method}"] = f"its source {METHODS[method]['source']} did not run"
    return kept


class _Runner:
    """Runs screens: all of a model's methods in one screen, or (for the cost model) one screen each, timed."""

    def __init__(self, genome, config, regions, outdir, run_screen, timings, say) -> None:
        self.genome, self.config, self.regions, self.outdir = genome, config, regions, outdir
        self.run_screen, self.timings, self.say = run_screen, timings, say

    def _one(self, tag: str, checkpoint: Path, methods: list[str], name: str):
        from screening.spec import parse_spec

        store = self.outdir / "stores" / tag / f"{name}.zarr"
        raw = _screen_spec(self.genome, checkpoint, methods, self.config, self.regions, store)
        spec_path = self.outdir / "specs" / tag / f"{name}.yaml"
        spec_path.parent.mkdir(parents=True, exist_ok=True)
        spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        began = time.perf_counter()
        summary = self.run_screen(parse_spec(raw, source=str(spec_path)), progress=False)
        self.say(f"{tag} {name}: {time.perf_counter() - began:.1f} s")
        return store, summary, time.perf_counter() - began

    def run(self, tag: str, checkpoint: Path, methods: list[str], separately: bool) -> dict[str, Path]:
        if not separately:
            store, _, _ = self._one(tag, checkpoint, methods, "all_methods")
            return dict.fromkeys(methods, store)
        # the fixed cost of a screen (Ray job, worker start, model load, store): one mask of one tile
        if "overhead" not in self.timings:
            _, _, seconds = self._one(tag, checkpoint, [], "overhead")
            self.timings["overhead"] = seconds
        stores = {}
        for method in methods:
            store, summary, seconds = self._one(tag, checkpoint, [method], method)
            key = f"{tag}/{method}"
            if summary.n_computed or key not in self.timings:
                self.timings[key] = {"seconds": seconds, "n_items": summary.n_perturbations}
            stores[method] = store
        return stores


# --------------------------------------------------------------------------- the benchmark


def benchmark_methods(
    config: BenchmarkConfig,
    outdir: str | Path,
    run_screen: RunScreen,
    base: str | Path = ".",
    log: Callable[[str], None] | None = print,
) -> BenchmarkResult:
    """Run every configured method on every model (and randomised copies) and write the tables.

    Parameters
    ----------
    config
        The benchmark (:func:`~screening.demo.benchmark.config.load_benchmark_config`).
    outdir
        Output folder (created; stores of an earlier run of the same config are resumed).
    run_screen
        The screen runner, ``workers.driver.run_screen`` (``(spec, progress=...) -> ScreenSummary``).
    base
        Folder that relative paths in ``config`` start from.
    log
        Progress lines; ``None`` for silence.

    Returns
    -------
    BenchmarkResult
    """

    say = log or (lambda _line: None)
    base, outdir = Path(base), Path(outdir)
    checkpoints = {}
    for entry in config.models:
        path = (base / entry.checkpoint).resolve()
        if not path.is_file():
            raise BenchmarkError(f"models: {entry.name}: checkpoint {path} does not exist")
        checkpoints[entry.name] = path
    database = _jaspar(config)
    genome = _genome(config, base, outdir, say)
    window = max(_window(p) for p in checkpoints.values())
    sites, regions = select_regions(genome, config, window)
    excluded = (
        low_information_positions([_as_truth(s) for s in genome.sites], config.min_information)
        if config.min_information is not None
        else set()
    )
    table = position_table(genome.sites, regions, excluded)
    outdir.mkdir(parents=True, exist_ok=True)
    runs: list[tuple[str, str, Path]] = [(name, "trained", path) for name, path in checkpoints.items()]
    if config.randomisation is not None:
        for name in config.randomised_models:
            written = randomised_checkpoints(
                checkpoints[name], config.randomisation.levels, config.randomisation.seed, outdir / "models"
            )
            runs += [(name, level, path) for level, path in written.items()]
    region_strings = [f"{c}:{s}-{e}" for c, s, e in regions]
    timings_path = outdir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    maps: dict[tuple[str, str, str, str], np.ndarray] = {}  # (model, level, method, variant) -> per-base scores
    completeness: dict[tuple[str, str], float] = {}
    skipped: dict[str, str] = {}
    runner = _Runner(genome, config, region_strings, outdir, run_screen, timings, say)
    for model, level, checkpoint in runs:
        tag = model if level == "trained" else f"{model}_rand_{level}"
        methods = _applicable(checkpoint, config, genome, region_strings, skipped, tag)
        timed = level == "trained" and model == config.cost_model
        screened = [m for m in methods if METHODS[m]["kind"] != "motifs"]
        stores = runner.run(tag, checkpoint, screened, separately=timed)
        for method in methods:
            if METHODS[method]["kind"] == "motifs":
                source = METHODS[method]["source"]
                found, seconds, n_matched = _motif_scores(
                    stores[source], method, config, table, region_strings, database
                )
                maps[(model, level, method, "raw")] = found
                say(f"{tag} {method}: {n_matched} motif(s) matching {config.motifs.match}, {seconds:.1f} s")
                if timed and f"{tag}/{source}" in timings:  # its cost: the source's screen plus the pipeline
                    timings[f"{tag}/{method}"] = {
                        **timings[f"{tag}/{source}"],
                        "motif_seconds": seconds,
                        "seconds": timings[f"{tag}/{source}"]["seconds"] + seconds,
                    }
                continue
            scores = _read_scores(stores[method], method, table)
            for variant in ("raw", "corr"):
                if variant in scores:
                    maps[(model, level, method, variant)] = scores[variant]
            if level == "trained" and "completeness" in scores and np.isfinite(scores["completeness"]).any():
                completeness[(model, method)] = float(np.nanmean(scores["completeness"]))
    timings_path.write_text(json.dumps(timings, indent=2) + "\n")
    results = _long_table(maps, table)
    summary = _summary(results, maps, table, config, completeness, timings, len(regions))
    files = _write(outdir, results, summary, config, genome, regions, table, timings, skipped)
    return BenchmarkResult(results, summary, files)


def _as_truth(site: Site):
    from screening.interpret.evaluate import TruthElement

    return TruthElement(site.chrom, site.start, site.end, site.role, site.strand)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _variant_name(method: str, variant: str) -> str:
    return method if variant == "raw" else f"{method}+corr"


def _long_table(maps: dict, table: pd.DataFrame) -> pd.DataFrame:
    """AUROC/AUPR per trained model × method × variant × level × stratum."""
    rows = []
    labels, strata = table["label"].to_numpy(), table["stratum"].to_numpy(object)
    keep = ~table["excluded"].to_numpy()
    for (model, level, method, variant), scores in maps.items():
        if level != "trained":
            continue
        name = _variant_name(method, variant)
        for row in discrimination(scores[keep], labels[keep], strata[keep]):
            rows.append({"model": model, "method": name, "level": "base", **row})
        elements = element_scores(table, scores)
        for row in discrimination(
            elements["score"].to_numpy(), elements["label"].to_numpy(), elements["stratum"].to_numpy(object)
        ):
            rows.append({"model": model, "method": name, "level": "element", **row})
    return pd.DataFrame(rows)


def _summary(
    results: pd.DataFrame,
    maps: dict,
    table: pd.DataFrame,
    config: BenchmarkConfig,
    completeness: dict,
    timings: dict,
    n_regions: int,
) -> pd.DataFrame:
    """Per method × variant, means over the trained models; cost from the cost model's own screens."""
    rows = []
    n_bases = len(table)
    for method in config.method_names:
        for variant in ("raw", "corr"):
            name = _variant_name(method, variant)
            mine = results[results["method"] == name]
            if mine.empty:
                continue
            row: dict[str, Any] = {"method": name}
            for level in ("base", "element"):
                overall = mine[(mine["level"] == level) & (mine["stratum"] == "all")]
                row[f"{level}_auroc"] = overall["auroc"].mean()
                row[f"{level}_aupr"] = overall["aupr"].mean()
            element = mine[mine["level"] == "element"]
            for stratum in _STRATA:
                row[f"auroc_{stratum}"] = element[element["stratum"] == stratum]["auroc"].mean()
            trained = {
                m: v for (m, lv, me, va), v in maps.items() if lv == "trained" and me == method and va == variant
            }
            row["consistency"] = consistency(trained)
            row.update(_randomisation(maps, method, variant, config))
            values = [v for (m, me), v in completeness.items() if me == method]
            row["completeness_error"] = float(np.mean(values)) if values and variant == "raw" else float("nan")
            row["forward"], row["backward"] = _passes(method, config, table, n_regions)
            cost = timings.get(f"{config.cost_model}/{method}")
            # wall time of the method's own screen, its fixed cost (timings["overhead"]) included
            row["seconds"] = cost["seconds"] if cost else float("nan")
            row["ms_per_base"] = 1000 * row["seconds"] / n_bases
            rows.append(row)
    return pd.DataFrame(rows)


def _randomisation(maps: dict, method: str, variant: str, config: BenchmarkConfig) -> dict[str, Any]:
    if config.randomisation is None:
        return {}
    checks = []
    for model in config.randomised_models:
        original = maps.get((model, "trained", method, variant))
        randomised = {
            lv: maps[(model, lv, method, variant)]
            for lv in config.randomisation.levels
            if (model, lv, method, variant) in maps
        }
        if original is not None and randomised:
            checks.append(randomisation_check(original, randomised, config.randomisation.threshold))
    if not checks:
        return {}
    out = {key: _nanmean([c[key] for c in checks]) for key in checks[0] if key != "flagged"}
    out["flagged"] = any(c["flagged"] for c in checks)
    return out


# --------------------------------------------------------------------------- output


def _markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    def cell(value) -> str:
        if isinstance(value, (bool, np.bool_)):
            return "**yes**" if value else "no"
        if isinstance(value, (float, np.floating)):
            return "—" if not np.isfinite(value) else (f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}")
        return str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def not_run_note(skipped: dict[str, str]) -> str:
    """The summary's ``not run:`` list: runs (``model/method``) that share a reason on one line, in order."""
    by_reason: dict[str, list[str]] = {}
    for run, reason in sorted(skipped.items()):
        by_reason.setdefault(reason, []).append(run)
    return "not run:\n" + "\n".join(f"- {', '.join(runs)}: {reason}" for reason, runs in by_reason.items())


def _write(
    outdir: Path,
    results: pd.DataFrame,
    summary: pd.DataFrame,
    config: BenchmarkConfig,
    genome: SyntheticGenome,
    regions: list,
    table: pd.DataFrame,
    timings: dict,
    skipped: dict[str, str],
) -> dict[str, Path]:
    import torch

    from screening.core.version import __version__

    files = {
        "results": outdir / "results.tsv",
        "summary": outdir / "summary.tsv",
        "markdown": outdir / "summary.md",
        "meta": outdir / "benchmark.json",
    }
    results.to_csv(files["results"], sep="\t", index=False, float_format="%.4f")
    summary.to_csv(files["summary"], sep="\t", index=False, float_format="%.4f")
    counts = table[table["element"] >= 0].drop_duplicates("element")["stratum"].value_counts().to_dict()
    excluded = int(table["excluded"].sum())
    note = (
        f"{len(table):,} bases in {len(regions)} regions; elements per stratum: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + (
            f"; per-base metrics leave out {excluded} motif bases below {config.min_information} bits"
            if config.min_information is not None
            else "; every base evaluated (no information-content threshold)"
        )
    )
    if "overhead" in timings:
        note += (
            f"; seconds: wall time of each method's own screen on {config.cost_model}, including the "
            f"{timings['overhead']:.0f} s a 1 bp screen takes (Ray job, worker start, model load)"
        )
    if skipped:
        note += "\n\n" + not_run_note(skipped)
    files["markdown"].write_text(f"{note}\n\n" + _markdown(summary) + "\n")
    meta = {
        "config": config.model_dump(),
        "genome": str(genome.root),
        "synthetic": genome.config.to_dict(),
        "regions": [f"{c}:{s}-{e}" for c, s, e in regions],
        "n_bases": len(table),
        "elements": counts,
        "excluded_bases": excluded,
        "timings": timings,
        "skipped": skipped,
        "versions": {
            "screening": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    files["meta"].write_text(json.dumps(meta, indent=2, default=str) + "\n")
    files.update(_figures(outdir / "figures", summary))
    return files


def _figures(folder: Path, summary: pd.DataFrame) -> dict[str, Path]:
    from screening.report.plot import _save, plt

    folder.mkdir(parents=True, exist_ok=True)
    columns = [f"auroc_{s}" for s in _STRATA]
    values = summary[columns].to_numpy(float)
    fig, ax = plt.subplots(figsize=(1.0 * len(columns) + 3, 0.32 * len(summary) + 1.5), constrained_layout=True)
    image = ax.imshow(values, vmin=0, vmax=1, cmap="RdBu_r", aspect="auto")
    ax.set_xticks(range(len(columns)), list(_STRATA), rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(summary)), summary["method"], fontsize=8)
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    ax.set_title("element-level AUROC by stratum (mean over models)", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    heatmap = _save(fig, folder / "auroc_by_stratum.png")
    fig, ax = plt.subplots(figsize=(0.45 * len(summary) + 2, 3.5), constrained_layout=True)
    ax.bar(range(len(summary)), summary["base_aupr"], color="#1f5fa8")
    ax.set_xticks(range(len(summary)), summary["method"], rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title("base-level AUPR (mean over models)", fontsize=9)
    bars = _save(fig, folder / "base_aupr.png")
    return {"heatmap": heatmap, "bars": bars}
