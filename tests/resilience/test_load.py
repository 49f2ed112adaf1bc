"""Load and disconnects against a real server: streaming clients that leave mid-stream must free the engine
(running gauge back to 0 within 2 s, no more tokens generated), and a soak of mixed requests at concurrency 8
must see zero errors with flat memory. Figures are printed as `FIGURE ...` lines (run with -s to see them)."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai import OpenAI

from tests.resilience.conftest import API_KEY, AUTH, chat_body, image_message, metric, rss_mb
from tests.serving.conftest import data_url, png_bytes, red_square


def engine_gauges(http) -> tuple[float, float, float]:
    """(running, waiting, completion tokens so far) from /metrics."""
    text = http.get("/metrics").text
    return (
        metric(text, "assistant_requests_running"),
        metric(text, "assistant_requests_waiting"),
        metric(text, "assistant_completion_tokens_total"),
    )


def leave_mid_stream(base_url: str, model_name: str) -> bool:
    """Open a long stream, read the first real delta, then drop the connection; True if a delta came."""
    body = chat_body(model_name, "tell me a long story", max_tokens=400, stream=True)
    with httpx.stream(
        "POST", base_url + "/v1/chat/completions", json=body, headers=AUTH, timeout=60
    ) as response:
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                return True
    return False


def disconnect_run(base_url: str, http, model_name: str, count: int) -> dict[str, float]:
    _, _, tokens_before = engine_gauges(http)
    with ThreadPoolExecutor(8) as pool:
        got_delta = list(pool.map(lambda _: leave_mid_stream(base_url, model_name), range(count)))
    assert all(got_delta)
    left = time.monotonic()
    running = waiting = -1.0
    while time.monotonic() - left < 5:
        running, waiting, tokens = engine_gauges(http)
        if running == 0 and waiting == 0:
            break
        time.sleep(0.02)
    idle_after = time.monotonic() - left
    time.sleep(0.5)
    _, _, tokens_later = engine_gauges(http)
    figures = {
        "streams": count,
        "idle_after_s": round(idle_after, 3),
        "tokens_generated": tokens - tokens_before,
        "tokens_if_not_stopped": count * 400,
    }
    print(f"FIGURE disconnects {figures}")
    assert running == 0 and waiting == 0 and idle_after < 2.0, figures
    assert tokens_later == tokens, "generation went on after every client had left"
    assert figures["tokens_generated"] < count * 400 / 4, figures
    return figures


def test_20_streams_disconnected_mid_stream_free_the_engine(base_url, http, model_name):
    disconnect_run(base_url, http, model_name, 20)


@pytest.mark.slow
def test_100_streams_disconnected_mid_stream_free_the_engine(base_url, http, model_name):
    disconnect_run(base_url, http, model_name, 100)


def mixed_request(client: OpenAI, model_name: str, image_url: str, rng: random.Random) -> str:
    """One of five request shapes through the real OpenAI client; returns a short description of the answer."""
    kind = rng.randrange(5)
    text = [{"role": "user", "content": rng.choice(["hi", "how many objects are there?", "colour?"])}]
    if kind == 0:
        answer = client.chat.completions.create(model=model_name, messages=text, max_tokens=6)
        return answer.choices[0].finish_reason
    if kind == 1:
        stream = client.chat.completions.create(
            model=model_name, messages=text, max_tokens=6, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        return "stream"
    if kind == 2:
        messages = [{"role": "user", "content": image_message(image_url)}]
        answer = client.chat.completions.create(model=model_name, messages=messages, max_tokens=4)
        assert answer.usage.prompt_tokens > 20  # the image tokens are in the prompt
        return answer.choices[0].finish_reason
    if kind == 3:
        answer = client.chat.completions.create(
            model=model_name, messages=text, max_tokens=4, n=2, temperature=0.8, seed=rng.randrange(1000)
        )
        assert len(answer.choices) == 2
        return "n2"
    answer = client.chat.completions.create(model=model_name, messages=text, max_tokens=6, stop=["a", "e"])
    return answer.choices[0].finish_reason


def soak(base_url: str, http, model_name: str, count: int) -> dict[str, float]:
    client = OpenAI(base_url=base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
    image_url = data_url(png_bytes(red_square()))
    rngs = [random.Random(seed) for seed in range(count)]
    with ThreadPoolExecutor(8) as pool:  # warm-up, so the start figure is not the first allocation
        list(pool.map(lambda r: mixed_request(client, model_name, image_url, r), rngs[:16]))
    start_rss, started = rss_mb(), time.monotonic()
    errors: list[str] = []
    lock = threading.Lock()

    def one(rng: random.Random) -> None:
        try:
            mixed_request(client, model_name, image_url, rng)
        except Exception as exc:  # every failure is counted and shown, none may happen
            with lock:
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, rngs))
    elapsed = time.monotonic() - started
    end_rss = rss_mb()
    running, waiting, _ = engine_gauges(http)
    figures = {
        "requests": count,
        "concurrency": 8,
        "errors": len(errors),
        "seconds": round(elapsed, 1),
        "requests_per_s": round(count / elapsed, 1),
        "rss_start_mb": round(start_rss, 1),
        "rss_end_mb": round(end_rss, 1),
    }
    print(f"FIGURE soak {figures}")
    assert not errors, errors[:5]
    assert running == 0 and waiting == 0
    assert end_rss - start_rss < 60, figures  # flat: no growth per request
    return figures


def test_soak_120_mixed_requests_at_concurrency_8(base_url, http, model_name):
    soak(base_url, http, model_name, 120)


@pytest.mark.slow
def test_soak_500_mixed_requests_at_concurrency_8(base_url, http, model_name):
    soak(base_url, http, model_name, 500)
