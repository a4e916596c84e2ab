"""A compact Wan text-to-video DiT (Wan 2.1 T2V, Wan 2.2 TI2V 5B and each Wan 2.2 A14B expert share it).

Parameter names and shapes match the official checkpoints (and therefore ComfyUI's ``WanModel``), so a real
checkpoint loads with :func:`load_wan_state_dict`. Timesteps are one per sample, or one per latent frame (Wan 2.2
TI2V's first-frame mode: the clean first frame at t = 0). Blocks take a :class:`BlockContext` so that the
per-call inputs shared by every block (timestep modulation, text, rotary frequencies, token grid) travel as one
named object; the two-stream runner hooks the blocks' outputs without editing this class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch.utils.checkpoint import checkpoint

from .attention import attention
from .config import BackboneConfig
from .rope import apply_rope, rope_3d


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight.to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (Wan's ``WanLayerNorm``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of timesteps t (B,) in Wan's [cos, sin] order: (B, dim) float32."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = torch.outer(t.to(torch.float64), freqs)  # (B, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).float()


def frame_timesteps(t: torch.Tensor, *, batch: int, frames: int) -> torch.Tensor:
    """Timesteps (B,) -> (B, 1); (B, F') one per token frame -> as they are; anything else: a ValueError."""
    if t.ndim == 1 and t.shape[0] == batch:
        return t[:, None]
    if t.ndim == 2 and t.shape == (batch, frames):
        return t
    raise ValueError(f"timesteps of shape {tuple(t.shape)} fit neither one per sample ({batch},) nor one per latent "
                     f"frame ({batch}, {frames})")


def per_token(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-frame modulation (B, T, dim) for tokens x (B, L, dim) in frame-major order: broadcast when T = 1,
    else each frame's vector repeated over its L / T tokens."""
    return v if v.shape[1] == 1 else v.repeat_interleave(x.shape[1] // v.shape[1], dim=1)


@dataclass
class BlockContext:
    """What every block of one forward pass shares."""

    modulation: torch.Tensor   # e0: (B, T, 6, dim) timestep modulation; T = 1, or one per token frame
    context: torch.Tensor      # (B, L_text, dim) embedded text
    freqs: torch.Tensor        # (F*H*W, head_dim/2) complex rotary frequencies
    grid: tuple[int, int, int]  # token grid (F, H, W)
    timestep: torch.Tensor     # (B,) or (B, T) raw timesteps in [0, 1000]
    # per-call data of whoever wraps the blocks (the two-stream runner); it travels with the blocks' inputs, so
    # gradient checkpointing's recomputation sees it too
    extras: dict[str, object] = field(default_factory=dict)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float, device=None, dtype=None):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim, device=device, dtype=dtype) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps, device=device, dtype=dtype)
        self.norm_k = RMSNorm(dim, eps, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        q = apply_rope(self.norm_q(self.q(x)), freqs, self.num_heads)  # (B, L, dim)
        k = apply_rope(self.norm_k(self.k(x)), freqs, self.num_heads)
        return self.o(attention(q, k, self.v(x), self.num_heads))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float, device=None, dtype=None):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim, device=device, dtype=dtype) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps, device=device, dtype=dtype)
        self.norm_k = RMSNorm(dim, eps, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(self.q(x))          # (B, L, dim)
        k = self.norm_k(self.k(context))    # (B, L_text, dim)
        return self.o(attention(q, k, self.v(context), self.num_heads))


class WanBlock(nn.Module):
    """3D self-attention, text cross-attention and FFN, modulated by the timestep (six-way adaLN)."""

    def __init__(self, cfg: BackboneConfig, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.norm1 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False, **kw)
        self.self_attn = SelfAttention(cfg.dim, cfg.num_heads, cfg.eps, **kw)
        self.norm3 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=True, **kw)
        self.cross_attn = CrossAttention(cfg.dim, cfg.num_heads, cfg.eps, **kw)
        self.norm2 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False, **kw)
        self.ffn = nn.Sequential(nn.Linear(cfg.dim, cfg.ffn_dim, **kw), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.ffn_dim, cfg.dim, **kw))
        self.modulation = nn.Parameter(torch.randn(1, 6, cfg.dim, **kw) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        # six (B, 1 | L, dim) vectors: shift/scale/gate for attention, then for the FFN
        shift1, scale1, gate1, shift2, scale2, gate2 = (per_token(m, x) for m in
                                                        (self.modulation.unsqueeze(0) + ctx.modulation).unbind(2))
        y = self.self_attn((self.norm1(x) * (1 + scale1) + shift1).to(x.dtype), ctx.freqs)
        x = x + (y * gate1).to(x.dtype)
        x = x + self.cross_attn(self.norm3(x), ctx.context)
        y = self.ffn((self.norm2(x) * (1 + scale2) + shift2).to(x.dtype))
        return x + (y * gate2).to(x.dtype)


class Head(nn.Module):
    def __init__(self, cfg: BackboneConfig, device=None, dtype=None):
        super().__init__()
        out = cfg.out_dim * math.prod(cfg.patch_size)
        self.norm = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False, device=device, dtype=dtype)
        self.head = nn.Linear(cfg.dim, out, device=device, dtype=dtype)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim, device=device, dtype=dtype) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x (B, L, dim), e (B, T, dim) -> (B, L, out_dim * prod(patch))."""
        shift, scale = (per_token(m, x) for m in (self.modulation.unsqueeze(0) + e.unsqueeze(2)).unbind(2))
        return self.head((self.norm(x) * (1 + scale) + shift).to(x.dtype))


@dataclass
class TokenState:
    """The input of the block stack: tokens plus what the blocks and the head need."""

    tokens: torch.Tensor       # (B, F*H*W, dim)
    block_context: BlockContext
    time_embedding: torch.Tensor  # e: (B, T, dim), for the head


class AbsolutePositions(nn.Module):
    """A learned embedding of every token position (frame, row, column) within the clip (not part of Wan)."""

    def __init__(self, dim: int, grid: tuple[int, int, int], device=None, dtype=None):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(*grid, dim, device=device, dtype=dtype))  # (F, H, W, dim)

    def forward(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """(F*H*W, dim) for a token grid (F, H, W) within the covered one."""
        if any(n > m for n, m in zip(grid, self.table.shape)):
            raise ValueError(f"token grid {grid} exceeds the {tuple(self.table.shape[:3])} frames, rows and "
                             "columns this backbone's position embedding covers: edit shorter or smaller clips "
                             "(e.g. in windows)")
        f, h, w = grid
        return self.table[:f, :h, :w].reshape(f * h * w, -1)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.table, std=0.02)


class WanDiT(nn.Module):
    def __init__(self, cfg: BackboneConfig, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.config = cfg
        self.gradient_checkpointing = False
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size,
                                         stride=cfg.patch_size, **kw)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, cfg.dim, **kw), nn.GELU(approximate="tanh"),
                                            nn.Linear(cfg.dim, cfg.dim, **kw))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim, **kw), nn.SiLU(),
                                            nn.Linear(cfg.dim, cfg.dim, **kw))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 6 * cfg.dim, **kw))
        self.blocks = nn.ModuleList(WanBlock(cfg, **kw) for _ in range(cfg.num_layers))
        self.head = Head(cfg, **kw)
        self.positions = (AbsolutePositions(cfg.dim, cfg.position_grid, **kw) if cfg.absolute_position == "learned"
                          else None)

    def init_weights(self) -> None:
        """Wan's initialisation (xavier linears, small text/time embeddings, zero head) for training from scratch."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        for m in (*self.text_embedding, *self.time_embedding):
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.head.head.weight)
        if self.positions is not None:
            self.positions.reset_parameters()

    # -- the three stages of a forward pass; the two-stream runner calls them separately --

    def embed(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
              extras: dict[str, object] | None = None, frame_offset: int = 0) -> TokenState:
        """x: (B, C, F, H, W) latent, t: (B,) timesteps in [0, 1000] or (B, F') one per token frame,
        context: (B, L_text, text_dim); ``frame_offset``: the temporal RoPE position of the first latent frame."""
        cfg = self.config
        tokens = self.patch_embedding(x.to(self.patch_embedding.weight.dtype))  # (B, dim, F', H', W')
        grid = tuple(tokens.shape[2:])
        tokens = rearrange(tokens, "b d f h w -> b (f h w) d")
        if self.positions is not None:  # positions within the clip (a window starts at frame 0)
            tokens = tokens + self.positions(grid).to(tokens.dtype)
        t = frame_timesteps(t, batch=x.shape[0], frames=grid[0])                  # (B, 1 | F')
        e = self.time_embedding(timestep_features(t.flatten(), cfg.freq_dim).to(tokens.dtype))
        e = e.unflatten(0, tuple(t.shape))                                       # (B, T, dim)
        e0 = self.time_projection(e).unflatten(2, (6, cfg.dim))                 # (B, T, 6, dim)
        ctx = BlockContext(modulation=e0, context=self.text_embedding(context.to(tokens.dtype)),
                           freqs=rope_3d(cfg.head_dim, grid, tokens.device, frame_offset=frame_offset),
                           grid=grid, timestep=t,
                           extras=dict(extras or {}))
        return TokenState(tokens=tokens, block_context=ctx, time_embedding=e)

    def run_block(self, index: int, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        block = self.blocks[index]
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, ctx, use_reentrant=False)
        return block(x, ctx)

    def finish(self, tokens: torch.Tensor, state: TokenState) -> torch.Tensor:
        """Head and unpatchify: (B, F'*H'*W', dim) -> (B, out_dim, F, H, W)."""
        out = self.head(tokens, state.time_embedding)  # (B, L, out_dim * pt*ph*pw)
        f, h, w = state.block_context.grid
        pt, ph, pw = self.config.patch_size
        return rearrange(out, "b (f h w) (pf ph pw c) -> b c (f pf) (h ph) (w pw)", f=f, h=h, w=w, pf=pt, ph=ph,
                         pw=pw)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                extras: dict[str, object] | None = None, frame_offset: int = 0) -> torch.Tensor:
        """Velocity prediction (B, out_dim, F, H, W) for latent x at timesteps t under text context.

        ``extras`` reaches every block in ``BlockContext.extras`` (for block wrappers; the model ignores it).
        """
        state = self.embed(x, t, context, extras, frame_offset)
        tokens = state.tokens
        for i in range(len(self.blocks)):
            tokens = self.run_block(i, tokens, state.block_context)
        out = self.finish(tokens, state)
        if self.config.prediction == "x0":
            return velocity_from_x0(x, out, t)
        return out


X0_MIN_SIGMA = 0.05  # below it an x0 head's velocity would divide by ~0; sigma is clamped there


def velocity_from_x0(x: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The flow velocity noise - x0 implied by a clean-latent prediction: x = (1 - s) x0 + s noise gives
    v = (x - x0) / s, with s = t / 1000 clamped to ``X0_MIN_SIGMA``. x, x0: (B, C, F, H, W); t: (B,) or (B, F)."""
    sigma = (t.to(torch.float32) / 1000).clamp(min=X0_MIN_SIGMA)
    sigma = sigma.view(-1, 1, 1, 1, 1) if sigma.ndim == 1 else sigma[:, None, :, None, None]  # (B, 1, 1|F, 1, 1)
    return ((x.to(torch.float32) - x0.to(torch.float32)) / sigma).to(x0.dtype)


def build_backbone(cfg: BackboneConfig, *, device=None, dtype=None, seed: int | None = None) -> WanDiT:
    """A backbone with Wan's initialisation (seeded when ``seed`` is given); on ``meta`` nothing is allocated."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = WanDiT(cfg, device=device, dtype=dtype)
        if str(device) != "meta":
            model.init_weights()
    return model
