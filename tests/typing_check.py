"""Type-checked by mypy (tests/test_architecture.py), never run: what a user's type checker sees of the public API.

``assert_type`` fails on a value typed ``Any`` too, so a lazy ``screening.open_results`` or ``screening.Client``
that hides its type from type checkers breaks this check.
"""

from __future__ import annotations

from typing import Any, assert_type

import xarray as xr

import screening
from screening import Client, open_results
from screening.client import Screen, ServiceError
from screening.results import Results as DeprecatedResults
from screening.spec import ScreenSpec, load_spec
from screening.store.reader import Results


def _public_entry_points(spec_path: str) -> None:
    results = screening.open_results("results/screen.zarr", storage_options={"anon": True})
    assert_type(results, Results)
    assert_type(open_results("results/screen.zarr"), Results)
    assert_type(results.query("chr1:1,400,000-1,410,000"), xr.Dataset)
    assert_type(results.query("chr1", analysis="del20").compute(), xr.Dataset)
    assert_type(results.progress, tuple[int, int])
    assert_type(results.analyses, list[str])
    assert_type(DeprecatedResults("results/screen.zarr"), Results)

    client = screening.Client("http://127.0.0.1:8000", token="secret")
    assert_type(client, Client)
    with Client("http://127.0.0.1:8000") as other:
        assert_type(other, Client)
    screen = client.submit(spec_path)
    assert_type(screen, Screen)
    assert_type(screen.query("chr1:1,400,000-1,410,000"), xr.Dataset)
    assert_type(screen.query("chr1", format="json"), xr.Dataset)
    assert_type(client.screen(screen.id).wait(progress=False), dict[str, Any])
    try:
        client.health()
    except ServiceError as err:
        assert_type(err.status, int)

    spec = load_spec(spec_path)
    assert_type(spec, ScreenSpec)
    assert_type(spec.perturbations[0].label, str)
