"""Edit Mask: restrict an edit to a MASK, with a hard or a progressive (narrowing) boundary.

ComfyUI already keeps a LATENT's ``noise_mask`` on the noised ``latent_image`` before every model call and on the
clean one after it (``comfy.samplers.KSamplerX0Inpaint``; ``latent_image`` is moved into the model's latent
format by the sampler first), so the source LATENT from Edit Conditioning needs only the mask. The progressive
band is a ``denoise_mask_function`` in the MODEL's options: ComfyUI calls it with each call's sigma and the run's
sigmas, and it returns the core's edit weight of that step.
"""

from __future__ import annotations

import torch

from comfy_api.latest import io

from ..imvideoedit_core.model.wan_strides import VAE_TEMPORAL_STRIDE
from ..imvideoedit_core.edit.masks import BOUNDARIES, MaskBoundary, binary, edit_weight, latent_mask, step_index
from .catalog import CATEGORY, NODE_IDS
from .edit_nodes import source_samples
from .host import latent_spatial_stride



class ProgressiveBand:
    """A ``denoise_mask_function``: the edit weight of the step ComfyUI is sampling (band narrowing to the mask)."""

    def __init__(self, boundary: MaskBoundary):
        self.boundary = boundary

    def __call__(self, sigma: torch.Tensor, denoise_mask: torch.Tensor, extra_options: dict) -> torch.Tensor:
        step, total = step_index(float(sigma.flatten()[0]), extra_options["sigmas"])
        weight = edit_weight(denoise_mask[:, :1], boundary=self.boundary, step=step, total=total)  # (B, 1, F, h, w)
        return weight.expand_as(denoise_mask)


def with_boundary(model, boundary: MaskBoundary):
    """A clone of MODEL whose masked sampling uses ``boundary`` (hard: ComfyUI's plain noise mask)."""
    patched = model.clone()
    current = patched.model_options.get("denoise_mask_function")
    if boundary.kind == "progressive":
        patched.set_model_denoise_mask_function(ProgressiveBand(boundary))
    elif isinstance(current, ProgressiveBand):  # an earlier Edit Mask's band: hard means the mask alone
        patched.model_options.pop("denoise_mask_function")
    return patched


class EditMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_IDS["edit_mask"], display_name="IMVE Edit Mask", category=CATEGORY,
            description="Restricts the edit to a mask (white = edit). Outside it every step keeps the source, so "
                        "the result there equals the source. progressive: early steps may also edit a band around "
                        "the mask that narrows to nothing by the last step, which hides the seam. IMVE Gate Mask "
                        "of a first edit can serve as the mask of a second.",
            inputs=[io.Model.Input("model", tooltip="The MODEL from IMVE Apply Adapter"),
                    io.Latent.Input("latent", tooltip="latent from IMVE Edit Conditioning (the encoded source)"),
                    io.Mask.Input("mask", tooltip="Where to edit (1) and keep (0): one mask for all frames or one "
                                                  "per frame, the size of Edit Conditioning's source_frames"),
                    io.Combo.Input("boundary", options=list(BOUNDARIES), default="progressive",
                                   tooltip="hard: the mask at every step; progressive: a band around the mask "
                                           "that narrows over the steps, for a seamless boundary"),
                    io.Int.Input("band_width", default=32, min=0, max=512, step=8,
                                 tooltip="progressive: how far (pixels) the edit may spill past the mask at the "
                                         "first step; one latent pixel is 8 pixels (16 with the Wan 2.2 VAE)")],
            outputs=[io.Model.Output(display_name="model"),
                     io.Latent.Output(display_name="latent", tooltip="The source LATENT with its noise_mask set")])

    @classmethod
    def execute(cls, model, latent: dict, mask: torch.Tensor, boundary: str, band_width: int) -> io.NodeOutput:
        samples = source_samples(latent)
        _, _, frames, h, w = samples.shape
        stride = latent_spatial_stride(model)  # 8: the Wan 2.1 VAE; 16: Wan 2.2's (TI2V 5B)
        grid = latent_mask(mask.detach().float().cpu(), frames=VAE_TEMPORAL_STRIDE * (frames - 1) + 1,
                           height=h * stride, width=w * stride,
                           temporal_stride=VAE_TEMPORAL_STRIDE, spatial_stride=stride)
        band = MaskBoundary(kind=boundary, band=band_width / stride)
        return io.NodeOutput(with_boundary(model, band), {**latent, "noise_mask": binary(grid)})
