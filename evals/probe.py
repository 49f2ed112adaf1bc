"""Where does visual information get lost? Linear probes along a LLaVA(-NeXT) model, and one-object questions.

    assistant eval probe --model assistant/default_model --out reports/probe          # toy-world one-object scenes
    assistant eval probe --model models/merged --data labels.jsonl --out reports/probe  # your labelled images

For each attribute (toy world: shape, colour, region and size) and each image, the job runs the model once on the question
about that attribute and reads four points of the path an image takes:
- `encoder`: the vision features the connector reads (its input), mean- and max-pooled over the image's tokens;
- `connector`: the connector's output (the image tokens the LM sees), pooled the same way;
- `lm.K`: the LM's hidden state after layer K at the last prompt position, where the answer starts;
- `answer`: the greedy answer itself, scored with the evals' parser.
A linear probe (logistic regression on standardised features) is fit on the first half of the images and scored on
the rest, beside the majority-class baseline. A point that reads the label while the next one does not is where
the information is lost. Labelled data for any model: a JSONL of `{"image": PATH, "labels": {ATTR: VALUE},
"questions": {ATTR: TEXT}}` (questions optional; the default asks "What is the ATTR of the object?").
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from assistant.images import load_image
from assistant.messages import user_turn
from assistant.qformer import is_qformer_model

from .clients import EvalError
from .vqa import PARSERS, answer_credit

log = logging.getLogger(__name__)

TOY_QUESTIONS = {
    "shape": "What shape is the object?",
    "color": "What colour is the object?",
    "region": "Where in the image is the object?",
    "size": "Is the object small, medium or large?",
}
PROBE_BATCH = 16  # questions per forward pass
PROBE_SEED_BASE = 1_700_000_000  # inside the toy world's reserved evaluation range


@dataclass(frozen=True)
class ProbeItem:
    image: Image.Image | str
    labels: dict[str, str]
    questions: dict[str, str] = field(default_factory=dict)

    def question(self, attr: str) -> str:
        return self.questions.get(attr) or TOY_QUESTIONS.get(attr) or f"What is the {attr} of the object?"


def toyworld_items(n: int, seed: int = PROBE_SEED_BASE, preset: str = "tiny") -> list[ProbeItem]:
    """`n` one-object toy scenes (no text) labelled with their object's shape, colour, region (which ninth of the
    image: pooled image features lose it, so `encoder` and `connector` read it near `majority`; the LM's answer
    position is where it shows) and size (which third of the preset's object sizes its box falls in)."""
    from assistant.toyworld import generate_scene, get_preset, render
    from assistant.toyworld.relations import region

    config = dataclasses.replace(get_preset(preset), count=(1, 1), text_prob=0.0)
    items = []
    for i in range(n):
        scene = generate_scene(seed + i, config)
        obj = scene.objects[0]
        labels = {"shape": obj.shape, "color": obj.color, "region": region(scene, obj), "size": obj.size}
        items.append(ProbeItem(render(scene), labels))
    return items


def load_items(path: Path) -> list[ProbeItem]:
    """A JSONL of labelled images; image paths are relative to the file."""
    if not path.is_file():
        raise EvalError(f"probe data {path} does not exist; give a JSONL of image/labels rows or omit --data")
    items = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        if "image" not in row or not isinstance(row.get("labels"), dict) or not row["labels"]:
            raise EvalError(f"{path} line {i + 1}: each row needs 'image' and a non-empty 'labels' object")
        image = Path(row["image"])
        image = image if image.is_absolute() else path.parent / image
        items.append(
            ProbeItem(str(image), {k: str(v) for k, v in row["labels"].items()}, row.get("questions", {}))
        )
    if len(items) < 4:
        raise EvalError(f"{path} has {len(items)} rows; a probe needs at least 4 (half to fit, half to test)")
    return items


def _pool(x: torch.Tensor) -> torch.Tensor:
    """(N_tokens, D) -> (2D,): mean and max over the image's tokens."""
    x = x.reshape(-1, x.shape[-1]).float()
    return torch.cat([x.mean(0), x.amax(0)])


def _same_size_batches(
    items: Sequence[ProbeItem], attrs: Sequence[str], most: int
) -> Iterator[list[tuple[str, ProbeItem, Image.Image]]]:
    """Every (attribute, item, image) question, item by item, in batches of up to `most` whose images have one
    size (so that each row's share of the tower's and the connector's outputs is the same length)."""
    batch: list[tuple[str, ProbeItem, Image.Image]] = []
    for item in items:
        image = load_image(item.image)
        for attr in attrs:
            if batch and (len(batch) == most or image.size != batch[0][2].size):
                yield batch
                batch = []
            batch.append((attr, item, image))
    if batch:
        yield batch


@torch.no_grad()
def extract(
    assistant,
    items: Sequence[ProbeItem],
    attrs: Sequence[str],
    max_new_tokens: int = 8,
    max_batch: int = PROBE_BATCH,
) -> dict:
    """Features at every point and the answers: {"features": {attr: {point: (N, D)}}, "answers": {attr: [str]}};
    `max_batch` questions a forward pass (1: one at a time)."""
    from assistant.inference import SamplingParams

    model = assistant.model
    seen: dict[str, torch.Tensor] = {}
    # encoder: what the connector reads; connector: what it gives the LM (BLIP-2: the tower's output, the projection)
    if is_qformer_model(model):

        def read_tower(_module, _inputs, output):
            seen["encoder"] = output.last_hidden_state.detach()

        def read_projection(_module, _inputs, output):
            seen["connector"] = output.detach()

        handles = [
            model.vision_model.register_forward_hook(read_tower),
            model.language_projection.register_forward_hook(read_projection),
        ]
    else:

        def hook(_module, inputs, output):
            seen["encoder"], seen["connector"] = inputs[0].detach(), output.detach()

        handles = [model.model.multi_modal_projector.register_forward_hook(hook)]
    feats: dict[str, dict[str, list[torch.Tensor]]] = {a: {} for a in attrs}
    answers: dict[str, list[str]] = {a: [] for a in attrs}
    try:
        with tqdm(total=len(items) * len(attrs), desc="probe", unit="question") as bar:
            for batch in _same_size_batches(items, attrs, max_batch):
                conversations = [(user_turn(item.question(attr)), [image]) for attr, item, image in batch]
                # one generate: its first forward (the whole prompt) fires the hooks and gives the hidden states
                replies, out = assistant.generate_batch(
                    conversations,
                    SamplingParams(max_new_tokens=max_new_tokens),
                    output_hidden_states=True,
                    return_dict_in_generate=True,
                )
                # each row carries its own copy of its image: its share of the tower's and connector's outputs
                encoder, connector = (
                    seen[k].unflatten(0, (len(batch), -1)) for k in ("encoder", "connector")
                )
                hidden = out.hidden_states[0]  # the prompt's pass: embeddings, then every layer
                for row, (attr, _, _) in enumerate(batch):
                    points = {"encoder": _pool(encoder[row]), "connector": _pool(connector[row])}
                    # (B, T, D) each, padded on the left, so -1 is the prompt's end
                    for k, h in enumerate(hidden):
                        points[f"lm.{k}"] = h[row, -1].float()
                    for name, value in points.items():
                        feats[attr].setdefault(name, []).append(value)
                    answers[attr].append(replies[row].text)
                bar.update(len(batch))
    finally:
        for handle in handles:
            handle.remove()
    return {
        "features": {a: {p: torch.stack(v) for p, v in pts.items()} for a, pts in feats.items()},
        "answers": answers,
    }


def linear_probe(x: torch.Tensor, y: torch.Tensor, n_fit: int, steps: int = 300) -> float:
    """Test accuracy of a logistic regression fit on the first `n_fit` rows of (N, D) features."""
    torch.manual_seed(0)
    fit_x, test_x = x[:n_fit], x[n_fit:]
    mean, std = fit_x.mean(0), fit_x.std(0).clamp_min(1e-5)
    fit_z, test_z = (fit_x - mean) / std, (test_x - mean) / std
    k = int(y.max()) + 1
    layer = torch.nn.Linear(x.shape[1], k)
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-2, weight_decay=1e-2)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(layer(fit_z), y[:n_fit])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return layer(test_z).argmax(-1).eq(y[n_fit:]).float().mean().item()


def majority(y: torch.Tensor, n_fit: int) -> float:
    """Accuracy on the test half of always answering the fit half's most common label."""
    common = Counter(y[:n_fit].tolist()).most_common(1)[0][0]
    return y[n_fit:].eq(common).float().mean().item()


def score(items: Sequence[ProbeItem], extracted: dict, steps: int = 300) -> dict[str, dict[str, float]]:
    """{attr: {point: accuracy}} with `majority` (the baseline) and `answer` (the model's own answers)."""
    n_fit = len(items) // 2
    table: dict[str, dict[str, float]] = {}
    for attr, points in extracted["features"].items():
        values = sorted({it.labels[attr] for it in items})
        y = torch.tensor([values.index(it.labels[attr]) for it in items])
        row = {"majority": round(majority(y, n_fit), 4)}
        for point, x in points.items():
            row[point] = round(linear_probe(x, y, n_fit, steps), 4)
        kind = attr if attr in PARSERS else "text"
        credits = [
            answer_credit(kind, it.labels[attr], a)[0]
            for it, a in zip(items, extracted["answers"][attr], strict=True)
        ]
        row["answer"] = round(sum(credits[n_fit:]) / max(1, len(credits) - n_fit), 4)
        table[attr] = row
    return table


def markdown(table: dict[str, dict[str, float]]) -> str:
    """Rows: points along the model; columns: attributes."""
    attrs = list(table)
    points = list(next(iter(table.values())))
    lines = ["| point | " + " | ".join(attrs) + " |", "|---|" + "---|" * len(attrs)]
    for p in points:
        lines.append(f"| {p} | " + " | ".join(f"{table[a].get(p, float('nan')):.3f}" for a in attrs) + " |")
    return "\n".join(lines)


def run_probe(
    model: Any, out: Path | None, data: Path | None = None, n: int = 400, steps: int = 300
) -> dict[str, Any]:
    """Probe `model` (an `Assistant` or a model directory) on `data` or on `n` toy one-object scenes."""
    from assistant.inference import Assistant

    assistant = model if isinstance(model, Assistant) else Assistant.load(model)
    items = load_items(data) if data else toyworld_items(n)
    attrs = sorted({a for it in items for a in it.labels})
    missing = [a for a in attrs if any(a not in it.labels for it in items)]
    if missing:
        raise EvalError(f"every probe row needs the same labels; some rows lack {missing}")
    table = score(items, extract(assistant, items, attrs), steps)
    result = {
        "model": assistant.name,
        "data": str(data) if data else f"toyworld one-object scenes, seeds {PROBE_SEED_BASE}+{len(items)}",
        "n_fit": len(items) // 2,
        "n_test": len(items) - len(items) // 2,
        "scores": table,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "probe.json").write_text(json.dumps(result, indent=1))
        (out / "probe.md").write_text(
            f"# Probe of {assistant.name}\n\n{result['data']}; fit on {result['n_fit']}, scored on "
            f"{result['n_test']} images (accuracy; `majority` is the baseline).\n\n{markdown(table)}\n"
        )
    return result
