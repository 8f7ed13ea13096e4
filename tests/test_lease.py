"""One driver per result store (screening.store.lease)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from screening.store.lease import LEASE_SUFFIX, StoreLease
from screening.store.writer import StoreError


def lease_file(store) -> str:
    return f"{store}{LEASE_SUFFIX}"


def test_second_driver_is_refused_naming_the_store_and_owner(tmp_path):
    store = tmp_path / "s.zarr"
    with StoreLease(store) as first:
        record = json.loads(open(lease_file(store)).read())
        assert record["owner"] == {"host": first.owner["host"], "pid": os.getpid(), "token": first.token}
        with pytest.raises(StoreError, match=rf"{store} is in use by another screening driver .*pid {os.getpid()}"):
            StoreLease(store).acquire()
        assert json.loads(open(lease_file(store)).read())["owner"]["token"] == first.token  # untouched
    assert not os.path.exists(lease_file(store))  # released
    with StoreLease(store):  # free again
        pass


def test_released_on_error(tmp_path):
    store = tmp_path / "s.zarr"
    with pytest.raises(RuntimeError, match="boom"):
        with StoreLease(store):
            raise RuntimeError("boom")
    assert not os.path.exists(lease_file(store))


def test_expired_lease_is_taken_over(tmp_path):
    store = tmp_path / "s.zarr"
    dead = StoreLease(store, ttl_s=0.0)  # a driver that stopped renewing at once
    dead._acquire()
    with StoreLease(store, settle_s=0.01) as taker:
        assert json.loads(open(lease_file(store)).read())["owner"]["token"] == taker.token
        dead.renew()
        with pytest.raises(StoreError, match="lost the store's lease"):
            dead.check()
    dead.release()  # not ours any more: nothing to delete, no error


def test_lease_of_a_dead_process_on_this_host_is_stale(tmp_path):
    store = tmp_path / "s.zarr"
    code = (
        "import sys; from screening.store.lease import StoreLease; "
        f"StoreLease({str(store)!r}, ttl_s=3600)._acquire()"  # exits without releasing
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    record = json.loads(open(lease_file(store)).read())
    assert record["owner"]["pid"] != os.getpid()
    with StoreLease(store, settle_s=0.01) as lease:
        assert json.loads(open(lease_file(store)).read())["owner"]["token"] == lease.token


def test_unreadable_lease_is_stale(tmp_path):
    store = tmp_path / "s.zarr"
    with open(lease_file(store), "w") as handle:
        handle.write("{not json")
    with StoreLease(store, settle_s=0.01):
        pass


def test_only_one_of_racing_drivers_gets_a_fresh_lease(tmp_path):
    store = tmp_path / "s.zarr"
    barrier = threading.Barrier(8)
    won, refused = [], []

    def driver():
        lease = StoreLease(store)
        barrier.wait()
        try:
            lease._acquire()
            won.append(lease)
        except StoreError:
            refused.append(lease)

    threads = [threading.Thread(target=driver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(won) == 1 and len(refused) == 7


def test_renewal_extends_the_lease_and_notices_a_deleted_one(tmp_path):
    store = tmp_path / "s.zarr"
    with StoreLease(store) as lease:
        before = json.loads(open(lease_file(store)).read())["expires_unix"]
        lease.renew()
        assert json.loads(open(lease_file(store)).read())["expires_unix"] >= before
        lease.check()
        os.remove(lease_file(store))
        lease.renew()
        with pytest.raises(StoreError, match="was deleted"):
            lease.check()


def test_lease_on_an_object_store(tmp_path):
    pytest.importorskip("moto")
    from moto_s3 import s3_server, s3fs_client

    with s3_server(buckets=("bucket",)):
        url = "s3://bucket/screens/x.zarr"
        with StoreLease(url, settle_s=0.05) as first:
            assert s3fs_client().exists(f"bucket/screens/x.zarr{LEASE_SUFFIX}")
            with pytest.raises(StoreError, match=rf"{url} is in use by another screening driver"):
                StoreLease(url, settle_s=0.05).acquire()
            first.renew()
            first.check()
        assert not s3fs_client().exists(f"bucket/screens/x.zarr{LEASE_SUFFIX}")
        stale = StoreLease(url, ttl_s=0.0, settle_s=0.05)
        stale._acquire()
        with StoreLease(url, settle_s=0.05) as taker:
            assert taker.read()["owner"]["token"] == taker.token


def test_a_store_named_like_a_lease_is_refused(tmp_path):
    with pytest.raises(StoreError, match="output.store: .*name of a store's lease"):
        StoreLease(str(tmp_path / f"a.zarr{LEASE_SUFFIX}"))
    assert not list(tmp_path.iterdir())


def test_break_lease_frees_the_store_of_a_dead_driver(tmp_path):
    from screening.store.lease import break_lease

    store = str(tmp_path / "s.zarr")
    held = StoreLease(store, ttl_s=600).acquire()
    held._stop.set()  # its driver is killed: no renewal, no release
    with pytest.raises(StoreError, match="in use"):
        StoreLease(store).acquire()
    break_lease(store)
    with StoreLease(store) as lease:
        assert lease.read()["owner"]["token"] == lease.token
    break_lease(store)  # nothing to break: no error
