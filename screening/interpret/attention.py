"""Attention maps of a window with a stability check (``screening attention``, ``docs/filters_attention.md``).

Every ``nn.MultiheadAttention`` the adapter exposes
(:meth:`~screening.models.base.ModelAdapter.attention_modules`) gets a forward pre-hook that
recomputes its weights from the module's own inputs and in-projection, ``softmax(Q Kᵀ / √d_head)``
per head (the model's forward is untouched; models call attention with ``need_weights=False``).
The weights are then checked for stability, because attention is read as an explanation only if
it is a stable property of the prediction:

* **tiny perturbations**: a few random substitutions in quiet stretches (far from every track
  peak) that leave the predicted map essentially unchanged: how much does attention move?
* **reverse complement**: the window's reverse complement (tracks reversed), maps and attention
  flipped back: do they agree?
* **conditioning** of the bin-feature matrix entering attention (condition number, effective
  rank): collinear bin features leave many attention patterns equally good, so the weights are
  ill-determined (the multicollinearity argument).

:func:`attention_report` says plainly when attention is not a reliable explanation of the window
(:class:`Thresholds`).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from screening.core.errors import ScreeningError
from screening.models.base import ModelAdapter
from screening.store.export import atomic_path

__all__ = [
    "ATTENTION_OUTPUTS",
    "AttentionError",
    "AttentionResult",
    "Conditioning",
    "Thresholds",
    "attention_report",
    "attention_layers",
    "attention_weights",
    "capture_attention",
    "conditioning",
    "quiet_substitutions",
    "reverse_complement_window",
    "total_variation",
    "write_attention_outputs",
]

ATTENTION_OUTPUTS = ("attention.npz", "stability.tsv", "attention.png", "report.md")


class AttentionError(ScreeningError, ValueError):
    """Attention that cannot be read: a model without attention layers, or an attention module not supported."""


@dataclass(frozen=True)
class Thresholds:
    """When attention is called unreliable for a window (documented in ``docs/filters_attention.md``).

    Attributes
    ----------
    map_unchanged
        Relative map change ``‖M' − M‖ / ‖M‖`` below which a perturbation leaves the map essentially unchanged.
    attention_changed
        Mean total-variation distance between a head's attention rows above which its attention changed.
    rc_map_agrees, rc_attention_changed
        The same two bounds for the reverse complement (maps flipped back).
    condition
        Condition number of the centred bin-feature matrix above which it is ill-conditioned.
    effective_rank
        Effective rank / ``min(bins, features)`` below which the bin features are collinear.
    """

    map_unchanged: float = 0.01
    attention_changed: float = 0.05
    rc_map_agrees: float = 0.05
    rc_attention_changed: float = 0.2
    condition: float = 1e3
    effective_rank: float = 0.1


# --------------------------------------------------------------------------- capture


def _split_projection(
    mha: nn.MultiheadAttention,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    d = mha.embed_dim
    if mha.in_proj_weight is not None:
        w_q, w_k = mha.in_proj_weight[:d], mha.in_proj_weight[d : 2 * d]
    else:
        w_q, w_k = mha.q_proj_weight, mha.k_proj_weight
    bias = mha.in_proj_bias
    return w_q, w_k, None if bias is None else bias[:d], None if bias is None else bias[d : 2 * d]


def attention_weights(
    mha: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The per-head weights ``softmax(Q Kᵀ / √d_head)`` an ``nn.MultiheadAttention`` computes for these inputs.

    Parameters
    ----------
    query, key
        The module's inputs (``[B, L, E]`` with ``batch_first``, else ``[L, B, E]``).
    attn_mask, key_padding_mask
        As the module takes them (boolean: ``True`` is masked; float: added).

    Returns
    -------
    torch.Tensor
        ``float32 [B, heads, L_query, L_key]``; rows sum to 1.

    Raises
    ------
    AttentionError
        For ``add_bias_kv`` / ``add_zero_attn`` modules (not supported).
    """
    if mha.bias_k is not None or mha.add_zero_attn:
        raise AttentionError("attention modules with add_bias_kv or add_zero_attn are not supported")
    if not mha.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    w_q, w_k, b_q, b_k = _split_projection(mha)
    q = F.linear(query.float(), w_q.float(), None if b_q is None else b_q.float())
    k = F.linear(key.float(), w_k.float(), None if b_k is None else b_k.float())
    b, lq, _ = q.shape
    heads, d_head = mha.num_heads, mha.head_dim
    q = q.view(b, lq, heads, d_head).transpose(1, 2)
    k = k.view(b, k.shape[1], heads, d_head).transpose(1, 2)
    logits = q @ k.transpose(-2, -1) / math.sqrt(d_head)
    for mask in (attn_mask, None if key_padding_mask is None else key_padding_mask[:, None, None, :]):
        if mask is None:
            continue
        if mask.dim() == 3:  # [B * heads, L, S]
            mask = mask.view(b, heads, *mask.shape[1:])
        logits = logits.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else logits + mask.float()
    return torch.softmax(logits, dim=-1)


def _inputs_of(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
    names = ("query", "key", "value")
    given = dict(zip(names, args))
    given.update({k: v for k, v in kwargs.items() if k in names})
    masks = {k: kwargs.get(k) for k in ("attn_mask", "key_padding_mask")}
    if len(args) > 3:
        masks["key_padding_mask"] = args[3]
    if len(args) > 5:
        masks["attn_mask"] = args[5]
    return given["query"], given["key"], masks


@contextmanager
def _recording(modules: list[tuple[str, nn.MultiheadAttention]]) -> Iterator[dict[str, list]]:
    record: dict[str, list] = {"weights": [], "inputs": []}

    def hook(module, args, kwargs):
        query, key, masks = _inputs_of(args, kwargs)
        with torch.no_grad():
            record["weights"].append(attention_weights(module, query, key, **masks).cpu())
            record["inputs"].append((query if module.batch_first else query.transpose(0, 1)).float().cpu())

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for _, m in modules]
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


def attention_layers(adapter: ModelAdapter) -> list[tuple[str, nn.MultiheadAttention]]:
    modules = adapter.attention_modules()
    if not modules:
        raise AttentionError(
            f"model {adapter.name!r} exposes no attention layers (nn.MultiheadAttention); attention maps need a "
            "model with attention, e.g. C.Origami's transformer"
        )
    return modules


@torch.no_grad()
def capture_attention(
    adapter: ModelAdapter, codes: np.ndarray, tracks: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Predicted map, every layer's and head's attention weights, and the features entering each attention layer.

    Parameters
    ----------
    codes, tracks
        One window: ``uint8 [L]`` and ``float32 [n_tracks, L]`` (or ``None``).

    Returns
    -------
    map, weights, features
        ``float32 [n, n]``; ``float32 [layers, heads, L_query, L_key]`` (the first copy the model runs, for models
        that also run the reverse complement); per layer ``float32 [L_query, features]`` (the query input).

    Raises
    ------
    AttentionError
        For a model without attention layers.
    """
    modules = attention_layers(adapter)
    with _recording(modules) as record:
        maps = adapter.predict(codes[None], None if tracks is None else tracks[None])
    if len(record["weights"]) != len(modules):
        raise AttentionError(f"{len(modules)} attention layers but {len(record['weights'])} calls in one forward pass")
    weights = np.stack([w[0].numpy() for w in record["weights"]])
    return maps[0], weights, [x[0].numpy() for x in record["inputs"]]


# --------------------------------------------------------------------------- stability


def total_variation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean over query rows of the total-variation distance ``½ Σ_k |a − b|`` between attention rows,
    per leading index: ``[..., L_query, L_key]`` → ``[...]`` (0 = identical, 1 = disjoint)."""
    return 0.5 * np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).sum(-1).mean(-1)


def _relative_change(reference: np.ndarray, other: np.ndarray) -> float:
    ref = np.nan_to_num(np.asarray(reference, np.float64))
    return float(np.linalg.norm(np.nan_to_num(other) - ref) / max(np.linalg.norm(ref), 1e-12))


def quiet_substitutions(
    codes: np.ndarray,
    tracks: np.ndarray | None,
    n: int,
    rng: np.random.Generator,
    margin: int = 1000,
    prominence: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random single-base substitutions at positions at least ``margin`` bp from every track peak (a value
    above ``median + prominence × (max − median)`` of its track in the window), never at an ``N``; anywhere
    without tracks, or when nothing is that far from a peak.

    Returns
    -------
    codes, positions
        The edited ``uint8 [L]`` copy and the substituted positions.
    """
    length = len(codes)
    busy = np.zeros(length, bool)
    if tracks is not None and len(tracks):
        median = np.median(tracks, axis=1, keepdims=True)
        peaks = np.any(tracks > median + prominence * (tracks.max(axis=1, keepdims=True) - median), axis=0)
        counts = np.concatenate([[0], np.cumsum(peaks)])
        index = np.arange(length)
        busy |= counts[np.minimum(index + margin + 1, length)] > counts[np.maximum(index - margin, 0)]
    candidates = np.flatnonzero(~busy & (codes < 4))
    if len(candidates) < n:
        candidates = np.flatnonzero(codes < 4)  # a window full of peaks: anywhere
    positions = np.sort(rng.choice(candidates, size=min(n, len(candidates)), replace=False))
    edited = codes.copy()
    edited[positions] = (codes[positions] + rng.integers(1, 4, len(positions))) % 4  # a different base
    return edited, positions


def reverse_complement_window(codes: np.ndarray, tracks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The window's reverse complement: codes (A0 C1 G2 T3, N4 kept) complemented and reversed, tracks reversed."""
    rc = np.where(codes < 4, 3 - codes, codes)[::-1].copy()
    return rc, None if tracks is None else tracks[:, ::-1].copy()


@dataclass
class Conditioning:
    """Conditioning of one attention layer's input (bins × features, centred over bins).

    ``structural_nulls`` counts singular values below 1e-6 of the largest (exact linear constraints, e.g.
    LayerNorm's zero row mean); ``condition`` is the largest over the smallest of the others.
    ``identifiable`` is Brunner et al. (2020)'s condition: with more keys than a head's dimension, other
    attention weights give the same output, so the weights are not identifiable from it.
    """

    condition: float
    effective_rank: float
    relative_rank: float
    structural_nulls: int
    identifiable: bool


def conditioning(features: np.ndarray, head_dim: int) -> Conditioning:
    """:class:`Conditioning` of a ``[bins, features]`` matrix (the effective rank is Roy & Vetterli's
    ``exp(entropy)`` of the normalised singular values)."""
    x = np.asarray(features, np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    s = np.linalg.svd(x, compute_uv=False)
    if not len(s) or s[0] <= 0:
        return Conditioning(float("inf"), 0.0, 0.0, len(s), False)
    structural = s < 1e-6 * s[0]
    kept = s[~structural]
    p = kept / kept.sum()
    erank = float(np.exp(-(p * np.log(p)).sum()))
    return Conditioning(
        float(kept[0] / kept[-1]), erank, erank / min(x.shape), int(structural.sum()), x.shape[0] <= head_dim
    )


@dataclass
class AttentionResult:
    """One window's attention, its stability numbers and the verdict (:func:`attention_report`)."""

    chrom: str
    start: int
    layers: list[str]
    map: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)  # [layers, heads, n, n]
    perturbation_map_change: list[float] = field(default_factory=list)
    perturbation_attention: np.ndarray = field(default=None, repr=False)  # [repeats, layers, heads]
    substitutions: list[list[int]] = field(default_factory=list)
    rc_map_change: float = float("nan")
    rc_attention: np.ndarray = field(default=None, repr=False)  # [layers, heads]
    conditioning: list[Conditioning] = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def reliable(self) -> bool:
        """False when any check found attention unreliable for this window."""
        return not self.reasons


def _flip(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[..., ::-1, ::-1])


def attention_report(
    adapter: ModelAdapter,
    codes: np.ndarray,
    tracks: np.ndarray | None,
    chrom: str = "",
    start: int = 0,
    *,
    n_substitutions: int = 3,
    repeats: int = 4,
    margin: int = 1000,
    seed: int = 0,
    thresholds: Thresholds | None = None,
) -> AttentionResult:
    """Attention of one window, its stability under tiny perturbations and reverse complement, the conditioning of
    its inputs, and the verdict.

    Parameters
    ----------
    codes, tracks
        The window: ``uint8 [L]`` and ``float32 [n_tracks, L]`` (or ``None``), ``L = window_length``.
    chrom, start
        Where it lies (for the report).
    n_substitutions, repeats, margin, seed
        Each of ``repeats`` perturbations substitutes ``n_substitutions`` random bases ``margin`` bp or more
        from any track peak (:func:`quiet_substitutions`).
    thresholds
        When attention is called unreliable (default :class:`Thresholds`).

    Raises
    ------
    AttentionError
        For a model without attention, or bad settings.
    """
    if n_substitutions < 1 or repeats < 1:
        raise AttentionError("n_substitutions and repeats must be positive")
    thresholds = thresholds or Thresholds()
    modules = attention_layers(adapter)
    reference, weights, features = capture_attention(adapter, codes, tracks)
    result = AttentionResult(chrom, start, [name for name, _ in modules], reference, weights, thresholds=thresholds)
    rng = np.random.default_rng(seed)
    changes = []
    for _ in range(repeats):
        edited, positions = quiet_substitutions(codes, tracks, n_substitutions, rng, margin)
        other, other_weights, _ = capture_attention(adapter, edited, tracks)
        result.perturbation_map_change.append(_relative_change(reference, other))
        result.substitutions.append([int(p) for p in positions])
        changes.append(total_variation(weights, other_weights))
    result.perturbation_attention = np.stack(changes)
    rc_codes, rc_tracks = reverse_complement_window(codes, tracks)
    rc_map, rc_weights, _ = capture_attention(adapter, rc_codes, rc_tracks)
    result.rc_map_change = _relative_change(reference, _flip(rc_map))
    result.rc_attention = total_variation(weights, _flip(rc_weights))
    result.conditioning = [conditioning(x, m.head_dim) for x, (_, m) in zip(features, modules)]
    _verdict(result)
    return result


def _verdict(result: AttentionResult) -> None:
    t = result.thresholds
    map_change = max(result.perturbation_map_change)
    attention = float(np.median(result.perturbation_attention.max(axis=(1, 2))))
    if map_change <= t.map_unchanged and attention > t.attention_changed:
        result.reasons.append(
            f"{len(result.substitutions[0])} random substitutions far from every track peak moved the map by at most "
            f"{map_change:.2g} (relative; ≤ {t.map_unchanged:g}) but the attention of the most affected head by "
            f"{attention:.2g} (median total variation; > {t.attention_changed:g})"
        )
    elif map_change > t.map_unchanged:
        result.notes.append(
            f"the perturbations changed the map by up to {map_change:.2g} (> {t.map_unchanged:g}): "
            "the perturbation test is inconclusive for this window"
        )
    rc_attention = float(result.rc_attention.max())
    if result.rc_map_change <= t.rc_map_agrees and rc_attention > t.rc_attention_changed:
        result.reasons.append(
            f"the reverse complement gives the same map (relative change {result.rc_map_change:.2g} ≤ "
            f"{t.rc_map_agrees:g}) with different attention (total variation up to {rc_attention:.2g} > "
            f"{t.rc_attention_changed:g})"
        )
    elif result.rc_map_change > t.rc_map_agrees:
        result.notes.append(
            f"the model's map of the reverse complement differs (relative change "
            f"{result.rc_map_change:.2g}): the model is not strand-symmetric here"
        )
    for name, c in zip(result.layers, result.conditioning):
        if c.condition > t.condition or c.relative_rank < t.effective_rank:
            result.reasons.append(
                f"the bin features entering `{name}` are ill-conditioned (condition number {c.condition:.3g}, "
                f"effective rank {c.effective_rank:.1f} = {c.relative_rank:.2f} of full; bounds {t.condition:g} and "
                f"{t.effective_rank:g}): collinear bins make the attention weights ill-determined"
            )
    if not all(c.identifiable for c in result.conditioning):
        result.notes.append(
            "every layer attends over more bins than a head's dimension: by Brunner et al. (2020) "
            "other attention weights give the same output, so weights are not identifiable"
        )


# --------------------------------------------------------------------------- outputs


def _stability_table(result: AttentionResult) -> str:
    lines = [
        "layer\thead\tperturbation_tv_median\tperturbation_tv_max\treverse_complement_tv\tcondition\teffective_rank"
    ]
    for i, name in enumerate(result.layers):
        c = result.conditioning[i]
        for h in range(result.weights.shape[1]):
            pert = result.perturbation_attention[:, i, h]
            lines.append(
                f"{name}\t{h}\t{np.median(pert):.4g}\t{pert.max():.4g}\t{result.rc_attention[i, h]:.4g}\t"
                f"{c.condition:.4g}\t{c.effective_rank:.4g}"
            )
    return "\n".join(lines) + "\n"


def _plot(result: AttentionResult, path: Path) -> Path:
    from screening.report.plot import plt

    n_layers, n_heads = result.weights.shape[:2]
    fig, axes = plt.subplots(n_layers, n_heads + 1, figsize=(2.2 * (n_heads + 1), 2.2 * n_layers), squeeze=False)
    for i in range(n_layers):
        left = axes[i, 0]
        if i == 0:
            left.imshow(result.map, cmap="Reds")
            left.set_title("predicted map", fontsize=8)
        else:
            left.imshow(result.weights[i].mean(0), cmap="viridis")
            left.set_title(f"layer {i}: head mean", fontsize=8)
        for h in range(n_heads):
            axes[i, h + 1].imshow(result.weights[i, h], cmap="viridis")
            axes[i, h + 1].set_title(f"layer {i} head {h}", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{result.chrom}:{result.start:,} — attention (rows: query bins, columns: key bins)", fontsize=9)
    fig.tight_layout()
    from screening.report.plot import save_figure

    return save_figure(fig, path, dpi=90)


def _report_md(result: AttentionResult, picture: str | None) -> str:
    t = result.thresholds
    verdict = (
        "**Attention is NOT a reliable explanation for this window**:"
        if result.reasons
        else "**No instability found** (attention passed the checks below; that alone does not make it an explanation)."
    )
    lines = [
        "# Attention maps and their stability",
        "",
        f"Window {result.chrom}:{result.start:,} (0-based start); {len(result.layers)} attention layers × "
        f"{result.weights.shape[1]} heads over {result.weights.shape[-1]} bins.",
        "",
        verdict,
        "",
    ]
    lines += [f"- {reason}" for reason in result.reasons]
    if result.notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in result.notes]
    pert = result.perturbation_attention
    lines += [
        "",
        "## Checks",
        "",
        "| check | map change (relative) | attention change (total variation, worst head) | bound |",
        "| --- | --- | --- | --- |",
        f"| {len(result.substitutions)} × {len(result.substitutions[0])} quiet substitutions | "
        f"max {max(result.perturbation_map_change):.3g} | median {np.median(pert.max(axis=(1, 2))):.3g}, max "
        f"{pert.max():.3g} | map ≤ {t.map_unchanged:g}, attention ≤ {t.attention_changed:g} |",
        f"| reverse complement (flipped back) | {result.rc_map_change:.3g} | {result.rc_attention.max():.3g} | "
        f"map ≤ {t.rc_map_agrees:g}, attention ≤ {t.rc_attention_changed:g} |",
        "",
        "| layer | condition number | effective rank (fraction) | structural null directions | identifiable |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, c in zip(result.layers, result.conditioning):
        lines.append(
            f"| `{name}` | {c.condition:.3g} | {c.effective_rank:.1f} ({c.relative_rank:.2f}) | "
            f"{c.structural_nulls} | {'yes' if c.identifiable else 'no'} |"
        )
    lines += [
        "",
        f"Substituted positions (0-based, in the window): {result.substitutions}",
        "",
        "Per-head numbers: `stability.tsv`; weights: `attention.npz` (`weights [layers, heads, query, key]`, `map`).",
    ]
    if picture:
        lines += ["", f"![attention]({picture})"]
    return "\n".join(lines) + "\n"


def write_attention_outputs(result: AttentionResult, outdir: str | os.PathLike, plots: bool = True) -> dict[str, Path]:
    """Write ``attention.npz``, ``stability.tsv``, ``attention.png`` and ``report.md`` (last), each atomically."""
    out = Path(outdir)
    written: dict[str, Path] = {}
    with atomic_path(out / "attention.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                weights=result.weights,
                map=result.map,
                perturbation_attention=result.perturbation_attention,
                perturbation_map_change=np.asarray(result.perturbation_map_change),
                rc_attention=result.rc_attention,
                layers=np.asarray(result.layers),
            )
    written["weights"] = out / "attention.npz"
    with atomic_path(out / "stability.tsv") as tmp:
        tmp.write_text(_stability_table(result))
    written["table"] = out / "stability.tsv"
    picture = None
    if plots:
        written["picture"] = _plot(result, out / "attention.png")
        picture = "attention.png"
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(_report_md(result, picture))
    written["report"] = out / "report.md"
    return written
