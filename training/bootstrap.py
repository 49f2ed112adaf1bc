"""Stage 0 (toy world only): the project's own "pretrained" backbones, each a standard HF directory.

    python training/bootstrap.py --config configs/toy/bootstrap.yaml [--out models/stage0 --vision_steps 600 ...]

Writes OUT/tokenizer (byte-level BPE with the chat tokens and template), OUT/vision (CLIPVisionModel +
CLIP image processor), OUT/language (LlamaForCausalLM + tokenizer), OUT/vision_heads.pt (the contrastive
heads, for retrieval checks) and OUT/stage0_report.json (losses, probe accuracies against a random-init
encoder, retrieval, perplexity, time, peak RSS). Assemble the three with
`assistant.modeling.build_model(ModelSpec(vision=OUT/vision, language=OUT/language, tokenizer=OUT/tokenizer,
vision_feature_layer=<the report's vision_feature_layer>))`.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from trl import TrlParser

from assistant.toyworld import get_preset
from training.stage0.config import HOLDOUT_BASE, LanguageArgs, ProbeArgs, VisionArgs
from training.stage0.language import conversations, make_tokenizer, save_language, token_stream, train_lm
from training.stage0.probe import probe_encoder, retrieval
from training.stage0.vision import build_encoder, save_vision, train_vision

log = logging.getLogger(__name__)
LM_HOLDOUT_OFFSET = 1_000_000  # held-out text: scenes HOLDOUT_BASE + LM_HOLDOUT_OFFSET + i


@dataclass
class BootstrapArgs:
    out: str = field(
        default="models/stage0", metadata={"help": "Output directory (tokenizer/, vision/, language/)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of every random choice (weights, batches)."})
    preset: str = field(
        default="tiny", metadata={"help": "Toy-world scene preset (square scenes, a tile grid)."}
    )
    threads: int = field(
        default=0,
        metadata={"help": "torch CPU threads (0 keeps torch's default; 1 is faster on a busy machine)."},
    )
    overwrite: bool = field(default=False, metadata={"help": "Allow writing into a non-empty --out."})
    run_probe: bool = field(
        default=True, metadata={"help": "Probe the encoder (and a random-init one) after training."}
    )

    def __post_init__(self) -> None:
        config = get_preset(self.preset)  # raises with the list of presets
        if any(w != h for w, h in config.sizes):
            raise ValueError(
                f"preset {self.preset!r} has non-square sizes; stage 0 needs square scenes (e.g. tiny)"
            )
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(
    args: BootstrapArgs,
    vision: VisionArgs | None = None,
    language: LanguageArgs | None = None,
    probe: ProbeArgs | None = None,
) -> Path:
    """Train tokenizer, vision encoder and LM; probe the encoder; write the directories and the report."""
    vision, language, probe = vision or VisionArgs(), language or LanguageArgs(), probe or ProbeArgs()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ValueError(f"output directory {out} is not empty; choose a new --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = get_preset(args.preset)
    start = time.perf_counter()
    report: dict = {"args": {**asdict(args), **asdict(vision), **asdict(language), **asdict(probe)}}

    # 1. text: tokenizer and LM (train scenes from 0, held-out scenes from HOLDOUT_BASE + offset)
    train_convs = conversations(range(0, language.corpus_scenes), config)
    held_convs = conversations(
        range(HOLDOUT_BASE + LM_HOLDOUT_OFFSET, HOLDOUT_BASE + LM_HOLDOUT_OFFSET + 200), config
    )
    tokenizer = make_tokenizer(train_convs, language.vocab_size)
    train_ids, held_ids = (
        token_stream(train_convs, tokenizer, args.seed),
        token_stream(held_convs, tokenizer, args.seed),
    )
    log.info(
        "tokenizer: %d tokens; corpus %d train / %d held-out tokens",
        len(tokenizer),
        len(train_ids),
        len(held_ids),
    )
    lm = train_lm(language, tokenizer, train_ids, held_ids, args.seed)
    save_language(lm, tokenizer, out / "language", out / "tokenizer")
    report["language"] = {
        "vocab": len(tokenizer),
        "parameters_m": round(sum(p.numel() for p in lm.model.parameters()) / 1e6, 3),
        "train_tokens": lm.train_tokens,
        "loss_first": lm.losses[0],
        "loss_last": sum(lm.losses[-10:]) / len(lm.losses[-10:]),
        "held_out_perplexity": lm.perplexity,
        "seconds": round(lm.seconds, 1),
    }

    # 2. vision encoder (train scenes from 0: one pass over fresh scenes)
    vis = train_vision(vision, config, args.seed)
    save_vision(vis, vision, out / "vision", out / "vision_heads.pt")
    report["vision"] = {
        "parameters_m": round(sum(p.numel() for p in vis.encoder.parameters()) / 1e6, 3),
        "vision_feature_layer": vision.vision_feature_layer,
        "losses_first": {k: v[0] for k, v in vis.losses.items()},
        "losses_last": {k: round(sum(v[-10:]) / len(v[-10:]), 5) for k, v in vis.losses.items()},
        "seconds": round(vis.seconds, 1),
        "views_per_s": round(vis.views_per_s, 1),
    }

    # 3. probe the frozen encoder at the layer LLaVA reads, against a random-init one; caption retrieval
    if args.run_probe:
        t = time.perf_counter()
        layer = vision.vision_feature_layer
        report["probe"] = {
            "trained": probe_encoder(vis.encoder, config, probe.probe_scenes, probe.probe_steps, layer)
        }
        torch.manual_seed(args.seed)
        report["probe"]["random_init"] = probe_encoder(
            build_encoder(vision).eval(), config, probe.probe_scenes, probe.probe_steps, layer
        )
        report["retrieval"] = retrieval(vis.encoder, vis.heads.eval(), config, probe.retrieval_scenes)
        report["probe"]["seconds"] = round(time.perf_counter() - t, 1)

    report["seconds"] = round(time.perf_counter() - start, 1)
    report["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    report["load_average"] = [round(x, 2) for x in _load()]
    (out / "stage0_report.json").write_text(json.dumps(report, indent=2))
    log.info("stage 0 done in %.0f s -> %s", report["seconds"], out)
    return out


def _load() -> tuple[float, float, float]:
    try:
        import os

        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    main(*TrlParser((BootstrapArgs, VisionArgs, LanguageArgs, ProbeArgs)).parse_args_and_config())
