"""Kill an embedded Ray's processes when the driver that started it dies without shutting it down.

``ray.init(address="local")`` starts GCS, the raylet and their helpers as children of the driver. A
driver killed with SIGKILL never runs ``ray.shutdown()``: most of those processes notice and exit, but
Ray's dashboard and runtime-env agents (children of the raylet, re-parented to init when it dies) linger.
:func:`start` launches ``python -m workers.reaper DRIVER_PID SINCE``, a small stdlib-only watchdog in its
own session: while the driver lives it notes every descendant of the driver started since ``SINCE``
(clock ticks since boot, as in ``/proc/<pid>/stat``); once the driver is gone it SIGKILLs those still
running (the same pid *and* start time, so a reused pid is never hit). Linux only (``/proc``); elsewhere
:func:`start` does nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

__all__ = ["start", "stop", "now_ticks"]

_POLL_S = 0.5


def _stat(pid: int) -> tuple[int, int] | None:
    """``(parent pid, start time in clock ticks since boot)`` of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold spaces
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])


def now_ticks() -> int:
    """The current time as ``/proc`` start times count it (clock ticks since boot)."""
    with open("/proc/uptime") as handle:
        return int(float(handle.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


def _descendants(root: int, since: int) -> dict[int, int]:
    """``{pid: start time}`` of the processes below ``root`` started at ``since`` or later."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            children.setdefault(stat[0], []).append(int(entry))
            started[int(entry)] = stat[1]
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child != os.getpid() and started[child] >= since:
                found[child] = started[child]
            todo.append(child)
    return found


def watch(driver: int, since: int) -> None:
    """Note the driver's new descendants until it dies, then kill those still running."""
    born = _stat(driver)
    if born is None:
        return
    seen: dict[int, int] = {}
    while (stat := _stat(driver)) is not None and stat[1] == born[1]:
        seen.update(_descendants(driver, since))
        time.sleep(_POLL_S)
    for pid, start_time in seen.items():
        current = _stat(pid)
        if current is not None and current[1] == start_time:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:  # exited meanwhile, or not ours to kill
                pass


def start(since: int) -> subprocess.Popen | None:
    """Watch this process (the driver): its processes started since ``since`` die with it.

    Parameters
    ----------
    since
        :func:`now_ticks` taken before the embedded Ray was started.

    Returns
    -------
    subprocess.Popen or None
        The watchdog (give it to :func:`stop` after ``ray.shutdown()``), or None without ``/proc``.
    """
    if not os.path.isdir("/proc/self"):
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "workers.reaper", str(os.getpid()), str(since)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,  # a kill of the driver's process group leaves it watching
    )


def stop(watchdog: subprocess.Popen | None) -> None:
    """End a watchdog once Ray was shut down normally (this process may start other children later)."""
    if watchdog is not None and watchdog.poll() is None:
        watchdog.terminate()
        watchdog.wait(timeout=10)


if __name__ == "__main__":
    watch(int(sys.argv[1]), int(sys.argv[2]))
