"""Wan 2.1 T2V checkpoints at real dimensions with random weights, in the storage formats artists download.

Official key names and no metadata (ComfyUI must detect the model from the tensors alone), one file per format:

- ``fp16``: every tensor in float16;
- ``fp8_e4m3fn``: the blocks' linear weights in float8_e4m3fn, the rest in float16 (ComfyUI's repackaged files);
- ``fp8_scaled``: the same weights divided by a per-tensor scale (``<layer>.scale_weight``, float32) before the
  cast, plus the ``scaled_fp8`` marker tensor (the older "scaled fp8" files that ComfyUI converts on load).

Weights are drawn tensor by tensor (float16, std 0.02; norms 1, biases 0), so a 1.3B file needs ~3 GB of memory.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from imvideoedit_core.model.backbone import build_backbone
from imvideoedit_core.model.config import backbone_preset

FORMATS = ("fp16", "fp8_e4m3fn", "fp8_scaled")
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def random_wan_state_dict(preset: str = "wan2.1-t2v-1.3b", *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of the preset's Wan DiT (official names), random, float16."""
    shapes = {k: v.shape for k, v in build_backbone(backbone_preset(preset), device="meta").state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith(".bias"):
            out[name] = torch.zeros(shape, dtype=torch.float16)
        elif "norm" in name and len(shape) == 1:
            out[name] = torch.ones(shape, dtype=torch.float16)
        else:
            out[name] = (torch.randn(shape, generator=gen) * 0.02).to(torch.float16)
    return out


def _is_block_linear(name: str, tensor: torch.Tensor) -> bool:
    return name.startswith("blocks.") and name.endswith(".weight") and tensor.dim() == 2


def in_format(state_dict: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    if fmt not in FORMATS:
        raise ValueError(f"unknown Wan file format {fmt!r}; choose one of {FORMATS}")
    if fmt == "fp16":
        return state_dict
    out = {}
    for name, tensor in state_dict.items():
        if not _is_block_linear(name, tensor):
            out[name] = tensor
        elif fmt == "fp8_e4m3fn":
            out[name] = tensor.to(torch.float8_e4m3fn)
        else:
            scale = tensor.float().abs().max().clamp(min=1e-12) / FP8_MAX
            out[name] = (tensor.float() / scale).to(torch.float8_e4m3fn)
            out[name.removesuffix(".weight") + ".scale_weight"] = scale.reshape(1)
    if fmt == "fp8_scaled":
        out["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    return out


def write_wan_files(folder: Path, formats: tuple[str, ...] = FORMATS, *, preset: str = "wan2.1-t2v-1.3b",
                    seed: int = 0) -> dict[str, Path]:
    """One file per format in ``folder`` (e.g. ComfyUI's models/diffusion_models); returns format -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    state_dict = random_wan_state_dict(preset, seed=seed)
    paths = {}
    for fmt in formats:
        paths[fmt] = folder / f"{preset}_random_{fmt}.safetensors"
        save_file(in_format(state_dict, fmt), str(paths[fmt]))
    return paths
