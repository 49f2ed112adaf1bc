"""The pieces of batched decoding: sample one token per row with that row's own parameters, and turn token ids into
text deltas that respect stop strings (prompts are left-padded together by `assistant.inference.collate`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from assistant.inference import SamplingParams


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
