"""Engine faults and shutdown: when the engine's scheduler thread dies, liveness and readiness turn 503 within
5 s and every request (queued or new) gets a clean 503; SIGTERM to a real `python -m serving` process lets the
in-flight request finish before the process exits."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import httpx

from tests.resilience.conftest import API_KEY, AUTH, chat_body, is_openai_error
from tests.serving.conftest import running_server, server_settings


def find_engine(server):
    app = server.config.loaded_app
    while not hasattr(app, "state"):
        app = app.app
    return app.state.engine


def test_engine_death_turns_health_503_and_requests_get_a_clean_503(tiny_model_dir):
    with running_server(server_settings(tiny_model_dir)) as (url, server):
        engine = find_engine(server)
        body = chat_body(tiny_model_dir.name, "hi")
        assert (
            httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30).status_code == 200
        )

        def crash() -> (
            list
        ):  # the fault: the scheduler thread raises outside any batch, after a request queued
            time.sleep(1.0)
            raise RuntimeError("injected scheduler crash")

        engine._take_batch = crash
        queued: list[httpx.Response] = []
        waiter = threading.Thread(
            target=lambda: queued.append(
                httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30)
            )
        )
        time.sleep(0.2)  # the thread is inside crash() now
        waiter.start()
        died = time.monotonic()
        health = ready = 200
        while time.monotonic() - died < 5:
            health = httpx.get(url + "/health").status_code
            ready = httpx.get(url + "/ready", headers=AUTH).status_code
            if health == ready == 503:
                break
            time.sleep(0.05)
        print(f"FIGURE engine-death health 503 after {time.monotonic() - died:.2f} s")
        assert health == ready == 503
        waiter.join(10)
        assert queued, "a request queued when the engine died never got an answer"
        for response in (queued[0], httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH)):
            assert response.status_code == 503 and is_openai_error(response.json()), response.text
            assert response.json()["error"]["code"] == "engine_unavailable"


def test_sigterm_drains_the_in_flight_request_then_exits(tiny_model_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "serving", "--model", str(tiny_model_dir), "--port", str(port)]
    cmd += ["--device", "cpu", "--api-key", API_KEY, "--ocr", "off", "--drain-timeout-s", "30"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, up = time.monotonic() + 120, False
        while time.monotonic() < deadline and proc.poll() is None and not up:
            try:
                up = httpx.get(url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.3)
        assert up, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "did not start"
        results: list[httpx.Response] = []
        body = chat_body(tiny_model_dir.name, "hi", max_tokens=300)
        worker = threading.Thread(
            target=lambda: results.append(
                httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH, timeout=120)
            )
        )
        worker.start()
        while "assistant_requests_running 1.0" not in httpx.get(url + "/metrics", headers=AUTH).text:
            assert worker.is_alive() and time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        worker.join(120)
        code = proc.wait(60)
        print(
            f"FIGURE sigterm drained in-flight request, exit {code} after {time.monotonic() - signalled:.2f} s"
        )
        assert results and results[0].status_code == 200, results and results[0].text
        answer = results[0].json()
        assert answer["usage"]["completion_tokens"] == 300 or answer["choices"][0]["finish_reason"] == "stop"
        assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it caught, after the drain
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
