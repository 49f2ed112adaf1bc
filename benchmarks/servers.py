"""The servers the serving benchmark talks to, each in its own process on a loopback port.

    python -m benchmarks.servers project --model DIR --port 8101   # this project's app (serving.app), no UI
    python -m benchmarks.servers naive --model DIR --port 8102     # the baseline: one request at a time

`ServerProcess(kind, model_dir, ...)` starts one of them for the benchmark and waits for /health.

The naive baseline is what one writes first: a FastAPI route that holds one lock and calls `model.generate`
(through `Assistant.stream_events`, a thread and a TextIteratorStreamer) for each request in turn, streaming
OpenAI-shaped SSE chunks. No batching, no queue, no OCR, no limits.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from PIL import Image

log = logging.getLogger("benchmarks.servers")


def _image_from_url(url: str) -> Image.Image:
    if not url.startswith("data:image/") or "," not in url:
        raise HTTPException(400, "the naive server takes images as data: URLs only; send base64 PNG data")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def _messages(body: dict) -> tuple[list[dict], list[Image.Image]]:
    messages, images = [], []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            messages.append({"role": message["role"], "content": content})
            continue
        parts = []
        for part in content or []:
            if part.get("type") == "image_url":
                images.append(_image_from_url(part["image_url"]["url"]))
                parts.append({"type": "image"})
            else:
                parts.append({"type": "text", "text": part.get("text", "")})
        messages.append({"role": message["role"], "content": parts})
    return messages, images


def create_naive_app(model_dir: str) -> FastAPI:
    from assistant.inference import Assistant, SamplingParams

    assistant = Assistant.load(model_dir, device="cpu")
    lock = threading.Lock()  # one request at a time, first come first served
    app = FastAPI(title="naive generate server")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        messages, images = _messages(body)
        params = SamplingParams(
            max_new_tokens=int(body.get("max_tokens") or 64),
            temperature=0.0,
            min_tokens=int(body.get("min_tokens") or 0),
        )
        rid, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), body.get("model", "naive")

        def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
            choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else []
            data = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
            }
            if usage is not None:
                data["usage"] = usage
            return f"data: {json.dumps(data)}\n\n"

        def events() -> Iterator[str]:
            with lock:
                yield chunk({"role": "assistant", "content": ""})
                last = None
                for event in assistant.stream_events(messages, images, params):
                    if event.text:
                        yield chunk({"content": event.text})
                    last = event
                yield chunk({}, finish=last.finish_reason)
                usage = {
                    "prompt_tokens": last.prompt_tokens,
                    "completion_tokens": last.completion_tokens,
                    "total_tokens": last.prompt_tokens + last.completion_tokens,
                }
                yield chunk({}, usage=usage)
                yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def create_project_app(model_dir: str, port: int, max_batch_size: int, threads: int = 0):
    from serving.app import create_app
    from serving.settings import ServeSettings

    settings = ServeSettings(
        model=model_dir,
        port=port,
        device="cpu",
        ocr="off",
        max_batch_size=max_batch_size,
        max_n=1,
        threads=threads,
    )
    return create_app(settings)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m benchmarks.servers KIND` on a free loopback port, up until `close()`."""

    def __init__(self, kind: str, model_dir: str, max_batch_size: int, threads: int) -> None:
        self.port = free_port()
        self.log_file = tempfile.NamedTemporaryFile(
            "w+", prefix=f"bench-{kind}-", suffix=".log", delete=False
        )
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.servers",
            kind,
            "--model",
            model_dir,
            "--port",
            str(self.port),
        ]
        cmd += ["--max-batch-size", str(max_batch_size), "--threads", str(threads)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        cwd = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._wait(kind)

    def _wait(self, kind: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {kind} server exited at start-up; see {self.log_file.name}")
            try:
                if httpx.get(self.base_url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.close()
        raise RuntimeError(
            f"the {kind} server did not answer /health in {timeout:.0f} s; see {self.log_file.name}"
        )

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["project", "naive"], help="Which server to run.")
    parser.add_argument("--model", required=True, help="Model directory.")
    parser.add_argument("--port", type=int, required=True, help="Loopback port.")
    parser.add_argument("--max-batch-size", type=int, default=16, help="project server: batch size.")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: the project's rule; the naive server: torch's default).",
    )
    args = parser.parse_args(argv)
    import torch
    import uvicorn

    if args.threads and args.kind == "naive":
        torch.set_num_threads(args.threads)

    logging.basicConfig(level=logging.WARNING)
    app = (
        create_project_app(args.model, args.port, args.max_batch_size, args.threads)
        if args.kind == "project"
        else create_naive_app(args.model)
    )
    asyncio.run(
        uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning")).serve()
    )


if __name__ == "__main__":
    main()
