"""Resident memory of this process from ``/proc/self/status`` (Linux), for the memory benchmarks.

``VmHWM`` is the peak resident size; :func:`reset_peak` resets it to the current size, so a peak can be
measured around one step of a long-lived process (``getrusage``'s ``ru_maxrss`` cannot be reset).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["reset_peak", "status_bytes"]


def status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``, …) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current resident size; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
