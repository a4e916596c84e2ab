"""Does the sampler, not the training, hold a ToyWorld backbone back as a generator? Steps, cfg and shift swept.

    python -m bench.toyworld.sampler_sweep --models DIR          # DIR/sampler_sweep.json + a printed table
    python -m bench.toyworld.sampler_sweep --models DIR --quick  # a smoke run, nothing written

Every setting samples the same *selection* captions (evaluation-split seeds from their own range, disjoint from the
generation judgement's 64 and from every training seed). The rule that picks a setting is fixed before the sweep:
the lowest frame-to-frame area change relative to the truth's (the goal the backbones miss by most), among the
settings whose presence and shape are no more than ``TOLERANCE`` below the evaluation sampler's. Only the picked
setting and the evaluation sampler are then judged on the 64 evaluation captions, so the reported number is not
the one the choice was made on.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import judge, world
from .evaluate import EvalConfig
from .generation import SEED_START, _with_ratios, held_out_scenes, sample_videos
from .models import load_models

SELECTION_START = SEED_START + 500_000  # far past the 64 evaluation captions' seeds
TOLERANCE = 0.02
STEPS, CFGS, SHIFTS = (20, 50), (1.0, 2.0, 3.0, 5.0), (1.0, 2.0, 3.0, 5.0)


@dataclass(frozen=True)
class Setting:
    steps: int
    cfg: float
    shift: float

    @property
    def name(self) -> str:
        return f"steps {self.steps}, cfg {self.cfg:g}, shift {self.shift:g}"


def judge_setting(models, setting: Setting, *, count: int, start: int, batch: int = 8) -> dict:
    """Text-to-video samples of ``count`` captions from seed ``start`` on, judged against their ground truth.
    ``batch`` as ``generation.measure``'s: the noise is drawn per batch, so another batch size is another draw."""
    cfg = replace(EvalConfig(), steps=setting.steps, cfg=setting.cfg, shift=setting.shift)
    scenes = held_out_scenes(count, frames=cfg.frames, start=start)
    sampled, truth = judge.GenerationStats(), judge.GenerationStats()
    for i in range(0, count, batch):
        chunk = scenes[i:i + batch]
        references = [world.render(s).frames for s in chunk]
        clean = torch.cat([models.codec.encode(r) for r in references])  # (B, C, T, h, w): only its shape is used
        videos = sample_videos(models, [world.caption(s) for s in chunk], cfg, start=torch.zeros_like(clean))
        for scene, reference, video in zip(chunk, references, videos):
            sampled += judge.generation_stats(video, scene)
            truth += judge.generation_stats(reference, scene)
    return _with_ratios(sampled.scores(), truth.scores())


def pick(scores: dict[Setting, dict], default: Setting) -> Setting:
    """The rule of the module docstring."""
    floor = {k: scores[default][k] - TOLERANCE for k in ("present", "shape")}
    eligible = [s for s, v in scores.items() if all(v[k] >= floor[k] for k in floor)]
    return min(eligible, key=lambda s: scores[s]["stability_vs_truth"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--selection", type=int, default=32, help="selection captions per setting")
    parser.add_argument("--evaluation", type=int, default=64, help="evaluation captions for the two finalists")
    parser.add_argument("--quick", action="store_true", help="2 settings, 2 captions, 2 steps, nothing written")
    args = parser.parse_args()
    torch.set_num_threads(2)
    models = load_models(args.models)
    default = Setting(EvalConfig.steps, EvalConfig.cfg, EvalConfig.shift)
    grid = ([Setting(2, 3.0, 2.0), Setting(2, 1.0, 3.0)] if args.quick else
            [Setting(*v) for v in itertools.product(STEPS, CFGS, SHIFTS)])
    if args.quick:
        default = grid[0]
    count = 2 if args.quick else args.selection
    began, scores = time.perf_counter(), {}
    for setting in grid:
        scores[setting] = judge_setting(models, setting, count=count, start=SELECTION_START)
        v = scores[setting]
        print(f"{setting.name}: present {v['present']:.3f} shape {v['shape']:.3f} "
              f"area change {v['stability_vs_truth']:.2f}x background {v['background']:.4f}", flush=True)
    chosen = pick(scores, default)
    count = 2 if args.quick else args.evaluation
    final = {s.name: judge_setting(models, s, count=count, start=SEED_START) for s in dict.fromkeys([default, chosen])}
    results = {"models": str(args.models), "selection_captions": args.selection, "evaluation_captions": count,
               "rule": f"lowest stability_vs_truth with present and shape within {TOLERANCE} of the default's",
               "seconds": round(time.perf_counter() - began, 1), "default": default.name, "chosen": chosen.name,
               "selection": {s.name: v for s, v in scores.items()}, "evaluation": final}
    print(json.dumps({k: results[k] for k in ("default", "chosen", "evaluation")}, indent=1))
    if not args.quick:
        (args.models / "sampler_sweep.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
