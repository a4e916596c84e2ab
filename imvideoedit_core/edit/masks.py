"""Masked edits: a user mask restricts the edit; outside it every step keeps the noised source latent.

A mask (1 = edit, 0 = keep) lives on the latent grid as ``(B, 1, F, h, w)``. Two boundaries:

- ``hard``: the binary mask at every step; the seam is wherever the mask says.
- ``progressive`` (Via's progressive boundary integration): early steps also let the edit into a soft band around
  the mask, whose width narrows linearly to zero by the last step, so the model harmonises the seam while the
  final latent outside the mask equals the source exactly.

The band is a soft dilation by chessboard distance (iterated 3x3 max-pooling per frame): a latent pixel at
distance ``d`` from the mask gets edit weight ``clamp(1 - d / (r + 1), 0, 1)`` for band radius ``r``; at ``r = 0``
this is the binary mask itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .sampling import (EditRequest, EditResult, KeepSchedule, KnownLatentHook, SamplerConfig, StepHook, edit_latent,
                       seeded_noise)
from .streams import CachePlacement, TwoStreamRunner

Boundary = Literal["hard", "progressive"]
BOUNDARIES = ("hard", "progressive")
BINARY_THRESHOLD = 0.5  # a latent pixel is inside the mask when its (area-averaged) mask value reaches this


@dataclass(frozen=True)
class MaskBoundary:
    kind: Boundary = "progressive"
    band: float = 2.0  # band radius in latent pixels at the first step (progressive only)

    def __post_init__(self) -> None:
        if self.kind not in BOUNDARIES:
            raise ValueError(f"unknown boundary {self.kind!r}; choose one of {BOUNDARIES}")
        if not (self.band >= 0 and math.isfinite(self.band)):
            raise ValueError(f"band must be a finite number >= 0 (latent pixels), got {self.band}")


# -- pixel masks -> the latent grid --

def _check_mask(mask: torch.Tensor, *, frames: int, height: int, width: int) -> torch.Tensor:
    """A user mask [T, H, W] (T = 1 or frames) or [H, W] -> float [T, H, W], or a ValueError that says what to do."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"expected a MASK [frames, height, width] or [height, width], got shape "
                         f"{tuple(mask.shape)}")
    t, h, w = mask.shape
    if (h, w) != (height, width):
        raise ValueError(f"the mask is {w}x{h} pixels but the video frames are {width}x{height}: resize the mask "
                         f"to {width}x{height} (or draw it on the frames the edit encodes)")
    if t not in (1, frames):
        raise ValueError(f"the mask has {t} frames but the video has {frames}: give one mask for all frames or "
                         f"exactly one per frame")
    mask = mask.float()
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise ValueError(f"mask values must lie in [0, 1] (1 = edit, 0 = keep), got "
                         f"[{float(mask.min()):.3g}, {float(mask.max()):.3g}]: normalise or threshold the mask")
    return mask


def _temporal_groups(mask: torch.Tensor, *, stride: int) -> torch.Tensor:
    """[T, h, w] with T = stride*(F-1)+1 -> [F, h, w]: frame 0 alone, then the max of each group of ``stride``."""
    if stride == 1 or mask.shape[0] == 1:
        return mask
    rest = mask[1:].reshape(-1, stride, *mask.shape[1:])  # (F-1, stride, h, w)
    return torch.cat([mask[:1], rest.amax(dim=1)])         # (F, h, w)


def latent_mask(mask: torch.Tensor, *, frames: int, height: int, width: int, temporal_stride: int,
                spatial_stride: int) -> torch.Tensor:
    """A pixel MASK ([T, H, W] per frame, [1, H, W] or [H, W] for all frames) -> (1, 1, F, h, w) on the latent grid.

    Space: area average over each ``spatial_stride`` block. Time (Wan's VAE: pixel frame 0 -> latent frame 0,
    frames 4j-3..4j -> latent frame j): the max over each group, so a region edited in any frame is editable.
    """
    if (frames - 1) % temporal_stride or height % spatial_stride or width % spatial_stride:
        raise ValueError(f"a {frames}-frame {width}x{height} video does not fit the latent grid (frames "
                         f"{temporal_stride}k+1, sides multiples of {spatial_stride})")
    mask = _check_mask(mask, frames=frames, height=height, width=width)
    mask = F.avg_pool2d(mask[:, None], spatial_stride)[:, 0]   # (T, h, w)
    mask = _temporal_groups(mask, stride=temporal_stride)      # (F or 1, h, w)
    latent_frames = (frames - 1) // temporal_stride + 1
    return mask.expand(latent_frames, -1, -1)[None, None].clone()  # (1, 1, F, h, w)


def gate_latent_mask(gate: torch.Tensor, *, height: int, width: int,
                     threshold: float | None = None) -> torch.Tensor:
    """An edit's gate map (B, F, h', w') on the token grid -> (B, 1, F, height, width) on the latent grid.

    Nearest upscale (each token covers a patch of latent pixels); ``threshold`` turns it into a binary mask.
    """
    if gate.ndim != 4:
        raise ValueError(f"expected a gate map (batch, frames, height, width), got shape {tuple(gate.shape)}")
    if height % gate.shape[-2] or width % gate.shape[-1]:
        raise ValueError(f"the gate grid {gate.shape[-1]}x{gate.shape[-2]} does not divide the latent "
                         f"{width}x{height}: use the gate of an edit of this latent")
    up = F.interpolate(gate.float(), size=(height, width), mode="nearest")  # (B, F, height, width)
    if threshold is not None:
        up = (up >= threshold).float()
    return up[:, None]                                                      # (B, 1, F, height, width)


# -- boundaries --

def binary(mask: torch.Tensor) -> torch.Tensor:
    return (mask >= BINARY_THRESHOLD).to(mask.dtype)


def band_radius(step: int, total: int, band: float) -> float:
    """The band radius at ``step`` of ``total``: ``band`` at the first step, narrowing linearly to 0 at the last."""
    if total <= 1:
        return 0.0
    return band * max(0.0, 1.0 - step / (total - 1))


def soft_dilate(mask: torch.Tensor, radius: float) -> torch.Tensor:
    """Edit weights (..., F, h, w): 1 inside the binary mask, ``1 - d / (radius + 1)`` at chessboard distance d."""
    inside = binary(mask)
    steps = math.ceil(radius)
    if steps == 0:
        return inside
    reached = inside.reshape(-1, 1, *inside.shape[-3:])  # (N, 1, F, h, w)
    weight = reached.clone()
    for d in range(1, steps + 1):
        grown = F.max_pool3d(reached, kernel_size=(1, 3, 3), stride=1, padding=(0, 1, 1))
        weight = weight + (grown - reached) * (1.0 - d / (radius + 1))  # pixels first reached at distance d
        reached = grown
    return weight.reshape(inside.shape)


def edit_weight(mask: torch.Tensor, *, boundary: MaskBoundary, step: int, total: int) -> torch.Tensor:
    """Where step ``step`` of ``total`` may edit (1) or must keep the source (0)."""
    if boundary.kind == "hard":
        return binary(mask)
    return soft_dilate(mask, band_radius(step, total, boundary.band))


def keep_schedule(mask: torch.Tensor, *, boundary: MaskBoundary) -> KeepSchedule:
    """The :data:`~.sampling.KeepSchedule` of a mask: 1 - its edit weight at each step."""
    def keep(step: int, total: int) -> torch.Tensor:
        return 1 - edit_weight(mask, boundary=boundary, step=step, total=total)
    return keep


def step_index(sigma: float, sigmas: torch.Tensor) -> tuple[int, int]:
    """(step, total) of a model call at noise level ``sigma`` in a run over ``sigmas`` (the nearest level)."""
    total = len(sigmas) - 1
    step = int(torch.argmin((sigmas.double().cpu() - float(sigma)).abs()))
    return min(step, max(total - 1, 0)), total


# -- masked edits --

def mask_hook(source_latent: torch.Tensor, mask: torch.Tensor, *, noise: torch.Tensor,
              boundary: MaskBoundary) -> StepHook:
    """A step hook that keeps ``source_latent`` (noised with the run's ``noise``) outside ``mask``."""
    if mask.ndim != 5 or mask.shape[1] != 1 or mask.shape[-3:] != source_latent.shape[-3:]:
        raise ValueError(f"the mask {tuple(mask.shape)} must be (batch, 1, frames, height, width) on the latent "
                         f"grid {tuple(source_latent.shape[-3:])}: build it with latent_mask or gate_latent_mask")
    return KnownLatentHook(known=source_latent, noise=noise, keep=keep_schedule(mask, boundary=boundary))


def masked_edit(runner: TwoStreamRunner, source_latent: torch.Tensor, mask: torch.Tensor, *,
                context: torch.Tensor, negative_context: torch.Tensor | None, config: SamplerConfig,
                boundary: MaskBoundary = MaskBoundary(), cache: CachePlacement = "device",
                return_gate: bool = False) -> EditResult:
    """:func:`~.sampling.edit_latent` restricted to ``mask`` (B or 1, 1, F, h, w); outside it the result is the
    source exactly."""
    noise = seeded_noise(source_latent.shape, seed=config.seed, device=source_latent.device,
                         dtype=source_latent.dtype)
    hook = mask_hook(source_latent, mask.to(source_latent), noise=noise, boundary=boundary)
    return edit_latent(runner, EditRequest(source=source_latent, context=context, negative_context=negative_context,
                                           config=config, cache=cache, return_gate=return_gate, noise=noise,
                                           features=[hook]))
