"""Pretrain the ToyWorld text-to-video backbone and its text encoder (flow matching, captioned videos and frames).

    python -m bench.toyworld.pretrain --minutes 60          # the shipped models (2 CPU cores)
    python -m bench.toyworld.pretrain --quick --out /tmp/tw  # a smoke run for CI

Steps alternate between batches of 8-frame videos and batches of single frames (one-frame videos), as Wan is
trained on both. Scenes come from training-split seeds only; a share of them carries a global style so that the
backbone can render the targets of style edits. Deterministic for a seed (up to the time budget: ``--steps``
fixes the length exactly).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imvideoedit_core.sampling import noised

from . import world
from .models import CODEC, FRAME_SIZE, MODELS_DIR, ToyModels, new_backbone, new_text_encoder, save_models

STYLE_SHARE = 0.2       # scenes rendered with a random global style
CAPTION_DROPOUT = 0.1   # scenes trained with the empty caption (for classifier-free guidance)


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 100_000           # upper bound; the time budget usually ends the run first
    minutes: float = 60.0
    video_batch: int = 8
    image_batch: int = 32
    frames: int = 8
    lr: float = 5e-4
    warmup: int = 200
    seed: int = 0


def train_seed(seed: int, step: int, index: int) -> int:
    """A training-split scene seed for (run seed, step, position in batch), never an evaluation seed."""
    candidate = int(np.random.SeedSequence([seed, step, index]).generate_state(1)[0]) % (1 << 30)
    while world.split_of(candidate) != "train":
        candidate += 1
    return candidate


def training_scene(scene_seed: int, *, frames: int) -> world.Scene:
    rng = np.random.default_rng(scene_seed)
    scene = world.random_scene(rng, size=FRAME_SIZE, frames=frames)
    if rng.random() < STYLE_SHARE:
        style = world.STYLES[int(rng.integers(len(world.STYLES)))]
        scene = world.apply_edit(scene, world.make_edit(scene, kind="style", value=style))
    return scene


def batch(cfg: PretrainConfig, step: int) -> tuple[torch.Tensor, list[str]]:
    """Latents (B, 16, T, 16, 16) and captions for one step: videos on even steps, single frames on odd ones."""
    video = step % 2 == 0
    size, frames = (cfg.video_batch, cfg.frames) if video else (cfg.image_batch, 1)
    scenes = [training_scene(train_seed(cfg.seed, step, i), frames=frames) for i in range(size)]
    latents = torch.cat([CODEC.encode(world.render(s).frames) for s in scenes])
    drop = np.random.default_rng([cfg.seed, step, 99]).random(size) < CAPTION_DROPOUT
    captions = ["" if d else world.caption(s) for s, d in zip(scenes, drop)]
    return latents, captions


def flow_loss(models: ToyModels, latents: torch.Tensor, captions: list[str], gen: torch.Generator) -> torch.Tensor:
    """Flow matching at logit-normal noise levels: predict noise - x0 from the noised latent."""
    sigma = torch.sigmoid(torch.randn(latents.shape[0], generator=gen))
    noise = torch.randn(latents.shape, generator=gen)
    x = noised(latents, noise, sigma.view(-1, 1, 1, 1, 1))
    velocity = models.backbone(x, 1000.0 * sigma, models.text_encoder(captions))
    return F.mse_loss(velocity, noise - latents)


def pretrain(cfg: PretrainConfig, out: Path, *, log_every: int = 100) -> dict:
    backbone = new_backbone(cfg.seed)
    models = ToyModels(backbone=backbone, text_encoder=new_text_encoder(cfg.seed, backbone.config))
    params = [*models.backbone.parameters(), *models.text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    start, losses, step = time.perf_counter(), [], 0
    for step in range(cfg.steps):
        if time.perf_counter() - start > 60 * cfg.minutes:
            break
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
        latents, captions = batch(cfg, step)
        loss = flow_loss(models, latents, captions, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % log_every == 0:
            recent = sum(losses[-log_every:]) / log_every
            print(f"step {step + 1}: loss {recent:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
        if (step + 1) % 1000 == 0:
            save_models(out, models, summary=_summary(cfg, losses, start))
    summary = _summary(cfg, losses, start)
    save_models(out, models, summary=summary)
    return summary


def _summary(cfg: PretrainConfig, losses: list[float], start: float) -> dict:
    tail = losses[-200:]
    return {"steps": len(losses), "seconds": round(time.perf_counter() - start, 1),
            "final_loss": sum(tail) / max(len(tail), 1), "config": cfg.__dict__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=MODELS_DIR)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few steps on small batches (CI smoke run)")
    args = parser.parse_args()
    cfg = PretrainConfig(steps=args.steps, minutes=args.minutes, seed=args.seed)
    if args.quick:
        cfg = PretrainConfig(steps=min(args.steps, 20), minutes=1.0, video_batch=2, image_batch=4, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    print(json.dumps(pretrain(cfg, args.out)))


if __name__ == "__main__":
    main()
