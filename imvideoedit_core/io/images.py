"""Decoded pixels to RGB, one policy for the whole pack (pair images, video frames, animated images).

Alpha is dropped: a pixel keeps the colour stored under it, whatever its transparency. That is what ComfyUI's own
Load Image and its PyAV video loader give, so a picture reaches the adapter with the same pixels whether a
workflow loads it or the pack reads it from a dataset folder (docs/decisions.md). Where transparency matters,
turn it into a MASK in the workflow (Load Image returns one).
"""

from __future__ import annotations

import numpy as np


def opencv_to_rgb(pixels: np.ndarray) -> np.ndarray:
    """An OpenCV decode, [H, W] gray or [H, W, 1|3|4] BGR(A), any dtype -> [H, W, 3] RGB of the same dtype.

    Raises ValueError for any other channel count.
    """
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]  # [H, W] -> [H, W, 1]
    channels = pixels.shape[2]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    if channels not in (3, 4):
        raise ValueError(f"an image with {channels} channels: expected gray, RGB or RGBA")
    return np.ascontiguousarray(pixels[:, :, 2::-1])  # BGR(A) -> RGB, alpha dropped
