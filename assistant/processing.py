"""Processors: the chat template, AnyRes grids and the LLaVA(-NeXT) processor around a tokenizer."""

from __future__ import annotations

from pathlib import Path

from transformers import (
    AutoProcessor,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedTokenizerBase,
    ProcessorMixin,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.utils import cached_file

from assistant.errors import ConfigError
from assistant.messages import user_turn
from assistant.tokenizer import IMAGE_TOKEN

# ChatML. A message's image parts become `image_text` ("<image>\n" for LLaVA), all of them before its text wherever
# the request put them, as LLaVA trains (its preprocessing moves the image token to the front): asked with the text
# first, the embedded model answered every question with one word. The assistant turn is wrapped in
# {% generation %} (outside any {% if %}) so TRL's assistant_only_loss can mask everything else.
_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set content = message['content'] -%}"
    "{%- else -%}{%- set ns = namespace(images='', text='') -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] in ['image', 'image_url'] -%}{%- set ns.images = ns.images + IMAGE_TEXT -%}"
    "{%- elif part['type'] == 'text' -%}{%- set ns.text = ns.text + part['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- set content = ns.images + ns.text -%}{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}{% generation %}{{- content + '<|im_end|>' -}}{% endgeneration %}"
    "{%- else -%}{{- content + '<|im_end|>' -}}{%- endif -%}"
    "{{- '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def chat_template(image_text: str = IMAGE_TOKEN + "\n") -> str:
    """The chat template with every image part written as `image_text`."""
    return _CHAT_TEMPLATE.replace("IMAGE_TEXT", repr(image_text))  # a Jinja string literal


CHAT_TEMPLATE = chat_template()

# CLIP's normalisation, the default for vision towers built from a config.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def anyres_grid_pinpoints(tile: int, max_tiles: int = 4) -> list[list[int]]:
    """Every (height, width) grid of `tile`-sized crops with at most `max_tiles` crops, 1x1 excluded.

    >>> anyres_grid_pinpoints(336, 4)[:3]
    [[336, 672], [336, 1008], [336, 1344]]
    """
    if max_tiles < 2:
        raise ConfigError(
            f"max_tiles must be >= 2 for AnyRes, got {max_tiles}; use a fixed-resolution model instead"
        )
    grids = [
        [rows * tile, cols * tile]
        for rows in range(1, max_tiles + 1)
        for cols in range(1, max_tiles + 1)
        if 1 < rows * cols <= max_tiles
    ]
    return grids


def build_processor(
    tokenizer: PreTrainedTokenizerBase,
    *,
    tile_size: int,
    patch_size: int,
    image_grid_pinpoints: list[list[int]] | None,
    vision_feature_select_strategy: str,
    num_additional_image_tokens: int,
    image_mean: list[float] | None = None,
    image_std: list[float] | None = None,
    chat_template: str = CHAT_TEMPLATE,
) -> LlavaNextProcessor | LlavaProcessor:
    """A LLaVA-NeXT processor (AnyRes) when `image_grid_pinpoints` is given, else a fixed-resolution LLaVA one."""
    if tile_size % patch_size:
        raise ConfigError(
            f"tile size {tile_size} is not a multiple of patch size {patch_size}; pick sizes that divide"
        )
    common = dict(
        size={"shortest_edge": tile_size},
        crop_size={"height": tile_size, "width": tile_size},
        image_mean=image_mean or CLIP_MEAN,
        image_std=image_std or CLIP_STD,
        do_center_crop=True,
    )
    kwargs = dict(
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy=vision_feature_select_strategy,
        num_additional_image_tokens=num_additional_image_tokens,
        chat_template=chat_template,
        image_token=IMAGE_TOKEN,
    )
    if image_grid_pinpoints:
        for grid in image_grid_pinpoints:
            if len(grid) != 2 or grid[0] % tile_size or grid[1] % tile_size:
                raise ConfigError(
                    f"grid {grid} must be [height, width], both multiples of the tile size {tile_size}"
                )
        image_processor = LlavaNextImageProcessorPil(image_grid_pinpoints=image_grid_pinpoints, **common)
        return LlavaNextProcessor(image_processor=image_processor, **kwargs)
    return LlavaProcessor(image_processor=CLIPImageProcessorPil(**common), **kwargs)


def load_processor(source: str | Path) -> ProcessorMixin:
    """`AutoProcessor.from_pretrained`, with the saved chat template put back where the processor class drops it
    (transformers 5.24's `Blip2Processor.__init__` does not pass `chat_template` on to its base class)."""
    processor = AutoProcessor.from_pretrained(str(source))
    if getattr(processor, "chat_template", None) is None:
        path = cached_file(str(source), "chat_template.jinja", _raise_exceptions_for_missing_entries=False)
        if path is not None:
            processor.chat_template = Path(path).read_text(encoding="utf-8")
    return processor


def image_question_tokens(processor: ProcessorMixin, config, image, question: str) -> tuple[int, int]:
    """(image tokens, prompt tokens) of one user turn holding `image` and `question`, with the generation prompt:
    the visual tokens a model's processor writes per image (AnyRes views, or a Q-Former's queries) and the whole
    prompt's length. `config`: the model's config (it names the image token)."""
    prompt = processor.apply_chat_template(user_turn(question), add_generation_prompt=True)
    ids = processor(images=[image], text=[prompt], return_tensors="pt")["input_ids"][0]
    image_token = getattr(config, "image_token_id", None) or config.image_token_index
    return int((ids == image_token).sum()), int(ids.shape[0])
