"""A real OpenAI-compatible HTTP server on a loopback port whose "model" is a rule-based answerer over
the toy world's ground truth (a stand-in for the model, not for the eval runner under test).

- With an image: POPE questions are answered from the scene; other questions with the gold answer
  of qa.jsonl. Without an image (blind): always "Yes." (a pure language prior).
- Judge requests (a system message, no image): "Rating: 6" when the response starts with the reference,
  "Rating: 1" otherwise, and an unreadable reply to "how many" questions.
- The first call for every `fail_every`-th question fails with 500 or 429 (to exercise retries).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ToyWorldServer:
    def __init__(self, datasets: list[Path], fail_every: int = 3) -> None:
        self.fail_every = fail_every
        self.calls: Counter[str] = Counter()
        self.failed: set[str] = set()
        self.objects: dict[str, set[str]] = {}  # image sha -> present "color shape" and shapes
        self.gold: dict[tuple[str, str], str] = {}  # (image sha, question) -> answer
        for data in datasets:
            for line in (data / "scenes.jsonl").read_text().splitlines():
                row = json.loads(line)
                sha = hashlib.sha256((data / row["image"]).read_bytes()).hexdigest()
                present = {f"{o['color']} {o['shape']}" for o in row["objects"]} | {
                    o["shape"] for o in row["objects"]
                }
                self.objects[sha] = present
            if (data / "qa.jsonl").is_file():
                for line in (data / "qa.jsonl").read_text().splitlines():
                    row = json.loads(line)
                    sha = hashlib.sha256((data / row["image"]).read_bytes()).hexdigest()
                    self.gold[(sha, row["text"])] = row["answer"]
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.app = self._build_app()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ToyWorldServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the toy server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def answer(self, messages: list[dict[str, Any]]) -> str:
        system = any(m["role"] == "system" for m in messages)
        user = messages[-1]["content"]
        parts = user if isinstance(user, list) else [{"type": "text", "text": user}]
        text = " ".join(p.get("text", "") for p in parts if p["type"] == "text")
        images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        if system:
            if "how many" in text.split("Response to evaluate:")[0].lower():
                return "I would rather not say."
            reference = re.search(r"Reference answer: (.*)\n", text).group(1)
            response = re.search(r"Response to evaluate: (.*)\n", text).group(1)
            ok = response.lower().startswith(reference.lower())
            return "Matches the facts. Rating: 6" if ok else "Wrong. Rating: 1"
        if not images:
            return "Yes."
        sha = hashlib.sha256(base64.b64decode(images[0].split(",", 1)[1])).hexdigest()
        pope = re.fullmatch(r"Is there an? (.+) in the image\?", text.strip())
        if pope:
            return "Yes, there is." if pope.group(1) in self.objects[sha] else "No, there is not."
        return self.gold.get((sha, text), "I do not know.")

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        def models() -> Any:  # two models: an eval without --model must ask which
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "toy"} for m in ("toy", "toy-large")
            ]
            return {"object": "list", "data": data}

        @app.post("/v1/chat/completions")
        def chat(body: dict[str, Any]) -> Any:
            messages = body["messages"]
            key = json.dumps(messages[-1]["content"], sort_keys=True)[:4000]
            self.calls[key] += 1
            digest = int(hashlib.md5(key.encode()).hexdigest(), 16)
            if self.fail_every and digest % self.fail_every == 0 and self.calls[key] == 1:
                self.failed.add(key)
                status = 429 if digest % 2 else 500
                return JSONResponse(
                    {"error": {"message": "try again"}}, status_code=status, headers={"retry-after-ms": "10"}
                )
            content = self.answer(messages)
            return {
                "id": "cmpl-toy",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }

        return app
