"""Edit Conditioning, the edit sampler (IMVE Sampler) and Gate Mask."""

from __future__ import annotations

import torch

import comfy.conds
import comfy.sample
import comfy.samplers
import latent_preview
from comfy_api.latest import io
from comfy_extras.nodes_model_advanced import ModelSamplingSD3

from ..imvideoedit_core.edit.frame_policy import fit_frames, latent_map_to_frames
from ..imvideoedit_core.edit.streams import CACHE_PLACEMENTS
from ..imvideoedit_core.model.config import A14B_T2V_BOUNDARY
from .catalog import CATEGORY, NODE_IDS
from .host import (CACHE_OPTION, SOURCE_COND, backbone_config_of, find_wrapper, latent_spatial_stride,
                   vae_size_multiple)

SOLVERS = ("euler", "heun")  # ComfyUI sampler names of the core's two solvers


def source_samples(latent: dict) -> torch.Tensor:
    """The samples of a video LATENT (batch, channels, frames, height, width), or a ValueError that says what to
    connect."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if samples is None or samples.ndim != 5:
        shape = None if samples is None else tuple(samples.shape)
        raise ValueError(f"expected a video LATENT (batch, channels, frames, height, width), got {shape}: connect the "
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
                        "multiple of 16 (32 with the Wan 2.2 VAE). The LATENT is the encoded source: sample it at "
                        "denoise 1 for a full edit, below 1 to start from the noised source (degrade-then-"
                        "regenerate). With first_frame, the LATENT starts from that edited frame, kept clean while "
                        "the rest is generated (Wan 2.2 TI2V 5B's first-frame mode; the source stream still sees the "
                        "source's own first frame).",
            inputs=[io.Vae.Input("vae", tooltip="The model's VAE (Load VAE): the Wan 2.1 VAE for Wan 2.1 and the "
                                                "A14B experts, the Wan 2.2 VAE for TI2V 5B"),
                    io.Image.Input("source", tooltip="The video to edit, as frames (e.g. IMVE Load Video Frames)"),
                    io.Conditioning.Input("positive", tooltip="The instruction, e.g. 'make the car red' "
                                                              "(CLIP Text Encode with the umT5 text encoder)"),
                    io.Conditioning.Input("negative", tooltip="The negative prompt (may be empty)"),
                    io.Image.Input("first_frame", optional=True,
                                   tooltip="Optional: the source's first frame after your edit (any image editor). "
                                           "It becomes the clean first frame of the result: TI2V 5B generates the "
                                           "rest from it; Wan 2.1 and A14B keep it fixed while sampling. Scaled to "
                                           "the encoded frames' size (same aspect ratio)")],
            outputs=[io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative"),
                     io.Latent.Output(display_name="latent"),
                     io.Image.Output(display_name="source_frames", tooltip="The frames actually encoded"),
                     io.String.Output(display_name="info", tooltip="What the frame and size policy did")])

    @classmethod
    def execute(cls, vae, source: torch.Tensor, positive: list, negative: list,
                first_frame: torch.Tensor | None = None) -> io.NodeOutput:
        fitted = fit_frames(source, multiple=vae_size_multiple(vae))
        latent = vae.encode(fitted.images)  # (1, C, F, H/s, W/s), not yet in the model's latent format
        out = {"samples": latent}
        info = fitted.describe()
        if first_frame is not None:
            out = first_frame_latent(vae, latent, first_frame_at(first_frame, fitted.images.shape[1:3]))
            info += "; first frame: the edited frame, kept clean"
        return io.NodeOutput(with_source(positive, latent), with_source(negative, latent), out, fitted.images, info)


def first_frame_at(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The edited first frame [1, H, W, 3] at the encoded frames' size (H, W); a ValueError if its aspect ratio
    differs by more than 2% (the edit would be stretched)."""
    if image.ndim != 4 or image.shape[-1] < 3:
        raise ValueError(f"first_frame must be an IMAGE [1, H, W, 3], got shape {tuple(image.shape)}")
    frame = image[:1, :, :, :3]
    h, w = frame.shape[1:3]
    if abs((w / h) / (size[1] / size[0]) - 1) > 0.02:
        raise ValueError(f"first_frame is {w}x{h} but the encoded frames are {size[1]}x{size[0]}: edit the source's "
                         "first frame at its own aspect ratio (e.g. from source_frames) and connect that")
    if (h, w) != tuple(size):
        frame = torch.nn.functional.interpolate(frame.movedim(-1, 1), size=tuple(size), mode="bilinear",
                                                align_corners=False, antialias=True).movedim(1, -1).clamp(0, 1)
    return frame


def first_frame_latent(vae, source_latent: torch.Tensor, frame: torch.Tensor) -> dict:
    """A LATENT whose latent frame 0 is the encoded edited frame, masked out of the noise (0 in noise_mask) as
    ComfyUI's Wan22ImageToVideoLatent does; the other frames are the source's (for strength below 1)."""
    first = vae.encode(frame)                                            # (1, C, 1, h, w): frame 0 is coded alone
    samples = source_latent.clone()
    samples[:, :, :1] = first.to(samples)
    mask = torch.ones(samples.shape[0], 1, *samples.shape[2:], dtype=torch.float32)  # (B, 1, F, h, w)
    mask[:, :, 0] = 0.0
    return {"samples": samples, "noise_mask": mask}


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
            inputs=[io.Model.Input("model", tooltip="The MODEL from IMVE Apply Adapter (Wan 2.2 A14B: the high-noise "
                                                    "expert's)"),
                    io.Conditioning.Input("positive", tooltip="positive from IMVE Edit Conditioning"),
                    io.Conditioning.Input("negative", tooltip="negative from IMVE Edit Conditioning"),
                    io.Latent.Input("latent", tooltip="latent from IMVE Edit Conditioning"),
                    io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                                 tooltip="The noise seed"),
                    io.Int.Input("steps", default=30, min=1, max=200, tooltip="Sampling steps"),
                    io.Float.Input("cfg", default=5.0, min=1.0, max=30.0, step=0.1,
                                   tooltip="Classifier-free guidance; 1 skips the negative branch (half the time)"),
                    io.Float.Input("shift", default=8.0, min=0.1, max=30.0, step=0.1,
                                   tooltip="Flow timestep shift (Wan 2.1 T2V in ComfyUI: 8.0; Wan 2.2 TI2V 5B: 5.0; "
                                           "A14B T2V: 12.0; lower for small clips)"),
                    io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                                   tooltip="1: edit from pure noise; below 1: start from the source noised to this "
                                           "level (keeps more of the source, edits less)"),
                    io.Combo.Input("solver", options=list(SOLVERS), default="euler",
                                   tooltip="euler: one model call per step; heun: two, more accurate"),
                    io.Combo.Input("source_cache", options=list(CACHE_PLACEMENTS), default="device",
                                   tooltip="Overrides Apply Adapter's placement of the source stream features"),
                    io.Model.Input("low_noise_model", optional=True,
                                   tooltip="Wan 2.2 A14B: the low-noise expert's MODEL from its own IMVE Apply "
                                           "Adapter; it samples the steps whose noise level is below the boundary"),
                    io.Float.Input("boundary", default=A14B_T2V_BOUNDARY, min=0.0, max=1.0, step=0.005,
                                   optional=True,
                                   tooltip="With low_noise_model: the noise level where the low-noise expert takes "
                                           "over (Wan 2.2 T2V: 0.875)")],
            outputs=[io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, model, positive, negative, latent: dict, seed: int, steps: int, cfg: float, shift: float,
                strength: float, solver: str, source_cache: str, low_noise_model=None,
                boundary: float = A14B_T2V_BOUNDARY) -> io.NodeOutput:
        experts = [model] if low_noise_model is None else expert_pair(model, low_noise_model)
        patched = []
        for expert in experts:
            find_wrapper(expert)  # refuse a MODEL without the adapter, with a message that says what to connect
            expert = model_with_shift(expert, shift)
            expert.model_options.setdefault("transformer_options", {})[CACHE_OPTION] = source_cache
            patched.append(expert)
        samples = latent["samples"]
        noise = comfy.sample.prepare_noise(samples, seed)
        switch = steps if len(patched) == 1 else switch_step(patched[0], steps, strength, solver, boundary)
        # two passes over one schedule, as two KSamplerAdvanced would run them: the high-noise expert adds the
        # noise and stops at the switch; the low-noise expert continues from there without new noise
        out = samples
        for expert, first, last in ((patched[0], 0, switch), (patched[-1], switch, steps)):
            if first >= last:
                continue
            callback = latent_preview.prepare_callback(expert, last - first)
            out = comfy.sample.sample(expert, noise if first == 0 else torch.zeros_like(noise), steps, cfg, solver,
                                      "simple", positive, negative, out, denoise=strength,
                                      start_step=first, last_step=last, force_full_denoise=last == steps,
                                      noise_mask=latent.get("noise_mask"), callback=callback, seed=seed)
        return io.NodeOutput({**latent, "samples": out})


def expert_pair(high, low) -> list:
    """[high, low] after checking the experts' marks (IMVE Wan 2.2 Expert) are not swapped or repeated."""
    marks = [backbone_config_of(m).expert for m in (high, low)]
    if marks[0] == "low" or marks[1] == "high" or (marks[0] and marks[0] == marks[1]):
        raise ValueError(f"the experts look swapped: 'model' is marked {marks[0] or 'unmarked'} and "
                         f"'low_noise_model' {marks[1] or 'unmarked'}; connect the high-noise expert's MODEL to "
                         "'model' and the low-noise expert's to 'low_noise_model'")
    return [high, low]


def switch_step(model, steps: int, strength: float, solver: str, boundary: float) -> int:
    """The first step whose noise level is below ``boundary`` on the sampler's own schedule (with ``strength``):
    the high-noise expert samples the steps before it (sigma >= boundary, as in Wan 2.2's own loop)."""
    sigmas = comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler=solver, scheduler="simple",
                                     denoise=strength).sigmas
    return int((sigmas[:-1] >= boundary).sum())


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
        stride = latent_spatial_stride(model)
        return io.NodeOutput(latent_map_to_frames(gate, height=h * stride, width=w * stride))
