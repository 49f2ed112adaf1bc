"""The Q-Former connector (BLIP-2): learned query tokens cross-attend to the vision tower's features, and a linear
layer maps them to the LM's width, so every image costs `num_query_tokens` LM positions whatever its size.

    model, processor = build_model(ModelSpec(vision=..., language=..., connector="qformer", num_query_tokens=32))

The model is transformers' `Blip2ForConditionalGeneration` around any causal LM: it loads with
`AutoModelForImageTextToText` and `AutoProcessor` as is. Two choices differ from hub BLIP-2 checkpoints:
- the chat template writes the `num_query_tokens` image tokens where the image is (inside the user turn, like
  LLaVA's `<image>`), and the processor has `num_query_tokens=None` so it does not also prepend them; a prompt may
  then carry several images, and assistant-only loss masks line up with the text;
- the vision tower is BLIP-2's own class. A CLIP tower is converted (`blip2_tower_from_clip`): every weight carries
  over except CLIP's `pre_layrnorm`, which BLIP-2's tower does not have, so the converted tower's features differ;
  `training/stage0/blip2_tower.py` distills the converted tower back onto CLIP's features (docs/connectors.md has
  the measured difference). A BLIP-2 vision tower directory is used as is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    Blip2VisionModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from assistant.errors import ConfigError
from assistant.processing import CLIP_MEAN, CLIP_STD, chat_template
from assistant.tokenizer import IMAGE_TOKEN

log = logging.getLogger(__name__)

BLIP2_MODEL_TYPE = "blip-2"
BLIP2_VISION_TYPE = "blip_2_vision_model"


def is_qformer_model(model_or_config: Any) -> bool:
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "model_type", None) == BLIP2_MODEL_TYPE


def kept_layers(num_layers: int, feature_layer: int) -> int:
    """Encoder layers up to and including `feature_layer` (LLaVA's index into hidden_states: -1 = the last layer,
    -2 = the one before; 0 would be the embeddings, which a Q-Former cannot read alone)."""
    kept = num_layers + 1 + feature_layer if feature_layer < 0 else feature_layer
    if not 1 <= kept <= num_layers:
        raise ConfigError(
            f"vision_feature_layer {feature_layer} is outside the tower's {num_layers} layers; use -1 .. -{num_layers}"
        )
    return kept


def _tiled_positions(clip_positions: torch.Tensor, grid: int) -> torch.Tensor:
    """(1 + g*g, D) CLIP positions -> (1, 1 + grid*grid, D). Where `grid` is a multiple of g, every patch gets the
    position it has inside its g x g tile (what CLIP saw on AnyRes tiles); otherwise bicubic interpolation."""
    cls, patches = clip_positions[:1], clip_positions[1:]
    g = int(round(patches.shape[0] ** 0.5))
    square = patches.reshape(g, g, -1)
    if grid % g == 0:
        reps = grid // g
        full = square.repeat(reps, reps, 1)
    else:
        full = F.interpolate(
            square.permute(2, 0, 1)[None], size=(grid, grid), mode="bicubic", align_corners=False
        )[0].permute(1, 2, 0)
    return torch.cat([cls, full.reshape(grid * grid, -1)])[None]


def blip2_tower_from_clip(clip, image_size: int, feature_layer: int = -2) -> Blip2VisionModel:
    """A BLIP-2 vision tower with a CLIP tower's weights, cut after `feature_layer`, reading `image_size` px images.

    Carried over exactly: patch embedding (BLIP-2's bias is zero), class token, attention (q, k, v fused into
    `qkv`, with CLIP's key bias kept in the fused bias), MLPs and layer norms. The last hidden state goes through
    `post_layernorm`, set to a plain normalisation. Not carried: CLIP's `pre_layrnorm` (BLIP-2 has no such layer).
    """
    c = clip.config
    if image_size % c.patch_size:
        raise ConfigError(
            f"qformer_image_size {image_size} is not a multiple of the patch size {c.patch_size}"
        )
    layers = kept_layers(c.num_hidden_layers, feature_layer)
    config = Blip2VisionConfig(
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=c.num_attention_heads,
        image_size=image_size,
        patch_size=c.patch_size,
        hidden_act=c.hidden_act,
        layer_norm_eps=c.layer_norm_eps,
        qkv_bias=True,
    )
    tower = Blip2VisionModel(config).to(clip.dtype)
    src = clip.vision_model if hasattr(clip, "vision_model") else clip
    with torch.no_grad():
        emb = tower.embeddings
        emb.patch_embedding.weight.copy_(src.embeddings.patch_embedding.weight)
        emb.patch_embedding.bias.zero_()
        emb.class_embedding.copy_(src.embeddings.class_embedding.reshape(1, 1, -1))
        emb.position_embedding.copy_(
            _tiled_positions(src.embeddings.position_embedding.weight, image_size // c.patch_size)
        )
        for mine, theirs in zip(tower.encoder.layers, src.encoder.layers[:layers], strict=True):
            a, b = mine.self_attn, theirs.self_attn
            a.qkv.weight.copy_(torch.cat([b.q_proj.weight, b.k_proj.weight, b.v_proj.weight]))
            a.qkv.bias.copy_(torch.cat([b.q_proj.bias, b.k_proj.bias, b.v_proj.bias]))
            a.projection.load_state_dict(b.out_proj.state_dict())
            for name in ("layer_norm1", "layer_norm2"):
                getattr(mine, name).load_state_dict(getattr(theirs, name).state_dict())
            mine.mlp.fc1.load_state_dict(theirs.mlp.fc1.state_dict())
            mine.mlp.fc2.load_state_dict(theirs.mlp.fc2.state_dict())
        tower.post_layernorm.weight.fill_(1.0)
        tower.post_layernorm.bias.zero_()
    return tower


def build_qformer_model(
    vision: PreTrainedModel,
    vision_processor: Any,
    language: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    num_query_tokens: int,
    qformer_layers: int,
    qformer_hidden: int | None,
    qformer_heads: int | None,
    image_size: int | None,
    feature_layer: int,
    init: str | None = None,
) -> tuple[Blip2ForConditionalGeneration, Blip2Processor]:
    """A BLIP-2 model: `vision` (CLIP, converted; or BLIP-2's own tower) + a Q-Former + `language`. The Q-Former is
    fresh, or with `init` the query tokens and Q-Former that `training/stage0/qformer.py` pretrained on the tower."""
    kind = vision.config.model_type
    if kind == "clip_vision_model":
        tower = blip2_tower_from_clip(vision, image_size or vision.config.image_size, feature_layer)
    elif kind == BLIP2_VISION_TYPE:
        if image_size not in (None, vision.config.image_size):
            raise ConfigError(
                f"the BLIP-2 vision tower reads {vision.config.image_size} px images; drop qformer_image_size "
                f"({image_size}) or convert a CLIP tower instead"
            )
        tower = vision
    else:
        raise ConfigError(
            f"the qformer connector needs a CLIP or BLIP-2 vision tower, got {kind!r}; "
            "use the mlp2x_gelu connector for this tower"
        )
    qformer = qformer_config(tower.config, num_query_tokens, qformer_layers, qformer_hidden, qformer_heads)
    config = Blip2Config(
        vision_config=tower.config.to_dict(),
        qformer_config=qformer.to_dict(),
        text_config=language.config.to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        tie_word_embeddings=bool(getattr(language.config, "tie_word_embeddings", False)),
    )
    model = Blip2ForConditionalGeneration(config).to(language.dtype)
    # transformers initialises the queries to zeros (its checkpoints overwrite them); identical queries get identical
    # gradients and never tell apart, so every query token would carry the same summary. BLIP-2's own code (LAVIS)
    # draws them from N(0, initializer_range), as here.
    with torch.no_grad():
        model.query_tokens.normal_(0.0, config.qformer_config.initializer_range)
    model.vision_model.load_state_dict(tower.state_dict())
    model.language_model.load_state_dict(language.state_dict())
    if init:
        load_pretrained_qformer(model, init)
    size = tower.config.image_size
    image_processor = BlipImageProcessorPil(
        size={"height": size, "width": size},
        image_mean=getattr(vision_processor, "image_mean", None) or CLIP_MEAN,
        image_std=getattr(vision_processor, "image_std", None) or CLIP_STD,
        do_convert_rgb=True,
    )
    processor = Blip2Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_query_tokens=None,  # the chat template places the query tokens (qformer_chat_template)
    )
    processor.chat_template = qformer_chat_template(num_query_tokens)  # its __init__ drops a chat_template
    return model, processor


def qformer_config(
    tower_config, num_query_tokens: int, layers: int, hidden: int | None, heads: int | None
) -> Blip2QFormerConfig:
    """The Q-Former over `tower_config`'s features: `hidden` wide (default: the tower's), cross-attention in every
    layer."""
    hidden = hidden or tower_config.hidden_size
    heads = heads or tower_config.num_attention_heads
    if hidden % heads:
        raise ConfigError(f"qformer_hidden {hidden} is not a multiple of qformer_heads {heads}")
    if num_query_tokens < 1 or layers < 1:
        raise ConfigError(
            f"num_query_tokens and qformer_layers must be >= 1, got {num_query_tokens}, {layers}"
        )
    return Blip2QFormerConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        encoder_hidden_size=tower_config.hidden_size,
        cross_attention_frequency=1,
    )


QFORMER_WEIGHTS = "qformer.safetensors"


def load_pretrained_qformer(model: Blip2ForConditionalGeneration, source: str) -> None:
    """Copy the query tokens and Q-Former weights saved in directory `source` (QFORMER_WEIGHTS, names as in
    BLIP-2: `query_tokens`, `qformer.*`) into `model`; a different shape is refused with what to rebuild."""
    path = Path(source) / QFORMER_WEIGHTS
    if not path.is_file():
        raise ConfigError(
            f"qformer_init {source!r} has no {QFORMER_WEIGHTS}; build it with python -m training.stage0.qformer"
        )
    weights = load_file(path)
    own = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape) if k in own else 'absent'})"
        for k, v in weights.items()
        if not (k == "query_tokens" or k.startswith("qformer.")) or k not in own or own[k].shape != v.shape
    ]
    missing = [k for k in own if (k == "query_tokens" or k.startswith("qformer.")) and k not in weights]
    if wrong or missing:
        raise ConfigError(
            f"the Q-Former in {source!r} does not fit this model ({', '.join(wrong[:3] + missing[:3])}); "
            "pretrain it with the same num_query_tokens, qformer_layers, qformer_hidden and qformer_heads"
        )
    model.load_state_dict(weights, strict=False)
    log.info("Q-Former and %d query tokens from %s", weights["query_tokens"].shape[1], source)


def qformer_chat_template(num_query_tokens: int) -> str:
    """The project's ChatML template with each image part written as `num_query_tokens` image tokens."""
    return chat_template(IMAGE_TOKEN * num_query_tokens + "\n")


def step_model(model: PreTrainedModel, inputs) -> PreTrainedModel:
    """What runs a forward or `generate` on `inputs`: the model itself, except for a BLIP-2 step without pixels
    (a text-only prompt, decoding with a cache), which its language model runs alone, since BLIP-2's own forward
    and generate want pixel values every call."""
    return model.language_model if "pixel_values" not in inputs and is_qformer_model(model) else model


def _blip2_backbone(
    self, pixel_values=None, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs
):
    """BLIP-2's forward up to its LM's last hidden state: the query tokens merged into the prompt, then the LM's
    decoder (no head)."""
    if inputs_embeds is None:
        inputs_embeds = self.get_input_embeddings()(input_ids)
    interpolate = kwargs.pop("interpolate_pos_encoding", False)
    if pixel_values is not None:
        features = self.get_image_features(
            pixel_values, interpolate_pos_encoding=interpolate, return_dict=True
        ).pooler_output
        mask = self.get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds)
        inputs_embeds = inputs_embeds.masked_scatter(
            mask, features.to(inputs_embeds.device, inputs_embeds.dtype)
        )
    return self.language_model.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)


def expose_backbone(model: PreTrainedModel) -> PreTrainedModel:
    """Give a BLIP-2 model the `base_model` TRL's fused LM head calls (`trl.trainer.utils.add_fused_lm_head`: SFT,
    DPO and GRPO losses read `model.base_model(...).last_hidden_state` and apply the LM head in chunks). BLIP-2's
    `base_model` is the model itself, whose output has logits only. A bound method under `base_model_prefix`
    ("blip") is not a module: weights, saving and loading do not see it. Other models are returned untouched."""
    import types

    if is_qformer_model(model):
        object.__setattr__(model, model.base_model_prefix, types.MethodType(_blip2_backbone, model))
    return model
