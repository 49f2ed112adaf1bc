"""The transformers engine: batched greedy decoding equals decoding alone, throughput grows with concurrency,
stop strings and cancellation; and the pure decoding helpers."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time

import pytest
import torch
from PIL import Image

from assistant.inference import SamplingParams, collate
from serving.engines.base import GenerationRequest
from serving.engines.decoding import TextTracker, held_back, sample_row
from serving.engines.engine_core import CoreConfig, EngineCore, to_arrays
from serving.engines.transformers_engine import TransformersEngine
from serving.errors import ContextLengthExceeded
from serving.metrics import Metrics
from serving.settings import ServeSettings


def request(rid: str, text: str, images=(), **params) -> GenerationRequest:
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
    return GenerationRequest(
        rid, [{"role": "user", "content": content}], list(images), SamplingParams(**params)
    )


async def run(engine: TransformersEngine, req: GenerationRequest) -> tuple[str, int, str]:
    stream = await engine.generate(req)
    parts, last = [], None
    async for delta in stream:
        parts.append(delta.text)
        last = delta
    return "".join(parts), last.completion_tokens, last.finish_reason


@pytest.fixture(scope="module")
def engine_run(tiny_model_dir):
    """Run a coroutine against one started engine (a fresh event loop per call, one engine per module)."""
    loop = asyncio.new_event_loop()
    engine = TransformersEngine(
        ServeSettings(model=str(tiny_model_dir), device="cpu", batch_wait_ms=20), Metrics()
    )
    loop.run_until_complete(engine.start())
    yield engine, lambda coro: loop.run_until_complete(coro)
    loop.run_until_complete(engine.stop(5))
    loop.close()


def test_greedy_output_is_identical_alone_and_in_a_batch(engine_run):
    engine, run_sync = engine_run
    reqs = [
        request(
            "a", "how many objects are there?", [Image.new("RGB", (60, 40), (200, 0, 0))], max_new_tokens=12
        ),
        request("b", "a red circle left of a blue square and more words", max_new_tokens=9),
        request(
            "c",
            "yes",
            [Image.new("RGB", (100, 30), (0, 200, 0)), Image.new("RGB", (40, 40), (0, 0, 200))],
            max_new_tokens=15,
        ),
        request("d", "green", max_new_tokens=15, temperature=1.0, seed=3),  # a sampled neighbour in the batch
        request("e", "how many", max_new_tokens=4),
    ]

    async def alone():
        return [await run(engine, r) for r in reqs]

    async def together():
        return await asyncio.gather(*(run(engine, r) for r in reqs))

    batches_before = engine.metrics.batch_size._sum.get()
    solo, batched = run_sync(alone()), run_sync(together())
    assert (
        engine.metrics.batch_size._sum.get() - batches_before >= 2 * len(reqs) - 1
    )  # they really shared batches
    assert solo == batched
    assert [r[1] for r in solo] == [12, 9, 15, 15, 4]


def test_throughput_grows_with_concurrency(engine_run):
    engine, run_sync = engine_run
    req = request("t", "hello", max_new_tokens=24)

    async def wave(concurrency: int) -> float:
        start = time.perf_counter()
        await asyncio.gather(*(run(engine, req) for _ in range(concurrency)))
        return concurrency / (time.perf_counter() - start)

    one = min(run_sync(wave(1)) for _ in range(2))
    eight = max(run_sync(wave(8)) for _ in range(2))
    assert eight > 2.5 * one, f"1 at a time: {one:.2f} req/s, 8 at a time: {eight:.2f} req/s"


def test_stop_strings_and_cancellation(engine_run):
    engine, run_sync = engine_run
    text, _, _ = run_sync(run(engine, request("s", "yes no green star", max_new_tokens=12)))
    if len(text) > 3:
        stopped, _, reason = run_sync(
            run(engine, request("s", "yes no green star", max_new_tokens=12, stop=(text[2:4],)))
        )
        assert reason == "stop" and stopped == text[: text.index(text[2:4])]

    async def cancel_early():
        before = engine.metrics.completion_tokens._value.get()
        stream = await engine.generate(request("c", "hello", max_new_tokens=400))
        await stream.__anext__()
        await stream.aclose()
        while engine.load() != (0, 0):
            await asyncio.sleep(0.01)
        return engine.metrics.completion_tokens._value.get() - before

    assert run_sync(cancel_early()) < 100


def test_context_length_is_checked_before_streaming(engine_run):
    engine, run_sync = engine_run
    with pytest.raises(ContextLengthExceeded):
        run_sync(engine.generate(request("x", "hi", max_new_tokens=600)))


def test_collate_left_pads_and_counts_positions():
    a = {"input_ids": torch.tensor([[5, 6, 7]])}
    b = {"input_ids": torch.tensor([[8]])}
    batch = collate([a, b], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]


def test_sampling_rows():
    logits = torch.tensor([0.0, 3.0, 1.0])
    assert sample_row(logits, SamplingParams(), None) == 1
    params = SamplingParams(temperature=1.0, top_p=0.5)
    g = torch.Generator().manual_seed(0)
    assert {sample_row(logits, params, g) for _ in range(20)} == {1}  # top_p keeps only the best token


def test_text_tracker_holds_back_partial_stop_strings():
    pieces = ["Hel", "lo", " wo", "rld"]
    decode = lambda ids: "".join(pieces[i] for i in ids)  # noqa: E731
    tracker = TextTracker(stops=("o w",))
    assert tracker.push(0, decode) == "Hel"
    assert tracker.push(1, decode) == "l"  # "o" might start "o w"
    assert tracker.push(2, decode) == "" and tracker.stopped
    assert held_back("abc", ("cd", "bcx")) == 2
    plain = TextTracker(stops=())
    assert "".join(plain.push(i, decode) for i in range(4)) + plain.flush(decode) == "Hello world"


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-8, 2.0])
def test_sampling_survives_extreme_temperatures(temperature):
    """Found by schema fuzzing: a denormal temperature overflowed logits / T into nan probabilities."""
    import torch

    from assistant.inference import SamplingParams
    from serving.engines.decoding import make_generator, sample_row

    logits = torch.tensor([1.0, 3.0, -2.0, 2.5]) * 40
    params = SamplingParams(temperature=temperature, top_p=0.9, seed=1)
    token = sample_row(logits, params, make_generator(params))
    assert token in (1, 3) and (temperature > 1 or token == 1)


def test_deltas_that_queue_up_come_out_as_one(engine_run):
    """A reader that falls behind gets what queued up in one delta: same text, same counts, fewer deltas."""
    engine, run_sync = engine_run
    req = request("q", "a red circle left of a blue square", max_new_tokens=40, min_tokens=40)
    fast, tokens, reason = run_sync(run(engine, req))

    async def slow_reader():
        stream = await engine.generate(req)
        deltas = [await stream.__anext__()]
        while engine.load() != (0, 0):  # let the engine finish the answer while nobody reads
            await asyncio.sleep(0.01)
        deltas += [delta async for delta in stream]
        return deltas

    deltas = run_sync(slow_reader())
    assert "".join(d.text for d in deltas) == fast
    assert deltas[-1].completion_tokens == tokens == 40 and deltas[-1].finish_reason == reason == "length"
    assert len(deltas) <= 3  # the first token, then everything queued (and the finish, if it came apart)


@pytest.mark.parametrize("long_sees_image", [False, True], ids=["batch-shorter", "batch-longer"])
def test_requests_join_a_running_batch_and_decode_as_they_would_alone(engine_run, long_sees_image):
    """Requests that arrive while a batch decodes join it at the next step (the shorter of the two caches
    left-padded to the other's length), finish while it still runs, and answer as they would alone."""
    engine, run_sync = engine_run
    image = Image.new("RGB", (60, 40), (0, 90, 200))
    long_images = [Image.new("RGB", (90, 90), (250, 200, 0))] if long_sees_image else []
    joiners = [
        request(
            "j1", "how many objects are there?", [image], max_new_tokens=10, min_tokens=10
        ),  # longer prompt
        request("j2", "hi", max_new_tokens=14, min_tokens=14),  # shorter prompt
    ]
    alone = [run_sync(run(engine, r)) for r in joiners]

    async def joined():
        long = await engine.generate(
            request("long", "a red circle", long_images, max_new_tokens=400, min_tokens=400)
        )
        for _ in range(5):  # the long request is decoding, its cache a few tokens past its prompt
            await long.__anext__()
        answers = await asyncio.gather(*(run(engine, r) for r in joiners))
        after = await long.__anext__()
        await long.aclose()
        return answers, after

    answers, after = run_sync(joined())
    assert answers == alone
    # the long request was still decoding when they finished: they joined it, they did not wait for it
    assert after.finish_reason is None and after.completion_tokens < 400


def test_a_batch_that_fails_after_a_join_fails_every_request_in_it(tiny_assistant):
    """The engine core on a real model, driven over a pipe as its server drives it: a request whose pixels
    break the vision tower joins a running batch; the batch fails, and both requests hear so (none hangs)."""
    server, core_end = multiprocessing.Pipe()
    core = EngineCore(tiny_assistant, core_end, CoreConfig(model="tiny", max_batch_size=4))
    threading.Thread(target=core.receive, daemon=True).start()
    scheduler = threading.Thread(target=core.schedule, daemon=True)
    scheduler.start()
    text = [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    seen = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}]
    long = to_arrays(tiny_assistant.prepare(text))
    broken = to_arrays(tiny_assistant.prepare(seen, [Image.new("RGB", (60, 40), (200, 0, 0))]))
    broken["pixel_values"] = broken["pixel_values"][:, :, :2].copy()  # two colour channels: the tower refuses
    server.send(("add", 1, long, 400, SamplingParams(max_new_tokens=400, min_tokens=400)))

    def steps():
        while server.poll(10):
            kind, step = server.recv()
            assert kind == "step"
            yield step

    for step in steps():
        if any(delta[0] == 1 for delta in step.deltas):
            break  # request 1 is decoding
    server.send(("add", 2, broken, 10, SamplingParams(max_new_tokens=10)))
    failed = set()
    for step in steps():
        failed |= {job_id for job_id, _ in step.errors}
        assert not any(delta[3] for delta in step.deltas)  # nobody finished normally
        if failed == {1, 2}:
            break
    assert failed == {1, 2}
    server.send(("stop",))
    scheduler.join(10)
    assert not scheduler.is_alive() and core._jobs == {}
