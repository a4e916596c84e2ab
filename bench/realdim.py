"""Real Wan dimensions through ComfyUI: peak memory of sampling, training and tuning, and a memory model.

    source /path/to/comfy-env/env.sh        # COMFYUI_DIR and COMFYUI_PYTHON (../shared/tools/comfy-env.sh)
    $COMFYUI_PYTHON bench/realdim.py         # 1.3B, random weights, fp16 / fp8_e4m3fn / scaled fp8: a few minutes
    python bench/realdim.py --model-only     # the memory model alone (no ComfyUI needed)

Measured part (CPU, resident memory): each checkpoint of ``bench/wan_files.py`` is loaded by ComfyUI's own
UNETLoader, then IMVE Apply Adapter -> IMVE Sampler (2 steps, 2 latent frames of 4x4), IMVE Train Adapter
(2 steps, one 32x32 pair a step) and IMVE Tune On Keyframe (2 steps) run as nodes. Each peak is the resident
set's high-water mark above what was resident just before the step (freed heap returned with ``malloc_trim``),
so it is what the step adds to the loaded model. The integration tier asserts on the same numbers
(``tests/integration/test_comfyui_real_dimensions.py``).

Model part: what an edit needs on a GPU with CFG, per cache placement, at each model's usual size (Wan 2.1 and
an A14B expert: 81 frames at 832x480, the expert also at 1280x720; TI2V 5B: 121 frames at 1280x704): weights (bf16, or
fp8 block weights), the adapter in bf16, the source cache on the device (``device``: all of it; ``cpu``: the
block in use and the prefetched next one; ``off``: none), and activations estimated as the batch's tokens x
(ffn_dim + 6 dim) values in bf16 (the FFN's hidden layer and a few residual copies; stated, not measured).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import GIB  # noqa: E402
from imvideoedit_core.model.adapter import build_adapter  # noqa: E402
from imvideoedit_core.model.backbone import build_backbone  # noqa: E402
from imvideoedit_core.model.config import adapter_config_for, backbone_preset  # noqa: E402
from imvideoedit_core.model.wan_strides import PATCH_STRIDE, VAE_TEMPORAL_STRIDE, vae_spatial_stride  # noqa: E402

T = TypeVar("T")
CARDS_GIB = {"24 GB card": 24 * 10**9 / GIB, "80 GB card": 80 * 10**9 / GIB}


# -- resident memory (Linux) --

def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def peak_above_start(fn: Callable[[], T]) -> tuple[T, int]:
    """Run ``fn``; return its result and the resident high-water mark above the resident set at its start."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the system: a fair starting point
    except OSError:
        pass
    start = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    result = fn()
    return result, _status("VmHWM") - start


# -- the measured part: ComfyUI nodes at real dimensions --

@dataclass
class Footprint:
    format: str
    loaded_bytes: int     # resident after ComfyUI loaded the model
    sampling_bytes: int   # peaks above the resident set before each step
    training_bytes: int
    tuning_bytes: int
    plain_backward_bytes: int  # ComfyUI alone, no adapter: one forward and a backward to the input (reference)
    sample_finite: bool
    train_summary: str
    tune_summary: str


def write_pairs(folder: Path, count: int = 2, size: int = 32) -> None:
    import numpy as np
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        src = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(src).save(folder / f"p{i}_src.png")
        Image.fromarray(255 - src).save(folder / f"p{i}_tgt.png")
        (folder / f"p{i}.txt").write_text("invert the colours")


def measure_format(nodes: dict, *, fmt: str, file_name: str, adapter_name: str, pairs_folder: str,
                   text_dim: int, vae, clip, channels: int = 16, weight_dtype: str = "default",
                   train_and_tune: bool = True) -> Footprint:
    """Load ``file_name`` (in models/diffusion_models) with ComfyUI's UNETLoader and run the pack's nodes on it
    (``train_and_tune`` False: sampling and ComfyUI's own backward only)."""
    import torch
    import comfy.model_management
    import nodes as comfy_nodes  # ComfyUI's own nodes module
    from imvideoedit_pack.nodes.edit_nodes import with_source

    def value(node_output):
        return node_output.args if hasattr(node_output, "args") else node_output.result

    model = comfy_nodes.UNETLoader().load_unet(file_name, weight_dtype)[0]
    comfy.model_management.load_models_gpu([model])
    loaded = _status("VmRSS")
    latent = torch.randn(1, channels, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    ctx = torch.randn(1, 5, text_dim, generator=torch.Generator().manual_seed(1))
    positive, negative = with_source([[ctx, {}]], latent), with_source([[torch.zeros_like(ctx), {}]], latent)

    def sample():
        holder = value(nodes["IMVELoadAdapter"].execute(adapter_name=adapter_name))[0]
        patched = value(nodes["IMVEApplyAdapter"].execute(model=model, adapter=holder, strength=1.0,
                                                          source_cache="device"))[0]
        return value(nodes["IMVESampler"].execute(
            model=patched, positive=positive, negative=negative, latent={"samples": latent}, seed=0, steps=2, cfg=2.0,
            shift=3.0, strength=1.0, solver="euler", source_cache="device"))[0]["samples"]

    def train():
        return value(nodes["IMVETrainAdapter"].execute(
            model=model, vae=vae, clip=clip, pairs_folder=pairs_folder, adapter_name=f"realdim_{fmt}", steps=2,
            learning_rate=1e-4, batch_size=1, width=0, height=0, resize_policy="error", save_every=2, seed=0,
            resume=False, gradient_checkpointing="auto"))[1]

    def tune():
        holder = value(nodes["IMVELoadAdapter"].execute(adapter_name=adapter_name))[0]
        frame = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(2))
        return value(nodes["IMVETuneOnKeyframe"].execute(
            model=model, adapter=holder, vae=vae, clip=clip, source_keyframe=frame, edited_keyframe=1 - frame,
            instruction="invert the colours", steps=2, learning_rate=1e-4, seed=0, augment=False,
            gradient_checkpointing="auto"))[1]

    def plain_backward():
        """What ComfyUI itself adds when gradients flow through its model (fp8 weights may be dequantized)."""
        was = getattr(comfy.model_management, "in_training", False)
        comfy.model_management.in_training = True
        try:
            with torch.inference_mode(False), torch.enable_grad():
                x = latent.clone().requires_grad_(True)
                out = model.model.apply_model(x, torch.tensor([0.5]), c_crossattn=ctx, transformer_options={})
                out.square().mean().backward()
        finally:
            comfy.model_management.in_training = was

    _, plain = peak_above_start(plain_backward)
    sampled, sampling = peak_above_start(sample)
    train_summary, training = peak_above_start(train) if train_and_tune else ("not run", 0)
    tune_summary, tuning = peak_above_start(tune) if train_and_tune else ("not run", 0)
    return Footprint(format=fmt, loaded_bytes=loaded, sampling_bytes=sampling, training_bytes=training,
                     tuning_bytes=tuning, plain_backward_bytes=plain, sample_finite=bool(torch.isfinite(sampled).all()),
                     train_summary=train_summary, tune_summary=tune_summary)


def adapter_training_state_bytes(preset: str = "wan2.1-t2v-1.3b") -> int:
    """The adapter's fp32 training state: weights, gradients and two AdamW moments (16 bytes a parameter)."""
    cfg = backbone_preset(preset)
    adapter = build_adapter(adapter_config_for(cfg), cfg, device="meta")
    return 16 * sum(p.numel() for p in adapter.parameters())


# -- the model part: an edit at each model's usual size on a GPU --

@dataclass(frozen=True)
class EditJob:
    preset: str
    frames: int
    height: int
    width: int


# Wan 2.1 at 480p; TI2V 5B at its 720p (1280x704, 121 frames); an A14B expert (one resident at a time: the other
# is offloaded, so one expert's weights and cache count) at 480p and 720p
EDIT_JOBS = (EditJob("wan2.1-t2v-1.3b", 81, 480, 832), EditJob("wan2.1-t2v-14b", 81, 480, 832),
             EditJob("wan2.2-ti2v-5b", 121, 704, 1280), EditJob("wan2.2-t2v-a14b-high", 81, 480, 832),
             EditJob("wan2.2-t2v-a14b-high", 81, 720, 1280))


def memory_model(jobs: tuple[EditJob, ...] = EDIT_JOBS, *, cfg_branches: int = 2) -> list[dict]:
    rows = []
    for job in jobs:
        cfg = backbone_preset(job.preset)
        per_side = vae_spatial_stride(cfg.family) * PATCH_STRIDE
        tokens = ((job.frames - 1) // VAE_TEMPORAL_STRIDE + 1) * (job.height // per_side) * (job.width // per_side)
        acfg = adapter_config_for(cfg)
        backbone = build_backbone(cfg, device="meta")
        block_linear = sum(p.numel() for n, p in backbone.named_parameters()
                           if n.startswith("blocks.") and p.dim() == 2)
        total = sum(p.numel() for p in backbone.parameters())
        adapter = 2 * sum(p.numel() for p in build_adapter(acfg, cfg, device="meta").parameters())  # bf16
        cache_block = cfg_branches * tokens * acfg.inner_dim * 2 * 2   # k and v, bf16, every branch
        activations = cfg_branches * tokens * (cfg.ffn_dim + 6 * cfg.dim) * 2
        for weights, weight_bytes in (("bf16", 2 * total), ("fp8", block_linear + 2 * (total - block_linear))):
            for placement, encoding, cache in (("device", "per branch", cfg.num_layers * cache_block),
                                               ("device", "shared", cfg.num_layers * cache_block // cfg_branches),
                                               ("cpu", "per branch", 2 * cache_block), ("off", "per branch", 0)):
                need = (weight_bytes + adapter + cache + activations) / GIB
                rows.append({"preset": job.preset, "frames": job.frames, "size": f"{job.width}x{job.height}",
                             "weights": weights, "cache": placement, "encoding": encoding, "tokens": tokens,
                             "need_gib": round(need, 2), "cache_gib": round(cache / GIB, 2),
                             **{card: need <= room for card, room in CARDS_GIB.items()}})
    return rows


def _print_model(rows: list[dict]) -> None:
    print("memory model: CFG, bf16 compute (weights + adapter + cache on the device + activations estimate); "
          "A14B: one expert resident")
    print(f"{'preset':21} {'frames':>6} {'size':9} {'weights':7} {'cache':6} {'source encoding':15} "
          f"{'cache GiB':>9} {'need GiB':>9}  " + "  ".join(CARDS_GIB))
    for r in rows:
        fits = "  ".join(f"{'fits' if r[c] else 'no':>{len(c)}}" for c in CARDS_GIB)
        print(f"{r['preset']:21} {r['frames']:6} {r['size']:9} {r['weights']:7} {r['cache']:6} {r['encoding']:15} "
              f"{r['cache_gib']:9.2f} {r['need_gib']:9.2f}  {fits}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-only", action="store_true", help="print the memory model; measure nothing")
    parser.add_argument("--formats", nargs="+", default=None, help="which files to measure (default: all)")
    parser.add_argument("--preset", default="wan2.1-t2v-1.3b",
                        help="the model to write at real size (wan2.2-ti2v-5b: use --formats fp8_e4m3fn "
                             "--sample-only: on a CPU ComfyUI holds it in float32, 19 GiB, and training needs more "
                             "than 24 GB)")
    parser.add_argument("--sample-only", action="store_true", help="measure loading and sampling, not training")
    args = parser.parse_args()
    rows = memory_model()
    _print_model(rows)
    result = {"memory_model": rows}
    if not args.model_only:
        if not os.environ.get("COMFYUI_DIR"):
            parser.error("set COMFYUI_DIR (source the comfy-env env.sh) or pass --model-only")
        from bench.comfy_inprocess import start_comfyui
        from bench.wan_files import FORMATS
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            result["measured"] = measure_all(start_comfyui(Path(tmp)), formats=tuple(args.formats or FORMATS),
                                             preset=args.preset, train_and_tune=not args.sample_only)
    print(json.dumps(result))


def measure_all(comfyui, *, formats: tuple[str, ...], preset: str = "wan2.1-t2v-1.3b",
                train_and_tune: bool = True) -> list[dict]:
    """Write the files, a random adapter for ``preset`` and a pair folder into ComfyUI's base; measure every
    format (TI2V 5B with a 48-channel, 16x stand-in VAE)."""
    import dataclasses
    # the integration tier's stand-in VAE and umT5 (no real ones can be downloaded here)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
    from comfy_standins import StandInCLIP, StandInVAE
    from imvideoedit_core.model.adapter import build_adapter
    from imvideoedit_core.model.adapter_file import save_adapter
    from bench.wan_files import write_wan_files
    cfg = backbone_preset(preset)
    paths = write_wan_files(comfyui.base / "models" / "diffusion_models", formats, preset=preset)
    adapter_name = f"realdim_{preset}.safetensors"
    save_adapter(comfyui.base / "models" / "imvideoedit" / adapter_name,
                 build_adapter(adapter_config_for(cfg), cfg, seed=0))
    write_pairs(comfyui.base / "input" / "realdim_pairs")
    out = []
    for fmt, path in paths.items():
        footprint = measure_format(comfyui.nodes, fmt=fmt, file_name=path.name, adapter_name=adapter_name,
                                   pairs_folder="realdim_pairs", text_dim=cfg.text_dim,
                                   vae=StandInVAE(channels=cfg.in_dim, stride=vae_spatial_stride(cfg.family)),
                                   clip=StandInCLIP(dim=cfg.text_dim), channels=cfg.in_dim,
                                   train_and_tune=train_and_tune)
        row = dataclasses.asdict(footprint)
        print(f"{fmt:12} loaded {footprint.loaded_bytes / GIB:5.2f} GiB resident; above it: sampling "
              f"{footprint.sampling_bytes / GIB:5.2f}, training {footprint.training_bytes / GIB:5.2f}, tuning "
              f"{footprint.tuning_bytes / GIB:5.2f} GiB (ComfyUI's own forward+backward without the pack: "
              f"{footprint.plain_backward_bytes / GIB:.2f} GiB)")
        out.append(row)
    return out


if __name__ == "__main__":
    main()
