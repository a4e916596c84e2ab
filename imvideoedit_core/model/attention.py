"""The one attention seam of the project.

Every attention in the backbone and the adapter calls :func:`attention`. It uses PyTorch's
``scaled_dot_product_attention`` unless a host installs its own kernel with :func:`use_attention`
(ComfyUI passes ``comfy.ldm.modules.attention.optimized_attention``, which has the same signature).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

# (q, k, v, heads) -> out; q: (B, Lq, heads*d), k/v: (B, Lk, heads*d) -> (B, Lq, heads*d)
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    b, lq, inner = q.shape
    d = inner // heads
    # (B, L, heads*d) -> (B, heads, L, d)
    q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, lq, inner)  # (B, Lq, heads*d)


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Plain softmax(q k^T / sqrt(d)) v with explicit matmuls (a reference, and countable by FlopCounterMode)."""
    b, lq, inner = q.shape
    d = inner // heads
    q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax((q @ k.transpose(-1, -2)) * d**-0.5, dim=-1)  # (B, heads, Lq, Lk)
    return (weights @ v).transpose(1, 2).reshape(b, lq, inner)


_impl: AttentionFn = sdpa_attention


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    return _impl(q, k, v, heads)


@contextlib.contextmanager
def use_attention(fn: AttentionFn) -> Iterator[None]:
    """Route every attention call to ``fn`` inside the ``with`` block."""
    global _impl
    previous, _impl = _impl, fn
    try:
        yield
    finally:
        _impl = previous
