"""Can a ToyWorld backbone memorise ONE video? The cheapest test that the recipe can generate at all.

    python -m bench.toyworld.memorize --preset toy       # the shipped architecture (RoPE only): ~4 min
    python -m bench.toyworld.memorize --preset toy-pos   # with learned absolute positions

A fresh backbone and text encoder are trained with the pretraining loss on a single 8-frame clip (one object on a
checkered background) and its caption, then sampled from that caption with the evaluation sampler. A generator
should reproduce its only training example; the printed scores are the judge's generation statistics of the sample
and its mean absolute error to the clip. Nothing is written.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from . import judge, world
from .evaluate import EvalConfig
from .generation import sample_videos
from .models import CODEC, FRAME_SIZE, ToyModels, new_backbone, new_text_encoder
from .pretrain import _Both, flow_loss

SCENE_SEED = 12_345  # "a green square on a checkered background", moving


def memorise(preset: str, *, steps: int, batch: int = 8, lr: float = 5e-4, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    scene = world.random_scene(np.random.default_rng(SCENE_SEED), size=FRAME_SIZE, frames=8, max_objects=1)
    caption, truth = world.caption(scene), world.render(scene).frames          # truth (8, 32, 32, 3)
    latent = CODEC.encode(truth)                                                  # (1, 16, 8, 16, 16)
    backbone = new_backbone(seed, preset)
    models = ToyModels(backbone=backbone, text_encoder=new_text_encoder(seed, backbone.config))
    both = _Both(models)
    optimizer = torch.optim.AdamW(both.parameters(), lr=lr, weight_decay=0.01)
    start, losses = time.perf_counter(), []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100)
        loss = flow_loss(models, latent.repeat(batch, 1, 1, 1, 1), [caption] * batch,
                         torch.Generator().manual_seed(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(both.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    result = {"preset": preset, "caption": caption, "steps": steps, "seconds": round(time.perf_counter() - start),
              "final_loss": sum(losses[-50:]) / len(losses[-50:])}
    for cfg_scale in (1.0, 3.0):
        video = sample_videos(models, [caption], EvalConfig(cfg=cfg_scale), start=torch.zeros_like(latent))[0]
        stats = judge.GenerationStats()
        stats += judge.generation_stats(video, scene)
        result[f"cfg {cfg_scale:g}"] = {"mae": (video - truth).abs().mean().item(), **stats.scores()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="toy")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(json.dumps(memorise(args.preset, steps=args.steps), indent=1))


if __name__ == "__main__":
    main()
