"""Train Adapter: train an ImVideoEdit adapter on a folder of image pairs, inside ComfyUI."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, TypeVar

import torch

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..imvideoedit_core.model.adapter import build_adapter
from ..imvideoedit_core.model.adapter_file import load_adapter, read_adapter_info
from ..imvideoedit_core.model.config import FFN_LORA_RANK, adapter_config_for, expert_sigma_range
from ..imvideoedit_core.train.pair_dataset import ImagePair, PairDataset, pairs_from_tensors, validate_size
from ..imvideoedit_core.train.pair_scan import RESIZE_POLICIES
from ..imvideoedit_core.edit.sampling import pad_contexts
from ..imvideoedit_core.train.trainer import EncodedPairs, TrainConfig, TrainingCancelled, train_adapter
from .adapter_nodes import Adapter
from .catalog import ADAPTER_FOLDER, CATEGORY, NODE_IDS
from .host import AdapterHolder, ComfyAdaptedModel, backbone_config_of, vae_size_multiple

CHECKPOINTING = ("auto", "on", "off")
T = TypeVar("T")
AUTO_CHECKPOINT_DIM = 1536  # "auto" checkpoints every real Wan 2.1 size (1.3B: dim 1536; 14B: 5120)


def checkpointing_input() -> io.Combo.Input:
    return io.Combo.Input("gradient_checkpointing", options=list(CHECKPOINTING), default="auto", optional=True,
                          tooltip="Recompute the frozen blocks in the backward pass instead of keeping their "
                                  "activations: much less memory, one more forward of the frozen blocks per step. "
                                  "auto: on for every real Wan 2.1 size, off for tiny test models")


def use_checkpointing(choice: str, model) -> bool:
    if choice not in CHECKPOINTING:
        raise ValueError(f"gradient_checkpointing must be one of {CHECKPOINTING}, got {choice!r}")
    return choice == "on" or (choice == "auto" and backbone_config_of(model).dim >= AUTO_CHECKPOINT_DIM)


class TrainingOutOfMemory(torch.OutOfMemoryError):
    """Out of memory while training or tuning (still an OutOfMemoryError, so ComfyUI frees its models)."""


def train_through_comfyui(run: Callable[[], T], *, checkpointing: bool) -> T:
    """Run a training call; an out-of-memory error says what to change (saved files stay as they were)."""
    try:
        return run()
    except torch.OutOfMemoryError as err:
        if isinstance(err, TrainingOutOfMemory):
            raise
        fixes = ["lower batch_size or the image size"] + ([] if checkpointing else ["set gradient_checkpointing to on"])
        raise TrainingOutOfMemory(
            f"out of memory while training the adapter: {', '.join(fixes)}, or start ComfyUI with --lowvram so that "
            f"the model is offloaded block by block. Files already saved are unchanged. ({err})") from err


class ComfyEncoders:
    """Images through the VAE (each image a one-frame video) and instructions through the text encoder."""

    def __init__(self, model, vae, clip):
        self.model, self.vae, self.clip = model, vae, clip
        self.multiple = vae_size_multiple(vae)
        self._text: dict[str, torch.Tensor] = {}

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in 0..1 -> (B, C, 1, H/s, W/s) in the model's latent format (C, s: 16, 8 for the Wan 2.1
        VAE; 48, 16 for Wan 2.2's)."""
        h, w = images.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"an image of {w}x{h} reached the VAE, whose frames need sides that are multiples of "
                             f"{self.multiple}: set width and height (multiples of {self.multiple}) so that every "
                             "pair is scaled to one valid size")
        latents = [self.vae.encode(img.permute(1, 2, 0)[None].cpu()) for img in images]
        device = comfy.model_management.get_torch_device()
        return self.model.model.process_latent_in(torch.cat(latents)).to(device)

    def text(self, texts: list[str]) -> torch.Tensor:
        for t in texts:
            if t not in self._text:
                cond = self.clip.encode_from_tokens_scheduled(self.clip.tokenize(t), show_pbar=False)
                self._text[t] = cond[0][0].detach().clone()
        device = comfy.model_management.get_torch_device()
        return pad_contexts(*(self._text[t] for t in texts)).to(device)


def resolve_folder(folder: str) -> Path:
    path = Path(folder) if os.path.isabs(folder) else Path(folder_paths.get_input_directory()) / folder
    if not path.exists():
        raise ValueError(f"no folder of image pairs at {path}: give an absolute path, or a folder inside ComfyUI's "
                         "input folder holding NAME_src.png, NAME_tgt.png and NAME.txt (or a manifest.jsonl)")
    return path


def output_path(name: str) -> Path:
    name = name.strip().removesuffix(".safetensors")
    if not name or any(c in name for c in '/\\:*?"<>|'):
        raise ValueError(f"adapter name {name!r} must be a plain file name without folders or special characters")
    folder = Path(folder_paths.get_folder_paths(ADAPTER_FOLDER)[0])
    return folder / f"{name}.safetensors"


def image_batch_pairs(sources, targets, instructions: str, *, size) -> list[ImagePair]:
    """Pairs from IMAGE batches; scaled to ``size`` (height, width) when given."""
    if sources is None or targets is None:
        raise ValueError("connect both source_images and target_images (or neither, to train from pairs_folder)")
    if size is not None:
        def scale(images):
            return torch.nn.functional.interpolate(images[..., :3].movedim(-1, 1), size=size, mode="bilinear",
                                                   antialias=True).movedim(1, -1).clamp(0, 1)
        sources, targets = scale(sources), scale(targets)
    return pairs_from_tensors(sources, targets, [line for line in instructions.splitlines() if line.strip()]
                              or [""])


class TrainAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_IDS["train_adapter"], display_name="IMVE Train Adapter", category=CATEGORY,
            description="Trains an ImVideoEdit adapter on image pairs (the backbone stays frozen) and saves it to "
                        "models/imvideoedit/. Cancelling keeps the last saved checkpoint; 'resume' continues it.",
            inputs=[io.Model.Input("model", tooltip="The Wan 2.1 T2V model the adapter is for"),
                    io.Vae.Input("vae", tooltip="The Wan 2.1 VAE"),
                    io.Clip.Input("clip", tooltip="The umT5 text encoder (Load CLIP, type wan)"),
                    io.String.Input("pairs_folder", default="imvideoedit_pairs",
                                    tooltip="Folder of NAME_src.png, NAME_tgt.png, NAME.txt (or manifest.jsonl); "
                                            "relative paths are inside ComfyUI's input folder"),
                    io.String.Input("adapter_name", default="my_edit",
                                    tooltip="Saved as models/imvideoedit/<name>.safetensors"),
                    io.Int.Input("steps", default=2000, min=1, max=1_000_000, tooltip="Optimisation steps"),
                    io.Float.Input("learning_rate", default=1e-4, min=1e-7, max=1e-1, step=1e-5,
                                   tooltip="AdamW learning rate"),
                    io.Int.Input("batch_size", default=4, min=1, max=256, tooltip="Pairs per step"),
                    io.Int.Input("width", default=0, min=0, max=4096, step=16,
                                 tooltip="Scale every pair to this width (multiple of 16); 0 keeps the files' size"),
                    io.Int.Input("height", default=0, min=0, max=4096, step=16,
                                 tooltip="Scale every pair to this height (multiple of 16); 0 keeps the files' size"),
                    io.Combo.Input("resize_policy", options=list(RESIZE_POLICIES), default="error",
                                   tooltip="When a target's size differs from its source: error, or scale the target"),
                    io.Int.Input("save_every", default=250, min=1, max=100000,
                                 tooltip="Write the adapter and its resume state every N steps"),
                    io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                                 tooltip="Seeds the whole run"),
                    io.Boolean.Input("resume", default=False,
                                     tooltip="Continue from <name>.train-state.safetensors if it exists"),
                    io.Image.Input("source_images", optional=True,
                                   tooltip="Instead of a folder: before images, one per pair (a batch)"),
                    io.Image.Input("target_images", optional=True,
                                   tooltip="With source_images: the after images, same count and size"),
                    io.String.Input("instructions", optional=True, default="", multiline=True,
                                    tooltip="With source_images: one instruction per line for each pair, or one "
                                            "line for all of them"),
                    checkpointing_input(),
                    io.Int.Input("ffn_lora_rank", default=FFN_LORA_RANK, min=0, max=256, optional=True,
                                 tooltip="Also train a LoRA of this rank on every backbone FFN (the 3D attention "
                                         "stays frozen); 0 trains the PU-SDA blocks and gate alone")],
            outputs=[Adapter.Output(display_name="adapter"), io.String.Output(display_name="summary")],
            is_output_node=True)

    @classmethod
    def execute(cls, model, vae, clip, pairs_folder: str, adapter_name: str, steps: int, learning_rate: float,
                batch_size: int, width: int, height: int, resize_policy: str, save_every: int, seed: int,
                resume: bool, source_images=None, target_images=None, instructions: str = "",
                gradient_checkpointing: str = "auto", ffn_lora_rank: int = FFN_LORA_RANK) -> io.NodeOutput:
        if bool(width) != bool(height):
            raise ValueError(f"set both width and height (multiples of {vae_size_multiple(vae)}), or leave both at 0")
        out = output_path(adapter_name)
        size = validate_size((height, width), multiple=vae_size_multiple(vae)) if width else None
        if source_images is not None or target_images is not None:
            dataset = image_batch_pairs(source_images, target_images, instructions, size=size)
        else:
            dataset = PairDataset.from_path(resolve_folder(pairs_folder), resize_policy=resize_policy, size=size)
        backbone = backbone_config_of(model)  # an A14B expert trains on its own part of the noise levels
        cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=learning_rate, seed=seed, save_every=save_every,
                          gradient_checkpointing=use_checkpointing(gradient_checkpointing, model),
                          sigma_range=expert_sigma_range(backbone.expert))
        with torch.inference_mode(False):  # node execution runs under inference_mode; training needs autograd
            summary = train_through_comfyui(
                lambda: cls._train(model, vae, clip, dataset, cfg, out, resume, ffn_lora_rank=ffn_lora_rank),
                checkpointing=cfg.gradient_checkpointing)
        info = read_adapter_info(out)
        return io.NodeOutput(AdapterHolder.wrap(load_adapter(out), info), summary)

    @classmethod
    def _train(cls, model, vae, clip, dataset, cfg: TrainConfig, out: Path, resume: bool, *,
               ffn_lora_rank: int) -> str:
        backbone = backbone_config_of(model)
        adapter_cfg = dataclasses.replace(adapter_config_for(backbone), lora_rank=ffn_lora_rank)
        adapter = build_adapter(adapter_cfg, backbone, seed=cfg.seed,
                                device=comfy.model_management.get_torch_device())
        encoders = ComfyEncoders(model, vae, clip)
        data = EncodedPairs(dataset, encode_images=encoders.images, encode_text=encoders.text,
                            batch_size=cfg.batch_size, seed=cfg.seed)
        bar = comfy.utils.ProgressBar(cfg.steps)
        try:
            result = train_adapter(ComfyAdaptedModel(model, adapter), data, cfg, out_path=out, resume=resume,
                                   info={"pairs": len(dataset)},
                                   callback=lambda p: bar.update_absolute(p.step, cfg.steps),
                                   cancel=comfy.model_management.processing_interrupted)
        except TrainingCancelled:
            comfy.model_management.throw_exception_if_processing_interrupted()
            raise
        window = result.losses[-50:]
        return (f"{out.name}: {result.steps_done} steps on {len(dataset)} pairs, loss {result.losses[0]:.4f} -> "
                f"{sum(window) / max(len(window), 1):.4f} (mean of the last {len(window)})" if result.losses else
                f"{out.name}: already trained for {result.steps_done} steps")
