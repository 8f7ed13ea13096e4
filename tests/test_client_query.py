"""Screen.query (the HTTP client) returns the Dataset Results.query returns on the store: the same dimensions,
coordinates, variables, dtypes, attributes and backing (numpy coordinates and ``done``, dask scores).

The real FastAPI routes of the service (``create_api``) answer in-process through Starlette's test client, with a
stand-in for the job-manager actor: no Ray. The end-to-end path through Ray Serve is tests/test_service.py.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from screening import Client, open_results
from screening.client import Screen
from screening.service.api import create_api
from screening.service.auth import TokenStore
from screening.service.config import ServiceConfig
from screening.store.layout import GroupLayout

from helpers import FakeRemote
from screening.store.writer import create_store

TOKEN = "t1"
SCREEN_ID = "0123456789abcdef" * 2
N, CHUNK = 30, 8


def _store(path) -> None:
    """chr1: a deletion analysis with string and integer labels (its chunk 2 not done) and a mutagenesis analysis
    (``[perturbation, base]`` and a per-position score); chr2: the deletions only."""
    start = np.arange(N, dtype=np.int64) * 50
    labels = {"id": np.array([f"rs{i}" for i in range(N)]), "rank": np.arange(N, dtype=np.int32)}

    def deletions(chrom: str) -> GroupLayout:
        return GroupLayout(chrom=chrom, chrom_length=5_000, analysis="del", kind="deletion",
                           params={"width": 20, "steps": [1, 2]}, start=start, end=start + 20,
                           window_start=start - 100, scores=["impact", "insulation"], chunk_size=CHUNK, labels=labels)

    mutagenesis = GroupLayout(chrom="chr1", chrom_length=5_000, analysis="mut", kind="mutagenesis", params={},
                              start=start, end=start + 1, window_start=start - 100, scores=["delta", "worst"],
                              chunk_size=CHUNK, extra_dims={"base": 4}, score_dims={"worst": []})
    layouts = [deletions("chr1"), mutagenesis, deletions("chr2")]
    store = create_store(path, {"name": "client-query"}, "a" * 64, {"package_version": "test"}, layouts)
    values = np.arange(N, dtype=np.float32)
    for lay in layouts:
        for k in range(lay.n_chunks):
            if lay.analysis == "del" and lay.chrom == "chr1" and k == 2:
                continue  # not done: NaN on both sides
            rows = lay.chunk_slice(k)
            if lay.analysis == "del":
                scores = {"impact": values[rows], "insulation": -values[rows]}
            else:
                scores = {"delta": np.outer(values, np.arange(4, dtype=np.float32))[rows], "worst": values[rows]}
            store.write_chunk(lay.chrom, lay.analysis, k, scores)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(Screen handle on the in-process service, path of its store)."""
    with warnings.catch_warnings():  # "install httpx2 instead": the httpx-based test client is what we have
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    root = tmp_path_factory.mktemp("client_query")
    path = root / "screen.zarr"
    _store(path)

    class Manager:
        store_of = FakeRemote(lambda job_id: str(path) if job_id == SCREEN_ID else None)
        ping = FakeRemote(lambda: "pong")

    config = ServiceConfig.from_args({"store_roots": [str(root)]}, environ={"SCREENING_API_TOKENS": TOKEN})
    app = create_api(config, Manager(), TokenStore((), None, env_tokens=TOKEN))
    client = Client("http://testserver", TOKEN)
    client._http.close()
    client._http = TestClient(app, base_url="http://testserver", headers={"Authorization": f"Bearer {TOKEN}"})
    with client:
        yield Screen(client, SCREEN_ID), path


@pytest.mark.parametrize("fmt", ["arrow", "json"])
@pytest.mark.parametrize(
    "region, analysis",
    [
        ("chr1:100-700", "del"),  # labels, a chunk that is not done
        ("chr1", "del"),  # a whole chromosome
        ("chr1:4,990-5,000", "del"),  # no perturbation overlaps
        ("chr1:120-480", "mut"),  # [perturbation, base] and [perturbation] scores
        ("chr1:4,990-5,000", "mut"),  # empty, with a [perturbation, base] score
        ("chr2", "mut"),  # the analysis has no group on this chromosome
    ],
)
def test_a_client_query_is_the_dataset_of_a_local_query(served, fmt, region, analysis):
    screen, path = served
    remote = screen.query(region, analysis, format=fmt)
    local = open_results(path).query(region, analysis)

    assert isinstance(remote, xr.Dataset)
    assert dict(remote.sizes) == dict(local.sizes)
    assert set(remote.coords) == set(local.coords) and set(remote.data_vars) == set(local.data_vars)
    assert list(remote.data_vars) == list(local.data_vars)
    assert remote.attrs == local.attrs
    for name, variable in local.variables.items():
        got = remote.variables[name]
        assert (got.dims, got.dtype) == (variable.dims, variable.dtype), name
        assert type(got.data) is type(variable.data), (name, type(got.data), type(variable.data))
    scores = [name for name in local.data_vars if name != "done"]
    assert scores and all(isinstance(remote[name].data, da.Array) for name in scores)
    assert isinstance(remote["done"].data, np.ndarray)
    xr.testing.assert_identical(remote.compute(), local.compute())


def test_not_done_chunks_are_nan_on_both_sides(served):
    screen, path = served
    remote = screen.query("chr1", "del").compute()
    assert not remote["done"].values[2 * CHUNK:3 * CHUNK].any() and remote["done"].values.sum() == N - CHUNK
    assert np.isnan(remote["impact"].values[2 * CHUNK:3 * CHUNK]).all()
    assert remote["id"].values[0] == "rs0" and remote["rank"].dtype == np.int32
