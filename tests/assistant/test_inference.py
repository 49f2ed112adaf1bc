"""The in-process inference API on the tiny model."""

from __future__ import annotations

import threading

import pytest
import torch

from assistant.errors import InputError, ModelLoadError
from assistant.inference import Assistant, SamplingParams, finish_row, normalize_messages


def _ask(text: str = "how many objects?", n_images: int = 1) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}]


def test_chat_is_deterministic_and_counts_tokens(tiny_assistant, red_image):
    first = tiny_assistant.chat(_ask(), images=[red_image], max_new_tokens=6)
    second = tiny_assistant.chat(_ask(), images=[red_image], max_new_tokens=6)
    assert first == second
    assert first.completion_tokens == 6 and first.finish_reason == "length"
    assert first.prompt_tokens > 20  # the image expanded into many tokens


def test_stream_yields_the_same_text_as_chat(tiny_assistant, red_image):
    whole = tiny_assistant.chat(_ask(), images=[red_image], max_new_tokens=10).text
    assert "".join(tiny_assistant.stream(_ask(), images=[red_image], max_new_tokens=10)) == whole


def test_sampling_with_a_seed_repeats(tiny_assistant, red_image):
    kwargs = dict(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=123)
    assert (
        tiny_assistant.chat(_ask(), [red_image], **kwargs).text
        == tiny_assistant.chat(_ask(), [red_image], **kwargs).text
    )


def test_stop_string_cuts_the_answer(tiny_assistant, red_image):
    whole = tiny_assistant.chat(_ask(), images=[red_image], max_new_tokens=12).text
    stop = whole[3:5]
    cut = tiny_assistant.chat(_ask(), images=[red_image], max_new_tokens=12, stop=[stop])
    assert cut.text == whole[: whole.find(stop)]
    assert cut.finish_reason == "stop"


def test_chat_batch_answers_as_chat_does(tiny_assistant, red_image):
    from PIL import Image

    tall = Image.new("RGB", (30, 70), (30, 30, 220))  # another shape: other tiles, so more image tokens
    conversations = [
        (_ask("how many objects?"), [red_image]),
        (_ask("what colour is the large square at the top left of the picture?"), [tall]),
        (_ask("shape?"), [red_image]),
    ]
    batched = tiny_assistant.chat_batch(conversations, max_new_tokens=6)
    single = [tiny_assistant.chat(m, images=i, max_new_tokens=6) for m, i in conversations]
    assert batched == single  # texts, token counts and finish reasons, although the rows were padded
    assert len({r.prompt_tokens for r in batched}) == 3
    text_only = [([{"role": "user", "content": t}], None) for t in ("hi", "say something longer")]
    assert tiny_assistant.chat_batch(text_only, max_new_tokens=5) == [
        tiny_assistant.chat(m, max_new_tokens=5) for m, _ in text_only
    ]


def test_chat_batch_stops_and_refuses_as_chat_does(tiny_assistant, red_image):
    conversations = [(_ask(), [red_image]), (_ask("and the shape?"), [red_image])]
    whole = tiny_assistant.chat(*conversations[0], max_new_tokens=12).text
    stop = whole[3:5]
    batched = tiny_assistant.chat_batch(conversations, max_new_tokens=12, stop=[stop])
    single = [tiny_assistant.chat(m, images=i, max_new_tokens=12, stop=[stop]) for m, i in conversations]
    # (token counts past a stop string differ: chat stops generating there, a batch runs on for its other rows)
    assert [(r.text, r.finish_reason) for r in batched] == [(r.text, r.finish_reason) for r in single]
    assert batched[0].text == whole[: whole.find(stop)] and batched[0].finish_reason == "stop"
    # rows with different numbers of images share a batch (the pixels are joined in row order)
    mixed = [
        (_ask(), [red_image]),
        (_ask(n_images=2), [red_image, red_image]),
        ([{"role": "user", "content": "hi"}], []),
    ]
    assert tiny_assistant.chat_batch(mixed, max_new_tokens=4) == [
        tiny_assistant.chat(m, images=i, max_new_tokens=4) for m, i in mixed
    ]
    with pytest.raises(InputError, match="over the model's context of 512"):
        tiny_assistant.chat_batch(conversations, max_new_tokens=600)


def test_a_batch_row_ends_at_its_first_end_id_or_stop_string():
    decode = lambda ids, skip_special_tokens: "".join("." if i in (2, 7) else chr(96 + i) for i in ids)  # noqa: E731
    greedy = SamplingParams(max_new_tokens=5)
    # ended early: the pads (0) after the end of turn (2) are not the row's tokens
    assert finish_row([3, 4, 2, 0, 0], {2, 7}, greedy, decode) == ("cd.", 3, "stop")
    assert finish_row([3, 7, 2, 0, 0], {2, 7}, greedy, decode) == ("c.", 2, "stop")  # any configured end id
    assert finish_row([3, 4, 5, 6, 8], {2}, greedy, decode) == ("cdefh", 5, "length")
    stopped = SamplingParams(max_new_tokens=5, stop=("e",))
    assert finish_row([3, 4, 5, 6, 8], {2}, stopped, decode) == ("cd", 5, "stop")


def test_cancel_event_stops_generation_early(tiny_assistant, red_image):
    cancel = threading.Event()
    events = tiny_assistant.stream_events(_ask(), [red_image], cancel=cancel)
    next(events)
    cancel.set()
    last = list(events)[-1]
    assert last.completion_tokens < 128


def test_literal_image_token_in_text_never_opens_a_slot(tiny_assistant, red_image):
    inputs = tiny_assistant.prepare(_ask("what is <image> and <image>?"), images=[red_image])
    plain = tiny_assistant.prepare(_ask("hello"), images=[red_image])
    image_id = tiny_assistant.model.config.image_token_index
    assert int((inputs["input_ids"] == image_id).sum()) == int((plain["input_ids"] == image_id).sum())


def test_images_without_slots_go_before_the_first_user_text(red_image):
    messages, images = normalize_messages([{"role": "user", "content": "what is this?"}], [red_image])
    assert messages[0]["content"][0] == {"type": "image"} and len(images) == 1


def test_two_images_in_one_conversation(tiny_assistant, red_image):
    result = tiny_assistant.chat(_ask(n_images=2), images=[red_image, red_image.rotate(90)], max_new_tokens=3)
    assert result.completion_tokens == 3


def test_slot_and_image_count_mismatch_is_explained(tiny_assistant, red_image):
    with pytest.raises(InputError, match="more image parts than images"):
        tiny_assistant.chat(_ask(n_images=2), images=[red_image])
    with pytest.raises(InputError, match="more image"):
        tiny_assistant.chat(_ask(n_images=1), images=[red_image, red_image])


def test_bad_roles_and_parameters_are_explained(tiny_assistant):
    with pytest.raises(InputError, match="role must be one of"):
        tiny_assistant.chat([{"role": "robot", "content": "hi"}])
    with pytest.raises(InputError, match="temperature"):
        tiny_assistant.chat([{"role": "user", "content": "hi"}], temperature=5.0)


def test_context_length_is_enforced(tiny_assistant):
    with pytest.raises(InputError, match="over the model's context of 512"):
        tiny_assistant.chat([{"role": "user", "content": "hi"}], max_new_tokens=600)


def test_loading_errors_say_what_to_do(tmp_path, tiny_model_dir):
    with pytest.raises(ModelLoadError, match="has no config.json"):
        Assistant.load(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="incomplete or corrupt"):
        Assistant.load(broken)


def test_loaded_model_runs_in_inference_mode(tiny_assistant):
    assert not tiny_assistant.model.training
    assert tiny_assistant.device == torch.device("cpu")


def test_min_tokens_holds_back_the_end_of_turn():
    """The embedded model names a colour in one token and ends its turn; min_tokens makes it go on."""
    from assistant.paths import DEFAULT_MODEL_DIR
    from assistant.toyworld import EVAL_SEED_BASE, PRESETS, generate_scene, render

    assistant = Assistant.load(DEFAULT_MODEL_DIR)
    image = render(generate_scene(EVAL_SEED_BASE + 7, PRESETS["tiny"]))
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "What colour is the diamond?"}],
        }
    ]
    short = assistant.chat(messages, [image], max_new_tokens=20)
    assert short.finish_reason == "stop" and short.completion_tokens < 20
    fixed = assistant.chat(messages, [image], max_new_tokens=20, min_tokens=20)
    assert fixed.completion_tokens == 20 and fixed.finish_reason == "length"
    assert fixed.text.startswith(short.text)
    with pytest.raises(InputError, match="min_tokens must be between 0 and max_tokens"):
        assistant.chat(messages, [image], max_new_tokens=4, min_tokens=5)
