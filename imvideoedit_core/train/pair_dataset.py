"""Image-pair datasets, loaded: pairs read lazily from scanned entries, optionally resized to one size; pairs
made from IMAGE batches (e.g. ComfyUI's). Sizes: ``resize_policy="error"`` requires source and target to have the
same size; ``"resize_target"`` scales each target to its source's size. Independently, ``size=(height, width)``
(multiples of 16) scales both images of every pair to one size, stretching if the aspect ratio differs."""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from ..model.wan_strides import SIZE_MULTIPLE
from .pair_scan import (PairDatasetError, PairEntry, ResizePolicy, ScanCheck, read_image, scan_pairs, size_mismatch,
                        validate_resize_policy)


@dataclass
class ImagePair:
    """One loaded pair; ``source`` and ``target`` are float32 RGB in 0..1, [H, W, 3] (ComfyUI's IMAGE layout)."""

    name: str
    source: torch.Tensor  # [H, W, 3]
    target: torch.Tensor  # [H, W, 3]
    instruction: str


# ----------------------------------------------------------------------------------------------------------------
# Loading pairs


def validate_size(size: Sequence[int] | None, *, multiple: int = SIZE_MULTIPLE) -> tuple[int, int] | None:
    """``size`` as a (height, width) tuple of positive multiples of ``multiple`` (16: the Wan 2.1 VAE, 32: Wan
    2.2's), or None; otherwise a ValueError."""
    if size is None:
        return None
    try:
        height, width = (operator.index(value) for value in size)
    except (TypeError, ValueError):
        raise ValueError(f"size={size!r} must be None or (height, width), two integers") from None
    if height > 0 and width > 0 and height % multiple == 0 and width % multiple == 0:
        return height, width
    nearest = tuple(max(multiple, round(value / multiple) * multiple) for value in (height, width))
    raise ValueError(f"size=({height}, {width}) must be (height, width) positive multiples of {multiple} "
                     f"(the VAE downsamples by {multiple // 2}, the patch embedding by 2): the nearest valid size is "
                     f"{nearest}")


class PairDataset:
    """Loads checked pairs lazily, one ``ImagePair`` per index; usable as a torch Dataset.

    ``resize_policy`` reconciles a target with its source ("error" or "resize_target"); ``size`` (height, width),
    if given, then scales both images to that size. Use with ``batch_indices`` and ``collate``, e.g.
    ``DataLoader(dataset, batch_sampler=batch_indices(len(dataset), ...), collate_fn=collate)``.
    """

    def __init__(
        self,
        entries: Sequence[PairEntry],
        *,
        resize_policy: ResizePolicy = "error",
        size: tuple[int, int] | None = None,
    ) -> None:
        if not entries:
            raise ValueError("PairDataset needs at least one entry: build them with scan_pairs(folder)")
        self.entries = list(entries)
        self.resize_policy = validate_resize_policy(resize_policy)
        self.size = validate_size(size)

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike,
        *,
        resize_policy: ResizePolicy = "error",
        size: tuple[int, int] | None = None,
        check: ScanCheck = "header",
    ) -> PairDataset:
        """``scan_pairs`` then the dataset, with the same resize policy for both."""
        validate_size(size)  # fail on a bad size before a long scan
        entries = scan_pairs(path, resize_policy=resize_policy, check=check)
        return cls(entries, resize_policy=resize_policy, size=size)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> ImagePair:
        entry = self.entries[index]
        source = read_image(entry.source_path)  # [Hs, Ws, 3]
        target = read_image(entry.target_path)  # [Ht, Wt, 3]
        if source.shape != target.shape:
            if self.resize_policy == "error":
                problem = size_mismatch(entry.name, source=source.shape[:2], target=target.shape[:2])
                raise PairDatasetError([problem], origin=str(entry.source_path.parent))
            target = _resize(target, height=source.shape[0], width=source.shape[1])  # [Hs, Ws, 3]
        if self.size is not None:
            source = _resize(source, height=self.size[0], width=self.size[1])  # [H, W, 3]
            target = _resize(target, height=self.size[0], width=self.size[1])  # [H, W, 3]
        return ImagePair(
            name=entry.name,
            source=torch.from_numpy(source),
            target=torch.from_numpy(target),
            instruction=entry.instruction,
        )


def _resize(image: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """[h, w, 3] -> [height, width, 3]; area averaging when shrinking, bilinear otherwise (no overshoot)."""
    if image.shape[:2] == (height, width):
        return image
    shrinking = height <= image.shape[0] and width <= image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=interpolation))


def pairs_from_tensors(sources: torch.Tensor, targets: torch.Tensor, instructions: Sequence[str]) -> list[ImagePair]:
    """Pairs from image batches [N, H, W, 3] (ComfyUI IMAGE) and one instruction per pair (or one for all)."""
    if sources.ndim != 4 or sources.shape[-1] < 3 or sources.shape[:3] != targets.shape[:3]:
        raise ValueError(f"source images {tuple(sources.shape)} and target images {tuple(targets.shape)} must be "
                         "batches [N, H, W, 3] of the same count and size: one target per source")
    texts = [t.strip() for t in instructions]
    if len(texts) == 1:
        texts = texts * sources.shape[0]
    if len(texts) != sources.shape[0]:
        raise ValueError(f"{sources.shape[0]} pairs but {len(texts)} instructions: give one instruction per line "
                         "for each pair, or a single line for all of them")
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        raise ValueError(f"pairs {empty} have an empty instruction: every pair needs one")
    return [ImagePair(name=f"pair{i:04d}", source=sources[i, :, :, :3].float(), target=targets[i, :, :, :3].float(),
                      instruction=texts[i]) for i in range(sources.shape[0])]
