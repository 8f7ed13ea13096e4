"""One driver per result store: a lease file beside the store, with an owner and an expiry.

The lease is the JSON object ``<store>.screening-lock`` (a sibling of the store, not inside it:
it must exist before the store is built and survive ``--overwrite``, which renames or deletes
the store). It records its owner (host, pid, a random token), when it was acquired and when it
expires. The driver renews it while it runs and deletes it at the end (also on error or cancel).

A second driver finds the lease held and stops with a :class:`~screening.store.layout.StoreError`
naming the store and the owner. A lease is *stale*, and is taken over, once it has expired
(its driver died without releasing it) or, on the same host, when its pid is no longer alive.

Atomicity: on a local filesystem a new lease is created complete and exclusively (a hard link
of a written file, or ``O_EXCL`` where there are no links), so exactly one of
two drivers gets it. Object stores reached through fsspec offer no portable conditional put,
so there (and when taking over a stale lease anywhere) the driver writes its lease, waits a
moment, reads it back and keeps it only if its own token is still there. Two drivers whose
writes land further apart than that delay could both believe they hold it; the renewal
(every ``ttl/3``) then finds the other token, and the driver that lost stops with an error.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Mapping

from screening.store.location import Location
from screening.store.layout import StoreError

__all__ = ["LEASE_SUFFIX", "StoreLease", "break_lease"]

LEASE_SUFFIX = ".screening-lock"
TTL_S = 60.0  # a lease not renewed for this long belongs to a dead driver
SETTLE_S = 1.0  # write → read-back delay of a non-exclusive acquisition


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class StoreLease:
    """The lease of one result store, as a context manager.

    Parameters
    ----------
    store
        The store's path or fsspec URL.
    storage_options
        fsspec options of a URL.
    ttl_s
        Seconds a lease stays valid without renewal; renewed every ``ttl_s / 3``.
    settle_s
        Write → read-back delay where no exclusive create is available.

    Raises
    ------
    StoreError
        On entering, if another live driver holds the lease (the message names it).
    """

    def __init__(
        self,
        store: str | os.PathLike,
        storage_options: Mapping[str, Any] | None = None,
        *,
        ttl_s: float = TTL_S,
        settle_s: float = SETTLE_S,
    ) -> None:
        if str(store).rstrip("/").endswith(LEASE_SUFFIX):
            raise StoreError(f"output.store: {store} ends in {LEASE_SUFFIX!r}, the name of a store's lease; choose another name")
        self.location = store if isinstance(store, Location) else Location(store, storage_options)
        self.ttl_s, self.settle_s = float(ttl_s), float(settle_s)
        self.token = uuid.uuid4().hex
        self.owner = {"host": platform.node(), "pid": os.getpid(), "token": self.token}
        self.acquired: float | None = None
        self.lost: str | None = None  # why the lease was lost while held
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"StoreLease({self.path!r})"

    # -- the lease object
    @property
    def path(self) -> str:
        """Where the lease lives: a local path or the fsspec path of the object."""
        if self.location.remote:
            return f"{self.location.root}{LEASE_SUFFIX}"
        return f"{self.location.local_path}{LEASE_SUFFIX}"

    def _record(self) -> dict[str, Any]:
        now = time.time()
        return {
            "store": str(self.location),
            "owner": self.owner,
            "acquired": _iso(self.acquired or now),
            "renewed": _iso(now),
            "expires_unix": now + self.ttl_s,
            "expires": _iso(now + self.ttl_s),
        }

    def read(self) -> dict[str, Any] | None:
        """The lease as stored, or ``None`` when there is none (an unreadable one counts as stale)."""
        try:
            if self.location.remote:
                fs = self.location.fs
                fs.invalidate_cache()
                raw = fs.cat_file(self.path)
            else:
                with open(self.path, "rb") as handle:
                    raw = handle.read()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(raw)
            return record if isinstance(record, dict) else {}
        except ValueError:
            return {}  # torn or foreign: no valid owner, treated as stale

    def _write(self, record: dict[str, Any], exclusive: bool) -> bool:
        """Write the lease; with ``exclusive``, only if none exists (local ``O_EXCL``). False if one did."""
        data = json.dumps(record, indent=1).encode()
        if self.location.remote:
            self.location.fs.pipe_file(self.path, data)
            return True
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = f"{self.path}.{self.token}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        if not exclusive:
            os.replace(tmp, self.path)  # readers see the old or the new lease, never half of one
            return True
        try:
            # link() is an exclusive create of a complete file: it fails if the lease exists, and
            # no reader ever sees it empty (as it could between O_EXCL open and write).
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: O_EXCL
            return self._create_excl(data)
        finally:
            os.remove(tmp)

    def _create_excl(self, data: bytes) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return True

    def _delete(self) -> None:
        try:
            if self.location.remote:
                self.location.fs.rm_file(self.path)
            else:
                os.remove(self.path)
        except FileNotFoundError:
            pass

    def stale(self, record: dict[str, Any]) -> bool:
        """Whether a stored lease belongs to no live driver: expired, unreadable, or a dead pid here."""
        owner = record.get("owner") if isinstance(record.get("owner"), dict) else {}
        expires = record.get("expires_unix")
        if not owner.get("token") or not isinstance(expires, (int, float)) or expires < time.time():
            return True
        if owner.get("host") == platform.node() and not self.location.remote and isinstance(owner.get("pid"), int):
            return not _pid_alive(owner["pid"])
        return False

    def _held_error(self, record: dict[str, Any]) -> StoreError:
        owner = record.get("owner", {})
        return StoreError(
            f"{self.location} is in use by another screening driver (host {owner.get('host')}, pid "
            f"{owner.get('pid')}, since {record.get('acquired')}; its lease {self.path} expires "
            f"{record.get('expires')} unless renewed). Wait for that run to finish or stop it; a lease "
            "whose driver died is taken over once it expires (at once on the same host)."
        )

    # -- acquire, renew, release
    def acquire(self) -> StoreLease:
        """Take the lease (or take over a stale one) and start renewing it.

        Raises
        ------
        StoreError
            If another live driver holds it, or the lease cannot be written (the message names
            the store).
        """
        try:
            self._acquire()
        except StoreError:
            raise
        except Exception as err:  # noqa: BLE001  fsspec/OS errors: name the store
            raise StoreError(f"{self.location}: cannot take the store's lease {self.path}: {type(err).__name__}: {err}") from err
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease {self.location}", daemon=True)
        self._thread.start()
        return self

    def _acquire(self) -> None:
        self.acquired = time.time()
        record = self.read()
        if record is None and not self.location.remote:
            if self._write(self._record(), exclusive=True):
                return
            record = self.read()
        if record is not None and not self.stale(record):
            raise self._held_error(record)
        # No exclusive create here (an object store, or a stale lease to replace): write, wait,
        # read back; whoever wrote last keeps it.
        self._write(self._record(), exclusive=False)
        time.sleep(self.settle_s)
        now = self.read()
        if now is None or (now.get("owner") or {}).get("token") != self.token:
            raise self._held_error(now or {})

    def check(self) -> None:
        """Raise :class:`StoreError` if the lease was lost while held (another driver took it)."""
        if self.lost:
            raise StoreError(f"{self.location}: {self.lost}; this run stops (finished units stay done)")

    def renew(self) -> None:
        """Extend the lease by ``ttl_s``; record in ``lost`` if another driver holds it now."""
        record = self.read()
        if record is None or (record.get("owner") or {}).get("token") != self.token:
            owner = (record or {}).get("owner") or {}
            self.lost = (
                f"lost the store's lease {self.path} to another driver (host {owner.get('host')}, "
                f"pid {owner.get('pid')})" if record else f"the store's lease {self.path} was deleted"
            )
            return
        self._write(self._record(), exclusive=False)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
            except Exception:  # noqa: BLE001  transient I/O: try again next time; expiry bounds the harm
                continue
            if self.lost:
                return

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            record = self.read()
            if record is not None and (record.get("owner") or {}).get("token") == self.token:
                self._delete()
        except Exception:  # noqa: BLE001  best effort: an unreleased lease expires
            pass

    def __enter__(self) -> StoreLease:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def break_lease(store: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Delete a store's lease whose driver is known to be dead.

    For a supervisor that killed the driver itself (the service's job manager), so that a resume
    need not wait for the lease to expire when the driver ran on another host.
    """
    lease = StoreLease(store, storage_options)
    try:
        lease._delete()
    except Exception:  # noqa: BLE001  best effort: the lease expires on its own
        pass
