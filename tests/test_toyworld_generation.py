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
