"""Shared fixtures: tiny models that run in milliseconds on a CPU."""

from __future__ import annotations

import pytest
import torch

from imvideoedit_core.model.adapter import ImVideoEditAdapter, build_adapter
from imvideoedit_core.model.backbone import WanDiT, build_backbone
from imvideoedit_core.model.config import adapter_preset, backbone_preset
from tiny import randomize

torch.set_num_threads(1)  # tiny tensors: threads only add contention on a 2-core machine


@pytest.fixture
def tiny_backbone() -> WanDiT:
    model = build_backbone(backbone_preset("tiny"), seed=0)
    with torch.no_grad():  # Wan zero-initialises the head; give it weights so outputs carry information
        model.head.head.weight.copy_(torch.randn(model.head.head.weight.shape,
                                                 generator=torch.Generator().manual_seed(1)) * 0.05)
    return model.requires_grad_(False).eval()


@pytest.fixture
def untrained_adapter() -> ImVideoEditAdapter:
    return build_adapter(adapter_preset("tiny"), backbone_preset("tiny"), seed=0)


@pytest.fixture
def trained_adapter() -> ImVideoEditAdapter:
    """An adapter with every weight random (non-zero update projection), as after training."""
    return randomize(build_adapter(adapter_preset("tiny"), backbone_preset("tiny"), seed=0), seed=2, std=0.2)
