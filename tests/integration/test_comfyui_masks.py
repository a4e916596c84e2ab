"""Edit Mask inside a real ComfyUI (in-process, CPU, tiny models): exact preservation, the band, user errors."""

from __future__ import annotations

import pytest
import torch

from test_comfyui_inprocess import adapter_file, conditioning, output, patched_model, tiny_wan  # noqa: F401
from imvideoedit_core.edit.masks import MaskBoundary, mask_hook
from imvideoedit_core.edit.sampling import EditRequest, SamplerConfig, edit_latent, flow_sigmas
from imvideoedit_core.edit.streams import TwoStreamRunner


def source_latent() -> torch.Tensor:
    return torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(4))  # 9 frames of 64x64


def pixel_mask() -> torch.Tensor:
    mask = torch.zeros(9, 64, 64)
    mask[:, 16:40, 16:40] = 1  # latent pixels 2..4
    return mask


def edit_mask(comfyui, model, *, boundary: str, mask=None, band_width: int = 16):
    return output(comfyui.nodes["IMVEEditMask"].execute(model=model, latent={"samples": source_latent()},
                                                        mask=pixel_mask() if mask is None else mask,
                                                        boundary=boundary, band_width=band_width))


def sample(comfyui, model, latent: dict) -> torch.Tensor:
    positive, negative, _, _ = conditioning(comfyui, latent["samples"])
    return output(comfyui.nodes["IMVESampler"].execute(
        model=model, positive=positive, negative=negative, latent=latent, seed=0, steps=4, cfg=2.0, shift=3.0,
        strength=1.0, solver="euler", source_cache="device"))[0]["samples"]


@pytest.mark.parametrize("boundary", ["hard", "progressive"])
def test_sampling_through_edit_mask_keeps_the_source_outside(comfyui, tiny_wan, adapter_file, boundary):
    model, _ = tiny_wan
    patched, _ = patched_model(comfyui, model)
    masked_model, latent = edit_mask(comfyui, patched, boundary=boundary)
    assert latent["noise_mask"].shape == (1, 1, 3, 8, 8) and latent["noise_mask"].sum() == 3 * 9
    out = sample(comfyui, masked_model, latent)
    source = source_latent()
    outside = (latent["noise_mask"] == 0).expand_as(source)
    torch.testing.assert_close(out[outside], source[outside], atol=1e-5, rtol=1e-5)
    assert (out[~outside] - source[~outside]).abs().mean() > 0.1


def test_hard_mask_matches_the_core_engine(comfyui, tiny_wan, adapter_file):
    import comfy.sample
    import comfy.samplers
    model, core = tiny_wan
    patched, _ = patched_model(comfyui, model)
    masked_model, latent = edit_mask(comfyui, patched, boundary="hard")
    positive, negative, ctx, neg = conditioning(comfyui, latent["samples"])
    sigmas = flow_sigmas(4, shift=3.0).float()
    noise = comfy.sample.prepare_noise(latent["samples"], 7)
    out = comfy.sample.sample_custom(masked_model, noise, 2.0, comfy.samplers.sampler_object("euler"), sigmas,
                                     positive, negative, latent["samples"], noise_mask=latent["noise_mask"],
                                     seed=7, disable_pbar=True)
    source = model.model.process_latent_in(latent["samples"])
    hook = mask_hook(source, latent["noise_mask"], noise=noise, boundary=MaskBoundary(kind="hard"))
    with TwoStreamRunner(core, adapter_file) as runner, torch.no_grad():
        ref = edit_latent(runner, EditRequest(source=source, context=ctx, negative_context=neg, noise=noise,
                                              config=SamplerConfig(steps=4, cfg=2.0, shift=3.0, seed=7),
                                              features=[hook])).latent
    got = model.model.process_latent_in(out)
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=1e-4)


def test_progressive_band_narrows_over_comfyui_steps(comfyui, tiny_wan, adapter_file):
    model, _ = tiny_wan
    patched, _ = patched_model(comfyui, model)
    masked_model, latent = edit_mask(comfyui, patched, boundary="progressive", band_width=24)  # 3 latent pixels
    band, seen = masked_model.model_options["denoise_mask_function"], []

    def spy(sigma, denoise_mask, extra_options):
        seen.append(band(sigma, denoise_mask, extra_options))
        return seen[-1]

    masked_model.set_model_denoise_mask_function(spy)
    sample(comfyui, masked_model, latent)
    sizes = [float(w[0, 0].sum()) for w in seen]
    assert len(sizes) == 4 and all(a > b for a, b in zip(sizes, sizes[1:])), sizes
    assert torch.equal(seen[-1][0, 0], latent["noise_mask"][0, 0])


def test_hard_boundary_drops_an_earlier_band(comfyui, tiny_wan, adapter_file):
    model, _ = tiny_wan
    progressive, _ = edit_mask(comfyui, model, boundary="progressive")
    hard, _ = edit_mask(comfyui, progressive, boundary="hard")
    assert "denoise_mask_function" in progressive.model_options
    assert "denoise_mask_function" not in hard.model_options


def test_edit_mask_names_user_errors(comfyui, tiny_wan):
    model, _ = tiny_wan
    with pytest.raises(ValueError, match=r"the mask is 40x64 pixels but the video frames are 64x64: resize the "
                                         r"mask to 64x64"):
        edit_mask(comfyui, model, boundary="hard", mask=torch.zeros(9, 64, 40))
    with pytest.raises(ValueError, match=r"the mask has 5 frames but the video has 9"):
        edit_mask(comfyui, model, boundary="hard", mask=torch.zeros(5, 64, 64))
    with pytest.raises(ValueError, match="connect the latent output of IMVE Edit Conditioning"):
        output(comfyui.nodes["IMVEEditMask"].execute(model=model, latent={"samples": torch.zeros(1, 4, 8, 8)},
                                                     mask=pixel_mask(), boundary="hard", band_width=0))
