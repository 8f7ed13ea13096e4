"""First-layer convolution filters read as position weight matrices (``screening filters``, ``docs/filters_attention.md``).

The Basset / Koo-lab procedure: for every filter of a layer that sees one-hot DNA, the genome
positions where its activation exceeds ``threshold`` × its maximum over the sampled windows are
collected, the input subsequences under them (the activation's receptive field) are aligned and
counted into a position probability matrix (PPM), and the PPM is matched to JASPAR with TOMTOM
(:mod:`screening.interpret.motifs.jaspar`). A filter's *influence* is how much the predicted map
changes when its output is replaced by its mean activation (a forward hook), scored with a map
score of :mod:`screening.maps.score`.

>>> from screening.interpret.filters import filter_motifs, write_filter_outputs
>>> result = filter_motifs(adapter, genome, tracks, windows)            # doctest: +SKIP
>>> write_filter_outputs(result, "filters/")                            # doctest: +SKIP
"""

from __future__ import annotations

import html
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from screening.compute.engine import load_span, stack_spans
from screening.core.errors import ScreeningError
from screening.interpret.motifs.core import JasparMatch
from screening.interpret.motifs.jaspar import JasparDatabase, match_motifs
from screening.models.base import ModelAdapter
from screening.store.export import atomic_path

__all__ = [
    "FILTER_OUTPUTS",
    "FilterError",
    "FilterLayer",
    "FilterResult",
    "FilterSummary",
    "Window",
    "ablate_filters",
    "capture_layer",
    "centred_window",
    "filter_table",
    "sample_windows",
    "filter_motifs",
    "filter_ppms",
    "information_content",
    "resolve_layer",
    "write_filter_outputs",
]

FILTER_OUTPUTS = ("filters.tsv", "filters.meme", "logos/", "report.md")


class FilterError(ScreeningError, ValueError):
    """Filters that cannot be read: a model without an accessible first sequence layer, an unknown layer name,
    a layer the DNA does not reach, or a bad setting."""


class _Stop(Exception):
    """Raised by a capture hook: the rest of the forward pass is not needed."""


@dataclass(frozen=True)
class Window:
    """A model input window ``chrom:[start, start + window_length)`` (0-based)."""

    chrom: str
    start: int


@dataclass(frozen=True)
class FilterLayer:
    """The layer read as filters and its geometry on the input.

    Attributes
    ----------
    name
        Its name in the model's ``named_modules``.
    module
        The module whose output ``[N, filters, positions]`` holds the activations.
    width
        bp one activation sees (its receptive field).
    stride
        bp between consecutive activations.
    offset
        Input position of the first base activation 0 sees (negative: it starts in the padding).
    """

    name: str
    module: nn.Module
    width: int
    stride: int
    offset: int


@dataclass
class FilterSummary:
    """One filter: its sites, PPM (``float64 [4, width]``, rows A, C, G, T), JASPAR matches and influence."""

    index: int
    n_sites: int
    max_activation: float
    mean_activation: float
    ppm: np.ndarray = field(repr=False)
    matches: list[JasparMatch] = field(default_factory=list)
    influence: float = float("nan")

    @property
    def information(self) -> float:
        """Total information content of the PPM in bits (0 without sites)."""
        return information_content(self.ppm) if self.n_sites else 0.0

    @property
    def best(self) -> JasparMatch | None:
        return self.matches[0] if self.matches else None


@dataclass
class FilterResult:
    """What :func:`filter_motifs` found, ready for :func:`write_filter_outputs`."""

    layer: str
    width: int
    stride: int
    threshold: float
    windows: list[Window]
    influence_windows: list[Window]
    score: str
    database: str
    filters: list[FilterSummary]
    jaspar: dict = field(default_factory=dict, repr=False)  # matrix_id -> (name, ppm) of best matches


def centred_window(region, chrom_sizes: dict[str, int], length: int) -> Window:
    """The model window centred on ``region`` (a :class:`~screening.core.regions.Region`), moved inside its chromosome.

    Raises
    ------
    FilterError
        If the chromosome is shorter than one window.
    """
    size = chrom_sizes[region.chrom]
    if size < length:
        raise FilterError(
            f"region {region}: {region.chrom} ({size:,} bp) is shorter than the model window ({length:,} bp)"
        )
    centre = (region.start + region.end) // 2
    return Window(region.chrom, int(min(max(centre - length // 2, 0), size - length)))


def sample_windows(regions, chrom_sizes: dict[str, int], length: int, n: int, seed: int = 0) -> list[Window]:
    """``n`` model windows centred on uniformly drawn positions of ``regions`` (moved inside their chromosomes),
    sorted; the same ``seed`` gives the same windows.

    Raises
    ------
    FilterError
        Without regions, for ``n < 1``, or a chromosome shorter than one window.
    """
    from screening.core.regions import Region

    regions = [r for r in regions if r.end > r.start]
    if not regions or n < 1:
        raise FilterError("filters need at least one non-empty region and one window")
    for region in regions:
        centred_window(region, chrom_sizes, length)  # a chromosome shorter than a window fails by name
    rng = np.random.default_rng(seed)
    sizes = np.array([r.end - r.start for r in regions], np.float64)
    picks = rng.choice(len(regions), size=n, p=sizes / sizes.sum())
    windows = []
    for i in picks:
        region = regions[i]
        centre = int(rng.integers(region.start, region.end))
        windows.append(centred_window(Region(region.chrom, centre, centre + 1), chrom_sizes, length))
    return sorted(windows, key=lambda w: (w.chrom, w.start))


# --------------------------------------------------------------------------- the layer


def _module_name(model: nn.Module, target: nn.Module) -> str:
    return next((name for name, m in model.named_modules() if m is target), "?")


def _conv_geometry(conv: nn.Conv1d) -> tuple[int, int, int]:
    if isinstance(conv.padding, str):
        pad = 0 if conv.padding == "valid" else (conv.dilation[0] * (conv.kernel_size[0] - 1)) // 2
    else:
        pad = conv.padding[0]
    return conv.dilation[0] * (conv.kernel_size[0] - 1) + 1, conv.stride[0], -pad


def resolve_layer(adapter: ModelAdapter, layer: str | None = None, probe_seed: int = 0) -> FilterLayer:
    """The layer read as filters: ``layer`` (a name of ``adapter.module.named_modules()``) or, by default,
    :meth:`~screening.models.base.ModelAdapter.first_sequence_layer`.

    The first sequence layer's geometry comes from its kernel, stride, padding and dilation. A deeper
    layer's receptive field is measured: the support of the input gradient of one activation (union over
    a few random sequences), which for a stack of convolutions is the receptive field.

    Raises
    ------
    FilterError
        A model without an accessible first sequence layer, an unknown name, or a layer the DNA does not reach.
    """
    first = adapter.first_sequence_layer()
    if layer is None:
        if first is None:
            raise FilterError(
                f"model {adapter.name!r} has no accessible first sequence layer (an nn.Conv1d reading the one-hot "
                "DNA); name one with --layer, or give its adapter a first_sequence_layer()"
            )
        return FilterLayer(_module_name(adapter.module, first), first, *_conv_geometry(first))
    modules = dict(adapter.module.named_modules())
    if layer not in modules or not layer:
        convs = [name for name, m in modules.items() if isinstance(m, nn.Conv1d)][:8]
        raise FilterError(f"model {adapter.name!r} has no layer {layer!r}; its 1-D convolutions include {convs}")
    module = modules[layer]
    if module is first:
        return FilterLayer(layer, module, *_conv_geometry(first))
    return FilterLayer(layer, module, *_measured_geometry(adapter, layer, module, probe_seed))


def _dna_gradient_support(
    adapter: ModelAdapter, module: nn.Module, codes: np.ndarray, tracks: np.ndarray | None, layer: str
) -> tuple[np.ndarray, int]:
    encoding = adapter.position_encoding()
    if encoding is None:
        raise FilterError(f"model {adapter.name!r}: a deeper layer needs a position-wise input (position_encoding)")
    inputs = adapter.build_input(codes, tracks).detach().clone().requires_grad_(True)
    with torch.enable_grad(), capture_layer(module) as captured:
        try:
            adapter.forward(inputs)
        except _Stop:
            pass
    out = captured.get("out")
    if out is None or out.dim() != 3:
        raise FilterError(f"layer {layer!r} gives no [N, channels, positions] output")
    centre = out.shape[-1] // 2
    out[0, :, centre].sum().backward()
    n_dna = int(np.asarray(encoding.table).shape[1])  # DNA channels come first, then the tracks
    grad = inputs.grad[0].abs()
    dna = grad[:n_dna] if encoding.length_axis == 2 else grad[:, :n_dna]
    per_position = dna.sum(dim=0 if encoding.length_axis == 2 else 1)  # over the DNA channels
    return per_position.cpu().numpy(), out.shape[-1]


def _measured_geometry(adapter: ModelAdapter, layer: str, module: nn.Module, seed: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(seed)
    length = adapter.geometry.window_length
    n_tracks = len(adapter.track_names)
    support = np.zeros(length, bool)
    n_out = 0
    for _ in range(4):  # several sequences: a ReLU that is off for one input is on for another
        codes = rng.integers(0, 4, (1, length), dtype=np.uint8)
        tracks = rng.random((1, n_tracks, length), dtype=np.float32) if n_tracks else None
        grad, n_out = _dna_gradient_support(adapter, module, codes, tracks, layer)
        support |= grad > 0
    if not support.any():
        raise FilterError(f"layer {layer!r} does not see the DNA input (no gradient reaches it)")
    stride = max(1, round(length / n_out))
    lo, hi = np.flatnonzero(support)[[0, -1]]
    return int(hi - lo + 1), stride, int(lo) - (n_out // 2) * stride


# --------------------------------------------------------------------------- activations


@contextmanager
def capture_layer(module: nn.Module, stop: bool = True) -> Iterator[dict]:
    """Record ``module``'s output in the yielded dict (key ``"out"``); with ``stop`` the forward pass is cut there."""
    captured: dict = {}

    def hook(_module, _inputs, output):
        captured["out"] = output
        if stop:
            raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@torch.no_grad()
def _activations(adapter: ModelAdapter, layer: FilterLayer, codes: np.ndarray, tracks: np.ndarray | None) -> np.ndarray:
    """``float32 [B, filters, positions]`` of the layer for a batch of windows (the forward strand only, for a
    model that runs every window with its reverse complement in one batch)."""
    with capture_layer(layer.module) as captured:
        try:
            adapter.forward(adapter.build_input(codes, tracks))
        except _Stop:
            pass
    out = captured.get("out")
    if not isinstance(out, torch.Tensor) or out.dim() != 3:
        raise FilterError(f"layer {layer.name!r} gives no [N, filters, positions] output")
    repeat = out.shape[0] // len(codes)
    return out[::repeat].float().cpu().numpy()


def _valid_positions(layer: FilterLayer, n_positions: int, length: int) -> np.ndarray:
    starts = np.arange(n_positions) * layer.stride + layer.offset
    return (starts >= 0) & (starts + layer.width <= length)


def _batches(genome, tracks, windows: Sequence[Window], length: int, batch_size: int):
    for i in range(0, len(windows), batch_size):
        spans = [load_span(genome, tracks, w.chrom, w.start, w.start + length) for w in windows[i : i + batch_size]]
        yield stack_spans(spans)


def filter_ppms(
    adapter: ModelAdapter,
    layer: FilterLayer,
    genome,
    tracks,
    windows: Sequence[Window],
    threshold: float = 0.5,
    batch_size: int = 4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Counts of the subsequences under each filter's strong activations (two passes over ``windows``).

    Pass 1 finds each filter's maximum and mean activation; pass 2 counts the bases under every activation
    above ``threshold × maximum`` (a filter whose maximum is ≤ 0 gets no sites). Memory: one batch of
    activations plus ``filters × width × 4`` counts.

    Returns
    -------
    counts, n_sites, maxima, means
        ``float64 [filters, 4, width]`` base counts (A, C, G, T; N not counted), ``int [filters]``,
        ``float [filters]``, ``float [filters]``.
    """
    if not 0 < threshold < 1:
        raise FilterError(f"threshold must lie in (0, 1), got {threshold}")
    length = adapter.geometry.window_length
    maxima = sums = None
    n_values = 0
    for codes, values in _batches(genome, tracks, windows, length, batch_size):
        act = _activations(adapter, layer, codes, values)
        act = act[:, :, _valid_positions(layer, act.shape[-1], length)]
        batch_max = act.max(axis=(0, 2)).astype(np.float64)
        maxima = batch_max if maxima is None else np.maximum(maxima, batch_max)
        batch_sum = act.sum(axis=(0, 2), dtype=np.float64)
        sums = batch_sum if sums is None else sums + batch_sum
        n_values += act.shape[0] * act.shape[2]
    if maxima is None or n_values == 0:
        raise FilterError(f"no activation of layer {layer.name!r} sees a whole {layer.width} bp site in these windows")
    n_filters = len(maxima)
    counts = np.zeros((n_filters, layer.width * 5), np.float64)
    n_sites = np.zeros(n_filters, np.int64)
    cut = np.where(maxima > 0, threshold * maxima, np.inf)
    columns = np.arange(layer.width)
    for codes, values in _batches(genome, tracks, windows, length, batch_size):
        act = _activations(adapter, layer, codes, values)
        valid = _valid_positions(layer, act.shape[-1], length)
        for b in range(len(codes)):
            for f in range(n_filters):
                positions = np.flatnonzero((act[b, f] > cut[f]) & valid)
                if not len(positions):
                    continue
                bases = codes[b][(positions * layer.stride + layer.offset)[:, None] + columns]  # [sites, width]
                counts[f] += np.bincount((columns * 5 + bases).ravel(), minlength=layer.width * 5)
                n_sites[f] += len(positions)
    counts = counts.reshape(n_filters, layer.width, 5)[:, :, :4].transpose(0, 2, 1)
    return counts, n_sites, maxima, sums / n_values


def information_content(ppm: np.ndarray) -> float:
    """Total information content (bits, uniform background) of a PPM ``[4, width]``."""
    p = np.clip(np.asarray(ppm, np.float64), 1e-12, 1)
    return float((2 + (p * np.log2(p)).sum(axis=0)).sum())


def _to_ppm(counts: np.ndarray, pseudocount: float = 0.01) -> np.ndarray:
    counts = counts + pseudocount
    return counts / counts.sum(axis=0, keepdims=True)


# --------------------------------------------------------------------------- influence


@contextmanager
def _replace_with_mean(module: nn.Module, filters: torch.Tensor, means: torch.Tensor) -> Iterator[None]:
    """Sample ``i`` of the batch gets filter ``filters[i]``'s output replaced by ``means[i]`` (``-1``: untouched).
    A model that runs k copies of each input (reverse complements) sees each entry k times in a row."""

    def hook(_module, _inputs, output):
        repeat = output.shape[0] // len(filters)
        chosen = filters.repeat_interleave(repeat).to(output.device)
        rows = torch.nonzero(chosen >= 0).flatten()
        output = output.clone()
        output[rows, chosen[rows]] = means.repeat_interleave(repeat).to(output.device, output.dtype)[rows, None]
        return output

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def ablate_filters(
    adapter: ModelAdapter,
    layer: FilterLayer,
    codes: np.ndarray,
    tracks: np.ndarray | None,
    means: np.ndarray,
    score: str = "impact_mean_abs",
    batch_size: int = 4,
) -> np.ndarray:
    """Influence of every filter on one window's predicted map: ``score(reference map, map with the filter's output
    replaced by its mean activation)``, batched over filters.

    Parameters
    ----------
    codes, tracks
        One window: ``uint8 [L]`` and ``float32 [n_tracks, L]`` (or ``None``).
    means
        Each filter's mean activation (:func:`filter_ppms`).

    Returns
    -------
    numpy.ndarray
        ``float64 [filters]``.
    """
    from screening.maps.score import SCORES

    if score not in SCORES or SCORES[score].needs:
        usable = sorted(name for name, s in SCORES.items() if not s.needs)
        raise FilterError(f"score {score!r} cannot rank filters; choose one of {usable}")
    func = SCORES[score].func
    single = adapter.build_input(codes[None], None if tracks is None else tracks[None])
    with torch.no_grad():
        reference = adapter.predict_inputs(single)
    out = np.empty(len(means), np.float64)
    for lo in range(0, len(means), batch_size):
        chosen = torch.arange(lo, min(lo + batch_size, len(means)))
        inputs = single.expand(len(chosen), *single.shape[1:]).contiguous()
        with _replace_with_mean(layer.module, chosen, torch.as_tensor(means[chosen.numpy()], dtype=torch.float32)):
            maps = adapter.predict_inputs(inputs)
        out[lo : lo + len(chosen)] = func(np.repeat(reference, len(chosen), axis=0), maps)
    return out


# --------------------------------------------------------------------------- the whole procedure


def filter_motifs(
    adapter: ModelAdapter,
    genome,
    tracks,
    windows: Sequence[Window],
    *,
    layer: str | None = None,
    threshold: float = 0.5,
    influence_windows: int = 4,
    score: str = "impact_mean_abs",
    database: JasparDatabase | None = None,
    batch_size: int = 4,
    n_jobs: int = 1,
) -> FilterResult:
    """Every filter of ``layer`` (default: the first sequence layer) as a PPM, matched to JASPAR, with its influence.

    Parameters
    ----------
    adapter, genome, tracks
        The model and its inputs (:class:`~screening.io.genome.Genome`, :class:`~screening.io.tracks.TrackSet`).
    windows
        Model windows whose activations are read (sampled from the regions of interest).
    layer
        A module name of ``adapter.module`` to read instead of the first sequence layer.
    threshold
        Fraction of a filter's maximum activation a site must exceed (Basset: 0.5).
    influence_windows
        Windows (the first of ``windows``) over which each filter's influence is averaged; 0 skips it.
    score
        Map score of the influence (a key of :data:`screening.maps.score.SCORES` that needs no context).
    database
        JASPAR matrices (default: CORE vertebrates of the default release).

    Raises
    ------
    FilterError
        For a model without an accessible first sequence layer, an unknown layer or score, a bad threshold, no windows.
    """
    from screening.interpret.motifs.jaspar import load_jaspar

    if not windows:
        raise FilterError("no windows to read the filters on")
    if influence_windows < 0:
        raise FilterError(f"influence_windows must be >= 0, got {influence_windows}")
    resolved = resolve_layer(adapter, layer)
    db = database or load_jaspar()
    counts, n_sites, maxima, means = filter_ppms(adapter, resolved, genome, tracks, windows, threshold, batch_size)
    filters = [
        FilterSummary(i, int(n_sites[i]), float(maxima[i]), float(means[i]), _to_ppm(counts[i]))
        for i in range(len(n_sites))
    ]
    found = [f for f in filters if f.n_sites]
    for summary, matches in zip(found, match_motifs([f.ppm for f in found], db, n_jobs=n_jobs)):
        summary.matches = matches
    used = list(windows[:influence_windows])
    if used:
        total = np.zeros(len(filters))
        for codes, values in _batches(genome, tracks, used, adapter.geometry.window_length, 1):
            total += ablate_filters(
                adapter, resolved, codes[0], None if values is None else values[0], means, score, batch_size
            )
        for summary, value in zip(filters, total / len(used)):
            summary.influence = float(value)
    index = {matrix_id: i for i, matrix_id in enumerate(db.ids)}
    jaspar = {f.best.matrix_id: (f.best.name, db.ppms[index[f.best.matrix_id]]) for f in filters if f.best}
    return FilterResult(
        resolved.name,
        resolved.width,
        resolved.stride,
        threshold,
        list(windows),
        used,
        score,
        db.describe(),
        filters,
        jaspar,
    )


# --------------------------------------------------------------------------- outputs


def filter_table(result: FilterResult) -> pd.DataFrame:
    """One row per filter, most influential first: sites, information, best JASPAR match with q, influence."""
    rows = []
    for f in result.filters:
        best = f.best
        rows.append(
            {
                "filter": f.index,
                "n_sites": f.n_sites,
                "information_bits": round(f.information, 3),
                "max_activation": f.max_activation,
                "mean_activation": f.mean_activation,
                "best_id": best.matrix_id if best else "",
                "best_name": best.name if best else "",
                "best_orientation": best.orientation if best else "",
                "best_p": best.p_value if best else np.nan,
                "best_q": best.q_value if best else np.nan,
                "influence": f.influence,
            }
        )
    table = pd.DataFrame(rows)
    order = np.lexsort((table["filter"].to_numpy(), -np.nan_to_num(table["influence"].to_numpy(), nan=-np.inf)))
    return table.iloc[order].reset_index(drop=True)


def _meme_text(result: FilterResult) -> str:
    from screening.interpret.motifs.output import MEME_HEADER

    lines = list(MEME_HEADER)
    for f in result.filters:
        if not f.n_sites:
            continue
        label = f"filter_{f.index}" + (f" {f.best.name}" if f.best else "")
        lines += [
            f"MOTIF {label}",
            f"letter-probability matrix: alength= 4 w= {f.ppm.shape[1]} nsites= {f.n_sites} E= 0",
        ]
        lines += ["  " + "  ".join(f"{v:.6f}" for v in column) for column in f.ppm.T]
        lines.append("")
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def _write_logo(f: FilterSummary, jaspar: dict, path: Path) -> Path:
    from screening.interpret.motifs.output import _information, jaspar_panel, write_logo_panels

    panels = [(_information(f.ppm), f"filter {f.index}: {f.n_sites:,} sites, {f.information:.1f} bits", 0)]
    reference = jaspar_panel(f.best, jaspar)
    return write_logo_panels(panels + ([reference] if reference is not None else []), path)


CAVEATS = (
    "A filter's PPM shows what its strongest activations have in common, not everything it responds to: a filter "
    "can hold a partial motif (other filters or deeper layers complete it), a motif can be spread over several "
    "filters (a distributed representation: no single filter matches it, and removing one barely changes the map), "
    "and a filter can match JASPAR by chance (short or low-information PPMs). Influence is measured on a few "
    "windows with the filter's output replaced by its mean, one filter at a time: redundant filters look "
    "uninfluential each on its own."
)


def _report_md(result: FilterResult, table: pd.DataFrame, logos: dict[int, str]) -> str:
    windows = ", ".join(f"{w.chrom}:{w.start:,}" for w in result.windows[:8])
    more = f" and {len(result.windows) - 8} more" if len(result.windows) > 8 else ""
    lines = [
        "# First-layer filters as motifs",
        "",
        f"Layer `{result.layer}`: {len(result.filters)} filters, each activation sees {result.width} bp "
        f"(stride {result.stride} bp). Sites: activations above {result.threshold:g} × the filter's maximum over "
        f"{len(result.windows)} windows ({windows}{more}; 0-based starts). Matched with TOMTOM against "
        f"{result.database}; q-values are Benjamini–Hochberg over the database's matrices for each filter. "
        f"Influence: mean `{result.score}` between the predicted map and the map with the filter's output replaced "
        f"by its mean activation, over {len(result.influence_windows)} windows.",
        "",
        "| filter | sites | IC (bits) | best JASPAR match | q | influence | logo |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for _, row in table.iterrows():
        match = f"{row['best_id']} {row['best_name']} ({row['best_orientation']})" if row["best_id"] else "-"
        q = f"{row['best_q']:.2g}" if row["best_id"] else "-"
        logo = f"![filter {row['filter']}]({logos[row['filter']]})" if row["filter"] in logos else ""
        lines.append(
            f"| {row['filter']} | {row['n_sites']:,} | {row['information_bits']:.2f} | {html.escape(match)} | "
            f"{q} | {row['influence']:.4g} | {logo} |"
        )
    lines += ["", "## What this can and cannot show", "", CAVEATS, ""]
    return "\n".join(lines)


def write_filter_outputs(result: FilterResult, outdir: str | os.PathLike, logos: bool = True) -> dict[str, Path]:
    """Write ``filters.tsv``, ``filters.meme``, ``logos/filter_<i>.png`` and ``report.md`` (last), each atomically."""
    out = Path(outdir)
    table = filter_table(result)
    written = {
        "table": _write_text(out / "filters.tsv", table.to_csv(sep="\t", index=False, float_format="%.4g")),
        "meme": _write_text(out / "filters.meme", _meme_text(result)),
    }
    pictures: dict[int, str] = {}
    if logos:
        for f in result.filters:
            if f.n_sites:
                path = _write_logo(f, result.jaspar, out / "logos" / f"filter_{f.index}.png")
                pictures[f.index] = f"logos/{path.name}"
    written["report"] = _write_text(out / "report.md", _report_md(result, table, pictures))
    return written
