"""Training data loading: formats, and corrupt images skipped, counted, or stopping the run with their paths."""

from __future__ import annotations

import json
import shutil

import pytest

from training.data import DataError, llava_to_messages, load_preference_dataset, load_sft_dataset


def test_llava_conversations_become_messages_with_image_parts():
    messages = llava_to_messages(
        [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A star."}]
    )
    assert messages == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A star."}]},
    ]


def test_both_sft_formats_load_the_same_samples(toy_data):
    from_llava, _ = load_sft_dataset(toy_data["instruct"] / "llava.json")
    from_trl, _ = load_sft_dataset(toy_data["instruct"] / "messages.jsonl")
    assert len(from_llava) == len(from_trl) == 16
    assert (
        from_llava[0]["messages"][0]["content"][1]["text"] == from_trl[0]["messages"][0]["content"][1]["text"]
    )
    assert from_trl[0]["images"][0].size == (128, 128)  # decoded lazily to PIL


def test_preference_pairs_load(toy_data):
    pairs, report = load_preference_dataset(toy_data["preference"])
    assert len(pairs) == report.kept == 12 and set(pairs.column_names) == {
        "prompt",
        "chosen",
        "rejected",
        "images",
    }


def test_corrupt_and_missing_images_are_skipped_and_counted(tmp_path, toy_data):
    data = shutil.copytree(toy_data["instruct"], tmp_path / "d")
    (data / "images" / "000003.png").write_bytes(b"\x89PNG broken")
    (data / "images" / "000007.png").unlink()
    dataset, report = load_sft_dataset(data, max_skip_share=0.2)
    assert (report.rows, report.kept, report.skipped) == (16, 14, 2) and len(dataset) == 14
    with pytest.raises(DataError, match=r"2 of 16 samples \(12.5%\).*000003.png"):
        load_sft_dataset(data, max_skip_share=0.01)


def test_rows_without_conversations_are_explained(tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(DataError, match="needs 'messages'"):
        load_sft_dataset(tmp_path / "bad.jsonl")
