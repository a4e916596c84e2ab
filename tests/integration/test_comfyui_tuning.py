"""Tune On Keyframe inside a real ComfyUI (in-process, CPU, tiny models): tune a copy, apply it, errors, cancel."""

from __future__ import annotations

import pytest
import torch

from test_comfyui_inprocess import (StandInCLIP, StandInVAE, adapter_file, conditioning, output,  # noqa: F401
                                    tiny_wan)


def keyframes():
    """A grey square on black and the same square red, as IMAGE batches of one [1, 32, 32, 3]."""
    source = torch.zeros(1, 32, 32, 3)
    source[:, 8:24, 8:24] = 0.5
    edited = source.clone()
    edited[:, 8:24, 8:24] = torch.tensor([1.0, 0.0, 0.0])
    return source, edited


def tune(comfyui, model, holder, **overrides):
    source, edited = keyframes()
    kwargs = dict(model=model, adapter=holder, vae=StandInVAE(), clip=StandInCLIP(), source_keyframe=source,
                  edited_keyframe=edited, instruction="make the square red", steps=30, learning_rate=3e-3, seed=0,
                  augment=True, save_name="")
    kwargs.update(overrides)
    return output(comfyui.nodes["IMVETuneOnKeyframe"].execute(**kwargs))


def edited_latent(comfyui, model, holder) -> torch.Tensor:
    """A 2-step edit of a fixed latent through Apply Adapter and IMVE Sampler with ``holder``'s adapter."""
    latent = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    positive, negative, _, _ = conditioning(comfyui, latent)
    patched = output(comfyui.nodes["IMVEApplyAdapter"].execute(model=model, adapter=holder, strength=1.0,
                                                             source_cache="device"))[0]
    return output(comfyui.nodes["IMVESampler"].execute(
        model=patched, positive=positive, negative=negative, latent={"samples": latent}, seed=0, steps=2, cfg=2.0,
        shift=3.0, strength=1.0, solver="euler", source_cache="device"))[0]["samples"]


def weights(holder):
    return {k: v.clone() for k, v in holder.adapter.state_dict().items()}


def test_tuning_returns_a_new_adapter_and_leaves_the_input_alone(comfyui, tiny_wan, adapter_file):
    model, _ = tiny_wan
    holder = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name="tiny_edit.safetensors"))[0]
    before = weights(holder)
    tuned, summary = tune(comfyui, model, holder)
    assert all(torch.equal(v, before[k]) for k, v in holder.adapter.state_dict().items())
    assert tuned is not holder and tuned.adapter is not holder.adapter
    assert any(not torch.equal(v, before[k]) for k, v in tuned.adapter.state_dict().items())
    first, last = (float(x) for x in summary.split("loss ")[1].split(" (")[0].split(" -> "))
    assert last < first, summary
    assert tuned.info.training["keyframe_tuning"]["steps"] == 30

    before, after = (edited_latent(comfyui, model, a) for a in (holder, tuned))  # plugs in like any adapter
    assert (before - after).abs().max() > 1e-5


def test_saving_the_tuned_adapter(comfyui, tiny_wan, adapter_file):
    model, _ = tiny_wan
    holder = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name="tiny_edit.safetensors"))[0]
    tuned, summary = tune(comfyui, model, holder, steps=3, save_name="clip_tuned", augment=False)
    assert "saved as clip_tuned.safetensors" in summary
    loaded = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name="clip_tuned.safetensors"))[0]
    assert loaded.info.training["keyframe_tuning"] == {"steps": 3, "low_res_steps": 0, "full_steps_equivalent": 3.0,
                                                       "lr": 3e-3, "augment": False, "seed": 0,
                                                       "instruction": "make the square red",
                                                       "base": "tiny_edit.safetensors"}
    assert loaded.info.dtype == "bfloat16"  # saved as every adapter file is: in bf16
    assert all(torch.equal(v.to(torch.bfloat16), loaded.adapter.state_dict()[k])
               for k, v in tuned.adapter.state_dict().items())


def test_size_mismatches_reach_the_user(comfyui, tiny_wan, adapter_file):
    model, _ = tiny_wan
    holder = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name="tiny_edit.safetensors"))[0]
    with pytest.raises(ValueError, match=r"edited keyframe is 48x32 but the source keyframe is 32x32"):
        tune(comfyui, model, holder, edited_keyframe=torch.zeros(1, 32, 48, 3))
    with pytest.raises(ValueError, match=r"keyframes are 32x32 but the video's frames are 64x48"):
        tune(comfyui, model, holder, video=torch.zeros(5, 48, 64, 3))
    with pytest.raises(ValueError, match="3 source keyframes but 1 edited keyframes"):
        tune(comfyui, model, holder, source_keyframe=torch.zeros(3, 32, 32, 3))


def test_cancel_stops_tuning(comfyui, tiny_wan, adapter_file, monkeypatch):
    import comfy.model_management as mm
    model, _ = tiny_wan
    holder = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name="tiny_edit.safetensors"))[0]
    before = weights(holder)
    calls = {"n": 0}

    def interrupted():
        calls["n"] += 1
        if calls["n"] > 4:  # the user presses cancel before step 5
            mm.interrupt_current_processing(True)
        return real()

    real = mm.processing_interrupted
    monkeypatch.setattr(mm, "processing_interrupted", interrupted)
    with pytest.raises(mm.InterruptProcessingException):
        tune(comfyui, model, holder, steps=50)
    assert calls["n"] == 5
    assert all(torch.equal(v, before[k]) for k, v in holder.adapter.state_dict().items())


def test_several_keyframes_tune_together(comfyui, tiny_wan, adapter_file):
    model, _ = tiny_wan
    holder = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name="tiny_edit.safetensors"))[0]
    source, edited = keyframes()
    tuned, summary = tune(comfyui, model, holder, steps=3, source_keyframe=torch.cat([source, source.flip(2)]),
                          edited_keyframe=torch.cat([edited, edited.flip(2)]))
    assert "on 2 keyframe(s) of 32x32" in summary and tuned.info.training["keyframe_tuning"]["steps"] == 3


def test_zero_start_tunes_a_fresh_adapter_sized_from_the_model(comfyui, tiny_wan):
    """No adapter connected: a fresh adapter sized for the MODEL (the copy start), tuned with the fresh-start
    defaults (steps and learning rate 0 = auto), plugs into Apply Adapter and changes the edit."""
    from imvideoedit_pack.imvideoedit_core.model.config import adapter_config_for
    from imvideoedit_pack.imvideoedit_core.train.keyframe_tuning import ZERO_START, copy_start_adapter
    from imvideoedit_pack.nodes.host import wan_backbone_config
    model, _ = tiny_wan
    tuned, summary = tune(comfyui, model, None, steps=4, learning_rate=0.0)
    backbone = wan_backbone_config(model.model.diffusion_model)
    assert tuned.adapter.config == adapter_config_for(backbone)
    assert tuned.info.training["keyframe_tuning"]["lr"] == ZERO_START.lr
    assert tuned.info.training["keyframe_tuning"]["base"] == "(fresh adapter)"
    assert summary.startswith(f"tuned a fresh adapter 4 steps at lr {ZERO_START.lr:g}"), summary
    fresh = comfyui.nodes["IMVETuneOnKeyframe"]._fresh(model, 0)  # the copy start, untuned
    copy = copy_start_adapter(backbone, seed=0)
    assert all(torch.equal(v, copy.state_dict()[k]) for k, v in fresh.adapter.state_dict().items())
    before, after = (edited_latent(comfyui, model, a) for a in (fresh, tuned))
    assert (before - after).abs().max() > 1e-6


def test_steps_zero_picks_the_fresh_start_default_with_its_half_size_phase(comfyui, tiny_wan, monkeypatch):
    """steps 0 from a fresh start: the default's half-size steps first, then its full-size steps (shortened here);
    explicit steps tune at full size only."""
    from imvideoedit_pack.imvideoedit_core.train import keyframe_tuning
    monkeypatch.setattr(keyframe_tuning, "ZERO_START", keyframe_tuning.StartDefaults(steps=2, lr=1e-3,
                                                                                     low_res_steps=3))
    model, _ = tiny_wan
    tuned, summary = tune(comfyui, model, None, steps=0, learning_rate=0.0)
    assert summary.startswith("tuned a fresh adapter 5 steps (3 at half size) at lr 0.001"), summary
    record = tuned.info.training["keyframe_tuning"]
    assert (record["steps"], record["low_res_steps"], record["full_steps_equivalent"]) == (5, 3, 2.75)
    _, summary = tune(comfyui, model, None, steps=2, learning_rate=0.0)
    assert summary.startswith("tuned a fresh adapter 2 steps at lr"), summary
