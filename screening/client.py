"""Python client of the screening service.

>>> from screening import Client
>>> client = Client("http://screening:8000", token="...")          # or SCREENING_TOKEN
>>> screen = client.submit("my_screen.yaml")                        # a path, a mapping or a ScreenSpec
>>> screen.wait()                                                   # progress bar until it completes
>>> ds = screen.query("chr1:1,400,000-1,410,000")                  # xarray.Dataset shaped as Results.query
>>> screen.to_bedgraph("impact.bedGraph")

Paths inside a submitted spec are paths on the *server* (relative ones resolve against its first
input root; ``output.store`` against its first store root). Every HTTP error is raised as a
:class:`ServiceError` carrying the server's message.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import httpx

from screening.core.errors import ScreeningError
from screening.service.states import TERMINAL

if TYPE_CHECKING:  # xarray is imported by Screen.query only: `import screening` stays cheap
    import xarray as xr

__all__ = ["Client", "Screen", "ServiceError", "ScreenFailedError", "TERMINAL_STATES"]

TERMINAL_STATES = TERMINAL  # the states a screen ends in (screening.service.states)
TOKEN_ENV = "SCREENING_TOKEN"


class ServiceError(ScreeningError, RuntimeError):
    """An error answer of the service (or no answer at all).

    Attributes
    ----------
    status
        The HTTP status (0 when the server could not be reached).
    message
        The server's message (it names the bad field, region or screen).
    errors
        Per-field errors ``[{"field", "message"}]`` when the server gave them.
    """

    def __init__(self, status: int, message: str, errors: list[dict[str, str]] | None = None) -> None:
        self.status = status
        self.message = message
        self.errors = errors or []
        prefix = f"server answered {status}: " if status else ""
        super().__init__(prefix + message)


class ScreenFailedError(ScreeningError, RuntimeError):
    """:meth:`Screen.wait` saw the screen end without completing (failed, cancelled or interrupted)."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        errors = "; ".join(status.get("errors") or []) or "no error recorded"
        super().__init__(f"screen {status['id']} is {status['state']}: {errors}")


def _message(response: httpx.Response) -> tuple[str, list[dict[str, str]] | None]:
    try:
        body = response.json()
    except ValueError:
        return (response.text.strip()[:1000] or response.reason_phrase), None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # a plain FastAPI validation error
        return "; ".join(str(item.get("msg", item)) for item in detail), None
    return str(detail or body), body.get("errors") if isinstance(body, dict) else None


def _spec_document(spec: Any) -> dict[str, Any]:
    """A spec as the mapping to send: from a file (YAML/JSON), a mapping, or a ScreenSpec."""
    if isinstance(spec, (str, os.PathLike)):
        import yaml

        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"spec file {path} does not exist")
        try:
            document = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"spec file {path} is not valid YAML/JSON: {err}") from None
        if not isinstance(document, dict):
            raise ValueError(f"spec file {path}: expected a mapping at the top level")
        return document
    if isinstance(spec, Mapping):
        return dict(spec)
    if hasattr(spec, "model_dump"):
        return spec.model_dump(mode="json")
    raise TypeError(f"submit() takes a spec file path, a mapping or a ScreenSpec, not {type(spec).__name__}")


class Client:
    """A connection to a screening service.

    Parameters
    ----------
    url
        The service, e.g. ``http://127.0.0.1:8000``.
    token
        Bearer token; default ``$SCREENING_TOKEN``.
    timeout
        Seconds per HTTP request (a submit waits for the server to check inputs: give it time).
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 600.0) -> None:
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request; any error answer raises :class:`ServiceError` with the server's message."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise ServiceError(0, f"cannot reach the screening service at {self.url}: {err}") from None
        if response.status_code >= 400:
            message, errors = _message(response)
            raise ServiceError(response.status_code, message, errors)
        return response

    def health(self) -> dict[str, Any]:
        """``/healthz`` (no token needed)."""
        return self.request("GET", "/healthz").json()

    def submit(self, spec: Any) -> "Screen":
        """Submit a screen: a spec file path (YAML/JSON), a mapping or a ScreenSpec.

        Returns
        -------
        Screen
            A handle on the running screen.

        Raises
        ------
        ServiceError
            422 naming the bad field (or input file, region), 409 if its store is busy, 413 if too large.
        """
        record = self.request("POST", "/screens", json=_spec_document(spec)).json()
        return Screen(self, record["id"], record)

    def screen(self, screen_id: str) -> "Screen":
        """A handle on an existing screen (checked to exist)."""
        handle = Screen(self, screen_id)
        handle.status()
        return handle

    def screens(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Screens known to the server, newest first."""
        params = {"limit": limit, **({"state": state} if state else {})}
        return self.request("GET", "/screens", params=params).json()["screens"]


def _shaped_as_local_query(ds: xr.Dataset) -> xr.Dataset:
    """A decoded query result with Results.query's backing: scores as dask arrays (one chunk each), ``done`` and
    the coordinates as numpy arrays."""
    import dask.array as da

    scores = [name for name in ds.data_vars if name != "done"]
    return ds.assign({name: ds[name].copy(data=da.from_array(ds[name].values, chunks=-1)) for name in scores})


class Screen:
    """A handle on one screen of a service."""

    def __init__(self, client: Client, screen_id: str, record: dict[str, Any] | None = None) -> None:
        self.client = client
        self.id = screen_id
        self.last_status = record

    def __repr__(self) -> str:
        state = self.last_status["state"] if self.last_status else "?"
        return f"<Screen {self.id} ({state})>"

    @property
    def _path(self) -> str:
        return f"/screens/{self.id}"

    def status(self) -> dict[str, Any]:
        """``state``, ``progress`` (units/perturbations done and total, ``rate``, ``eta_s``), ``errors``…"""
        self.last_status = self.client.request("GET", self._path).json()
        return self.last_status

    def wait(self, timeout: float | None = None, poll_s: float = 1.0, progress: bool = True) -> dict[str, Any]:
        """Wait until the screen completes, with a progress bar over its perturbations.

        Raises
        ------
        ScreenFailedError
            If it ends failed, cancelled or interrupted.
        TimeoutError
            If ``timeout`` seconds pass first.
        """
        from tqdm.auto import tqdm

        deadline = None if timeout is None else time.monotonic() + timeout
        with tqdm(total=0, unit="pert", desc=self.id[:8], disable=not progress, dynamic_ncols=True) as bar:
            while True:
                status = self.status()
                report = status.get("progress") or {}
                if report.get("perturbations_total"):
                    bar.total = report["perturbations_total"]
                    bar.n = report.get("perturbations_done") or 0
                    eta = report.get("eta_s")
                    bar.set_postfix_str(f"{status['state']}" + (f", ETA {eta:.0f} s" if eta else ""))
                    bar.refresh()
                if status["state"] in TERMINAL_STATES:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"screen {self.id} still {status['state']} after {timeout} s")
                time.sleep(poll_s)
        if status["state"] != "completed":
            raise ScreenFailedError(status)
        return status

    def cancel(self) -> dict[str, Any]:
        """Stop the screen (finished chunks stay; :meth:`resume` continues it)."""
        self.last_status = self.client.request("POST", f"{self._path}/cancel").json()
        return self.last_status

    def resume(self) -> dict[str, Any]:
        """Continue a cancelled, failed or interrupted screen from its finished chunks."""
        self.last_status = self.client.request("POST", f"{self._path}/resume").json()
        return self.last_status

    def info(self) -> dict[str, Any]:
        """Analyses and their scores, chromosomes, and how complete the store is."""
        return self.client.request("GET", f"{self._path}/results/info").json()

    def query(self, region: str, analysis: str | None = None, format: str = "arrow") -> xr.Dataset:
        """The perturbations overlapping ``region`` (0-based, half-open), as an :class:`xarray.Dataset`.

        The Dataset :meth:`screening.store.reader.Results.query` returns on the server, with the same
        dimensions, coordinates, variables, dtypes and attributes: coordinates and ``done`` as numpy
        arrays, every score (NaN where not computed yet) as a dask array. Unlike a local query it is not
        lazy: the server reads the region and sends every score in one response (up to its
        ``max_query_rows``), so each score is one dask chunk over values already downloaded and
        ``.compute()``/``.values`` read nothing more. ``format`` ``arrow`` (binary, for any size) or
        ``json`` (small regions: ``max_json_rows``).
        """
        from screening.service.wire import dataset_from_arrow, dataset_from_json

        params = {"region": region, "format": format, **({"analysis": analysis} if analysis else {})}
        response = self.client.request("GET", f"{self._path}/results", params=params)
        ds = dataset_from_arrow(response.content) if format == "arrow" else dataset_from_json(response.json())
        return _shaped_as_local_query(ds)

    def _export(self, path: str | os.PathLike, fmt: str, score: str | None, analysis: str | None,
                region: str | None) -> Path:
        params = {"format": fmt, **{k: v for k, v in (("score", score), ("analysis", analysis), ("region", region)) if v}}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            with self.client._http.stream("GET", f"{self._path}/export", params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    message, errors = _message(response)
                    raise ServiceError(response.status_code, message, errors)
                with open(tmp, "wb") as out:
                    for block in response.iter_bytes():
                        out.write(block)
            os.replace(tmp, path)
        except httpx.HTTPError as err:
            raise ServiceError(0, f"cannot reach the screening service at {self.client.url}: {err}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def to_bedgraph(self, path: str | os.PathLike, score: str | None = None, analysis: str | None = None,
                    region: str | None = None) -> Path:
        """Download a score as a bedGraph (written through a temporary file). Returns ``path``."""
        return self._export(path, "bedgraph", score, analysis, region)

    def to_bigwig(self, path: str | os.PathLike, score: str | None = None, analysis: str | None = None,
                  region: str | None = None) -> Path:
        """Download a score as a bigWig (written through a temporary file). Returns ``path``."""
        return self._export(path, "bigwig", score, analysis, region)
