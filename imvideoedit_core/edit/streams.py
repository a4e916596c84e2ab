"""The two-stream runtime: the one place that knows how the adapter wraps the frozen blocks.

The target stream (the noisy edited latent at timestep t) runs through the backbone as usual; after each adapted
block, PU-SDA updates the block's output. The source stream (the clean source latent at t=0, same context) runs
through the same frozen blocks once per run: its per-block keys and values are kept in a :class:`SourceCache` and
reused at every sampling step. Neither stream's 3D self-attention sees the other.

Everything here is host-neutral. A host binds it in a few lines: it builds an :class:`AdaptedCall` for each forward
(recording the source, or adapting the target), hands it to its blocks, and calls
:meth:`AdaptedCall.after_block` with each adapted block's output. The core's own backbone binds it with forward
hooks (:class:`TwoStreamRunner`); ComfyUI's WanModel with a block patch and a diffusion-model wrapper
(``nodes/host.py``).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Literal, Sequence

import torch

from ..model.adapter import ImVideoEditAdapter, SourceKV, attach_ffn_lora
from ..model.backbone import BlockContext, WanDiT

CachePlacement = Literal["device", "cpu", "off"]
CACHE_PLACEMENTS = ("device", "cpu", "off")


def check_placement(placement: str) -> None:
    if placement not in CACHE_PLACEMENTS:
        raise ValueError(f"unknown source cache placement {placement!r}; choose one of {CACHE_PLACEMENTS}")


def token_grid(latent_shape: Sequence[int], patch_size: Sequence[int]) -> tuple[int, int, int]:
    """The token grid (F', H', W') of a latent (B, C, F, H, W) under a (pt, ph, pw) patch embedding; a latent that
    is not a multiple of the patch is padded up to one (as Wan does)."""
    return tuple(math.ceil(n / p) for n, p in zip(latent_shape[2:], patch_size))


class SourceCache:
    """One source encoding: the PU-SDA keys/values of every adapted block, kept where ``placement`` says.

    placement: ``device`` keeps the features where the model runs; ``cpu`` moves each block's features to host
    memory as soon as they exist (pinned when they come from a GPU) and copies them back just before use,
    prefetching the next block's; ``off`` keeps them for one forward only (the owner re-encodes every step).

    branches: how many guidance branches read these features (the target batch is ``branches`` x B,
    branch-major); one encoding serves every branch.
    """

    def __init__(self, placement: CachePlacement = "device", *, branches: int = 1):
        check_placement(placement)
        self.placement = placement
        self.branches = branches
        self.blocks: dict[int, SourceKV] = {}
        self._prefetched: dict[int, SourceKV] = {}
        self._pin = False  # set once features arrive from a GPU: host copies are then pinned

    def put(self, block: int, kv: SourceKV) -> None:
        self.blocks[block] = self._place(kv)

    def _place(self, kv: SourceKV) -> SourceKV:
        if self.placement != "cpu":
            return kv
        self._pin = self._pin or kv.k.is_cuda
        kv = kv.to("cpu")
        return kv.pin_memory() if self._pin else kv  # pinned: the copies back can overlap compute

    def add_shared(self, shared: "SourceCache", *, batch: int) -> None:
        """Append the edited keyframes' features (``shared``, batch B*K) to every frame's (keyframe sharing)."""
        self.blocks = {i: self._place(kv.with_shared(shared.blocks[i], batch=batch)) for i, kv in self.blocks.items()}

    def features(self, block: int, device: torch.device) -> SourceKV:
        """Block ``block``'s features on ``device``, repeated for every guidance branch."""
        if block not in self.blocks:
            raise RuntimeError(f"the source cache holds no features for block {block}: encode the source first")
        if self.placement != "cpu":
            return self.blocks[block].repeat_batch(self.branches)
        kv = self._prefetched.pop(block, None) or self.blocks[block].to(device, non_blocking=True)
        later = [i for i in self.blocks if i > block]
        if later:  # start copying the next block's features while this block computes
            self._prefetched[later[0]] = self.blocks[later[0]].to(device, non_blocking=True)
        return kv.repeat_batch(self.branches)

    def for_branches(self, branches: int) -> "SourceCache":
        """These features read by ``branches`` guidance branches: this cache, or a view of it (nothing is copied;
        a host whose forwards batch a varying number of branches takes one view per forward)."""
        if branches == self.branches:
            return self
        view = SourceCache(self.placement, branches=branches)
        view.blocks, view._pin = self.blocks, self._pin
        return view

    def end_step(self) -> None:
        self._prefetched.clear()

    def nbytes(self) -> int:
        return sum(kv.k.nbytes + kv.v.nbytes for kv in self.blocks.values())


def gate_timestep(t: torch.Tensor) -> torch.Tensor:
    """The gate's timestep per sample: t (B,) as it is; per latent frame (B, F') the noisiest frame's (Wan 2.2
    TI2V's clean first frame has t = 0 while the frames being generated share the sampling timestep)."""
    return t if t.ndim == 1 else t.flatten(1).amax(1)


@dataclass
class AdaptedCall:
    """One forward of the backbone with the adapter, handed to its blocks: it records the source stream into
    ``cache`` (``recording``) or applies PU-SDA to the target with ``cache``'s features."""

    adapter: ImVideoEditAdapter
    grid: tuple[int, int, int]             # token grid (F', H', W') of this forward (token_grid)
    cache: SourceCache
    recording: bool = False
    timestep: torch.Tensor | None = None   # (B,) or per latent frame (B, F') raw timesteps in [0, 1000] (target)
    strength: float = 1.0
    record_gates: bool = False
    gate_grad: bool = False                # keep the recorded gates in the autograd graph (the gate loss)
    text: torch.Tensor | None = None       # (B, D) pooled context, computed at the first adapted block
    time_feat: torch.Tensor | None = None  # (B, T)
    gates: dict[int, torch.Tensor] = field(default_factory=dict)  # block -> (B, F', H', W')

    def after_block(self, index: int, tokens: torch.Tensor, text_tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, F'*H'*W', dim): block ``index``'s output; text_tokens (B, L, dim): the embedded context."""
        block = self.adapter.block(index)
        if self.recording:
            self.cache.put(index, block.source_features(tokens, self.grid))
            return tokens
        if self.text is None:
            self.text = self.adapter.text_summary(text_tokens)
            self.time_feat = self.adapter.time_features(gate_timestep(self.timestep).to(tokens.device))
        step = block(tokens, self.cache.features(index, tokens.device), text=self.text, time_feat=self.time_feat,
                     grid=self.grid, strength=self.strength)
        if self.record_gates:
            self.gates[index] = step.gate if self.gate_grad else step.gate.detach()
        return step.tokens


def mean_over_blocks(gates: dict[int, torch.Tensor]) -> torch.Tensor:
    """block -> (B, F', H', W') gate maps -> their mean (B, F', H', W') in float32."""
    return torch.stack([g.float() for g in gates.values()]).mean(0)


@dataclass
class GateAverage:
    """The gate maps of a run averaged over its steps, per latent frame; windows of a long clip add their frames
    (the length is the highest frame seen, so no host needs to say how long the clip is)."""

    total: torch.Tensor | None = None   # (B, F', H', W') sums
    count: torch.Tensor | None = None   # (F', 1, 1) contributions per frame

    def add(self, gate: torch.Tensor, frames: Sequence[int] | None = None) -> None:
        """gate (B, F_window, H', W') for the latent frames ``frames`` (default: 0..F_window-1)."""
        frames = list(range(gate.shape[1])) if frames is None else list(frames)
        length = max(frames) + 1
        if self.total is None or (self.total.shape[0], *self.total.shape[2:]) != (gate.shape[0], *gate.shape[2:]):
            self.total = gate.new_zeros(gate.shape[0], 0, *gate.shape[2:], dtype=torch.float32)
            self.count = gate.new_zeros(0, 1, 1, dtype=torch.float32)
        if length > self.total.shape[1]:
            grow = length - self.total.shape[1]
            self.total = torch.cat([self.total, self.total.new_zeros(gate.shape[0], grow, *gate.shape[2:])], 1)
            self.count = torch.cat([self.count, self.count.new_zeros(grow, 1, 1)])
        index = torch.tensor(frames, device=gate.device)
        self.total.index_add_(1, index, gate.float())
        self.count.index_add_(0, index, self.count.new_ones(len(frames), 1, 1))

    def mean(self) -> torch.Tensor | None:
        """(B, F', H', W'), or None before any step."""
        return None if self.total is None else self.total / self.count.clamp(min=1)


# -- the core's binding: its own backbone, with forward hooks --

@dataclass
class StreamOutput:
    velocity: torch.Tensor                  # (B, C, F, H, W)
    gates: dict[int, torch.Tensor] | None   # block -> (B, F', H', W') gate maps, when asked for


class SourceStream:
    """A source latent and its context seen through the frozen blocks at t=0, for one run of the core's backbone.

    placement: see :class:`SourceCache` (``off`` re-encodes at every call: no memory, one extra pass per step).

    shared: an optional clean latent (B, C, K, H, W) of already edited keyframes; its keys/values are appended to
    every frame's, so PU-SDA of every frame also attends to the edited keyframes (keyframe attention sharing).

    branches: how many guidance branches read these features (the target batch is ``branches`` x B, branch-major);
    the source is encoded once, with ``context``, for every branch (half the cache and half the encoding of one
    encoding per branch).
    """

    def __init__(self, runner: "TwoStreamRunner", latent: torch.Tensor, context: torch.Tensor,
                 placement: CachePlacement = "device", frame_offset: int = 0, shared: torch.Tensor | None = None,
                 branches: int = 1):
        check_placement(placement)
        if shared is not None and (shared.shape[:2] != latent.shape[:2] or shared.shape[3:] != latent.shape[3:]):
            raise ValueError(f"shared keyframe latent {tuple(shared.shape)} must match the source latent "
                             f"{tuple(latent.shape)} in batch, channels, height and width")
        self.runner = runner
        self.latent = latent        # (B, C, F, H, W)
        self.context = context      # (B, L_text, text_dim)
        self.placement = placement
        self.frame_offset = frame_offset  # temporal RoPE position of the first frame (the target uses the same)
        self.shared = shared        # (B, C, K, H, W) or None
        self.branches = branches
        self.cache: SourceCache | None = None

    def begin_step(self) -> SourceCache:
        """Called once per target forward: encodes on first use (at every call when the cache is off)."""
        if self.cache is None:
            cache = SourceCache(self.placement, branches=self.branches)
            self.runner.encode_source(self.latent, self.context, cache, frame_offset=self.frame_offset)
            if self.shared is not None:
                shared = SourceCache("device")
                self.runner.encode_source(self.shared, self.context, shared)
                cache.add_shared(shared, batch=self.latent.shape[0])
            self.cache = cache
        return self.cache

    def end_step(self) -> None:
        """Called after each target forward: with the cache off, nothing is kept between steps."""
        if self.cache is not None:
            self.cache.end_step()
        if self.placement == "off":
            self.cache = None

    def cache_bytes(self) -> int:
        return 0 if self.cache is None else self.cache.nbytes()


EXTRAS_KEY = "imvideoedit"  # BlockContext.extras key of the AdaptedCall


class TwoStreamRunner:
    def __init__(self, backbone: WanDiT, adapter: ImVideoEditAdapter, *, strength: float = 1.0):
        if adapter.backbone_config.dim != backbone.config.dim:
            raise ValueError(f"adapter was built for dim {adapter.backbone_config.dim}, backbone has "
                             f"dim {backbone.config.dim}: use an adapter made for this backbone")
        self.backbone = backbone
        self.adapter = adapter
        self.strength = strength
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    # -- attach / detach --

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> "TwoStreamRunner":
        if self.attached:
            return self
        for i in self.adapter.block_ids:
            self._handles.append(self.backbone.blocks[i].register_forward_hook(self._block_hook(i)))
        self._handles += attach_ffn_lora(self.backbone.blocks, self.adapter.ffn_lora, strength=self.strength)
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "TwoStreamRunner":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    @staticmethod
    def _block_hook(index: int):
        def hook(module, args, output):
            ctx: BlockContext = args[1]
            call: AdaptedCall | None = ctx.extras.get(EXTRAS_KEY)
            return None if call is None else call.after_block(index, output, ctx.context)
        return hook

    # -- training: the AdaptedModel protocol of imvideoedit_core.train.trainer --

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @contextmanager
    def training(self, *, gradient_checkpointing: bool = False) -> Iterator[None]:
        """Backbone frozen (optionally checkpointed block by block), adapter trainable and attached."""
        was_attached = self.attached
        self.backbone.requires_grad_(False).gradient_checkpointing = gradient_checkpointing
        self.adapter.requires_grad_(True).train()
        self.attach()
        try:
            yield
        finally:
            self.adapter.eval()
            self.backbone.gradient_checkpointing = False
            if not was_attached:
                self.detach()

    def velocity(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, source: torch.Tensor, *,
                 frame_offset: int = 0, gate_grad: bool = False) -> StreamOutput:
        """One training forward: the source (B, C, F, H, W) encoded with ``context``, then the target x at t;
        ``gate_grad``: also return every block's gates, still in the autograd graph."""
        stream = self.source(source, context, frame_offset=frame_offset)
        return self(x, t, context, stream, return_gates=gate_grad, gate_grad=gate_grad)

    # -- the two streams --

    def source(self, latent: torch.Tensor, context: torch.Tensor, *, placement: CachePlacement = "device",
               frame_offset: int = 0, shared: torch.Tensor | None = None, branches: int = 1) -> SourceStream:
        return SourceStream(self, latent, context, placement, frame_offset, shared, branches)

    def encode_source(self, latent: torch.Tensor, context: torch.Tensor, cache: SourceCache, *,
                      frame_offset: int = 0) -> None:
        """Run the clean source through the frozen blocks at t=0 and record every adapted block into ``cache``.

        The backbone part runs without gradients; the adapter's projections keep them (training needs them).
        Blocks after the last adapted one are not run; each block's features go to the cache as soon as they
        exist, so with the cpu placement only one block's are on the device at a time.
        """
        record = AdaptedCall(self.adapter, token_grid(latent.shape, self.backbone.config.patch_size), cache,
                             recording=True)
        with torch.no_grad():
            state = self.backbone.embed(latent, torch.zeros(latent.shape[0], device=latent.device), context,
                                        frame_offset=frame_offset)
        tokens, ctx = state.tokens, state.block_context
        for i in range(max(self.adapter.block_ids) + 1):
            with torch.no_grad():
                tokens = self.backbone.run_block(i, tokens, ctx)
            if i in self.adapter.block_ids:
                record.after_block(i, tokens, ctx.context)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, source: SourceStream, *,
                 return_gates: bool = False, gate_grad: bool = False) -> StreamOutput:
        """Velocity for the target x (B, C, F, H, W) at timesteps t (B,) or (B, F) with the adapter applied.

        ``return_gates``: each adapted block's gate maps too; ``gate_grad``: still attached to the graph."""
        if not self.attached:
            raise RuntimeError("attach() the runner (or use it as a context manager) before calling it")
        if source.latent.shape[0] * source.branches != x.shape[0] or source.latent.shape[2:] != x.shape[2:]:
            raise ValueError(f"source latent {tuple(source.latent.shape)} ({source.branches} branch(es)) does not "
                             f"match target {tuple(x.shape)} (batch, frames, height and width must agree)")
        call = AdaptedCall(self.adapter, token_grid(x.shape, self.backbone.config.patch_size), source.begin_step(),
                           timestep=t, strength=self.strength, record_gates=return_gates, gate_grad=gate_grad)
        try:
            velocity = self.backbone(x, t, context, extras={EXTRAS_KEY: call}, frame_offset=source.frame_offset)
        finally:
            source.end_step()
        return StreamOutput(velocity=velocity, gates=call.gates if return_gates else None)
