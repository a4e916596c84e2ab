"""Train ImVideoEdit adapters on the frozen ToyWorld backbone: ours on image pairs, the oracle on video pairs.

    python -m bench.toyworld.train_adapter --variant ours --steps 3000
    python -m bench.toyworld.train_adapter --variant all --steps 3000      # ours, oracle and the ablations

Variants (same steps, batch and seed; the oracle's batch holds the same number of frames as videos):
    ours        image pairs (one-frame videos), text-guided gate           -> models/adapter.safetensors
    oracle      8-frame video pairs of the same world                      -> runs/oracle.safetensors
    no_gate     image pairs, gate fixed at 0                                -> runs/no_gate.safetensors
    blind_gate  image pairs, a gate that cannot read the instruction        -> runs/blind_gate.safetensors
    unfrozen    image pairs, backbone 3D self-attention trained as well     -> runs/unfrozen.safetensors
                (+ runs/unfrozen.self_attn.safetensors)
    ours_time_offset   image pairs placed at a random temporal RoPE position 0-7  -> runs/ours_time_offset.safetensors
                (still one-frame videos: removes the position-0 bias of image training)
    gate_loss   ours, plus an auxiliary loss that pulls each block's gate   -> runs/gate_loss.safetensors
                towards the pair's difference mask (g = 1 where the pair differs)
    ffn_lora    ours, plus a rank-8 LoRA on every backbone FFN (the 3D     -> runs/ffn_lora.safetensors
                self-attention stays frozen)
    still       image pairs shown as still 8-frame videos (each frame the  -> runs/still.safetensors
                image, its own noise), the oracle's batch: multi-frame 3D attention in training, images only;
                ``--still-frames F`` shows 16/F scenes of F frames a step instead (the same frames a step)
Pairs are drawn on the fly from training-split seeds (an endless stream, never an evaluation scene).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from imvideoedit_core.model.adapter import build_adapter
from imvideoedit_core.model.config import FFN_LORA_RANK, AdapterConfig, adapter_preset
from imvideoedit_core.edit.streams import TwoStreamRunner
from imvideoedit_core.train.trainer import LatentBatch, TrainConfig, difference_mask, train_adapter

from . import world
from .models import ADAPTER_FILE, FRAME_SIZE, MODELS_DIR, ToyModels, load_models
from .pretrain import train_seed

RUNS_DIR = Path(__file__).resolve().parent / "runs"
VARIANTS = ("ours", "oracle", "no_gate", "blind_gate", "unfrozen", "ours_time_offset", "gate_loss", "ffn_lora",
            "still")
GATE_LOSS = 0.1  # weight of the gate's auxiliary loss in the gate_loss variant
IMAGE_BATCH = 16
VIDEO_FRAMES = 8


class ToyEditPairs:
    """Step k, rank r: random edits of training scenes as latent pairs, instructions as context. ``still`` > 1
    shows each one-frame pair as a still video of that many frames (the latent repeated; the noise still differs
    from frame to frame)."""

    def __init__(self, models: ToyModels, *, frames: int, batch_size: int, seed: int, still: int = 1):
        if still > 1 and frames != 1:
            raise ValueError(f"a still video repeats one frame: frames must be 1, got {frames}")
        self.models, self.frames, self.batch_size, self.seed, self.still = models, frames, batch_size, seed, still
        self.empty = models.text_encoder([""])

    def batch(self, step: int, *, rank: int, world_size: int) -> LatentBatch:
        examples = [world.make_example(train_seed(self.seed, step * world_size + rank, i), size=FRAME_SIZE,
                                       frames=self.frames) for i in range(self.batch_size)]
        with torch.no_grad():
            source = torch.cat([self.models.codec.encode(e.source_frames) for e in examples])  # (B, C, T, h, w)
            mask = None
            if self.frames == 1 and self.still == 1:  # image pairs tell where they differ (the gate loss reads it)
                mask = difference_mask(torch.cat([e.source_frames for e in examples]).permute(0, 3, 1, 2),
                                       torch.cat([e.target_frames for e in examples]).permute(0, 3, 1, 2),
                                       source.shape[-2:])
            target = torch.cat([self.models.codec.encode(e.target_frames) for e in examples])
            if self.still > 1:
                source, target = (x.repeat(1, 1, self.still, 1, 1) for x in (source, target))  # (B, C, still, h, w)
            return LatentBatch(source=source, target=target,
                               context=self.models.text_encoder([e.instruction for e in examples]),
                               empty_context=self.empty, edit_mask=mask)


def adapter_config(variant: str) -> AdapterConfig:
    base = adapter_preset("toy")
    gate = {"no_gate": "none", "blind_gate": "blind"}.get(variant, "text")
    return dataclasses.replace(base, gate=gate, lora_rank=FFN_LORA_RANK if variant == "ffn_lora" else 0)


def output_path(variant: str, *, models_dir: Path = MODELS_DIR, runs_dir: Path = RUNS_DIR) -> Path:
    return models_dir / ADAPTER_FILE if variant == "ours" else runs_dir / f"{variant}.safetensors"


def train_variant(variant: str, *, steps: int, seed: int, models_dir: Path = MODELS_DIR,
                  runs_dir: Path = RUNS_DIR, out: Path | None = None, still_frames: int = VIDEO_FRAMES) -> dict:
    if IMAGE_BATCH % still_frames:
        raise ValueError(f"--still-frames {still_frames}: give a divisor of the {IMAGE_BATCH} frames a step")
    models = load_models(models_dir)
    video, still = variant == "oracle", still_frames if variant == "still" else 1
    data = ToyEditPairs(models, frames=VIDEO_FRAMES if video else 1, still=still,
                        batch_size=IMAGE_BATCH // (VIDEO_FRAMES if video else still), seed=seed + 1)
    runner = TwoStreamRunner(models.backbone, build_adapter(adapter_config(variant), models.backbone.config,
                                                             seed=seed))
    extra = [p for b in models.backbone.blocks for p in b.self_attn.parameters()] if variant == "unfrozen" else []
    offsets = VIDEO_FRAMES - 1 if variant == "ours_time_offset" else 0
    cfg = TrainConfig(steps=steps, batch_size=data.batch_size, lr=1e-3, warmup_steps=100, ema_decay=0.995,
                      context_dropout=0.1, seed=seed, max_frame_offset=offsets,
                      gate_loss=GATE_LOSS if variant == "gate_loss" else 0.0,
                      save_dtype="float32")  # ToyWorld evaluates in float32, as its backbone runs
    out = out or output_path(variant, models_dir=models_dir, runs_dir=runs_dir)
    start = time.perf_counter()
    result = train_adapter(runner, data, cfg, out_path=out, extra_parameters=extra,
                           info={"world": "toyworld", "variant": variant, "pairs": "video" if video else "image",
                                 "frames_shown": VIDEO_FRAMES if video else still},
                           callback=lambda p: p.step % 250 == 0 and print(f"{variant} {p.step}: {p.loss:.4f}",
                                                                          flush=True))
    if extra:
        save_file({k: v.contiguous() for k, v in models.backbone.state_dict().items() if ".self_attn." in k},
                  str(out.with_name(out.stem + ".self_attn.safetensors")))
    tail = result.losses[-100:]
    return {"variant": variant, "steps": steps, "seconds": round(time.perf_counter() - start, 1),
            "final_loss": float(np.mean(tail)), "path": str(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=(*VARIANTS, "all"), default="ours")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", type=Path, default=MODELS_DIR, help="folder of the pretrained backbone")
    parser.add_argument("--runs", type=Path, default=RUNS_DIR, help="folder of the oracle and ablation adapters")
    parser.add_argument("--still-frames", type=int, default=VIDEO_FRAMES,
                        help=f"frames of each still video in the still variant (a divisor of {IMAGE_BATCH})")
    args = parser.parse_args()
    if args.still_frames < 1 or IMAGE_BATCH % args.still_frames:
        parser.error(f"--still-frames {args.still_frames}: give a divisor of the {IMAGE_BATCH} frames a step")
    torch.set_num_threads(2)
    args.runs.mkdir(parents=True, exist_ok=True)
    for variant in VARIANTS if args.variant == "all" else (args.variant,):
        print(json.dumps(train_variant(variant, steps=args.steps, seed=args.seed, models_dir=args.models,
                                       runs_dir=args.runs, still_frames=args.still_frames)), flush=True)


if __name__ == "__main__":
    main()
