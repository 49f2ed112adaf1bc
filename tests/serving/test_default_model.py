"""The embedded default model answers toy-world questions through the API, with the real `openai` client."""

from __future__ import annotations

from openai import OpenAI

from tests.serving.conftest import API_KEY, data_url, png_bytes, running_server, server_settings

# Shape and yes/no are left out: the embedded model answers them near chance (see its model card).
SKILLS = ("count", "color")


def test_default_model_answers_toy_world_questions():
    from assistant.toyworld import EVAL_SEED_BASE, PRESETS, build_records, generate_scene, render

    settings = server_settings(None)  # no model named: the embedded default
    right = {skill: 0 for skill in SKILLS}
    total = {skill: 0 for skill in SKILLS}
    with running_server(settings) as (url, _):
        client = OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
        name = client.models.list().data[0].id
        for seed in range(EVAL_SEED_BASE + 500_000, EVAL_SEED_BASE + 500_030):  # held-out evaluation scenes
            scene = generate_scene(seed, PRESETS["tiny"])
            image = data_url(png_bytes(render(scene)))
            for skill in SKILLS:
                for record in build_records(skill, [scene], seed)[:1]:
                    qa = record.turns[0]
                    content = [
                        {"type": "image_url", "image_url": {"url": image}},
                        {"type": "text", "text": qa.question},
                    ]
                    reply = client.chat.completions.create(
                        model=name, messages=[{"role": "user", "content": content}], max_tokens=12
                    )
                    answer = reply.choices[0].message.content.strip().lower().rstrip(".")
                    right[skill] += answer == qa.answer.lower()
                    total[skill] += 1
    accuracy = {skill: right[skill] / total[skill] for skill in SKILLS}
    # chance: about 1/7 for counts, 1/8 for colours; the model card has the measured figures
    assert min(total.values()) >= 20, total
    assert all(acc >= THRESHOLDS[skill] for skill, acc in accuracy.items()), accuracy


THRESHOLDS = {"count": 0.5, "color": 0.35}
