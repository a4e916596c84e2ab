"""Dreamix-style degradation and image animation.

``degrade_latent`` coarsens a latent before it is noised to the sampler's strength (degrade-then-regenerate): the
sampler then has to regenerate the detail it removed, which frees it to edit more while the noised start still
fixes layout, colour and motion. ``animate_image`` turns one image into a coarse video (the image replicated under
a smooth camera motion) that an edit then brings to life.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange

TemporalFill = Literal["hold", "linear"]
TEMPORAL_FILLS = ("hold", "linear")
Motion = Literal["zoom_in", "zoom_out", "pan_left", "pan_right", "pan_up", "pan_down", "perspective"]
MOTIONS = ("zoom_in", "zoom_out", "pan_left", "pan_right", "pan_up", "pan_down", "perspective")
PAN_DIRECTIONS = {"pan_left": (-1.0, 0.0), "pan_right": (1.0, 0.0), "pan_up": (0.0, -1.0), "pan_down": (0.0, 1.0)}
MAX_AMOUNT = 1.0


@dataclass(frozen=True)
class DegradeConfig:
    spatial_factor: int = 1           # area-downsample H and W by this, then upsample back (bilinear)
    temporal_factor: int = 1          # keep every k-th frame, then fill the others back
    temporal_fill: TemporalFill = "linear"  # hold: repeat the last kept frame; linear: interpolate between kept

    def __post_init__(self) -> None:
        for name in ("spatial_factor", "temporal_factor"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1 (1 = no degradation), got {value!r}")
        if self.temporal_fill not in TEMPORAL_FILLS:
            raise ValueError(f"unknown temporal_fill {self.temporal_fill!r}; choose one of {TEMPORAL_FILLS}")

    @property
    def is_identity(self) -> bool:
        return self.spatial_factor == 1 and self.temporal_factor == 1


def degrade_spatial(latent: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, F, H, W) -> same shape, area-downsampled by ``factor`` and upsampled back bilinearly."""
    b, _, _, h, w = latent.shape
    frames = rearrange(latent, "b c f h w -> (b f) c h w").float()
    small = F.interpolate(frames, size=(math.ceil(h / factor), math.ceil(w / factor)), mode="area")
    back = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)  # (B*F, C, H, W)
    return rearrange(back, "(b f) c h w -> b c f h w", b=b).to(latent.dtype)


def degrade_temporal(latent: torch.Tensor, factor: int, fill: TemporalFill) -> torch.Tensor:
    """(B, C, F, H, W) -> same shape: frames 0, k, 2k, ... are kept exactly, the others held or interpolated."""
    frames = latent.shape[2]
    kept = latent[:, :, ::factor]                                      # (B, C, ceil(F/k), H, W)
    last = kept.shape[2] - 1
    position = torch.arange(frames, dtype=torch.float64) / factor      # where frame f lies between kept frames
    lo = position.floor().long().clamp(max=last)
    hi = (lo + 1).clamp(max=last)
    weight = (position - lo).clamp(0, 1) if fill == "linear" else torch.zeros(frames, dtype=torch.float64)
    weight = torch.where(hi == lo, torch.zeros_like(weight), weight)  # past the last kept frame: hold it
    weight = weight.to(latent.dtype).to(latent.device).view(1, 1, frames, 1, 1)
    return torch.lerp(kept[:, :, lo.to(latent.device)], kept[:, :, hi.to(latent.device)], weight)


def degrade_latent(latent: torch.Tensor, config: DegradeConfig) -> torch.Tensor:
    """Coarsen a latent (B, C, F, H, W) in space and/or time; the result has the same shape (a copy at factor 1).

    Both steps average with weights that sum to one, so they commute with a per-channel affine latent format.
    """
    if latent.ndim != 5:
        raise ValueError(f"expected a video latent (batch, channels, frames, height, width), got shape "
                         f"{tuple(latent.shape)}")
    _, _, frames, h, w = latent.shape
    if config.spatial_factor > min(h, w):
        raise ValueError(f"spatial_factor {config.spatial_factor} is larger than the latent ({h}x{w} latent "
                         f"pixels); use at most {min(h, w)}")
    if config.temporal_factor > frames:
        raise ValueError(f"temporal_factor {config.temporal_factor} is larger than the latent's {frames} frames; "
                         f"use at most {frames} (1 keeps every frame)")
    out = latent.clone()
    if config.spatial_factor > 1:
        out = degrade_spatial(out, config.spatial_factor)
    if config.temporal_factor > 1:
        out = degrade_temporal(out, config.temporal_factor, config.temporal_fill)
    return out


# -- image animation --

def _single_image(image: torch.Tensor) -> torch.Tensor:
    """[H, W, C] or [1, H, W, C] -> [H, W, C]."""
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"expected one image [height, width, channels] or [1, height, width, channels], got "
                         f"shape {tuple(image.shape)}; pick one frame of a batch first")
    return image


def _base_grid(h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """Pixel-centre coordinates in grid_sample's [-1, 1] convention (align_corners=False), (H, W, 2) as (x, y)."""
    ys = (torch.arange(h, dtype=dtype) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=dtype) + 0.5) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def motion_grid(base: torch.Tensor, *, motion: Motion, progress: float, amount: float) -> torch.Tensor:
    """Where each output pixel samples the image at ``progress`` in [0, 1] of the motion (identity at 0)."""
    x, y = base[..., 0], base[..., 1]
    if motion in ("zoom_in", "zoom_out"):
        scale = 1 + amount * progress                   # magnification at this frame (2x at amount 1)
        scale = scale if motion == "zoom_in" else 1 / scale
        return base / scale
    if motion in PAN_DIRECTIONS:
        dx, dy = PAN_DIRECTIONS[motion]
        shift = 2 * amount * progress                   # amount 1: the camera travels one image width/height
        return torch.stack([x + dx * shift, y + dy * shift], dim=-1)
    tilt = 0.5 * amount * progress                      # perspective: the top edge recedes (plane tilts back)
    depth = 1 + tilt * y                                # homography [[1,0,0],[0,1,0],[0,tilt,1]], depth > 0.5
    return torch.stack([x / depth, y / depth], dim=-1)


def animate_image(image: torch.Tensor, *, frames: int, motion: Motion, amount: float) -> torch.Tensor:
    """One image [H, W, C] (or [1, H, W, C]) -> a coarse video [T, H, W, C] under a smooth camera motion.

    ``amount`` in [0, 1] is the motion reached at the last frame (zoom: 1 + amount magnification; pan: amount
    image widths; perspective: tilt of the plane). Borders are reflected. Frame 0 is the image itself.
    """
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be an integer >= 1, got {frames!r} (Wan wants 4k+1: 33, 81)")
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; choose one of {MOTIONS}")
    if not 0.0 <= amount <= MAX_AMOUNT:
        raise ValueError(f"amount must be in [0, {MAX_AMOUNT}] (the motion at the last frame), got {amount}")
    image = _single_image(image)
    h, w, _ = image.shape
    base = _base_grid(h, w, torch.float32)
    # grid_sample wants (N, C, H, W); the image as one (1, C, H, W) batch
    planar = image.permute(2, 0, 1)[None].float()
    out = [image.clone()]
    for t in range(1, frames):
        grid = motion_grid(base, motion=motion, progress=t / (frames - 1), amount=amount)
        warped = F.grid_sample(planar, grid[None], mode="bilinear", padding_mode="reflection", align_corners=False)
        out.append(warped[0].permute(1, 2, 0).to(image.dtype))           # (H, W, C)
    return torch.stack(out)                                              # (T, H, W, C)
