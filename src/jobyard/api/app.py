"""The FastAPI application factory. One lifespan owns every pool and connection.

``create_app(settings, yard)`` serves the API; with ``embedded=True`` the same process also runs a relay and
a worker (that is `jobyard dev`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from jobyard import __version__
from jobyard.api import deps, schemas
from jobyard.api.auth import Authenticator, check_auth_policy
from jobyard.api.bodylimit import BodyLimitMiddleware
from jobyard.api.fastpath import FastPaths
from jobyard.api.ratelimit import RateLimitMiddleware
from jobyard.api.routes_jobs import router as jobs_router
from jobyard.api.routes_keys import router as keys_router
from jobyard.api.routes_ops import router as ops_router
from jobyard.api.routes_pages import STATIC_DIR
from jobyard.api.routes_pages import router as pages_router
from jobyard.api.routes_schedules import router as schedules_router
from jobyard.api.routes_session import router as session_router
from jobyard.api.routes_streams import router as streams_router
from jobyard.api.routes_webhooks import router as webhooks_router
from jobyard.config import Settings
from jobyard.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    StoreError,
    Unauthenticated,
    ValidationError,
)
from jobyard.kv.cache import listen_for_invalidations
from jobyard.live.hub import EventHub
from jobyard.live.presence import WorkerDirectory
from jobyard.live.sampler import QueueSampler
from jobyard.metrics import CONTENT_TYPE, ApiCollector, Refresher
from jobyard.relay import Relay
from jobyard.runtime import Runtime
from jobyard.sdk import Yard
from jobyard.store.repository import caused_by_store
from jobyard.tasks import stop_tasks
from jobyard.worker import Worker

log = logging.getLogger("jobyard.api")

RETRY_AFTER_SECONDS = "2"

# Every /api route may answer these (documented once here, for the OpenAPI schema).
_CALLER_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorOut, "description": "the request body could not be read (not UTF-8 JSON)"},
    401: {"model": schemas.ErrorOut, "description": "no valid API key (or dashboard session)"},
    403: {"model": schemas.ErrorOut, "description": "the key lacks the scope, or the CSRF token is missing"},
    413: {"model": schemas.ErrorOut, "description": "the request body (or an action's payload) is too large"},
    429: {"model": schemas.ErrorOut, "description": "a rate limit or tenant quota is used up: see Retry-After"},
}


def create_app(
    settings: Settings,
    yard: Yard,
    *,
    runtime: Runtime | None = None,
    embedded: bool = False,
    migrate: bool = False,
) -> FastAPI:
    rt = runtime or Runtime(settings)
    hub = EventHub(rt.kv, rt.repo, buffer=settings.stream_buffer)
    directory = WorkerDirectory()
    hub.on_worker_heartbeat(directory.heard)

    def queue_names() -> list[str]:
        return sorted({*yard.queues, *(q for w in directory.alive() for q in w.get("queues", []))})

    sampler = QueueSampler(rt.broker, queue_names)
    hub.on_event(sampler.count)
    collector = ApiCollector(
        lambda: _store_gauges(rt),
        lambda: dict(sampler.history[-1]["depth"]) if sampler.history else {},
        lambda: rt.cache.stats,
        lambda: dict(rt.rate_limiter.refused),
        lambda: _submission_counts(rt),
    )
    rt.metrics.registry.register(collector)
    refresher = Refresher(collector, settings.metrics_interval)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await rt.start(migrate=migrate or embedded)
        try:
            await check_auth_policy(settings, rt.keys)
        except BaseException:
            await rt.close()
            raise
        await rt.repo.warm()
        yard.bind_cache(rt.user_cache)
        cache_listener = asyncio.create_task(
            listen_for_invalidations(rt.kv, [rt.cache, rt.keys.cache]), name="jobyard-cache-invalidations"
        )
        await hub.start()
        await sampler.start()
        await refresher.start()
        if rt.handoff is not None:
            await rt.handoff.start()
        services: list[Any] = []
        if embedded:
            relay = Relay(
                settings=settings, repo=rt.repo, broker=rt.broker, events=rt.events, yard=yard, metrics=rt.metrics
            )
            worker = Worker(
                settings=settings,
                repo=rt.repo,
                broker=rt.broker,
                results=rt.results,
                events=rt.events,
                yard=yard,
                metrics=rt.metrics,
            )
            await relay.start()
            await worker.start()
            services = [worker, relay]
            app.state.worker, app.state.relay = worker, relay
        try:
            yield
        finally:
            if rt.handoff is not None:
                await rt.handoff.stop()  # before the relay stops: what it leaves, the relay publishes
            for service in services:
                await service.stop()
            await stop_tasks([cache_listener])
            await refresher.stop()
            await sampler.stop()
            await hub.stop()
            await rt.close()

    app = FastAPI(
        title="jobyard",
        version=__version__,
        summary="Asynchronous jobs of many actions, with live status.",
        lifespan=lifespan,
        # FastAPI asks OpenTelemetry on every request whether a provider is configured; only when asked to.
        telemetry={
            "tracing": settings.otel,
            "metrics": settings.otel,
            "logs": settings.otel,
            "operation_spans": settings.otel,
        },
    )
    app.state.runtime = rt
    app.state.yard = yard
    app.state.settings = settings
    app.state.hub, app.state.workers, app.state.sampler = hub, directory, sampler
    app.state.auth = Authenticator(settings, rt.keys, rt.sessions)
    for router in (jobs_router, streams_router, ops_router, keys_router, schedules_router, webhooks_router):
        app.include_router(router, responses=_CALLER_RESPONSES)
    app.include_router(pages_router)
    app.include_router(session_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(FastPaths)  # innermost of ours: inside the rate limiter and the body limit
    app.add_middleware(RateLimitMiddleware, limiter_of=lambda: rt.rate_limiter if rt.rate_limiter.limits else None)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    _install_error_handlers(app)
    _install_health(app)
    _document_action_types(app, yard)
    _document_security(app)
    return app


def _document_security(app: FastAPI) -> None:
    """The schema's security schemes, and on every operation that checks an API key, how to present one."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        schema.setdefault("components", {})["securitySchemes"] = deps.SECURITY_SCHEMES
        for context in iter_route_contexts(app.routes):  # routes of included routers too, with their full paths
            route = context.original_route
            if isinstance(route, APIRoute) and route.include_in_schema and deps.needs_key(route.dependant):
                operations = schema.get("paths", {}).get(context.path_format or "", {})
                for method in context.methods or ():
                    if method.lower() in operations:
                        operations[method.lower()]["security"] = deps.SECURITY
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_action_types(app: FastAPI, yard: Yard) -> None:
    """The schema lists this app's registered action types as the values an action's ``type`` may take."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        action_in = schema.get("components", {}).get("schemas", {}).get("ActionIn", {})
        type_property = action_in.get("properties", {}).get("type")
        if type_property is not None and yard.definitions:
            type_property["enum"] = sorted(d.name for d in yard.definitions)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# Errors answered with their message as ``detail`` and nothing more.
_DETAIL_STATUS: dict[type[Exception], int] = {NotFound: 404, Conflict: 409, Forbidden: 403, PayloadTooLarge: 413}


def _detail_handler(status_code: int) -> Any:
    async def handle(request: Request, exc: Exception) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=status_code)

    return handle


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> Response:
        detail = [{"type": "value_error", "loc": list(exc.loc), "msg": exc.message}]
        return JSONResponse({"detail": detail}, status_code=422)

    for error, status_code in _DETAIL_STATUS.items():
        app.add_exception_handler(error, _detail_handler(status_code))

    @app.exception_handler(Unauthenticated)
    async def _unauthenticated(request: Request, exc: Unauthenticated) -> Response:
        if not request.url.path.startswith("/api/"):  # a dashboard page: sign in, then come back
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        return JSONResponse({"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(QuotaExceeded)
    async def _quota(request: Request, exc: QuotaExceeded) -> Response:
        retry_after = str(max(1, math.ceil(exc.retry_after)))
        return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": retry_after})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # name every method of the path, not only those of the first route matched
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> Response:
        log.warning("store error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": f"the database is unavailable, retry shortly ({exc})"},
            status_code=503,
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # A driver error that escaped the store's translation (the server vanishing mid-statement can surface as
        # an unusual asyncpg exception) is still an outage: answer 503 so clients retry, never a bare 500.
        if caused_by_store(exc):
            log.warning("database outage on %s %s", request.method, request.url.path, exc_info=exc)
            return JSONResponse(
                {"detail": "the database is unavailable, retry shortly"},
                status_code=503,
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [{k: v for k, v in err.items() if k in ("type", "loc", "msg", "input")} for err in exc.errors()]
        return JSONResponse({"detail": _jsonable(errors)}, status_code=422)


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {_text(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return _text(str(value))


def _text(value: Any) -> str:
    """Text that encodes as UTF-8: a lone surrogate echoed back from bad input is shown escaped, not a 500."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


async def _store_gauges(rt: Runtime) -> dict[str, Any]:
    counts = await rt.repo.status_counts()
    now = time.time()
    backlogs = {
        name: (rows, max(0.0, now - oldest.timestamp()) if oldest is not None else 0.0)
        for name, (rows, oldest) in (await rt.repo.backlogs()).items()
    }
    return {**counts, "backlogs": backlogs}


def _submission_counts(rt: Runtime) -> dict[str, int]:
    """Counters of this process's submission path: the grouped statements (PostgreSQL) and the handoff."""
    out: dict[str, int] = {}
    if rt.repo.dialect == "postgresql":
        out.update(statements=rt.repo.job_inserts.runs, jobs=rt.repo.jobs_inserted)
    if rt.handoff is not None:
        out.update(handoff_published=rt.handoff.published, handoff_left=rt.handoff.left)
    return out


def _install_health(app: FastAPI) -> None:
    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics of this API process and the store",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {}}, "description": "Prometheus text format"}},
    )
    async def metrics(request: Request) -> Response:
        rt: Runtime = request.app.state.runtime
        return Response(rt.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/healthz", response_model=schemas.HealthOut, tags=["health"], summary="The process is alive")
    async def healthz() -> Response:
        return deps.json_response({"status": "ok", "checks": {}})

    @app.get(
        "/readyz",
        response_model=schemas.HealthOut,
        tags=["health"],
        summary="Ready to serve: the database must answer; a missing broker or Redis means degraded",
        responses={503: {"model": schemas.HealthOut}},
    )
    async def readyz(request: Request) -> Response:
        rt: Runtime = request.app.state.runtime
        checks = await rt.health()
        if checks["database"] != "ok":
            status, code = "down", 503
        elif any(v != "ok" for v in checks.values()):
            status, code = "degraded", 200
        else:
            status, code = "ok", 200
        return deps.json_response({"status": status, "checks": checks}, status_code=code)
