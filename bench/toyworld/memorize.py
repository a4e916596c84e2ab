"""Can a ToyWorld backbone memorise ONE video (or a few)? The cheapest test that the recipe can generate at all.

    python -m bench.toyworld.memorize --preset toy       # the shipped architecture (RoPE only): ~4 min
    python -m bench.toyworld.memorize --preset toy-pos   # with learned absolute positions
    python -m bench.toyworld.memorize --preset toy-pos --clips 8 --steps 1500   # where memorising stops working
    python -m bench.toyworld.memorize --preset toy-pos --clips 8 --steps 1500 --lr 2e-3   # the tuned rate (default 5e-4)
    python -m bench.toyworld.memorize --preset toy-pos --clips 8 --set num_layers=8      # a variant of the preset

A fresh backbone and text encoder are trained with the pretraining loss on ``--clips`` 8-frame clips (the first
one: one object on a checkered background; the others random training-split scenes) and their captions, then
sampled from those captions with the evaluation sampler (at most 8 of them). A generator should reproduce its
training examples; the printed scores are the judge's generation statistics of the samples and their mean absolute
error to the clips. Nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from imvideoedit_core.model.backbone import build_backbone
from imvideoedit_core.model.config import BackboneConfig, backbone_preset

from . import judge, world
from .evaluate import EvalConfig
from .generation import sample_videos
from .models import CODEC, FRAME_SIZE, ToyModels, new_text_encoder
from .pretrain import _Both, flow_loss

SCENE_SEED = 12_345  # "a green square on a checkered background", moving


def memorise(preset: str, *, steps: int, clips: int = 1, batch: int = 8, lr: float = 5e-4, seed: int = 0,
             overrides: dict | None = None) -> dict:
    torch.manual_seed(seed)
    scenes = [world.random_scene(np.random.default_rng(SCENE_SEED + i), size=FRAME_SIZE, frames=8,
                                 max_objects=1 if i == 0 else world.MAX_OBJECTS) for i in range(clips)]
    captions = [world.caption(s) for s in scenes]
    truths = [world.render(s).frames for s in scenes]                              # (8, 32, 32, 3) each
    latents = torch.cat([CODEC.encode(t) for t in truths])                       # (N, 16, 8, 16, 16)
    backbone = build_backbone(dataclasses.replace(backbone_preset(preset), **(overrides or {})), seed=seed)
    models = ToyModels(backbone=backbone, text_encoder=new_text_encoder(seed, backbone.config))
    both = _Both(models)
    optimizer = torch.optim.AdamW(both.parameters(), lr=lr, weight_decay=0.01)
    start, losses = time.perf_counter(), []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100)
        pick = torch.randint(clips, (batch,), generator=torch.Generator().manual_seed(10_000 + step))
        loss = flow_loss(models, latents[pick], [captions[i] for i in pick], torch.Generator().manual_seed(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(both.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    result = {"preset": preset, "overrides": overrides or {}, "lr": lr, "clips": clips,
              "parameters": sum(p.numel() for p in both.parameters()), "caption": captions[0], "steps": steps,
              "seconds": round(time.perf_counter() - start), "final_loss": sum(losses[-50:]) / len(losses[-50:])}
    shown = min(clips, 8)
    for cfg_scale in (1.0, 3.0):
        videos = sample_videos(models, captions[:shown], EvalConfig(cfg=cfg_scale),
                               start=torch.zeros_like(latents[:shown]))
        stats = judge.GenerationStats()
        for video, scene in zip(videos, scenes):
            stats += judge.generation_stats(video, scene)
        mae = sum((v - t).abs().mean().item() for v, t in zip(videos, truths)) / shown
        result[f"cfg {cfg_scale:g}"] = {"mae": mae, **stats.scores()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="toy")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--clips", type=int, default=1, help="how many clips to memorise (the first is fixed)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=INT",
                        help="override integer fields of the preset, e.g. --set dim=256 num_heads=2 num_layers=8")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(json.dumps(memorise(args.preset, steps=args.steps, clips=args.clips, lr=args.lr,
                              overrides=_overrides(args.set)), indent=1))


def _overrides(pairs: list[str]) -> dict:
    fields = {f.name for f in dataclasses.fields(BackboneConfig)}
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in fields or not value.isdigit():
            raise SystemExit(f"--set {pair!r}: expected FIELD=INT with FIELD one of the backbone's fields")
        out[name] = int(value)
    return out


if __name__ == "__main__":
    main()
