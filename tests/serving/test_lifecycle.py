"""Start-up, shutdown and failure: settings and CLI, draining, client disconnects, a dead engine, vLLM absent."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from assistant.cli import build_parser, main
from assistant.errors import ConfigError
from serving.cli import settings_from_args
from serving.settings import ServeSettings
from tests.serving.conftest import API_KEY, running_server, server_settings

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_settings_from_environment_and_flags():
    env = {
        "ASSISTANT_PORT": "9000",
        "ASSISTANT_API_KEY": "a,b",
        "ASSISTANT_MAX_MODEL_LEN": "4096",
        "ASSISTANT_OCR": "on",
    }
    settings = ServeSettings.from_env(env, port=9100)
    assert (settings.port, settings.api_keys, settings.max_model_len, settings.ocr) == (
        9100,
        ("a", "b"),
        4096,
        "on",
    )
    args = build_parser().parse_args(["serve", "--api-key", "k1", "--api-key", "k2", "--max-images", "2"])
    parsed = settings_from_args(args)
    assert parsed.api_keys == ("k1", "k2") and parsed.max_images == 2 and parsed.engine == "transformers"


@pytest.mark.parametrize(
    "values, words",
    [
        ({"engine": "tgi"}, "choose from"),
        ({"ocr": "maybe"}, "ocr must be"),
        ({"engine": "upstream"}, "--upstream-url"),
        ({"max_images": 0}, "max_images"),
        ({"port": 70000}, "port"),
        ({"upstream_url": "ftp://x"}, "http"),
    ],
)
def test_settings_refuse_bad_values(values, words):
    with pytest.raises(ConfigError, match=words):
        ServeSettings(**values)


def test_cli_reports_bad_settings_in_one_line(capsys):
    assert main(["serve", "--engine", "tgi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown engine 'tgi'") and err.count("\n") == 1


def test_vllm_engine_without_vllm_is_a_clear_error(capsys):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    assert main(["serve", "--engine", "vllm", "--model", "whatever"]) == 2
    assert "vLLM" in capsys.readouterr().err


def test_python_m_serving_starts_the_service(tiny_model_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "serving",
        "--model",
        str(tiny_model_dir),
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, ok = time.monotonic() + 90, False
        while time.monotonic() < deadline and proc.poll() is None and not ok:
            try:
                ok = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.3)
        assert ok, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "did not start"
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert models["data"][0]["id"] == tiny_model_dir.name
    finally:
        proc.terminate()
        proc.wait(30)


def test_shutdown_drains_in_flight_requests(tiny_model_dir):
    body = {"model": tiny_model_dir.name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 60}
    results: list[httpx.Response] = []
    with running_server(server_settings(tiny_model_dir, max_body_bytes=100_000)) as (url, server):
        worker = threading.Thread(
            target=lambda: results.append(
                httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH, timeout=60)
            )
        )
        worker.start()
        deadline = time.monotonic() + 10
        while (
            time.monotonic() < deadline
            and "assistant_requests_running 1.0" not in httpx.get(url + "/metrics", headers=AUTH).text
        ):
            time.sleep(0.01)
        server.should_exit = True  # what SIGTERM does
        worker.join(60)
    assert results and results[0].status_code == 200
    assert results[0].json()["usage"]["completion_tokens"] == 60


def test_client_disconnect_stops_generation(tiny_model_dir):
    body = {
        "model": tiny_model_dir.name,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 480,
        "stream": True,
    }
    with running_server(server_settings(tiny_model_dir)) as (url, _):
        with httpx.stream(
            "POST", url + "/v1/chat/completions", json=body, headers=AUTH, timeout=60
        ) as response:
            for line in response.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    break  # the first real delta; leave
        deadline = time.monotonic() + 20
        metrics = ""
        while time.monotonic() < deadline:
            metrics = httpx.get(url + "/metrics", headers=AUTH).text
            if "assistant_requests_running 0.0" in metrics:
                break
            time.sleep(0.05)
        generated = float(re.search(r"^assistant_completion_tokens_total (\S+)$", metrics, re.M).group(1))
        assert generated < 200, generated


def test_dead_engine_reports_503(tiny_model_dir):
    with running_server(server_settings(tiny_model_dir)) as (url, server):
        assert httpx.get(url + "/health").status_code == 200
        engine = _find_engine(server)
        engine._process.kill()  # the engine core dies (say, the OOM killer)
        engine._process.wait(10)
        deadline = time.monotonic() + 5
        while httpx.get(url + "/health").status_code != 503 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(url + "/health").status_code == 503
        assert httpx.get(url + "/ready", headers=AUTH).status_code == 503
        body = {"model": tiny_model_dir.name, "messages": [{"role": "user", "content": "hi"}]}
        response = httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH)
        assert response.status_code == 503
        assert json.loads(response.text)["error"]["code"] == "engine_unavailable"


def _find_engine(server):
    app = server.config.loaded_app
    while not hasattr(app, "state"):
        app = app.app
    return app.state.engine
