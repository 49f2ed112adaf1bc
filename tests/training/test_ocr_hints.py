"""OCR hints in training data and in evals: the real rapidocr reader, the service's text and placement."""

from __future__ import annotations

import json

import pytest

from assistant.messages import user_turn
from assistant.ocr import HINT_PREFIX, insert_hint
from assistant.toyworld import make_dataset
from evals.clients import InProcessClient
from training.ocr_hints import add_ocr_hints


def test_insert_hint_goes_before_the_first_text_after_the_images():
    parts = [{"type": "image"}, {"type": "text", "text": "What does it say?"}]
    hinted = insert_hint(parts, f"{HINT_PREFIX} STOP")
    assert hinted == [parts[0], {"type": "text", "text": f"{HINT_PREFIX} STOP\n"}, parts[1]]
    assert insert_hint(parts, "  ") == parts


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    # the "ocr" preset puts text in every scene
    return make_dataset(tmp_path_factory.mktemp("hints") / "d", task="ocr", n=4, seed=3, preset="ocr")


def test_hints_are_read_from_the_training_images_and_placed_as_the_service_does(text_data):
    before = [json.loads(line) for line in (text_data / "messages.jsonl").read_text().splitlines()]
    counts = add_ocr_hints(text_data, share=1.0)
    assert counts["eligible"] == len(before) and counts["hinted"] + counts["empty_reads"] == len(before)
    assert counts["hinted"] >= 3
    after = [json.loads(line) for line in (text_data / "messages.jsonl").read_text().splitlines()]
    llava = json.loads((text_data / "llava.json").read_text())
    hinted = 0
    for old, new, conv in zip(before, after, llava, strict=True):
        parts = new["messages"][0]["content"]
        if len(parts) == 3:  # image, hint, question
            hinted += 1
            assert parts[0] == {"type": "image"} and parts[1]["text"].startswith(HINT_PREFIX)
            assert parts[2] == old["messages"][0]["content"][1]
            assert conv["conversations"][0]["value"] == f"<image>\n{parts[1]['text']}{parts[2]['text']}"
        assert new["messages"][1:] == old["messages"][1:]  # answers untouched
    assert hinted == counts["hinted"]
    manifest = json.loads((text_data / "manifest.json").read_text())
    assert manifest["ocr_hints"]["hinted"] == hinted
    assert add_ocr_hints(text_data, share=1.0) == manifest["ocr_hints"]  # a second run changes nothing
    assert [json.loads(line) for line in (text_data / "messages.jsonl").read_text().splitlines()] == after


def test_hints_are_the_same_read_in_one_process_or_two(tmp_path):
    one, two = (
        make_dataset(tmp_path / name, task="ocr", n=6, seed=5, preset="ocr") for name in ("one", "two")
    )
    counts = add_ocr_hints(one, share=1.0, workers=1)
    assert add_ocr_hints(two, share=1.0, workers=2) == counts and counts["hinted"] >= 4
    for name in ("messages.jsonl", "llava.json"):
        assert (one / name).read_text() == (two / name).read_text()


def test_share_zero_hints_nothing_and_bad_shares_are_refused(tmp_path):
    data = make_dataset(tmp_path / "d", task="ocr", n=2, seed=4, preset="ocr")
    before = (data / "messages.jsonl").read_text()
    assert add_ocr_hints(data, share=0.0)["hinted"] == 0
    assert (data / "messages.jsonl").read_text() == before
    with pytest.raises(ValueError, match="share must be between 0 and 1"):
        add_ocr_hints(data, share=1.5)


def test_the_in_process_eval_client_adds_the_same_hint(tiny_assistant, text_data):
    row = json.loads((text_data / "qa.jsonl").read_text().splitlines()[0])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["text"]}]}]
    client = InProcessClient(tiny_assistant, ocr="on")
    assert client.name.endswith("+ocr=on")  # answers with hints are cached apart
    hinted = client._with_hints(messages, [text_data / row["image"]])
    parts = hinted[0]["content"]
    assert parts[1]["text"].startswith(HINT_PREFIX) and parts[2]["text"] == row["text"]
    assert client.answer(messages, [text_data / row["image"]], max_tokens=2) is not None


def test_a_batch_of_the_in_process_client_carries_the_hints_too(tiny_assistant, text_data):
    rows = [json.loads(line) for line in (text_data / "qa.jsonl").read_text().splitlines()[:2]]
    asks = [(user_turn(r["text"]), [text_data / r["image"]]) for r in rows]
    client = InProcessClient(tiny_assistant, ocr="on")
    assert client.answer_batch(asks, max_tokens=4) == [client.answer(m, i, max_tokens=4) for m, i in asks]
    plain = InProcessClient(tiny_assistant).answer_batch(asks, max_tokens=4)
    assert plain == [InProcessClient(tiny_assistant).answer(m, i, max_tokens=4) for m, i in asks]
