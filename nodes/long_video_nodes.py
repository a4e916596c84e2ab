"""Long Video Edit: a video file edited window by window into a new file, memory bounded by one window."""

from __future__ import annotations

import math
import os

import torch

import comfy.model_management
import comfy.sample
import folder_paths
import latent_preview
from comfy_api.latest import InputImpl, io, ui

from ..imvideoedit_core.edit.long_video import EditWindowFn, WindowConfig, WindowJob, edit_video_file
from ..imvideoedit_core.io.video import ReadOptions
from .catalog import CATEGORY, NODE_IDS
from .edit_nodes import SOLVERS, model_with_shift, with_source
from .host import SHARED_OPTION, find_wrapper, vae_size_multiple
from .video_nodes import input_videos

SHARING = {"off": (False, False), "attention": (True, False), "adapter": (False, True),
           "attention+adapter": (True, True)}  # name -> (share_attention, share_adapter)


class VaeCodec:
    """ComfyUI's VAE as the core's frame codec: [T, H, W, 3] <-> (1, C, T', h, w)."""

    def __init__(self, vae):
        self.vae = vae

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(frames)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        images = self.vae.decode(latent)
        return images.reshape(-1, *images.shape[-3:]).float().cpu()   # (T, H, W, 3)


def frame_multiple(requested: int, vae_multiple: int) -> int:
    """The multiple the frames are scaled to: the requested one raised to the least common multiple with what the
    VAE needs (16 for Wan 2.1's, 32 for Wan 2.2's), so 16 with a Wan 2.2 VAE becomes 32; 0 (keep the size) stays."""
    return math.lcm(requested, vae_multiple) if requested else 0


def temporal_stride(vae) -> int:
    """Video frames per latent frame of this VAE (Wan 2.1: 4)."""
    formula = getattr(vae, "downscale_index_formula", None)
    return int(formula[0]) if formula else 1


def comfy_window_editor(model, positive: list, negative: list, *, seed: int, steps: int, cfg: float, shift: float,
                        solver: str) -> EditWindowFn:
    """Window jobs sampled by ComfyUI's own sampler: pinned frames through the latent's noise mask."""
    patched = model_with_shift(model, shift)

    def edit(job: WindowJob) -> torch.Tensor:
        m = patched
        if job.shared is not None:
            m = patched.clone()
            m.model_options = {**m.model_options, "transformer_options": {
                **m.model_options.get("transformer_options", {}), SHARED_OPTION: job.shared}}
        latent_image, noise_mask = job.source, None
        if job.keep is not None:  # 1 = sample, 0 = keep the known (edited) latent, noised to the current level
            keep = job.keep.expand(1, 1, *job.source.shape[2:])                      # (1, 1, F, h, w)
            latent_image = torch.where(keep > 0, job.known, job.source)
            noise_mask = 1 - keep
        noise = comfy.sample.prepare_noise(job.source, seed + 1 + job.index)
        callback = latent_preview.prepare_callback(m, steps)  # progress, preview, and the cancel button
        return comfy.sample.sample(m, noise, steps, cfg, solver, "simple", with_source(positive, job.source),
                                   with_source(negative, job.source), latent_image, noise_mask=noise_mask,
                                   callback=callback, seed=seed + 1 + job.index).cpu()
    return edit


class LongVideoEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_IDS["long_video_edit"], display_name="IMVE Long Video Edit", category=CATEGORY,
            description="Edits a video of any length from the input folder into output/, window by window: "
                        "memory is bounded by one window, not by the video. Consecutive windows overlap and are "
                        "cross-faded. With sharing on, keyframes spread over the video are edited first and "
                        "shared with every window, to keep the edit the same from window to window.",
            is_output_node=True,
            inputs=[io.Model.Input("model", tooltip="The MODEL from IMVE Apply Adapter"),
                    io.Vae.Input("vae", tooltip="The model's VAE (Load VAE): Wan 2.1's, or Wan 2.2's for TI2V 5B"),
                    io.Conditioning.Input("positive", tooltip="The instruction (CLIP Text Encode), e.g. 'make the "
                                                              "car red'; no Edit Conditioning needed"),
                    io.Conditioning.Input("negative", tooltip="The negative prompt (may be empty)"),
                    io.Combo.Input("video", options=input_videos(), upload=io.UploadType.video,
                                   tooltip="A video in ComfyUI's input folder; read frame by frame"),
                    io.String.Input("filename_prefix", default="imvideoedit/long_edit",
                                    tooltip="Where the edited mp4 goes, under ComfyUI's output folder"),
                    io.Int.Input("window", default=33, min=1, max=1025,
                                 tooltip="Frames per window (1 + 4n for Wan; 81 is what Wan 2.1 was trained on, "
                                         "smaller windows need less memory)"),
                    io.Int.Input("overlap", default=5, min=0, max=1024,
                                 tooltip="Frames consecutive windows share and cross-fade (0 or 1 + 4n for Wan)"),
                    io.Int.Input("keyframes", default=3, min=0, max=16,
                                 tooltip="Evenly spaced keyframes edited first and shared with every window when "
                                         "sharing is on; 0 turns sharing off"),
                    io.Combo.Input("sharing", options=list(SHARING), default="off",
                                   tooltip="How windows see the edited keyframes: as pinned frames in their 3D "
                                           "attention, through the adapter's keys/values, both, or not at all. On "
                                           "ToyWorld 'adapter' cut drift but cost fidelity; try it when windows "
                                           "drift apart"),
                    io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                                 tooltip="The noise seed (window i uses seed + 1 + i)"),
                    io.Int.Input("steps", default=30, min=1, max=200, tooltip="Sampling steps per window"),
                    io.Float.Input("cfg", default=5.0, min=1.0, max=30.0, step=0.1,
                                   tooltip="Classifier-free guidance; 1 skips the negative branch"),
                    io.Float.Input("shift", default=8.0, min=0.1, max=30.0, step=0.1,
                                   tooltip="Flow timestep shift (Wan 2.1 T2V: 8.0)"),
                    io.Combo.Input("solver", options=list(SOLVERS), default="euler",
                                   tooltip="euler: one model call per step; heun: two"),
                    io.Int.Input("max_frames", default=0, min=0, max=1000000,
                                 tooltip="Edit only the first this many frames; 0 = the whole video"),
                    io.Int.Input("resize_to_multiple", default=16, min=0, max=128,
                                 tooltip="Scale each side to the nearest multiple of this (16 for Wan; raised to 32 "
                                         "with the Wan 2.2 VAE)")],
            outputs=[io.String.Output(display_name="path", tooltip="The written mp4"),
                     io.String.Output(display_name="info"),
                     io.Video.Output(display_name="video", tooltip="The written H.264 mp4 as a VIDEO (for Save "
                                                                     "Video, Preview Video, or other video nodes)")])

    @classmethod
    def execute(cls, model, vae, positive: list, negative: list, video: str, filename_prefix: str, window: int,
                overlap: int, keyframes: int, sharing: str, seed: int, steps: int, cfg: float, shift: float,
                solver: str, max_frames: int, resize_to_multiple: int) -> io.NodeOutput:
        find_wrapper(model)  # a MODEL without the adapter gets a message that says what to connect
        share_attention, share_adapter = SHARING[sharing]
        config = WindowConfig(window=window, overlap=overlap, keyframes=keyframes, share_attention=share_attention,
                              share_adapter=share_adapter)
        source = folder_paths.get_annotated_filepath(video)
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix,
                                                                               folder_paths.get_output_directory())
        os.makedirs(folder, exist_ok=True)
        output = os.path.join(folder, f"{name}_{counter:05}_.mp4")
        def on_window(done: int, total: int) -> None:  # each window shows its own step progress and preview
            comfy.model_management.throw_exception_if_processing_interrupted()

        edit = comfy_window_editor(model, positive, negative, seed=seed, steps=steps, cfg=cfg, shift=shift,
                                   solver=solver)
        multiple = frame_multiple(resize_to_multiple, vae_size_multiple(vae))
        result = edit_video_file(source, output, codec=VaeCodec(vae), edit=edit, config=config,
                                 options=ReadOptions(max_frames=max_frames or None, resize_to_multiple=multiple),
                                 stride=temporal_stride(vae), on_window=on_window)
        info = (f"{os.path.basename(output)}: {result.frames} frames in {result.windows} windows"
                + (f", sides scaled to multiples of {multiple} (the VAE's)" if multiple != resize_to_multiple else "")
                + (f", {result.dropped} trailing frames dropped (1 + 4n rule)" if result.dropped else "")
                + f", codec {result.codec}, at most {result.peak_frames_held} frames held")
        preview = ui.PreviewVideo([ui.SavedResult(os.path.basename(output), subfolder, io.FolderType.output)])
        return io.NodeOutput(output, info, InputImpl.VideoFromFile(output), ui=preview)

    @classmethod
    def validate_inputs(cls, video: str) -> bool | str:
        if not folder_paths.exists_annotated_filepath(video):
            return f"no video named {video!r} in the input folder: upload it or pick another"
        return True
