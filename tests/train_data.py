"""Tiny training data for tests: latent pairs whose target is the source (learnable only through the adapter)."""

from __future__ import annotations

import torch

from imvideoedit_core.model.adapter import build_adapter
from imvideoedit_core.model.backbone import build_backbone
from imvideoedit_core.model.config import adapter_preset, backbone_preset
from imvideoedit_core.edit.streams import TwoStreamRunner
from imvideoedit_core.train.trainer import LatentBatch


def tiny_runner(seed: int = 0) -> TwoStreamRunner:
    backbone = build_backbone(backbone_preset("tiny"), seed=seed)
    with torch.no_grad():
        backbone.head.head.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(seed + 1))
    return TwoStreamRunner(backbone, build_adapter(adapter_preset("tiny"), backbone_preset("tiny"), seed=seed))


class ReconstructionPairs:
    """Step k, rank r: a fixed pool of 8 random one-frame latents, target == source."""

    def __init__(self, pool: int = 8):
        gen = torch.Generator().manual_seed(123)
        self.latents = torch.randn(pool, 16, 1, 8, 8, generator=gen)
        self.contexts = torch.randn(pool, 4, 32, generator=gen)

    def batch(self, step: int, *, rank: int, world_size: int) -> LatentBatch:
        index = torch.tensor([(2 * (step * world_size + rank) + i) % len(self.latents) for i in range(2)])
        src = self.latents[index]
        return LatentBatch(source=src, target=src.clone(), context=self.contexts[index],
                           empty_context=torch.zeros(1, 4, 32))
