"""The generation judge's sampling: one backbone, or two experts split at a noise level (as Wan 2.2 samples)."""

from __future__ import annotations

import torch

from bench.toyworld.evaluate import EvalConfig
from bench.toyworld.generation import LowNoiseExpert, sample_videos
from bench.toyworld.models import ToyModels, load_models, new_backbone

CAPTIONS = ["a red square on a white background"]


def test_a_low_noise_expert_samples_every_step_below_its_boundary_and_none_above():
    shipped = load_models()
    other = ToyModels(backbone=new_backbone(1, "toy").eval(), text_encoder=shipped.text_encoder)
    cfg, start = EvalConfig(steps=3), torch.zeros(1, 16, 2, 16, 16)

    def sample(models: ToyModels, low_noise: LowNoiseExpert | None = None) -> torch.Tensor:
        return sample_videos(models, CAPTIONS, cfg, start=start, low_noise=low_noise)

    high_only, low_only = sample(shipped), sample(other)
    assert not torch.equal(high_only, low_only)
    assert torch.equal(sample(shipped, LowNoiseExpert(other, boundary=1e-6)), high_only)  # every step is above
    assert torch.equal(sample(shipped, LowNoiseExpert(other, boundary=1.01)), low_only)   # every step is below
    split = sample(shipped, LowNoiseExpert(other, boundary=0.6))  # noise levels 1, 0.8 | 0.5
    assert not torch.equal(split, high_only) and not torch.equal(split, low_only)


def test_the_sampler_sweep_picks_by_its_stated_rule_on_captions_apart_from_the_evaluation():
    from bench.toyworld import world
    from bench.toyworld.generation import SEED_START
    from bench.toyworld.sampler_sweep import SELECTION_START, Setting, pick
    default, steadier, worse_shape, steadiest_but_absent = (Setting(20, 3.0, 2.0), Setting(20, 5.0, 3.0),
                                                          Setting(50, 5.0, 5.0), Setting(20, 1.0, 1.0))
    scores = {default: {"present": 0.88, "shape": 0.76, "stability_vs_truth": 6.0},
              steadier: {"present": 0.90, "shape": 0.745, "stability_vs_truth": 5.5},   # shape within 0.02
              worse_shape: {"present": 0.95, "shape": 0.73, "stability_vs_truth": 5.0},  # shape 0.03 below
              steadiest_but_absent: {"present": 0.60, "shape": 0.80, "stability_vs_truth": 4.0}}
    assert pick(scores, default) == steadier
    assert pick({default: scores[default]}, default) == default
    evaluation = set(world.split_seeds("eval", count=64, start=SEED_START))
    selection = set(world.split_seeds("eval", count=32, start=SELECTION_START))
    assert not evaluation & selection
    assert all(world.split_of(s) == "eval" for s in selection)  # never a training seed
