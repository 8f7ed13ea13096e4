"""Incremental vs full recomputation of Orca 1 Mb substitutions (CPU, random weights).

A full-size Orca with seeded random weights predicts a handful of single-base
substitutions of one random 1 Mb window twice: in full (``predict``, the whole
encoder and decoder per window) and incrementally (``predict_near``: the cached
reference encoder activations, each level recomputed only where the substitution
reaches, then the decoder). Prints one JSON record: timings, speed-up, the largest
difference between the two, machine and versions.

    python benchmarks/orca_incremental.py                  # 6 substitutions, ~3-5 min on 2 busy cores
    python benchmarks/orca_incremental.py --mutations 3 --threads 2 --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from screening.models.orca import OrcaAdapter, OrcaConfig, encoder_reach


def _substitutions(reference: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` single-base substitutions at positions spread over the window (edges included)."""
    positions = np.linspace(0, len(reference) - 1, n).round().astype(int)
    rows = np.repeat(reference[None], n, axis=0)
    rows[np.arange(n), positions] = (reference[positions] + rng.integers(1, 4, n)) % 4
    return rows, positions


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def run(mutations: int, batch_size: int, threads: int | None, seed: int, strand_average: bool) -> dict:
    if threads:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    adapter = OrcaAdapter.random_init(OrcaConfig(), seed=seed, strand_average=strand_average)
    reference = rng.integers(0, 4, adapter.geometry.window_length).astype(np.uint8)
    rows, positions = _substitutions(reference, mutations, rng)
    batches = [slice(i, i + batch_size) for i in range(0, mutations, batch_size)]

    full, t_full = _timed(lambda: np.concatenate([adapter.predict(rows[b], None) for b in batches]))
    with torch.no_grad():
        _, t_cache = _timed(lambda: adapter._reference_stages(reference))  # once per reference window
    near, t_near = _timed(lambda: np.concatenate([adapter.predict_near(reference, None, rows[b], None) for b in batches]))
    with torch.no_grad():
        encoding = adapter._reference_stages(reference)[0][-1]
        _, t_decode = _timed(lambda: adapter.module.decode(encoding))
    per_full, per_near = t_full / mutations, t_near / mutations
    return {
        "command": f"python benchmarks/orca_incremental.py --mutations {mutations} --batch-size {batch_size}"
        + (f" --threads {threads}" if threads else "") + (" --strand-average" if strand_average else ""),
        "model": "Orca 1 Mb (OrcaConfig defaults), random weights seed %d" % seed,
        "strand_average": strand_average,
        "mutations": mutations,
        "positions": positions.tolist(),
        "encoder_reach_bp": encoder_reach(adapter.config),
        "full_s_per_substitution": round(per_full, 3),
        "incremental_s_per_substitution": round(per_near, 3),
        "reference_cache_s": round(t_cache, 3),
        "decoder_only_s": round(t_decode, 3),
        "speedup": round(per_full / per_near, 2),
        "speedup_with_cache_fill": round(t_full / (t_near + t_cache), 2),
        "speedup_per_48_substitutions": round(48 * per_full / (48 * per_near + t_cache), 2),
        "max_abs_diff": float(np.abs(near - full).max()),
        "map_abs_max": float(np.abs(full).max()),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible, {platform.processor() or platform.platform()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutations", type=int, default=6, help="single-base substitutions (default 6)")
    parser.add_argument("--batch-size", type=int, default=2, help="windows per forward pass (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strand-average", action="store_true", help="forward + reverse complement")
    parser.add_argument("--out", help="also write the JSON record here")
    args = parser.parse_args()
    record = run(args.mutations, args.batch_size, args.threads, args.seed, args.strand_average)
    text = json.dumps(record, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
