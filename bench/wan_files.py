"""Wan T2V checkpoints at real dimensions with random weights, in the storage formats artists download.

Official key names and no metadata (ComfyUI must detect the model from the tensors alone), one file per format:

- ``fp16``: every tensor in float16;
- ``fp8_e4m3fn``: the blocks' linear weights in float8_e4m3fn, the rest in float16 (ComfyUI's repackaged files);
- ``fp8_scaled``: the same weights divided by a per-tensor scale (``<layer>.scale_weight``, float32) before the
  cast, plus the ``scaled_fp8`` marker tensor (the older "scaled fp8" files that ComfyUI converts on load).

Weights are drawn tensor by tensor (float16, std 0.02; norms 1, biases 0) and converted as they are drawn, so a
file needs about its own size in memory (1.3B fp16: 2.8 GB; TI2V 5B fp8: 5 GB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import save_file

from imvideoedit_core.model.backbone import build_backbone
from imvideoedit_core.model.config import backbone_preset

FORMATS = ("fp16", "fp8_e4m3fn", "fp8_scaled")
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def random_wan_tensors(preset: str = "wan2.1-t2v-1.3b", *, seed: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of the preset's Wan DiT (official names), random, float16, one at a time (a 5B model's whole
    float16 state would need 10 GB at once)."""
    shapes = {k: v.shape for k, v in build_backbone(backbone_preset(preset), device="meta").state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    for name, shape in shapes.items():
        if name.endswith(".bias"):
            yield name, torch.zeros(shape, dtype=torch.float16)
        elif "norm" in name and len(shape) == 1:
            yield name, torch.ones(shape, dtype=torch.float16)
        else:
            yield name, (torch.randn(shape, generator=gen) * 0.02).to(torch.float16)


def _is_block_linear(name: str, tensor: torch.Tensor) -> bool:
    return name.startswith("blocks.") and name.endswith(".weight") and tensor.dim() == 2


def tensor_in_format(name: str, tensor: torch.Tensor, fmt: str) -> dict[str, torch.Tensor]:
    """One float16 tensor as the file of format ``fmt`` stores it (with its scale, for scaled fp8)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown Wan file format {fmt!r}; choose one of {FORMATS}")
    if fmt == "fp16" or not _is_block_linear(name, tensor):
        return {name: tensor}
    if fmt == "fp8_e4m3fn":
        return {name: tensor.to(torch.float8_e4m3fn)}
    scale = tensor.float().abs().max().clamp(min=1e-12) / FP8_MAX
    return {name: (tensor.float() / scale).to(torch.float8_e4m3fn),
            name.removesuffix(".weight") + ".scale_weight": scale.reshape(1)}


def write_wan_files(folder: Path, formats: tuple[str, ...] = FORMATS, *, preset: str = "wan2.1-t2v-1.3b",
                    seed: int = 0) -> dict[str, Path]:
    """One file per format in ``folder`` (e.g. ComfyUI's models/diffusion_models); returns format -> path. Tensors
    are drawn and converted one at a time, so memory holds one file's contents, not a float16 copy as well."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in formats:
        stored: dict[str, torch.Tensor] = {}
        for name, tensor in random_wan_tensors(preset, seed=seed):
            stored.update(tensor_in_format(name, tensor, fmt))
        if fmt == "fp8_scaled":
            stored["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
        paths[fmt] = folder / f"{preset}_random_{fmt}.safetensors"
        save_file(stored, str(paths[fmt]))
        del stored
    return paths
