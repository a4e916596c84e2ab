"""Loading Wan 2.1 T2V weights (official or ComfyUI-packaged safetensors, fp32/bf16/fp16) into :class:`WanDiT`."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from .backbone import WanDiT
from .config import BACKBONE_PRESETS, BackboneConfig

# Prefixes under which packagers store the DiT's own keys.
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")


class WanWeightsError(ValueError):
    pass


def strip_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if any(k.startswith(prefix + "blocks.") for k in state_dict):
            return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return state_dict


def _guess_preset(state_dict: dict[str, torch.Tensor]) -> str:
    weight = state_dict.get("patch_embedding.weight")
    if weight is None:
        return "it has no 'patch_embedding.weight', so it is not a Wan DiT checkpoint (a VAE or text encoder?)"
    layers = len({k.split(".")[1] for k in state_dict if k.startswith("blocks.")})
    for name, cfg in BACKBONE_PRESETS.items():
        if cfg.dim == weight.shape[0] and cfg.num_layers == layers:
            return f"it looks like preset {name!r} (dim {cfg.dim}, {layers} blocks)"
    return f"it has dim {weight.shape[0]} and {layers} blocks"


def _mismatch_report(model: WanDiT, state_dict: dict[str, torch.Tensor]) -> list[str]:
    expected = model.state_dict()
    problems = []
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [k for k in expected.keys() & state_dict.keys() if expected[k].shape != state_dict[k].shape]
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:5]}")
    for k in sorted(wrong)[:5]:
        problems.append(f"{k}: file has {tuple(state_dict[k].shape)}, model expects {tuple(expected[k].shape)}")
    if len(wrong) > 5:
        problems.append(f"... and {len(wrong) - 5} more shape mismatches")
    return problems


def load_wan_state_dict(model: WanDiT, state_dict: dict[str, torch.Tensor], *, source: str = "state dict") -> None:
    """Copy a Wan 2.1 T2V state dict into ``model`` (cast to the model's dtype); names every mismatch."""
    state_dict = strip_prefix(state_dict)
    problems = _mismatch_report(model, state_dict)
    if problems:
        raise WanWeightsError(
            f"{source} does not fit the Wan 2.1 T2V backbone {model.config.dim}x{model.config.num_layers}: "
            + "; ".join(problems) + f". {_guess_preset(state_dict)}: load it with the matching preset, "
            "or pick a Wan 2.1 text-to-video checkpoint (image-to-video and Wan 2.2 files differ).")
    model.load_state_dict(state_dict, strict=True)


def load_wan_checkpoint(path: str | Path, cfg: BackboneConfig, *, device="cpu",
                        dtype: torch.dtype | None = None) -> WanDiT:
    """Build a backbone for ``cfg`` and load a safetensors checkpoint into it (frozen, eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Wan checkpoint at {path}")
    if path.suffix != ".safetensors":
        raise WanWeightsError(f"{path.name}: only .safetensors checkpoints are loaded (no pickle); convert it first")
    state_dict = load_file(str(path), device=str(device))
    dtype = dtype or next(iter(state_dict.values())).dtype
    model = WanDiT(cfg, device=device, dtype=dtype)
    load_wan_state_dict(model, state_dict, source=path.name)
    return model.requires_grad_(False).eval()
