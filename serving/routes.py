"""Thin routes: each checks auth through a dependency and hands the work to the service it names."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from serving.chat import ChatService
from serving.engines.base import Engine
from serving.metrics import Metrics
from serving.protocol import ChatCompletionRequest, ModelCard, ModelList
from serving.security import APIKeys


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_chat(request: Request) -> ChatService:
    return request.app.state.chat


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def require_api_key(request: Request) -> None:
    keys: APIKeys = request.app.state.api_keys
    keys.check(request.headers.get("authorization"))


EngineDep = Annotated[Engine, Depends(get_engine)]
ChatDep = Annotated[ChatService, Depends(get_chat)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

public = APIRouter()
protected = APIRouter(dependencies=[Depends(require_api_key)])


def _status(engine: Engine) -> JSONResponse:
    if engine.healthy():
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "unavailable"}, status_code=503)


@public.get("/health", summary="Liveness: 200 while the engine runs, 503 once it has died.")
async def health(engine: EngineDep) -> JSONResponse:
    return _status(engine)


@protected.get("/ready", summary="Readiness: 200 when the engine accepts requests.")
async def ready(engine: EngineDep) -> JSONResponse:
    return _status(engine)


@protected.get("/metrics", summary="Prometheus metrics.")
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=metrics.content_type)


@protected.get("/v1/models", response_model=ModelList)
async def list_models(engine: EngineDep) -> ModelList:
    return ModelList(data=[ModelCard(id=engine.model_name)])


@protected.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request, chat: ChatDep):
    return await chat.complete(body, request)
