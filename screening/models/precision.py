"""Numeric precision of batched inference: fp32, or bf16/fp16 autocast on CUDA.

Only the batched predict path (:meth:`ModelAdapter.predict`) runs under
:func:`torch.autocast`; maps are cast back to float32 before any score is computed, and
gradient attribution always runs in fp32. CPU workers always run fp32: a bf16/fp16
request there falls back to fp32 with a logged warning (CPU autocast exists, but is slow
for these models and would make CPU results depend on the request). For fp32 on CUDA,
TF32 matmuls and convolutions are switched off so that CPU and GPU fp32 agree.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

__all__ = ["PRECISIONS", "autocast", "configure_adapter", "effective_precision", "strict_float32_cuda", "worker_precision"]

log = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def effective_precision(requested: str, device: str | torch.device, warn: bool = True) -> str:
    """The precision a worker on ``device`` runs: ``requested`` on CUDA, fp32 elsewhere.

    Raises
    ------
    ValueError
        On a precision name outside :data:`PRECISIONS`.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"execution.precision: unknown precision {requested!r}; choose one of {list(PRECISIONS)}")
    if requested != "fp32" and torch.device(device).type != "cuda":
        if warn:
            log.warning("execution.precision %s needs a CUDA device; running fp32 on %s", requested, device)
        return "fp32"
    return requested


def worker_precision(execution: Any) -> dict[str, str]:
    """Requested and used precision of a screen's workers, decided on the driver (for provenance).

    Workers run on CUDA when ``execution.device`` is ``cuda``, or ``auto`` with GPUs given to
    each worker (Ray hides GPUs from actors that asked for none).
    """
    on_cuda = execution.device == "cuda" or (execution.device == "auto" and execution.gpus_per_worker > 0)
    used = effective_precision(execution.precision, "cuda" if on_cuda else "cpu")
    return {"requested": execution.precision, "used": used}


def configure_adapter(adapter: Any, precision: str = "fp32", overlap: bool = False) -> str:
    """Set an adapter's inference precision and input overlap; returns the precision used.

    For fp32 on CUDA this also turns TF32 off (process-wide: a worker holds one model).
    """
    used = effective_precision(precision, adapter.device)
    adapter.precision = used
    adapter.overlap = bool(overlap)
    if adapter.device.type == "cuda" and used == "fp32":
        strict_float32_cuda()
    return used


def strict_float32_cuda() -> None:
    """TF32 off and deterministic cuDNN, so CUDA float32 results match CPU/float32 references at 1e-4.

    Process-wide: every adapter on a CUDA device calls it (a worker holds one model).
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False  # benchmark mode may pick different conv algorithms run to run
    torch.backends.cudnn.deterministic = True


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` to ``precision`` on CUDA; a no-op context for fp32 or on CPU."""
    if precision == "fp32" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=PRECISIONS[precision])
