"""Rotary position embeddings: Wan 2.1's 3D layout for the backbone, a 2D layout for the adapter.

Frequencies are complex tensors (L, head_dim/2): token l rotates pair j of its head by ``freqs[l, j]``.
Wan splits the pairs of a head between time, height and width as ``[c - 2*(c//3), c//3, c//3]`` with
``c = head_dim/2``; each axis has its own frequency ladder ``theta^(-2k/n)``.
"""

from __future__ import annotations

import functools

import torch


def axis_frequencies(positions: int, pairs: int, theta: float = 10000.0) -> torch.Tensor:
    """Complex rotations (positions, pairs) for one axis with ``pairs`` rotation pairs."""
    inv = 1.0 / theta ** (torch.arange(0, 2 * pairs, 2, dtype=torch.float64) / (2 * pairs))  # (pairs,)
    angles = torch.outer(torch.arange(positions, dtype=torch.float64), inv)                 # (positions, pairs)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def _grid_frequencies(grid: tuple[int, ...], split: tuple[int, ...]) -> torch.Tensor:
    """Broadcast per-axis rotations over a grid and flatten it: (prod(grid), sum(split))."""
    axes = []
    for axis, (size, pairs) in enumerate(zip(grid, split)):
        f = axis_frequencies(size, pairs)                      # (size, pairs)
        view = [1] * len(grid) + [pairs]
        view[axis] = size
        axes.append(f.view(view).expand(*grid, pairs))
    return torch.cat(axes, dim=-1).reshape(-1, sum(split))


@functools.lru_cache(maxsize=32)
def _cached(grid: tuple[int, ...], split: tuple[int, ...], device: str) -> torch.Tensor:
    return _grid_frequencies(grid, split).to(device)


def rope_3d(head_dim: int, grid: tuple[int, int, int], device: torch.device | str = "cpu", *,
            frame_offset: int = 0) -> torch.Tensor:
    """Wan 2.1 rotations for a (frames, height, width) token grid: (F*H*W, head_dim/2).

    ``frame_offset`` places the clip's first frame at that temporal position (a RoPE shift along time).
    """
    c = head_dim // 2
    split = (c - 2 * (c // 3), c // 3, c // 3)
    f, h, w = grid
    return _cached((f + frame_offset, h, w), split, str(device))[frame_offset * h * w:]


def rope_2d(head_dim: int, grid: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Rotations for one frame's (height, width) grid: (H*W, head_dim/2)."""
    c = head_dim // 2
    return _cached(tuple(grid), (c // 2, c - c // 2), str(device))


def apply_rope(x: torch.Tensor, freqs: torch.Tensor, heads: int) -> torch.Tensor:
    """Rotate ``x`` (B, L, heads*d) by ``freqs`` (L, d/2); computed in float32, returned in x's dtype."""
    b, length, inner = x.shape
    pairs = torch.view_as_complex(x.float().reshape(b, length, heads, -1, 2))  # (B, L, heads, d/2)
    rotated = torch.view_as_real(pairs * freqs[None, :, None, :])              # (B, L, heads, d/2, 2)
    return rotated.reshape(b, length, inner).to(x.dtype)
