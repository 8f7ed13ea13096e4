"""The engine's scoring stage per perturbation: numpy on the host (before issue 20 item 3) against torch where the maps are.

For a batch of C.Origami-sized maps (256 × 256, float32) already predicted on ``--device``, times what
:func:`screening.compute.engine.score_items` does after the forward pass:

* **host** — the path before: the maps cross to the host (``.cpu().numpy()``), finiteness is checked
  there, the reference maps are stacked, every perturbation is aligned (``bin_alignment``, also when no
  aligned score is asked) and :func:`screening.maps.score.score_maps` runs in numpy;
* **device** — the engine now: finiteness and every score computed in torch on the device
  (:func:`screening.maps.score_torch.score_tensors`), edits aligned once per geometry
  (:class:`screening.maps.align.AlignmentCache`, only for aligned scores), and one transfer of the flags
  and the ``[B]`` score vectors.

Geometries: ``deletion-shared`` (1-kb deletions at distinct offsets of one window: no geometry repeats) and
``mutagenesis`` (three alternative bases per position: each geometry three times). Score sets: ``default``
(C.Origami's two), ``akita`` (scd, ssd, mse and their aligned forms), ``all`` (every registered name).
Best of ``--repeats`` runs (thread CPU time on the host, wall time with synchronisation on CUDA).

Usage::

    python benchmarks/scores.py --threads 1 [--device cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from screening.maps.align import AlignmentCache, bin_alignment, centre_bin  # noqa: E402
from screening.maps.score import available_scores, parse_score_name, score_maps  # noqa: E402
from screening.compute.threads import tune_cpu_allocator  # noqa: E402
from screening.maps.score_torch import maybe_finite, score_tensors  # noqa: E402

BIN, N_BINS = 8_192, 256
SETS = {
    "default": ("impact_mean_abs", "impact_abs_mean"),
    "akita": ("scd", "ssd", "mse", "scd_aligned", "ssd_aligned", "mse_aligned"),
    "all": available_scores(),
}


def edits(case: str, n: int) -> list[tuple[int, int, int]]:
    if case == "mutagenesis":
        return [(1_048_576 + i // 3, 1, 1) for i in range(n)]
    return [(786_432 + 1_000 * i, 1_000, 0) for i in range(n)]


def host_path(maps: torch.Tensor, names, geometry, context) -> dict[str, np.ndarray]:
    host = maps.cpu().numpy()
    if not np.isfinite(host.reshape(len(host), -1)).all(axis=1).all():
        raise AssertionError("non-finite maps")
    reference = np.stack([host[0]] * (len(host) - 1))
    alignments = [bin_alignment(*edit, BIN, N_BINS) for edit in geometry]
    return score_maps(reference, host[1:], names, alignments, context)


def device_path(maps: torch.Tensor, names, geometry, context, cache: AlignmentCache | None) -> dict[str, np.ndarray]:
    perturbed = maps[1:]
    reference = maps[0].clone().expand(perturbed.shape)
    index = None if cache is None else cache.index(geometry)
    scores = score_tensors(reference, perturbed, names, index, context)
    flat = torch.cat([maybe_finite(maps).to(torch.float64), *scores.values()]).cpu().numpy()
    if not flat[: len(maps)].all():
        raise AssertionError("non-finite maps")
    return dict(zip(scores, flat[len(maps) :].reshape(len(scores), -1)))


def timed(run, device: torch.device, repeats: int) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            began = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - began)
        else:
            began = time.thread_time()
            run()
            best = min(best, time.thread_time() - began)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--cases", default="deletion-shared,mutagenesis")
    parser.add_argument("--sets", default="default,akita,all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tune-allocator", action=argparse.BooleanOptionalAction, default=True,
                        help="the worker's CPU allocator tuning (screening.compute.threads), as benchmarks/pipeline.py")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tune_allocator:
        tune_cpu_allocator()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        base = rng.gamma(2.0, 1.0, size=(N_BINS, N_BINS)).astype(np.float32)
        maps_np = np.stack([base] + [base + 0.01 * rng.normal(size=base.shape).astype(np.float32) for _ in range(batch)])
        maps = torch.from_numpy(maps_np).to(device)
        for case in args.cases.split(","):
            geometry = edits(case, batch)
            context = {"position": np.array([centre_bin(o, r, BIN) for o, r, _ in geometry]), "window": 10,
                       "roi": (slice(120, 124), slice(132, 136))}
            for set_name in args.sets.split(","):
                names = SETS[set_name]
                aligned = any(parse_score_name(name)[1] for name in names)
                host = timed(lambda: host_path(maps, names, geometry, context), device, args.repeats)
                cache = AlignmentCache(BIN, N_BINS) if aligned else None
                on_device = timed(lambda: device_path(maps, names, geometry, context, cache), device, args.repeats)
                want = host_path(maps, names, geometry, context)
                got = device_path(maps, names, geometry, context, AlignmentCache(BIN, N_BINS) if aligned else None)
                worst = max(float(np.nanmax(np.abs(got[n] - want[n]), initial=0.0)) for n in names)
                row = {"batch": batch, "case": case, "scores": set_name, "host_ms_per_item": 1e3 * host / batch,
                       "device_ms_per_item": 1e3 * on_device / batch, "max_abs_difference": worst}
                rows.append(row)
                print(f"batch {batch:3d} {case:16s} {set_name:8s} host {row['host_ms_per_item']:8.3f} ms/item  device "
                      f"{row['device_ms_per_item']:8.3f} ms/item  max |Δ| {worst:.1e}", flush=True)
    if args.json_out:
        summary = {"device": str(device), "threads": args.threads, "torch": torch.__version__, "numpy": np.__version__}
        Path(args.json_out).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
