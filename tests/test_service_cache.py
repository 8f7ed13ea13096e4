"""The service's store-handle cache (screening.service.api.ResultsCache): warm under use, bounded, sees overwrites."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("fastapi")

from screening.service.api import ResultsCache  # noqa: E402
from screening.store.layout import StoreNotFoundError  # noqa: E402
from screening.store.reader import open_results  # noqa: E402

from helpers import FakeRemote  # noqa: E402
from screening.store.writer import GroupLayout, create_store  # noqa: E402


def make_store(path, sha="a" * 64):
    start = np.arange(20, dtype=np.int64) * 100
    lay = GroupLayout(
        chrom="chr1",
        chrom_length=10_000,
        analysis="del",
        kind="deletion",
        params={},
        start=start,
        end=start + 100,
        window_start=start,
        scores=["s"],
        chunk_size=4,
    )
    create_store(path, {"name": "x"}, sha, {"created": sha[:4]}, [lay])
    return str(path)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def opened():
    calls = []

    def opener(store):
        calls.append(store)
        return open_results(store)

    return opener, calls


def test_a_handle_in_use_stays_warm(tmp_path, opened):
    opener, calls = opened
    store, clock = make_store(tmp_path / "a.zarr"), Clock()
    cache = ResultsCache(opener, ttl_s=30, clock=clock)
    first, lock = cache.get("job", store)
    for _ in range(10):  # a query every 20 s for 200 s: never reopened (it expired 30 s after opening before)
        clock.now += 20
        results, again = cache.get("job", store)
        assert results is first and again is lock
    assert calls == [store]
    clock.now += 31  # unused for longer than the ttl: reopened
    assert cache.get("job", store)[0] is not first and len(calls) == 2


def test_the_cache_is_bounded(tmp_path, opened):
    opener, calls = opened
    store, clock = make_store(tmp_path / "a.zarr"), Clock()
    cache = ResultsCache(opener, ttl_s=30, max_entries=2, clock=clock)
    a = cache.get("a", store)[0]
    cache.get("b", store)
    cache.get("a", store)  # a is the most recently used
    cache.get("c", store)  # b goes
    assert len(cache) == 2 and cache.get("a", store)[0] is a and len(calls) == 3
    cache.get("b", store)
    assert len(calls) == 4


def test_an_overwritten_store_is_seen_within_the_ttl(tmp_path, opened):
    opener, calls = opened
    path = tmp_path / "a.zarr"
    store, clock = make_store(path), Clock()
    cache = ResultsCache(opener, ttl_s=30, clock=clock)
    first = cache.get("job", store)[0]
    clock.now += 20
    assert cache.get("job", store)[0] is first
    shutil.rmtree(path)
    make_store(path, sha="b" * 64)  # --overwrite with another spec
    clock.now += 20  # in use, but last checked 40 s ago: rechecked and reopened
    second = cache.get("job", store)[0]
    assert second is not first and second.spec_sha256 == "b" * 64
    clock.now += 20
    assert cache.get("job", store)[0] is second  # unchanged: kept
    shutil.rmtree(path)
    clock.now += 20
    with pytest.raises(StoreNotFoundError):
        cache.get("job", store)


def test_queries_through_the_api_keep_one_open_store(tmp_path, monkeypatch):
    """Through the HTTP API (create_api, in-process): a query every 20 s for 200 s opens the store
    once (the handle's expiry slides with use); left unused for longer than the ttl, it is reopened."""
    import warnings

    from screening.service import api as api_mod
    from screening.service.auth import TokenStore
    from screening.service.config import ServiceConfig
    from screening.store import reader as reader_mod

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    store, clock, opens = make_store(tmp_path / "a.zarr"), Clock(), []
    real_open = reader_mod.open_results

    def counting_open(path, *args, **kwargs):
        opens.append(path)
        return real_open(path, *args, **kwargs)

    class Manager:
        store_of = FakeRemote(lambda job_id: store if job_id == "f" * 32 else None)
        ping = FakeRemote(lambda: "pong")

    monkeypatch.setattr(reader_mod, "open_results", counting_open)  # create_api imports it when it builds the app
    monkeypatch.setattr(api_mod, "ResultsCache", lambda opener: ResultsCache(opener, ttl_s=30, clock=clock))
    config = ServiceConfig.from_args({"store_roots": [str(tmp_path)]}, environ={"SCREENING_API_TOKENS": "t"})
    app = api_mod.create_api(config, Manager(), TokenStore((), None, env_tokens="t"))
    with TestClient(app, base_url="http://testserver", headers={"Authorization": "Bearer t"}) as client:

        def query() -> None:
            answer = client.get(f"/screens/{'f' * 32}/results", params={"region": "chr1:0-1,000"})
            assert answer.status_code == 200 and answer.json()["coords"]["start"]["data"] == list(range(0, 1_000, 100))

        for _ in range(11):
            query()
            clock.now += 20
        assert opens == [store]
        clock.now += 31
        query()
        assert opens == [store, store]
