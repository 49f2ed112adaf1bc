"""The model card of a recipe-built model: the recipe, the data sizes, and the metrics after each stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HEADLINES = {"vqa": ("all", "accuracy"), "pope": ("all", "accuracy")}


def _get(sections: dict, section: str, metric: str) -> float | None:
    value = sections.get(section, {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def metrics_table(metrics: dict[str, dict]) -> str:
    """Rows: stages; columns: VQA overall and per skill, POPE accuracy/F1/yes-ratio."""
    skills = sorted(
        {
            s
            for m in metrics.values()
            for s in m.get("vqa", {}).get("image", {})
            if s != "all" and "@" not in s
        }
    )
    head = ["stage", "VQA all", *[f"VQA {s}" for s in skills], "POPE acc", "POPE F1", "POPE yes-ratio"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for stage, m in metrics.items():
        for mode in ("image", "blind"):
            vqa, pope = m.get("vqa", {}).get(mode), m.get("pope", {}).get(mode)
            if vqa is None and pope is None:
                continue
            cells = [stage + (" (blind)" if mode == "blind" else "")]
            cells.append(_fmt(_get(vqa or {}, "all", "accuracy")))
            cells += [_fmt(_get(vqa or {}, s, "accuracy")) for s in skills]
            cells += [_fmt(_get(pope or {}, "all", k)) for k in ("accuracy", "f1", "yes_ratio")]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def crowd_table(metrics: dict[str, dict], skills: tuple[str, ...] = ("shape", "color", "count")) -> str:
    """Rows: stages; columns: skill accuracy by objects in the scene (1, 2-3, 4+)."""
    head = ["stage", *[f"{s} @{b}" for s in skills for b in ("1", "2-3", "4+")]]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for stage, m in metrics.items():
        vqa = m.get("vqa", {}).get("image", {})
        cells = [_fmt(_get(vqa, f"{s}@{b}", "accuracy")) for s in skills for b in ("1", "2-3", "4+")]
        rows.append("| " + " | ".join([stage, *cells]) + " |")
    return "\n".join(rows)


def probe_table(metrics: dict[str, dict]) -> str:
    """Rows: points along the model; columns: stage x attribute (`assistant eval probe`)."""
    probes = {stage: m["probe"] for stage, m in metrics.items() if m.get("probe")}
    if not probes:
        return ""
    cols = [(stage, attr) for stage, table in probes.items() for attr in table]
    points = list(next(iter(next(iter(probes.values())).values())))
    rows = ["| point | " + " | ".join(f"{st} {a}" for st, a in cols) + " |", "|---|" + "---|" * len(cols)]
    for point in points:
        rows.append(f"| {point} | " + " | ".join(_fmt(probes[st][a].get(point)) for st, a in cols) + " |")
    return "\n".join(rows)


def text_line(metrics: dict[str, dict]) -> str:
    final = metrics.get("final", {})
    plain, hinted = (final.get(k, {}).get("image", {}).get("ocr") for k in ("text", "text_ocr_hints"))
    if not plain or not hinted:
        return ""
    return (
        f"Text questions (toy-world `ocr` task, {plain.get('n', '?')} questions): "
        f"{_fmt(plain.get('accuracy'))} without OCR hints, {_fmt(hinted.get('accuracy'))} with the service's "
        "hints (`ocr=auto`, the rapidocr reader)."
    )


def chair_line(metrics: dict[str, dict]) -> str:
    lines = []
    for stage, m in metrics.items():
        chair = m.get("chair", {}).get("image", {}).get("all")
        if chair:
            line = (
                f"CHAIR on {chair.get('n', '?')} detailed descriptions ({stage}): CHAIR_s {_fmt(chair.get('chair_s'))}, "
                f"CHAIR_i {_fmt(chair.get('chair_i'))}, object coverage {_fmt(chair.get('coverage'))}."
            )
            relations = m["chair"]["image"].get("relations")
            if relations:
                line += (
                    f" Relation sentences: {_fmt(relations.get('per_description'))} per description, "
                    f"{_fmt(relations.get('accuracy'))} of them right."
                )
            texts = m["chair"]["image"].get("texts")
            if texts:
                line += (
                    f" Quoted text: {_fmt(texts.get('per_description'))} per description, "
                    f"{_fmt(texts.get('invented_per_description'))} not in the image."
                )
            lines.append(line)
    return "\n\n".join(lines)


def visual_tokens(model_dir: Path) -> int:
    """Image tokens the model's processor writes for one toy-world image (AnyRes views, or a Q-Former's queries)."""
    from transformers import AutoConfig

    from assistant.processing import image_question_tokens, load_processor
    from assistant.toyworld import PRESETS, generate_scene, render

    image = render(generate_scene(0, PRESETS["tiny"]))
    config = AutoConfig.from_pretrained(model_dir)
    return image_question_tokens(load_processor(model_dir), config, image, "?")[0]


def stage0_line(report: dict | None, args: dict[str, Any]) -> str:
    if report is None:  # a run continued from a model whose workdir is not here
        return f"Stage-0 encoder probe: in the card of the model this run continued from ({args.get('continue_from')})."
    probe = report.get("probe", {})
    return (
        f"Stage-0 encoder probe (frozen features, held-out scenes): `{json.dumps(probe.get('trained', {}))}`;\n"
        f"random-init encoder: `{json.dumps(probe.get('random_init', {}))}`."
    )


def time_line(built: dict) -> str:
    """The build's total, and in stage-2 units where stage 2's time is known (`training.recipe.build_time`)."""
    if not built:
        return ""
    line = f"Built in {built['seconds']:.0f} s ({built['seconds'] / 60:.1f} min)"
    if "stage2_units" not in built:
        return line + "."
    return (
        f"{line}: {built['stage2_units']} stage-2 units (stage 2, the same work in every run, took "
        f"{built['stage2_seconds']:.0f} s here; the unit compares builds across machines)."
    )


def write_model_card(
    model_dir: Path,
    *,
    args: dict[str, Any],
    data: dict[str, Path],
    metrics: dict,
    timings: dict,
    stage0: Path,
    built: dict | None = None,
    environment: dict | None = None,
) -> Path:
    sizes = {}
    for name, path in data.items():
        manifest = json.loads((path / "manifest.json").read_text())
        sizes[name] = f"{manifest['n']} scenes, {manifest['records']} records (task {manifest['task']})"
    report_file = stage0 / "stage0_report.json"
    stage0_report = json.loads(report_file.read_text()) if report_file.is_file() else None
    weights = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    config = json.loads((model_dir / "config.json").read_text())
    tokens = visual_tokens(model_dir)
    if config.get("model_type") == "blip-2":
        tag, kind = "blip-2", "A BLIP-2 (Q-Former connector) model"
        connector = (
            f"\nConnector: a Q-Former, {tokens} query tokens per image "
            "(configs/toy/pretrain_qformer.yaml), over stage 0's CLIP tower converted to BLIP-2's class and distilled "
            "back onto its features (training/stage0/blip2_tower.py); docs/connectors.md compares it with the MLP.\n"
        )
        slots = stage0 / "qformer" / "qformer_report.json"
        if slots.is_file():
            after = json.loads(slots.read_text())["held_out_after"]
            connector += (
                "Its queries were pretrained in stage 0 as object slots (training/stage0/qformer.py); on held-out "
                f"scenes the slots read shape {after['shape']:.2f}, colour {after['color']:.2f}, "
                f"objectness {after['objectness']:.2f}.\n"
            )
    else:
        tag, kind = "llava-next", "A LLaVA-NeXT model"
        connector = (
            f"\nConnector: an MLP projector over AnyRes views (the whole image and its tiles), {tokens} visual tokens "
            "per toy-world image; docs/connectors.md compares it with the Q-Former connector.\n"
        )
    card = f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: image-text-to-text
tags: [{tag}, toy-world]
---
# The embedded default model

{kind} trained from scratch on the toy world (procedural scenes of shapes, colours and short text)
by `python -m training.recipe` (its arguments below; `make toy-model` runs the shipped model's). It knows only that world: counting, colours, shapes,
positions, existence and short printed text in toy-world scenes. Weights: {weights / 1e6:.1f} MB (float16).
{connector}
## Recipe
Stage 0 (`training/bootstrap.py`, configs/toy/bootstrap.yaml): byte-level BPE tokenizer, CLIP vision encoder and
Llama LM trained on toy-world data. Stage 1 (`pretrain.yaml`): connector and LM, on captions (the LM is our own,
trained from scratch, so it must learn to read image tokens here; docs/recipe.md). Stage 2 (`sft.yaml`):
LM + connector on instruction conversations (colour questions name their object by shape, existence negatives
swap one attribute of a present object; a share of the conversations on images with text carry the service's OCR
hint, read by rapidocr from the training image). With `--focus_task`, stage 2b (`sft_focus.yaml`): that one task
alone for several epochs (several tasks: stages 2b, 2b2, ... one after another), then stage 2c (`sft_refresh.yaml`): stage 2's data again for a few hundred steps (with
`--refresh_task`, that task's data: `instruct_train` also asks "is there any text?" of text-free scenes); the
stages below start from 2c. Stage 3 (`dpo.yaml`): DPO with LoRA on grounded vs hallucinated
answers, merged (`training/merge.py`). With `--grpo`, stage 3b (`grpo.yaml`): GRPO with LoRA from stage 2 (2c) on
toy-world prompts, rewarded by the scenes' ground truth (`training/rewards.py`, relation sentences included; grpo.yaml
charges each invented object, trains on the prompts where sampled answers erred and anchors stage 2c's short answers), merged
into `final_grpo`. With `--ship sft` neither runs: the last supervised stage is shipped, in float16, as `final_sft`
(the recipe arguments below say which was shipped).
Ablations behind these choices: docs/recipe.md.

Recipe arguments: `{json.dumps(args)}`

## Data
{chr(10).join(f"- {k}: {v}" for k, v in sizes.items())}

## Metrics after each stage
In-process, greedy; at most {args.get("eval_limit")} questions per benchmark from the reserved evaluation seeds.
"(blind)" rows ask the same questions with the image removed: the language-prior baseline.

{metrics_table(metrics)}

Skill accuracy by how many objects the scene holds (`shape@4+`: shape questions about scenes of four or more):

{crowd_table(metrics)}

{chair_line(metrics)}

{text_line(metrics)}

## Where visual information goes (`assistant eval probe`)
Linear probes on held-out one-object scenes (fit on half, scored on the other half; `majority` is the baseline):
the connector's input (`encoder`) and output (`connector`), the LM's hidden state at the answer position after each
layer (`lm.K`, 0 = embeddings), and the model's own answer to "What shape/colour is the object?" (region: "Where in
the image is the object?"; size: "Is the object small, medium or large?").

{probe_table(metrics)}

{stage0_line(stage0_report, args)}

## Time on the building machine (seconds)
`{json.dumps(timings)}`

{time_line(built or {})}

Threads and CPUs: `{json.dumps(environment or {})}`
"""
    path = model_dir / "README.md"
    path.write_text(card)
    return path
