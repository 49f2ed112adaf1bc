"""Model assembly: a vision tower and a causal LM (hub ids, local HF directories or small configs) joined by a
connector into one Hugging Face model plus its processor: LLaVA-NeXT (AnyRes) or LLaVA (fixed resolution) with the
MLP projector, BLIP-2 with the Q-Former (assistant/qformer.py).

    model, processor = build_model(ModelSpec(vision="openai/clip-vit-large-patch14-336",
                                             language="Qwen/Qwen2.5-0.5B-Instruct"))
    save_model(model, processor, "out/my-llava")   # loads with AutoModelForImageTextToText / vllm serve
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    Blip2VisionModel,
    CLIPVisionModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    SiglipVisionModel,
)

from assistant.errors import ConfigError, ModelLoadError
from assistant.processing import anyres_grid_pinpoints, build_processor
from assistant.qformer import BLIP2_VISION_TYPE, build_qformer_model, is_qformer_model
from assistant.tokenizer import IMAGE_TOKEN, prepare_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Connector:
    """A connector kind: the architecture that hosts it and, for the MLP, its activation (LLaVA's
    `linear_1 -> act -> linear_2`, vLLM's shape)."""

    architecture: str
    description: str
    projector_hidden_act: str | None = None


CONNECTORS: dict[str, Connector] = {
    "mlp2x_gelu": Connector(
        "llava", "two linear layers with a GELU between them (LLaVA-1.5/NeXT)", projector_hidden_act="gelu"
    ),
    "qformer": Connector(
        "blip-2", "learned query tokens cross-attending to the image, then a linear layer (BLIP-2)"
    ),
}

# Vision towers: the vision config's model_type -> whether features carry a CLS token, and its default strategy.
# CLIP prepends a CLS token that the "default" strategy drops; SigLIP has none, so every patch is kept.
VISION_TOWERS: dict[str, dict[str, Any]] = {
    "clip_vision_model": {
        "model_class": CLIPVisionModel,
        "num_additional_image_tokens": 1,
        "vision_feature_select_strategy": "default",
    },
    "siglip_vision_model": {
        "model_class": SiglipVisionModel,
        "num_additional_image_tokens": 0,
        "vision_feature_select_strategy": "full",
    },
}
# Full dual-encoder checkpoints (a CLIP or SigLIP model with its text half) -> the vision half's model_type.
DUAL_ENCODERS = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}


@dataclass
class ModelSpec:
    """What to assemble. `vision` and `language` are hub ids, local directories, or config dicts (random init)."""

    vision: str | dict[str, Any] = field(
        metadata={"help": "Vision tower: hub id, local dir, or a config dict."}
    )
    language: str | dict[str, Any] = field(
        metadata={"help": "Causal LM: hub id, local dir, or a config dict."}
    )
    tokenizer: str | PreTrainedTokenizerBase | None = field(
        default=None, metadata={"help": "Tokenizer (defaults to the language model's own)."}
    )
    connector: str = field(default="mlp2x_gelu", metadata={"help": f"Connector kind: {sorted(CONNECTORS)}."})
    max_tiles: int | None = field(
        default=4,
        metadata={"help": "AnyRes: high-res tiles per image (plus a thumbnail); None for fixed resolution."},
    )
    image_grid_pinpoints: list[list[int]] | None = field(
        default=None, metadata={"help": "Explicit AnyRes grids [[h, w], ...]; overrides max_tiles."}
    )
    vision_feature_layer: int = field(
        default=-2, metadata={"help": "Hidden layer of the vision tower to use."}
    )
    vision_feature_select_strategy: str | None = field(
        default=None,
        metadata={"help": "'default' (drop CLS) or 'full'; by default chosen from the tower kind."},
    )
    num_query_tokens: int = field(
        default=32, metadata={"help": "qformer: query tokens, i.e. LM positions per image."}
    )
    qformer_layers: int = field(default=2, metadata={"help": "qformer: transformer layers."})
    qformer_hidden: int | None = field(
        default=None, metadata={"help": "qformer: width (default: the vision tower's)."}
    )
    qformer_heads: int | None = field(
        default=None, metadata={"help": "qformer: attention heads (default: the vision tower's)."}
    )
    qformer_image_size: int | None = field(
        default=None,
        metadata={
            "help": "qformer: image side the tower reads, a multiple of its patch (default: the tower's own); "
            "e.g. two CLIP tiles wide to see what AnyRes tiles see."
        },
    )
    qformer_init: str | None = field(
        default=None,
        metadata={
            "help": "qformer: a directory from training/stage0/qformer.py whose query tokens and Q-Former start the "
            "connector (default: fresh)."
        },
    )
    freeze_vision: bool = field(default=True, metadata={"help": "Freeze the vision tower (LLaVA does)."})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16."})
    seed: int = 0

    def __post_init__(self) -> None:
        if self.connector not in CONNECTORS:
            raise ConfigError(f"unknown connector {self.connector!r}; choose from {sorted(CONNECTORS)}")
        if self.qformer_init and CONNECTORS[self.connector].architecture != "blip-2":
            raise ConfigError(f"qformer_init starts a Q-Former; the {self.connector!r} connector has none")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"unknown dtype {self.dtype!r}; choose from float32, bfloat16, float16")
        if self.vision_feature_select_strategy not in (None, "default", "full"):
            raise ConfigError(
                f"vision_feature_select_strategy must be 'default' or 'full', got {self.vision_feature_select_strategy!r}"
            )


def _pretrained(loader, source: str, what: str, **kwargs):
    """Call `loader.from_pretrained(source)` and turn a failure into one sentence that says what to do."""
    try:
        return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"could not load the {what} from {source!r} ({type(exc).__name__}); "
            "give a local Hugging Face directory or a hub id that is reachable from this machine"
        ) from exc


def load_vision_tower(source: str | dict[str, Any], dtype: torch.dtype) -> tuple[PreTrainedModel, Any]:
    """Return (vision model, image processor or None). Dual encoders (CLIPModel, SiglipModel) give their vision half;
    a BLIP-2 vision tower (the qformer connector's, training/stage0/blip2_tower.py) loads too."""
    known = {**VISION_TOWERS, BLIP2_VISION_TYPE: {"model_class": Blip2VisionModel}}
    if isinstance(source, dict):
        config = AutoConfig.for_model(**source)
        if config.model_type not in known:
            raise ConfigError(f"vision config model_type {config.model_type!r} is not one of {sorted(known)}")
        return AutoModel.from_config(config, dtype=dtype), None
    config = _pretrained(AutoConfig, source, "vision tower config")
    model_type = DUAL_ENCODERS.get(config.model_type, config.model_type)
    if model_type not in known:
        raise ModelLoadError(
            f"{source!r} is a {config.model_type!r} model, not a vision tower; use a CLIP or SigLIP checkpoint"
        )
    vision = _pretrained(known[model_type]["model_class"], source, "vision tower", dtype=dtype)
    try:
        image_processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError):
        image_processor = None
    return vision, image_processor


def load_language_model(source: str | dict[str, Any], dtype: torch.dtype) -> PreTrainedModel:
    if isinstance(source, dict):
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(**source), dtype=dtype)
    return _pretrained(AutoModelForCausalLM, source, "language model", dtype=dtype)


def build_model(spec: ModelSpec) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Assemble a LLaVA(-NeXT) or BLIP-2 model and its processor. The connector is freshly initialised (seeded)."""
    torch.manual_seed(spec.seed)
    dtype = getattr(torch, spec.dtype)
    vision, vision_processor = load_vision_tower(spec.vision, dtype)
    language = load_language_model(spec.language, dtype)
    tokenizer = _load_tokenizer(spec)
    if CONNECTORS[spec.connector].architecture == "blip-2":
        model, processor = build_qformer_model(
            vision,
            vision_processor,
            language,
            tokenizer,
            num_query_tokens=spec.num_query_tokens,
            qformer_layers=spec.qformer_layers,
            qformer_hidden=spec.qformer_hidden,
            qformer_heads=spec.qformer_heads,
            image_size=spec.qformer_image_size,
            feature_layer=spec.vision_feature_layer,
            init=spec.qformer_init,
        )
        return _finish(model, tokenizer, spec), processor
    if vision.config.model_type not in VISION_TOWERS:
        raise ConfigError(
            f"a {vision.config.model_type!r} tower goes with the qformer connector; the MLP reads CLIP or SigLIP"
        )
    tower = VISION_TOWERS[vision.config.model_type]
    strategy = spec.vision_feature_select_strategy or tower["vision_feature_select_strategy"]
    tile, patch = vision.config.image_size, vision.config.patch_size
    grids = spec.image_grid_pinpoints or (
        anyres_grid_pinpoints(tile, spec.max_tiles) if spec.max_tiles else None
    )

    common = dict(
        vision_config=vision.config,
        text_config=language.config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        projector_hidden_act=CONNECTORS[spec.connector].projector_hidden_act,
        vision_feature_layer=spec.vision_feature_layer,
        vision_feature_select_strategy=strategy,
        tie_word_embeddings=bool(getattr(language.config, "tie_word_embeddings", False)),
        image_seq_length=(tile // patch) ** 2,
    )
    if grids:
        model = LlavaNextForConditionalGeneration(LlavaNextConfig(image_grid_pinpoints=grids, **common))
    else:
        model = LlavaForConditionalGeneration(LlavaConfig(**common))
    model.to(dtype)
    model.model.vision_tower.load_state_dict(vision.state_dict())
    model.model.language_model.load_state_dict(language.get_decoder().state_dict())
    model.lm_head.load_state_dict(language.get_output_embeddings().state_dict())
    processor = build_processor(
        tokenizer,
        tile_size=tile,
        patch_size=patch,
        image_grid_pinpoints=grids,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=tower["num_additional_image_tokens"],
        image_mean=getattr(vision_processor, "image_mean", None),
        image_std=getattr(vision_processor, "image_std", None),
    )
    log.info("AnyRes grids: %s", len(grids) if grids else "none (fixed resolution)")
    return _finish(model, tokenizer, spec), processor


def _finish(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, spec: ModelSpec) -> PreTrainedModel:
    """What every architecture gets: room for the added tokens, generation settings, a frozen tower."""
    if len(tokenizer) > model.config.text_config.vocab_size:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    _configure_generation(model, tokenizer)
    if spec.freeze_vision:
        set_trainable(model, [p for p in PARTS if p != "vision_tower"])
    log.info(
        "built %s: %.2fM parameters (%s connector)",
        type(model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
        spec.connector,
    )
    return model


def _load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    if isinstance(spec.tokenizer, PreTrainedTokenizerBase):
        tokenizer = spec.tokenizer
    else:
        source = spec.tokenizer or spec.language
        if not isinstance(source, str):
            raise ConfigError(
                "a language model given as a config needs a tokenizer: pass ModelSpec(tokenizer=...)"
            )
        tokenizer = _pretrained(AutoTokenizer, source, "tokenizer")
    return prepare_tokenizer(tokenizer)


def _configure_generation(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    gen = model.generation_config
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    gen.do_sample = False


# Trainable parts, named by role; the paths are those of transformers v5 LLaVA models.
PARTS: dict[str, tuple[str, ...]] = {
    "vision_tower": ("model.vision_tower.",),
    "connector": ("model.multi_modal_projector.", "model.image_newline"),
    "language_model": ("model.language_model.", "lm_head."),
}
# The same roles in a BLIP-2 (Q-Former) model.
BLIP2_PARTS: dict[str, tuple[str, ...]] = {
    "vision_tower": ("vision_model.",),
    "connector": ("query_tokens", "qformer.", "language_projection."),
    "language_model": ("language_model.",),
}


def parts_of(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """Parameter-name prefixes of each trainable part of `model` (LLaVA or BLIP-2)."""
    return BLIP2_PARTS if is_qformer_model(model) else PARTS


def set_trainable(model: nn.Module, parts: set[str] | list[str] | tuple[str, ...]) -> int:
    """Train exactly `parts` (names from PARTS), freeze the rest; returns the number of trainable parameters."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ConfigError(f"unknown model parts {sorted(unknown)}; choose from {sorted(PARTS)}")
    prefixes = tuple(p for part in parts for p in parts_of(model)[part])
    count = 0
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(prefixes))
        count += param.numel() if param.requires_grad else 0
    return count


def save_model(model: PreTrainedModel, processor: ProcessorMixin, out_dir: str | Path) -> Path:
    """Write one directory that transformers' Auto classes and `vllm serve` load as is."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    # transformers v5 keeps the image processor inside processor_config.json; older readers (vLLM builds on
    # transformers 4.x, many tools) look for preprocessor_config.json, so write it too.
    processor.image_processor.save_pretrained(out)
    return out
