"""Train the small C.Origami-architecture demo model on the synthetic genome.

The model is a :class:`~screening.models.corigami.ConvTransModel` of
:data:`DEMO_CONFIG` size (131,072 bp windows, 128 bins of 1,024 bp, ~4 MB of
weights). It learns from random windows of the training chromosome (``chr1``)
of a :mod:`screening.demo.synthetic` genome (shifted, reverse-complemented, with
decoy peaks transplanted in) and starts from a CTCF motif detector written
into its DNA trunk (:func:`init_motif_channels`). It is evaluated on the
held-out chromosome (``chr2``) against a distance-decay-only baseline, plus a
screen sanity check: deleting a functional CTCF site must move the prediction
more than deleting a decoy peak. Everything is seeded and runs with a fixed
thread count, so one command reproduces the shipped weights::

    python -m screening.demo.training --outdir screening/data/demo_model

See ``docs/demo_model.md`` for the configuration, timings and metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np

if __name__ == "__main__":
    # OpenMP threads that spin while waiting slow a step ~10x when another process shares the
    # cores; passive waiting must be chosen before torch starts OpenMP, hence before the import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from screening.core.encode import reverse_complement
from screening.compute.engine import run_deletions
from screening.io.genome import Genome
from screening.io.tracks import Track, TrackSet
from screening.models.corigami import (
    DNA_ORDER,
    ConvTransModel,
    CorigamiAdapter,
    CorigamiConfig,
    save_corigami_checkpoint,
)
from screening.maps.insulation import crossing_insulation
from screening.perturb.edits import centered_window_start
from screening.demo.synthetic import SyntheticConfig, SyntheticGenome, contact_map, generate, load_ctcf

__all__ = [
    "DEMO_CONFIG",
    "BENCHMARK_MODEL_CONFIG",
    "TRACKS",
    "TrainConfig",
    "BENCHMARK_TRAIN_CONFIG",
    "ChromData",
    "Batch",
    "init_motif_channels",
    "gc_fraction",
    "TrainResult",
    "load_chromosome",
    "peak_centres",
    "transplant_peaks",
    "sample_batch",
    "decay_profile",
    "decay_map",
    "predict_windows",
    "map_metrics",
    "evaluate",
    "deletion_sanity",
    "train",
    "train_demo",
    "main",
]

DEMO_CONFIG = CorigamiConfig(
    num_genomic_features=2,
    mid_hidden=64,
    stem_width=16,
    block_widths=(16, 16, 32, 32, 32, 48, 48, 48, 48),  # 9 blocks: stride 1024 bp
    kernel_size=11,  # block 0 then spans 22 bp: room for the 19 bp CTCF motif at 4 offsets
    n_layers=2,
    n_heads=4,
    ff_hidden=128,
    dropout=0.0,
    decoder_hidden=32,
    decoder_blocks=4,  # dilations 2..16: receptive field ~123 bins, the whole 128-bin map
    window_length=131_072,
)
"""Size of the shipped demo model (~1.0 M parameters, ~4 MB float32)."""

BENCHMARK_MODEL_CONFIG = replace(DEMO_CONFIG, window_length=65_536)
"""The method benchmark's models (``docs/method_evaluation.md``): the demo model's widths on 65,536 bp
windows (64 bins of 1,024 bp; ~1.0 M parameters, ~4 MB). A 4x narrower variant (0.24 M parameters, one
transformer layer, 3 decoder blocks) never got below the distance-decay baseline on held-out data: it
spent its capacity on the decay and learned little of the insulation and loops beyond it."""

TRACKS: tuple[tuple[str, str, str], ...] = (("ctcf", "ctcf.bw", "none"), ("atac", "atac.bw", "log1p"))
"""Track channels as ``(name, file in the synthetic folder, transform)``, C.Origami's order."""

PEAK_THRESHOLD = 4.0
"""CTCF value above which the track has a peak (background: gamma, mean 0.5)."""
QUIET_THRESHOLD = 3.0
"""A transplanted peak goes only where the CTCF track stays below this."""
MOTIF_MIN_RELSCORE = 0.8
"""Relative PWM score above which the built-in motif channels fire (planted motifs: >= 0.85,
background: < 0.78 in the synthetic genome)."""
TRANSPLANT_HALF_WIDTH = 1000
"""Half the span copied per transplanted peak (bp): > 6 s.d. of the widest (ATAC) peak."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and evaluation settings.

    Attributes
    ----------
    seed
        Seeds weight init, window sampling and augmentation.
    steps
        Optimiser steps; fixed (not time-driven) so a run is reproducible.
    max_minutes
        Wall-clock cap on the training loop; stops early (and says so) if hit.
    batch_size, lr, weight_decay, warmup_steps, grad_clip
        AdamW with linear warm-up then cosine decay to ``lr / 20``.
    shift_bp
        Windows start on a random contact bin plus a uniform ``±shift_bp``
        offset (targets stay bin-aligned), so the model tolerates the
        unaligned windows of a screen.
    reverse_complement
        Also train on reverse-complemented windows (tracks reversed, map
        flipped along both axes) with probability 1/2.
    decoys
        Up to this many CTCF/ATAC peaks copied into each window without their
        sequence (target unchanged: see :func:`transplant_peaks`).
    motif_channels
        Build a CTCF motif detector into the DNA trunk before training and keep
        it fixed (:func:`init_motif_channels`).
    train_chrom, eval_chrom
        Training and held-out chromosomes.
    eval_stride_bins
        Step between held-out evaluation windows.
    deletion_width
        Width of the deletions of the sanity check (the demo screen's 2 kb).
    threads
        Torch intra-op threads during training and evaluation.
    log_every
        Steps between progress lines.
    """

    seed: int = 0
    steps: int = 900
    max_minutes: float = 26.0
    batch_size: int = 4
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    shift_bp: int = 256
    reverse_complement: bool = True
    decoys: int = 2
    motif_channels: bool = True
    train_chrom: str = "chr1"
    eval_chrom: str = "chr2"
    eval_stride_bins: int = 16
    deletion_width: int = 2000
    threads: int = 2
    log_every: int = 50


BENCHMARK_TRAIN_CONFIG = TrainConfig(steps=600, warmup_steps=50, max_minutes=25.0)
"""Training of the method benchmark's models (:data:`BENCHMARK_MODEL_CONFIG`): 600 steps of the demo
recipe, ~12-15 min per model on one thread of the shared 2-core machine. 350 steps of the old narrow
model stopped at the decay baseline; this size keeps improving to 600 steps (``metrics.json`` loss curves)."""


# --------------------------------------------------------------------------- data


@dataclass
class ChromData:
    """One chromosome held in memory: sequence, transformed tracks and target map.

    Attributes
    ----------
    chrom
        Name.
    codes
        ``uint8 [L]`` base codes.
    tracks
        ``float32 [n_tracks, L]`` transformed tracks.
    contacts
        ``float32 [n, n]`` whole-chromosome target map (``log1p``).
    bin_size
        bp per contact bin.
    """

    chrom: str
    codes: np.ndarray
    tracks: np.ndarray
    contacts: np.ndarray
    bin_size: int

    @cached_property
    def summits(self) -> np.ndarray:
        """CTCF peak summits (:func:`peak_centres`), sources of transplanted decoy peaks."""
        return peak_centres(self.tracks[0])

    @property
    def full_bins(self) -> int:
        """Number of whole contact bins (a partial last bin is never used)."""
        return min(self.codes.size // self.bin_size, self.contacts.shape[0])

    def max_start_bin(self, n_bins: int) -> int:
        """Largest start bin whose ``n_bins`` window lies inside the chromosome."""
        last = self.full_bins - n_bins
        if last < 0:
            raise ValueError(f"{self.chrom} ({self.codes.size:,} bp) is shorter than a {n_bins}-bin window")
        return last

    def window(self, start_bp: int, start_bin: int, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inputs of ``[start_bp, start_bp + n_bins * bin_size)`` and the target of bins ``start_bin + [0, n_bins)``."""
        end = start_bp + n_bins * self.bin_size
        target = self.contacts[start_bin : start_bin + n_bins, start_bin : start_bin + n_bins]
        return self.codes[start_bp:end], self.tracks[:, start_bp:end], np.asarray(target, dtype=np.float32)


def track_set(root: Path) -> TrackSet:
    """The synthetic folder's CTCF and ATAC bigWigs in model channel order."""
    return TrackSet([Track(root / file, name, transform) for name, file, transform in TRACKS])


def load_chromosome(genome: SyntheticGenome, chrom: str) -> ChromData:
    """Read a whole chromosome of a synthetic genome through :class:`Genome` and :class:`TrackSet`."""
    size = genome.chrom_sizes[chrom]
    with Genome(genome.fasta) as fasta:
        codes = fasta.fetch(chrom, 0, size)
    tracks = track_set(genome.root)
    try:
        values = tracks.fetch(chrom, 0, size)
    finally:
        tracks.close()
    return ChromData(chrom, codes, values, genome.contacts(chrom, mmap=False), genome.config.contact_bin_size)


def _rc_window(codes: np.ndarray, tracks: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, ...]:
    # Reverse complement reads the window backwards: tracks reverse and bin i becomes n-1-i on both axes.
    return reverse_complement(codes), tracks[:, ::-1], target[::-1, ::-1]


def peak_centres(ctcf: np.ndarray, threshold: float = PEAK_THRESHOLD, gap: int = 500) -> np.ndarray:
    """Summits of the CTCF track: the highest base of each run of values above ``threshold``.

    Runs closer than ``gap`` bp count as one peak. Found from the track alone
    (no truth), so they include functional sites and decoys alike.
    """
    above = np.flatnonzero(ctcf > threshold)
    if above.size == 0:
        return above
    runs = np.split(above, np.flatnonzero(np.diff(above) > gap) + 1)
    return np.array([run[np.argmax(ctcf[run])] for run in runs], dtype=np.int64)


def transplant_peaks(
    tracks: np.ndarray, source: np.ndarray, summits: np.ndarray, rng: np.random.Generator, count: int
) -> np.ndarray:
    """Copy ``count`` random track peaks of ``source`` into quiet stretches of a window, sequence untouched.

    A peak without a CTCF motif underneath is a decoy, and the synthetic
    genome's contacts ignore decoys (``docs/synthetic.md``), so the target map
    stays exact (unless the peak lands on one of the few motif-only sites,
    ~2% of transplants). This teaches that a peak only matters on a motif, which the
    few natural decoys alone teach slowly.

    Parameters
    ----------
    tracks
        ``float32 [T, L]`` window tracks; a modified copy is returned.
    source
        ``float32 [T, chrom length]`` tracks to copy peaks from.
    summits
        Peak summits in ``source`` (:func:`peak_centres`).
    rng
        Random source.
    count
        Number of peaks to add; a peak is skipped when no quiet place is found.
    """
    half = TRANSPLANT_HALF_WIDTH
    out = tracks.copy()
    length = out.shape[-1]
    summits = summits[(summits >= half) & (summits + half <= source.shape[-1])]
    if summits.size == 0 or length <= 2 * half:
        return out
    for _ in range(count):
        summit = int(summits[rng.integers(summits.size)])
        for _attempt in range(10):  # a quiet stretch: not on, or overlapping, an existing peak
            centre = int(rng.integers(half, length - half))
            if out[0, centre - half : centre + half].max() < QUIET_THRESHOLD:
                out[:, centre - half : centre + half] = source[:, summit - half : summit + half]
                break
    return out


class Batch(NamedTuple):
    """Training inputs and targets of :func:`sample_batch`."""

    codes: np.ndarray
    """``uint8 [B, L]``."""
    tracks: np.ndarray
    """``float32 [B, T, L]``."""
    targets: np.ndarray
    """``float32 [B, n_bins, n_bins]``."""


def sample_batch(
    data: ChromData,
    rng: np.random.Generator,
    batch_size: int,
    n_bins: int,
    shift_bp: int = 0,
    rc: bool = False,
    decoys: int = 0,
) -> Batch:
    """Random training windows with shift, decoy-peak and reverse-complement augmentation.

    Parameters
    ----------
    data
        The chromosome.
    rng
        Random source (the only one used).
    batch_size, n_bins
        Windows per batch and their size in bins.
    shift_bp
        Uniform ``±shift_bp`` offset of each window from its bin-aligned start.
    rc
        Reverse-complement each window with probability 1/2.
    decoys
        Add ``0 … decoys`` transplanted peaks per window (:func:`transplant_peaks`).

    Returns
    -------
    Batch
    """
    length = n_bins * data.bin_size
    last_bin = data.max_start_bin(n_bins)
    summits = data.summits if decoys else None
    out: list[tuple[np.ndarray, ...]] = []
    for _ in range(batch_size):
        start_bin = int(rng.integers(0, last_bin + 1))
        offset = int(rng.integers(-shift_bp, shift_bp + 1)) if shift_bp else 0
        start_bp = min(max(start_bin * data.bin_size + offset, 0), data.codes.size - length)
        codes, tracks, target = data.window(start_bp, start_bin, n_bins)
        if decoys:
            tracks = transplant_peaks(tracks, data.tracks, summits, rng, int(rng.integers(0, decoys + 1)))
        if rc and rng.random() < 0.5:
            codes, tracks, target = _rc_window(codes, tracks, target)
        out.append((codes, tracks, target))
    return Batch(*(np.stack(parts) for parts in zip(*out)))


# --------------------------------------------------------------------------- baseline and metrics


def decay_profile(contacts: np.ndarray, n_bins: int) -> np.ndarray:
    """Mean contact by diagonal offset ``0 … n_bins-1`` over a whole chromosome (the baseline)."""
    full = np.asarray(contacts, dtype=np.float64)
    return np.array([np.diagonal(full, d).mean() for d in range(n_bins)], dtype=np.float32)


def decay_map(profile: np.ndarray) -> np.ndarray:
    """``[n, n]`` map whose pixel ``(i, j)`` is ``profile[|i - j|]``."""
    index = np.arange(profile.size)
    return profile[np.abs(index[:, None] - index[None, :])]


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / denom) if denom > 0 else None


def map_metrics(pred: np.ndarray, true: np.ndarray, baseline: np.ndarray) -> dict[str, float | None]:
    """Agreement of predicted and true ``[B, n, n]`` maps.

    Returns
    -------
    dict
        ``pearson`` (pooled over pixels), ``pearson_per_window`` (mean of
        per-window values), ``pearson_oe`` (after subtracting the decay
        baseline from both: the structure beyond distance decay), ``mse``,
        ``r2_vs_baseline`` (``1 - mse / mse_baseline``) and
        ``insulation_pearson``. Undefined correlations (constant input) are ``None``.
    """
    per_window = [_pearson(p, t) for p, t in zip(pred, true)]
    mse = float(np.mean((pred - true) ** 2, dtype=np.float64))
    mse_base = float(np.mean((baseline - true) ** 2, dtype=np.float64))
    valid = [v for v in per_window if v is not None]
    return {
        "pearson": _pearson(pred, true),
        "pearson_per_window": float(np.mean(valid)) if valid else None,
        "pearson_oe": _pearson(pred - baseline, true - baseline),
        "mse": mse,
        "r2_vs_baseline": 1.0 - mse / mse_base if mse_base > 0 else None,
        "insulation_pearson": _pearson(crossing_insulation(pred), crossing_insulation(true)),
    }


def predict_windows(
    adapter: CorigamiAdapter, data: ChromData, start_bins: list[int], batch_size: int = 8
) -> np.ndarray:
    """Predicted maps of the bin-aligned windows starting at ``start_bins``, ``float32 [B, n, n]``."""
    n_bins = adapter.config.n_bins
    maps = []
    for lo in range(0, len(start_bins), batch_size):
        chunk = [data.window(b * data.bin_size, b, n_bins) for b in start_bins[lo : lo + batch_size]]
        maps.append(adapter.predict(np.stack([c[0] for c in chunk]), np.stack([c[1] for c in chunk])))
    return np.concatenate(maps)


def eval_starts(data: ChromData, n_bins: int, stride: int) -> list[int]:
    """Evenly spaced start bins covering the chromosome, the last window flush with its end."""
    last = data.max_start_bin(n_bins)
    return sorted(set(range(0, last + 1, stride)) | {last})


def evaluate(
    adapter: CorigamiAdapter,
    data: ChromData,
    profile: np.ndarray,
    stride_bins: int,
    genome: SyntheticGenome | None = None,
) -> dict[str, dict[str, float | None] | int]:
    """Model, decay baseline and (with ``genome``) noise-free ceiling on one chromosome's windows.

    The ceiling scores the generator's noise-free map against the noisy target:
    no model can beat it, so it shows how much of the gap to 1 is noise.
    """
    n_bins = adapter.config.n_bins
    starts = eval_starts(data, n_bins, stride_bins)
    true = np.stack([data.window(b * data.bin_size, b, n_bins)[2] for b in starts])
    base = decay_map(profile)
    out: dict[str, dict[str, float | None] | int] = {
        "windows": len(starts),
        "model": map_metrics(predict_windows(adapter, data, starts), true, base),
        "baseline": map_metrics(np.broadcast_to(base, true.shape), true, base),
    }
    if genome is not None:
        sites = genome.sites_on(data.chrom)
        clean = np.stack(
            [
                contact_map(
                    sites, b * data.bin_size, (b + n_bins) * data.bin_size, data.bin_size, None, genome.config.contact
                )
                for b in starts
            ]
        )
        out["noise_free_ceiling"] = map_metrics(clean, true, base)
    return out


def _auroc(positives: np.ndarray, negatives: np.ndarray) -> float | None:
    """Probability that a positive outscores a negative (ties count 1/2)."""
    if positives.size == 0 or negatives.size == 0:
        return None
    diff = positives[:, None] - negatives[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def deletion_sanity(
    adapter: CorigamiAdapter, genome: SyntheticGenome, chrom: str, width: int = 2000, padding: str = "zero"
) -> dict[str, object]:
    """Screen every planted feature of ``chrom`` with one centred deletion; compare roles.

    Each deletion of ``width`` bp is centred on a feature, in a window centred
    on the deletion (the screen's own path, :func:`screening.compute.engine.run_deletions`),
    and scored by mean ``|Δ|`` over the map. A model that reads the genome
    like the generator moves more for functional sites than for decoy peaks
    (peak, no motif) or motif-only sites (motif, no peak).

    Returns
    -------
    dict
        Per role ``n``, ``mean``, ``median``; ``ratio_functional_to_decoy``,
        ``auroc_functional_vs_decoy`` and ``auroc_functional_vs_motif_only``.
    """
    window = adapter.config.window_length
    size = genome.chrom_sizes[chrom]
    sites = [s for s in genome.sites_on(chrom) if _fits(int(round(s.center - width / 2)), width, window, size)]
    starts = np.array([int(round(s.center - width / 2)) for s in sites], dtype=np.int64)
    tracks = track_set(genome.root)
    try:
        with Genome(genome.fasta) as fasta:
            scores = run_deletions(adapter, fasta, tracks, chrom, starts, width, padding, ("impact_mean_abs",), 8)
    finally:
        tracks.close()
    impact = scores["impact_mean_abs"].astype(np.float64)
    by_role = {role: impact[[s.role == role for s in sites]] for role in ("ctcf_site", "decoy_peak", "motif_only")}
    out: dict[str, object] = {"chrom": chrom, "width": width, "padding": padding, "score": "impact_mean_abs"}
    for role, values in by_role.items():
        out[role] = {
            "n": int(values.size),
            "mean": float(values.mean()) if values.size else None,
            "median": float(np.median(values)) if values.size else None,
        }
    functional, decoy = by_role["ctcf_site"], by_role["decoy_peak"]
    out["ratio_functional_to_decoy"] = (
        float(functional.mean() / decoy.mean()) if functional.size and decoy.size and decoy.mean() > 0 else None
    )
    out["auroc_functional_vs_decoy"] = _auroc(functional, decoy)
    out["auroc_functional_vs_motif_only"] = _auroc(functional, by_role["motif_only"])
    return out


def _fits(start: int, width: int, window: int, size: int) -> bool:
    window_start = centered_window_start(start, width, window)
    return window_start >= 0 and window_start + window + width <= size


# --------------------------------------------------------------------------- built-in motif detector

# C.Origami's DNA trunk starts with a k=3 stride-2 convolution and downsamples at every block,
# so a 19 bp motif must be assembled across strided layers; within this training budget it
# never is (the model learns peaks, not motifs). We therefore write the JASPAR CTCF PWM into
# the first layers, as genomics models often initialise filters from PWMs, and keep those
# channels fixed: a few channels of each DNA-trunk layer carry "+ / - motif here" down to the
# 1 kb bins, and training learns everything else, including how motifs and peaks combine.
_ACGT_TO_INPUT = (DNA_ORDER.index("A"), DNA_ORDER.index("C"), DNA_ORDER.index("G"), DNA_ORDER.index("T"))
_PHASES = 4  # block 0 outputs one position per 4 bp, so it scores 4 motif offsets per position


@dataclass
class FrozenSlice:
    """Part of a parameter held at its initial value during training."""

    param: torch.nn.Parameter
    index: tuple
    value: torch.Tensor


def gc_fraction(codes: np.ndarray) -> float:
    """Fraction of G and C among the A/C/G/T bases of ``codes``."""
    acgt = codes[codes < 4]
    return float(np.isin(acgt, (1, 2)).mean()) if acgt.size else 0.5


def _base_frequencies(gc: float) -> np.ndarray:
    return np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])  # A C G T


def _set(frozen: list[FrozenSlice], param: torch.nn.Parameter, index: tuple, value: torch.Tensor | float) -> None:
    with torch.no_grad():
        param[index] = value
    frozen.append(FrozenSlice(param, index, param[index].detach().clone()))


def _freeze_bn(frozen: list[FrozenSlice], bn: torch.nn.BatchNorm1d, channels: slice, weight: float, bias) -> None:
    _set(frozen, bn.weight, (channels,), weight)
    _set(frozen, bn.bias, (channels,), bias)


def init_motif_channels(
    model: ConvTransModel, gc: float, min_relscore: float = MOTIF_MIN_RELSCORE
) -> list[FrozenSlice]:
    """Write a CTCF motif detector into the DNA trunk; return the slices to keep fixed.

    Layout (channels of the DNA trunk; the others keep their random init):

    - stem channels 0-7: one-hot of the two bases under each output position
      (batch norm + ReLU turn a one-hot into a scaled one-hot);
    - block 0 (kernel 11 spans 22 bp): channels ``4 s + φ`` hold the PWM score
      of strand ``s`` (0 ``+``, 1 ``-``) at offset ``φ``; batch norm's shift
      makes the ReLU pass only scores above ``min_relscore``;
    - blocks 1+: channel ``s`` sums strand ``s`` over the two inputs under
      each output (an exact 2:1 pool), so the trunk's output says, per bin,
      whether a ``+`` or ``-`` motif lies there.

    Each block's residual branch is zeroed on these channels (last batch-norm
    scale 0), so ``relu(res(x) + x)`` passes them through.

    Parameters
    ----------
    model
        A fresh model; needs ``kernel_size >= 11``, a stem of >= 8 channels,
        block 0 of >= 8 and later blocks of >= 2.
    gc
        Background GC fraction (PWM log-odds and score statistics).
    min_relscore
        Relative PWM score at which the detector fires.

    Returns
    -------
    list of FrozenSlice
        Restore them after every optimiser step (:func:`_restore`); their
        gradients are masked as well, so they do not count in gradient clipping.
    """
    cfg = model.config
    motif = load_ctcf()
    width = motif.width
    pad = cfg.kernel_size // 2
    if 2 * cfg.kernel_size < width + _PHASES - 1 or cfg.stem_width < 8 or cfg.block_widths[0] < 2 * _PHASES:
        raise ValueError(f"{cfg} is too small for the built-in motif channels (kernel_size >= 11, widths >= 8)")
    if min(cfg.block_widths[1:], default=2) < 2:
        raise ValueError("blocks after the first need >= 2 channels for the motif channels")
    freqs = _base_frequencies(gc)
    scale = np.sqrt((1 - freqs) / freqs)  # BN + ReLU map one-hot 1 to this, 0 to 0
    log_odds = {0: motif.log_odds(gc), 1: motif.log_odds(gc)[::-1, ::-1]}  # rows ACGT; '-' = reverse complement
    mean = float((freqs[:, None] * log_odds[0]).sum())
    var = float(((freqs[:, None] * log_odds[0] ** 2).sum(0) - (freqs[:, None] * log_odds[0]).sum(0) ** 2).sum())
    low, high = motif.score_range(gc)
    threshold = low + min_relscore * (high - low)
    frozen: list[FrozenSlice] = []
    enc = model.encoder

    stem_conv, stem_bn = enc.conv_start_seq[0], enc.conv_start_seq[1]
    stem = torch.zeros(8, stem_conv.in_channels, 3)
    for base, channel in enumerate(_ACGT_TO_INPUT):
        stem[base, channel, 1] = 1.0  # base at 2t (kernel centre)
        stem[4 + base, channel, 2] = 1.0  # base at 2t + 1
    _set(frozen, stem_conv.weight, (slice(0, 8),), stem)
    _set(frozen, stem_conv.bias, (slice(0, 8),), 0.0)
    _freeze_bn(frozen, stem_bn, slice(0, 8), 1.0, 0.0)

    block0 = enc.res_blocks_seq[0]
    weight = torch.zeros(2 * _PHASES, block0.scale[0].in_channels, cfg.kernel_size)
    for strand in (0, 1):
        for phase in range(_PHASES):
            for j in range(width):
                q = phase + j  # base offset from the first base the output position sees
                for base in range(4):
                    weight[strand * _PHASES + phase, base + 4 * (q % 2), q // 2] = (
                        log_odds[strand][base, j] / scale[base]
                    )
    _set(frozen, block0.scale[0].weight, (slice(0, 8),), weight)
    _set(frozen, block0.scale[0].bias, (slice(0, 8),), 0.0)
    _freeze_bn(frozen, block0.scale[1], slice(0, 8), 1.0, -(threshold - mean) / math.sqrt(var))
    _freeze_bn(frozen, block0.res[4], slice(0, 8), 0.0, 0.0)

    inputs = {0: list(range(_PHASES)), 1: list(range(_PHASES, 2 * _PHASES))}
    for block in list(enc.res_blocks_seq)[1:]:
        weight = torch.zeros(2, block.scale[0].in_channels, cfg.kernel_size)
        for strand in (0, 1):
            weight[strand, inputs[strand], pad] = 1.0  # input 2u
            weight[strand, inputs[strand], pad + 1] = 1.0  # input 2u + 1
        _set(frozen, block.scale[0].weight, (slice(0, 2),), weight)
        _set(frozen, block.scale[0].bias, (slice(0, 2),), 0.0)
        _freeze_bn(frozen, block.scale[1], slice(0, 2), 1.0, 0.0)
        _freeze_bn(frozen, block.res[4], slice(0, 2), 0.0, 0.0)
        inputs = {0: [0], 1: [1]}
    for item in frozen:
        mask = torch.ones_like(item.param)
        mask[item.index] = 0.0
        item.param.register_hook(lambda grad, mask=mask: grad * mask)
    return frozen


def _restore(frozen: list[FrozenSlice]) -> None:
    """Undo what weight decay did to the fixed slices."""
    with torch.no_grad():
        for item in frozen:
            item.param[item.index] = item.value


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    model
        The trained model, in eval mode.
    losses
        Training (MSE) loss of every step.
    steps
        Steps taken (fewer than asked when ``stopped_early``).
    seconds
        Wall time of the training loop.
    cpu_seconds
        Process CPU time (all threads) of the training loop: unlike wall time,
        it barely depends on other processes sharing the cores.
    stopped_early
        Whether ``max_minutes`` cut the run short.
    """

    model: ConvTransModel
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    stopped_early: bool = False


@contextlib.contextmanager
def reproducible(threads: int) -> Iterator[None]:
    """Fixed thread count and deterministic algorithms for the block, restored afterwards."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)  # warn, don't fail, on an op without one
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def _schedule(config: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def train(
    data: ChromData,
    model_config: CorigamiConfig,
    config: TrainConfig,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Train a fresh :class:`ConvTransModel` on random windows of ``data``.

    Parameters
    ----------
    data
        Training chromosome; its ``bin_size`` must equal the model's.
    model_config
        Model size.
    config
        Optimisation settings; ``seed`` and ``threads`` make the run reproducible.
    log
        Receives a progress line every ``config.log_every`` steps; ``None`` for silence.

    Returns
    -------
    TrainResult
    """
    if data.bin_size != model_config.bin_size:
        raise ValueError(f"contact bins of {data.bin_size} bp do not match the model's {model_config.bin_size} bp bins")
    rng = np.random.default_rng(config.seed)
    with reproducible(config.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        adapter = CorigamiAdapter(ConvTransModel(model_config))
        model = adapter.module
        frozen = init_motif_channels(model, gc_fraction(data.codes)) if config.motif_channels else []
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
        result = TrainResult(model)
        model.train()
        began, began_cpu = time.perf_counter(), time.process_time()
        for step in range(config.steps):
            batch = sample_batch(
                data,
                rng,
                config.batch_size,
                model_config.n_bins,
                config.shift_bp,
                config.reverse_complement,
                config.decoys,
            )
            pred = adapter.forward(adapter.build_input(batch.codes, batch.tracks))
            loss = F.mse_loss(pred, torch.from_numpy(batch.targets))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            _restore(frozen)
            scheduler.step()
            result.losses.append(loss.item())
            result.steps = step + 1
            elapsed = time.perf_counter() - began
            if log and (step + 1) % config.log_every == 0:
                recent = float(np.mean(result.losses[-config.log_every :]))
                log(f"step {step + 1}/{config.steps}  loss {recent:.4f}  {elapsed / 60:.1f} min")
            if elapsed > 60 * config.max_minutes:
                result.stopped_early = step + 1 < config.steps
                break
        result.seconds = time.perf_counter() - began
        result.cpu_seconds = time.process_time() - began_cpu
        model.eval()
    return result


# --------------------------------------------------------------------------- the demo model


def _open_or_generate(
    data: str | Path | None, genome_seed: int, stack: contextlib.ExitStack, genome_config: SyntheticConfig | None = None
) -> SyntheticGenome:
    """Open ``data`` if it holds a synthetic genome, else generate one there (or in a temp dir).

    The generated genome is ``genome_config`` (default: ``SyntheticConfig(seed=genome_seed)``).
    """
    if data is not None and (Path(data) / "config.json").is_file():
        return SyntheticGenome.open(data)
    root = Path(data) if data is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
    return generate(genome_config or SyntheticConfig(seed=genome_seed), root)


def _thin(losses: list[float], every: int) -> list[list[float]]:
    """Loss curve as ``[step, mean loss of the preceding `every` steps]`` pairs."""
    return [[i + every, float(np.mean(losses[i : i + every]))] for i in range(0, len(losses) - every + 1, every)]


def train_demo(
    outdir: str | Path,
    data: str | Path | None = None,
    config: TrainConfig | None = None,
    model_config: CorigamiConfig = DEMO_CONFIG,
    genome_seed: int = 0,
    log: Callable[[str], None] | None = print,
    genome_config: SyntheticConfig | None = None,
) -> dict[str, object]:
    """Train, evaluate and write ``model.pt``, ``config.json`` and ``metrics.json`` into ``outdir``.

    Parameters
    ----------
    outdir
        Output folder (created).
    data
        Synthetic genome folder; generated there (or in a temporary folder when
        ``None``) from ``SyntheticConfig(seed=genome_seed)`` if it holds none.
    config
        Training settings; :class:`TrainConfig` defaults when ``None``.
    model_config
        Model size.
    genome_seed
        Seed of a generated genome.
    log
        Progress lines; ``None`` for silence.
    genome_config
        The genome to generate when ``data`` holds none (default: ``SyntheticConfig(seed=genome_seed)``).

    Returns
    -------
    dict
        The metrics written to ``metrics.json``.
    """
    config = config or TrainConfig()
    began, began_cpu = time.perf_counter(), time.process_time()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        genome = _open_or_generate(data, genome_seed, stack, genome_config)
        train_data = load_chromosome(genome, config.train_chrom)
        eval_data = load_chromosome(genome, config.eval_chrom)
        result = train(train_data, model_config, config, log)
        adapter = CorigamiAdapter(result.model)
        whole = train_data.full_bins
        profile = decay_profile(train_data.contacts[:whole, :whole], model_config.n_bins)
        with reproducible(config.threads):
            heldout = evaluate(adapter, eval_data, profile, config.eval_stride_bins, genome)
            training = evaluate(adapter, train_data, profile, 2 * config.eval_stride_bins)
            sanity = deletion_sanity(adapter, genome, config.eval_chrom, config.deletion_width)
            sanity_train = deletion_sanity(adapter, genome, config.train_chrom, config.deletion_width)
        save_corigami_checkpoint(outdir / "model.pt", result.model)
        settings = {
            "corigami_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(model_config).items()},
            "track_names": [name for name, _, _ in TRACKS],
            "track_transforms": {name: transform for name, _, transform in TRACKS},
            "train_config": asdict(config),
            "synthetic_config": genome.config.to_dict(),
        }
        (outdir / "config.json").write_text(json.dumps(settings, indent=2) + "\n")
    metrics = {
        "heldout": heldout,
        "train": training,
        "deletion_sanity": sanity,
        "deletion_sanity_train": sanity_train,
        "decay_profile": [round(float(v), 6) for v in profile],
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "samples_seen": result.steps * config.batch_size,
        "final_loss": float(np.mean(result.losses[-config.log_every :])) if result.losses else None,
        "loss_curve": _thin(result.losses, config.log_every),
        "train_minutes": result.seconds / 60,
        "train_cpu_minutes": result.cpu_seconds / 60,
        "total_minutes": (time.perf_counter() - began) / 60,
        "total_cpu_minutes": (time.process_time() - began_cpu) / 60,
        "torch_version": torch.__version__,
        "threads": config.threads,
        "seed": config.seed,
    }
    (outdir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()  # --steps, --warmup-steps, --minutes: None = the --model-size's TrainConfig
    parser = argparse.ArgumentParser(
        prog="python -m screening.demo.training", description="Train the C.Origami demo model on the synthetic genome."
    )
    parser.add_argument("--outdir", required=True, type=Path, help="folder for model.pt, config.json, metrics.json")
    parser.add_argument("--data", type=Path, help="synthetic genome folder (generated there if empty; default: temp)")
    parser.add_argument("--minutes", type=float, help="wall-clock cap on training (default: 26 demo, 25 benchmark)")
    parser.add_argument("--steps", type=int, help="optimiser steps (default: 900 demo, 600 benchmark)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="training seed")
    parser.add_argument("--genome-seed", type=int, default=0, help="seed of a generated synthetic genome")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch threads")
    parser.add_argument(
        "--genome",
        choices=["default", "graded"],
        default="default",
        help="genome generated when --data holds none: the default one or the method benchmark's "
        "graded one (screening.demo.synthetic.graded_config)",
    )
    parser.add_argument(
        "--model-size",
        choices=["demo", "benchmark"],
        default="demo",
        help="DEMO_CONFIG (the shipped demo model) or BENCHMARK_MODEL_CONFIG (its widths on half-length "
        "windows; with BENCHMARK_TRAIN_CONFIG's steps)",
    )
    parser.add_argument(
        "--no-motif-channels",
        action="store_true",
        help="no built-in CTCF detector: the model has to learn motifs itself",
    )
    parser.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default: 100 demo, 50 benchmark)")
    parser.add_argument("--lr", type=float, help=f"peak learning rate (default: {defaults.lr:g})")
    parser.add_argument(
        "--decoys", type=int, help=f"max transplanted decoy peaks per training window (default: {defaults.decoys})"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints the headline metrics."""
    args = _parser().parse_args(argv)
    base = BENCHMARK_TRAIN_CONFIG if args.model_size == "benchmark" else TrainConfig()
    given = {
        "max_minutes": args.minutes,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "lr": args.lr,
        "decoys": args.decoys,
    }
    config = replace(
        base,
        seed=args.seed,
        threads=args.threads,
        motif_channels=not args.no_motif_channels,
        **{key: value for key, value in given.items() if value is not None},
    )
    from screening.demo.synthetic import graded_config

    genome_config = graded_config(args.genome_seed) if args.genome == "graded" else None
    model_config = BENCHMARK_MODEL_CONFIG if args.model_size == "benchmark" else DEMO_CONFIG
    metrics = train_demo(
        args.outdir, args.data, config, model_config, genome_seed=args.genome_seed, genome_config=genome_config
    )
    heldout, sanity = metrics["heldout"], metrics["deletion_sanity"]
    print(
        f"held-out pearson {heldout['model']['pearson']:.4f} (decay baseline {heldout['baseline']['pearson']:.4f}), "
        f"o/e pearson {heldout['model']['pearson_oe']:.3f}, deletion functional/decoy "
        f"{sanity['ratio_functional_to_decoy']:.2f}, {metrics['steps']} steps in {metrics['train_minutes']:.1f} min"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
