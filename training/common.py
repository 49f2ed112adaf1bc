"""What every training stage shares: script arguments, loading a model for training (full, LoRA/DoRA, QLoRA),
atomic checkpoints, and writing a finished model directory."""

from __future__ import annotations

import io
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, BitsAndBytesConfig, PreTrainedModel
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, SFTTrainer

from assistant.anyres import with_fast_anyres
from assistant.errors import ConfigError
from assistant.modeling import PARTS, parts_of, save_model, set_trainable
from assistant.paths import resolve_model_source
from assistant.processing import load_processor
from assistant.qformer import expose_backbone, is_qformer_model
from assistant.threads import apply_threads
from training.grad_filter import GradientFilter
from training.grounding import GroundingMixin, TokenGrounding

log = logging.getLogger(__name__)

# LoRA on the language model only: CLIP has q_proj/v_proj too (STACK.md).
DEFAULT_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
# With a quantized base, TRL casts every trainable parameter to bf16, and a fully trained projector (modules_to_save)
# would then meet fp32 inputs; LoRA layers cast their inputs, so the projector gets LoRA adapters instead.
QUANTIZED_LORA_TARGETS = r".*(language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)|multi_modal_projector\.linear_[12])"
# Full module prefixes: short names would quantize the vision tower too (STACK.md).
QUANT_SKIP_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]
# The same for a BLIP-2 (Q-Former) model: its connector is `qformer` + `language_projection` (+ `query_tokens`, a
# parameter, which adapters cannot save: it stays as stage 1 left it under LoRA).
BLIP2_QUANTIZED_LORA_TARGETS = (
    r".*(language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)|language_projection)"
)
BLIP2_QUANT_SKIP_MODULES = ["vision_model", "qformer", "language_projection", "language_model.lm_head"]
BLIP2_MODULES_TO_SAVE = ["qformer", "language_projection"]


@dataclass
class DataArgs:
    dataset: str = field(
        metadata={"help": "Data file (LLaVA .json, TRL .jsonl), a directory holding one, or a hub name."}
    )
    image_root: str | None = field(default=None, metadata={"help": "Directory image paths are relative to."})
    max_skip_share: float = field(
        default=0.01,
        metadata={"help": "Stop if more than this share of samples have missing/corrupt images."},
    )
    max_samples: int | None = field(default=None, metadata={"help": "Use at most this many samples."})
    train_parts: list[str] = field(
        default_factory=lambda: ["connector", "language_model"],
        metadata={"help": f"Parts trained in full fine-tuning, from {sorted(PARTS)}."},
    )
    vision_lr_scale: float = field(
        default=1.0,
        metadata={
            "help": "The vision tower's learning rate as a share of learning_rate (with vision_tower in train_parts; "
            "full fine-tuning only), so a frozen-encoder recipe can let the encoder move a little."
        },
    )
    grounding_heads: str | None = field(
        default=None,
        metadata={
            "help": "Stage 0's vision_heads.pt: with grounding_weight > 0, each image token is also trained to point "
            "at the LM's words for its patch's shape and colour (training/grounding.py; toy towers only)."
        },
    )
    grounding_weight: float = field(default=0.0, metadata={"help": "Weight of the grounding loss (0: off)."})
    grad_filter_alpha: float = field(
        default=0.0,
        metadata={
            "help": "With a value in (0, 1), each step adds grad_filter_lambda times an average of the gradients "
            "with this decay to the gradient (Grokfast; training/grad_filter.py). 0: off."
        },
    )
    grad_filter_lambda: float = field(
        default=2.0, metadata={"help": "The filter's gain (with grad_filter_alpha)."}
    )
    threads: int = field(
        default=0,
        metadata={
            "help": "torch CPU threads; 0 chooses (assistant/threads.py): for models under 50M parameters the CPUs "
            "idle when the stage starts (a second thread is 1.78x faster on idle cores and loses 1.5x when another "
            "job shares them; run side-by-side jobs at 1), else every CPU this process may use."
        },
    )

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0: chosen by model size and CPUs), got {self.threads}")
        if not 0.0 <= self.max_skip_share <= 1.0:
            raise ConfigError(f"max_skip_share must be between 0 and 1, got {self.max_skip_share}")
        if self.grounding_weight < 0:
            raise ConfigError(f"grounding_weight must be >= 0, got {self.grounding_weight}")
        if self.grounding_weight > 0 and not self.grounding_heads:
            raise ConfigError("grounding_weight > 0 needs --grounding_heads (stage 0's vision_heads.pt)")
        unknown = set(self.train_parts) - set(PARTS)
        if unknown:
            raise ConfigError(f"unknown train_parts {sorted(unknown)}; choose from {sorted(PARTS)}")
        if self.grad_filter_alpha:
            GradientFilter(self.grad_filter_alpha, self.grad_filter_lambda)  # checks both
        if self.vision_lr_scale <= 0:
            raise ConfigError(f"vision_lr_scale must be > 0, got {self.vision_lr_scale}")
        if self.vision_lr_scale != 1.0 and "vision_tower" not in self.train_parts:
            raise ConfigError(
                f"vision_lr_scale={self.vision_lr_scale} needs vision_tower in train_parts (now {self.train_parts})"
            )


def _is_qformer(model_args: ModelConfig) -> bool:
    from transformers import AutoConfig

    return is_qformer_model(AutoConfig.from_pretrained(model_args.model_name_or_path))


def quantization_config(model_args: ModelConfig) -> BitsAndBytesConfig | None:
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return None
    skip = BLIP2_QUANT_SKIP_MODULES if _is_qformer(model_args) else QUANT_SKIP_MODULES
    if not model_args.use_peft:
        raise ConfigError("a 4/8-bit base model can only be trained with adapters; add --use_peft")
    compute = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if model_args.load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=model_args.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=model_args.use_bnb_nested_quant,
            bnb_4bit_compute_dtype=compute,
            llm_int8_skip_modules=skip,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def lora_config(model_args: ModelConfig):
    from peft import LoraConfig

    quantized = model_args.load_in_4bit or model_args.load_in_8bit
    qformer = bool(model_args.model_name_or_path) and _is_qformer(model_args)
    targets = model_args.lora_target_modules
    if not targets or targets == ["default"]:
        if qformer:
            targets = BLIP2_QUANTIZED_LORA_TARGETS if quantized else DEFAULT_LORA_TARGETS
        else:
            targets = QUANTIZED_LORA_TARGETS if quantized else DEFAULT_LORA_TARGETS
    connector = BLIP2_MODULES_TO_SAVE if qformer else ["multi_modal_projector"]
    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets,
        modules_to_save=model_args.lora_modules_to_save or (None if quantized else connector),
        use_dora=model_args.use_dora,
        use_rslora=model_args.use_rslora,
        bias="none",
    )


def load_model_for_training(model_args: ModelConfig, data_args: DataArgs) -> tuple[PreTrainedModel, object]:
    """A saved LLaVA(-NeXT) directory, loaded fresh (a 4-bit model must not have run a no-grad forward first)."""
    if not model_args.model_name_or_path:
        raise ConfigError(
            "--model_name_or_path is required: a model directory written by an earlier stage, a hub id, or "
            "`default` (the embedded model)"
        )
    model_args.model_name_or_path = resolve_model_source(model_args.model_name_or_path)
    quant = quantization_config(model_args)
    dtype = getattr(torch, model_args.dtype) if model_args.dtype not in (None, "auto") else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(
        model_args.model_name_or_path, dtype=dtype, quantization_config=quant
    )
    expose_backbone(model)  # Q-Former models: the backbone TRL's fused LM head reads
    if not torch.cuda.is_available():
        apply_threads(model.num_parameters(), data_args.threads, training=True)
    # the fast AnyRes path where it gives the reference's pixels; it saves as the reference processor
    processor = with_fast_anyres(load_processor(model_args.model_name_or_path))
    if not model_args.use_peft:
        trainable = set_trainable(model, data_args.train_parts)
        log.info("full fine-tuning of %s: %.2fM trainable parameters", data_args.train_parts, trainable / 1e6)
    return model, processor


def setup_logging() -> None:
    """The stage scripts' own log lines (what trains, the data report, skill checks) on stderr when a script is
    launched by itself (`accelerate launch training/sft.py ...`); the recipe sets the same format for its runs."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class AtomicCheckpointMixin:
    """Write each checkpoint into a staging directory and rename it into place, so a run killed mid-write never
    leaves a `checkpoint-N` that `--resume_from_checkpoint` would pick up half-written."""

    def _save_checkpoint(self, model, trial):  # noqa: D401 - Trainer hook
        from transformers.trainer_utils import rotate_checkpoints

        run_dir = Path(self._get_output_dir(trial=trial))
        staging_root = run_dir / ".staging"
        if self.args.should_save:
            shutil.rmtree(staging_root, ignore_errors=True)
        # a distributed run's processes each write their share (their RNG state) into the staging directory: it is
        # emptied before any writes and moved only once every process has written
        self.accelerator.wait_for_everyone()
        real_get_output_dir = self._get_output_dir
        self._get_output_dir = lambda trial=None: str(staging_root)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._get_output_dir = real_get_output_dir
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            name = f"checkpoint-{self.state.global_step}"
            for path in (staging_root / name).rglob("*"):
                if path.is_file():
                    with open(path, "rb") as fh:
                        os.fsync(fh.fileno())
            final = run_dir / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging_root / name, final)
            shutil.rmtree(staging_root, ignore_errors=True)
            rotate_checkpoints(
                output_dir=str(run_dir), save_total_limit=self.args.save_total_limit, use_mtime=False
            )

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """transformers 5.24 saves LLaVA weights in the legacy key layout (`language_model.model.*`) and Trainer's
        resume reads them back with a non-strict `load_state_dict`, silently loading nothing. Load full-model
        checkpoints through `from_pretrained`, which maps the keys, and copy them in strictly."""
        model = self.model if model is None else model
        weights = Path(resume_from_checkpoint) / "model.safetensors"
        if getattr(model, "peft_config", None) or self.is_fsdp_enabled or not weights.is_file():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        log.info("loading model weights from %s", resume_from_checkpoint)
        loaded = type(model).from_pretrained(resume_from_checkpoint, dtype=model.dtype)
        model.load_state_dict(loaded.state_dict(), strict=True)


class VisionLearningRateMixin:
    """Gives the vision tower's parameters `vision_lr_scale` times the learning rate of the others. Trainer's
    scheduler scales each parameter group from its own starting rate, so the ratio holds over the whole run."""

    vision_lr_scale: float = 1.0

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.vision_lr_scale == 1.0:
            return optimizer
        prefixes = parts_of(self.model)["vision_tower"]
        tower = {id(p) for name, p in self.model.named_parameters() if name.startswith(prefixes)}
        groups = []
        for group in optimizer.param_groups:
            for in_tower in (False, True):
                params = [p for p in group["params"] if (id(p) in tower) == in_tower]
                if params:
                    lr = group["lr"] * (self.vision_lr_scale if in_tower else 1.0)
                    groups.append({**group, "params": params, "lr": lr})
        optimizer.param_groups.clear()
        for group in groups:
            optimizer.add_param_group(group)
        log.info("vision tower learning rate: %g x %g", self.args.learning_rate, self.vision_lr_scale)
        return optimizer


def sample_lengths(dataset, processor) -> list[int]:
    """Each row's length in tokens, close enough to batch by: its text parts' tokens plus, for each image, the
    image tokens the processor writes for an image of that size (read from the file's header, not decoded). A
    processor that cannot say (no `_get_num_multimodal_tokens`) counts text alone."""
    from datasets import Image, Sequence
    from PIL import Image as PILImage

    tokenizer = getattr(processor, "tokenizer", processor)
    texts = [
        " ".join(part.get("text") or "" for message in messages for part in _parts(message["content"]))
        for messages in dataset["messages"]
    ]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    count = getattr(processor, "_get_num_multimodal_tokens", None)
    if count is None or "images" not in dataset.column_names:
        log.info(
            "length grouping by text tokens only (%s does not count image tokens)", type(processor).__name__
        )
        return lengths
    tokens_for: dict[tuple[int, int], int] = {}
    for i, images in enumerate(dataset.cast_column("images", Sequence(Image(decode=False)))["images"]):
        for image in images or []:
            source = io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"]
            with PILImage.open(source) as opened:  # the header only: the pixels are not decoded
                width, height = opened.size
            if (height, width) not in tokens_for:
                tokens_for[height, width] = int(count(image_sizes=[(height, width)]).num_image_tokens[0])
            lengths[i] += tokens_for[height, width]
    return lengths


def _parts(content) -> list[dict]:
    return [{"text": content}] if isinstance(content, str) else content


class ShuffledBatchesSampler(torch.utils.data.Sampler):
    """transformers' length grouping (shuffle, cut into mega-batches of 50 batches, sort each by length, longest
    first), with the batches then put in a random order: sorted, each stretch of 50 steps would run from the longest
    conversations (descriptions) to the shortest (one-word answers), and the run would end on the shortest.

    One process draws from torch's global generator (as every run before session 53 did). Processes of a distributed
    run each draw the same order from a `generator` of their own, seeded alike: accelerate hands every process its
    share of each batch from that order (and keeps a sampler's `generator` in step across processes), where the
    global generator's state could drift apart between processes that ran different batches."""

    def __init__(self, batch_size: int, lengths: list[int], generator: torch.Generator | None = None):
        self.batch_size, self.lengths = batch_size, lengths
        # only then: accelerate gives a sampler that has a `generator` attribute one of its own
        if generator is not None:
            self.generator = generator

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = getattr(self, "generator", None)
        indices = get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)
        batches = [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        return iter(
            [i for b in torch.randperm(len(batches), generator=generator).tolist() for i in batches[b]]
        )


class LengthGroupingMixin:
    """`train_sampling_strategy: group_by_length` for conversation datasets. Trainer's sampler needs a `length` column
    or tokenized rows, and a vision dataset has neither before its collator runs, so the lengths come from
    `sample_lengths`. Batches of like length carry less padding (benchmarks/train_batching.py).

    They also differ in how many answer tokens they hold (a batch of one-word answers against one of descriptions),
    and the loss divides by that count: grouped, a token of a short answer would weigh up to eight times one of a
    description, where random batches weigh every token about alike. So grouped batches divide by the mean count per
    batch seen so far instead, which keeps every token's weight equal (docs/recipe.md, session 29)."""

    _answer_tokens: float = 0.0
    _batches: int = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if (
            self.args.train_sampling_strategy == "group_by_length"
            and model.training
            and num_items_in_batch is not None
        ):
            self._answer_tokens += float(num_items_in_batch)
            self._batches += 1
            num_items_in_batch = torch.as_tensor(
                self._answer_tokens / self._batches, device=inputs["input_ids"].device
            )
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        # a length column is batched as ours (in a random order), not by transformers' sorted mega-batches
        if self.args.length_column_name in dataset.column_names:
            lengths = [int(n) for n in dataset[self.args.length_column_name]]
        elif "messages" in dataset.column_names:
            lengths = sample_lengths(dataset, self.processing_class)
        else:  # tokenized rows: transformers' own grouping reads their input_ids
            return super()._get_train_sampler(train_dataset)
        log.info(
            "grouping batches by length: %d rows, %d-%d tokens", len(lengths), min(lengths), max(lengths)
        )
        # a batch is grouped whole (every process's share of it alike in length, so none waits on another's)
        world = self.args.world_size
        return ShuffledBatchesSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps * world,
            lengths,
            torch.Generator().manual_seed(self.args.seed) if world > 1 else None,
        )


class StageTrainer(
    GroundingMixin, VisionLearningRateMixin, AtomicCheckpointMixin, LengthGroupingMixin, SFTTrainer
):
    """TRL's SFTTrainer with atomic checkpoints, the optional grounding loss, the vision tower's own learning
    rate and length-grouped batches for conversations: stages 1 and 2."""


def make_stage_trainer(model, processor, data_args: DataArgs, **kwargs) -> StageTrainer:
    if data_args.vision_lr_scale != 1.0 and kwargs.get("peft_config") is not None:
        raise ConfigError("vision_lr_scale applies to full fine-tuning; use it without --use_peft")
    trainer = StageTrainer(model=model, processing_class=processor, **kwargs)
    trainer.vision_lr_scale = data_args.vision_lr_scale
    if data_args.grad_filter_alpha:
        trainer.add_callback(GradientFilter(data_args.grad_filter_alpha, data_args.grad_filter_lambda))
    if data_args.grounding_weight > 0:
        if kwargs.get("peft_config") is not None:
            raise ConfigError("the grounding loss trains the connector in full; use it without --use_peft")
        trainer.grounding = TokenGrounding(
            trainer.model, processor.tokenizer, data_args.grounding_heads, data_args.grounding_weight
        )
    return trainer


def resume_checkpoint(output_dir: str, resume: str | bool | None) -> str | None:
    """`--resume_from_checkpoint true` means the newest complete checkpoint in output_dir (if any)."""
    if resume in (None, False, "false", "False", ""):
        return None
    if resume in (True, "true", "True"):
        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            log.info("no checkpoint in %s yet; starting from scratch", output_dir)
        return last
    if not Path(resume).is_dir():
        raise ConfigError(f"checkpoint {resume!r} does not exist; give a checkpoint-N directory or 'true'")
    return str(resume)


def save_final(trainer, processor, output_dir: str | Path, peft: bool) -> Path:
    """The finished stage as one directory: a full model (loads everywhere) or an adapter plus the processor."""
    out = Path(output_dir)
    trainer.save_state()  # trainer_state.json with the loss history, beside the weights
    # one process writes: a distributed run's others hold the same weights
    first = trainer.is_world_process_zero()
    if peft:
        # adapter weights + adapter_config.json (the Trainer writes them from one process)
        trainer.save_model(str(out))
        if first:
            processor.save_pretrained(out)
    elif first:
        save_model(trainer.model, processor, out)
    trainer.accelerator.wait_for_everyone()  # no process reads the stage before it is whole
    return out
