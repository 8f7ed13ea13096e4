"""The driver: prepare (validate everything, plan), create or resume the store, dispatch units to Ray workers.

Data flows one way: spec → plan → workers → store. Every check that can fail on
bad input (spec, genome, tracks, regions, checkpoint, store) runs *before* the
store is created (:func:`screening.prepare.prepare_screen`), so bad input never leaves a
half-written store behind. This module holds the Ray side: connecting to (or starting) Ray,
checking the cluster has room, the dispatcher and :func:`run_screen`.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from screening.compute.threads import allocator_env
from screening.core.errors import ScreeningError
from screening.core.regions import RegionError
from screening.core.urls import is_url
from screening.io.genome import GenomeError
from screening.io.tracks import TrackError
from screening.models.base import ModelError
from screening.plan import ScreenPlan, WorkUnit
from screening.prepare import PreparedScreen, prepare_screen
from screening.spec import ScreenSpec, SpecError
from screening.store.lease import StoreLease
from screening.store.writer import BlockWriter, ResultStore, open_or_create_store
from workers import reaper
from workers.metrics import ScreenMetrics, screen_id as default_screen_id

__all__ = ["RayAuthError", "ScreenCancelled", "ScreenProgress", "ScreenSummary", "check_cluster_resources",
           "connect_ray", "probe_address", "run_screen", "worker_options"]


@dataclass
class ScreenSummary:
    """What a finished (or resumed) run did."""

    store: str
    n_perturbations: int
    n_computed: int
    n_units: int
    seconds: float
    resumed: bool
    workers: list[str] = field(default_factory=list)
    retries: int = 0
    damaged: list[str] = field(default_factory=list)  # chunks a --verify found damaged (recomputed)

    @property
    def rate(self) -> float:
        return self.n_computed / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class ScreenProgress:
    """Where a running screen stands, passed to ``run_screen(on_progress=...)`` after every unit.

    Counts include units and perturbations finished by earlier (resumed) runs; ``rate`` and
    ``eta_s`` are over this run only (perturbations computed per second since it started).
    ``perturbations_*`` count every scored item, the positions of attribution analyses included;
    ``attributed_positions_done``/``_total`` are those positions alone, and
    ``perturbations_per_s``/``attributed_positions_per_s`` split ``rate`` between the two.
    """

    units_done: int
    units_total: int
    perturbations_done: int
    perturbations_total: int
    elapsed_s: float
    rate: float
    eta_s: float | None
    attributed_positions_done: int = 0
    attributed_positions_total: int = 0
    perturbations_per_s: float = float("nan")
    attributed_positions_per_s: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (NaN rates as ``None``)."""
        rates = ("rate", "perturbations_per_s", "attributed_positions_per_s")
        return {**self.__dict__, **{key: _finite(getattr(self, key)) for key in rates}}


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _attribution_analyses(plan: ScreenPlan) -> set[str]:
    """Analyses whose units attribute positions (one per base) rather than score perturbations."""
    return {layout.analysis for layout in plan.layouts if layout.kind == "attribution"}


class ScreenCancelled(RuntimeError):
    """``run_screen`` stopped because its ``cancel`` hook fired; finished chunks stay done, the store
    is not marked complete, and running the same spec again resumes it."""

    def __init__(self, progress: ScreenProgress | None = None) -> None:
        done = f" after {progress.units_done} of {progress.units_total} units" if progress else ""
        super().__init__(f"screen cancelled{done}; run it again to resume")
        self.progress = progress


class _Tracker:
    """Counts finished units and perturbations for progress reports (rate and ETA over this run)."""

    def __init__(self, plan: ScreenPlan, pending: list[WorkUnit], callback: Callable[[ScreenProgress], None] | None):
        self.callback = callback
        self.attribution = _attribution_analyses(plan)
        self.units_total = len(plan.units)
        self.perturbations_total = plan.n_perturbations
        self.units_done = self.units_total - len(pending)
        self.perturbations_done = self.perturbations_total - sum(u.size for u in pending)
        self.positions_total = sum(layout.n for layout in plan.layouts if layout.analysis in self.attribution)
        self.positions_done = self.positions_total - sum(u.size for u in pending if u.analysis in self.attribution)
        self.computed = 0
        self.computed_positions = 0
        self.began = time.perf_counter()

    def snapshot(self) -> ScreenProgress:
        elapsed = time.perf_counter() - self.began

        def per_s(n: int) -> float:
            return n / elapsed if elapsed > 0 and self.computed else float("nan")

        rate = per_s(self.computed)
        remaining = self.perturbations_total - self.perturbations_done
        eta = 0.0 if remaining == 0 else (remaining / rate if np.isfinite(rate) and rate > 0 else None)
        return ScreenProgress(
            self.units_done, self.units_total, self.perturbations_done, self.perturbations_total, elapsed, rate, eta,
            self.positions_done, self.positions_total,
            per_s(self.computed - self.computed_positions), per_s(self.computed_positions),
        )

    def unit_done(self, n: int, analysis: str | None = None) -> None:
        self.units_done += 1
        self.perturbations_done += n
        self.computed += n
        if analysis in self.attribution:
            self.positions_done += n
            self.computed_positions += n
        self.report()

    def report(self) -> None:
        if self.callback is not None:
            self.callback(self.snapshot())


def _cancel_check(cancel: Any) -> Callable[[], bool]:
    """A ``threading.Event`` (or anything with ``is_set``), a callable returning True, or None."""
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError(f"cancel must be a threading.Event or a callable, got {type(cancel).__name__}")


#: How long connecting to a Ray address may take before the run fails naming ``execution.address``.
RAY_CONNECT_TIMEOUT_S = 15.0


def probe_address(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S, field: str = "execution.address") -> None:
    """Refuse an unreachable Ray address quickly: a TCP connect to its host and port with a timeout.

    ``ray.init`` retries an unreachable address for minutes; this fails in at most ``timeout_s``.
    ``auto`` (the cluster started on this machine) and ``local`` are left to Ray, which fails at once
    without one.

    Raises
    ------
    SpecError
        Naming ``field`` (``execution.address``) when the address is malformed or nothing answers there.
    """
    import socket

    if address in ("auto", "local"):
        return
    host, port, _ = _ray_endpoint(address, field)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        raise SpecError(f"{field}: cannot reach Ray at {address} ({err.strerror or err}); "
                        "check the address and that the cluster is up") from None


def _ray_endpoint(address: str, field: str) -> tuple[str, int, bool]:
    """``(host, port, is_ray_client)`` of a ``host:port`` (the GCS) or ``ray://host[:port]`` address."""
    from urllib.parse import urlsplit

    parts = urlsplit(address if is_url(address) else f"gcs://{address}")
    try:
        host, port = parts.hostname, parts.port or (10001 if parts.scheme == "ray" else None)  # Ray Client's default
    except ValueError:
        host = port = None
    if not host or not port:
        raise SpecError(f"{field}: {address!r} is not host:port or ray://host:port")
    return host, port, parts.scheme == "ray"


# --- Ray token authentication (Ray 2.60: clusters started with RAY_AUTH_MODE=token) -----------------

class RayAuthError(ScreeningError, RuntimeError):
    """The Ray cluster at the address uses token authentication and this process has no token for it,
    or one the cluster refuses; the message names the setting to give (``RAY_AUTH_TOKEN``)."""


#: How long asking a Ray address whether it wants a token may take (a live cluster answers in milliseconds).
RAY_AUTH_PROBE_TIMEOUT_S = 5.0

#: What to tell a user whose cluster wants a token: the settings Ray reads, in Ray's order.
RAY_TOKEN_HINT = ("set RAY_AUTH_TOKEN to the cluster's token, or RAY_AUTH_TOKEN_PATH to a file holding it "
                  "(`ray get-auth-token` on the head node prints it)")


def _ray_token(field: str) -> tuple[str | None, str]:
    """The token Ray would send and where it comes from, found as Ray 2.60 finds it: ``RAY_AUTH_TOKEN``
    (blank counts as unset), else the file ``RAY_AUTH_TOKEN_PATH`` names, else ``~/.ray/auth_token``;
    whitespace around it stripped. ``(None, "")`` when there is none.

    Raises
    ------
    RayAuthError
        ``RAY_AUTH_TOKEN_PATH`` is set but its file cannot be read or is empty (Ray refuses that too).
    """
    from pathlib import Path

    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token, "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            token = Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError):
            token = ""
        if not token:
            raise RayAuthError(f"{field}: RAY_AUTH_TOKEN_PATH names {path}, which cannot be read or is empty; "
                               + RAY_TOKEN_HINT)
        return token, f"RAY_AUTH_TOKEN_PATH ({path})"
    default = Path.home() / ".ray" / "auth_token"
    try:
        token = default.read_text().strip()
    except (OSError, UnicodeDecodeError):
        token = ""
    return (token, str(default)) if token else (None, "")


def _token_accepted(address: str, field: str, token: str | None) -> bool | None:
    """Whether the Ray at ``address`` accepts a request carrying ``token`` (None: without one).

    One cheap gRPC call: ``GetClusterId`` of the GCS (``host:port``), or the Ray Client server's ping
    (``ray://``). A token-auth Ray refuses it with UNAUTHENTICATED before looking at the request, so
    any other answer means "accepted". None when there is no verdict (no answer in time, TLS, an
    unexpected server): ``ray.init`` then decides as it always did.
    """
    if os.environ.get("RAY_USE_TLS", "").lower() in ("1", "true"):
        return None
    try:
        import grpc
    except ImportError:
        return None
    host, port, client = _ray_endpoint(address, field)
    if client:
        try:
            from ray.core.generated import ray_client_pb2
        except ImportError:
            return None
        method = "/ray.rpc.RayletDriver/ClusterInfo"
        request = ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING).SerializeToString()
    else:
        method, request = "/ray.rpc.NodeInfoGcsService/GetClusterId", b""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    channel = grpc.insecure_channel(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    try:
        channel.unary_unary(method)(request, timeout=RAY_AUTH_PROBE_TIMEOUT_S, metadata=metadata)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.UNAUTHENTICATED:
            return False
        if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return None
    finally:
        channel.close()
    return True


def _enable_token_mode() -> None:
    """Make this process's Ray send its token: ``RAY_AUTH_MODE=token``, as Ray itself does for a local cluster."""
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")  # Ray caches its config (the auth mode with it) in C++
        AuthenticationTokenLoader.instance().reset_cache()
    except Exception:  # noqa: BLE001 - another Ray: the environment variable is what it reads
        pass


def _prepare_ray_auth(address: str, field: str) -> None:
    """Let ``ray.init(address=...)`` authenticate to a cluster that uses token authentication.

    Ray 2.60 sends a token only while ``RAY_AUTH_MODE=token`` is set in the driver, and for an explicit
    address never turns it on by itself: with just ``RAY_AUTH_TOKEN`` set its GCS client retries
    "Authentication token is missing or incorrect" for 20 s and ends in a bare ConnectionError. So
    the cluster is asked first. If it wants a token, the one Ray would send (:func:`_ray_token`) is
    checked and token mode is turned on for this process; a cluster without authentication is left
    as it was. The screen's workers are the cluster's processes and hold its token already.

    Raises
    ------
    RayAuthError
        The cluster wants a token and none is set, it refuses the one set, or ``RAY_AUTH_MODE``
        turns authentication off.
    """
    if address == "local":
        return
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            address = canonicalize_bootstrap_address("auto") or ""
        except Exception:  # noqa: BLE001 - no cluster on this machine (Ray says so) or another Ray
            address = ""
        if not address:
            return
    if _token_accepted(address, field, None) is not False:
        return
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    if mode and mode != "token":
        raise RayAuthError(f"{field}: the Ray cluster at {address} uses token authentication but RAY_AUTH_MODE is "
                           f"{mode!r}; unset RAY_AUTH_MODE (or set it to token) and " + RAY_TOKEN_HINT)
    token, source = _ray_token(field)
    if token is None:
        raise RayAuthError(f"{field}: the Ray cluster at {address} uses token authentication and no token is set; "
                           + RAY_TOKEN_HINT)
    if _token_accepted(address, field, token) is False:
        raise RayAuthError(f"{field}: the Ray cluster at {address} refuses the authentication token from {source}; "
                           + RAY_TOKEN_HINT)
    if mode != "token":
        _enable_token_mode()


def connect_ray(address: str, field: str = "execution.address", **init_options: Any) -> None:
    """Join the Ray cluster at ``address`` (``host:port``, ``ray://host:port`` or ``auto``).

    An unreachable address fails within seconds (:func:`probe_address`); a cluster with token
    authentication is joined with the token from the environment (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``), and without one fails at once saying which
    setting to give. ``init_options`` go to ``ray.init``.

    Raises
    ------
    SpecError
        Naming ``field`` when the address is malformed or nothing answers there.
    RayAuthError
        Naming ``field`` and ``RAY_AUTH_TOKEN`` when the cluster wants a token this process lacks.
    """
    import ray

    auth_error = getattr(ray.exceptions, "AuthenticationError", ())  # Ray without token authentication: none
    probe_address(address, field=field)
    _prepare_ray_auth(address, field)
    try:
        ray.init(address=address, **init_options)
    except auth_error as err:  # what the probe could not see (TLS, no answer in time)
        raise RayAuthError(f"{field}: Ray at {address}: {getattr(err, 'message', err)}; " + RAY_TOKEN_HINT) from None


def _init_ray(spec: ScreenSpec) -> bool:
    """Connect to the spec's Ray address or start an embedded local Ray; True if we started it.

    Either way the cluster is checked to have room for the spec's workers (:func:`check_cluster_resources`).

    Raises
    ------
    SpecError
        Naming ``execution.address`` (unreachable) or the execution field the cluster cannot satisfy.
    RayAuthError
        The cluster at ``execution.address`` uses token authentication and no usable token is set.
    """
    import ray

    if ray.is_initialized():
        return False
    execution = spec.execution
    address = execution.address or os.environ.get("RAY_ADDRESS")
    if address:
        connect_ray(address, logging_level="WARNING", log_to_driver=False)
    else:
        needed = execution.num_workers * execution.cpus_per_worker
        since = reaper.now_ticks() if os.path.isdir("/proc/self") else 0
        # "local" always starts a private Ray: a plain init() would join a cluster
        # someone started on this machine with `ray start`.
        ray.init(
            address="local",
            num_cpus=max(os.cpu_count() or 1, int(np.ceil(needed))),
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
            configure_logging=True,
        )
        global _REAPER
        _REAPER = reaper.start(since)  # a SIGKILLed driver takes its embedded Ray (agents included) with it
    try:
        check_cluster_resources(execution)
    except BaseException:
        _shutdown_ray()
        raise
    return True


_REAPER = None  # the watchdog of the embedded Ray this process started, if any


def _shutdown_ray() -> None:
    """Shut down the Ray this process connected to or started, and end its watchdog."""
    import ray

    global _REAPER
    ray.shutdown()
    reaper.stop(_REAPER)
    _REAPER = None


def _autoscaling_node_groups() -> list[tuple[dict[str, float], int]]:
    """``(resources, max_count)`` of the node groups an autoscaler may add (KubeRay, ``ray up``), or [].

    Read from the autoscaler's cluster config that Ray keeps in its GCS (a private Ray API, so any
    failure means "no autoscaler known"); ``max_count`` -1 is unbounded.
    """
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - an older/newer Ray or no autoscaler: judge by the nodes alone
        return []
    if config is None:
        return []
    return [(dict(group.resources), int(group.max_count)) for group in config.node_group_configs
            if group.max_count != 0]


def _workers_per_node(resources: dict[str, float], cpus: float, gpus: float) -> int:
    """How many workers of ``cpus`` CPUs and ``gpus`` GPUs a node (or free pool) of ``resources`` holds."""
    fit = int(resources.get("CPU", 0.0) / cpus + 1e-9) if cpus > 0 else 1 << 30
    if gpus > 0:
        fit = min(fit, int(resources.get("GPU", 0.0) / gpus + 1e-9))
    return fit


def check_cluster_resources(execution: Any) -> None:
    """Refuse workers the connected Ray cluster cannot place (they would wait forever).

    One worker (``cpus_per_worker`` and ``gpus_per_worker``) must fit on one node: an alive node, or
    a node type the cluster's autoscaler may add. ``num_workers`` of them must fit in the cluster's
    free resources now (beside the service's replica and other running screens), plus, on an
    autoscaling cluster, what its node groups may add at their maximum size; workers the autoscaler
    must first start are bounded by ``execution.placement_timeout_s`` instead.

    Parameters
    ----------
    execution
        The spec's ``execution`` section.

    Raises
    ------
    SpecError
        Naming ``execution.cpus_per_worker``, ``execution.gpus_per_worker`` or ``execution.num_workers``.
    """
    import ray

    cpus, gpus, workers = execution.cpus_per_worker, execution.gpus_per_worker, execution.num_workers
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    groups = _autoscaling_node_groups()
    shapes = nodes + [resources for resources, _ in groups]
    most_cpus = max((n.get("CPU", 0.0) for n in shapes), default=0.0)
    most_gpus = max((n.get("GPU", 0.0) for n in shapes), default=0.0)
    scope = "Ray node (or node type its autoscaler may add)" if groups else "Ray node"
    if cpus > most_cpus:
        raise SpecError(f"execution.cpus_per_worker: {cpus:g} CPUs per worker, but the largest {scope} has {most_cpus:g}")
    if gpus > most_gpus:
        raise SpecError(f"execution.gpus_per_worker: {gpus:g} GPUs per worker, but the largest {scope} has {most_gpus:g}"
                        + (" (the cluster has no GPU)" if not most_gpus else ""))
    if not any(_workers_per_node(n, cpus, gpus) for n in shapes):
        raise SpecError(f"execution.cpus_per_worker: no {scope} has {cpus:g} CPUs and {gpus:g} GPUs for one worker")
    free = ray.available_resources()
    fit = _workers_per_node(free, cpus, gpus)
    if any(count < 0 and _workers_per_node(resources, cpus, gpus) for resources, count in groups):
        return  # an unbounded node group can hold any number of workers
    fit += sum(count * _workers_per_node(resources, cpus, gpus) for resources, count in groups)
    if workers > fit:
        raise SpecError(
            f"execution.num_workers: {workers} workers of {cpus:g} CPUs"
            + (f" and {gpus:g} GPUs" if gpus else "")
            + f" asked; the Ray cluster has room for {fit}"
            + (" at its autoscaler's maximum size" if groups else " now")
            + f" ({free.get('CPU', 0.0):g} CPUs" + (f", {free.get('GPU', 0.0):g} GPUs" if gpus else "") + " free)"
        )


#: Errors a worker raises about the unit's own inputs or model output, reported to the user as they are.
_UNIT_INPUT_ERRORS = (ModelError, TrackError, GenomeError, RegionError)


def worker_options(execution: Any) -> dict[str, Any]:
    """Ray actor options of a screen worker: its resources, restarts, and for a CPU worker that keeps
    freed memory (``execution.keep_freed_memory``) the allocator settings in its environment, in force
    before any of its threads starts (:func:`screening.compute.threads.allocator_env`)."""
    options: dict[str, Any] = {
        "num_cpus": execution.cpus_per_worker,
        "num_gpus": execution.gpus_per_worker,
        "max_restarts": -1,
        "max_task_retries": 0,
    }
    if execution.keep_freed_memory and not execution.gpus_per_worker:
        options["runtime_env"] = {"env_vars": allocator_env()}  # merged with the job's env_vars by Ray
    return options


class _Dispatcher:
    """Keeps a bounded number of units in flight per worker and redoes units whose worker died."""

    def __init__(
        self,
        spec: ScreenSpec,
        plan: ScreenPlan,
        on_done: Callable[[dict[str, Any]], None],
        on_failure: Callable[[bool], None] = lambda retried: None,
        cancelled: Callable[[], bool] = lambda: False,
    ):
        import ray

        from workers.screen_worker import ScreenWorker

        execution = spec.execution
        self.ray = ray
        self.spec_json = spec.model_dump(mode="json")
        self.plan = plan
        self.on_done = on_done
        self.on_failure = on_failure
        self.cancelled = cancelled
        self.poll_s = 0.2  # how often a wait for results looks at the cancel hook
        self.probe_interval_s = 0.5  # between readiness probes of a restarting worker
        self.max_retries = execution.max_retries
        self.in_flight_per_worker = 2  # one computing, one queued: backpressure without idling
        self.remote_cls = ray.remote(ScreenWorker).options(**worker_options(execution))
        self.threads = max(1, int(execution.cpus_per_worker))
        self.workers = [self._start() for _ in range(execution.num_workers)]
        self.names = self._await_placement(execution)
        self.retries = 0

    def _await_placement(self, execution: Any) -> list[str]:
        """The workers' names once every one is placed and started; fails (workers killed) when they are not
        placed within ``execution.placement_timeout_s``, and stops on cancel meanwhile."""
        refs = [worker.ready.remote() for worker in self.workers]
        deadline = time.monotonic() + execution.placement_timeout_s
        while True:
            _, waiting = self.ray.wait(refs, num_returns=len(refs), timeout=self.poll_s)
            if not waiting:
                return self.ray.get(refs)
            if self.cancelled():
                self.stop()
                raise ScreenCancelled()
            if time.monotonic() > deadline:
                self.stop()
                gpus = f" and {execution.gpus_per_worker:g} GPUs" if execution.gpus_per_worker else ""
                raise SpecError(
                    f"execution.placement_timeout_s: {len(waiting)} of {len(refs)} workers ({execution.cpus_per_worker:g} "
                    f"CPUs{gpus} each) were not placed on the Ray cluster within {execution.placement_timeout_s:g} s; "
                    "ask for fewer or smaller workers (execution.num_workers, cpus_per_worker, gpus_per_worker)"
                )

    def _start(self):
        return self.remote_cls.remote(self.spec_json, self.threads)

    def _submit(self, worker, unit: WorkUnit):
        return worker.run.remote(unit, self.plan.payload(unit))

    def run(self, units: list[WorkUnit]) -> None:
        ray = self.ray
        queue = deque(units)
        attempts: dict[WorkUnit, int] = {}
        pending: dict[Any, tuple[int, WorkUnit]] = {}
        load = [0] * len(self.workers)
        # Workers whose unit failed get no new unit until a readiness probe reaches their restarted
        # process: index -> when to send the next probe (None while one is out).
        restarting: dict[int, float | None] = {}
        probes: dict[Any, int] = {}  # probes out, by ref
        while queue or pending:
            if self.cancelled():
                self.stop()
                raise ScreenCancelled()
            for index, worker in enumerate(self.workers):
                while index not in restarting and queue and load[index] < self.in_flight_per_worker:
                    unit = queue.popleft()
                    pending[self._submit(worker, unit)] = (index, unit)
                    load[index] += 1
            now = time.monotonic()
            for index, due in restarting.items():
                if due is not None and now >= due:
                    probes[self.workers[index].ready.remote()] = index
                    restarting[index] = None
            waiting = [*pending, *probes]
            if not waiting:  # every worker restarting, next probe due shortly
                time.sleep(self.poll_s)
                continue
            ready, _ = ray.wait(waiting, num_returns=1, timeout=self.poll_s)
            if not ready:
                continue
            ref = ready[0]
            if ref in probes:
                index = probes.pop(ref)
                try:
                    ray.get(ref)
                    del restarting[index]
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
                    restarting[index] = time.monotonic() + self.probe_interval_s  # still restarting
                continue
            index, unit = pending.pop(ref)
            load[index] -= 1
            try:
                result = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as err:
                attempts[unit] = attempts.get(unit, 0) + 1
                retry = attempts[unit] <= self.max_retries
                self.on_failure(retry)
                if not retry:
                    raise RuntimeError(f"work unit {unit} failed {attempts[unit]} times; last error: {err}") from err
                self.retries += 1
                queue.appendleft(unit)
                restarting.setdefault(index, now)  # probe it at once (unless already restarting)
                continue
            except ray.exceptions.RayTaskError as err:
                cause = getattr(err, "cause", None)
                if not isinstance(cause, _UNIT_INPUT_ERRORS):
                    raise
                # the unit's inputs or model are at fault (e.g. non-finite maps): a retry gives the same, so the
                # screen fails at once with the worker's message, as the user error it is (CLI exit 2)
                self.on_failure(False)
                raise type(cause)(f"work unit {unit}: {cause}") from None
            self.on_done(result)

    def stop(self) -> None:
        """Kill the workers: in-flight units end without their ``chunk_done`` flag and are redone on resume."""
        for worker in self.workers:
            self.ray.kill(worker, no_restart=True)
        self.workers = []


def run_screen(
    spec: ScreenSpec,
    progress: bool = True,
    prepared: PreparedScreen | None = None,
    *,
    on_progress: Callable[[ScreenProgress], None] | None = None,
    cancel: Any = None,
    verify: bool = False,
    screen_id: str | None = None,
) -> ScreenSummary:
    """Run (or resume) a screen end to end and return its summary.

    Parameters
    ----------
    spec
        A validated spec.
    progress
        Show a progress bar over perturbations.
    prepared
        A result of :func:`prepare_screen` to reuse.
    on_progress
        Called with a :class:`ScreenProgress` once the store is open and after every finished
        unit (on the calling thread; an exception it raises stops the screen).
    cancel
        A ``threading.Event`` or a callable returning True to stop: no unit is dispatched
        after it fires, in-flight units are stopped (their workers killed) within
        about 0.2 s, and :class:`ScreenCancelled` is raised. Completed chunks keep their
        ``chunk_done`` flags, the store is not marked complete, and the same spec resumes it.
    verify
        When resuming, check every done chunk first (checksums, digests) and recompute damaged ones
        (listed in the summary's ``damaged``).
    screen_id
        The ``screen`` label of its Prometheus metrics (the service passes its screen id); by
        default :func:`workers.metrics.screen_id` of the spec (stable across resumes).

    Raises
    ------
    ScreenCancelled
        When ``cancel`` fired before every unit was done.
    StoreError
        When another driver holds the store's lease (one driver per store), or this run lost it.
    """
    user_cancelled = _cancel_check(cancel)  # a bad hook is refused before the store is created
    prepared = prepared or prepare_screen(spec)
    # Ray is connected (an unreachable execution.address fails within seconds) and checked to have room
    # for the workers before the lease and the store are touched.
    started_ray = _init_ray(spec)
    try:
        # One driver per store: the lease is held from before the store is opened (or replaced by
        # --overwrite) until the run ends, and a lost lease stops the dispatch like a cancel.
        with StoreLease(spec.output.store, spec.output.storage_options) as lease:

            def cancelled() -> bool:
                lease.check()
                return user_cancelled()

            return _run_leased(spec, progress, prepared, on_progress, cancelled, verify, screen_id,
                               lease_held=lambda: not lease.lost)
    finally:
        if started_ray:
            _shutdown_ray()


def _run_leased(
    spec: ScreenSpec,
    progress: bool,
    prepared: PreparedScreen,
    on_progress: Callable[[ScreenProgress], None] | None,
    cancelled: Callable[[], bool],
    verify: bool,
    screen_id: str | None = None,
    lease_held: Callable[[], bool] = lambda: True,
) -> ScreenSummary:
    """:func:`run_screen` once the store's lease is held."""
    from tqdm.auto import tqdm

    plan = prepared.plan
    store, resumed = open_or_create_store(
        spec.output.store,
        spec.model_dump(mode="json"),
        spec.science_hash(),
        prepared.provenance,
        plan.layouts,
        overwrite=spec.output.overwrite,
        storage_options=spec.output.storage_options,
        verify=verify,
    )
    pending = _pending_units(store, plan)
    n_todo = sum(u.size for u in pending)
    tracker = _Tracker(plan, pending, on_progress)
    tracker.report()
    began = time.perf_counter()
    metrics = ScreenMetrics(screen_id or default_screen_id(spec), spec.name, _attribution_analyses(plan))
    metrics.start(len(plan.units), len(plan.units) - len(pending))
    if spec.execution.metrics_port is not None:
        metrics.serve(spec.execution.metrics_port, spec.execution.metrics_host)
    names: list[str] = []
    retries = 0
    # Format 3: the driver is the one writer of every block (scores, flags, digests, hits); workers
    # hand it their units' scores.
    blocks = store.block_writer() if store.format_version >= 3 else None
    if pending:
        started_ray = _init_ray(spec)
        try:
            with tqdm(total=n_todo, unit="pert", desc=spec.name, disable=not progress, dynamic_ncols=True) as bar:
                def on_done(result: dict[str, Any]) -> None:
                    if result.get("record") is not None:
                        blocks.add(result["record"])
                    bar.update(result["n"])
                    metrics.unit_finished(result, time.perf_counter() - began)
                    tracker.unit_done(result["n"], result["unit"].analysis)

                dispatcher = _Dispatcher(spec, plan, on_done, metrics.unit_failed, cancelled)
                names = dispatcher.names
                try:
                    dispatcher.run(pending)
                except BaseException as err:
                    dispatcher.stop()
                    _keep_finished(blocks, lease_held)
                    if isinstance(err, ScreenCancelled):
                        raise ScreenCancelled(tracker.snapshot()) from None
                    raise
                dispatcher.stop()
                retries = dispatcher.retries
                metrics.stop(linger_s=spec.execution.metrics_linger_s)  # Prometheus gets the final counts
        finally:
            metrics.stop()
            if started_ray:  # already connected by run_screen (which shuts it down): kept for direct callers
                _shutdown_ray()
    if blocks is not None:
        blocks.flush()
    store.mark_complete()
    return ScreenSummary(
        store=str(spec.output.store),
        n_perturbations=plan.n_perturbations,
        n_computed=n_todo,
        n_units=len(pending),
        seconds=time.perf_counter() - began,
        resumed=resumed,
        workers=names,
        retries=retries,
        damaged=list(store.damaged),
    )


def _keep_finished(blocks: BlockWriter | None, lease_held: Callable[[], bool]) -> None:
    """On a failed or cancelled run, write the units that did finish (best effort: the run's own error is
    the one reported); not once the lease is lost, when another driver may be writing the store."""
    if blocks is None or not lease_held():
        return
    try:
        blocks.flush()
    except Exception:  # noqa: BLE001  those units are recomputed by the next run
        pass


def _pending_units(store: ResultStore, plan: ScreenPlan) -> list[WorkUnit]:
    done = {(layout.chrom, layout.analysis): store.done_mask(layout.chrom, layout.analysis) for layout in plan.layouts}
    return [u for u in plan.units if not done[(u.chrom, u.analysis)][u.chunk]]
