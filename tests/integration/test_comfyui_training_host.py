"""Training and tuning through ComfyUI's own loaded MODEL: the same loss and gradients as the core, no second backbone,
LoRAs included, gradient checkpointing, and an out-of-memory error that says what to change."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from comfy_standins import StandInCLIP, StandInVAE, ffn_lora
from test_comfyui_inprocess import (TINY, _write_pairs, adapter_file, load_tiny_wan, output,  # noqa: F401
                                     tiny_wan)  # (fixtures)
from tiny import randomize
from imvideoedit_core.model.adapter import build_adapter
from imvideoedit_core.model.config import adapter_preset
from imvideoedit_core.edit.streams import TwoStreamRunner


def adapter(seed: int = 2, *, lora_rank: int = 0):
    cfg = replace(adapter_preset("tiny"), lora_rank=lora_rank)
    return randomize(build_adapter(cfg, TINY, seed=0), seed=seed, std=0.2)


def inputs():
    g = torch.Generator().manual_seed(4)
    target, source = torch.randn(2, 16, 1, 8, 8, generator=g), torch.randn(2, 16, 1, 8, 8, generator=g)
    context = torch.randn(2, 5, TINY.text_dim, generator=g)
    return target, torch.tensor([300.0, 800.0]), context, source


def loss_and_grads(model, *, checkpointing: bool = False, gate_grad: bool = True):
    x, t, context, source = inputs()
    with torch.inference_mode(False), model.training(gradient_checkpointing=checkpointing):
        out = model.velocity(x, t, context, source, gate_grad=gate_grad)
        loss = out.velocity.square().mean() + (sum(g.mean() for g in out.gates.values()) if gate_grad else 0)
        loss.backward()
    grads = {name: p.grad.clone() for name, p in model.adapter.named_parameters() if p.grad is not None}
    return out.velocity.detach(), loss.item(), grads


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_the_training_forward_through_comfyui_matches_the_core(comfyui, tiny_wan, lora_rank):
    from imvideoedit_pack.nodes.host import ComfyAdaptedModel
    model, core = tiny_wan
    comfy_velocity, comfy_loss, comfy_grads = loss_and_grads(ComfyAdaptedModel(model, adapter(lora_rank=lora_rank)))
    core_velocity, core_loss, core_grads = loss_and_grads(TwoStreamRunner(core, adapter(lora_rank=lora_rank)))
    assert torch.allclose(comfy_velocity, core_velocity, atol=1e-4), (comfy_velocity - core_velocity).abs().max()
    assert comfy_loss == pytest.approx(core_loss, rel=1e-5)
    assert set(comfy_grads) == set(core_grads)
    # the source side's projections (k, v) learn too: their gradients come through the recorded source stream
    assert any(".k." in name and comfy_grads[name].abs().sum() > 0 for name in comfy_grads)
    # with an FFN LoRA, its factors learn through ComfyUI's FFN layers as through the core's
    assert any("ffn_lora" in name and g.abs().sum() > 0 for name, g in comfy_grads.items()) == bool(lora_rank)
    for name in core_grads:
        assert torch.allclose(comfy_grads[name], core_grads[name], atol=1e-5, rtol=1e-4), name
    assert all(p.grad is None for p in model.model.diffusion_model.parameters())  # the backbone stays frozen
    assert not any(block.ffn[0]._forward_hooks for block in model.model.diffusion_model.blocks)  # hooks removed


def test_gradient_checkpointing_through_comfyui_gives_the_core_gradients(comfyui, tmp_path):
    """Three blocks and an FFN LoRA: a checkpointed block is recomputed in backward, where it must be the same block
    (ComfyUI's ``original_block`` closure would run the last one) and the LoRA must still act."""
    from imvideoedit_pack.nodes.host import ComfyAdaptedModel
    deep = replace(TINY, num_layers=3)
    model, core = load_tiny_wan(tmp_path, deep)

    def deep_adapter():
        cfg = replace(adapter_preset("tiny"), lora_rank=4)
        return randomize(build_adapter(cfg, deep, seed=0), seed=2, std=0.2)
    _, core_loss, core_grads = loss_and_grads(TwoStreamRunner(core, deep_adapter()), checkpointing=True)
    _, ckpt_loss, ckpt = loss_and_grads(ComfyAdaptedModel(model, deep_adapter()), checkpointing=True)
    assert ckpt_loss == pytest.approx(core_loss, rel=1e-5)
    assert set(ckpt) == set(core_grads) and any("ffn_lora.layers.0" in name for name in ckpt)
    for name in core_grads:
        assert torch.allclose(ckpt[name], core_grads[name], atol=1e-5, rtol=1e-4), name
    assert all("forward" not in block.__dict__ for block in model.model.diffusion_model.blocks)  # detached


def test_a_lora_on_the_model_is_in_the_training_loss(comfyui, tiny_wan):
    import comfy.sd
    from imvideoedit_pack.nodes.host import ComfyAdaptedModel
    model, _ = tiny_wan
    with_lora, _ = comfy.sd.load_lora_for_models(model, None, ffn_lora(TINY, scale=0.2), 1.0, 0)
    _, plain_loss, _ = loss_and_grads(ComfyAdaptedModel(model, adapter()), gate_grad=False)
    _, lora_loss, _ = loss_and_grads(ComfyAdaptedModel(with_lora, adapter()), gate_grad=False)
    assert abs(lora_loss - plain_loss) > 1e-3 * abs(plain_loss), (lora_loss, plain_loss)


def test_training_and_tuning_build_no_second_backbone(comfyui, tiny_wan, adapter_file, monkeypatch):
    from imvideoedit_core.model import backbone
    model, _ = tiny_wan

    def refuse(*args, **kwargs):
        raise AssertionError("a second copy of the backbone was built")
    monkeypatch.setattr(backbone.WanDiT, "__init__", refuse)
    _write_pairs(comfyui.base / "input" / "pairs_nocopy")
    output(comfyui.nodes["IMVETrainAdapter"].execute(
        model=model, vae=StandInVAE(), clip=StandInCLIP(), pairs_folder="pairs_nocopy", adapter_name="nocopy",
        steps=2, learning_rate=1e-3, batch_size=2, width=0, height=0, resize_policy="error", save_every=2, seed=0,
        resume=False, gradient_checkpointing="on"))
    holder = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name="tiny_edit.safetensors"))[0]
    frame = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    tuned, summary = output(comfyui.nodes["IMVETuneOnKeyframe"].execute(
        model=model, adapter=holder, vae=StandInVAE(), clip=StandInCLIP(), source_keyframe=frame,
        edited_keyframe=1 - frame, instruction="invert it", steps=2, learning_rate=1e-3, seed=0, augment=False,
        gradient_checkpointing="off"))
    assert "tuned" in summary and tuned.adapter is not holder.adapter


def test_out_of_memory_in_training_says_what_to_change_and_writes_nothing(comfyui, tiny_wan, monkeypatch):
    from imvideoedit_pack.nodes import host
    from imvideoedit_pack.nodes.train_nodes import TrainingOutOfMemory
    model, _ = tiny_wan

    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(host.ComfyAdaptedModel, "velocity", out_of_memory)
    _write_pairs(comfyui.base / "input" / "pairs_oom")
    with pytest.raises(TrainingOutOfMemory, match="lower batch_size.*gradient_checkpointing to on.*--lowvram"):
        comfyui.nodes["IMVETrainAdapter"].execute(
            model=model, vae=StandInVAE(), clip=StandInCLIP(), pairs_folder="pairs_oom", adapter_name="oom",
            steps=2, learning_rate=1e-3, batch_size=2, width=0, height=0, resize_policy="error", save_every=1, seed=0,
            resume=False, gradient_checkpointing="off")
    folder = comfyui.base / "models" / "imvideoedit"
    assert not [p.name for p in folder.iterdir() if p.name.startswith("oom")]


def test_sampling_with_gradients_on_caches_no_autograd_graph(comfyui, tiny_wan, adapter_file):
    """A sampler that runs with gradients on (as a custom node may) must not keep the source's graph alive."""
    import comfy.model_management
    import comfy.patcher_extension
    from imvideoedit_pack.nodes import host
    from test_comfyui_inprocess import patched_model
    model, _ = tiny_wan
    patched, _ = patched_model(comfyui, model)
    comfy.model_management.load_models_gpu([patched])
    g = torch.Generator().manual_seed(8)
    x, source, context = torch.randn(1, 16, 2, 8, 8, generator=g), torch.randn(1, 16, 2, 8, 8, generator=g), \
        torch.randn(1, 5, TINY.text_dim, generator=g)
    options = {**patched.model_options["transformer_options"], "sample_sigmas": object(), "cond_or_uncond": [0],
               "wrappers": comfy.patcher_extension.copy_nested_dicts(patched.wrappers)}
    with torch.inference_mode(False), torch.enable_grad():
        patched.model.apply_model(x, torch.tensor([0.5]), c_crossattn=context, transformer_options=options,
                                  **{host.SOURCE_COND: source})
    caches = list(host.find_wrapper(patched)._caches.values())
    assert caches and all(kv.k.grad_fn is None for c in caches for kv in c.blocks.values())
