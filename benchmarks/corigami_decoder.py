"""C.Origami's factorised first decoder convolution against the 2-D convolution of the pairwise map (CPU).

The decoder's first convolution (Conv2d 512 → 256, 3 × 3, padding 1) acts on the pairwise map
``[f_j; f_i]`` of the 256 bin features; :func:`screening.models.corigami.pairwise_conv2d` computes it
exactly as a 1-D convolution over rows plus one over columns, broadcast and added, with the border
taps corrected. This script times both paths in the same process, interleaved (new, original, new,
original, ...) so that load on a shared machine hits both alike, and reports medians of wall-clock
and of process CPU time (all threads; steadier than wall-clock when other processes take the cores):

* ``first_conv``: the first convolution alone (the original: build the pairwise map, then the conv),
* ``decoder``: the whole decoder from the bin features ``[1, 256, 256]``,
* ``model``: the full forward pass of a 2,097,152 bp window (one-hot DNA + 2 tracks, batch 1).

It also counts FLOPs with torch's flop counter (meta device, both paths) and records the largest
difference between the two paths' outputs. Random weights (seed 0) unless ``--checkpoint`` is given.
Prints one JSON record.

    python benchmarks/corigami_decoder.py --threads 2 --repeats 5 --out benchmarks/results/corigami_decoder_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone

import numpy as np
import torch

from screening.models.corigami import ConvTransModel, CorigamiAdapter, CorigamiConfig, _pairwise, pairwise_conv2d

PARTS = ("first_conv", "decoder", "model")


def count_flops(config: CorigamiConfig, factorised: bool) -> dict[str, int]:
    """Forward FLOPs at batch 1 by torch's flop counter (convolutions and matmuls, multiply-add = 2).

    ``total``, ``encoder``, ``attn``, ``decoder`` and ``first_conv``, the decoder's first
    convolution counted on its own.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = ConvTransModel(config, factorised_decoder=factorised).eval().requires_grad_(False)
        x = torch.empty(1, config.window_length, config.n_channels)
        features = torch.empty(1, config.mid_hidden, config.n_bins)
    conv = model.decoder.conv_start[0]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    per_module = counter.get_flop_counts()
    out = {"total": int(counter.get_total_flops())}
    for name in ("encoder", "attn", "decoder"):
        out[name] = int(sum(per_module.get(f"ConvTransModel.{name}", {}).values()))
    first = FlopCounterMode(display=False)
    with first, torch.no_grad():
        pairwise_conv2d(features, conv) if factorised else conv(_pairwise(features))
    out["first_conv"] = int(first.get_total_flops())
    return out


def analytic_first_conv_flops(config: CorigamiConfig) -> dict[str, int]:
    """The first decoder convolution by hand: ``2 · n² · O · 2d · 9`` against two 1-D convs ``2 · 2 · n · 3O · d · 3``."""
    n, d, o = config.n_bins, config.mid_hidden, config.decoder_hidden
    return {"conv2d": 2 * n * n * o * (2 * d) * 9, "factorised": 2 * 2 * n * (3 * o) * d * 3}


def _time(fn) -> tuple[torch.Tensor, float, float]:
    """``fn()``, its wall-clock seconds and the process's CPU seconds (all threads) during it."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - start, time.process_time() - cpu


def run(threads: int, repeats: int, parts: tuple[str, ...], seed: int, config: CorigamiConfig,
        checkpoint: str | None) -> dict:
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    if checkpoint:
        adapter = CorigamiAdapter.from_checkpoint(checkpoint)
    else:
        adapter = CorigamiAdapter.random_init(config, seed=seed)
    model = adapter.module.eval().requires_grad_(False)
    config = model.config
    decoder, conv = model.decoder, model.decoder.conv_start[0]
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    features = torch.randn(1, config.mid_hidden, config.n_bins, generator=gen)
    codes = rng.integers(0, 5, (1, config.window_length), dtype=np.uint8)
    tracks = rng.gamma(1.0, 1.0, (1, config.num_genomic_features, config.window_length)).astype(np.float32)
    inputs = adapter.build_input(codes, tracks)

    def whole(factorised: bool) -> torch.Tensor:
        model.factorised_decoder = factorised
        try:
            return model(inputs)
        finally:
            model.factorised_decoder = True

    cases = {
        "first_conv": (lambda: pairwise_conv2d(features, conv), lambda: conv(_pairwise(features))),
        "decoder": (lambda: decoder(features), lambda: decoder(_pairwise(features))),
        "model": (lambda: whole(True), lambda: whole(False)),
    }
    record: dict = {
        "command": f"python benchmarks/corigami_decoder.py --threads {threads} --repeats {repeats} --parts {','.join(parts)}"
        + (f" --checkpoint {checkpoint}" if checkpoint else ""),
        "model_description": f"ConvTransModel, {config.window_length:,} bp, {config.n_bins} bins"
        + (f", checkpoint {checkpoint}" if checkpoint else f", random weights seed {seed}"),
        "batch_size": 1,
        "repeats": repeats,
    }
    with torch.inference_mode():
        for part in parts:
            fast, slow = cases[part]
            out_fast = fast()  # warm-up (first-call allocations, oneDNN primitive creation)
            out_slow = slow()
            wall: dict[str, list[float]] = {"factorised": [], "original": []}
            cpu: dict[str, list[float]] = {"factorised": [], "original": []}
            for _ in range(repeats):
                for path, fn in (("factorised", fast), ("original", slow)):
                    _, seconds, cpu_seconds = _time(fn)
                    wall[path].append(seconds)
                    cpu[path].append(cpu_seconds)
            med = {path: statistics.median(wall[path]) for path in wall}
            med_cpu = {path: statistics.median(cpu[path]) for path in cpu}
            record[part] = {
                "factorised_s": [round(t, 4) for t in wall["factorised"]],
                "original_s": [round(t, 4) for t in wall["original"]],
                "factorised_cpu_s": [round(t, 4) for t in cpu["factorised"]],
                "original_cpu_s": [round(t, 4) for t in cpu["original"]],
                "factorised_median_s": round(med["factorised"], 4),
                "original_median_s": round(med["original"], 4),
                "speedup": round(med["original"] / med["factorised"], 3),
                "speedup_min": round(min(wall["original"]) / min(wall["factorised"]), 3),
                "speedup_cpu_time": round(med_cpu["original"] / med_cpu["factorised"], 3),
                "max_abs_diff": float((out_fast - out_slow).abs().max()),
                "output_abs_max": float(out_slow.abs().max()),
            }
    flops_fast, flops_slow = count_flops(config, True), count_flops(config, False)
    record["flops"] = {"factorised": flops_fast, "original": flops_slow,
                       "first_conv_analytic": analytic_first_conv_flops(config),
                       "saved": flops_slow["total"] - flops_fast["total"],
                       "pairwise_map_bytes_per_sample": 4 * 2 * config.mid_hidden * config.n_bins**2}
    record.update({
        "torch_threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible, {platform.processor() or platform.platform()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    })
    return record


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each path per part (default 5)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="a C.Origami checkpoint instead of random weights")
    parser.add_argument("--model-config", default="{}", help="CorigamiConfig fields as JSON (default: the released size)")
    parser.add_argument("--out", help="also write the JSON record here")
    args = parser.parse_args(argv)
    parts = tuple(p for p in args.parts.split(",") if p)
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}")
    record = run(args.threads, args.repeats, parts, args.seed, CorigamiConfig(**json.loads(args.model_config)),
                 args.checkpoint)
    text = json.dumps(record, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    return record


if __name__ == "__main__":
    main()
