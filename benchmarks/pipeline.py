"""The pipeline's own cost per perturbation: a null model at C.Origami's geometry, in-process.

The model's forward pass costs almost nothing here (a strided read of its input and a constant
256 × 256 map), so what is timed is everything else a worker does per perturbation: reading
sequence and tracks, the edit, building the model input, scoring. Each case runs
:func:`screening.compute.engine.run_unit` on one work unit twice in the same process, once with
inputs built on the host (edit → stack → ``build_input``, the path before
:mod:`screening.compute.assemble`) and once on the device (the encoded span spliced per
perturbation), after a warm-up of each. Nothing is written.

Usage::

    python benchmarks/pipeline.py --threads 1 --json benchmarks/results/pipeline_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.throughput import peak_rss  # noqa: E402
from screening.compute.engine import run_unit  # noqa: E402
from screening.compute.threads import tune_cpu_allocator  # noqa: E402
from screening.io.genome import Genome  # noqa: E402
from screening.io.tracks import Track, TrackSet  # noqa: E402
from screening.models.base import ModelAdapter, PositionEncoding, WindowGeometry  # noqa: E402
from screening.models.corigami import CorigamiAdapter, CorigamiConfig  # noqa: E402
from screening.spec import DeletionSpec, MutagenesisSpec  # noqa: E402

GEOMETRY = CorigamiConfig()  # 2,097,152 bp windows, 8,192 bp bins, 256 bins
CHROM_LENGTH = 12_000_000


class NullAdapter(ModelAdapter):
    """C.Origami's input (``[B, L, 5 + 2]``) and map geometry; a forward pass that reads every 4,096th
    position of the input and returns a map that depends on it (so nothing is optimised away)."""

    name = "null"
    track_names = ("ctcf", "atac")

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(torch.nn.Identity(), device)
        self.geometry = WindowGeometry(GEOMETRY.window_length, GEOMETRY.bin_size, GEOMETRY.n_bins)
        self._corigami = CorigamiAdapter.host_input.__get__(self)  # the real C.Origami host build
        self.config = GEOMETRY

    def build_input(self, codes: np.ndarray, tracks: np.ndarray | None) -> torch.Tensor:
        return self._corigami(codes, tracks)

    def position_encoding(self) -> PositionEncoding:
        return CorigamiAdapter.position_encoding(self)  # type: ignore[arg-type]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        n = self.geometry.n_bins
        signal = inputs[:, ::4096, :].sum(dim=(1, 2))
        ramp = torch.arange(n, device=inputs.device, dtype=torch.float32)[:, None].expand(n, n)
        return signal[:, None, None] * 1e-6 + ramp


def _genome(directory: Path) -> tuple[Genome, TrackSet]:
    import pyBigWig

    rng = np.random.default_rng(0)
    fasta = directory / "genome.fa"
    sequence = "".join(rng.choice(list("ACGT"), CHROM_LENGTH))
    fasta.write_text(">chr1\n" + "\n".join(sequence[i : i + 80] for i in range(0, CHROM_LENGTH, 80)) + "\n")
    tracks = []
    for name in ("ctcf", "atac"):
        path = directory / f"{name}.bw"
        bw = pyBigWig.open(str(path), "w")
        bw.addHeader([("chr1", CHROM_LENGTH)])
        starts = np.arange(0, CHROM_LENGTH, 100)
        bw.addEntries("chr1", starts.tolist(), values=rng.gamma(1.0, 2.0, len(starts)).tolist(), span=100)
        bw.close()
        tracks.append(Track(path, name, "log1p" if name == "atac" else "none"))
    return Genome(fasta), TrackSet(tracks)


def _reset_peak() -> int:
    """Reset the process's peak resident size to its current size (Linux), so the peak read later is the
    pipeline's, not the synthetic genome's; returns the current resident size."""
    import gc

    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _payload(case: str, n: int) -> tuple[object, dict, int]:
    """The spec, the unit's payload and the perturbations it makes."""
    window = GEOMETRY.window_length
    middle = CHROM_LENGTH // 2
    if case == "mutagenesis":
        starts = middle + np.arange(n, dtype=np.int64)
        shared = (2 * starts[0] + n - window) // 2
        return MutagenesisSpec(), {"start": starts, "end": starts + 1, "window_start": np.full(n, shared)}, 3 * n
    width = min(1000, window // (4 * n))  # 1 kb (all of them in the central half of a shared window)
    starts = middle + width * np.arange(n, dtype=np.int64)
    spec = DeletionSpec(width=width, step=width)
    if case == "deletion-shared":
        window_starts = np.full(n, (2 * starts[0] + (starts[-1] + width - starts[0]) - window) // 2)
    else:
        window_starts = (2 * starts + width - window) // 2
    return spec, {"start": starts, "end": starts + width, "window_start": window_starts}, n


def _time(adapter, genome, tracks, spec, payload, batch_size, host: bool) -> float:
    encoding = adapter.position_encoding
    if host:
        adapter.position_encoding = lambda: None
    try:
        began = time.perf_counter()
        run_unit(adapter, genome, tracks, spec, "chr1", payload, batch_size)  # maps come back to the host: synchronised
        return time.perf_counter() - began
    finally:
        adapter.position_encoding = encoding


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="deletion-shared,deletion-centred,mutagenesis")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--n", type=int, default=32, help="perturbations per unit (mutagenesis: positions × 3)")
    parser.add_argument("--paths", default="host,device", help="host,device: which input paths to time (one path "
                        "per process gives that path's peak memory)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where the null model runs and inputs are built")
    parser.add_argument("--overlap", action="store_true", help="build inputs in a background thread")
    parser.add_argument("--tune-allocator", action=argparse.BooleanOptionalAction, default=True,
                        help="the worker's CPU allocator tuning (screening.compute.threads)")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tune_allocator:
        tune_cpu_allocator()
    adapter = NullAdapter(args.device)
    adapter.overlap = args.overlap
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        genome, tracks = _genome(Path(tmp))
        baseline = _reset_peak()
        for case in args.cases.split(","):
            positions = max(1, args.n // 3) if case == "mutagenesis" else args.n
            spec, payload, items = _payload(case, positions)
            for batch_size in (int(b) for b in args.batch_sizes.split(",")):
                paths = [path == "host" for path in args.paths.split(",")]
                warm = {k: v[: min(2, len(v))] for k, v in payload.items()}
                for host in paths:
                    _time(adapter, genome, tracks, spec, warm, batch_size, host)
                timings = {}
                for host in paths * 2:  # interleaved: load changes hit both paths
                    timings.setdefault("host" if host else "device", []).append(
                        _time(adapter, genome, tracks, spec, payload, batch_size, host))
                for path, seconds in timings.items():
                    best = min(seconds)
                    rows.append({"case": case, "batch_size": batch_size, "path": path, "items": items,
                                 "seconds": best, "ms_per_item": 1000 * best / items, "items_per_s": items / best})
                    print(f"{case:17s} batch {batch_size:3d} {path:6s} {1000 * best / items:8.2f} ms/item "
                          f"{items / best:8.1f} items/s", flush=True)
    batch_input = max(int(b) for b in args.batch_sizes.split(",")) * GEOMETRY.window_length * 7 * 4
    summary = {"peak_rss_gib": peak_rss() / 1024**3, "rss_before_gib": baseline / 1024**3,
               "peak_beyond_before_gib": (peak_rss() - baseline) / 1024**3,
               "largest_batch_input_gib": batch_input / 1024**3, "threads": args.threads, "overlap": args.overlap,
               "tune_allocator": args.tune_allocator, "device": args.device,
               "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
               "machine": platform.machine(), "processor": platform.processor()}
    print(json.dumps(summary))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
