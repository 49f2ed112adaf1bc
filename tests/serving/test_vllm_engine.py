"""The vllm engine's mapping of vLLM's outputs and exceptions, through the stand-in of vLLM's API that the
contract check (serving/engines/vllm_contract) keeps in line with vLLM's source. Real: the engine, its
chat template (the tiny model's processor) and its error types; stood in: vLLM alone."""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from assistant.inference import SamplingParams
from serving.engines.base import GenerationRequest
from serving.engines.vllm_contract import standin
from serving.engines.vllm_contract.standin import Script, standin_vllm
from serving.engines.vllm_engine import VLLMEngine
from serving.errors import (
    ContextLengthExceeded,
    EngineUnavailable,
    GenerationFailed,
    InvalidRequest,
    Overloaded,
)
from serving.metrics import Metrics
from serving.settings import ServeSettings


def request(request_id: str = "r1", max_tokens: int = 8, image: bool = True) -> GenerationRequest:
    content = [{"type": "image"}] if image else []
    content.append({"type": "text", "text": "how many objects are there?"})
    images = [Image.new("RGB", (40, 30), (200, 30, 30))] if image else []
    return GenerationRequest(
        request_id, [{"role": "user", "content": content}], images, SamplingParams(max_new_tokens=max_tokens)
    )


def run(tiny_model_dir, script: Script, body, **settings):
    """Start a vllm engine over the stand-in, run `body(engine)`, stop it; return what body returned."""
    values = dict(engine="vllm", model=str(tiny_model_dir), max_images=2) | settings

    async def go():
        engine = VLLMEngine(ServeSettings(**values), Metrics(), vllm=standin_vllm(script))
        await engine.start()
        try:
            return await body(engine)
        finally:
            await engine.stop(1.0)

    return asyncio.run(go())


async def collect(engine: VLLMEngine, req: GenerationRequest) -> list:
    return [delta async for delta in await engine.generate(req)]


def test_start_reads_the_context_from_model_config(tiny_model_dir):
    script = Script(max_model_len=48, max_num_seqs=3)

    async def body(engine):
        return engine.context_length, engine.max_num_seqs, engine.healthy()

    assert run(tiny_model_dir, script, body) == (48, 3, True)
    assert script.shut_down


@pytest.mark.parametrize(
    ("pieces", "vllm_reason", "max_tokens", "text", "reason"),
    [
        (("Two", " red", "."), "stop", 8, "Two red.", "stop"),
        (("Two", " red", "."), "stop", 2, "Two red", "length"),
        (("la", " la", " la"), "repetition", 8, "la la la", "stop"),
    ],
)
def test_finish_reasons_and_text(tiny_model_dir, pieces, vllm_reason, max_tokens, text, reason):
    script = Script(pieces=pieces, finish_reason=vllm_reason)
    deltas = run(tiny_model_dir, script, lambda e: collect(e, request(max_tokens=max_tokens)))
    assert "".join(d.text for d in deltas) == text
    assert [d.finish_reason for d in deltas][-1] == reason
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1].completion_tokens == min(len(pieces), max_tokens)
    # the prompt count is vLLM's (the rendered tokens, 10 per image here), not a second image-processor pass
    assert deltas[-1].prompt_tokens > 10
    assert script.aborted == []  # finished requests are not aborted


@pytest.mark.parametrize(
    ("vllm_reason", "error"), [("error", GenerationFailed), ("abort", EngineUnavailable)]
)
def test_failed_finish_reasons_raise(tiny_model_dir, vllm_reason, error):
    script = Script(finish_reason=vllm_reason)
    with pytest.raises(error) as info:
        run(tiny_model_dir, script, lambda e: collect(e, request()))
    assert info.value.status == 503


@pytest.mark.parametrize(
    ("raised", "error", "status"),
    [
        (standin.QueueOverflowError(), Overloaded, 429),
        (standin.MaxQueuedTokensError(), Overloaded, 429),
        (standin.VLLMValidationError("too long", parameter="input_tokens"), ContextLengthExceeded, 400),
        (standin.VLLMValidationError("bad top_k", parameter="top_k"), InvalidRequest, 400),
        (standin.EngineDeadError(), EngineUnavailable, 503),
        (standin.EngineGenerateError(), GenerationFailed, 503),
        (RuntimeError("CUDA error: /opt/vllm/secret.py line 3"), EngineUnavailable, 503),
    ],
)
def test_errors_surface_before_the_stream_starts(tiny_model_dir, raised, error, status):
    """vLLM validates and admits a request on its generator's first step; generate() takes that step."""
    script = Script(fail_on_add=raised)

    async def body(engine):
        with pytest.raises(error) as info:
            await engine.generate(request())
        return info.value, engine.load()

    exc, load = run(tiny_model_dir, script, body)
    assert exc.status == status
    assert "secret" not in exc.message and "CUDA" not in exc.message
    assert load == (0, 0)


def test_prompt_over_the_context_is_refused_before_submitting(tiny_model_dir):
    script = Script(max_model_len=40)

    async def body(engine):
        with pytest.raises(ContextLengthExceeded, match="over the model's context of 40 tokens"):
            await engine.generate(request(max_tokens=30))
        with pytest.raises(ContextLengthExceeded):  # vLLM's own refusal while rendering
            await engine.generate(_long_request())
        return engine.load()

    assert run(tiny_model_dir, script, body) == (0, 0)


def _long_request() -> GenerationRequest:
    req = request(max_tokens=1)
    req.messages[0]["content"][-1]["text"] = "word " * 60
    return req


def test_closing_early_aborts_in_vllm(tiny_model_dir):
    script = Script(pieces=("a", "b", "c", "d"))

    async def body(engine):
        stream = await engine.generate(request("early"))
        first = await stream.__anext__()
        running = engine.load()
        await stream.aclose()
        return first.text, running, engine.load()

    assert run(tiny_model_dir, script, body) == ("a", (1, 0), (0, 0))
    assert "early" in script.aborted


def test_error_mid_stream_is_mapped(tiny_model_dir):
    script = Script(pieces=("a", "b", "c"), fail_after=1, error=standin.EngineDeadError())

    async def body(engine):
        stream = await engine.generate(request())
        texts = [(await stream.__anext__()).text]
        with pytest.raises(EngineUnavailable, match="restart the server"):
            await stream.__anext__()
        return texts, engine.load()

    assert run(tiny_model_dir, script, body) == (["a"], (0, 0))


def test_max_waiting_applies(tiny_model_dir):
    """vLLM runs max_num_seqs requests at once; past that they wait, and past --max-waiting get 429."""
    script = Script(max_num_seqs=1)

    async def body(engine):
        held = [await engine.generate(request(f"r{i}")) for i in range(2)]
        load = engine.load()
        with pytest.raises(Overloaded):
            await engine.generate(request("r3"))
        for stream in held:
            await stream.aclose()
        return load

    assert run(tiny_model_dir, script, body, max_waiting=1) == (1, 1)


def test_a_dead_engine_is_unhealthy(tiny_model_dir):
    script = Script()

    async def body(engine):
        script.dead = True
        healthy = engine.healthy()
        with pytest.raises(EngineUnavailable):
            await engine.generate(request())
        return healthy

    assert run(tiny_model_dir, script, body) is False
