"""Request guards: a body-size cap as ASGI middleware (Content-Length and chunked bodies), and API-key auth."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import AuthenticationFailed, PayloadTooLarge


class BodyLimitMiddleware:
    """Answers 413 to any request whose body is over `max_bytes`, declared or streamed, before the app sees it."""

    def __init__(self, app: ASGIApp, max_bytes: int, on_reject=None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject
        self.drain_bytes = (
            4 * max_bytes
        )  # over-cap bodies up to this size are read and dropped before the 413

    async def _discard(self, receive: Receive) -> None:
        dropped = 0
        while dropped <= self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            if declared.isdigit() and int(declared) <= self.drain_bytes:
                await self._discard(receive)  # let a modest client finish sending, so it reads the 413
            await self._reject(scope, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await self._discard(receive)
                await self._reject(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnect notices

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        error = PayloadTooLarge(
            f"the request body is over the {self.max_bytes}-byte limit; send smaller images"
        )
        payload = json.dumps(error.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": headers + [(b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        if self.on_reject is not None:
            self.on_reject(scope, error)


class APIKeys:
    """Checks `Authorization: Bearer <key>` against the configured keys in constant time."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = [key.encode() for key in keys]

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def check(self, authorization: str | None) -> None:
        if not self.keys:
            return
        scheme, _, token = (authorization or "").partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        matched = False
        for key in self.keys:  # compare against every key, so timing says nothing about which one matched
            matched |= secrets.compare_digest(given, key)
        if not matched:
            raise AuthenticationFailed(
                "a valid API key is required; send it as 'Authorization: Bearer <key>'"
            )
