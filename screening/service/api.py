"""The HTTP API: FastAPI routes over the job manager and the result stores.

Every route but ``/healthz`` needs ``Authorization: Bearer <token>``. Errors are JSON
``{"detail": "<message naming the field/region/screen>", "errors": [{"field", "message"}]?}``.

=======  ===============================  ==============================================================
method   path                             what
=======  ===============================  ==============================================================
GET      /healthz                         liveness of the replica and the job registry (no auth)
GET      /metrics                         Prometheus: requests, latency, screens by state, progress
GET      /openapi.json                    this API's OpenAPI document
POST     /screens                         submit a spec (JSON, or YAML with a YAML content type) → 201
GET      /screens                         list screens (``state``, ``limit``)
GET      /screens/{id}                    state, progress (units, perturbations, rate, ETA), errors
POST     /screens/{id}/cancel             stop a running screen → 202
POST     /screens/{id}/resume             continue a cancelled, failed or interrupted screen → 202
GET      /screens/{id}/results/info       analyses, scores, chromosomes, completeness of the store
GET      /screens/{id}/results            perturbations overlapping ``region`` (``format`` json|arrow)
GET      /screens/{id}/export             a score as bedGraph or bigWig
=======  ===============================  ==============================================================
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from screening.core.errors import USER_ERRORS
from screening.service.auth import TokenStore
from screening.service.config import ServiceConfig
from screening.service.jobs import new_job_id
from screening.service.states import STATES, JobState
from screening.service.policy import PolicyError, server_spec, spec_error_fields
from screening.service.wire import ARROW_TYPE, dataset_to_arrow, dataset_to_json
from screening.spec import MAX_DEPTH, SpecError, nesting_depth

__all__ = ["ResultsCache", "create_api"]

JOB_ID = PathParam(..., pattern=r"^[0-9a-f]{32}$", description="a screen id (32 hex digits)")
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
_RESULTS_TTL_S = 30.0  # an open store handle unused this long is dropped; one in use is rechecked this often
_RESULTS_MAX = 64  # open store handles kept (least recently used dropped first)
_MANAGER_TIMEOUT_S = 30.0


class ResultsCache:
    """Open result-store handles (:class:`~screening.store.reader.Results`) by screen id, kept warm under use.

    A handle expires ``ttl_s`` after its last use (sliding), at most ``max_entries`` are kept (least
    recently used dropped first), and a handle in use is rechecked every ``ttl_s``: one read of the
    store's root attributes; a store replaced meanwhile (``--overwrite``: another spec hash or
    provenance) is reopened. So repeated queries keep their coordinates in memory instead of paying a
    cold open every half minute, and an overwritten store is still seen within ``ttl_s``.

    Parameters
    ----------
    open_results
        ``open_results(store) -> Results``; its errors propagate.
    ttl_s, max_entries
        Expiry after the last use, and the bound on open handles.
    clock
        Monotonic seconds (tests pass a fake one).
    """

    def __init__(self, open_results: Any, ttl_s: float = _RESULTS_TTL_S, max_entries: int = _RESULTS_MAX,
                 clock: Any = time.monotonic) -> None:
        from collections import OrderedDict

        self._open, self.ttl_s, self.max_entries, self._clock = open_results, ttl_s, max_entries, clock
        # key -> [results, lock, store, last used, last checked, identity]
        self._entries: OrderedDict[str, list[Any]] = OrderedDict()
        self._guard = threading.Lock()

    @staticmethod
    def _identity(attrs: dict[str, Any] | None) -> Any:
        if attrs is None:
            return None
        return json.dumps([attrs.get("spec_sha256"), attrs.get("provenance")], sort_keys=True, default=str)

    def get(self, key: str, store: str) -> tuple[Any, threading.Lock]:
        """``(results, lock)`` of a screen's store: the cached handle, or a newly opened one."""
        from screening.store.layout import StoreNotFoundError, read_store_attrs

        now = self._clock()
        with self._guard:
            entry = self._entries.get(key)
            if entry is not None and (entry[2] != store or now - entry[3] > self.ttl_s):
                del self._entries[key]
                entry = None
        if entry is not None and now - entry[4] > self.ttl_s:  # in use for a while: was the store replaced?
            try:
                same = self._identity(read_store_attrs(store, entry[0].storage_options)) == entry[5]
            except StoreNotFoundError:
                same = False
            if not same:
                with self._guard:
                    if self._entries.get(key) is entry:
                        del self._entries[key]
                entry = None
            else:
                entry[4] = now
        if entry is None:
            results = self._open(store)
            entry = [results, threading.Lock(), store, now, now, self._identity(getattr(results, "_attrs", None))]
        with self._guard:
            entry[3] = now
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return entry[0], entry[1]

    def __len__(self) -> int:
        return len(self._entries)


# --------------------------------------------------------------------------- response models


class Progress(BaseModel):
    """Where a screen stands. Counts include chunks finished by earlier attempts; rate and ETA are
    over the current attempt (perturbations per second; seconds left). ``perturbations_*`` and
    ``rate`` count attribution analyses' positions too; ``attributed_positions_*`` are those alone,
    and ``perturbations_per_s``/``attributed_positions_per_s`` split ``rate`` between the two."""

    units_done: int
    units_total: int
    perturbations_done: int | None = None
    perturbations_total: int | None = None
    elapsed_s: float | None = None
    rate: float | None = None
    eta_s: float | None = None
    attributed_positions_done: int | None = None
    attributed_positions_total: int | None = None
    perturbations_per_s: float | None = None
    attributed_positions_per_s: float | None = None


class Screen(BaseModel):
    """A screen as the server tracks it."""

    id: str
    name: str
    state: JobState
    store: str
    submitted: str
    started: str | None = None
    finished: str | None = None
    attempts: int
    n_perturbations: int | None = None
    n_units: int | None = None
    progress: Progress | None = None
    errors: list[str] = []
    resumable: bool


class ScreenList(BaseModel):
    screens: list[Screen]


class StoreInfo(BaseModel):
    """What a screen's store holds."""

    id: str
    store: str
    complete: bool
    units_done: int
    units_total: int
    analyses: dict[str, list[str]]
    chromosomes: dict[str, int]


class Problem(BaseModel):
    detail: str
    errors: list[dict[str, str]] | None = None


ERRORS = {code: {"model": Problem} for code in (400, 401, 404, 409, 413, 415, 422, 503)}


# --------------------------------------------------------------------------- middleware


class LimitsAndMetrics:
    """ASGI middleware: refuses request bodies over ``max_bytes`` (413) and records request metrics.

    The body is read here, counting bytes as they arrive (a chunked upload without a
    Content-Length is cut off as soon as it passes the limit), then replayed to the app.
    """

    def __init__(self, app, max_bytes: int, metrics: "_Metrics") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = {"code": 500}

        async def send_tracked(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            buffered = await self._read_body(scope, receive)
            if buffered is None:
                detail = f"request body over {self.max_bytes:,} bytes (max_spec_bytes)"
                await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send_tracked)
                return

            async def replay():
                return buffered.pop(0) if buffered else await receive()

            await self.app(scope, replay, send_tracked)
        finally:
            route = scope.get("route")
            self.metrics.observe(scope["method"], getattr(route, "path", "unmatched"), status["code"],
                                 time.perf_counter() - began)

    async def _read_body(self, scope, receive) -> list[dict] | None:
        """The request's messages, or None once the body passes the limit."""
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return None
        messages, received = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return messages


class _Metrics:
    """Request counters and latency of this replica; screen gauges are added per scrape.

    Labels mean what they mean on a runner's metrics (``workers/metrics.py``): ``screen`` is the
    screen's id, ``name`` the spec's name. ``screening_screens`` has a series for every state (0
    when no screen is in it). Progress counts perturbations and attributed positions apart.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created series: they only add noise to a scrape
        self.registry = CollectorRegistry()
        self.requests = Counter("screening_http_requests", "HTTP requests served", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("screening_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                 registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self, screens: list[dict[str, Any]]) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import GaugeMetricFamily

        class Screens:
            def collect(self):
                by_state = GaugeMetricFamily("screening_screens", "Screens known to the service, by state", labels=["state"])
                counts = dict.fromkeys(STATES, 0)
                for screen in screens:
                    counts[screen["state"]] = counts.get(screen["state"], 0) + 1
                for state, count in counts.items():
                    by_state.add_metric([state], count)
                yield by_state
                families = {
                    key: GaugeMetricFamily(f"screening_screen_{key}", text, labels=["screen", "name"])
                    for key, text in _SCREEN_GAUGES.items()
                }
                for screen in screens:
                    if screen["state"] not in ("running", "cancelling"):
                        continue
                    for key, value in _screen_gauges(screen.get("progress") or {}).items():
                        if value is not None:
                            families[key].add_metric([screen["id"], screen["name"]], float(value))
                yield from families.values()

        per_scrape = CollectorRegistry()
        per_scrape.register(Screens())
        return generate_latest(self.registry) + generate_latest(per_scrape)


#: ``screening_screen_<key>`` gauges of each running screen: key → help.
_SCREEN_GAUGES = {
    "units_done": "Work units done (earlier attempts included)",
    "units_planned": "Work units in the screen",
    "perturbations_done": "Perturbations scored (earlier attempts included; attribution positions not)",
    "perturbations_planned": "Perturbations in the screen (attribution positions not included)",
    "attributed_positions_done": "Positions attributed by attribution analyses (earlier attempts included)",
    "attributed_positions_planned": "Positions the screen's attribution analyses attribute",
    "perturbations_per_second": "Perturbations scored per second in the current attempt",
    "attributed_positions_per_second": "Positions attributed per second in the current attempt",
    "eta_seconds": "Estimated seconds left",
}


def _screen_gauges(progress: dict[str, Any]) -> dict[str, float | None]:
    """The values of :data:`_SCREEN_GAUGES` from a screen's ``progress`` (None: not known)."""
    positions_done = progress.get("attributed_positions_done") or 0
    positions_total = progress.get("attributed_positions_total") or 0

    def minus(value: Any, positions: int) -> float | None:
        return None if value is None else value - positions

    return {
        "units_done": progress.get("units_done"),
        "units_planned": progress.get("units_total"),
        "perturbations_done": minus(progress.get("perturbations_done"), positions_done),
        "perturbations_planned": minus(progress.get("perturbations_total"), positions_total),
        "attributed_positions_done": positions_done if progress.get("perturbations_done") is not None else None,
        "attributed_positions_planned": positions_total if progress.get("perturbations_total") is not None else None,
        # progress from before the split (no per-kind rates) has only the overall rate
        "perturbations_per_second": progress.get("perturbations_per_s", progress.get("rate")),
        "attributed_positions_per_second": progress.get("attributed_positions_per_s"),
        "eta_seconds": progress.get("eta_s"),
    }


# --------------------------------------------------------------------------- the app


def _error(status: int, detail: str, errors: list[dict[str, str]] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail={"detail": detail, **({"errors": errors} if errors else {})})


#: Deepest nesting a submitted spec may have (the spec's own bound). Deeper bodies are refused while
#: they are read: PyYAML and libyaml take time quadratic in the nesting depth.
MAX_BODY_DEPTH = MAX_DEPTH
#: How long parsing a body may take (off the event loop) before it is refused.
PARSE_TIMEOUT_S = 10.0
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: linear and fast


def _check_yaml_events(text: str) -> None:
    """Refuse anchors/aliases and nesting deeper than :data:`MAX_BODY_DEPTH`, stopping at the first.

    Events are read lazily, so a deeply nested body is refused after its first few dozen tokens.
    """
    depth = 0
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _error(400, "YAML anchors and aliases are not accepted in a submitted spec")
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_BODY_DEPTH:
                raise _error(400, f"request body is nested deeper than {MAX_BODY_DEPTH} levels")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def _check_depth(document: Any) -> None:
    """Refuse a parsed document nested deeper than :data:`MAX_BODY_DEPTH`."""
    if nesting_depth(document) > MAX_BODY_DEPTH:
        raise _error(400, f"request body is nested deeper than {MAX_BODY_DEPTH} levels")


def _parse_body(body: bytes, content_type: str) -> Any:
    """The submitted document: JSON, or YAML (no anchors/aliases: they can blow up a small body).

    Synchronous and CPU-bound: call it through :func:`_parse_body_async`.
    """
    if not body.strip():
        raise _error(400, "empty request body: send the screen spec as JSON (or YAML with a YAML content type)")
    media = content_type.split(";")[0].strip().lower()
    try:
        if media in YAML_TYPES:
            text = body.decode()
            _check_yaml_events(text)
            document = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
        elif media in ("application/json", ""):
            document = json.loads(body)
        else:
            raise _error(415, f"content type {media!r}: send application/json or application/yaml")
    except (ValueError, yaml.YAMLError, RecursionError, UnicodeDecodeError) as err:
        kind = "YAML" if media in YAML_TYPES else "JSON"
        if isinstance(err, RecursionError):
            raise _error(400, f"request body is not valid {kind}: nested deeper than {MAX_BODY_DEPTH} levels") from None
        raise _error(400, f"request body is not valid {kind}: {str(err)[:500]}") from None
    _check_depth(document)
    return document


async def _parse_body_async(body: bytes, content_type: str) -> Any:
    """:func:`_parse_body` on a worker thread, so one hostile body cannot stall the event loop; refused
    with 400 when parsing takes over :data:`PARSE_TIMEOUT_S`."""
    try:
        return await asyncio.wait_for(run_in_threadpool(_parse_body, body, content_type), PARSE_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise _error(400, f"request body took over {PARSE_TIMEOUT_S:.0f} s to parse; send a plain spec") from None


def create_api(config: ServiceConfig, manager: Any, tokens: TokenStore) -> "LimitsAndMetrics":
    """The ASGI application of one replica: the FastAPI routes (``.app``) behind the size limit.

    Parameters
    ----------
    config
        The service settings.
    manager
        Handle of the :class:`~screening.service.jobs.JobManager` actor.
    tokens
        Accepted bearer tokens.
    """
    from screening.store.reader import open_results
    from screening.store.layout import StoreNotFoundError

    app = FastAPI(
        title="screening",
        version=_version(),
        description="In-silico perturbation screens of sequence-to-3D-genome models. Regions are 0-based, half-open.",
        docs_url=None, redoc_url=None, openapi_url=None,
    )
    metrics = _Metrics()
    bearer = HTTPBearer(auto_error=False, description="a token from the server's token file or SCREENING_API_TOKENS")
    results_cache = ResultsCache(open_results)
    stores: dict[str, str] = {}

    def require_token(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        if credentials is None:
            raise HTTPException(401, {"detail": "missing bearer token (send Authorization: Bearer <token>)"},
                                headers={"WWW-Authenticate": "Bearer"})
        if not tokens.valid(credentials.credentials):
            raise HTTPException(401, {"detail": "invalid bearer token"}, headers={"WWW-Authenticate": "Bearer"})

    api = APIRouter(dependencies=[Depends(require_token)], responses={401: {"model": Problem}})

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        body = exc.detail if isinstance(exc.detail, dict) else {"detail": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in item.get("loc", ())), "message": str(item.get("msg", ""))}
            for item in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    async def call(method: str, *args: Any, timeout: float = _MANAGER_TIMEOUT_S) -> Any:
        """A job-manager call; a manager that is restarting gets one retry, then 503."""
        import ray

        for attempt in range(2):
            try:
                return await asyncio.wait_for(getattr(manager, method).remote(*args), timeout)
            except (ray.exceptions.RayActorError, asyncio.TimeoutError) as err:
                if attempt:
                    raise _error(503, f"the job registry is unavailable ({type(err).__name__}); retry shortly") from None
                await asyncio.sleep(1.0)

    def answer(result: dict[str, Any], status: int = 200) -> JSONResponse:
        if "error" in result:
            field = result.get("field")
            errors = [{"field": field, "message": result["error"]}] if field else None
            raise _error(result["status"], result["error"], errors)
        return JSONResponse(result["record"], status_code=status)

    async def store_of(job_id: str) -> str:
        if job_id not in stores:
            store = await call("store_of", job_id)
            if store is None:
                raise _error(404, f"no screen {job_id}")
            stores[job_id] = store
        return stores[job_id]

    def results_of(job_id: str, store: str):
        try:
            return results_cache.get(job_id, store)
        except StoreNotFoundError:
            raise _error(409, f"screen {job_id} has no results yet (its store is being created)") from None

    def user_error(err: Exception) -> HTTPException:
        return _error(422, str(err))

    # -- unauthenticated
    @app.get("/healthz", tags=["service"], responses={503: {"model": Problem}})
    async def healthz() -> dict[str, str]:
        """Liveness: this replica answers and the job registry responds."""
        try:
            await call("ping", timeout=5.0)
        except HTTPException:
            return JSONResponse({"status": "degraded", "detail": "job registry unavailable"}, status_code=503)
        return {"status": "ok"}

    # -- authenticated
    @api.get("/openapi.json", include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    @api.get("/metrics", tags=["service"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus metrics: requests and latency of this replica, screens by state, running screens' progress."""
        screens = await call("summary")
        return Response(metrics.render(screens), media_type="text/plain; version=0.0.4")

    @api.post(
        "/screens", status_code=201, response_model=Screen, tags=["screens"], responses=ERRORS,
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "object", "description": "a screen spec (see configs/example.yaml)"}},
            "application/yaml": {"schema": {"type": "string"}},
        }}},
    )
    async def submit(request: Request) -> JSONResponse:
        """Validate a spec, check its inputs, plan it and start it. Input paths are server-side paths under
        the input roots; ``output.store`` is placed under the first store root when relative or absent."""
        raw = await _parse_body_async(await request.body(), request.headers.get("content-type", "application/json"))
        job_id = new_job_id()
        try:
            spec = await run_in_threadpool(server_spec, raw, config, job_id)
        except PolicyError as err:
            raise _error(422, str(err), [{"field": err.field, "message": err.message}]) from None
        except SpecError as err:
            raise _error(422, str(err), spec_error_fields(err)) from None
        result = await call("submit", job_id, spec.model_dump(mode="json"), config.max_perturbations,
                            config.submit_timeout_s, timeout=config.submit_timeout_s + 60)
        return answer(result, 201)

    @api.get("/screens", response_model=ScreenList, tags=["screens"], responses=ERRORS)
    async def list_screens(
        state: JobState | None = None,
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:
        """Screens, newest first."""
        return {"screens": await call("list", state, limit)}

    @api.get("/screens/{job_id}", response_model=Screen, tags=["screens"], responses=ERRORS)
    async def status(job_id: str = JOB_ID) -> dict[str, Any]:
        """State, progress (units and perturbations done/total, rate, ETA) and errors of a screen."""
        record = await call("get", job_id)
        if record is None:
            raise _error(404, f"no screen {job_id}")
        return record

    @api.post("/screens/{job_id}/cancel", status_code=202, response_model=Screen, tags=["screens"], responses=ERRORS)
    async def cancel(job_id: str = JOB_ID) -> JSONResponse:
        """Stop a running screen: finished chunks stay; the screen can be resumed."""
        return answer(await call("cancel", job_id), 202)

    @api.post("/screens/{job_id}/resume", status_code=202, response_model=Screen, tags=["screens"], responses=ERRORS)
    async def resume(job_id: str = JOB_ID) -> JSONResponse:
        """Continue a cancelled, failed or interrupted screen from its finished chunks."""
        return answer(await call("resume", job_id, config.max_perturbations, config.submit_timeout_s,
                                 timeout=config.submit_timeout_s + 60), 202)

    @api.get("/screens/{job_id}/results/info", response_model=StoreInfo, tags=["results"], responses=ERRORS)
    async def results_info(job_id: str = JOB_ID) -> dict[str, Any]:
        """Analyses with their scores, chromosomes with their lengths, and completeness of a screen's store."""
        store = await store_of(job_id)

        def read() -> dict[str, Any]:
            results, lock = results_of(job_id, store)
            with lock:
                done, total = results.progress
                return {"id": job_id, "store": store, "complete": results.is_complete, "units_done": done,
                        "units_total": total, "analyses": {a: results.scores(a) for a in results.analyses},
                        "chromosomes": results.chromosomes}

        return await run_in_threadpool(read)

    @api.get(
        "/screens/{job_id}/results", tags=["results"], responses={
            **ERRORS, 200: {"content": {"application/json": {}, ARROW_TYPE: {}},
                            "description": "the perturbations overlapping the region"}},
    )
    async def query(
        job_id: str = JOB_ID,
        region: str = Query(..., min_length=1, max_length=256, description="chr1:1,400,000-1,410,000 (0-based, half-open) or chr1"),
        analysis: str | None = Query(None, min_length=1, max_length=256),
        fmt: Literal["json", "arrow"] = Query("json", alias="format", description="json, or arrow (an Arrow IPC stream) for large slices"),
    ) -> Response:
        """The perturbations overlapping a region, with every score (NaN/null where not computed yet)."""
        store = await store_of(job_id)

        def read() -> Response:
            results, lock = results_of(job_id, store)
            try:
                with lock:
                    ds = results.query(region, analysis)
            except USER_ERRORS as err:
                raise user_error(err) from None
            n = int(ds.sizes.get("perturbation", 0))
            limit = config.max_query_rows if fmt == "arrow" else min(config.max_query_rows, config.max_json_rows)
            if n > limit:
                hint = "query a smaller region" if fmt == "arrow" or n > config.max_query_rows else "use format=arrow or a smaller region"
                raise _error(413, f"region {region}: {n:,} perturbations, over this server's limit of {limit:,} "
                             f"per {fmt} response (max_query_rows/max_json_rows); {hint}")
            if fmt == "arrow":
                return Response(dataset_to_arrow(ds), media_type=ARROW_TYPE)
            return Response(json.dumps(dataset_to_json(ds), allow_nan=False), media_type="application/json")

        return await run_in_threadpool(read)

    @api.get(
        "/screens/{job_id}/export", tags=["results"], response_class=FileResponse, responses={
            **ERRORS, 200: {"content": {"text/plain": {}, "application/octet-stream": {}}, "description": "the track"}},
    )
    async def export(
        job_id: str = JOB_ID,
        fmt: Literal["bedgraph", "bigwig"] = Query("bedgraph", alias="format"),
        score: str | None = Query(None, min_length=1, max_length=256, description="default: the analysis's first score"),
        analysis: str | None = Query(None, min_length=1, max_length=256),
        region: str | None = Query(None, min_length=1, max_length=256, description="default: everything"),
    ) -> FileResponse:
        """A score as a bedGraph (one line per computed perturbation) or a bigWig."""
        from screening.store.export import to_bedgraph, to_bigwig

        store = await store_of(job_id)
        folder = Path(tempfile.mkdtemp(prefix="screening-export-"))
        suffix = "bw" if fmt == "bigwig" else "bedGraph"
        target = folder / f"{job_id}.{suffix}"

        def write() -> None:
            results, lock = results_of(job_id, store)
            try:
                with lock:
                    name = results.resolve_analysis(analysis)
                    chosen = score or results.scores(name)[0]
                (to_bigwig if fmt == "bigwig" else to_bedgraph)(results, target, score=chosen, analysis=name, region=region)
            except USER_ERRORS as err:
                raise user_error(err) from None

        try:
            await run_in_threadpool(write)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        media = "application/octet-stream" if fmt == "bigwig" else "text/plain"
        return FileResponse(target, media_type=media, filename=target.name,
                            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))

    app.include_router(api)
    return LimitsAndMetrics(app, config.max_spec_bytes, metrics)


def _version() -> str:
    from screening.core.version import __version__

    return __version__
