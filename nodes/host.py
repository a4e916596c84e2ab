"""ComfyUI host glue: bind the core's two-stream runtime to ComfyUI's own Wan model (``comfy.ldm.wan.model.WanModel``).

How it plugs in (facts checked on the 2026-08 main branch; the lowest version is in pyproject.toml):
- one block-replace patch per adapted block (``patches_replace["dit"][("double_block", i)]``): it runs the frozen
  block, then hands its output to the core's ``AdaptedCall`` (PU-SDA, or recording the source's keys/values);
- one ``DIFFUSION_MODEL`` wrapper: it finds the source latent among the model inputs (``imve_source``, a
  ``CONDRegular`` that Edit Conditioning puts on both conditionings, so ComfyUI batches it per cond/uncond and
  slices it per context window), runs the source stream once per run, window and cond (once per run and window
  with a shared source encoding; timestep 0, through the unwrapped forward) into a core ``SourceCache`` and hands
  an ``AdaptedCall`` to the block patches in ``transformer_options``. The token grid comes from the latent's
  shape, the gate's length from the frames seen;
- the adapter module lives in its own ``ModelPatcher``, returned by the patches' ``models()``, so ComfyUI's memory
  manager loads and offloads it together with the backbone;
- an adapter's FFN LoRA is the core's forward hooks on the model's FFN linears, attached only while an edit's
  forward runs (or for a whole training run), so the same MODEL elsewhere, and its stored weights, stay untouched;
- training and tuning (``ComfyAdaptedModel``) call the patched model's own ``apply_model`` with gradients on, under
  ComfyUI's ``in_training`` switch (differentiable kernels), so no second backbone is built.
"""

from __future__ import annotations

import copy
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterator

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension

from ..imvideoedit_core.model.adapter import ImVideoEditAdapter, ffn_lora_applied
from ..imvideoedit_core.model.adapter_file import AdapterFileInfo, check_compatible
from ..imvideoedit_core.model.config import WAN21_FAMILY, WAN22_A14B_FAMILY, WAN22_TI2V_FAMILY, BackboneConfig
from ..imvideoedit_core.model.wan_strides import VAE_SPATIAL_STRIDE, size_multiple
from ..imvideoedit_core.edit.streams import (AdaptedCall, GateAverage, SourceCache, StreamOutput, check_placement,
                                             mean_over_blocks, token_grid)

STATE_KEY = "imvideoedit"        # transformer_options key of the per-call state
CACHE_OPTION = "imvideoedit_cache"  # transformer_options key a sampler may set to override the cache placement
SOURCE_COND = "imve_source"      # model_conds key of the source latent
SHARED_OPTION = "imvideoedit_shared"  # transformer_options key: edited keyframes (1, C, K, h, w) PU-SDA also sees
WRAPPER_KEY = "imvideoedit"
TRAINING_OPTION = "imvideoedit_training"  # transformer_options key of a training forward (TrainingForward)
EXPERT_OPTION = "imvideoedit_expert"  # transformer_options key: the A14B expert a MODEL was marked as
WAN21_LATENT_CHANNELS = 16       # the Wan 2.1 VAE's (Wan 2.1 T2V, the Wan 2.2 A14B experts)
WAN22_LATENT_CHANNELS = 48       # the Wan 2.2 VAE's (TI2V 5B)
I2V_INPUT_CHANNELS = 36          # image-to-video: 16 latent + 4 mask + 16 image channels
LOAD_INSTEAD = ("Load a Wan text-to-video model with Load Diffusion Model (or Unet Loader (GGUF)): Wan 2.1 T2V "
                "1.3B or 14B, Wan 2.2 TI2V 5B, or a Wan 2.2 T2V A14B expert marked with IMVE Wan 2.2 Expert")


@dataclass
class TrainingForward:
    """Set by the training binding on one forward: the wrapper hands back the gates (in the graph on request)."""

    gate_grad: bool = False
    gates: dict[int, torch.Tensor] | None = None


@dataclass
class AdapterHolder:
    """What the IMVE_ADAPTER socket carries: the module, its file's metadata, and its ModelPatcher."""

    adapter: ImVideoEditAdapter
    info: AdapterFileInfo
    patcher: comfy.model_patcher.ModelPatcher
    _casts: dict = field(default_factory=dict, repr=False)  # dtype -> AdapterHolder, made once each

    @classmethod
    def wrap(cls, adapter: ImVideoEditAdapter, info: AdapterFileInfo) -> "AdapterHolder":
        patcher = comfy.model_patcher.ModelPatcher(adapter, load_device=comfy.model_management.get_torch_device(),
                                                   offload_device=comfy.model_management.unet_offload_device())
        return cls(adapter=adapter, info=info, patcher=patcher)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.adapter.parameters()).dtype

    def in_dtype(self, dtype: torch.dtype) -> "AdapterHolder":
        """The adapter computing (and caching the source) in ``dtype``: this holder, or a cast copy made once."""
        if dtype == self.dtype:
            return self
        if dtype not in self._casts:
            self._casts[dtype] = AdapterHolder.wrap(copy.deepcopy(self.adapter).to(dtype), self.info)
        return self._casts[dtype]


def compute_dtype(model) -> torch.dtype:
    """The dtype a ComfyUI MODEL computes in: its manual-cast dtype for fp8 (or other stored-only) weights,
    else its weights' dtype (bf16/fp16 on GPUs; float32 on a CPU)."""
    return getattr(model.model, "manual_cast_dtype", None) or model.model.get_dtype()


def wan_backbone_config(diffusion_model: torch.nn.Module, *, expert: str = "") -> BackboneConfig:
    """The core's description of a ComfyUI WanModel: Wan 2.1 T2V, Wan 2.2 TI2V 5B (48 latent channels), or, when
    ``expert`` is "high" or "low", one expert of Wan 2.2 T2V A14B (its shapes are Wan 2.1 14B's, so only the user
    can say so). Refuses every other model by name, with what to load instead."""
    name = type(diffusion_model).__name__
    kind = getattr(diffusion_model, "model_type", None)
    if name != "WanModel" or kind not in ("t2v", "i2v"):
        raise ValueError(f"ImVideoEdit needs a Wan text-to-video model; this MODEL is {name}"
                         + (f" ({kind})" if kind else "") + f". {LOAD_INSTEAD}")
    channels = (diffusion_model.patch_embedding.in_channels, diffusion_model.out_dim)
    if kind == "i2v" or channels == (I2V_INPUT_CHANNELS, WAN21_LATENT_CHANNELS):
        raise ValueError(f"this MODEL is a Wan image-to-video model ({kind}, {channels[0]} input channels: Wan 2.1 I2V "
                         "14B or Wan 2.2 I2V A14B); ImVideoEdit edits with text-to-video models, whose input is "
                         "the video latent alone. For an edit guided by an edited first frame, load Wan 2.2 TI2V 5B "
                         "(connect the frame to IMVE Edit Conditioning's first_frame) or a Wan 2.1 T2V model with "
                         f"IMVE Tune On Keyframe. {LOAD_INSTEAD}")
    if channels == (WAN22_LATENT_CHANNELS, WAN22_LATENT_CHANNELS):
        family = WAN22_TI2V_FAMILY
        if expert:
            raise ValueError("this MODEL is Wan 2.2 TI2V 5B (48 latent channels), a single model: only the two "
                             "experts of Wan 2.2 T2V A14B are marked high-noise or low-noise; remove IMVE Wan 2.2 "
                             "Expert")
    elif channels == (WAN21_LATENT_CHANNELS, WAN21_LATENT_CHANNELS):
        family = WAN22_A14B_FAMILY if expert else WAN21_FAMILY
    else:
        raise ValueError(f"ImVideoEdit needs a Wan text-to-video model with 16 or 48 latent channels; this MODEL is a "
                         f"WanModel {kind} with {channels[0]} input and {channels[1]} output channels. "
                         f"{LOAD_INSTEAD}")
    return BackboneConfig(dim=diffusion_model.dim, ffn_dim=diffusion_model.blocks[0].ffn[0].out_features,
                          freq_dim=diffusion_model.freq_dim, text_dim=diffusion_model.text_embedding[0].in_features,
                          num_heads=diffusion_model.num_heads, num_layers=len(diffusion_model.blocks),
                          in_dim=channels[0], out_dim=channels[1], patch_size=tuple(diffusion_model.patch_size),
                          family=family, expert=expert)


def model_expert(model) -> str:
    """The A14B expert a MODEL was marked as by IMVE Wan 2.2 Expert ("high" or "low"), or "" if unmarked."""
    return model.model_options.get("transformer_options", {}).get(EXPERT_OPTION, "")


def backbone_config_of(model) -> BackboneConfig:
    """The core's description of a ComfyUI MODEL (ModelPatcher), its expert mark included."""
    return wan_backbone_config(model.model.diffusion_model, expert=model_expert(model))


def mark_expert(model, expert: str):
    """A clone of MODEL marked as the A14B ``expert`` ("high" or "low"); checked to be 14B-shaped T2V."""
    if expert not in ("high", "low"):
        raise ValueError(f"expert {expert!r}: choose 'high' (the high-noise expert) or 'low' (the low-noise expert)")
    wan_backbone_config(model.model.diffusion_model, expert=expert)
    marked = model.clone()
    marked.model_options.setdefault("transformer_options", {})[EXPERT_OPTION] = expert
    return marked


def latent_spatial_stride(model) -> int:
    """Pixels per latent pixel, per side, of the latent space a MODEL samples in (8: Wan 2.1 VAE, 16: Wan 2.2)."""
    return int(getattr(model.model.latent_format, "spacial_downscale_ratio", VAE_SPATIAL_STRIDE))


def vae_size_multiple(vae) -> int:
    """What frame sides must be a multiple of for this VAE (16: Wan 2.1's, 32: Wan 2.2's), read from the VAE."""
    stride = getattr(vae, "spacial_compression_encode", None)
    return size_multiple(stride() if stride is not None else VAE_SPATIAL_STRIDE)


class BlockPatch:
    """Replaces block ``index``: the frozen block, then the core's AdaptedCall (PU-SDA, or source recording)."""

    def __init__(self, index: int, holder: AdapterHolder):
        self.index = index
        self.holder = holder

    def __call__(self, args: dict, extra: dict) -> dict:
        call: AdaptedCall | None = args["transformer_options"].get(STATE_KEY)
        # the source stream's frozen block (FFN LoRA included) keeps no graph, as in the core's encode_source;
        # only the adapter's projections of its output learn
        recording = call is not None and call.recording
        with torch.no_grad() if recording else nullcontext():
            out = extra["original_block"](args)
        if call is None:
            return out
        return {**out, "img": call.after_block(self.index, out["img"], args["txt"])}

    def to(self, device_or_dtype) -> "BlockPatch":
        return self  # the adapter moves with its own ModelPatcher (models())

    def models(self) -> list:
        return [self.holder.patcher]


def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)


@contextmanager
def checkpointed_blocks(blocks: torch.nn.ModuleList) -> Iterator[None]:
    """Gradient checkpointing of every block of ComfyUI's Wan while gradients are on: a block keeps no activations
    for backward and is recomputed there (less memory, one more forward per step), as the core's backbone does.

    Done on the block modules themselves, not through the block-replace patch's ``original_block``: ComfyUI's Wan
    builds that closure over its loop variable, so calling it again from backward, after the loop, runs the *last*
    block (silently wrong gradients for every adapter before it)."""
    saved = [block.__dict__.get("forward") for block in blocks]
    for block in blocks:
        block.forward = partial(_checkpointed, block.forward)
    try:
        yield
    finally:
        for block, forward in zip(blocks, saved):
            if forward is None:
                del block.forward  # the class's forward again
            else:
                block.forward = forward


class SourceStreamWrapper:
    """The DIFFUSION_MODEL wrapper: source stream once per run/window/cond, then the adapted target forward."""

    def __init__(self, holder: AdapterHolder, *, strength: float, cache: str, process_latent_in,
                 patch_size: tuple[int, int, int], share_source: bool = False):
        check_placement(cache)
        self.holder = holder
        self.strength = strength
        self.cache = cache
        self.share_source = share_source  # one source encoding, with the instruction, for every guidance branch
        self.process_latent_in = process_latent_in
        self.patch_size = patch_size
        self.gates = GateAverage()          # the conditional branch's gate maps of the last run
        self._run: object = None
        self._caches: dict[tuple, SourceCache] = {}

    def _new_run(self, options: dict) -> None:
        run = options.get("sample_sigmas")
        if run is not self._run:  # a new sampling run: drop the previous run's caches and gates
            self._run, self._caches, self.gates = run, {}, GateAverage()

    def release(self) -> None:
        """Drop the source caches (the gates of the run stay for Gate Mask): called when a sampling run ends, so
        an A14B expert whose part of the schedule is done holds no memory while the other one samples."""
        self._caches = {}

    def _key(self, options: dict, source: torch.Tensor, shared) -> tuple:
        window = options.get("context_window")
        frames = tuple(window.index_list) if window is not None else ()
        anchor = getattr(window, "causal_anchor_index", None) if window is not None else None
        uuids = () if self.share_source else tuple(str(u) for u in options.get("uuids", ()))  # one per cond
        return uuids, frames, anchor, tuple(source.shape), None if shared is None else id(shared)

    def _source_cache(self, executor, source, context, clip_fea, time_dim_concat, options, kwargs) -> SourceCache:
        branches = len(options.get("cond_or_uncond", [0])) if self.share_source else 1
        if branches > 1:  # encode the instruction's branch only (ComfyUI runs the positive cond first)
            order = list(options["cond_or_uncond"])
            pick = order.index(0) if 0 in order else 0
            source, context, clip_fea, time_dim_concat = (branch_chunk(v, pick, branches)
                                                          for v in (source, context, clip_fea, time_dim_concat))
            kwargs = {name: branch_chunk(v, pick, branches) for name, v in kwargs.items()}
        return self._encoded_source(executor, source, context, clip_fea, time_dim_concat, options,
                                    kwargs).for_branches(branches)

    def _encoded_source(self, executor, source, context, clip_fea, time_dim_concat, options,
                        kwargs) -> SourceCache:
        placement = options.get(CACHE_OPTION, self.cache)
        shared = options.get(SHARED_OPTION)
        key = self._key(options, source, shared)
        if placement != "off" and key in self._caches:
            return self._caches[key]

        def record(latent: torch.Tensor, into: SourceCache) -> SourceCache:
            call = AdaptedCall(self.holder.adapter, token_grid(latent.shape, self.patch_size), into, recording=True)
            zeros = torch.zeros(latent.shape[0], device=latent.device)
            # the unwrapped forward; a training forward keeps a graph for the adapter's projections only (nothing
            # of the frozen backbone requires gradients); sampling keeps none, whatever the caller's grad mode
            with torch.set_grad_enabled(torch.is_grad_enabled() and TRAINING_OPTION in options):
                executor.original(self.process_latent_in(latent), zeros, context, clip_fea, time_dim_concat,
                                  {**options, STATE_KEY: call}, **kwargs)
            return into

        cache = record(source, SourceCache(placement))
        if shared is not None:  # keyframe sharing: every frame also attends to the edited keyframes
            batch = source.shape[0]
            cache.add_shared(record(shared.to(source).repeat(batch, 1, 1, 1, 1), SourceCache("device")), batch=batch)
        if placement != "off":
            self._caches[key] = cache
        return cache

    def __call__(self, executor, x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs):
        source = kwargs.get(SOURCE_COND)
        if source is None:  # not an edit (no Edit Conditioning): the plain model
            return executor(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)
        if source.shape[2:] != x.shape[2:] or source.shape[0] != x.shape[0]:
            raise ValueError(f"the source latent {tuple(source.shape)} does not match the latent being sampled "
                             f"{tuple(x.shape)}: feed the LATENT from IMVE Edit Conditioning to the sampler")
        self._new_run(transformer_options)
        timestep = whole_frame_timesteps(timestep, transformer_options.get("sigmas"))
        training: TrainingForward | None = transformer_options.get(TRAINING_OPTION)
        # the FFN LoRA (if the adapter has one) acts on this model's forwards only while this edit runs; training
        # attaches it for its whole run instead (a checkpointed block is recomputed in backward, after this returns)
        lora = self.holder.adapter.ffn_lora if training is None else None
        with ffn_lora_applied(executor.class_obj.blocks, lora, strength=self.strength):
            cache = self._source_cache(executor, source, context, clip_fea, time_dim_concat, transformer_options,
                                       kwargs)
            call = AdaptedCall(self.holder.adapter, token_grid(x.shape, self.patch_size), cache,
                               timestep=timestep if timestep.ndim == 2 else timestep.flatten()[: x.shape[0]],
                               strength=self.strength, record_gates=True,
                               gate_grad=training is not None and training.gate_grad)
            try:
                out = executor(x, timestep, context, clip_fea, time_dim_concat,
                               {**transformer_options, STATE_KEY: call}, **kwargs)
            finally:
                cache.end_step()
        if training is not None:
            training.gates = call.gates
        else:
            self._log_gates(call, transformer_options)
        return out

    def _log_gates(self, call: AdaptedCall, options: dict) -> None:
        """The conditional chunks' gates, averaged, at the latent frames this forward covered."""
        if not call.gates:
            return
        gate = mean_over_blocks(call.gates)                              # (B, F, h, w), chunks branch-major
        branches = list(options.get("cond_or_uncond", [0]))
        chunks = gate.chunk(max(len(branches), 1))
        conditional = [chunk for chunk, b in zip(chunks, branches) if b == 0]
        if not conditional:
            return
        window = options.get("context_window")
        frames = None
        if window is not None:
            anchor = getattr(window, "causal_anchor_index", None)
            frames = ([anchor] if anchor is not None and anchor >= 0 else []) + list(window.index_list)
        self.gates.add(torch.cat(conditional).mean(0, keepdim=True).cpu(), frames)


FLOW_TIMESTEPS = 1000.0  # Wan's flow models: timestep = 1000 * sigma (ComfyUI's ModelSamplingDiscreteFlow)


def whole_frame_timesteps(timestep: torch.Tensor, sigmas: torch.Tensor | None) -> torch.Tensor:
    """ComfyUI's WAN22 (TI2V 5B) gives each latent frame the sampling timestep scaled by the share of the frame
    being denoised (the noise mask's mean over it): right for whole frames (the clean first frame at 0), wrong for a
    spatial edit mask, which would lower a partly edited frame's timestep. Frames with anything to denoise get the
    sampling timestep back; frames kept whole stay at 0. timestep (B,) or (B, F); sigmas (B,)."""
    if timestep.ndim != 2 or sigmas is None:
        return timestep
    full = (sigmas.reshape(-1)[: timestep.shape[0]] * FLOW_TIMESTEPS).to(timestep)           # (B,)
    return torch.where(timestep > 0, full[:, None].expand_as(timestep), timestep)


class RunEnd:
    """The OUTER_SAMPLE wrapper: one sampling run (a KSampler, or one KSamplerAdvanced pass of an expert pair),
    then the source caches of that run are released."""

    def __init__(self, wrapper: SourceStreamWrapper):
        self.wrapper = wrapper

    def __call__(self, executor, *args, **kwargs):
        try:
            return executor(*args, **kwargs)
        finally:
            self.wrapper.release()


def branch_chunk(value, index: int, branches: int):
    """Guidance branch ``index``'s part of a model input that ComfyUI batched over ``branches`` branches
    (branch-major); anything else (None, options) unchanged."""
    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] % branches == 0:
        return value.chunk(branches)[index]
    return value


def apply_adapter(model, holder: AdapterHolder, *, strength: float, cache: str,
                  blocks: tuple[int, ...] | None = None, in_model_dtype: bool = True, share_source: bool = False):
    """A patched clone of a ComfyUI MODEL (ModelPatcher holding a Wan T2V model); the input MODEL is untouched.

    ``blocks``: the adapter blocks to use (default: all of them); ``in_model_dtype``: the adapter computes and
    caches in the model's compute dtype (a cast copy when the file's differs); training keeps its float32 adapter
    instead; ``share_source``: one source encoding, with the instruction, serves both guidance branches (half the
    source cache and encoding). An adapter's FFN LoRA acts on the model's FFNs while an edit runs."""
    check_compatible(holder.info, backbone_config_of(model))
    if in_model_dtype:
        holder = holder.in_dtype(compute_dtype(model))
    patched = model.clone()
    for index in blocks if blocks is not None else holder.adapter.block_ids:
        patched.set_model_patch_replace(BlockPatch(index, holder), "dit", "double_block", index)
    wrapper = SourceStreamWrapper(holder, strength=strength, cache=cache,
                                  process_latent_in=model.model.process_latent_in,
                                  patch_size=tuple(model.model.diffusion_model.patch_size),
                                  share_source=share_source)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, wrapper)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, RunEnd(wrapper))
    return patched


def find_wrapper(model) -> SourceStreamWrapper:
    """The ImVideoEdit wrapper of a MODEL patched by Apply Adapter (for the gate maps of its last run)."""
    for wrapper in model.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY):
        if isinstance(wrapper, SourceStreamWrapper):
            return wrapper
    raise ValueError("this MODEL carries no ImVideoEdit adapter: connect the MODEL output of IMVE Apply Adapter")


class ComfyAdaptedModel:
    """Training and tuning through ComfyUI's loaded MODEL (the core trainer's ``AdaptedModel``).

    The velocity is ComfyUI's own forward of the patched model: its weights in whatever storage ComfyUI loaded
    (bf16, fp16, fp8, scaled fp8), its LoRA patches, its low-VRAM loading and offload. No second copy of the
    backbone exists; only the adapter is trained. The source goes through the same Apply Adapter patches as in
    sampling (cache off: encoded anew for every batch, with gradients on the adapter's projections).
    """

    def __init__(self, model, adapter: ImVideoEditAdapter):
        self.adapter = adapter
        self.holder = AdapterHolder.wrap(adapter, AdapterFileInfo(path=Path("<training>"),
                                                                  adapter_config=adapter.config,
                                                                  backbone_config=adapter.backbone_config))
        self.patched = apply_adapter(model, self.holder, strength=1.0, cache="off", in_model_dtype=False)

    @property
    def device(self) -> torch.device:
        return self.patched.load_device

    @contextmanager
    def training(self, *, gradient_checkpointing: bool = False) -> Iterator[None]:
        """Loads the MODEL and the adapter as ComfyUI's memory manager decides; the backbone frozen, the adapter's
        FFN LoRA (if any) on the backbone's FFNs, every block checkpointed on request."""
        comfy.model_management.load_models_gpu([self.patched, self.holder.patcher])
        diffusion_model = self.patched.model.diffusion_model
        frozen = [p for p in diffusion_model.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        self.adapter.requires_grad_(True).train()
        # ComfyUI's own training switch: differentiable fallbacks instead of inference-only kernels (e.g. RoPE)
        was_training = getattr(comfy.model_management, "in_training", False)
        comfy.model_management.in_training = True
        try:
            with ExitStack() as stack:
                stack.enter_context(ffn_lora_applied(diffusion_model.blocks, self.adapter.ffn_lora))
                if gradient_checkpointing:
                    stack.enter_context(checkpointed_blocks(diffusion_model.blocks))
                yield
        finally:
            comfy.model_management.in_training = was_training
            self.adapter.eval()
            for p in frozen:
                p.requires_grad_(True)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, source: torch.Tensor, *,
                 frame_offset: int = 0, gate_grad: bool = False) -> StreamOutput:
        """x, source (B, 16, F, h, w) in the model's latent space; t (B,) in [0, 1000]."""
        if frame_offset:
            raise ValueError("ComfyUI's Wan has no temporal RoPE offset: train with max_frame_offset 0")
        sigma = (t.to(torch.float32) / 1000).to(x.device)               # (B,)
        training = TrainingForward(gate_grad=gate_grad)
        options = {**self.patched.model_options["transformer_options"],
                   "wrappers": comfy.patcher_extension.copy_nested_dicts(self.patched.wrappers),
                   "sample_sigmas": training, "cond_or_uncond": [0], TRAINING_OPTION: training}
        # Edit Conditioning hands the source in the VAE's latent space; the wrapper maps it to the model's
        raw_source = self.patched.model.process_latent_out(source)
        denoised = self.patched.model.apply_model(x.float(), sigma, c_crossattn=context, transformer_options=options,
                                                  **{SOURCE_COND: raw_source})
        velocity = (x.float() - denoised) / sigma.clamp(min=1e-4).view(-1, 1, 1, 1, 1)  # flow: x0 = x - sigma v
        return StreamOutput(velocity=velocity, gates=training.gates if gate_grad else None)
