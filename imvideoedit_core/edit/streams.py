"""The two-stream runner: the one place that knows how the adapter wraps the frozen blocks.

The target stream (the noisy edited latent at timestep t) runs through the backbone as usual; forward hooks on
the adapted blocks apply PU-SDA to each block's output. The source stream (the clean source latent at t=0,
same context) runs through the same frozen blocks once per run: its per-block keys and values are cached
(:class:`SourceStream`) and reused at every sampling step. Neither stream's 3D self-attention sees the other.
Attaching registers hooks on the backbone instance; :meth:`TwoStreamRunner.detach` removes them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

from ..model.adapter import ImVideoEditAdapter, SourceKV
from ..model.backbone import BlockContext, WanDiT

CachePlacement = Literal["device", "cpu", "off"]
CACHE_PLACEMENTS = ("device", "cpu", "off")


@dataclass
class StreamOutput:
    velocity: torch.Tensor                  # (B, C, F, H, W)
    gates: dict[int, torch.Tensor] | None   # block -> (B, F', H', W') gate maps, when asked for


class SourceStream:
    """A source latent and its context seen through the frozen blocks at t=0, as PU-SDA keys/values per block.

    placement: ``device`` keeps the features where the model runs; ``cpu`` keeps them in host memory and copies
    each block's features in just before use (prefetching the next block's); ``off`` recomputes them at every
    call (no memory, one extra backbone pass per step).

    shared: an optional clean latent (B, C, K, H, W) of already edited keyframes; its keys/values are appended to
    every frame's, so PU-SDA of every frame also attends to the edited keyframes (keyframe attention sharing).

    branches: how many guidance branches read these features (the target batch is ``branches`` x B, branch-major);
    the source is encoded once, with ``context``, and the same features serve every branch (half the cache and
    half the encoding of one encoding per branch).
    """

    def __init__(self, runner: "TwoStreamRunner", latent: torch.Tensor, context: torch.Tensor,
                 placement: CachePlacement = "device", frame_offset: int = 0, shared: torch.Tensor | None = None,
                 branches: int = 1):
        if placement not in CACHE_PLACEMENTS:
            raise ValueError(f"unknown source cache placement {placement!r}; choose one of {CACHE_PLACEMENTS}")
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
        self.grid: tuple[int, int, int] | None = None
        self._cache: dict[int, SourceKV] | None = None
        self._prefetched: dict[int, SourceKV] = {}

    def _to_host(self, kv: SourceKV) -> SourceKV:
        """Move one block's features to host memory (pinned when they came from a GPU, for async copies back)."""
        return kv.to("cpu").pin_memory() if self.latent.is_cuda else kv.to("cpu")

    def begin_step(self) -> None:
        """Called once per target forward: fills the cache on first use, or recomputes when it is off."""
        if self.placement == "off" or self._cache is None:
            store = self._to_host if self.placement == "cpu" else None  # block by block: no device-side peak
            self._cache, self.grid = self.runner.encode_source(self.latent, self.context, store=store,
                                                               frame_offset=self.frame_offset)
            if self.shared is not None:
                shared, _ = self.runner.encode_source(self.shared, self.context)
                batch = self.latent.shape[0]
                self._cache = {i: kv.with_shared(shared[i], batch=batch) for i, kv in self._cache.items()}
                if store is not None:
                    self._cache = {i: store(kv) for i, kv in self._cache.items()}

    def end_step(self) -> None:
        """Called after each target forward: with the cache off, nothing is kept between steps."""
        if self.placement == "off":
            self._cache = None
        self._prefetched.clear()

    def features(self, block: int, device: torch.device) -> SourceKV:
        if self._cache is None:
            raise RuntimeError("SourceStream.begin_step() must run before the blocks read the source")
        if self.placement != "cpu":
            return self._cache[block].repeat_batch(self.branches)
        kv = self._prefetched.pop(block, None) or self._cache[block].to(device, non_blocking=True)
        later = [i for i in self._cache if i > block]
        if later:  # start copying the next block's features while this block computes
            self._prefetched[later[0]] = self._cache[later[0]].to(device, non_blocking=True)
        return kv.repeat_batch(self.branches)

    def cache_bytes(self) -> int:
        if self._cache is None:
            return 0
        return sum(kv.k.nbytes + kv.v.nbytes for kv in self._cache.values())


EXTRAS_KEY = "imvideoedit"


@dataclass
class _Active:
    """State of one target forward, handed to the block hooks in ``BlockContext.extras``."""

    source: SourceStream
    strength: float
    record_gates: bool
    gate_grad: bool = False                # keep the recorded gates in the autograd graph (the gate loss)
    text: torch.Tensor | None = None       # (B, D) pooled context, computed at the first hook
    time_feat: torch.Tensor | None = None  # (B, T)
    gates: dict[int, torch.Tensor] = field(default_factory=dict)


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
        if self.adapter.ffn_lora is not None:
            for key, pair in self.adapter.ffn_lora.layers.items():
                block, layer = key.split("_")
                linear = self.backbone.blocks[int(block)].ffn[int(layer)]
                self._handles.append(linear.register_forward_hook(
                    lambda mod, args, out, pair=pair: out + pair(args[0]).to(out.dtype)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "TwoStreamRunner":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def _block_hook(self, index: int):
        def hook(module, args, output):
            ctx: BlockContext = args[1]
            active: _Active | None = ctx.extras.get(EXTRAS_KEY)
            if active is None:  # the source stream, or the plain backbone
                return None
            if active.text is None:
                active.text = self.adapter.text_summary(ctx.context)
                active.time_feat = self.adapter.time_features(ctx.timestep)
            step = self.adapter.block(index)(
                output, active.source.features(index, output.device), text=active.text,
                time_feat=active.time_feat, grid=ctx.grid, strength=active.strength)
            if active.record_gates:
                active.gates[index] = step.gate if active.gate_grad else step.gate.detach()
            return step.tokens
        return hook

    # -- the two streams --

    def source(self, latent: torch.Tensor, context: torch.Tensor, *, placement: CachePlacement = "device",
               frame_offset: int = 0, shared: torch.Tensor | None = None, branches: int = 1) -> SourceStream:
        return SourceStream(self, latent, context, placement, frame_offset, shared, branches)

    def encode_source(self, latent: torch.Tensor, context: torch.Tensor, *,
                      store: Callable[[SourceKV], SourceKV] | None = None, frame_offset: int = 0
                      ) -> tuple[dict[int, SourceKV], tuple[int, int, int]]:
        """Run the clean source through the frozen blocks at t=0 and project it for every adapted block.

        The backbone part runs without gradients; the adapter's projections keep them (training needs them).
        Each block's output is projected as soon as it exists and handed to ``store`` (e.g. a move to host
        memory), so only one block output is held at a time.
        """
        features: dict[int, SourceKV] = {}
        with torch.no_grad():
            state = self.backbone.embed(latent, torch.zeros(latent.shape[0], device=latent.device), context,
                                        frame_offset=frame_offset)
        tokens, ctx = state.tokens, state.block_context
        for i in range(max(self.adapter.block_ids) + 1):
            with torch.no_grad():
                tokens = self.backbone.run_block(i, tokens, ctx)
            if i in self.adapter.block_ids:
                kv = self.adapter.block(i).source_features(tokens, ctx.grid)
                features[i] = store(kv) if store is not None else kv
        return features, ctx.grid

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, source: SourceStream, *,
                 return_gates: bool = False, gate_grad: bool = False) -> StreamOutput:
        """Velocity for the target x (B, C, F, H, W) at timesteps t (B,) with the adapter applied.

        ``return_gates``: each adapted block's gate maps too; ``gate_grad``: still attached to the graph."""
        if not self.attached:
            raise RuntimeError("attach() the runner (or use it as a context manager) before calling it")
        if source.latent.shape[0] * source.branches != x.shape[0] or source.latent.shape[2:] != x.shape[2:]:
            raise ValueError(f"source latent {tuple(source.latent.shape)} ({source.branches} branch(es)) does not "
                             f"match target {tuple(x.shape)} (batch, frames, height and width must agree)")
        source.begin_step()
        active = _Active(source=source, strength=self.strength, record_gates=return_gates, gate_grad=gate_grad)
        try:
            velocity = self.backbone(x, t, context, extras={EXTRAS_KEY: active}, frame_offset=source.frame_offset)
        finally:
            source.end_step()
        return StreamOutput(velocity=velocity, gates=active.gates if return_gates else None)
