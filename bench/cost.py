"""What training an adapter and tuning one on an edited keyframe cost at real Wan sizes, on paper.

Usage: ``python bench/cost.py`` (Wan 2.1 1.3B and 14B and one Wan 2.2 A14B expert with one-frame pairs at 832x480,
Wan 2.2 TI2V 5B at its own 1280x704; the GPUs and utilisation below). The A14B pair needs one adapter per expert:
twice an expert's figures.

FLOPs come from our own counter: one optimisation step (source stream at t=0, target stream forward, backward to
the adapter; the backbone frozen, its weight gradients never computed) runs on the ``meta`` device under
``FlopCounterMode`` (matmuls and convolutions; attention as explicit matmuls), so nothing is allocated. Seconds =
FLOPs / (peak dense bf16 tensor throughput x ``--utilisation``); the utilisation is an assumption, not a
measurement (no GPU here), and stated in the output. Memory is a model: frozen weights (bf16, or fp8 where the file
is fp8) + the adapter's fp32 training state (weights, gradients, two AdamW moments: 16 bytes a parameter) +
activations (the counted forward's saved tensors are not measured on meta; a margin of 2 GiB stands for them at
one-frame 480p, where the backbone's activations are tens of MiB).

Jobs:
  general adapter   the paper's recipe: 13K image pairs, 5 epochs, batch 4 (16 250 steps)
  keyframe tuning   one edited keyframe, batch 4: ``--trained-steps`` from a trained adapter, ``--zero-steps``
                    from a fresh one, in full-size-step equivalents (the defaults are Tune On Keyframe's, measured
                    on ToyWorld: 300 steps; 800 half-size steps + 100 = 300; see docs/toyworld.md). A half-size
                    step is counted as a quarter (its pixels), an upper bound: attention shrinks 16x
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from _common import GIB, build_runner, format_table, print_result_json

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from imvideoedit_core.model.attention import math_attention, use_attention
from imvideoedit_core.model.config import adapter_preset, backbone_preset
from imvideoedit_core.train.keyframe_tuning import TRAINED_START, ZERO_START
from imvideoedit_core.model.wan_strides import vae_spatial_stride

META = torch.device("meta")
GPUS = {  # peak dense bf16 tensor TFLOPS (vendor figures) and memory in GiB
    "RTX 4090 (24 GB)": (165.2, 24),
    "A100 80 GB": (312.0, 80),
    "H100 SXM": (989.0, 80),
}


@dataclass(frozen=True)
class Job:
    name: str
    steps: float   # in full-size-step equivalents (a half-size step counts a quarter: its share of the pixels)
    batch: int


def train_step_tflops(preset: str, *, batch: int, height: int, width: int, context_length: int) -> float:
    """TFLOPs of one adapter training step on ``batch`` one-frame pairs (meta device, nothing allocated)."""
    runner = build_runner(backbone_preset(preset), adapter_preset(preset), device=META)
    runner.adapter.requires_grad_(True)
    cfg = runner.backbone.config
    stride = vae_spatial_stride(cfg.family)
    latent = torch.empty(batch, cfg.in_dim, 1, height // stride, width // stride, device=META)
    context = torch.empty(batch, context_length, cfg.text_dim, device=META)
    t = torch.empty(batch, device=META)
    with use_attention(math_attention), FlopCounterMode(display=False) as counter, runner:
        source = runner.source(latent, context)
        velocity = runner(latent, t, context, source).velocity
        F.mse_loss(velocity, latent).backward()
    return counter.get_total_flops() / 1e12


def memory_gib(preset: str, *, weight_bytes: float, activations_gib: float = 2.0) -> float:
    backbone = build_runner(backbone_preset(preset), adapter_preset(preset), device=META)
    frozen = sum(p.numel() for p in backbone.backbone.parameters()) * weight_bytes
    adapter = sum(p.numel() for p in backbone.adapter.parameters()) * 16
    return (frozen + adapter) / GIB + activations_gib


def adapter_parameters(preset: str) -> int:
    return sum(p.numel() for p in build_runner(backbone_preset(preset), adapter_preset(preset),
                                               device=META).adapter.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--context-length", type=int, default=512)
    parser.add_argument("--utilisation", type=float, default=0.4, help="assumed share of the GPU's peak")
    parser.add_argument("--pairs", type=int, default=13_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--trained-steps", type=float, default=TRAINED_START.full_steps_equivalent)
    parser.add_argument("--zero-steps", type=float, default=ZERO_START.full_steps_equivalent,
                        help="full-size-step equivalents of the fresh start (default: 800 half-size steps + 100)")
    args = parser.parse_args()
    jobs = [Job("general adapter", args.pairs * args.epochs // args.batch, args.batch),
            Job("keyframe tuning, trained start", args.trained_steps, args.batch),
            Job("keyframe tuning, fresh (copy) start", args.zero_steps, args.batch)]  # steps: full-size equivalents
    rows, result = [], {"utilisation": args.utilisation, "height": args.height, "width": args.width, "jobs": {}}
    sizes = {"wan2.1-t2v-1.3b": (args.height, args.width), "wan2.1-t2v-14b": (args.height, args.width),
             "wan2.2-ti2v-5b": (704, 1280), "wan2.2-t2v-a14b-high": (args.height, args.width)}
    for preset, (height, width) in sizes.items():
        step = train_step_tflops(preset, batch=args.batch, height=height, width=width,
                                 context_length=args.context_length)
        memory = {"bf16": memory_gib(preset, weight_bytes=2), "fp8": memory_gib(preset, weight_bytes=1)}
        for job in jobs:
            total = step * job.steps
            for gpu, (peak, gib) in GPUS.items():
                seconds = total / (peak * args.utilisation)
                fits = [w for w, m in memory.items() if m <= gib]
                rows.append((f"{preset} {width}x{height}", job.name, job.steps, f"{total:.0f}", gpu,
                             _duration(seconds), ", ".join(fits) or "no"))
                result["jobs"][f"{preset}|{job.name}|{gpu}"] = {"steps": job.steps, "tflops": total,
                                                                "seconds": seconds, "fits": fits}
        result[preset] = {"step_tflops": step, "memory_gib": memory, "adapter_parameters": adapter_parameters(preset)}
    print(f"one-frame pairs at {args.width}x{args.height}, batch {args.batch}, text {args.context_length}; "
          f"seconds at {args.utilisation:.0%} of each GPU's peak dense bf16 throughput (an assumption)")
    print(format_table(("model", "job", "steps", "TFLOPs", "GPU", "time", "fits (weights)"), rows))
    for preset in sizes:
        r = result[preset]
        print(f"{preset}: {r['step_tflops']:.1f} TFLOPs a step; adapter {r['adapter_parameters'] / 1e6:.0f} M "
              f"parameters; memory model {r['memory_gib']['bf16']:.1f} GiB (bf16 weights), "
              f"{r['memory_gib']['fp8']:.1f} GiB (fp8 weights)")
    print_result_json(result)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


if __name__ == "__main__":
    main()
