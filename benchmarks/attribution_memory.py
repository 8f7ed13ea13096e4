"""Peak memory (RSS) of one C.Origami input gradient on CPU, with and without checkpointing.

Each mode runs in its own fresh process so that peaks do not mix. In the process the
model (random weights, ``CorigamiAdapter.random_init(CorigamiConfig())``, released size
unless ``--window-length`` says otherwise) and one window's input are built, the peak
counter is reset (``/proc/self/clear_refs``), one saliency pass of a loop-block target
runs through :func:`screening.interpret.attribution.attribute`, and the peak RSS is read
(``VmHWM``).

Usage::

    python benchmarks/attribution_memory.py                      # both modes, 2 Mb window
    python benchmarks/attribution_memory.py --window-length 262144 --threads 2
    python benchmarks/attribution_memory.py --saved-only   # meta-device count of saved activations

``saved GiB`` is what autograd keeps for the backward pass, counted on the meta device
(shapes only); the peak adds the process itself, the weights, the input and its gradient,
and the transient tensors of the backward pass.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.procmem import reset_peak, status_bytes  # noqa: E402

GIB = 1024**3


def _loop_target(n_bins: int):  # noqa: ANN202
    from screening.maps.targets import Block

    centre, d = n_bins // 2, max(1, n_bins // 32)
    return Block((centre - d, centre + d), (centre + 2 * d, centre + 4 * d))  # a loop-like block


def saved_activations(mode: str, window_length: int) -> int:
    """Bytes autograd keeps for the backward pass, from a forward on the meta device (no compute).

    Every tensor packed by autograd (``saved_tensors_hooks``) is counted once; with
    checkpointing these are the checkpointed blocks' inputs plus what lies outside blocks.
    """
    import torch

    from screening.interpret.attribution import checkpointing
    from screening.models.corigami import ConvTransModel, CorigamiConfig

    config = CorigamiConfig(window_length=window_length)
    with torch.device("meta"):
        model = ConvTransModel(config).eval().requires_grad_(False)
    saved: dict[int, torch.Tensor] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.setdefault(id(t), t)  # holding the tensor keeps its id unique
        return t

    x = torch.empty(1, window_length, config.n_channels, device="meta", requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with checkpointing(model) if mode == "checkpoint" else torch.enable_grad():
            _loop_target(config.n_bins)(model(x))
    return sum(t.numel() * t.element_size() for t in saved.values())


def run_one(mode: str, window_length: int, threads: int) -> dict:
    """One gradient in this process; returns sizes in bytes and seconds."""
    import numpy as np
    import torch

    from screening.interpret.attribution import attribute
    from screening.models.corigami import CorigamiAdapter, CorigamiConfig

    torch.set_num_threads(threads)
    config = CorigamiConfig(window_length=window_length)
    adapter = CorigamiAdapter.random_init(config, seed=0)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, (1, window_length), dtype=np.uint8)
    tracks = rng.gamma(1.0, 1.0, (1, config.num_genomic_features, window_length)).astype(np.float32)
    target = _loop_target(config.n_bins)
    setup = status_bytes("VmRSS")
    reset = reset_peak()
    start = time.perf_counter()
    result = attribute(adapter, codes, tracks, target, "saliency", checkpoint=mode == "checkpoint")
    seconds = time.perf_counter() - start
    peak = status_bytes("VmHWM")
    assert np.isfinite(result.sequence).all()
    return {
        "mode": mode,
        "window_length": window_length,
        "n_bins": config.n_bins,
        "threads": threads,
        "setup_rss": setup,
        "peak_rss": peak,
        "peak_reset": reset,
        "seconds": seconds,
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("plain", "checkpoint", "both"), default="both")
    parser.add_argument("--window-length", type=int, default=2_097_152)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON line (used by --mode both)")
    parser.add_argument(
        "--saved-only", action="store_true", help="only the meta-device count of saved activations (seconds, no RSS)"
    )
    args = parser.parse_args(argv)
    if args.saved_only:
        for mode in ("plain", "checkpoint"):
            print(f"{mode:<12} saved activations {saved_activations(mode, args.window_length) / GIB:.2f} GiB")
        return 0
    if args.mode != "both":
        row = run_one(args.mode, args.window_length, args.threads)
        print(json.dumps(row) if args.json else row)
        return 0
    rows = []
    for mode in ("plain", "checkpoint"):
        command = [sys.executable, __file__, "--mode", mode, "--json", "--window-length", str(args.window_length)]
        command += ["--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(done.stderr)
            return done.returncode
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first = rows[0]
    print(f"window {args.window_length:,} bp, {first['n_bins']} bins, {args.threads} threads, torch {first['torch']}")
    print(f"{'mode':<12}{'saved GiB':>11}{'setup RSS GiB':>15}{'peak RSS GiB':>15}{'peak - setup':>15}{'seconds':>10}")
    for row in rows:
        print(
            f"{row['mode']:<12}{saved_activations(row['mode'], args.window_length) / GIB:>11.2f}"
            f"{row['setup_rss'] / GIB:>15.2f}{row['peak_rss'] / GIB:>15.2f}"
            f"{(row['peak_rss'] - row['setup_rss']) / GIB:>15.2f}{row['seconds']:>10.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
