"""The pieces of batched decoding: collate prepared prompts with left padding, sample one token per row with
that row's own parameters, and turn token ids into text deltas that respect stop strings."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from assistant.inference import SamplingParams


def collate(prepared: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Join single-prompt processor outputs into one left-padded batch with per-row position ids.

    Each item holds input_ids (1, L_i) and optionally pixel_values, (n_i, P_i, C, H, W) with image_sizes (n_i, 2)
    for AnyRes or (n_i, C, H, W) for one view per image.
    """
    longest = max(int(p["input_ids"].shape[1]) for p in prepared)
    ids = torch.full((len(prepared), longest), pad_id, dtype=torch.long)  # (B, L)
    mask = torch.zeros((len(prepared), longest), dtype=torch.long)  # (B, L)
    for row, p in enumerate(prepared):
        length = int(p["input_ids"].shape[1])
        ids[row, longest - length :] = p["input_ids"][0]
        mask[row, longest - length :] = 1
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),  # pads sit at 0; real tokens count from 0
    }
    pixels = [p["pixel_values"] for p in prepared if p.get("pixel_values") is not None]
    if pixels and pixels[0].dim() == 4:  # one view per image (BLIP-2, LLaVA): (N_img, C, H, W) each
        batch["pixel_values"] = torch.cat(pixels)
    elif pixels:
        most = max(int(x.shape[1]) for x in pixels)
        padded = [torch.nn.functional.pad(x, (0, 0, 0, 0, 0, 0, 0, most - int(x.shape[1]))) for x in pixels]
        batch["pixel_values"] = torch.cat(padded)  # (N_img, P_max, C, H, W); the model trims by image_sizes
        batch["image_sizes"] = torch.cat(
            [p["image_sizes"] for p in prepared if p.get("image_sizes") is not None]
        )
    return batch


def make_generator(params: SamplingParams) -> torch.Generator | None:
    """A private random stream per request, so a seeded request samples the same tokens alone or in a batch."""
    if params.temperature == 0.0:
        return None
    generator = torch.Generator()
    if params.seed is not None:
        generator.manual_seed(params.seed)
    else:
        generator.seed()
    return generator


# Below this, sampling is greedy in effect, and logits / T over- or underflows float32 (T = 1e-300 is 0.0f).
MIN_TEMPERATURE = 1e-4


def sample_row(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    banned: int | None = None,
) -> int:
    """Next token for one row of logits (V,): greedy at temperature 0, else temperature + nucleus sampling.
    `banned` (the end-of-turn id while fewer than `min_tokens` are out) is never chosen."""
    if banned is not None:
        logits = logits.clone()
        logits[banned] = float("-inf")
    if params.temperature < MIN_TEMPERATURE or generator is None:
        return int(torch.argmax(logits))
    shifted = (
        logits.float() - logits.float().max()
    )  # the top token at 0: a tiny temperature cannot make inf/nan
    probs = torch.softmax(shifted / params.temperature, dim=-1).cpu()  # (V,)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > params.top_p  # keeps the token that crosses top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of `text` could still be the start of a stop string."""
    keep = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                keep = max(keep, size)
                break
    return keep


@dataclass
class TextTracker:
    """Token ids in, text deltas out; finds stop strings across token boundaries and never emits part of one."""

    stops: tuple[str, ...]
    ids: list[int] = field(default_factory=list)
    emitted: int = 0  # characters of the decoded text already sent
    stopped: bool = False

    def push(self, token_id: int, decode) -> str:
        self.ids.append(token_id)
        text = decode(self.ids)
        hits = [i for i in (text.find(s) for s in self.stops if s) if i >= 0]
        if hits:
            self.stopped = True
            return self._take(text, min(hits))
        if text.endswith("\ufffd"):  # an unfinished multi-byte character: wait for the next token
            return ""
        return self._take(text, len(text) - held_back(text, self.stops))

    def flush(self, decode) -> str:
        """The text still held back, once generation ended without a stop string."""
        if self.stopped:
            return ""
        text = decode(self.ids)
        return self._take(text, len(text))

    def _take(self, text: str, end: int) -> str:
        delta = text[self.emitted : end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return delta
