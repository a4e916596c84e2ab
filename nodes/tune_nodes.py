"""Tune On Keyframe: adapt a copy of an adapter to one clip from an edited keyframe (first-frame guidance)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

import comfy.model_management
import comfy.utils
from comfy_api.latest import io

from ..imvideoedit_core.model.adapter_file import AdapterFileInfo, read_adapter_info, save_adapter
from ..imvideoedit_core.model.config import expert_sigma_range
from ..imvideoedit_core.train.keyframe_tuning import (KeyframeTuning, TuneResult, check_keyframes,
                                                      copy_start_adapter, start_defaults, tune_on_keyframe)
from ..imvideoedit_core.train.trainer import TrainingCancelled
from .adapter_nodes import Adapter
from .catalog import CATEGORY, NODE_IDS
from .host import AdapterHolder, ComfyAdaptedModel, backbone_config_of, vae_size_multiple
from .train_nodes import (ComfyEncoders, checkpointing_input, output_path, train_through_comfyui,
                          use_checkpointing)


FRESH = "(fresh adapter)"  # the info path of a zero-start adapter, which has no file


class TuneOnKeyframe(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_IDS["tune_on_keyframe"], display_name="IMVE Tune On Keyframe", category=CATEGORY,
            description="Edit one frame of the clip with any image tool, then tune a copy of the adapter on that "
                        "(source frame, edited frame) pair (with random small rotations, shifts, crops and shears "
                        "of both images). Connect the tuned adapter to IMVE Apply Adapter to edit the whole clip. "
                        "The input adapter is left as it is. Without an adapter the node starts from a fresh one "
                        "sized for the MODEL that starts by copying the source (no adapter file needed; by default it "
                        "tunes at half size first, then at full size).",
            inputs=[io.Model.Input("model", tooltip="The Wan T2V model the adapter is for (an A14B expert: marked "
                                                    "with IMVE Wan 2.2 Expert; tuned on its own noise levels)"),
                    Adapter.Input("adapter", optional=True,
                                  tooltip="The adapter to start from (IMVE Load Adapter); leave it unconnected to "
                                          "start from a fresh adapter (no adapter file needed)"),
                    io.Vae.Input("vae", tooltip="The model's VAE (Wan 2.1 VAE; Wan 2.2 VAE for TI2V 5B)"),
                    io.Clip.Input("clip", tooltip="The umT5 text encoder (Load CLIP, type wan)"),
                    io.Image.Input("source_keyframe",
                                   tooltip="The original frame (e.g. Get Image from Batch on the video's frames), or "
                                           "several keyframes as one batch (e.g. first, middle and last)"),
                    io.Image.Input("edited_keyframe",
                                   tooltip="The same frame(s) after your edit, at the same size and in the same order"),
                    io.String.Input("instruction", default="", multiline=True,
                                    tooltip="The instruction you will edit the video with (the same text as the "
                                            "positive prompt)"),
                    io.Int.Input("steps", default=0, min=0, max=10000,
                                 tooltip="Tuning steps at full size; 0 = the measured default for the start: 300 "
                                         "from a trained adapter; from a fresh one 800 steps at half size, then "
                                         "100 at full size (as much compute as 300 full-size steps)"),
                    io.Float.Input("learning_rate", default=0.0, min=0.0, max=1e-2, step=1e-5,
                                   tooltip="AdamW learning rate; 0 = the measured default for the start: 3e-4 from "
                                           "a trained adapter, 1e-3 from a fresh one"),
                    io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=True,
                                 tooltip="Seeds the augmentations, noise levels and noise"),
                    io.Boolean.Input("augment", default=True,
                                     tooltip="Train on random small rotations, shifts, crops and shears of the pair "
                                             "(the same on both images): generalises to the moving frames"),
                    io.String.Input("save_name", default="",
                                    tooltip="Also save the tuned adapter as models/imvideoedit/<name>.safetensors; "
                                            "empty: keep it in memory only"),
                    io.Image.Input("video", optional=True,
                                   tooltip="Optional: the frames you will edit (e.g. IMVE Edit Conditioning's "
                                           "source_frames); only their size is checked against the keyframes"),
                    checkpointing_input()],
            outputs=[Adapter.Output(display_name="adapter"), io.String.Output(display_name="summary")])

    @classmethod
    def execute(cls, model, vae, clip, source_keyframe, edited_keyframe, instruction: str, steps: int,
                learning_rate: float, seed: int, augment: bool, save_name: str = "", video=None,
                adapter: AdapterHolder | None = None, gradient_checkpointing: str = "auto") -> io.NodeOutput:
        source, edited = source_keyframe[..., :3], edited_keyframe[..., :3]  # [K, H, W, 3]: K keyframes
        video_size = tuple(video.shape[1:3]) if video is not None else None
        check_keyframes(source, edited, video_size=video_size, multiple=vae_size_multiple(vae))  # before loading
        if not instruction.strip():
            raise ValueError("the instruction is empty: write the edit, the same text as the positive prompt")
        out = output_path(save_name) if save_name.strip() else None
        defaults = start_defaults(zero_start=adapter is None)
        backbone = backbone_config_of(model)  # an A14B expert tunes on its own part of the noise levels
        config = KeyframeTuning(steps=steps or defaults.steps, lr=learning_rate or defaults.lr, seed=seed,
                                augment=augment, sigma_range=expert_sigma_range(backbone.expert),
                                low_res_steps=0 if steps else defaults.low_res_steps,
                                gradient_checkpointing=use_checkpointing(gradient_checkpointing, model))
        if adapter is None:
            adapter = cls._fresh(model, seed)
        with torch.inference_mode(False):  # node execution runs under inference_mode; training needs autograd
            result = train_through_comfyui(
                lambda: cls._tune(model, adapter, vae, clip, source.clone(), edited.clone(), instruction, config,
                                  video_size), checkpointing=config.gradient_checkpointing)
        tuned = result.adapter.to(comfy.model_management.unet_offload_device())
        window = min(20, len(result.losses))
        first, last = (sum(part) / window for part in (result.losses[:window], result.losses[-window:]))
        training = {"keyframe_tuning": {"steps": result.steps_done, "low_res_steps": config.low_res_steps,
                                        "full_steps_equivalent": result.full_steps_equivalent,
                                        "lr": config.lr, "augment": augment,
                                        "seed": seed, "instruction": instruction.strip(),
                                        "base": adapter.info.path.name}}
        if out is not None:
            save_adapter(out, tuned, training=training)
            info = read_adapter_info(out)
        else:
            info = dataclasses.replace(adapter.info, training=training)
        start = "a fresh adapter" if adapter.info.path.name == FRESH else adapter.info.path.name
        half = f" ({config.low_res_steps} at half size)" if config.low_res_steps else ""
        summary = (f"tuned {start} {result.steps_done} steps{half} at lr {config.lr:g} on "
                   f"{source.shape[0]} keyframe(s) of {source.shape[2]}x{source.shape[1]} "
                   f"({'augmented' if augment else 'no augmentation'}): loss {first:.4f} -> {last:.4f} "
                   f"(means of the first and last {window})" + (f"; saved as {out.name}" if out else ""))
        return io.NodeOutput(AdapterHolder.wrap(tuned, info), summary)

    @classmethod
    def _fresh(cls, model, seed: int) -> AdapterHolder:
        """A fresh start: an adapter sized for the connected MODEL, as IMVE Train Adapter would build it, set up to
        pull the edit towards the source (the copy start: ahead of a zero update at every tuning length)."""
        backbone = backbone_config_of(model)
        adapter = copy_start_adapter(backbone, seed=seed)
        return AdapterHolder.wrap(adapter, AdapterFileInfo(path=Path(FRESH), adapter_config=adapter.config,
                                                           backbone_config=backbone))

    @classmethod
    def _tune(cls, model, holder: AdapterHolder, vae, clip, source, edited, instruction: str,
              config: KeyframeTuning, video_size) -> TuneResult:
        encoders = ComfyEncoders(model, vae, clip)
        bar = comfy.utils.ProgressBar(config.low_res_steps + config.steps)
        try:
            return tune_on_keyframe(lambda tuned: ComfyAdaptedModel(model, tuned), holder.adapter, source=source,
                                    edited=edited, instruction=instruction,
                                    encode_images=encoders.images, encode_text=encoders.text, config=config,
                                    video_size=video_size, multiple=encoders.multiple,
                                    callback=lambda p: bar.update_absolute(p.step, p.total),
                                    cancel=comfy.model_management.processing_interrupted)
        except TrainingCancelled:
            comfy.model_management.throw_exception_if_processing_interrupted()
            raise
