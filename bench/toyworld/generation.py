"""Is the ToyWorld backbone a video generator? Text-to-video samples from held-out captions, judged.

    python -m bench.toyworld.generation                       # the shipped backbone: results.json + report
    python -m bench.toyworld.generation --models DIR --count 16 --no-write   # any checkpoint, printed only
    python -m bench.toyworld.generation --quick --models DIR  # a smoke run (2 captions, 2 steps)

Captions come from unstyled evaluation-split scenes (seeds never used in training); each is sampled from pure
noise with the evaluation sampler (Euler, cfg and shift as ``EvalConfig``). ``judge.generation_stats`` scores the
samples, and the same statistics of the ground-truth renders of the same captions are the reference. The goals
(issue 9): objects present in >= 95% of (object, frame) pairs, the right shape in >= 90% of the judged pairs,
frame-to-frame area change and centroid acceleration within 2x the ground truth's, background error <= 0.03.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from imvideoedit_core.sampling import backbone_velocity, sample_from

from . import judge, world
from .evaluate import SHEETS, EvalConfig, decode, write_sheet
from .models import FRAME_SIZE, MODELS_DIR, load_models
from .report import markdown_rows, save_feature_results, write_feature_section

SEED_START = 7_000_000  # evaluation-split seeds of their own range (the edit evaluation uses 1M-5M+)
GOALS = {"present": (">=", 0.95), "shape": (">=", 0.90), "stability_vs_truth": ("<=", 2.0),
         "acceleration_vs_truth": ("<=", 2.0), "background": ("<=", 0.03)}


def held_out_scenes(count: int, *, frames: int) -> list[world.Scene]:
    seeds = world.split_seeds("eval", count=count, start=SEED_START)
    return [world.random_scene(np.random.default_rng(s), size=FRAME_SIZE, frames=frames) for s in seeds]


def sample_videos(models, captions: list[str], cfg: EvalConfig, *, frames: int) -> torch.Tensor:
    """Text-to-video samples (B, T, H, W, 3) of ``captions``, batched, from the seed's noise."""
    context, empty = models.text_encoder(captions), models.text_encoder([""] * len(captions))
    fn = backbone_velocity(models.backbone, context, empty, cfg=cfg.cfg)
    zeros = torch.zeros(len(captions), 16, frames, FRAME_SIZE // 2, FRAME_SIZE // 2)
    with torch.no_grad():
        return decode(sample_from(fn, zeros, cfg.sampler()))


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def measure(models_dir: Path, *, count: int, cfg: EvalConfig, batch: int = 8) -> dict:
    models = load_models(models_dir)
    scenes = held_out_scenes(count, frames=cfg.frames)
    sampled, truth, sheets = judge.GenerationStats(), judge.GenerationStats(), []
    start = time.perf_counter()
    for i in range(0, count, batch):
        chunk = scenes[i:i + batch]
        videos = sample_videos(models, [world.caption(s) for s in chunk], cfg, frames=cfg.frames)
        for scene, video in zip(chunk, videos):
            reference = world.render(scene).frames
            sampled += judge.generation_stats(video, scene)
            truth += judge.generation_stats(reference, scene)
            if len(sheets) < 12:
                sheets += [reference, video]
    scores, reference = sampled.scores(), truth.scores()
    scores["stability_vs_truth"] = _ratio(scores["stability"], reference["stability"])
    scores["acceleration_vs_truth"] = _ratio(scores["acceleration"], reference["acceleration"])
    return {"captions": count, "config": cfg.__dict__, "seconds": round(time.perf_counter() - start, 1),
            "sampled": scores, "truth": reference, "sheet_rows": sheets,
            "goals_met": {k: _meets(scores[k], *goal) for k, goal in GOALS.items()}}


def _meets(value: float | None, op: str, bound: float) -> bool | None:
    if value is None:
        return None
    return value >= bound if op == ">=" else value <= bound


def markdown(results: dict) -> str:
    s, t = results["sampled"], results["truth"]
    rows = [[name, s[name], t.get(name), f"{GOALS[name][0]} {GOALS[name][1]}" if name in GOALS else "-",
             {True: "yes", False: "no", None: "-"}[results["goals_met"].get(name)]]
            for name in ("present", "shape", "stability", "stability_vs_truth", "acceleration",
                         "acceleration_vs_truth", "background")]
    c = results["config"]
    return (f"Text-to-video samples of the shipped backbone from {results['captions']} held-out captions "
            f"({c['steps']} Euler steps, cfg {c['cfg']}, shift {c['shift']}, seed {c['seed']}), judged by "
            "`bench/toyworld/judge.py` against the ground-truth renders of the same captions "
            f"(`python -m bench.toyworld.generation`, {results['seconds']:.0f} s). Contact sheet: "
            "`docs/toyworld/generation.png` (rows: ground truth, sample).\n\n"
            + markdown_rows(["statistic", "samples", "ground truth", "goal", "met"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=MODELS_DIR)
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--steps", type=int, default=EvalConfig.steps)
    parser.add_argument("--no-write", action="store_true", help="print only; leave results.json and docs alone")
    parser.add_argument("--sheet", type=Path, default=None, help="write the contact sheet here")
    parser.add_argument("--quick", action="store_true", help="2 captions, 2 steps, nothing written")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = EvalConfig(steps=2 if args.quick else args.steps)
    results = measure(args.models, count=2 if args.quick else args.count, cfg=cfg)
    rows = results.pop("sheet_rows")
    if args.sheet:
        write_sheet(rows, args.sheet)
    if not (args.quick or args.no_write):
        write_sheet(rows, SHEETS / "generation.png")
        save_feature_results("generation", results)
        write_feature_section("generation", markdown(results))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
