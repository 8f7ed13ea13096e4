"""Throughput settings of a worker process that leave the numbers unchanged (or within float noise).

* :func:`tune_cpu_allocator` keeps freed memory in the process's heap. Without it, glibc
  serves every tensor of 32 MB or more (the C.Origami decoder's ``[B, 256, 256, 256]``
  float32 activations are 64 MB per sample) with a fresh ``mmap`` and unmaps it when freed,
  so every forward pass page-faults all of its activations in again: 1.45 million minor
  faults (~5.6 GiB of zeroed pages) and about a third of the CPU time of one full-size
  forward pass on the 2-core development machine (``docs/benchmarks.md``). The price is
  that the resident size stays at its peak instead of shrinking between batches. It also keeps
  every thread in the main heap (one arena): a thread of its own (the input-building thread
  of ``execution.overlap``) would otherwise get a separate arena, where large blocks are
  mapped and unmapped per batch again (5× the page faults and twice the CPU time, measured).
  Applied when the worker loads its model, before any of its threads starts.
* :func:`optimize_adapter` puts a model in channels-last memory format (NHWC: the layout
  cuDNN's bf16/fp16 tensor-core convolutions want) and/or compiles it with
  :func:`torch.compile`. Both are off by default (``execution.channels_last``,
  ``execution.compile``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

import torch

__all__ = ["allocator_env", "tune_cpu_allocator", "optimize_adapter"]

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_KEEP_BYTES = 1 << 30  # heap top kept instead of returned to the system (a decoder batch fits)


def tune_cpu_allocator() -> bool:
    """Serve large blocks from the heap and keep freed memory for reuse (glibc only).

    Process-wide; safe to call more than once. Returns whether the settings took effect
    (False on a C library without ``mallopt``, e.g. musl or macOS).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # one arena (threads share the heap this tunes), no mmap for large blocks (each would page-fault anew), and a
    # trim threshold above a batch
    applied = [mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)]
    return all(applied)


def allocator_env() -> dict[str, str]:
    """:func:`tune_cpu_allocator`'s settings as glibc environment variables, for a process started with them.

    A Ray worker has started threads of its own before it loads the model; each got an arena before
    :func:`tune_cpu_allocator` could limit them to one. Set in the worker's environment, the settings hold
    from its first allocation (``workers.driver`` passes them to CPU workers).
    """
    return {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(_KEEP_BYTES)}


def _channels_last_input(module: torch.nn.Module, args: tuple) -> tuple:
    x = args[0]
    # a no-op (the same tensor) when the input is NHWC already
    return (x.contiguous(memory_format=torch.channels_last), *args[1:]) if x.dim() == 4 else args


def optimize_adapter(adapter: Any, channels_last: bool = False, compile: bool = False) -> dict[str, bool]:
    """Channels-last memory format and/or ``torch.compile`` for an adapter's module.

    Channels-last converts every 4-D weight and makes every ``Conv2d`` take NHWC input
    (C.Origami's 2-D decoder); the arithmetic is the same, only its summation order may
    differ (results agree to float rounding). Compiling wraps the module; the first batch of
    each shape compiles (minutes). Apply once per adapter.

    Returns
    -------
    dict
        ``{"channels_last": bool, "compile": bool}``: what was applied.
    """
    module = adapter.module
    applied = {"channels_last": False, "compile": False}
    if channels_last:
        module.to(memory_format=torch.channels_last)
        for layer in module.modules():
            if isinstance(layer, torch.nn.Conv2d):
                layer.register_forward_pre_hook(_channels_last_input)
        applied["channels_last"] = True
    if compile:
        adapter.module = torch.compile(module, dynamic=False)
        applied["compile"] = True
    return applied
