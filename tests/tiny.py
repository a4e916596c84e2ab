"""Small helpers shared by the tests: seeded random latents and contexts, trained-like weights."""

from __future__ import annotations

import torch


def randomize(module: torch.nn.Module, seed: int, std: float = 0.05) -> torch.nn.Module:
    """Give every parameter random values (a stand-in for trained weights, including zero-initialised ones)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module


def latent(seed: int, frames: int = 3, size: int = 8, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 16, frames, size, size, generator=torch.Generator().manual_seed(seed))


def text(seed: int, batch: int = 1, length: int = 5) -> torch.Tensor:
    return torch.randn(batch, length, 32, generator=torch.Generator().manual_seed(seed))
