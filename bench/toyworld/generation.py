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
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imvideoedit_core.edit.sampling import backbone_velocity, sample_from, seeded_noise

from . import judge, world
from .evaluate import SHEETS, EvalConfig, decode, write_sheet
from .models import FRAME_SIZE, MODELS_DIR, ToyModels, load_models, on_codec_grid
from .report import markdown_rows, save_feature_results, write_feature_section

SEED_START = 7_000_000  # evaluation-split seeds of their own range (the edit evaluation uses 1M-5M+)
FROM_TRUTH = (0.4, 0.7)  # strengths at which the ground truth, noised, is finished by the model
GOALS = {"present": (">=", 0.95), "shape": (">=", 0.90), "stability_vs_truth": ("<=", 2.0),
         "acceleration_vs_truth": ("<=", 2.0), "background": ("<=", 0.03)}


def held_out_scenes(count: int, *, frames: int, max_objects: int = world.MAX_OBJECTS,
                    start: int = SEED_START) -> list[world.Scene]:
    seeds = world.split_seeds("eval", count=count, start=start)
    return [world.random_scene(np.random.default_rng(s), size=FRAME_SIZE, frames=frames, max_objects=max_objects)
            for s in seeds]


@dataclass(frozen=True)
class LowNoiseExpert:
    """A second backbone that takes over below ``boundary`` (noise level), as Wan 2.2's low-noise expert does."""

    models: ToyModels
    boundary: float


def _velocity(models: ToyModels, captions: list[str], guidance: float):
    context, empty = models.text_encoder(captions), models.text_encoder([""] * len(captions))
    return backbone_velocity(models.backbone, context, empty, cfg=guidance)


def sample_videos(models, captions: list[str], cfg: EvalConfig, *, start: torch.Tensor,
                  strength: float = 1.0, frame_by_frame: bool = False,
                  low_noise: LowNoiseExpert | None = None) -> torch.Tensor:
    """Samples (B, T, H, W, 3) of ``captions`` from ``start`` (B, C, T, h, w) noised to ``strength`` (at 1: text to
    video from the seed's noise; below 1: the start's layout is given and the model only finishes it).

    ``frame_by_frame``: every frame is sampled alone as a one-frame video, with the same noise it gets in the
    video; what the video does better than that is what the backbone's 3D attention contributes.
    """
    b, c, t, h, w = start.shape
    noise = seeded_noise(start.shape, seed=cfg.seed)
    if frame_by_frame:
        def fold(x: torch.Tensor) -> torch.Tensor:  # (B, C, T, h, w) -> (B*T, C, 1, h, w)
            return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, 1, h, w)
        start, noise, captions = fold(start), fold(noise), [text for text in captions for _ in range(t)]
    fn = _velocity(models, captions, cfg.cfg)
    if low_noise is not None:
        high, low = fn, _velocity(low_noise.models, captions, cfg.cfg)

        def fn(x: torch.Tensor, sigma: float) -> torch.Tensor:
            return (high if sigma >= low_noise.boundary else low)(x, sigma)
    with torch.no_grad():
        latent = sample_from(fn, start, cfg.sampler(strength), noise=noise)
    if frame_by_frame:
        latent = latent.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)  # back to (B, C, T, h, w)
    return decode(latent, models.codec)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def measure(models_dir: Path, *, count: int, cfg: EvalConfig, batch: int = 8,
            from_truth: tuple[float, ...] = FROM_TRUTH, max_objects: int = world.MAX_OBJECTS,
            low_noise_dir: Path | None = None, boundary: float = 0.5) -> dict:
    """Judge text-to-video samples; ``from_truth``: also finish the ground truth noised to these strengths, which
    tells the layout a model must invent (high noise) from the denoising it must get right (low noise).
    ``low_noise_dir``: a second backbone that samples every step below noise ``boundary`` (two experts)."""
    models = load_models(models_dir)
    cfg = dataclasses.replace(cfg, frames=on_codec_grid(cfg.frames, models.codec))  # 8 -> 9 for Wan's groups
    low_noise = None if low_noise_dir is None else LowNoiseExpert(load_models(low_noise_dir), boundary)
    scenes = held_out_scenes(count, frames=cfg.frames, max_objects=max_objects)
    sampled, truth, sheets = judge.GenerationStats(), judge.GenerationStats(), []
    alone_too = (False, True) if models.codec.temporal_stride == 1 else (False,)  # a group is not a frame
    finished = {(s, alone): judge.GenerationStats() for s in from_truth for alone in alone_too}
    start = time.perf_counter()
    for i in range(0, count, batch):
        chunk = scenes[i:i + batch]
        captions = [world.caption(s) for s in chunk]
        references = [world.render(s).frames for s in chunk]
        clean = torch.cat([models.codec.encode(r) for r in references])       # (B, C, T, h, w)
        videos = sample_videos(models, captions, cfg, start=torch.zeros_like(clean), low_noise=low_noise)
        for scene, reference, video in zip(chunk, references, videos):
            sampled += judge.generation_stats(video, scene)
            truth += judge.generation_stats(reference, scene)
            if len(sheets) < 12:
                sheets += [reference, video]
        for strength, alone in finished:
            videos = sample_videos(models, captions, cfg, start=clean, strength=strength, frame_by_frame=alone,
                                   low_noise=low_noise)
            for scene, video in zip(chunk, videos):
                finished[strength, alone] += judge.generation_stats(video, scene)
    reference = truth.scores()
    scores = _with_ratios(sampled.scores(), reference)
    return {"captions": count, "config": cfg.__dict__, "seconds": round(time.perf_counter() - start, 1),
            "sampled": scores, "truth": reference, "sheet_rows": sheets,
            "from_truth": {f"{s}{' frame by frame' if alone else ''}": _with_ratios(f.scores(), reference)
                           for (s, alone), f in finished.items()},
            "goals_met": {k: _meets(scores[k], *goal) for k, goal in GOALS.items()},
            **({} if low_noise is None else {"low_noise_expert": {"models": str(low_noise_dir),
                                                                  "boundary": boundary}})}


def _with_ratios(scores: dict, reference: dict) -> dict:
    return {**scores, "stability_vs_truth": _ratio(scores["stability"], reference["stability"]),
            "acceleration_vs_truth": _ratio(scores["acceleration"], reference["acceleration"])}


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
    columns = ["present", "shape", "stability_vs_truth", "acceleration_vs_truth", "background"]
    finishing = markdown_rows(["start", *columns], [[f"ground truth noised to {s}"] + [f[k] for k in columns]
                                                    for s, f in results["from_truth"].items()])
    return (f"Text-to-video samples of the shipped backbone from {results['captions']} held-out captions "
            f"({c['steps']} Euler steps, cfg {c['cfg']}, shift {c['shift']}, seed {c['seed']}), judged by "
            "`bench/toyworld/judge.py` against the ground-truth renders of the same captions "
            f"(`python -m bench.toyworld.generation`, {results['seconds']:.0f} s). Contact sheet: "
            "`docs/toyworld/generation.png` (rows: ground truth, sample).\n\n"
            + markdown_rows(["statistic", "samples", "ground truth", "goal", "met"], rows)
            + "\n\nThe same captions, finished from the ground truth noised to a strength (the layout is given; the "
            "model only denoises), as 8-frame videos and frame by frame (each frame alone, with the same noise: what "
            "the video does better is what the 3D attention contributes):\n\n" + finishing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=MODELS_DIR)
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--steps", type=int, default=EvalConfig.steps)
    parser.add_argument("--no-write", action="store_true", help="print only; leave results.json and docs alone")
    parser.add_argument("--sheet", type=Path, default=None, help="write the contact sheet here")
    parser.add_argument("--max-objects", type=int, default=world.MAX_OBJECTS,
                        help="captions of scenes with at most this many objects (with --no-write: a diagnostic)")
    parser.add_argument("--low-noise-models", type=Path, default=None,
                        help="a second backbone that samples below --boundary (two experts; with --no-write)")
    parser.add_argument("--boundary", type=float, default=0.5, help="the noise level where the experts switch")
    parser.add_argument("--quick", action="store_true", help="2 captions, 2 steps, nothing written")
    args = parser.parse_args()
    if args.max_objects != world.MAX_OBJECTS and not (args.no_write or args.quick):
        parser.error("--max-objects is a diagnostic of a simpler world: add --no-write")
    if args.low_noise_models is not None and not (args.no_write or args.quick):
        parser.error("--low-noise-models judges a pair of backbones nothing ships: add --no-write")
    if not 0 < args.boundary < 1:
        parser.error(f"--boundary {args.boundary}: give a noise level between 0 and 1")
    torch.set_num_threads(2)
    cfg = EvalConfig(steps=2 if args.quick else args.steps)
    results = measure(args.models, count=2 if args.quick else args.count, cfg=cfg,
                      from_truth=(0.5,) if args.quick else FROM_TRUTH, max_objects=args.max_objects,
                      low_noise_dir=args.low_noise_models, boundary=args.boundary)
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
