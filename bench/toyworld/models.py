"""The ToyWorld models: the ``toy`` Wan backbone, a word-level text encoder and the codec, saved together.

Latent space: the codec file in the models folder (``codec.safetensors``, a learned ``ConvCodec`` standing in for
Wan's VAE, 4x smaller in space: a 32x32 frame is an 8x8 latent, 16 tokens with the backbone's (1, 2, 2) patches);
a folder without one was trained on ``PatchCodec(16, patch=2)``, an exact space-to-depth of 2x2 pixel blocks (a
16x16 latent, 64 tokens), which is what ``load_models`` then gives.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from imvideoedit_core.model.adapter_file import atomic_save_safetensors
from imvideoedit_core.model.backbone import WanDiT, build_backbone
from imvideoedit_core.model.config import BackboneConfig, backbone_preset
from bench.standins import PatchCodec, WordTextEncoder

from . import world
from .codec import CausalCodec, CodecConfig, ConvCodec, build_codec

MODELS_DIR = Path(__file__).resolve().parent / "models"
BACKBONE_FILE = "backbone.safetensors"
TEXT_FILE = "text_encoder.safetensors"
ADAPTER_FILE = "adapter.safetensors"
CODEC_FILE = "codec.safetensors"
FRAME_SIZE = 32
CODEC = PatchCodec(channels=16, patch=2)  # the latent space of model folders without a codec file


def vocabulary() -> list[str]:
    """Every word of ToyWorld's captions and instructions, from the world's own names and templates."""
    words: set[str] = set()
    for seed in range(3000):  # enough random examples to meet every template and name (checked by a test)
        example = world.make_example(seed, size=FRAME_SIZE, frames=1)
        for text in (example.source_caption, example.target_caption, example.instruction):
            words.update(re.findall(r"[a-z]+", text.lower()))
    return sorted(words)


def new_text_encoder(seed: int, cfg: BackboneConfig) -> WordTextEncoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WordTextEncoder(vocabulary(), cfg.text_dim)


def new_backbone(seed: int, preset: str = "toy", prediction: str = "velocity") -> WanDiT:
    return build_backbone(dataclasses.replace(backbone_preset(preset), prediction=prediction), seed=seed)


@dataclass
class ToyModels:
    backbone: WanDiT
    text_encoder: WordTextEncoder
    codec: PatchCodec | ConvCodec | CausalCodec = CODEC


def save_models(folder: Path, models: ToyModels, *, summary: dict,
                state_dicts: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
    """Backbone and text encoder as two safetensors files whose metadata says what they are.

    ``state_dicts`` ({"backbone": ..., "text_encoder": ...}) replaces the modules' own weights, e.g. with EMA
    weights in float16; loading casts them back to the modules' float32.
    """
    meta = {"summary": json.dumps(summary, sort_keys=True)}
    state_dicts = state_dicts or {"backbone": models.backbone.state_dict(),
                                  "text_encoder": models.text_encoder.state_dict()}
    atomic_save_safetensors(state_dicts["backbone"], folder / BACKBONE_FILE,
                            {**meta, "format": "toyworld-backbone", "config": models.backbone.config.to_json()})
    atomic_save_safetensors(state_dicts["text_encoder"], folder / TEXT_FILE,
                            {**meta, "format": "toyworld-text-encoder",
                             "config": json.dumps(models.text_encoder.config())})


def _read(path: Path, fmt: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"no ToyWorld model at {path}: train it with `python -m bench.toyworld.pretrain`")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != fmt:
            raise ValueError(f"{path.name} is not a {fmt} file (metadata format {meta.get('format')!r})")
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def save_codec(folder: Path, codec: ConvCodec | CausalCodec, *, summary: dict) -> None:
    """The codec's weights in float16 and its latent statistics in float32, with its config in the metadata."""
    tensors = {k: v if k.startswith("latent_") else v.to(torch.float16) for k, v in codec.state_dict().items()}
    atomic_save_safetensors(tensors, folder / CODEC_FILE, {"summary": json.dumps(summary, sort_keys=True),
                                                          "format": "toyworld-codec",
                                                          "config": codec.config.to_json()})


def load_codec(folder: Path) -> ConvCodec | CausalCodec:
    """The learned codec in ``folder`` (float32, eval mode, no gradients)."""
    weights, meta = _read(folder / CODEC_FILE, "toyworld-codec")
    codec = build_codec(CodecConfig.from_json(meta["config"]))
    codec.load_state_dict({k: v.float() for k, v in weights.items()})
    return codec.requires_grad_(False).eval()


def folder_codec(folder: Path) -> PatchCodec | ConvCodec | CausalCodec:
    """The latent space a model folder was trained in: its codec file, else the exact ``PatchCodec``."""
    return load_codec(folder) if (folder / CODEC_FILE).is_file() else CODEC


def on_codec_grid(frames: int, codec) -> int:
    """``frames`` (a clip length) moved up to the codec's grid: k*n + 1 frames for a codec that groups k frames
    (8 -> 9 for Wan's k = 4), unchanged for a frame-by-frame codec."""
    k = codec.temporal_stride
    return frames if k == 1 else k * math.ceil((frames - 1) / k) + 1


def load_models(folder: Path = MODELS_DIR) -> ToyModels:
    """The frozen pretrained backbone and text encoder (eval mode, no gradients), with the folder's codec."""
    weights, meta = _read(folder / BACKBONE_FILE, "toyworld-backbone")
    backbone = WanDiT(BackboneConfig.from_json(meta["config"]))
    backbone.load_state_dict(weights)
    weights, meta = _read(folder / TEXT_FILE, "toyworld-text-encoder")
    cfg = json.loads(meta["config"])
    text = WordTextEncoder(cfg["vocab"], cfg["text_dim"], max_len=cfg["max_len"])
    text.load_state_dict(weights)
    return ToyModels(backbone=backbone.requires_grad_(False).eval(), text_encoder=text.requires_grad_(False).eval(),
                     codec=folder_codec(folder))
