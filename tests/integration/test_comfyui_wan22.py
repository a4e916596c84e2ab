"""The Wan 2.2 family inside a real ComfyUI (in-process, CPU, tiny models in the official key layouts): TI2V 5B with
ComfyUI's own Wan 2.2 VAE class, its first-frame mode, the A14B expert pair, and image-to-video refused by name."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from test_comfyui_inprocess import StandInCLIP, StandInVAE, conditioning, host_and_core_edits, output  # noqa: F401
from tiny import randomize
from imvideoedit_core.model.adapter import build_adapter
from imvideoedit_core.model.adapter_file import save_adapter
from imvideoedit_core.model.backbone import build_backbone
from imvideoedit_core.model.config import (WAN22_A14B_FAMILY, WAN22_TI2V_FAMILY, adapter_config_for, adapter_preset,
                                           backbone_preset)

TINY = backbone_preset("tiny")
TINY48 = dataclasses.replace(TINY, in_dim=48, out_dim=48, family=WAN22_TI2V_FAMILY)


def load_tiny(tmp_path_factory, cfg, *, seed: int, name: str):
    """A tiny checkpoint in the official key layout, loaded by ComfyUI's own loader; and the core's copy."""
    import comfy.sd
    core = randomize(build_backbone(cfg, seed=seed), seed=seed + 100, std=0.05)
    path = tmp_path_factory.mktemp("ckpt") / f"{name}.safetensors"
    meta = {"config": json.dumps({"transformer": {"num_heads": cfg.num_heads, "freq_dim": cfg.freq_dim,
                                                  "text_dim": cfg.text_dim}})}
    save_file({k: v.contiguous() for k, v in core.state_dict().items()}, str(path), metadata=meta)
    return comfy.sd.load_diffusion_model(str(path)), core.requires_grad_(False).eval()


@pytest.fixture(scope="module")
def tiny_ti2v(comfyui, tmp_path_factory):
    return load_tiny(tmp_path_factory, TINY48, seed=0, name="wan22_ti2v_tiny")


@pytest.fixture(scope="module")
def wan22_vae(comfyui):
    """ComfyUI's own Wan 2.2 VAE (its class and its detection), random weights: 48 channels, 16x in space."""
    import comfy.ldm.wan.vae2_2
    import comfy.sd
    module = comfy.ldm.wan.vae2_2.WanVAE(dim=160, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                         temperal_downsample=[False, True, True], dropout=0.0)
    gen = torch.Generator().manual_seed(0)

    def fill(name: str, value: torch.Tensor) -> torch.Tensor:  # ComfyUI's layers start uninitialised (empty)
        if "gamma" in name:
            return torch.ones_like(value)
        if value.ndim > 1:
            return torch.randn(value.shape, generator=gen) / value[0].numel() ** 0.5
        return torch.zeros_like(value)
    vae = comfy.sd.VAE(sd={k: fill(k, v) for k, v in module.state_dict().items()})
    assert (vae.latent_channels, vae.spacial_compression_encode()) == (48, 16)
    return vae


@pytest.fixture(scope="module")
def ti2v_adapter(comfyui):
    adapter = randomize(build_adapter(adapter_config_for(TINY48), TINY48, seed=0), seed=2, std=0.2)
    save_adapter(comfyui.base / "models" / "imvideoedit" / "ti2v_tiny.safetensors", adapter, dtype="float32")
    return adapter


@pytest.fixture
def adapted_timesteps(monkeypatch) -> list:
    """The timesteps every adapted target forward of the pack's wrapper is given, as the test runs."""
    from imvideoedit_pack.nodes import host
    seen, real_call = [], host.AdaptedCall

    def spy(*args, **kwargs):
        if not kwargs.get("recording") and kwargs.get("timestep") is not None:
            seen.append(kwargs["timestep"].clone())
        return real_call(*args, **kwargs)
    monkeypatch.setattr(host, "AdaptedCall", spy)
    return seen


@pytest.fixture
def training_timesteps(monkeypatch) -> list:
    """The timesteps every training or tuning forward through ComfyUI's MODEL is given, as the test runs."""
    from imvideoedit_pack.nodes import host
    seen, velocity = [], host.ComfyAdaptedModel.velocity

    def spy(self, x, t, *args, **kwargs):
        seen.append(t.detach().clone())
        return velocity(self, x, t, *args, **kwargs)
    monkeypatch.setattr(host.ComfyAdaptedModel, "velocity", spy)
    return seen


def apply(comfyui, model, name: str):
    holder = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name=name))[0]
    return output(comfyui.nodes["IMVEApplyAdapter"].execute(model=model, adapter=holder, strength=1.0,
                                                          source_cache="device"))[0]


def sample(comfyui, model, positive, negative, latent: dict, **overrides):
    kwargs = dict(model=model, positive=positive, negative=negative, latent=latent, seed=0, steps=2, cfg=2.0,
                  shift=3.0, strength=1.0, solver="euler", source_cache="device")
    kwargs.update(overrides)
    return output(comfyui.nodes["IMVESampler"].execute(**kwargs))[0]["samples"]


# -- TI2V 5B --

def test_a_ti2v_5b_layout_model_is_wan22_and_the_core_equals_it(comfyui, tiny_ti2v):
    from imvideoedit_pack.nodes.host import backbone_config_of
    model, core = tiny_ti2v
    assert type(model.model).__name__ == "WAN22"  # ComfyUI's own detection: 48 output channels
    cfg = backbone_config_of(model)
    assert (cfg.family, cfg.in_dim, cfg.out_dim, cfg.dim) == (WAN22_TI2V_FAMILY, 48, 48, TINY.dim)
    x = torch.randn(2, 48, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    context = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    for t in (torch.tensor([600.0, 250.0]), torch.tensor([[0.0, 600.0, 600.0], [0.0, 250.0, 250.0]])):
        with torch.no_grad():
            theirs = model.model.diffusion_model(x, t, context)
            ours = core(x, t, context)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_ksampler_path_matches_the_core_engine_on_ti2v(comfyui, tiny_ti2v, ti2v_adapter):
    model, core = tiny_ti2v
    patched = apply(comfyui, model, "ti2v_tiny.safetensors")
    latent = torch.randn(1, 48, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    got, ref = host_and_core_edits(model, patched, core, ti2v_adapter, latent, *conditioning(comfyui, latent),
                                   share_source=True)  # Apply Adapter's default source encoding
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=1e-4)


def frames(count=5, size=64):
    """A grey square moving right on black: [count, size, size, 3]."""
    video = torch.zeros(count, size, size, 3)
    for i in range(count):
        video[i, 16:48, 8 + 2 * i:40 + 2 * i] = 0.5
    return video


def test_ti2v_edits_through_tune_on_keyframe_apply_adapter_and_the_sampler(comfyui, tiny_ti2v, wan22_vae):
    """The issue's path with ComfyUI's Wan 2.2 VAE: Edit Conditioning -> Tune On Keyframe (no adapter) -> Apply
    Adapter -> IMVE Sampler -> Gate Mask, at sides that are multiples of 32."""
    model, _ = tiny_ti2v
    clip = StandInCLIP()
    cond = [[torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(3)), {}]]
    positive, negative, latent, encoded, info = output(comfyui.nodes["IMVEEditConditioning"].execute(
        vae=wan22_vae, source=frames(size=72), positive=cond, negative=[[torch.zeros(1, 5, 32), {}]]))
    assert encoded.shape == (5, 64, 64, 3) and "to multiples of 32" in info
    assert latent["samples"].shape == (1, 48, 2, 4, 4)
    source, edited = encoded[:1], encoded[:1].clone()
    edited[..., 0] = edited[..., 0] * 2  # the square reddened
    tuned, summary = output(comfyui.nodes["IMVETuneOnKeyframe"].execute(
        model=model, vae=wan22_vae, clip=clip, source_keyframe=source, edited_keyframe=edited,
        instruction="make the square red", steps=2, learning_rate=0.0, seed=0, augment=True, save_name=""))
    assert tuned.info.backbone_config.family == WAN22_TI2V_FAMILY and "tuned a fresh adapter 2 steps" in summary
    patched = output(comfyui.nodes["IMVEApplyAdapter"].execute(model=model, adapter=tuned, strength=1.0,
                                                             source_cache="device"))[0]
    edit = sample(comfyui, patched, positive, negative, latent)
    assert edit.shape == (1, 48, 2, 4, 4) and torch.isfinite(edit).all()
    mask = output(comfyui.nodes["IMVEGateMask"].execute(model=patched, samples={"samples": edit}))[0]
    assert mask.shape == (5, 64, 64)  # the Wan 2.2 VAE's 16x stride, read from the model's latent format
    with pytest.raises(ValueError, match="multiples of 32"):
        comfyui.nodes["IMVETuneOnKeyframe"].execute(
            model=model, vae=wan22_vae, clip=clip, source_keyframe=source[:, :48, :48],
            edited_keyframe=edited[:, :48, :48], instruction="make the square red", steps=1, learning_rate=0.0,
            seed=0, augment=False, save_name="")


def test_first_frame_mode_keeps_the_edited_frame_clean_at_timestep_zero(comfyui, tiny_ti2v, ti2v_adapter,
                                                                        wan22_vae, adapted_timesteps):
    from imvideoedit_pack.nodes import host
    model, _ = tiny_ti2v
    video = frames()
    first = video[:1].clone()
    first[..., 0] = first[..., 0] * 2
    cond = [[torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(3)), {}]]
    positive, negative, latent, _, info = output(comfyui.nodes["IMVEEditConditioning"].execute(
        vae=wan22_vae, source=video, positive=cond, negative=[[torch.zeros(1, 5, 32), {}]], first_frame=first))
    assert "first frame: the edited frame" in info
    source = positive[0][1]["model_conds"][host.SOURCE_COND].cond
    assert torch.equal(latent["samples"][:, :, 1:], source[:, :, 1:])       # the rest is the source's
    assert not torch.equal(latent["samples"][:, :, :1], source[:, :, :1])   # frame 0 is the edited frame's
    assert latent["noise_mask"][0, 0, :, 0, 0].tolist() == [0.0, 1.0]
    seen = adapted_timesteps
    out = sample(comfyui, apply(comfyui, model, "ti2v_tiny.safetensors"), positive, negative, latent)
    torch.testing.assert_close(out[:, :, 0], latent["samples"][:, :, 0], rtol=0, atol=1e-5)
    assert (out[:, :, 1] - latent["samples"][:, :, 1]).abs().amax() > 1e-3
    assert seen and all(t.ndim == 2 and t.shape[1] == 2 and (t[:, 0] == 0).all() and (t[:, 1] > 0).all()
                        for t in seen)
    with pytest.raises(ValueError, match="first_frame is 32x64 but the encoded frames are 64x64"):
        comfyui.nodes["IMVEEditConditioning"].execute(vae=wan22_vae, source=video, positive=cond, negative=cond,
                                                      first_frame=first[:, :, :32])


# -- image-to-video: refused by name --

def test_image_to_video_models_are_refused_with_what_to_load_instead(comfyui):
    import comfy.ops
    from comfy.ldm.wan.model import WanModel
    from imvideoedit_pack.nodes.host import wan_backbone_config
    small = dict(dim=32, ffn_dim=64, freq_dim=16, text_dim=32, num_heads=2, num_layers=1,
                 operations=comfy.ops.disable_weight_init)
    wan21_i2v = WanModel(model_type="i2v", in_dim=36, out_dim=16, **small)
    wan22_i2v = WanModel(model_type="t2v", in_dim=36, out_dim=16, **small)  # no img_emb: ComfyUI calls it t2v
    for model, kind in ((wan21_i2v, "i2v"), (wan22_i2v, "t2v")):
        with pytest.raises(ValueError, match=rf"image-to-video model \({kind}, 36 input channels: Wan 2.1 I2V 14B or "
                                             r"Wan 2.2 I2V A14B\).*load Wan 2.2 TI2V 5B"):
            wan_backbone_config(model)


# -- the A14B expert pair --

@pytest.fixture(scope="module")
def experts(comfyui, tmp_path_factory):
    """Two tiny 14B-shaped experts (different weights), as loaded ("high file", "low file") and marked by IMVE
    Wan 2.2 Expert ("high", "low"); an adapter for each."""
    marked = {}
    for i, expert in enumerate(("high", "low")):
        model, _ = load_tiny(tmp_path_factory, TINY, seed=10 + i, name=f"a14b_{expert}")
        marked[f"{expert} file"] = model  # as the loader gives it
        marked[expert] = output(comfyui.nodes["IMVEWan22Expert"].execute(model=model, expert=f"{expert}-noise"))[0]
        cfg = dataclasses.replace(TINY, family=WAN22_A14B_FAMILY, expert=expert)
        adapter = randomize(build_adapter(adapter_preset("tiny"), cfg, seed=i), seed=20 + i, std=0.2)
        save_adapter(comfyui.base / "models" / "imvideoedit" / f"a14b_{expert}.safetensors", adapter,
                     dtype="float32")
    save_adapter(comfyui.base / "models" / "imvideoedit" / "wan21_tiny.safetensors",
                 build_adapter(adapter_preset("tiny"), TINY, seed=0), dtype="float32")
    return marked


def test_each_expert_takes_only_its_own_adapter(comfyui, experts):
    with pytest.raises(ValueError, match=r"trained on Wan 2.1 T2V, the model is Wan 2.2 T2V A14B "
                                               r"\(high-noise expert\)"):
        apply(comfyui, experts["high"], "wan21_tiny.safetensors")
    with pytest.raises(ValueError, match=r"\(high-noise expert\), the model is Wan 2.2 T2V A14B "
                                               r"\(low-noise expert\)"):
        apply(comfyui, experts["low"], "a14b_high.safetensors")


def test_the_expert_mark_refuses_ti2v(comfyui, tiny_ti2v):
    with pytest.raises(ValueError, match="Wan 2.2 TI2V 5B .* a single model"):
        comfyui.nodes["IMVEWan22Expert"].execute(model=tiny_ti2v[0], expert="high-noise")


def test_the_sampler_runs_the_pair_as_two_ksampler_advanced_passes_and_frees_the_first_cache(comfyui, experts,
                                                                                           monkeypatch):
    import nodes as comfy_nodes
    from imvideoedit_pack.nodes import host
    from imvideoedit_pack.nodes.edit_nodes import model_with_shift, switch_step
    high, low = (apply(comfyui, experts[e], f"a14b_{e}.safetensors") for e in ("high", "low"))
    latent = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    positive, negative, _, _ = conditioning(comfyui, latent)
    steps, boundary = 4, 0.6
    switch = switch_step(model_with_shift(high, 3.0), steps, 1.0, "euler", boundary)
    assert 0 < switch < steps
    events = []
    for name, model in (("high", high), ("low", low)):
        wrapper = host.find_wrapper(model)
        release, encode = wrapper.release, wrapper._encoded_source
        monkeypatch.setattr(wrapper, "release", lambda n=name, r=release: (events.append(f"{n} released"), r()))
        monkeypatch.setattr(wrapper, "_encoded_source",
                            lambda *a, n=name, e=encode: (events.append(f"{n} encodes"), e(*a))[1])
    one_node = sample(comfyui, high, positive, negative, {"samples": latent}, steps=steps, low_noise_model=low,
                      boundary=boundary)
    assert events.index("high released") < events.index("low encodes")  # freed at the switch
    assert events[-1] == "low released"
    ksampler = comfy_nodes.KSamplerAdvanced()
    first = ksampler.sample(model_with_shift(high, 3.0), "enable", 0, steps, 2.0, "euler", "simple", positive,
                            negative, {"samples": latent}, 0, switch, "enable")[0]
    wired = ksampler.sample(model_with_shift(low, 3.0), "disable", 0, steps, 2.0, "euler", "simple", positive,
                            negative, first, switch, 10000, "disable")[0]["samples"]
    torch.testing.assert_close(one_node, wired, rtol=0, atol=1e-6)
    only_high = sample(comfyui, high, positive, negative, {"samples": latent}, steps=steps)
    assert (one_node - only_high).abs().amax() > 1e-4  # the low-noise expert did take over
    with pytest.raises(ValueError, match="the experts look swapped"):
        sample(comfyui, low, positive, negative, {"samples": latent}, low_noise_model=high)


def test_tuning_an_expert_trains_on_its_own_noise_levels(comfyui, experts, training_timesteps):
    from imvideoedit_pack.nodes import host
    seen = training_timesteps
    source = torch.zeros(1, 32, 32, 3)
    source[:, 8:24, 8:24] = 0.5
    edited = source.clone()
    edited[:, 8:24, 8:24, 0] = 1.0
    for expert, inside in (("high", lambda t: t >= 875), ("low", lambda t: t < 875)):
        seen.clear()
        tuned, _ = output(comfyui.nodes["IMVETuneOnKeyframe"].execute(
            model=experts[expert], vae=StandInVAE(), clip=StandInCLIP(), source_keyframe=source,
            edited_keyframe=edited, instruction="make the square red", steps=3, learning_rate=0.0, seed=0,
            augment=False, save_name=""))
        assert tuned.info.backbone_config.expert == expert
        assert seen and all(inside(t).all() for t in seen), (expert, seen)
        apply_to = output(comfyui.nodes["IMVEApplyAdapter"].execute(model=experts[expert], adapter=tuned,
                                                                  strength=1.0, source_cache="device"))[0]
        assert host.find_wrapper(apply_to).holder.info.backbone_config.expert == expert


def test_training_an_expert_writes_its_expert_and_draws_its_noise_levels(comfyui, experts,
                                                                       training_timesteps):
    from imvideoedit_pack.imvideoedit_core.model.adapter_file import read_adapter_info
    seen = training_timesteps
    sources = torch.zeros(4, 32, 32, 3)
    sources[:, 8:24, 8:24] = 0.5
    targets = sources.clone()
    targets[:, 8:24, 8:24, 0] = 1.0
    holder, summary = output(comfyui.nodes["IMVETrainAdapter"].execute(
        model=experts["low"], vae=StandInVAE(), clip=StandInCLIP(), pairs_folder="unused",
        adapter_name="a14b_low_trained", steps=3, learning_rate=1e-3, batch_size=2, width=0, height=0,
        resize_policy="error", save_every=3, seed=0, resume=False, source_images=sources, target_images=targets,
        instructions="make the square red"))
    assert "3 steps on 4 pairs" in summary
    info = read_adapter_info(comfyui.base / "models" / "imvideoedit" / "a14b_low_trained.safetensors")
    assert (info.backbone_config.family, info.backbone_config.expert) == (WAN22_A14B_FAMILY, "low")
    assert seen and all((t < 875).all() for t in seen)


def test_edit_mask_on_ti2v_keeps_the_source_outside_with_whole_frame_timesteps(comfyui, tiny_ti2v, ti2v_adapter,
                                                                               adapted_timesteps):
    """A spatial mask on TI2V 5B: the mask is read at the Wan 2.2 VAE's 16x stride, and a partly edited frame keeps
    its sampling timestep (ComfyUI's WAN22 would scale it by the frame's edited share)."""
    patched = apply(comfyui, tiny_ti2v[0], "ti2v_tiny.safetensors")
    latent = torch.randn(1, 48, 2, 4, 4, generator=torch.Generator().manual_seed(6))
    mask = torch.zeros(1, 64, 64)
    mask[:, :32, :32] = 1.0  # the top-left quarter of every frame
    masked, masked_latent = output(comfyui.nodes["IMVEEditMask"].execute(
        model=patched, latent={"samples": latent}, mask=mask, boundary="hard", band_width=0))
    keep = masked_latent["noise_mask"]
    assert keep.shape == (1, 1, 2, 4, 4) and keep.sum() == 2 * 4
    seen = adapted_timesteps
    positive, negative, _, _ = conditioning(comfyui, latent)
    out = sample(comfyui, masked, positive, negative, masked_latent, steps=3)
    outside = (keep == 0).expand_as(latent)
    torch.testing.assert_close(out[outside], latent[outside], atol=1e-5, rtol=1e-5)
    assert (out[~outside] - latent[~outside]).abs().mean() > 0.05
    assert seen and all(t.ndim == 2 and (t == t[:, :1]).all() and (t > 0).all() for t in seen), seen


def test_long_video_edit_on_ti2v_scales_to_the_wan22_vae(comfyui, tiny_ti2v, ti2v_adapter):
    from test_comfyui_long_video import StandInVideoVAE
    from imvideoedit_core.io.video import read_video, write_video
    write_video(comfyui.base / "input" / "ti2v_clip.mp4", torch.rand(13, 64, 96, 3,
                                                                     generator=torch.Generator().manual_seed(0)), fps=8)
    ctx = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(3))
    path, info, _ = output(comfyui.nodes["IMVELongVideoEdit"].execute(
        model=apply(comfyui, tiny_ti2v[0], "ti2v_tiny.safetensors"), vae=StandInVideoVAE(channels=48, stride=16),
        positive=[[ctx, {}]], negative=[[torch.zeros(1, 5, 32), {}]], video="ti2v_clip.mp4",
        filename_prefix="imve_ti2v/long", window=9, overlap=5, keyframes=2, sharing="attention+adapter", seed=0,
        steps=2, cfg=2.0, shift=3.0, solver="euler", max_frames=0, resize_to_multiple=16))
    try:
        assert "13 frames in 2 windows" in info and "sides scaled to multiples of 32" in info, info
        assert read_video(path).frames.shape == (13, 64, 96, 3)
    finally:
        shutil.rmtree(comfyui.base / "output" / "imve_ti2v", ignore_errors=True)


def test_ti2v_trains_an_adapter_and_tunes_it_from_a_trained_start(comfyui, tiny_ti2v, wan22_vae):
    model, _ = tiny_ti2v
    sources = torch.zeros(2, 64, 64, 3)
    sources[:, 16:48, 16:48] = 0.5
    targets = sources.clone()
    targets[:, 16:48, 16:48, 0] = 1.0
    trained, summary = output(comfyui.nodes["IMVETrainAdapter"].execute(
        model=model, vae=wan22_vae, clip=StandInCLIP(), pairs_folder="unused", adapter_name="ti2v_trained", steps=2,
        learning_rate=1e-3, batch_size=2, width=0, height=0, resize_policy="error", save_every=2, seed=0,
        resume=False, source_images=sources, target_images=targets, instructions="make the square red"))
    assert "2 steps on 2 pairs" in summary and trained.info.backbone_config.family == WAN22_TI2V_FAMILY
    tuned, summary = output(comfyui.nodes["IMVETuneOnKeyframe"].execute(
        model=model, adapter=trained, vae=wan22_vae, clip=StandInCLIP(), source_keyframe=sources[:1],
        edited_keyframe=targets[:1], instruction="make the square red", steps=2, learning_rate=0.0, seed=0,
        augment=False, save_name=""))
    assert summary.startswith("tuned ti2v_trained.safetensors 2 steps"), summary
    with pytest.raises(ValueError, match="multiples of 32"):
        comfyui.nodes["IMVETrainAdapter"].execute(
            model=model, vae=wan22_vae, clip=StandInCLIP(), pairs_folder="unused", adapter_name="ti2v_bad", steps=1,
            learning_rate=1e-3, batch_size=1, width=48, height=48, resize_policy="error", save_every=1, seed=0,
            resume=False, source_images=sources, target_images=targets, instructions="make the square red")
