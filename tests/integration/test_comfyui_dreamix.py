"""Degrade Latent and Animate Image inside a real ComfyUI (in-process, CPU, tiny models)."""

from __future__ import annotations

import pytest
import torch

from test_comfyui_inprocess import (StandInVAE, adapter_file, conditioning, output, patched_model,  # noqa: F401
                                    tiny_wan)
from imvideoedit_core.edit.degrade import DegradeConfig, degrade_latent
from imvideoedit_core.edit.sampling import EditRequest, SamplerConfig, StartLatent, edit_latent, flow_sigmas
from imvideoedit_core.edit.streams import TwoStreamRunner


def source_latent() -> torch.Tensor:
    return torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(6))  # 9 frames of 64x64


def degrade(comfyui, latent: dict, *, spatial: int = 2, temporal: int = 2, fill: str = "linear") -> dict:
    return output(comfyui.nodes["IMVEDegradeLatent"].execute(latent=latent, spatial_factor=spatial,
                                                             temporal_factor=temporal, temporal_fill=fill))[0]


def test_animate_image_then_edit_conditioning_gives_a_wan_clip(comfyui):
    image = torch.rand(1, 64, 48, 3, generator=torch.Generator().manual_seed(0))
    frames = output(comfyui.nodes["IMVEAnimateImage"].execute(image=image, frames=9, motion="pan_right",
                                                              amount=0.5))[0]
    assert frames.shape == (9, 64, 48, 3) and torch.equal(frames[0], image[0])
    assert not torch.allclose(frames[-1], image[0])
    _, _, latent, _, _ = output(comfyui.nodes["IMVEEditConditioning"].execute(
        vae=StandInVAE(), source=frames, positive=[[torch.zeros(1, 5, 32), {}]],
        negative=[[torch.zeros(1, 5, 32), {}]]))
    assert latent["samples"].shape == (1, 16, 3, 8, 6)


def test_degrade_latent_keeps_the_shape_and_the_other_keys(comfyui):
    mask = torch.ones(1, 1, 3, 8, 8)
    latent = {"samples": source_latent(), "noise_mask": mask}
    out = degrade(comfyui, latent)
    assert out["samples"].shape == (1, 16, 3, 8, 8) and out["noise_mask"] is mask
    torch.testing.assert_close(out["samples"], degrade_latent(source_latent(), DegradeConfig(spatial_factor=2,
                                                                                             temporal_factor=2)))
    assert torch.equal(degrade(comfyui, latent, spatial=1, temporal=1)["samples"], source_latent())


def test_sampler_from_a_degraded_start_matches_the_core_engine(comfyui, tiny_wan, adapter_file):
    import comfy.sample
    import comfy.samplers
    model, core = tiny_wan
    patched, _ = patched_model(comfyui, model)
    clean = source_latent()
    start = degrade(comfyui, {"samples": clean})["samples"]
    positive, negative, ctx, neg = conditioning(comfyui, clean)  # the conditioning keeps the clean source
    steps, cfg, shift, seed, strength = 4, 2.0, 3.0, 7, 0.75
    sigmas = flow_sigmas(steps, shift=shift, strength=strength).float()
    noise = comfy.sample.prepare_noise(start, seed)
    out = comfy.sample.sample_custom(patched, noise, cfg, comfy.samplers.sampler_object("euler"), sigmas,
                                     positive, negative, start, seed=seed, disable_pbar=True)
    with TwoStreamRunner(core, adapter_file) as runner, torch.no_grad():
        config = SamplerConfig(steps=steps, cfg=cfg, shift=shift, seed=seed, strength=strength)
        ref = edit_latent(runner, EditRequest(source=model.model.process_latent_in(clean), context=ctx,
                                              negative_context=neg, noise=noise, config=config,
                                              features=[StartLatent(model.model.process_latent_in(start))])).latent
    torch.testing.assert_close(model.model.process_latent_in(out), ref, atol=2e-4, rtol=1e-4)


def test_imve_sampler_runs_from_a_degraded_latent_below_full_strength(comfyui, tiny_wan, adapter_file):
    model, _ = tiny_wan
    patched, _ = patched_model(comfyui, model)
    clean = source_latent()
    start = degrade(comfyui, {"samples": clean}, temporal=1)
    positive, negative, _, _ = conditioning(comfyui, clean)
    results = [output(comfyui.nodes["IMVESampler"].execute(
        model=patched, positive=positive, negative=negative, latent=latent, seed=0, steps=3, cfg=2.0, shift=3.0,
        strength=0.5, solver="euler", source_cache="device"))[0]["samples"] for latent in (start, {"samples": clean})]
    assert results[0].shape == clean.shape and torch.isfinite(results[0]).all()
    assert (results[0] - results[1]).abs().max() > 1e-3  # the degraded start changes the result


def test_degrade_nodes_name_user_errors(comfyui):
    with pytest.raises(ValueError, match="spatial_factor 9 is larger than the latent"):
        degrade(comfyui, {"samples": source_latent()}, spatial=9, temporal=1)
    with pytest.raises(ValueError, match="temporal_factor 4 is larger than the latent's 3 frames"):
        degrade(comfyui, {"samples": source_latent()}, spatial=1, temporal=4)
    with pytest.raises(ValueError, match="connect the latent output of IMVE Edit Conditioning"):
        degrade(comfyui, {"samples": torch.zeros(1, 4, 8, 8)})
    animate = comfyui.nodes["IMVEAnimateImage"]
    with pytest.raises(ValueError, match="got a batch of 2 images; Animate Image takes one"):
        animate.execute(image=torch.zeros(2, 8, 8, 3), frames=5, motion="zoom_in", amount=0.3)
    with pytest.raises(ValueError, match="unknown motion 'spin'"):
        animate.execute(image=torch.zeros(1, 8, 8, 3), frames=5, motion="spin", amount=0.3)
    with pytest.raises(ValueError, match="frames must be an integer >= 1"):
        animate.execute(image=torch.zeros(1, 8, 8, 3), frames=0, motion="zoom_in", amount=0.3)
