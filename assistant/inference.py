"""In-process inference: `Assistant.load(path_or_id)` then `chat(...)` or `stream(...)`.

Messages follow the OpenAI/transformers chat shape: `{"role": ..., "content": str | [parts]}` where a part is
`{"type": "text", "text": ...}` or `{"type": "image"}` (optionally carrying `"image": PIL.Image`). Images that are
not inside the parts are given in order with `images=[...]`, one per image part.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    PreTrainedModel,
    ProcessorMixin,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from assistant.anyres import with_fast_anyres
from assistant.errors import InputError, ModelLoadError
from assistant.images import load_image
from assistant.processing import load_processor
from assistant.qformer import step_model
from assistant.tokenizer import IMAGE_TOKEN

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
IMAGE_PART_TYPES = ("image", "image_url")


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    min_tokens: int = 0  # end of turn is not sampled before this many tokens (stop strings still end it)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_tokens <= self.max_new_tokens:
            raise InputError(
                f"min_tokens must be between 0 and max_tokens ({self.max_new_tokens}), got {self.min_tokens}"
            )
        if not 0.0 <= self.temperature <= 2.0:
            raise InputError(f"temperature must be between 0 and 2, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.temperature > 0.0}
        if self.min_tokens:
            kwargs["min_new_tokens"] = self.min_tokens
        if self.temperature > 0.0:
            kwargs |= {"temperature": self.temperature, "top_p": self.top_p}
        return kwargs


@dataclass(frozen=True)
class ChatResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"


def normalize_messages(
    messages: list[dict[str, Any]], images: list[Any] | None = None
) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    """Check roles and parts, escape literal image tokens in text, and pair every image part with one image.

    Returns messages whose content is a list of parts, and the images in slot order.
    """
    given = list(images or [])
    out_messages, out_images = [], []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            raise InputError(f"messages[{i}].role must be one of {list(ROLES)}, got {role!r}")
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise InputError(f"messages[{i}].content must be a string or a list of parts")
        clean = []
        for part in parts:
            kind = part.get("type")
            if kind == "text":
                # A user typing "<image>" must never open an image slot.
                clean.append(
                    {"type": "text", "text": str(part.get("text", "")).replace(IMAGE_TOKEN, "<image >")}
                )
            elif kind in IMAGE_PART_TYPES:
                if part.get("image") is not None:
                    out_images.append(load_image(part["image"]))
                elif given:
                    out_images.append(load_image(given.pop(0)))
                else:
                    raise InputError(
                        "the messages have more image parts than images were given; pass one image per part"
                    )
                clean.append({"type": "image"})
            else:
                raise InputError(f"messages[{i}] has a part of unknown type {kind!r}; use 'text' or 'image'")
        out_messages.append({"role": role, "content": clean})
    if given:
        if not any(p["type"] == "image" for m in out_messages for p in m["content"]):
            # Images given without slots go before the text of the first user turn, as LLaVA expects.
            first_user = next((m for m in out_messages if m["role"] == "user"), None)
            if first_user is None:
                raise InputError("images were given but there is no user message to attach them to")
            first_user["content"] = [{"type": "image"} for _ in given] + first_user["content"]
            out_images = [load_image(img) for img in given]
        else:
            raise InputError(f"{len(given)} more image(s) were given than the messages have image parts")
    return out_messages, out_images


class Assistant:
    """A LLaVA(-NeXT) model and its processor, ready to answer."""

    def __init__(self, model: PreTrainedModel, processor: ProcessorMixin, name: str = "assistant") -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name = name
        self._lock = threading.Lock()  # generate() is not re-entrant on one model

    @classmethod
    def load(cls, path_or_id: str | Path, device: str = "auto", dtype: str | None = None) -> Assistant:
        """Load a saved model directory (or hub id) with the transformers Auto classes."""
        source = str(path_or_id)
        if Path(source).exists() and not (Path(source) / "config.json").is_file():
            raise ModelLoadError(
                f"{source!r} has no config.json; give a directory written by `save_model` or a hub id"
            )
        try:
            config = AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"could not read a model config from {source!r}; give a model directory or a reachable hub id"
            ) from exc
        if not hasattr(config, "vision_config"):
            raise ModelLoadError(f"{source!r} is a {config.model_type!r} model, not a vision-language model")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = (
            getattr(torch, dtype)
            if dtype
            else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        )
        try:
            model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch_dtype).to(device)
            processor = with_fast_anyres(load_processor(source))
        # safetensors, torch and config errors have no common base; all of them mean "broken"
        except Exception as exc:
            log.debug("loading %s failed", source, exc_info=True)
            raise ModelLoadError(
                f"the model in {source!r} is incomplete or corrupt ({type(exc).__name__}); rebuild or re-download it"
            ) from exc
        return cls(model, processor, name=Path(source).name or source)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config.text_config, "max_position_embeddings", 2048))

    def prepare(
        self, messages: list[dict[str, Any]], images: list[Any] | None = None
    ) -> dict[str, torch.Tensor]:
        """Tokenized model inputs (input_ids, attention_mask, pixel_values, image_sizes) for one conversation."""
        return self._inputs(messages, images).to(self.device)

    def _inputs(self, messages: list[dict[str, Any]], images: list[Any] | None) -> Any:
        messages, pil_images = normalize_messages(messages, images)
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return self.processor(images=pil_images or None, text=[prompt], return_tensors="pt")

    def _collated(self, prepared: list[Any]) -> dict[str, torch.Tensor]:
        batch = {k: v.to(self.device) for k, v in collate(prepared, self.tokenizer.pad_token_id).items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        return batch

    def count_prompt_tokens(self, inputs: dict[str, torch.Tensor]) -> int:
        return int(inputs["input_ids"].shape[1])

    def _check_context(self, inputs: dict[str, torch.Tensor], params: SamplingParams) -> None:
        needed = self.count_prompt_tokens(inputs) + params.max_new_tokens
        if needed > self.context_length:
            raise InputError(
                f"prompt ({self.count_prompt_tokens(inputs)} tokens) plus max_tokens ({params.max_new_tokens}) is "
                f"{needed}, over the model's context of {self.context_length}; shorten the prompt or lower max_tokens"
            )

    def chat(
        self, messages: list[dict[str, Any]], images: list[Any] | None = None, **sampling: Any
    ) -> ChatResult:
        """Answer the conversation. `sampling`: max_new_tokens, temperature, top_p, stop, seed, min_tokens."""
        text_parts, prompt_tokens, completion_tokens, finish = [], 0, 0, "length"
        for event in self._generate(messages, images, SamplingParams(**_as_params(sampling))):
            text_parts.append(event.text)
            prompt_tokens, completion_tokens, finish = (
                event.prompt_tokens,
                event.completion_tokens,
                event.finish_reason,
            )
        return ChatResult("".join(text_parts), prompt_tokens, completion_tokens, finish)

    def chat_batch(
        self, conversations: Sequence[tuple[list[dict[str, Any]], list[Any] | None]], **sampling: Any
    ) -> list[ChatResult]:
        """Answer several `(messages, images)` conversations in one left-padded `generate`, in their order.

        Greedy answers are `chat`'s up to float rounding (padding changes the order of sums, rarely an argmax).
        A prompt over the context raises `InputError`, as `chat` does, before anything runs.
        """
        return self.generate_batch(conversations, SamplingParams(**_as_params(sampling)))[0]

    def generate_batch(
        self,
        conversations: Sequence[tuple[list[dict[str, Any]], list[Any] | None]],
        params: SamplingParams,
        **generate_extra: Any,
    ) -> tuple[list[ChatResult], Any]:
        """`chat_batch` with `generate`'s own output beside the answers: `generate_extra` reaches `generate`, so
        `output_hidden_states=True, return_dict_in_generate=True` also gives the prompt's hidden states (left-padded:
        column -1 is every row's last prompt token) from the same forward pass that starts the answers."""
        if not conversations:
            return [], None
        prepared = [self._inputs(messages, images) for messages, images in conversations]
        for inputs in prepared:  # the same refusals as chat, before any work
            self._check_context(inputs, params)
        batch = self._collated(prepared)
        prompt_tokens = batch["attention_mask"].sum(1).tolist()
        given = {k: v for k, v in batch.items() if k != "position_ids"}  # generate counts them from the mask
        with self._lock, torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = step_model(self.model, batch).generate(
                **given,
                **params.generate_kwargs(),
                pad_token_id=self.tokenizer.pad_token_id,
                **generate_extra,
            )
        ids = out if isinstance(out, torch.Tensor) else out.sequences
        ends, results = self._end_ids(), []
        for row, n in zip(ids[:, batch["input_ids"].shape[1] :].tolist(), prompt_tokens, strict=True):
            text, completion_tokens, finish = finish_row(row, ends, params, self.tokenizer.decode)
            results.append(ChatResult(text, int(n), completion_tokens, finish))
        return results, out

    def _end_ids(self) -> set[int]:
        """Every token id that ends generation: the tokenizer's end of turn and the generation config's."""
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ends = set(
            configured if isinstance(configured, list) else [configured] if configured is not None else []
        )
        return ends | ({self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set())

    def stream(
        self,
        messages: list[dict[str, Any]],
        images: list[Any] | None = None,
        cancel: threading.Event | None = None,
        **sampling: Any,
    ) -> Iterator[str]:
        """Yield the answer as text deltas. Setting `cancel` (or closing the iterator) stops generation."""
        for event in self._generate(messages, images, SamplingParams(**_as_params(sampling)), cancel):
            if event.text:
                yield event.text

    def stream_events(
        self,
        messages: list[dict[str, Any]],
        images: list[Any] | None = None,
        params: SamplingParams | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[ChatResult]:
        """Text deltas with token counts; the last event has empty text, the usage and the finish_reason."""
        return self._generate(messages, images, params or SamplingParams(), cancel)

    def _generate(
        self, messages, images, params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[ChatResult]:
        inputs = self.prepare(messages, images)
        self._check_context(inputs, params)
        prompt_tokens = self.count_prompt_tokens(inputs)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = cancel or threading.Event()
        result: dict[str, torch.Tensor] = {}

        def run() -> None:
            with self._lock, torch.inference_mode():
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                result["ids"] = step_model(self.model, inputs).generate(
                    **inputs,
                    **params.generate_kwargs(),
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_StopOnEvent(cancel)]),
                )

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        emitted, finish = "", None
        try:
            for delta in streamer:
                cut = _find_stop(emitted + delta, params.stop)
                if cut is not None:
                    cancel.set()
                    finish = "stop"
                    yield ChatResult((emitted + delta)[:cut][len(emitted) :], prompt_tokens, 0, "stop")
                    break
                emitted += delta
                yield ChatResult(delta, prompt_tokens, 0, "length")
        except GeneratorExit:  # the consumer went away: stop generating, then let the iterator close
            cancel.set()
            thread.join()
            raise
        thread.join()
        new_ids = result["ids"][0, prompt_tokens:]
        completion_tokens = int(len(new_ids))
        if finish is None:
            hit_eos = completion_tokens and int(new_ids[-1]) in self._end_ids()
            finish = "stop" if hit_eos or completion_tokens < params.max_new_tokens else "length"
        yield ChatResult("", prompt_tokens, completion_tokens, finish)


class _StopOnEvent(StoppingCriteria):
    """Ends generation as soon as the event is set (stop string found, client gone)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def _as_params(sampling: dict[str, Any]) -> dict[str, Any]:
    if "stop" in sampling:
        stop = sampling["stop"]
        sampling = {**sampling, "stop": (stop,) if isinstance(stop, str) else tuple(stop or ())}
    return sampling


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Index where the earliest stop string starts in `text`, or None."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def finish_row(
    new_ids: list[int], ends: set[int], params: SamplingParams, decode: Callable[..., str]
) -> tuple[str, int, str]:
    """(text, completion tokens, finish reason) of one row of a batched `generate`: the row ends at its first end
    id (the pads after it are not its tokens) or at its first stop string, else it ran to max_new_tokens."""
    end = next((i for i, t in enumerate(new_ids) if t in ends), None)
    kept = new_ids if end is None else new_ids[: end + 1]
    text = decode(kept, skip_special_tokens=True)
    cut = _find_stop(text, params.stop)
    if cut is not None:
        return text[:cut], len(kept), "stop"
    return text, len(kept), "stop" if end is not None or len(kept) < params.max_new_tokens else "length"


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
