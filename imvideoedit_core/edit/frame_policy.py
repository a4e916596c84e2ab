"""What the Wan VAE needs from a video's frames, and how latent-grid maps go back to pixels.

The Wan VAEs take 4k+1 frames (one latent frame for the first frame, then one per four) and sizes that the
patch grid divides: multiples of 16 for the Wan 2.1 VAE (x8, patch x2), 32 for the Wan 2.2 VAE (x16). ``fit_frames``
applies the pack's policy: keep the first 4k+1 frames (drop at most 3 at the end) and scale to the nearest multiple
on each side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..model.wan_strides import SIZE_MULTIPLE, VAE_TEMPORAL_STRIDE


def wan_frame_count(frames: int) -> int:
    """The largest 4k+1 <= frames."""
    if frames < 1:
        raise ValueError("the video has no frames: load at least one frame")
    return (frames - 1) // VAE_TEMPORAL_STRIDE * VAE_TEMPORAL_STRIDE + 1


def nearest_multiple(size: int, multiple: int = SIZE_MULTIPLE) -> int:
    return max(multiple, int(size / multiple + 0.5) * multiple)  # halves round up


@dataclass
class FittedFrames:
    images: torch.Tensor            # [T', H', W', 3] in 0..1
    dropped_frames: int             # frames cut from the end to reach 4k+1
    original_size: tuple[int, int]  # (H, W)
    multiple: int = SIZE_MULTIPLE   # what the sides were scaled to

    def describe(self) -> str:
        t, h, w = self.images.shape[:3]
        notes = [f"{t} frames at {w}x{h}"]
        if self.dropped_frames:
            notes.append(f"dropped the last {self.dropped_frames} frame(s) to reach 4k+1")
        if (h, w) != self.original_size:
            notes.append(f"scaled from {self.original_size[1]}x{self.original_size[0]} to multiples of "
                         f"{self.multiple}")
        return "; ".join(notes)


def fit_frames(images: torch.Tensor, *, multiple: int = SIZE_MULTIPLE) -> FittedFrames:
    """images [T, H, W, C>=3] in 0..1 -> the first 4k+1 frames, RGB, scaled to multiples of ``multiple`` (16 for
    the Wan 2.1 VAE, 32 for Wan 2.2's; bilinear)."""
    if images.ndim != 4 or images.shape[-1] < 3:
        raise ValueError(f"expected IMAGE frames [T, H, W, 3], got shape {tuple(images.shape)}")
    t, h, w = images.shape[:3]
    keep = wan_frame_count(t)
    frames = images[:keep, :, :, :3]
    size = (nearest_multiple(h, multiple), nearest_multiple(w, multiple))
    if size != (h, w):
        frames = F.interpolate(frames.movedim(-1, 1), size=size, mode="bilinear", align_corners=False,
                               antialias=True).movedim(1, -1).clamp(0, 1)
    return FittedFrames(images=frames, dropped_frames=t - keep, original_size=(h, w), multiple=multiple)


def latent_map_to_frames(maps: torch.Tensor, *, height: int, width: int) -> torch.Tensor:
    """Maps on the latent token grid (F, h, w) -> per video frame masks [4(F-1)+1, height, width] (nearest)."""
    repeats = torch.full((maps.shape[0],), VAE_TEMPORAL_STRIDE, dtype=torch.long)
    repeats[0] = 1  # the first latent frame encodes one video frame, each later one four
    per_frame = maps.float().repeat_interleave(repeats.to(maps.device), dim=0)       # (T, h, w)
    return F.interpolate(per_frame[:, None], size=(height, width), mode="nearest")[:, 0]
