"""Ask every question once (with the image, and with `blind` without it), caching raw answers as JSONL.

The cache is keyed by (question_id, blind): a run that stops part way resumes where it stopped,
and re-scoring never asks the model again. A cache written for another model is refused.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from assistant.messages import user_turn

from .clients import AnswerClient, AnswerError, BatchAnswerClient, EvalError

log = logging.getLogger(__name__)

Key = tuple[str, bool]


@dataclass(frozen=True)
class EvalItem:
    question_id: str
    prompt: str
    image: Path | None  # absolute path; None for text-only questions (the judge)
    system: str | None = None

    def messages(self, blind: bool) -> tuple[list[dict[str, Any]], list[Path]]:
        """Chat messages and images; `blind` drops the image and keeps the same words."""
        with_image = self.image is not None and not blind
        messages = user_turn(self.prompt, images=int(with_image))
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        return messages, [self.image] if with_image and self.image is not None else []


class AnswerCache:
    """Raw answers in a JSONL file, one `{"question_id", "blind", "model", "answer"}` row per line."""

    def __init__(self, path: Path, model: str) -> None:
        self.path = Path(path)
        self.model = model
        self.answers: dict[Key, str] = {}
        self._lock = threading.Lock()
        if self.path.is_file():
            for i, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    key = (str(row["question_id"]), bool(row["blind"]))
                    cached_model, answer = row["model"], str(row["answer"])
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise EvalError(
                        f"line {i} of the answer cache {self.path} is not a cache row; delete the file to start over"
                    ) from exc
                if cached_model != model:
                    raise EvalError(
                        f"the answer cache {self.path} holds answers of model {cached_model!r}, not {model!r}; "
                        "use another --out or delete the cache"
                    )
                self.answers[key] = answer

    def get(self, key: Key) -> str | None:
        return self.answers.get(key)

    def put(self, key: Key, answer: str) -> None:
        with self._lock:
            self.answers[key] = answer
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                row = {"question_id": key[0], "blind": key[1], "model": self.model, "answer": answer}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class RunResult:
    answers: dict[Key, str]  # raw answers; failed questions are absent
    errors: dict[Key, str]  # question -> why the endpoint refused it
    asked: int  # questions sent to the model in this run (the rest came from the cache)


def run_items(
    client: AnswerClient,
    items: Sequence[EvalItem],
    *,
    max_tokens: int,
    cache: AnswerCache,
    blind_modes: Sequence[bool] = (False,),
    concurrency: int = 1,
    batch_size: int = 1,
    desc: str = "eval",
) -> RunResult:
    """Answer every item in every blind mode, from the cache where possible, `concurrency` at a time; a client
    that answers in batches (`answer_batch`, the in-process one) takes `batch_size` questions a call."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    jobs = [(item, blind) for blind in blind_modes for item in items]
    todo = [(item, blind) for item, blind in jobs if cache.get((item.question_id, blind)) is None]
    errors: dict[Key, str] = {}
    log.info("%s: %d answers cached, %d to ask", desc, len(jobs) - len(todo), len(todo))

    def record(key: Key, reply: str | AnswerError) -> None:
        if isinstance(reply, AnswerError):
            errors[key] = str(reply)
            log.warning("question %s (blind=%s) failed: %s", key[0], key[1], reply)
        else:
            cache.put(key, reply)

    with tqdm(total=len(todo), desc=desc, unit="q", disable=not todo) as bar:
        if isinstance(client, BatchAnswerClient) and batch_size > 1:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                replies = client.answer_batch([item.messages(blind) for item, blind in chunk], max_tokens)
                for (item, blind), reply in zip(chunk, replies, strict=True):
                    record((item.question_id, blind), reply)
                bar.update(len(chunk))
        else:
            _ask_in_threads(client, todo, max_tokens, concurrency, record, bar)
    answers = {k: a for item, blind in jobs if (a := cache.get(k := (item.question_id, blind))) is not None}
    return RunResult(answers=answers, errors=errors, asked=len(todo))


def _ask_in_threads(
    client: AnswerClient,
    todo: list[tuple[EvalItem, bool]],
    max_tokens: int,
    concurrency: int,
    record: Callable[[Key, str | AnswerError], None],
    bar: tqdm,
) -> None:
    """One question a call, `concurrency` calls in flight (an endpoint answers them side by side)."""

    def ask(item: EvalItem, blind: bool) -> str:
        messages, images = item.messages(blind)
        return client.answer(messages, images, max_tokens)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = {pool.submit(ask, item, blind): (item.question_id, blind) for item, blind in todo}
        try:
            for future in as_completed(futures):
                try:
                    reply: str | AnswerError = future.result()
                except AnswerError as exc:
                    reply = exc
                record(futures[future], reply)
                bar.update(1)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
