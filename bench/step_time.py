"""CPU wall-clock of one ImVideoEdit step against one plain backbone step, at a small shape.

Usage: ``python bench/step_time.py [--threads 2] [--repeats 20]``.

One process, one thread count, ``torch.no_grad()``. After a warm-up, the variants run interleaved (the order
alternates every repeat, so slow drifts of the machine hit all of them alike) and the medians are compared:
  plain      the backbone alone (runner detached: no hooks);
  cache on   backbone + PU-SDA reading the cached source keys/values (the per-step cost of an edit);
  cache off  backbone + PU-SDA + re-encoding the source at every step;
  encode     the one-off source encoding of a cache-on run.
The FLOPs of one call of each variant are counted too (FlopCounterMode, attention as explicit matmuls), so the
wall-clock ratio can be compared with the compute ratio at the same shape.
The adapter has random weights everywhere (also in its zero-initialised update), like a trained one.
The last line printed is one JSON object. A benchmark, not a test: nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

from _common import build_runner, count_flops, format_table, print_result_json

import torch

from imvideoedit_core.model.adapter import ImVideoEditAdapter
from imvideoedit_core.model.config import AdapterConfig, BackboneConfig
from imvideoedit_core.edit.streams import TwoStreamRunner

# A small backbone with the real adapter/backbone width ratio (384/1536 = 64/256).
BENCH_BACKBONE = BackboneConfig(dim=256, ffn_dim=1024, freq_dim=64, text_dim=64, num_heads=4, num_layers=4)
BENCH_ADAPTER = AdapterConfig(inner_dim=64, num_heads=2, gate_dim=16, time_freq_dim=32)


@dataclass(frozen=True)
class StepShape:
    batch: int = 2             # CFG: conditional + unconditional
    frames: int = 5            # latent frames
    height: int = 32           # latent pixels
    width: int = 32
    context_length: int = 32


@dataclass
class Variant:
    """One thing to time: ``run`` is called with the runner attached or detached as ``attached`` says."""

    name: str
    run: Callable[[], object]
    attached: bool


def randomise_(adapter: ImVideoEditAdapter, *, seed: int, std: float = 0.05) -> None:
    """Random values for every adapter parameter (also ``Wo`` and the gate's time bias, which start at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def make_variants(runner: TwoStreamRunner, shape: StepShape, *, seed: int) -> list[Variant]:
    cfg = runner.backbone.config
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(shape.batch, cfg.in_dim, shape.frames, shape.height, shape.width, generator=gen)
    source_latent = torch.randn(latent.shape, generator=gen)
    context = torch.randn(shape.batch, shape.context_length, cfg.text_dim, generator=gen)
    t = torch.full((shape.batch,), 700.0)
    cached = runner.source(source_latent, context, placement="device")
    cached.begin_step()  # fill the cache once, as a sampling run does before its first step
    uncached = runner.source(source_latent, context, placement="off")
    shared = runner.source(source_latent[:1], context[:1], placement="device", branches=shape.batch)
    shared.begin_step()  # one encoding read by both CFG branches
    return [
        Variant("plain", lambda: runner.backbone(latent, t, context), attached=False),
        Variant("cache on", lambda: runner(latent, t, context, cached), attached=True),
        Variant("cache shared", lambda: runner(latent, t, context, shared), attached=True),
        Variant("cache off", lambda: runner(latent, t, context, uncached), attached=True),
        Variant("encode", lambda: runner.source(source_latent, context).begin_step(), attached=False),
        Variant("encode shared", lambda: runner.source(source_latent[:1], context[:1],
                                                       branches=shape.batch).begin_step(), attached=False),
    ]


def prepare(variant: Variant, runner: TwoStreamRunner) -> None:
    """Attach or detach the adapter's hooks as the variant needs (never inside a timed region)."""
    if variant.attached:
        runner.attach()
    else:
        runner.detach()


def time_ms(variant: Variant, runner: TwoStreamRunner) -> float:
    """Milliseconds of one call."""
    prepare(variant, runner)
    start = time.perf_counter()
    variant.run()
    return (time.perf_counter() - start) * 1e3


def measure(variants: list[Variant], runner: TwoStreamRunner, *, warmup: int,
            repeats: int) -> dict[str, list[float]]:
    """Interleaved timings (order reversed every other repeat); warm-up calls are discarded."""
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(warmup + repeats):
        order = variants if r % 2 == 0 else variants[::-1]
        for variant in order:
            ms = time_ms(variant, runner)
            if r >= warmup:
                samples[variant.name].append(ms)
    runner.detach()
    return samples


def gflops(variants: list[Variant], runner: TwoStreamRunner) -> dict[str, float]:
    """GFLOPs of one call of each variant (what the wall-clock ratio would be if only FLOPs counted)."""
    counts = {}
    for variant in variants:
        prepare(variant, runner)
        counts[variant.name] = count_flops(variant.run) / 1e9
    runner.detach()
    return counts


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the whole run")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per variant first")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    shape = StepShape()
    runner = build_runner(BENCH_BACKBONE, BENCH_ADAPTER, seed=args.seed)
    randomise_(runner.adapter, seed=args.seed + 2)
    with torch.no_grad():
        variants = make_variants(runner, shape, seed=args.seed)
        samples = measure(variants, runner, warmup=args.warmup, repeats=args.repeats)
        flops = gflops(variants, runner)
    median = {name: statistics.median(ms) for name, ms in samples.items()}
    plain = median["plain"]

    pt, ph, pw = BENCH_BACKBONE.patch_size
    tokens = (shape.frames // pt) * (shape.height // ph) * (shape.width // pw)
    print(f"backbone dim {BENCH_BACKBONE.dim}, {BENCH_BACKBONE.num_layers} layers; adapter inner_dim "
          f"{BENCH_ADAPTER.inner_dim}; latent {shape.batch}x{BENCH_BACKBONE.in_dim}x{shape.frames}x"
          f"{shape.height}x{shape.width} ({tokens} tokens per sample); {args.threads} threads, "
          f"{args.repeats} interleaved repeats after {args.warmup} warm-up")
    rows = [(name, f"{median[name]:.2f}", f"{min(ms):.2f}", f"{max(ms):.2f}", f"{median[name] / plain:.3f}",
             f"{flops[name]:.2f}", f"{flops[name] / flops['plain']:.3f}") for name, ms in samples.items()]
    print(format_table(("variant", "median ms", "min ms", "max ms", "time vs plain", "GFLOPs",
                        "FLOPs vs plain"), rows))
    print(f"(runtime {time.perf_counter() - started:.1f} s)")
    print_result_json({
        "plain_ms": round(plain, 3),
        "adapter_ms": round(median["cache on"], 3),
        "adapter_cache_off_ms": round(median["cache off"], 3),
        "source_encode_ms": round(median["encode"], 3),
        "source_encode_shared_ms": round(median["encode shared"], 3),
        "ratio_cache_shared": round(median["cache shared"] / plain, 4),
        "ratio": round(median["cache on"] / plain, 4),
        "ratio_cache_off": round(median["cache off"] / plain, 4),
        "flop_ratio": round(flops["cache on"] / flops["plain"], 4),
        "flop_ratio_cache_off": round(flops["cache off"] / flops["plain"], 4),
        **{f"shape_{k}": v for k, v in asdict(shape).items()},
        "tokens": tokens,
        "backbone_dim": BENCH_BACKBONE.dim,
        "backbone_layers": BENCH_BACKBONE.num_layers,
        "adapter_inner_dim": BENCH_ADAPTER.inner_dim,
        "threads": args.threads,
        "repeats": args.repeats,
    })


if __name__ == "__main__":
    main()
