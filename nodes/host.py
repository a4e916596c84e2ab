"""ComfyUI host glue: attach the ImVideoEdit adapter to ComfyUI's own Wan model (``comfy.ldm.wan.model.WanModel``).

How it plugs in (facts checked on ComfyUI 0.3.64 and the 2026-08 main branch):
- one block-replace patch per adapted block (``patches_replace["dit"][("double_block", i)]``): it runs the frozen
  block, then PU-SDA on the block's output, or, while the source stream runs, records the source's keys/values;
- one ``DIFFUSION_MODEL`` wrapper: it finds the source latent among the model inputs (``imve_source``, a
  ``CONDRegular`` that Edit Conditioning puts on both conditionings, so ComfyUI batches it per cond/uncond and
  slices it per context window), runs the source stream once per run, window and cond (timestep 0, through the
  unwrapped forward) and hands the cache to the block patches in ``transformer_options``;
- the adapter module lives in its own ``ModelPatcher``, returned by the patches' ``models()``, so ComfyUI's memory
  manager loads and offloads it together with the backbone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension

from ..imvideoedit_core.model.adapter import ImVideoEditAdapter, SourceKV
from ..imvideoedit_core.model.adapter_file import AdapterFileInfo, check_compatible
from ..imvideoedit_core.model.config import BackboneConfig
from ..imvideoedit_core.edit.streams import CACHE_PLACEMENTS

STATE_KEY = "imvideoedit"        # transformer_options key of the per-call state
CACHE_OPTION = "imvideoedit_cache"  # transformer_options key a sampler may set to override the cache placement
SOURCE_COND = "imve_source"      # model_conds key of the source latent
SHARED_OPTION = "imvideoedit_shared"  # transformer_options key: edited keyframes (1, C, K, h, w) PU-SDA also sees
WRAPPER_KEY = "imvideoedit"


@dataclass
class AdapterHolder:
    """What the IMVE_ADAPTER socket carries: the module, its file's metadata, and its ModelPatcher."""

    adapter: ImVideoEditAdapter
    info: AdapterFileInfo
    patcher: comfy.model_patcher.ModelPatcher

    @classmethod
    def wrap(cls, adapter: ImVideoEditAdapter, info: AdapterFileInfo) -> "AdapterHolder":
        patcher = comfy.model_patcher.ModelPatcher(adapter, load_device=comfy.model_management.get_torch_device(),
                                                   offload_device=comfy.model_management.unet_offload_device())
        return cls(adapter=adapter, info=info, patcher=patcher)


@dataclass
class _CallState:
    """One forward of the diffusion model, read by the block patches."""

    recording: bool                                   # True while the source stream runs
    features: dict[int, SourceKV] = field(default_factory=dict)
    to_host: bool = False                             # recording: move each block's features to the CPU at once
    timestep: torch.Tensor | None = None              # (B,) raw timesteps in [0, 1000]
    strength: float = 1.0
    gates: dict[int, torch.Tensor] = field(default_factory=dict)
    text: torch.Tensor | None = None
    time_feat: torch.Tensor | None = None


def wan_backbone_config(diffusion_model: torch.nn.Module) -> BackboneConfig:
    """The core's description of a ComfyUI WanModel; refuses anything that is not a Wan 2.1 text-to-video model."""
    name = type(diffusion_model).__name__
    if name != "WanModel" or getattr(diffusion_model, "model_type", None) != "t2v":
        kind = getattr(diffusion_model, "model_type", None)
        raise ValueError(f"ImVideoEdit needs a Wan 2.1 text-to-video model; this MODEL is {name}"
                         + (f" ({kind})" if kind else "") + ". Load a Wan 2.1 T2V checkpoint (e.g. "
                         "wan2.1_t2v_1.3B) with Load Diffusion Model")
    dim = diffusion_model.dim
    return BackboneConfig(dim=dim, ffn_dim=diffusion_model.blocks[0].ffn[0].out_features,
                          freq_dim=diffusion_model.freq_dim, text_dim=diffusion_model.text_embedding[0].in_features,
                          num_heads=diffusion_model.num_heads, num_layers=len(diffusion_model.blocks),
                          in_dim=diffusion_model.patch_embedding.in_channels, out_dim=diffusion_model.out_dim,
                          patch_size=tuple(diffusion_model.patch_size))


class BlockPatch:
    """Replaces block ``index``: the frozen block, then PU-SDA (or, for the source stream, recording)."""

    def __init__(self, index: int, holder: AdapterHolder):
        self.index = index
        self.holder = holder

    def __call__(self, args: dict, extra: dict) -> dict:
        out = extra["original_block"](args)
        options = args["transformer_options"]
        state: _CallState | None = options.get(STATE_KEY)
        if state is None:
            return out
        block = self.holder.adapter.block(self.index)
        grid = tuple(int(g) for g in options["grid_sizes"])
        x = out["img"]                                                   # (B, F*H*W, dim)
        if state.recording:
            kv = block.source_features(x, grid)
            state.features[self.index] = kv.to("cpu") if state.to_host else kv
            return out
        if state.text is None:
            state.text = self.holder.adapter.text_summary(args["txt"])
            state.time_feat = self.holder.adapter.time_features(state.timestep.to(x.device))
        features = state.features[self.index].to(x.device, non_blocking=True)  # one block at a time from the cache
        step = block(x, features, text=state.text, time_feat=state.time_feat, grid=grid, strength=state.strength)
        state.gates[self.index] = step.gate
        return {**out, "img": step.tokens}

    def to(self, device_or_dtype) -> "BlockPatch":
        return self  # the adapter moves with its own ModelPatcher (models())

    def models(self) -> list:
        return [self.holder.patcher]


@dataclass
class GateLog:
    """Mean gate of the conditional branch over steps and blocks, per latent frame, for the last run."""

    run: object = None
    total: torch.Tensor | None = None   # (F, h, w) summed
    count: torch.Tensor | None = None   # (F, 1, 1) number of contributions per frame

    def add(self, run: object, gate: torch.Tensor, frames: list[int], length: int) -> None:
        """gate (F_window, h, w) for the latent frames ``frames`` of a clip ``length`` frames long."""
        if run is not self.run or self.total is None or self.total.shape[0] != length:
            self.run = run
            self.total = torch.zeros(length, *gate.shape[1:])
            self.count = torch.zeros(length, 1, 1)
        index = torch.tensor(frames)
        self.total.index_add_(0, index, gate.float().cpu())
        self.count.index_add_(0, index, torch.ones(len(frames), 1, 1))

    def mean(self) -> torch.Tensor | None:
        return None if self.total is None else self.total / self.count.clamp(min=1)


class SourceStreamWrapper:
    """The DIFFUSION_MODEL wrapper: source stream once per run/window/cond, then the adapted target forward."""

    def __init__(self, holder: AdapterHolder, *, strength: float, cache: str, process_latent_in):
        if cache not in CACHE_PLACEMENTS:
            raise ValueError(f"unknown source cache placement {cache!r}; choose one of {CACHE_PLACEMENTS}")
        self.holder = holder
        self.strength = strength
        self.cache = cache
        self.process_latent_in = process_latent_in
        self.gate_log = GateLog()
        self._run: object = None
        self._cache: dict[tuple, dict[int, SourceKV]] = {}

    def _key(self, options: dict, source: torch.Tensor) -> tuple:
        window = options.get("context_window")
        frames = tuple(window.index_list) if window is not None else ()
        anchor = getattr(window, "causal_anchor_index", None) if window is not None else None
        uuids = tuple(str(u) for u in options.get("uuids", ()))
        return uuids, frames, anchor, tuple(source.shape)

    def _source_features(self, executor, source, context, clip_fea, time_dim_concat, options, kwargs):
        run = options.get("sample_sigmas")
        if run is not self._run:  # a new sampling run: drop the previous run's cache
            self._run, self._cache = run, {}
        placement = options.get(CACHE_OPTION, self.cache)
        shared = options.get(SHARED_OPTION)
        key = self._key(options, source) + (None if shared is None else id(shared),)
        if placement != "off" and key in self._cache:
            return self._cache[key]

        def record(latent: torch.Tensor) -> dict[int, SourceKV]:
            state = _CallState(recording=True, to_host=placement == "cpu")
            zeros = torch.zeros(latent.shape[0], device=latent.device)
            with torch.no_grad():
                executor.original(self.process_latent_in(latent), zeros, context, clip_fea, time_dim_concat,
                                  {**options, STATE_KEY: state}, **kwargs)  # the unwrapped forward
            return state.features

        features = record(source)
        if shared is not None:  # keyframe sharing: every frame also attends to the edited keyframes
            batch = source.shape[0]
            extra = record(shared.to(source).repeat(batch, 1, 1, 1, 1))
            features = {i: kv.with_shared(extra[i], batch=batch) for i, kv in features.items()}
        if placement != "off":
            self._cache[key] = features
        return features

    def __call__(self, executor, x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs):
        source = kwargs.get(SOURCE_COND)
        if source is None:  # not an edit (no Edit Conditioning): the plain model
            return executor(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)
        if source.shape[2:] != x.shape[2:] or source.shape[0] != x.shape[0]:
            raise ValueError(f"the source latent {tuple(source.shape)} does not match the latent being sampled "
                             f"{tuple(x.shape)}: feed the LATENT from IMVE Edit Conditioning to the sampler")
        features = self._source_features(executor, source, context, clip_fea, time_dim_concat,
                                         transformer_options, kwargs)
        state = _CallState(recording=False, features=features, timestep=timestep.flatten()[: x.shape[0]],
                           strength=self.strength)
        out = executor(x, timestep, context, clip_fea, time_dim_concat, {**transformer_options, STATE_KEY: state},
                       **kwargs)
        self._log_gates(state, transformer_options, x)
        return out

    def _log_gates(self, state: _CallState, options: dict, x: torch.Tensor) -> None:
        if not state.gates:
            return
        gate = torch.stack([g.float() for g in state.gates.values()]).mean(0)   # (B, F, h, w)
        branches = list(options.get("cond_or_uncond", [0]))
        per_branch = gate.shape[0] // max(len(branches), 1)
        conditional = [gate[i * per_branch:(i + 1) * per_branch] for i, b in enumerate(branches) if b == 0]
        if not conditional:
            return
        window = options.get("context_window")
        frames = list(range(x.shape[2]))
        length = x.shape[2]
        if window is not None:
            anchor = getattr(window, "causal_anchor_index", None)
            frames = ([anchor] if anchor is not None and anchor >= 0 else []) + list(window.index_list)
            length = window.total_frames
        self.gate_log.add(options.get("sample_sigmas"), torch.cat(conditional).mean(0), frames, length)


def apply_adapter(model, holder: AdapterHolder, *, strength: float, cache: str,
                  blocks: tuple[int, ...] | None = None):
    """A patched clone of a ComfyUI MODEL (ModelPatcher holding Wan 2.1 T2V); the input MODEL is untouched.

    ``blocks``: the adapter blocks to use (default: all of them).
    """
    check_compatible(holder.info, wan_backbone_config(model.model.diffusion_model))
    patched = model.clone()
    for index in blocks if blocks is not None else holder.adapter.block_ids:
        patched.set_model_patch_replace(BlockPatch(index, holder), "dit", "double_block", index)
    wrapper = SourceStreamWrapper(holder, strength=strength, cache=cache,
                                  process_latent_in=model.model.process_latent_in)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, wrapper)
    return patched


def find_wrapper(model) -> SourceStreamWrapper:
    """The ImVideoEdit wrapper of a MODEL patched by Apply Adapter (for the gate maps of its last run)."""
    for wrapper in model.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY):
        if isinstance(wrapper, SourceStreamWrapper):
            return wrapper
    raise ValueError("this MODEL carries no ImVideoEdit adapter: connect the MODEL output of IMVE Apply Adapter")
