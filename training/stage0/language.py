"""The stage-0 tokenizer and language model, trained on toy-world text.

Text: conversations of several toy-world tasks (captions, mixed instructions, follow-ups, detailed
descriptions, reading text) rendered through the ChatML template, the image slot kept as `<image>`.
The tokenizer is a byte-level BPE (`assistant.tokenizer.train_bpe_tokenizer`); the LM a small
`LlamaForCausalLM` trained on packed blocks of that text.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from assistant.processing import CHAT_TEMPLATE
from assistant.tokenizer import train_bpe_tokenizer
from assistant.toyworld import build_records, generate_scene
from assistant.toyworld.records import Conversation
from assistant.toyworld.scene import SceneConfig
from assistant.toyworld.vocab import NUMBERS, PRICES, SIGNS, WORDS

from .config import LanguageArgs

log = logging.getLogger(__name__)
CORPUS_TASKS = ("caption", "instruct", "multiturn", "detail", "ocr")


def messages_of(conv: Conversation) -> list[dict]:
    """A conversation as chat messages; the first user turn carries the image."""
    messages: list[dict] = []
    for k, qa in enumerate(conv.turns):
        user: list[dict] = [{"type": "image"}] if k == 0 else []
        messages.append({"role": "user", "content": [*user, {"type": "text", "text": qa.question}]})
        messages.append({"role": "assistant", "content": qa.answer})
    return messages


def conversations(seeds: range, config: SceneConfig) -> list[Conversation]:
    scenes = [generate_scene(s, config) for s in seeds]
    out = [r for task in CORPUS_TASKS for r in build_records(task, scenes, seeds.start)]
    return [c for c in out if isinstance(c, Conversation)]


def raw_texts(convs: list[Conversation]) -> list[str]:
    """What the tokenizer learns from: questions, answers, chat roles and every printed string."""
    texts = [t for c in convs for qa in c.turns for t in (qa.question, qa.answer)]
    return texts + ["user\n", "assistant\n", "system\n"] * 50 + list(SIGNS + WORDS + PRICES + NUMBERS) * 5


def make_tokenizer(convs: list[Conversation], vocab_size: int) -> PreTrainedTokenizerBase:
    tokenizer = train_bpe_tokenizer(raw_texts(convs), vocab_size=vocab_size)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def token_stream(convs: list[Conversation], tokenizer: PreTrainedTokenizerBase, seed: int) -> torch.Tensor:
    """All conversations, shuffled, rendered with the chat template and concatenated: (T,) token ids."""
    order = list(range(len(convs)))
    random.Random(seed).shuffle(order)
    texts = [tokenizer.apply_chat_template(messages_of(convs[i]), tokenize=False) for i in order]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return torch.tensor([t for row in ids for t in row], dtype=torch.long)


def build_lm(args: LanguageArgs, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.lm_hidden,
        intermediate_size=int(8 / 3 * args.lm_hidden) // 32 * 32,
        num_hidden_layers=args.lm_layers,
        num_attention_heads=args.lm_heads,
        num_key_value_heads=args.lm_heads,
        max_position_embeddings=args.lm_max_positions,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


@torch.no_grad()
def perplexity(model: LlamaForCausalLM, stream: torch.Tensor, block: int, max_blocks: int = 48) -> float:
    """exp(mean next-token loss) over the first non-overlapping blocks of a held-out stream."""
    model.eval()
    n = min(max_blocks, len(stream) // block)
    blocks = stream[: n * block].view(n, block)
    losses = [model(input_ids=b, labels=b).loss for b in blocks.split(16)]
    model.train()
    weights = torch.tensor([len(b) for b in blocks.split(16)], dtype=torch.float)
    return math.exp(float((torch.stack(losses) * weights).sum() / weights.sum()))


@dataclass
class LanguageResult:
    model: LlamaForCausalLM
    losses: list[float] = field(default_factory=list)
    perplexity: dict[int, float] = field(default_factory=dict)  # step -> held-out perplexity
    seconds: float = 0.0
    train_tokens: int = 0


def train_lm(
    args: LanguageArgs,
    tokenizer: PreTrainedTokenizerBase,
    train: torch.Tensor,
    held_out: torch.Tensor,
    seed: int,
) -> LanguageResult:
    """Train on random blocks of `train`; held-out perplexity at step 0 and every `lm_eval_every` steps."""
    torch.manual_seed(seed)
    model = build_lm(args, tokenizer)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lm_lr, betas=(0.9, 0.95), weight_decay=0.1)
    warm = max(1, args.lm_steps // 20)

    def lr(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, args.lm_steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr)
    result = LanguageResult(model, train_tokens=len(train))
    result.perplexity[0] = perplexity(model, held_out, args.lm_block)
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(args.lm_steps), desc="stage0 language", mininterval=5)
    for step in bar:
        starts = torch.randint(0, len(train) - args.lm_block, (args.lm_batch,), generator=gen)
        batch = torch.stack([train[s : s + args.lm_block] for s in starts.tolist()])  # (B, T)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        result.losses.append(round(float(loss.detach()), 5))
        if (step + 1) % args.lm_eval_every == 0 or step + 1 == args.lm_steps:
            result.perplexity[step + 1] = perplexity(model, held_out, args.lm_block)
            bar.set_postfix(loss=f"{result.losses[-1]:.3f}", ppl=f"{result.perplexity[step + 1]:.2f}")
    result.seconds = time.perf_counter() - start
    model.eval()
    log.info(
        "language model: %d steps in %.0f s, held-out perplexity %s",
        args.lm_steps,
        result.seconds,
        result.perplexity,
    )
    return result


def save_language(
    result: LanguageResult, tokenizer: PreTrainedTokenizerBase, out: Path, tokenizer_out: Path
) -> Path:
    """The LM with its tokenizer (chat template included), and the tokenizer on its own."""
    result.model.generation_config.eos_token_id = tokenizer.eos_token_id
    result.model.generation_config.pad_token_id = tokenizer.pad_token_id
    result.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    tokenizer.save_pretrained(tokenizer_out)
    return out
