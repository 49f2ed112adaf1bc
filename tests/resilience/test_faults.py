"""Engine faults and shutdown: when the engine core process is killed, liveness and readiness turn 503 within
5 s and every request (in flight or new) gets a clean 503; SIGTERM to a real `python -m serving` process lets the
in-flight request finish before the process exits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest

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
        long = chat_body(tiny_model_dir.name, "hi", max_tokens=400, min_tokens=400)
        in_flight: list[httpx.Response] = []
        waiter = threading.Thread(
            target=lambda: in_flight.append(
                httpx.post(url + "/v1/chat/completions", json=long, headers=AUTH, timeout=30)
            )
        )
        waiter.start()
        while "assistant_requests_running 1.0" not in httpx.get(url + "/metrics", headers=AUTH).text:
            time.sleep(0.01)
        engine._process.send_signal(signal.SIGKILL)  # the fault: the engine core dies mid-answer
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
        assert in_flight, "the request in flight when the engine died never got an answer"
        for response in (in_flight[0], httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH)):
            assert response.status_code == 503 and is_openai_error(response.json()), response.text
            assert response.json()["error"]["code"] == "engine_unavailable"


def start_serving(tiny_model_dir) -> tuple[subprocess.Popen, str]:
    """A real `python -m serving` in a session of its own (as a terminal would run it), up and healthy."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "serving", "--model", str(tiny_model_dir), "--port", str(port)]
    cmd += ["--device", "cpu", "--api-key", API_KEY, "--ocr", "off", "--drain-timeout-s", "30"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline, up = time.monotonic() + 120, False
    while time.monotonic() < deadline and proc.poll() is None and not up:
        try:
            up = httpx.get(url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            time.sleep(0.3)
    if not up:
        proc.kill()
        raise AssertionError(
            proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "did not start"
        )
    return proc, url


def engine_core_of(proc: subprocess.Popen) -> psutil.Process:
    (core,) = [p for p in psutil.Process(proc.pid).children() if "serving.engines.engine_core" in p.cmdline()]
    return core


@pytest.mark.parametrize(
    "how",
    [
        # the drain itself is tested in the default run (tests/serving/test_lifecycle.py); the real signals in
        # `make resilience-slow`, to keep the default run under 10 minutes
        pytest.param("sigterm", marks=pytest.mark.slow),
        pytest.param("sigterm-group", marks=pytest.mark.slow),
        pytest.param("ctrl-c", marks=pytest.mark.slow),
    ],
)
def test_a_stop_signal_drains_the_in_flight_request_then_exits(tiny_model_dir, how):
    """SIGTERM to the server (docker stop), to its whole process group (a service manager's stop), or SIGINT
    to the group (Ctrl-C in a terminal), the last two reaching the engine core too: the request in flight
    finishes, then the server and its engine core exit."""
    proc, url = start_serving(tiny_model_dir)
    try:
        core = engine_core_of(proc)
        results: list[httpx.Response] = []
        body = chat_body(tiny_model_dir.name, "hi", max_tokens=300, min_tokens=300)  # never ends early
        worker = threading.Thread(
            target=lambda: results.append(
                httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH, timeout=120)
            )
        )
        worker.start()
        deadline = time.monotonic() + 60
        while "assistant_requests_running 1.0" not in httpx.get(url + "/metrics", headers=AUTH).text:
            assert worker.is_alive() and time.monotonic() < deadline, results and results[0].text
            time.sleep(0.01)
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM if how == "sigterm-group" else signal.SIGINT)
        signalled = time.monotonic()
        worker.join(120)
        code = proc.wait(60)
        print(
            f"FIGURE {how} drained in-flight request, exit {code} after {time.monotonic() - signalled:.2f} s"
        )
        assert results and results[0].status_code == 200, results and results[0].text
        answer = results[0].json()
        assert answer["usage"]["completion_tokens"] == 300
        # uvicorn re-raises the signal it caught, after the drain
        assert code in (0, -signal.SIGTERM, -signal.SIGINT)
        core.wait(10)  # psutil raises TimeoutExpired if it still runs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow  # test time: a server start of its own (~20 s); `make test-resilience` runs it
def test_a_killed_server_leaves_no_engine_core_behind(tiny_model_dir):
    proc, _ = start_serving(tiny_model_dir)
    try:
        core = engine_core_of(proc)
        proc.kill()  # no drain, no stop message: the core sees its socket close
        proc.wait(10)
        started = time.monotonic()
        core.wait(10)
        print(f"FIGURE engine core exited {time.monotonic() - started:.2f} s after its server was killed")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
