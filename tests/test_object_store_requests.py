"""Requests a format 3 store costs on an S3-compatible server (moto): creation, writes, resume, ``info``,
a cold query and the top hits of a small store, counted and bounded (issue 21)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from helpers import count_s3_calls, group_layout

from screening.store import writer as store_mod
from screening.store.writer import GroupLayout, create_store, open_or_create_store

pytest.importorskip("moto")

SPEC = {"name": "requests", "perturbations": [{"kind": "deletion", "width": 250}]}
SHA = "d" * 64
URL = "s3://bucket/r.zarr"
UNITS = 64  # per chromosome; blocks of 16 units: 4 blocks per chromosome


def layouts() -> list[GroupLayout]:
    out = []
    for chrom in ("chr1", "chr2"):
        start = np.arange(UNITS * 4, dtype=np.int64) * 100
        out.append(
            group_layout(start, ["insulation", "dist"], 4, 30_000, width=250, chrom=chrom, window_start=start - 500)
        )
    return out


@pytest.fixture
def requests(monkeypatch):
    """Every S3 API call s3fs makes, by operation name (one per HTTP request, retries aside)."""
    calls = count_s3_calls(monkeypatch)
    monkeypatch.setattr(store_mod, "block_units", lambda layout: min(16, layout.n_chunks))
    return calls


SEEN: dict[str, dict] = {}


def counted(calls: Counter, action, name: str = "") -> tuple[object, int, dict]:
    calls.clear()
    value = action()
    SEEN[name or str(len(SEEN))] = dict(calls)
    print(name, sum(calls.values()), dict(calls))
    return value, sum(calls.values()), dict(calls)


def test_request_counts_of_a_small_store(requests):
    from moto_s3 import s3_server

    from screening.report.hits import top_hits
    from screening.store.reader import Results

    lays = layouts()
    with s3_server(buckets=("bucket",)):
        store, create, detail = counted(requests, lambda: create_store(URL, SPEC, SHA, {}, lays))
        # metadata: root, 2 chromosome groups, 2 analysis groups, 10 arrays; coordinates: 6 chunks;
        # the consolidated root; plus the checks of an empty prefix
        assert create <= 45 and detail.get("put_object", 0) <= 32, detail  # measured: 38 (30 PUTs)

        def write_half():
            writer = store.block_writer(flush_s=3600)
            for lay in lays:
                for k in range(0, lay.n_chunks // 2):  # blocks 0 and 1 of each chromosome
                    writer.add(store.unit_record(lay.chrom, "del", k, {s: np.ones(4, np.float32) for s in lay.scores}))
            writer.flush()
            return writer.blocks_written

        blocks, writes, detail = counted(requests, write_half)
        assert blocks == 4 and detail["put_object"] == blocks * 6, detail  # 2 score shards, digest, 2 hits, flags
        assert writes <= 60, detail  # measured: 52 (opening the store, reading the empty blocks' flags)

        def resume():
            again, resumed = open_or_create_store(URL, SPEC, SHA, {}, lays)
            return resumed, len(again.pending_units())

        (resumed, pending), resume_requests, detail = counted(requests, resume)
        assert resumed and pending == 64
        # measured 24: root and flags (one object per block); regular coordinates are not read
        assert resume_requests <= 32, detail

        def info():
            results = Results(URL)
            return results.progress, results.is_complete, results.scores("del")

        (progress, complete, _), info_requests, detail = counted(requests, info)
        assert progress == (64, 128) and not complete
        assert info_requests <= 28, detail  # measured: 22

        frame, query_requests, detail = counted(requests, lambda: Results(URL).to_dataframe("chr1:1,000-2,000"))
        assert len(frame) == 12 and (frame["insulation"] == 1).all()
        assert query_requests <= 20, detail  # measured: 12

        hits, hits_requests, detail = counted(requests, lambda: top_hits(Results(URL), n=5))
        assert len(hits) == 5
        assert hits_requests <= 70, detail  # measured 60; per chromosome: flags, the summary, coordinates of the hits
        print(
            {
                "create": create,
                "writes": writes,
                "resume": resume_requests,
                "info": info_requests,
                "query_1kb": query_requests,
                "top_hits": hits_requests,
            }
        )
