"""The FastAPI application: `create_app(settings)` wires settings, engine, guards, metrics and error handlers.

app = create_app(ServeSettings(model="models/tiny"))   # uvicorn.run(app) or `assistant serve`
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistant.errors import AssistantError
from serving.chat import ChatService
from serving.engines.base import build_engine
from serving.errors import APIError, error_body
from serving.fetch import ImageFetcher
from serving.media import MessageBuilder, OCRHints
from serving.metrics import Metrics
from serving.routes import protected, public
from serving.security import APIKeys, BodyLimitMiddleware
from serving.settings import ServeSettings

log = logging.getLogger(__name__)
ROUTES = {"/health", "/ready", "/metrics", "/v1/models", "/v1/chat/completions"}


def create_app(settings: ServeSettings) -> FastAPI:
    metrics = Metrics()
    engine = build_engine(settings, metrics)  # refuses a bad choice now, before anything listens

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        metrics.running.set_function(lambda: engine.load()[0])
        metrics.waiting.set_function(lambda: engine.load()[1])
        fetcher = ImageFetcher(
            timeout_s=settings.fetch_timeout_s,
            max_bytes=settings.max_image_bytes,
            max_redirects=settings.fetch_max_redirects,
            allow=settings.fetch_allow_hosts,
        )
        builder = MessageBuilder(settings, fetcher, OCRHints(settings.ocr_engine, metrics), metrics)
        app.state.engine = engine
        app.state.chat = ChatService(settings, engine, builder, metrics)
        log.info("serving %r with the %s engine", engine.model_name, settings.engine)
        try:
            yield
        finally:
            await engine.stop(settings.drain_timeout_s)
            await fetcher.aclose()

    app = FastAPI(title="llava-assistant", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.api_keys = APIKeys(settings.api_keys)
    app.include_router(public)
    app.include_router(protected)
    _add_error_handlers(app, metrics)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        on_reject=lambda scope, error: metrics.errors.labels(str(error.status), error.code).inc(),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    def respond(status: int, body: dict) -> JSONResponse:
        metrics.errors.labels(str(status), str(body["error"]["code"] or body["error"]["type"])).inc()
        return JSONResponse(body, status_code=status)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return respond(exc.status, exc.body())

    @app.exception_handler(AssistantError)
    async def assistant_error(request: Request, exc: AssistantError) -> JSONResponse:
        return respond(400, error_body(400, str(exc), code="invalid_request"))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            message = "the request body is not valid JSON; send a JSON object"
        elif not loc:
            message = "the request body must be a JSON object with model and messages"
        else:
            message = f"{'.'.join(loc)}: {first.get('msg', 'invalid value')}; fix this field"
        body = error_body(400, message, code="invalid_request")
        body["error"]["param"] = ".".join(loc) or None
        return respond(400, body)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        messages = {
            404: "no such route; see /v1/models and /v1/chat/completions",
            405: "method not allowed here",
        }
        message = messages.get(exc.status_code, "the request could not be served")
        return respond(exc.status_code, error_body(exc.status_code, message, code=f"http_{exc.status_code}"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return respond(
            503, error_body(503, "the server failed on this request; retry it", "server_error", "internal")
        )


class MetricsMiddleware:
    """Counts every response by route and status (unknown paths count as 'other')."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)
