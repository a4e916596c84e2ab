"""FLOPs of one ImVideoEdit edit against the plain backbone, at a real Wan shape, on the ``meta`` device.

Usage: ``python bench/flops.py`` (defaults: Wan 2.1 T2V 1.3B, 81 frames at 832x480, 30 steps, CFG batched);
``python bench/flops.py --preset wan2.2-ti2v-5b --frames 121 --height 704 --width 1280`` for TI2V 5B at 720p.

Nothing is allocated: models and tensors live on ``meta`` and ``torch.utils.flop_counter.FlopCounterMode``
counts the matmuls and convolutions (elementwise ops, norms and softmax are not counted, as usual).
Attention is routed through ``math_attention`` (explicit ``q @ k^T`` and ``weights @ v``) so that it is counted
the same way on every device. What we found on torch 2.13: on ``meta``, ``F.scaled_dot_product_attention``
falls back to its math decomposition and *is* counted (as ``bmm``, same number as ``math_attention``); on the
CPU it dispatches to ``_scaled_dot_product_flash_attention_for_cpu``, which FlopCounterMode does not count (0).

Rows of the table:
  plain           30 steps x one CFG-batched backbone forward;
  cache on        one-off source encoding (frozen blocks at t=0 plus the adapter's key/value projections)
                  + 30 steps of backbone + PU-SDA that reuse it;
  cache off       30 steps that each re-encode the source;
  shared source   cache on, but one source encoding (with the instruction) read by both CFG branches;
  width concat    the ViFeEdit-style reference: source concatenated along the width, tokens doubled.
The source cache memory is measured with ``SourceStream.cache_bytes()`` on bf16 meta models (no FLOP counting).
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

from _common import GIB, build_runner, count_flops, format_table, print_result_json

import torch

from imvideoedit_core.model.config import adapter_preset, backbone_preset
from imvideoedit_core.model.wan_strides import vae_spatial_stride
from imvideoedit_core.edit.streams import CachePlacement, TwoStreamRunner

META = torch.device("meta")


@dataclass(frozen=True)
class VideoShape:
    """A Wan video job: pixel size, text length, CFG branches (batched as one forward) and the VAE's spatial
    stride (8: Wan 2.1's VAE; 16: Wan 2.2's, for TI2V 5B)."""

    frames: int = 81
    height: int = 480
    width: int = 832
    context_length: int = 512
    branches: int = 2          # conditional + unconditional
    vae_stride: int = 8

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // 4 + 1  # the Wan VAE: 4x in time, first frame alone

    def latent_shape(self, channels: int, *, width_factor: int = 1) -> tuple[int, int, int, int, int]:
        """(B, C, F, H, W) of the latent; ``width_factor=2`` for the width-concatenated reference."""
        s = self.vae_stride
        return (self.branches, channels, self.latent_frames, self.height // s, width_factor * self.width // s)


@dataclass
class ModelInputs:
    latent: torch.Tensor   # (B, C, F, H, W)
    timestep: torch.Tensor  # (B,)
    context: torch.Tensor  # (B, L_text, text_dim)


def meta_inputs(runner: TwoStreamRunner, shape: VideoShape, *, width_factor: int = 1,
                dtype: torch.dtype = torch.float32) -> ModelInputs:
    """Inputs of one CFG-batched forward, on meta (values never exist; only shapes matter)."""
    cfg = runner.backbone.config
    return ModelInputs(latent=torch.empty(shape.latent_shape(cfg.in_dim, width_factor=width_factor),
                                          device=META, dtype=dtype),
                       timestep=torch.empty(shape.branches, device=META),
                       context=torch.empty(shape.branches, shape.context_length, cfg.text_dim,
                                           device=META, dtype=dtype))


def token_count(runner: TwoStreamRunner, latent_shape: tuple[int, ...]) -> int:
    """Tokens per sample after patch embedding: F/pt * H/ph * W/pw."""
    pt, ph, pw = runner.backbone.config.patch_size
    _, _, f, h, w = latent_shape
    return (f // pt) * (h // ph) * (w // pw)


def count_tflops(fn: Callable[[], object]) -> float:
    return count_flops(fn) / 1e12


def steady_step_tflops(step: Callable[[], object]) -> float:
    """TFLOPs of one sampling step, checked to be the same at the next step (nothing is computed only once).

    The FLOPs of a step do not depend on its timestep, so a run costs ``steps`` times this number.
    """
    first, second = count_tflops(step), count_tflops(step)
    if first != second:
        raise RuntimeError(f"consecutive steps cost {first} and {second} TFLOPs; the per-step cost is not steady")
    return first


@dataclass
class RunCost:
    """FLOPs of one sampling run."""

    per_step: float   # TFLOPs of one CFG-batched step
    one_off: float    # TFLOPs computed once per run (the source encoding with the cache on)
    steps: int

    @property
    def total(self) -> float:
        return self.one_off + self.steps * self.per_step


def plain_cost(runner: TwoStreamRunner, inputs: ModelInputs, *, steps: int) -> RunCost:
    """The frozen backbone alone (the runner stays detached)."""
    step = steady_step_tflops(lambda: runner.backbone(inputs.latent, inputs.timestep, inputs.context))
    return RunCost(per_step=step, one_off=0.0, steps=steps)


def _source(runner: TwoStreamRunner, inputs: ModelInputs, *, placement: CachePlacement, share: bool):
    """The source stream of a CFG-batched run: one encoding per branch, or one shared by every branch."""
    if share:
        return runner.source(inputs.latent[:1], inputs.context[:1], placement=placement,
                             branches=inputs.latent.shape[0])
    return runner.source(inputs.latent, inputs.context, placement=placement)


def imvideoedit_cost(runner: TwoStreamRunner, inputs: ModelInputs, *, steps: int,
                     placement: CachePlacement, share: bool = False) -> RunCost:
    """Backbone + PU-SDA per step; with the cache on, the source encoding is counted once, apart."""
    with runner:
        source = _source(runner, inputs, placement=placement, share=share)
        one_off = 0.0 if placement == "off" else count_tflops(source.begin_step)  # fills the cache
        step = steady_step_tflops(lambda: runner(inputs.latent, inputs.timestep, inputs.context, source))
    return RunCost(per_step=step, one_off=one_off, steps=steps)


@dataclass
class CacheMemory:
    preset: str
    cache_gib: float           # k and v of every adapted block, both CFG branches
    shared_cache_gib: float    # the same, one encoding shared by both branches
    adapted_blocks: int


def source_cache_memory(preset: str, shape: VideoShape, *, dtype: torch.dtype = torch.bfloat16) -> CacheMemory:
    """Size of the source cache for both CFG branches, read from meta tensors (no FLOP counting)."""
    runner = build_runner(backbone_preset(preset), adapter_preset(preset), device=META, dtype=dtype)
    inputs = meta_inputs(runner, shape, dtype=dtype)
    sizes = []
    with torch.no_grad():
        for share in (False, True):
            source = _source(runner, inputs, placement="device", share=share)
            source.begin_step()
            sizes.append(source.cache_bytes() / GIB)
    return CacheMemory(preset=preset, cache_gib=sizes[0], shared_cache_gib=sizes[1],
                       adapted_blocks=len(runner.adapter.block_ids))


def cost_table(costs: dict[str, RunCost], plain: RunCost) -> str:
    rows = [(name, f"{c.per_step:.1f}", f"{c.one_off:.1f}", f"{c.total:.0f}", f"{c.total / plain.total:.4f}")
            for name, c in costs.items()]
    return format_table(("run", "TFLOPs/step", "one-off TFLOPs", "total TFLOPs", "vs plain"), rows)


def memory_table(memories: list[CacheMemory]) -> str:
    rows = [(m.preset, m.adapted_blocks, f"{m.cache_gib:.2f}", f"{m.shared_cache_gib:.2f}") for m in memories]
    return format_table(("preset (bf16, CFG x2)", "adapted blocks", "source cache GiB", "shared encoding GiB"), rows)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="wan2.1-t2v-1.3b", help="backbone and adapter preset for FLOPs")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--context-length", type=int, default=512)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    backbone = backbone_preset(args.preset)
    shape = VideoShape(frames=args.frames, height=args.height, width=args.width,
                       context_length=args.context_length, vae_stride=vae_spatial_stride(backbone.family))
    runner = build_runner(backbone, adapter_preset(args.preset), device=META)
    inputs = meta_inputs(runner, shape)
    wide = meta_inputs(runner, shape, width_factor=2)
    tokens = token_count(runner, tuple(inputs.latent.shape))

    plain = plain_cost(runner, inputs, steps=args.steps)
    costs = {
        "plain backbone": plain,
        "ImVideoEdit, cache on": imvideoedit_cost(runner, inputs, steps=args.steps, placement="device"),
        "ImVideoEdit, cache off": imvideoedit_cost(runner, inputs, steps=args.steps, placement="off"),
        "ImVideoEdit, shared source": imvideoedit_cost(runner, inputs, steps=args.steps, placement="device",
                                                       share=True),
        "width concat (tokens x2)": plain_cost(runner, wide, steps=args.steps),
    }
    cached, uncached, shared, concat = (costs[k] for k in list(costs)[1:])
    memories = [source_cache_memory(p, replace(shape, vae_stride=vae_spatial_stride(backbone_preset(p).family)))
                for p in ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-ti2v-5b")]

    print(f"{args.preset}: {shape.frames} frames at {shape.width}x{shape.height} -> latent "
          f"{tuple(inputs.latent.shape)} = {tokens} tokens per sample; {args.steps} steps, CFG batched "
          f"(batch {shape.branches}), text {shape.context_length} x {runner.backbone.config.text_dim}")
    print(cost_table(costs, plain))
    adapter_step = cached.per_step - plain.per_step
    print(f"adapter per step: {adapter_step:.2f} TFLOPs = {100 * adapter_step / plain.per_step:.2f}% of a "
          f"backbone step; source encoding once: {cached.one_off:.1f} TFLOPs = "
          f"{100 * cached.one_off / plain.total:.2f}% of the plain run")
    print()
    print(memory_table(memories))
    print(f"(runtime {time.perf_counter() - started:.1f} s on meta)")
    print_result_json({
        "preset": args.preset,
        **asdict(shape),
        "latent_shape": list(inputs.latent.shape),
        "tokens": tokens,
        "steps": args.steps,
        "plain_tflops": round(plain.total, 2),
        "imvideoedit_tflops": round(cached.total, 2),
        "imvideoedit_cache_off_tflops": round(uncached.total, 2),
        "width_concat_tflops": round(concat.total, 2),
        "plain_step_tflops": round(plain.per_step, 3),
        "imvideoedit_step_tflops": round(cached.per_step, 3),
        "source_encode_tflops": round(cached.one_off, 3),
        "ratio": round(cached.total / plain.total, 4),
        "ratio_per_step": round(cached.per_step / plain.per_step, 4),
        "ratio_cache_off": round(uncached.total / plain.total, 4),
        "ratio_shared_source": round(shared.total / plain.total, 4),
        "source_encode_shared_tflops": round(shared.one_off, 3),
        "width_concat_ratio": round(concat.total / plain.total, 4),
        "source_cache_gib_1_3b": round(memories[0].cache_gib, 3),
        "source_cache_gib_14b": round(memories[1].cache_gib, 3),
        "source_cache_shared_gib_1_3b": round(memories[0].shared_cache_gib, 3),
        "source_cache_shared_gib_14b": round(memories[1].shared_cache_gib, 3),
        "source_cache_gib_5b": round(memories[2].cache_gib, 3),
        "source_cache_shared_gib_5b": round(memories[2].shared_cache_gib, 3),
        "cache_dtype": "bfloat16",
    })


if __name__ == "__main__":
    main()
