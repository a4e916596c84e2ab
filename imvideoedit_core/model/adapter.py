"""Predict-Update Spatial Difference Attention (PU-SDA) and the text-guided dynamic semantic gate.

After frozen block i, per latent frame (2D), with ``n = norm(.)``:

    p = attn2d(q=Wq n(x), k=Wk n(s), v=Wv n(s))   # predict: source content aligned to the target
    d = p - Wv n(x)                               # spatial difference: what the target lacks
    g = gate(x, text, t)                          # (B*F, H*W, 1) in (0, 1): where the edit happens
    x = x + strength * Wo((1 - g) * d)            # update: pull towards the source outside the edit

``Wo`` starts at zero, so an untrained adapter leaves the backbone's output unchanged. Frame f of the target
attends only to frame f of the source. The source side (``Wk n(s)``, ``Wv n(s)``) does not depend on the
sampling step: :meth:`ImVideoEditAdapter.source_features` computes it once per run for the source cache.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Iterator, Sequence

import torch
import torch.nn as nn
from einops import rearrange
import torch.nn.functional as F

from .attention import attention
from .backbone import RMSNorm, timestep_features
from .config import AdapterConfig, BackboneConfig
from .rope import apply_rope, rope_2d

# Default layer classes; a host passes its own (e.g. ComfyUI's comfy.ops.manual_cast) with the same names.
TORCH_OPERATIONS = SimpleNamespace(Linear=nn.Linear)


def _norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x.float(), x.shape[-1:], eps=1e-6)


def fold_frames(tokens: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, F*H*W, D) -> (B*F, H*W, D): every latent frame becomes its own 2D sequence."""
    return rearrange(tokens, "b (f hw) d -> (b f) hw d", f=frames)


def unfold_frames(tokens: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*F, H*W, D) -> (B, F*H*W, D)."""
    return rearrange(tokens, "(b f) hw d -> b (f hw) d", b=batch)


@dataclass
class SourceKV:
    """The source side of one PU-SDA block, frames folded: k, v (B*F, H*W, inner_dim); k already rotated."""

    k: torch.Tensor
    v: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> "SourceKV":
        return SourceKV(self.k.to(device, non_blocking=non_blocking), self.v.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "SourceKV":
        return SourceKV(self.k.pin_memory(), self.v.pin_memory())

    def repeat_batch(self, times: int) -> "SourceKV":
        """(B*F, L, I) -> (times*B*F, L, I): the same features for each guidance branch (branch-major batches)."""
        if times == 1:
            return self
        return SourceKV(self.k.repeat(times, 1, 1), self.v.repeat(times, 1, 1))

    def with_shared(self, shared: "SourceKV", *, batch: int) -> "SourceKV":
        """Every frame's keys/values followed by all of ``shared``'s (keyframe attention sharing).

        self: (B*F, L, I); shared: (B*K, L, I) from K keyframes -> (B*F, L + K*L, I): each target frame can
        attend to its own source frame and to every shared keyframe.
        """
        frames = self.k.shape[0] // batch

        def spread(t: torch.Tensor) -> torch.Tensor:
            t = t.to(self.k.device).reshape(batch, -1, t.shape[-1])   # (B, K*L, I)
            return t.repeat_interleave(frames, 0)                    # (B*F, K*L, I)
        return SourceKV(torch.cat([self.k, spread(shared.k)], 1), torch.cat([self.v, spread(shared.v)], 1))


class SemanticGate(nn.Module):
    """g = sigmoid(<Wa n(x), Wc n(text)> / sqrt(d_g) + b(t)): a per-token edit strength, an implicit mask."""

    def __init__(self, dim: int, gate_dim: int, time_freq_dim: int, *, device=None, dtype=None,
                 operations=TORCH_OPERATIONS):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.token_proj = operations.Linear(dim, gate_dim, **kw)
        self.text_proj = operations.Linear(dim, gate_dim, **kw)
        self.time_bias = nn.Sequential(operations.Linear(time_freq_dim, gate_dim, **kw), nn.SiLU(),
                                       operations.Linear(gate_dim, 1, **kw))
        self.scale = 1.0 / math.sqrt(gate_dim)

    def forward(self, x_normed: torch.Tensor, text: torch.Tensor, time_feat: torch.Tensor) -> torch.Tensor:
        """x_normed (N, L, D), text (N, D), time_feat (N, T) -> gate (N, L, 1)."""
        score = (self.token_proj(x_normed) * self.text_proj(text)[:, None, :]).sum(-1, keepdim=True)
        return torch.sigmoid(score * self.scale + self.time_bias(time_feat)[:, None, :])


@dataclass
class BlockStep:
    """The output of one PU-SDA block."""

    tokens: torch.Tensor  # (B, F*H*W, D) updated target tokens
    gate: torch.Tensor    # (B, F, H, W) edit strength in (0, 1)


class SpatialDifferenceAttention(nn.Module):
    def __init__(self, dim: int, cfg: AdapterConfig, *, device=None, dtype=None, operations=TORCH_OPERATIONS):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.inner_dim // cfg.num_heads
        self.q = operations.Linear(dim, cfg.inner_dim, **kw)
        self.k = operations.Linear(dim, cfg.inner_dim, **kw)
        self.v = operations.Linear(dim, cfg.inner_dim, **kw)
        self.o = operations.Linear(cfg.inner_dim, dim, **kw)
        self.norm_q = RMSNorm(cfg.inner_dim, **kw)
        self.norm_k = RMSNorm(cfg.inner_dim, **kw)
        self.gate = SemanticGate(dim, cfg.gate_dim, cfg.time_freq_dim, operations=operations, **kw)
        self.gate_mode = cfg.gate

    def _dtype(self) -> torch.dtype:
        return self.q.weight.dtype

    def source_features(self, s: torch.Tensor, grid: tuple[int, int, int]) -> SourceKV:
        """s (B, F*H*W, D) source tokens after the frozen block -> rotated keys and values, frames folded."""
        f, h, w = grid
        n = fold_frames(_norm(s), f).to(self._dtype())  # (B*F, H*W, D)
        k = apply_rope(self.norm_k(self.k(n)), rope_2d(self.head_dim, (h, w), n.device), self.num_heads)
        return SourceKV(k=k, v=self.v(n))                 # (B*F, H*W, inner) each

    def forward(self, x: torch.Tensor, source: SourceKV, *, text: torch.Tensor, time_feat: torch.Tensor,
                grid: tuple[int, int, int], strength: float = 1.0) -> BlockStep:
        """x (B, F*H*W, D) target tokens; text (B, D) pooled context; time_feat (B, T)."""
        f, h, w = grid
        b = x.shape[0]
        n = fold_frames(_norm(x), f).to(self._dtype())                       # (B*F, H*W, D)
        q = apply_rope(self.norm_q(self.q(n)), rope_2d(self.head_dim, (h, w), n.device), self.num_heads)
        predicted = attention(q, source.k, source.v, self.num_heads)          # (B*F, H*W, inner)
        difference = predicted - self.v(n)
        gate = self._gate(n, text.to(n.dtype).repeat_interleave(f, 0),
                          time_feat.to(n.dtype).repeat_interleave(f, 0))      # (B*F, H*W, 1)
        delta = unfold_frames(self.o((1 - gate) * difference), b)            # (B, F*H*W, D)
        gate_map = rearrange(gate, "(b f) (h w) 1 -> b f h w", b=b, h=h)                # (B, F, H, W)
        return BlockStep(tokens=x + (strength * delta).to(x.dtype), gate=gate_map)


    def _gate(self, n: torch.Tensor, text: torch.Tensor, time_feat: torch.Tensor) -> torch.Tensor:
        """The gate, or one of its ablations: ``blind`` hides the text (Wc sees zeros), ``none`` is g = 0."""
        if self.gate_mode == "none":
            return n.new_zeros(*n.shape[:2], 1)
        if self.gate_mode == "blind":
            text = torch.zeros_like(text)
        return self.gate(n, text, time_feat)


class LoRAPair(nn.Module):
    """A low-rank update ``up(down(x)) * scale`` added to a frozen linear layer's output."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, scale: float, *, device=None, dtype=None):
        super().__init__()
        self.down = nn.Linear(in_dim, rank, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(rank, out_dim, bias=False, device=device, dtype=dtype)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x.to(self.down.weight.dtype))) * self.scale


class FFNLoRA(nn.Module):
    """Optional LoRA on both linears of every backbone FFN (``ffn.0`` and ``ffn.2``)."""

    def __init__(self, bcfg: BackboneConfig, rank: int, alpha: float, *, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        scale = alpha / rank
        self.layers = nn.ModuleDict()
        for i in range(bcfg.num_layers):
            self.layers[f"{i}_0"] = LoRAPair(bcfg.dim, bcfg.ffn_dim, rank, scale, **kw)
            self.layers[f"{i}_2"] = LoRAPair(bcfg.ffn_dim, bcfg.dim, rank, scale, **kw)


def _add_lora(module: nn.Module, args: tuple, out: torch.Tensor, *, pair: LoRAPair, strength: float) -> torch.Tensor:
    return out + (pair(args[0]) * strength).to(out.dtype)


def attach_ffn_lora(blocks: Sequence[nn.Module], lora: FFNLoRA | None, *,
                    strength: float = 1.0) -> list[torch.utils.hooks.RemovableHandle]:
    """Forward hooks that add ``strength`` x the LoRA's update to the output of every backbone FFN linear
    (``blocks[i].ffn[0]`` and ``blocks[i].ffn[2]``, Wan's layout in the core's backbone and in ComfyUI's alike), so
    the frozen weights stay untouched in whatever storage they have (fp8, GGUF). Remove the handles to detach."""
    if lora is None:
        return []
    handles = []
    for key, pair in lora.layers.items():
        block, layer = key.split("_")
        linear = blocks[int(block)].ffn[int(layer)]
        handles.append(linear.register_forward_hook(partial(_add_lora, pair=pair, strength=strength)))
    return handles


@contextmanager
def ffn_lora_applied(blocks: Sequence[nn.Module], lora: FFNLoRA | None, *, strength: float = 1.0) -> Iterator[None]:
    """:func:`attach_ffn_lora` for the duration of a ``with`` block (a host's one forward)."""
    handles = attach_ffn_lora(blocks, lora, strength=strength)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class ImVideoEditAdapter(nn.Module):
    """All PU-SDA blocks of one backbone (one per adapted block) plus the optional FFN LoRA."""

    def __init__(self, cfg: AdapterConfig, backbone: BackboneConfig, *, device=None, dtype=None,
                 operations=TORCH_OPERATIONS):
        super().__init__()
        self.config = cfg
        self.backbone_config = backbone
        self.block_ids = cfg.block_ids(backbone.num_layers)
        self.blocks = nn.ModuleDict({str(i): SpatialDifferenceAttention(
            backbone.dim, cfg, device=device, dtype=dtype, operations=operations) for i in self.block_ids})
        self.ffn_lora = (FFNLoRA(backbone, cfg.lora_rank, cfg.lora_alpha, device=device, dtype=dtype)
                         if cfg.lora_rank else None)
        if str(device) != "meta":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier projections, zero update ``Wo``, zero time bias, zero LoRA ``up``: attaching changes nothing."""
        for block in self.blocks.values():
            for lin in (block.q, block.k, block.v, block.gate.token_proj, block.gate.text_proj,
                        block.gate.time_bias[0]):
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)
            for lin in (block.o, block.gate.time_bias[2]):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)
        if self.ffn_lora is not None:
            for pair in self.ffn_lora.layers.values():
                nn.init.kaiming_uniform_(pair.down.weight, a=math.sqrt(5))
                nn.init.zeros_(pair.up.weight)

    def block(self, index: int) -> SpatialDifferenceAttention:
        return self.blocks[str(index)]

    def text_summary(self, context: torch.Tensor) -> torch.Tensor:
        """Embedded context (B, L_text, D) -> (B, D): normalised mean over tokens, what the gate reads."""
        return _norm(context.float().mean(dim=1))

    def time_features(self, t: torch.Tensor) -> torch.Tensor:
        """Raw timesteps (B,) in [0, 1000] -> sinusoidal features (B, time_freq_dim)."""
        return timestep_features(t, self.config.time_freq_dim)


def build_adapter(cfg: AdapterConfig, backbone: BackboneConfig, *, seed: int | None = None, device=None,
                  dtype=None, operations=TORCH_OPERATIONS) -> ImVideoEditAdapter:
    """A freshly initialised adapter; the same ``seed`` gives the same weights (the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return ImVideoEditAdapter(cfg, backbone, device=device, dtype=dtype, operations=operations)
