"""Edit Conditioning, the edit sampler (IMVE Sampler) and Gate Mask."""

from __future__ import annotations

import torch

import comfy.conds
import comfy.sample
import latent_preview
from comfy_api.latest import io
from comfy_extras.nodes_model_advanced import ModelSamplingSD3

from ..imvideoedit_core.edit.frame_policy import fit_frames, latent_map_to_frames
from ..imvideoedit_core.edit.streams import CACHE_PLACEMENTS
from .catalog import CATEGORY, NODE_IDS
from .host import CACHE_OPTION, SOURCE_COND, find_wrapper

SOLVERS = ("euler", "heun")  # ComfyUI sampler names of the core's two solvers


def source_samples(latent: dict) -> torch.Tensor:
    """The samples of a video LATENT (batch, 16, frames, height, width), or a ValueError that says what to connect."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if samples is None or samples.ndim != 5:
        shape = None if samples is None else tuple(samples.shape)
        raise ValueError(f"expected a video LATENT (batch, 16, frames, height, width), got {shape}: connect the "
                         "latent output of IMVE Edit Conditioning")
    return samples


def with_source(conditioning: list, latent: torch.Tensor) -> list:
    """A copy of a CONDITIONING whose every entry carries the source latent as a model input."""
    return [[cond, {**extra, "model_conds": {**extra.get("model_conds", {}),
                                              SOURCE_COND: comfy.conds.CONDRegular(latent)}}]
            for cond, extra in conditioning]


class EditConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_IDS["edit_conditioning"], display_name="IMVE Edit Conditioning", category=CATEGORY,
            description="Encodes the source video and attaches it to both conditionings. Keeps the first 4k+1 "
                        "frames (Wan's frame rule; at most 3 are dropped) and scales each side to the nearest "
                        "multiple of 16. The LATENT is the encoded source: sample it at denoise 1 for a full edit, "
                        "below 1 to start from the noised source (degrade-then-regenerate).",
            inputs=[io.Vae.Input("vae", tooltip="The Wan 2.1 VAE (Load VAE)"),
                    io.Image.Input("source", tooltip="The video to edit, as frames (e.g. IMVE Load Video Frames)"),
                    io.Conditioning.Input("positive", tooltip="The instruction, e.g. 'make the car red' "
                                                              "(CLIP Text Encode with the umT5 text encoder)"),
                    io.Conditioning.Input("negative", tooltip="The negative prompt (may be empty)")],
            outputs=[io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative"),
                     io.Latent.Output(display_name="latent"),
                     io.Image.Output(display_name="source_frames", tooltip="The frames actually encoded"),
                     io.String.Output(display_name="info", tooltip="What the frame and size policy did")])

    @classmethod
    def execute(cls, vae, source: torch.Tensor, positive: list, negative: list) -> io.NodeOutput:
        fitted = fit_frames(source)
        latent = vae.encode(fitted.images)  # (1, 16, F, H/8, W/8), not yet in the model's latent format
        return io.NodeOutput(with_source(positive, latent), with_source(negative, latent), {"samples": latent},
                             fitted.images, fitted.describe())


def model_with_shift(model, shift: float):
    """A clone of MODEL sampling flow-matching timesteps with ``shift``: ComfyUI's own ModelSamplingSD3, called."""
    node = ModelSamplingSD3
    if hasattr(node, "patch"):  # the classic node API
        return node().patch(model, shift)[0]
    return node.execute(model=model, shift=shift).args[0]  # should ComfyUI move it to its V3 API


class EditSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_IDS["sampler"], display_name="IMVE Sampler", category=CATEGORY,
            description="Samples an edit with ComfyUI's own sampling (live previews, cancel, memory management). "
                        "KSampler works as well; this node adds the flow shift, the strength and the source cache.",
            inputs=[io.Model.Input("model", tooltip="The MODEL from IMVE Apply Adapter"),
                    io.Conditioning.Input("positive", tooltip="positive from IMVE Edit Conditioning"),
                    io.Conditioning.Input("negative", tooltip="negative from IMVE Edit Conditioning"),
                    io.Latent.Input("latent", tooltip="latent from IMVE Edit Conditioning"),
                    io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                                 tooltip="The noise seed"),
                    io.Int.Input("steps", default=30, min=1, max=200, tooltip="Sampling steps"),
                    io.Float.Input("cfg", default=5.0, min=1.0, max=30.0, step=0.1,
                                   tooltip="Classifier-free guidance; 1 skips the negative branch (half the time)"),
                    io.Float.Input("shift", default=8.0, min=0.1, max=30.0, step=0.1,
                                   tooltip="Flow timestep shift (Wan 2.1 T2V: 8.0; lower for small clips)"),
                    io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                                   tooltip="1: edit from pure noise; below 1: start from the source noised to this "
                                           "level (keeps more of the source, edits less)"),
                    io.Combo.Input("solver", options=list(SOLVERS), default="euler",
                                   tooltip="euler: one model call per step; heun: two, more accurate"),
                    io.Combo.Input("source_cache", options=list(CACHE_PLACEMENTS), default="device",
                                   tooltip="Overrides Apply Adapter's placement of the source stream features")],
            outputs=[io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, model, positive, negative, latent: dict, seed: int, steps: int, cfg: float, shift: float,
                strength: float, solver: str, source_cache: str) -> io.NodeOutput:
        find_wrapper(model)  # refuse a MODEL without the adapter, with a message that says what to connect
        patched = model_with_shift(model, shift)
        options = patched.model_options.setdefault("transformer_options", {})
        options[CACHE_OPTION] = source_cache
        samples = latent["samples"]
        noise = comfy.sample.prepare_noise(samples, seed)
        callback = latent_preview.prepare_callback(patched, steps)
        out = comfy.sample.sample(patched, noise, steps, cfg, solver, "simple", positive, negative, samples,
                                  denoise=strength, noise_mask=latent.get("noise_mask"),
                                  callback=callback, seed=seed)
        return io.NodeOutput({**latent, "samples": out})


class GateMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_IDS["gate_mask"], display_name="IMVE Gate Mask", category=CATEGORY,
            description="Where the last edit happened: the adapter's text-guided gate, averaged over steps and "
                        "blocks, as one mask per video frame (1 = edited, 0 = kept from the source).",
            inputs=[io.Model.Input("model", tooltip="The MODEL from IMVE Apply Adapter that sampled the edit"),
                    io.Latent.Input("samples", tooltip="The sampled LATENT (runs this node after sampling and "
                                                       "sets the mask size)")],
            outputs=[io.Mask.Output(display_name="mask")])

    @classmethod
    def execute(cls, model, samples: dict) -> io.NodeOutput:
        gate = find_wrapper(model).gates.mean()
        if gate is None:
            raise ValueError("no edit has been sampled with this MODEL yet: connect the sampler's LATENT output "
                             "to 'samples' so the gate is read after sampling")
        _, _, frames, h, w = samples["samples"].shape
        gate = gate[0]                                                   # (F', h', w'): one map per latent frame
        if gate.shape[0] != frames:
            raise ValueError(f"the last edit had {gate.shape[0]} latent frames, 'samples' has {frames}: connect "
                             "the LATENT that this MODEL sampled")
        return io.NodeOutput(latent_map_to_frames(gate, height=h * 8, width=w * 8))
