"""Screens as Ray work that outlives the HTTP replicas: a detached job registry and one driver per screen.

* :class:`ScreenJob` runs in a detached, named Ray actor (``screening-job-<id>-<attempt>`` in the
  service's namespace). It checks the inputs and plans (:func:`~workers.driver.prepare_screen`),
  then drives :func:`~workers.driver.run_screen` on a thread with a progress callback and a
  cancellation event. Its Ray workers are owned by it, so killing it stops them too.
* :class:`JobManager` is one detached, named actor (``screening-job-manager``) holding the job
  records. Every record is also written to the registry (one JSON file per screen under the
  configured registry folder or bucket), so a restarted manager reloads them and reattaches to
  the job actors still running; a job whose actor is gone becomes ``interrupted`` and can be
  resumed (its store keeps every finished chunk).

Serve replicas only talk to the manager, so restarting a replica loses nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import traceback
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable

from screening.core.errors import USER_ERRORS
from screening.core.urls import is_url
from screening.service.states import ACTIVE, RESUMABLE, TERMINAL

__all__ = [
    "ACTIVE",
    "MANAGER_NAME",
    "RESUMABLE",
    "TERMINAL",
    "JobManager",
    "Registry",
    "ScreenJob",
    "get_manager",
    "failure_message",
    "new_job_id",
    "store_conflict",
]

log = logging.getLogger(__name__)

MANAGER_NAME = "screening-job-manager"
_PERSIST_EVERY_S = 10.0  # progress of a running screen is written to the registry this often
#: A screen still cancelling this long after the request has its driver (and so its workers) killed.
CANCEL_GRACE_S = 30.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_job_id() -> str:
    """A fresh screen id: 32 lowercase hex digits."""
    return uuid.uuid4().hex


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
#: Source files of the server (``/srv/.venv/lib/.../x.py``): shown by their file name only.
_SOURCE_PATH = re.compile(r"(?:/[^\s/:'\"(),]+)+/([^\s/:'\"(),]+\.(?:py|pyx|so))\b")
_LAST_EXCEPTION = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Exit))(?:\([^)]*\))?: (.+)$")


def _clean(text: str) -> str:
    """A message without ANSI colour codes and with server source paths reduced to file names."""
    return _SOURCE_PATH.sub(r"\1", _ANSI.sub("", text)).strip()


def _field_of(message: str) -> str | None:
    """The spec field a user-error message starts with (``execution.num_workers: ...``), if any."""
    match = re.match(r"^((?:model|execution|output|genome|tracks|perturbations|regions|bed)(?:\.[\w.]+)?): ", message)
    return match.group(1) if match else None


def failure_message(err: BaseException) -> str:
    """What a user is told about a failed screen (the traceback goes to the server log only).

    Ray's wrappers are unwrapped to the error raised in the worker; the package's user errors
    (:data:`screening.core.errors.USER_ERRORS`) are reported as their message, anything else as
    ``Type: message``; ANSI codes and server source paths are removed.
    """
    import ray

    seen: set[int] = set()
    while isinstance(err, ray.exceptions.RayTaskError) and id(err) not in seen:
        seen.add(id(err))
        if not isinstance(err.cause, BaseException):
            break
        err = err.cause
    if isinstance(err, ray.exceptions.RayActorError):
        text = _clean(str(err))
        if getattr(err, "actor_init_failed", False):
            causes = [m for line in text.splitlines() if (m := _LAST_EXCEPTION.match(line.strip()))]
            detail = f"{causes[-1].group(1)}: {causes[-1].group(2)}" if causes else type(err).__name__
            return f"a Ray worker could not start: {detail}"
        return f"a Ray worker died ({type(err).__name__}): {text.splitlines()[0] if text else 'no detail'}"
    if isinstance(err, ray.exceptions.RayTaskError):  # a cause Ray could not carry over
        lines = [line for line in _clean(str(err)).splitlines() if line.strip()]
        return lines[-1] if lines else type(err).__name__
    if isinstance(err, USER_ERRORS):
        return _clean(str(err))
    return f"{type(err).__name__}: {_clean(str(err))}"


# --------------------------------------------------------------------------- the driver of one screen


class ScreenJob:
    """Drives one attempt of one screen (instantiated as a detached Ray actor).

    Parameters
    ----------
    job_id
        The screen id.
    spec_json
        The validated spec as JSON-able data (already placed and checked by the server policy).
    """

    def __init__(self, job_id: str, spec_json: dict[str, Any]) -> None:
        from screening.spec import ScreenSpec

        self.job_id = job_id
        self.spec = ScreenSpec.model_validate(spec_json)
        self.prepared = None
        self.state = "created"
        self.progress: dict[str, Any] | None = None
        self.error: str | None = None
        self.finished: str | None = None
        self.cancel_event = threading.Event()
        self.thread: threading.Thread | None = None

    def prepare(self, max_perturbations: int) -> dict[str, Any]:
        """Open every input, load the model and plan; nothing is written.

        Returns ``{"ok": True, "n_perturbations", "n_units"}`` or ``{"ok": False, "error",
        "user"}`` (``user``: the spec's inputs are at fault, not the server).
        """
        from screening.prepare import prepare_screen
        from workers.driver import check_cluster_resources

        try:
            check_cluster_resources(self.spec.execution)  # workers the cluster cannot place would wait forever
            prepared = prepare_screen(self.spec)
        except USER_ERRORS as err:
            message = failure_message(err)
            return {"ok": False, "error": message, "user": True, "field": _field_of(message)}
        except Exception as err:  # noqa: BLE001 - reported to the caller, who answers 500
            log.exception("preparing screen %s failed", self.job_id)
            return {"ok": False, "error": failure_message(err), "user": False}
        conflict = self._store_conflict()
        if conflict:
            return {"ok": False, "user": True, "field": "output.store", "error": conflict}
        n = prepared.plan.n_perturbations
        if n > max_perturbations:
            return {
                "ok": False,
                "user": True,
                "field": "perturbations",
                "error": f"perturbations: the screen has {n:,} perturbations; this server runs at most "
                f"{max_perturbations:,} per screen (max_perturbations)",
            }
        self.prepared = prepared
        self.state = "prepared"
        return {"ok": True, "n_perturbations": n, "n_units": len(prepared.plan.units)}

    def _store_conflict(self) -> str | None:
        """Why the spec's store cannot be written (another spec's store, or not a store), else None.

        The runner refuses these too, but only once running: checked here, the submit answers 422.
        """
        from screening.store.layout import StoreNotFoundError, read_store_attrs

        output = self.spec.output
        try:
            attrs = read_store_attrs(output.store)
        except StoreNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - unreadable here: leave the verdict to the runner
            return None
        if attrs is None:  # remote stores read as None when absent too: the runner decides for those
            local = not is_url(output.store, include_file=False)
            return f"output.store: {output.store} exists and is not a screening result store" if local else None
        if attrs.get("spec_sha256") != self.spec.science_hash() and not output.overwrite:
            return (f"output.store: {output.store} holds the results of another spec "
                    f"({(attrs.get('spec') or {}).get('name', '?')!r}); choose another store or set output.overwrite")
        return None

    def start(self) -> None:
        """Run the prepared screen on a thread; returns at once."""
        if self.prepared is None:
            raise RuntimeError("prepare() first")
        self.state = "running"
        self.thread = threading.Thread(target=self._run, name=f"screen-{self.job_id}", daemon=True)
        self.thread.start()

    def _on_progress(self, progress) -> None:
        self.progress = progress.as_dict()

    def _run(self) -> None:
        from workers.driver import ScreenCancelled, run_screen

        try:
            run_screen(self.spec, progress=False, prepared=self.prepared, on_progress=self._on_progress,
                       cancel=self.cancel_event, screen_id=self.job_id)
            state = "completed"
        except ScreenCancelled as err:
            if err.progress is not None:
                self.progress = err.progress.as_dict()
            state = "cancelled"
        except BaseException as err:  # noqa: BLE001 - any failure ends the screen as failed, with its message
            log.error("screen %s failed:\n%s", self.job_id, traceback.format_exc())  # the full story: server log
            self.error = failure_message(err)
            state = "failed"
        self.prepared = None  # the model and plan are not needed any more
        self.finished = _now()
        self.state = state

    def status(self) -> dict[str, Any]:
        """``state`` (running, completed, failed, cancelled), ``progress``, ``error``, ``finished``."""
        return {"state": self.state, "progress": self.progress, "error": self.error, "finished": self.finished}

    def cancel(self) -> None:
        """Ask the run to stop (the runner stops dispatching and kills in-flight work)."""
        self.cancel_event.set()


# --------------------------------------------------------------------------- the registry


class Registry:
    """Job records as JSON files (``<id>.json``) in a local folder or an fsspec URL."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        self.fs.makedirs(self.root, exist_ok=True)

    def save(self, record: dict[str, Any]) -> None:
        """Write one record (atomically for a local folder: written aside, then renamed)."""
        data = json.dumps(record, sort_keys=True).encode()
        path = f"{self.root}/{record['id']}.json"
        if self.local:
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        else:
            self.fs.pipe(path, data)

    def load_all(self) -> list[dict[str, Any]]:
        """Every readable record (unreadable files are logged and skipped)."""
        records = []
        for path in sorted(self.fs.glob(f"{self.root}/*.json")):
            try:
                records.append(json.loads(self.fs.cat(path)))
            except (OSError, ValueError) as err:
                log.warning("skipping unreadable job record %s: %s", path, err)
        return records


# --------------------------------------------------------------------------- the manager


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """A record as the API shows it (without the spec and the actor name)."""
    shown = {k: v for k, v in record.items() if k not in ("spec", "actor")}
    shown["resumable"] = record["state"] in RESUMABLE
    return shown


def _store_progress(store: str) -> dict[str, Any] | None:
    """Units done/total read from the store's per-chunk completion record (None if unreadable)."""
    try:
        from screening.store.reader import open_results

        done, total = open_results(store).progress
    except Exception:  # noqa: BLE001 - a store not created yet, or unreachable: no numbers
        return None
    return {"units_done": int(done), "units_total": int(total)}


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


def store_conflict(store: str, overwrite: bool, records: Iterable[dict[str, Any]]) -> str | None:
    """Why a new screen may not write ``store`` given the existing job ``records``, else None.

    A store is its screen's: no other screen may replace it (``overwrite``), whatever that screen's
    state, or write it while that screen is active; nor may a store lie inside another screen's store
    or contain one. Without ``overwrite``, a finished screen's store may be named again by the same spec
    (the run then finds every chunk done) and by no other spec (the job refuses it, 422).
    """
    for record in records:
        theirs = record["store"]
        if theirs == store and record["state"] in ACTIVE:
            return f"output.store: {store} is being written by screen {record['id']}"
        if theirs == store and overwrite:
            return (f"output.store: {store} holds the results of screen {record['id']} ({record['state']}); "
                    "overwrite never replaces another screen's store: choose another store")
        if _inside(store, theirs) or _inside(theirs, store):
            return f"output.store: {store} overlaps the store of screen {record['id']} ({theirs})"
    return None


class JobManager:
    """The job registry (instantiated as one detached, named Ray actor with a thread pool).

    Parameters
    ----------
    registry
        Folder or URL of the job records.
    namespace
        Ray namespace of the job actors.
    poll_s
        How often running jobs are asked for their progress.
    """

    def __init__(self, registry: str, namespace: str, poll_s: float = 1.0) -> None:
        self.registry = Registry(registry)
        self.namespace = namespace
        self.poll_s = poll_s
        self.lock = threading.RLock()
        self.records: dict[str, dict[str, Any]] = {r["id"]: r for r in self.registry.load_all() if "id" in r}
        self.handles: dict[str, Any] = {}
        self.persisted: dict[str, float] = {}
        self.cancel_asked: dict[str, float] = {}  # job id -> when cancel was asked (monotonic)
        self.cancel_grace_s = CANCEL_GRACE_S
        for record in self.records.values():
            self._reattach(record)
        threading.Thread(target=self._poll_forever, name="job-poll", daemon=True).start()

    # -- helpers
    def _save(self, record: dict[str, Any]) -> None:
        self.registry.save(record)
        self.persisted[record["id"]] = time.monotonic()

    def _reattach(self, record: dict[str, Any]) -> None:
        """After a manager restart: find the actor of each active job, or mark the job interrupted."""
        import ray

        if record["state"] not in ACTIVE:
            return
        try:
            self.handles[record["id"]] = ray.get_actor(record["actor"], namespace=self.namespace)
        except (ValueError, KeyError, TypeError):
            self._interrupted(record, "its driver was lost while the job registry restarted")

    def _driver_gone(self, record: dict[str, Any]) -> None:
        """Forget a screen's driver that died or was killed, and break its store lease so that a resume
        need not wait for the lease to expire."""
        from screening.store.lease import break_lease

        self.handles.pop(record["id"], None)
        self.cancel_asked.pop(record["id"], None)
        break_lease(record["store"], (record.get("spec") or {}).get("output", {}).get("storage_options"))

    def _interrupted(self, record: dict[str, Any], why: str) -> None:
        progress = _store_progress(record["store"])
        if progress is not None:
            record["progress"] = {**(record.get("progress") or {}), **progress, "rate": None, "eta_s": None}
        record.update(state="interrupted", finished=_now())
        record["errors"].append(f"{_now()}: {why}; resume to continue from the finished chunks")
        self._driver_gone(record)
        self._save(record)

    def _active_on(self, store: str) -> str | None:
        for record in self.records.values():
            if record["store"] == store and record["state"] in ACTIVE:
                return record["id"]
        return None

    def _store_taken(self, store: str, overwrite: bool) -> dict[str, Any] | None:
        """A 409 answer when a new screen may not write ``store``, else None (call under the lock)."""
        conflict = store_conflict(store, overwrite, self.records.values())
        return None if conflict is None else {"status": 409, "field": "output.store", "error": conflict}

    def _launch(self, record: dict[str, Any], max_perturbations: int, timeout_s: float) -> dict[str, Any] | None:
        """Start a new attempt: a detached job actor that prepares, then runs. An error dict on failure."""
        import ray

        attempt = int(record["attempts"]) + 1
        actor_name = f"screening-job-{record['id']}-{attempt}"
        handle = ray.remote(ScreenJob).options(
            name=actor_name, namespace=self.namespace, lifetime="detached", num_cpus=0, max_concurrency=4,
            max_restarts=0,
        ).remote(record["id"], record["spec"])
        try:
            outcome = ray.get(handle.prepare.remote(max_perturbations), timeout=timeout_s)
            if outcome["ok"]:
                ray.get(handle.start.remote(), timeout=60)
        except Exception as err:  # noqa: BLE001 - Ray errors and timeouts: the server's problem
            ray.kill(handle, no_restart=True)
            timed_out = isinstance(err, ray.exceptions.GetTimeoutError)
            message = f"checking the inputs took over {timeout_s:.0f} s" if timed_out else f"{type(err).__name__}: {err}"
            return {"status": 504 if timed_out else 500, "error": f"could not start the screen: {message}"}
        if not outcome["ok"]:
            ray.kill(handle, no_restart=True)
            return {"status": 422 if outcome["user"] else 500, "error": outcome["error"], "field": outcome.get("field")}
        with self.lock:
            record.update(
                state="running", actor=actor_name, attempts=attempt, started=_now(), finished=None,
                n_perturbations=outcome["n_perturbations"], n_units=outcome["n_units"],
            )
            self.handles[record["id"]] = handle
            self._save(record)
        return None

    # -- API (called by the Serve replicas)
    def ping(self) -> bool:
        """Liveness."""
        return True

    def submit(
        self, job_id: str, spec_json: dict[str, Any], max_perturbations: int, timeout_s: float
    ) -> dict[str, Any]:
        """Register and start a screen whose spec passed the server policy.

        Returns ``{"record": ...}`` or ``{"status": 409/422/500/504, "error", "field"?}``.
        """
        store = spec_json["output"]["store"]
        with self.lock:
            taken = self._store_taken(store, bool(spec_json["output"].get("overwrite")))
            if taken is not None:
                return taken
            record = {
                "id": job_id, "name": spec_json.get("name", "screen"), "state": "validating", "store": store,
                "spec": spec_json, "submitted": _now(), "started": None, "finished": None, "attempts": 0,
                "n_perturbations": None, "n_units": None, "progress": None, "errors": [], "actor": None,
            }
            self.records[job_id] = record
        failure = self._launch(record, max_perturbations, timeout_s)
        if failure is not None:
            with self.lock:
                self.records.pop(job_id, None)  # refused: the screen never existed
            return failure
        return {"record": _public(record)}

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The public record of one screen, or None."""
        with self.lock:
            record = self.records.get(job_id)
            return None if record is None else _public(record)

    def store_of(self, job_id: str) -> str | None:
        """The store path of a screen (it never changes), or None."""
        record = self.records.get(job_id)
        return None if record is None else record["store"]

    def list(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Public records, newest first, optionally of one state."""
        with self.lock:
            records = [r for r in self.records.values() if state is None or r["state"] == state]
            records.sort(key=lambda r: r["submitted"], reverse=True)
            return [_public(r) for r in records[:limit]]

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask a running screen to stop. ``{"record"}`` or ``{"status": 404/409, "error"}``."""
        with self.lock:
            record = self.records.get(job_id)
            if record is None:
                return {"status": 404, "error": f"no screen {job_id}"}
            if record["state"] in ("cancelling",):
                return {"record": _public(record)}
            if record["state"] != "running":
                return {"status": 409, "error": f"screen {job_id} is {record['state']}; only a running screen can be cancelled"}
            handle = self.handles.get(job_id)
            record["state"] = "cancelling"
            self.cancel_asked[job_id] = time.monotonic()
            self._save(record)
        if handle is not None:
            handle.cancel.remote()
        return {"record": _public(record)}

    def resume(self, job_id: str, max_perturbations: int, timeout_s: float) -> dict[str, Any]:
        """Start a new attempt of a cancelled, failed or interrupted screen on its store."""
        with self.lock:
            record = self.records.get(job_id)
            if record is None:
                return {"status": 404, "error": f"no screen {job_id}"}
            if record["state"] not in RESUMABLE:
                return {"status": 409, "error": f"screen {job_id} is {record['state']}; only "
                        f"{', '.join(RESUMABLE)} screens can be resumed"}
            other = self._active_on(record["store"])
            if other is not None:
                return {"status": 409, "error": f"its store is being written by screen {other}"}
            previous = record["state"]
            record["spec"]["output"]["overwrite"] = False  # resuming must never replace the store
            record["state"] = "validating"
        failure = self._launch(record, max_perturbations, timeout_s)
        if failure is not None:
            with self.lock:
                record["state"] = previous
                record["errors"].append(f"{_now()}: resume refused: {failure['error']}")
                self._save(record)
            return failure
        return {"record": _public(record)}

    def summary(self) -> list[dict[str, Any]]:
        """Every public record (for /metrics)."""
        with self.lock:
            return [_public(r) for r in self.records.values()]

    # -- polling
    def _poll_forever(self) -> None:
        while True:
            time.sleep(self.poll_s)
            with self.lock:
                running = [r for r in self.records.values() if r["state"] in ("running", "cancelling")]
            for record in running:
                try:
                    self._poll(record)
                except Exception:  # noqa: BLE001 - one bad job must not stop the polling of the others
                    log.exception("polling screen %s failed", record["id"])

    def _poll(self, record: dict[str, Any]) -> None:
        import ray

        handle = self.handles.get(record["id"])
        if handle is None:
            with self.lock:
                self._interrupted(record, "its driver is gone")
            return
        if record["state"] == "cancelling":
            asked = self.cancel_asked.setdefault(record["id"], time.monotonic())  # e.g. after a manager restart
            if time.monotonic() - asked > self.cancel_grace_s:
                self._force_cancel(record, handle)
                return
        try:
            status = ray.get(handle.status.remote(), timeout=10)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.ActorUnavailableError):
            return  # busy or briefly unreachable: ask again next time
        except ray.exceptions.RayActorError as err:
            with self.lock:
                self._interrupted(record, f"its driver died ({type(err).__name__})")
            return
        with self.lock:
            if status["progress"] is not None:
                record["progress"] = status["progress"]
            if status["state"] in TERMINAL:
                record.update(state=status["state"], finished=status["finished"])
                if status["error"]:
                    record["errors"].append(f"{status['finished']}: {status['error']}")
                self.handles.pop(record["id"], None)
                self.cancel_asked.pop(record["id"], None)
                self._save(record)
                ray.kill(handle, no_restart=True)
            elif time.monotonic() - self.persisted.get(record["id"], 0.0) > _PERSIST_EVERY_S:
                self._save(record)

    def _force_cancel(self, record: dict[str, Any], handle: Any) -> None:
        """End a screen that did not stop when asked: kill its driver (its workers die with it)."""
        import ray

        ray.kill(handle, no_restart=True)
        with self.lock:
            progress = _store_progress(record["store"])
            if progress is not None:
                record["progress"] = {**(record.get("progress") or {}), **progress, "rate": None, "eta_s": None}
            record.update(state="cancelled", finished=_now())
            record["errors"].append(f"{_now()}: did not stop within {self.cancel_grace_s:.0f} s of the cancel; "
                                    "its driver and workers were killed")
            self._driver_gone(record)
            self._save(record)

    def shutdown(self) -> int:
        """Stop every active screen for a service shutdown: their drivers (and so their workers) are killed and
        the screens become ``interrupted`` (resumable). Returns how many were stopped."""
        import ray

        with self.lock:
            active = [r for r in self.records.values() if r["state"] in ACTIVE]
            for record in active:
                handle = self.handles.get(record["id"])
                if handle is not None:
                    ray.kill(handle, no_restart=True)
                self._interrupted(record, "the service was shut down")
        return len(active)


def get_manager(registry: str, namespace: str):
    """The detached job manager actor, created on first use (restarted by Ray if its process dies)."""
    import ray

    return ray.remote(JobManager).options(
        name=MANAGER_NAME, namespace=namespace, lifetime="detached", get_if_exists=True, max_restarts=-1,
        max_concurrency=64, num_cpus=0,
    ).remote(registry, namespace)
