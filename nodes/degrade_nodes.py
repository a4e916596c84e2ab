"""Degrade Latent and Animate Image (Dreamix): a coarser sampler start, and a still image made into a coarse video.

Degrade Latent changes only the LATENT the sampler starts from; the source that Edit Conditioning attached to the
conditioning stays the clean encoded video, so the adapter still sees every detail of the source.
"""

from __future__ import annotations

import torch

from comfy_api.latest import io

from ..imvideoedit_core.edit.degrade import MOTIONS, TEMPORAL_FILLS, DegradeConfig, animate_image, degrade_latent
from .catalog import CATEGORY, NODE_IDS
from .edit_nodes import source_samples


class DegradeLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_IDS["degrade_latent"], display_name="IMVE Degrade Latent", category=CATEGORY,
            description="Coarsens the sampler's starting latent (degrade-then-regenerate): spatial blurs away "
                        "detail, temporal keeps every k-th latent frame. Use with IMVE Sampler's strength below 1: "
                        "the sampler regenerates what was removed, so it can edit more while layout and motion "
                        "follow the start. The source attached to the conditioning stays clean.",
            inputs=[io.Latent.Input("latent", tooltip="latent from IMVE Edit Conditioning (the encoded source)"),
                    io.Int.Input("spatial_factor", default=2, min=1, max=16,
                                 tooltip="Downsample height and width by this and upsample back (1 = keep)"),
                    io.Int.Input("temporal_factor", default=1, min=1, max=16,
                                 tooltip="Keep every k-th latent frame (one latent frame = 4 video frames) and "
                                         "fill the others back (1 = keep all)"),
                    io.Combo.Input("temporal_fill", options=list(TEMPORAL_FILLS), default="linear",
                                   tooltip="How dropped frames come back: hold the last kept frame, or blend "
                                           "linearly between kept frames")],
            outputs=[io.Latent.Output(display_name="latent", tooltip="The degraded start for IMVE Sampler")])

    @classmethod
    def execute(cls, latent: dict, spatial_factor: int, temporal_factor: int, temporal_fill: str) -> io.NodeOutput:
        samples = source_samples(latent)
        config = DegradeConfig(spatial_factor=spatial_factor, temporal_factor=temporal_factor,
                               temporal_fill=temporal_fill)
        return io.NodeOutput({**latent, "samples": degrade_latent(samples, config)})


class AnimateImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_IDS["animate_image"], display_name="IMVE Animate Image", category=CATEGORY,
            description="Turns one image into a coarse video: the image repeated under a smooth camera motion "
                        "(zoom, pan or a perspective tilt; borders mirrored). Edit it (IMVE Edit Conditioning, "
                        "IMVE Sampler at strength about 0.75) to bring the still to life.",
            inputs=[io.Image.Input("image", tooltip="One image (the first of a batch is refused: pick one)"),
                    io.Int.Input("frames", default=33, min=1, max=1025, step=4,
                                 tooltip="Frames of the clip; Wan wants 4k+1 (33, 81)"),
                    io.Combo.Input("motion", options=list(MOTIONS), default="zoom_in",
                                   tooltip="The camera motion: zoom in/out, pan in a direction, or perspective "
                                           "(the plane tilts away at the top)"),
                    io.Float.Input("amount", default=0.3, min=0.0, max=1.0, step=0.05,
                                   tooltip="Motion reached at the last frame: zoom 1+amount times, pan amount "
                                           "image widths, perspective tilt")],
            outputs=[io.Image.Output(display_name="frames", tooltip="The coarse video [frames, H, W, 3]")])

    @classmethod
    def execute(cls, image: torch.Tensor, frames: int, motion: str, amount: float) -> io.NodeOutput:
        if image.ndim == 4 and image.shape[0] > 1:
            raise ValueError(f"got a batch of {image.shape[0]} images; Animate Image takes one: pick one with "
                             "ImageFromBatch (batch_index, length 1)")
        return io.NodeOutput(animate_image(image, frames=frames, motion=motion, amount=amount))
