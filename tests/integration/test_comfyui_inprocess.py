"""The node pack inside a real ComfyUI (in-process, CPU, tiny models): patching, sampling, memory, windows, training."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from comfy_standins import StandInCLIP, StandInVAE, ffn_lora  # noqa: F401  (StandIn*: imported from here too)
from tiny import randomize
from imvideoedit_core.model.adapter import build_adapter
from imvideoedit_core.model.adapter_file import save_adapter
from imvideoedit_core.model.backbone import build_backbone
from imvideoedit_core.model.config import FFN_LORA_RANK, adapter_preset, backbone_preset
from imvideoedit_core.edit.sampling import EditRequest, SamplerConfig, edit_latent, flow_sigmas
from imvideoedit_core.edit.streams import TwoStreamRunner

TINY = backbone_preset("tiny")  # dim 64, 2 heads, text_dim 32, freq_dim 32: ComfyUI reads these from the metadata


def output(node_output):
    """The values of a V3 NodeOutput."""
    return node_output.args if hasattr(node_output, "args") else node_output.result


def load_tiny_wan(folder, cfg=TINY):
    """A tiny Wan 2.1 T2V checkpoint of ``cfg`` loaded through ComfyUI's own loader, and the same weights in the
    core: (ComfyUI MODEL, core backbone)."""
    import comfy.sd
    core = build_backbone(cfg, seed=0)
    with torch.no_grad():
        core.head.head.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    path = folder / "wan_tiny.safetensors"
    meta = {"config": json.dumps({"transformer": {"num_heads": cfg.num_heads, "freq_dim": cfg.freq_dim,
                                                  "text_dim": cfg.text_dim}})}
    save_file({k: v.contiguous() for k, v in core.state_dict().items()}, str(path), metadata=meta)
    return comfy.sd.load_diffusion_model(str(path)), core.requires_grad_(False).eval()


@pytest.fixture(scope="module")
def tiny_wan(comfyui, tmp_path_factory):
    return load_tiny_wan(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def adapter_file(comfyui):
    adapter = randomize(build_adapter(adapter_preset("tiny"), TINY, seed=0), seed=2, std=0.2)
    # float32: the exact reference the host is compared against (files default to bf16; tested on their own)
    save_adapter(comfyui.base / "models" / "imvideoedit" / "tiny_edit.safetensors", adapter, dtype="float32")
    return adapter


def patched_model(comfyui, model, *, cache="device", source_encoding="per branch"):
    holder = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name="tiny_edit.safetensors"))[0]
    patched = output(comfyui.nodes["IMVEApplyAdapter"].execute(model=model, adapter=holder, strength=1.0,
                                                             source_cache=cache, source_encoding=source_encoding))[0]
    return patched, holder


def conditioning(comfyui, latent):
    from imvideoedit_pack.nodes.edit_nodes import with_source
    ctx = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(3))
    neg = torch.zeros(1, 5, 32)
    return with_source([[ctx, {}]], latent), with_source([[neg, {}]], latent), ctx, neg


def host_and_core_edits(model, patched, core, adapter, latent, positive, negative, ctx, neg, *, features=(),
                        steps: int = 3, cfg: float = 2.0, shift: float = 3.0, seed: int = 7,
                        share_source: bool = False, strength: float = 1.0):
    """The same Euler edit through ComfyUI's sampler with ``patched`` and through the core engine with ``core`` and
    ``adapter``; both returned in the model's latent space: (host, core). ``share_source``: the source encoding
    ``patched`` was applied with ("shared", Apply Adapter's default, or "per branch")."""
    import comfy.sample
    import comfy.samplers
    noise = comfy.sample.prepare_noise(latent, seed)
    out = comfy.sample.sample_custom(patched, noise, cfg, comfy.samplers.sampler_object("euler"),
                                     flow_sigmas(steps, shift=shift).float(), positive, negative, latent, seed=seed,
                                     disable_pbar=True)
    with TwoStreamRunner(core, adapter, strength=strength) as runner, torch.no_grad():
        config = SamplerConfig(steps=steps, cfg=cfg, shift=shift, seed=seed)
        ref = edit_latent(runner, EditRequest(source=model.model.process_latent_in(latent), context=ctx,
                                              negative_context=neg, noise=noise, features=list(features),
                                              config=config, share_source=share_source)).latent
    return model.model.process_latent_in(out), ref


def test_all_nodes_registered_with_prefixed_ids(comfyui):
    from imvideoedit_pack.nodes.catalog import NODE_IDS
    assert set(comfyui.nodes) == set(NODE_IDS.values())
    for node in comfyui.nodes.values():
        schema = node.define_schema()
        assert schema.category == "ImVideoEdit"
        assert all(i.tooltip for i in schema.inputs), schema.node_id


@pytest.mark.parametrize("source_encoding", ["per branch", "shared"])
def test_ksampler_path_matches_the_core_engine(comfyui, tiny_wan, adapter_file, source_encoding):
    import comfy.sample
    import comfy.samplers
    model, core = tiny_wan
    patched, _ = patched_model(comfyui, model, source_encoding=source_encoding)
    latent = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    positive, negative, ctx, neg = conditioning(comfyui, latent)
    steps, cfg, shift, seed = 4, 2.0, 3.0, 7
    sigmas = flow_sigmas(steps, shift=shift).float()
    noise = comfy.sample.prepare_noise(latent, seed)
    out = comfy.sample.sample_custom(patched, noise, cfg, comfy.samplers.sampler_object("euler"), sigmas, positive,
                                     negative, latent, seed=seed, disable_pbar=True)
    source = model.model.process_latent_in(latent)
    with TwoStreamRunner(core, adapter_file) as runner, torch.no_grad():
        config = SamplerConfig(steps=steps, cfg=cfg, shift=shift, seed=seed)
        ref = edit_latent(runner, EditRequest(source=source, context=ctx, negative_context=neg, noise=noise,
                                              config=config, share_source=source_encoding == "shared")).latent
        other = edit_latent(runner, EditRequest(source=source, context=ctx, negative_context=neg, noise=noise,
                                                config=config, share_source=source_encoding != "shared")).latent
    got = model.model.process_latent_in(out)
    assert torch.allclose(got, ref, atol=2e-4, rtol=1e-4), (got - ref).abs().max()
    assert (got - other).abs().max() > 1e-3  # the two encodings do differ: the match above is not vacuous
    # and the adapter matters: the plain model gives something else
    plain = comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.sampler_object("euler"), sigmas,
                                       positive, negative, latent, seed=seed, disable_pbar=True)
    assert (plain - out).abs().max() > 1e-3


def test_memory_manager_loads_the_adapter_with_the_model(comfyui, tiny_wan, adapter_file):
    import comfy.model_management as mm
    model, _ = tiny_wan
    patched, holder = patched_model(comfyui, model)
    latent = torch.randn(1, 16, 3, 8, 8)
    positive, negative, _, _ = conditioning(comfyui, latent)
    output(comfyui.nodes["IMVESampler"].execute(model=patched, positive=positive, negative=negative,
                                              latent={"samples": latent}, seed=0, steps=2, cfg=2.0, shift=3.0,
                                              strength=1.0, solver="euler", source_cache="device"))
    assert any(loaded.model is holder.patcher for loaded in mm.current_loaded_models)
    mask = output(comfyui.nodes["IMVEGateMask"].execute(model=patched, samples={"samples": latent}))[0]
    assert mask.shape == (9, 64, 64) and ((mask > 0) & (mask < 1)).all()


def test_a_shared_source_encoding_serves_branches_that_run_in_separate_forwards(comfyui, tiny_wan, adapter_file):
    """Low on memory, ComfyUI runs the positive and the negative cond one after the other: the negative's forward
    reuses the positive's encoding (one encoding per run), and the batched forward gets it once per branch."""
    from imvideoedit_pack.nodes.host import find_wrapper
    model, _ = tiny_wan
    wrapper = find_wrapper(patched_model(comfyui, model, source_encoding="shared")[0])
    encoded = []

    class Executor:
        @staticmethod
        def original(x, timestep, context, *args, **kwargs):
            encoded.append(context)

    source, run = torch.randn(1, 16, 3, 8, 8), object()

    def cache(cond_or_uncond, context):
        options = {"sample_sigmas": run, "cond_or_uncond": cond_or_uncond, "uuids": cond_or_uncond}
        batch = len(cond_or_uncond)
        return wrapper._source_cache(Executor, source.repeat(batch, 1, 1, 1, 1), context, None, None, options, {})

    wrapper._new_run({"sample_sigmas": run})
    positive, negative = torch.ones(1, 5, 32), torch.zeros(1, 5, 32)
    first = cache([0], positive)
    assert cache([1], negative).blocks is first.blocks and len(encoded) == 1
    both = cache([1, 0], torch.cat([negative, positive]))
    assert both.blocks is first.blocks and both.branches == 2 and len(encoded) == 1
    wrapper._new_run({"sample_sigmas": object()})
    cache([1, 0], torch.cat([negative, positive]))
    assert len(encoded) == 2 and torch.equal(encoded[1], positive)  # encoded with the instruction's branch


@pytest.mark.parametrize("cache", ["cpu", "off"])
def test_cache_placements_give_the_same_edit(comfyui, tiny_wan, adapter_file, cache):
    model, _ = tiny_wan
    latent = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    results = []
    for placement in ("device", cache):
        patched, _ = patched_model(comfyui, model, cache=placement)
        positive, negative, _, _ = conditioning(comfyui, latent)
        results.append(output(comfyui.nodes["IMVESampler"].execute(
            model=patched, positive=positive, negative=negative, latent={"samples": latent}, seed=1, steps=3,
            cfg=2.0, shift=3.0, strength=1.0, solver="heun", source_cache=placement))[0]["samples"])
    assert torch.equal(results[0], results[1])


def test_context_windows_hand_each_window_its_slice_of_the_source(comfyui, tiny_wan, adapter_file, monkeypatch):
    import comfy.context_windows
    from comfy_extras.nodes_context_windows import WanContextWindowsManualNode
    from imvideoedit_pack.nodes import host
    model, _ = tiny_wan
    patched, _ = patched_model(comfyui, model)
    windowed = output(WanContextWindowsManualNode.execute(
        model=patched, context_length=9, context_overlap=4, context_stride=1, closed_loop=False,
        context_schedule=comfy.context_windows.ContextSchedules.STATIC_STANDARD, fuse_method="pyramid",
        freenoise=False))[0]
    latent = torch.randn(1, 16, 5, 8, 8, generator=torch.Generator().manual_seed(6))  # 17 video frames
    seen = []
    original = host.SourceStreamWrapper._source_cache

    def spy(self, executor, source, context, clip_fea, time_dim_concat, options, kwargs):
        window = options.get("context_window")
        seen.append((list(window.index_list) if window else None, getattr(window, "causal_anchor_index", None),
                     source[:1].clone()))
        return original(self, executor, source, context, clip_fea, time_dim_concat, options, kwargs)

    monkeypatch.setattr(host.SourceStreamWrapper, "_source_cache", spy)
    positive, negative, _, _ = conditioning(comfyui, latent)
    output(comfyui.nodes["IMVESampler"].execute(model=windowed, positive=positive, negative=negative,
                                              latent={"samples": latent}, seed=0, steps=2, cfg=2.0, shift=3.0,
                                              strength=1.0, solver="euler", source_cache="device"))
    windows = {tuple(w) for w, _, _ in seen if w is not None}
    assert len(windows) >= 2, seen
    for frames, anchor, source in seen:
        indices = ([anchor] if anchor is not None and anchor >= 0 else []) + frames
        assert torch.equal(source, latent[:, :, indices].to(source.dtype)), (frames, anchor)


def test_edit_conditioning_states_its_frame_and_size_policy(comfyui):
    positive, negative, latent, frames, info = output(comfyui.nodes["IMVEEditConditioning"].execute(
        vae=StandInVAE(), source=torch.rand(11, 40, 72, 3), positive=[[torch.zeros(1, 5, 32), {}]],
        negative=[[torch.zeros(1, 5, 32), {}]]))
    assert frames.shape == (9, 48, 80, 3) and latent["samples"].shape == (1, 16, 3, 6, 10)
    assert "dropped the last 2 frame(s)" in info and "scaled from 72x40" in info
    from imvideoedit_pack.nodes.host import SOURCE_COND
    for cond in (positive, negative):
        assert torch.equal(cond[0][1]["model_conds"][SOURCE_COND].cond, latent["samples"])


def test_apply_adapter_refuses_a_model_that_is_not_wan_t2v(comfyui, tiny_wan, adapter_file):
    model, _ = tiny_wan
    holder = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name="tiny_edit.safetensors"))[0]
    other = model.clone()
    other.model.diffusion_model.model_type = "i2v"
    try:
        with pytest.raises(ValueError, match=r"this MODEL is a Wan image-to-video model \(i2v, 16 input channels"):
            comfyui.nodes["IMVEApplyAdapter"].execute(model=other, adapter=holder, strength=1.0, source_cache="device")
    finally:
        other.model.diffusion_model.model_type = "t2v"


def test_an_adapter_with_an_ffn_lora_edits_as_the_core_does(comfyui, tiny_wan):
    model, core = tiny_wan
    with_lora = randomize(build_adapter(replace(adapter_preset("tiny"), lora_rank=4), TINY, seed=0), seed=6, std=0.2)
    save_adapter(comfyui.base / "models" / "imvideoedit" / "tiny_ffn_lora.safetensors", with_lora, dtype="float32")
    holder = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name="tiny_ffn_lora.safetensors"))[0]
    patched = output(comfyui.nodes["IMVEApplyAdapter"].execute(model=model, adapter=holder, strength=0.7,
                                                             source_cache="device"))[0]
    latent = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    positive, negative, ctx, neg = conditioning(comfyui, latent)
    core_runs = {}
    for name, lora in (("with", with_lora), ("without", replace_lora(with_lora, None))):
        with torch.no_grad():
            host, core_runs[name] = host_and_core_edits(model, patched, core, lora, latent, positive, negative,
                                                        ctx, neg, share_source=True, strength=0.7)
    assert torch.allclose(host, core_runs["with"], atol=2e-4, rtol=1e-4), (host - core_runs["with"]).abs().max()
    assert (host - core_runs["without"]).abs().max() > 1e-3  # the LoRA is applied, not dropped
    assert not any(block.ffn[0]._forward_hooks for block in model.model.diffusion_model.blocks)  # only while editing


def replace_lora(adapter, lora):
    """A copy of ``adapter`` with its FFN LoRA replaced (None: the PU-SDA blocks alone)."""
    other = copy.deepcopy(adapter)
    other.ffn_lora = lora
    return other


def test_apply_adapter_names_the_source_encodings_it_knows(comfyui, tiny_wan, adapter_file):
    model, _ = tiny_wan
    with pytest.raises(ValueError, match="source_encoding 'both': choose one of per branch, shared"):
        patched_model(comfyui, model, source_encoding="both")


def _write_pairs(folder, count=4):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        src = np.zeros((32, 32, 3), np.uint8)
        src[4 + 2 * i:20 + 2 * i, 6:22] = 128
        tgt = src.copy()
        tgt[4 + 2 * i:20 + 2 * i, 6:22] = (0, 0, 255)
        cv2.imwrite(str(folder / f"p{i}_src.png"), src)
        cv2.imwrite(str(folder / f"p{i}_tgt.png"), tgt)
        (folder / f"p{i}.txt").write_text("make the square red")


def test_training_node_trains_saves_and_loads(comfyui, tiny_wan):
    model, _ = tiny_wan
    _write_pairs(comfyui.base / "input" / "pairs")
    adapter, summary = output(comfyui.nodes["IMVETrainAdapter"].execute(
        model=model, vae=StandInVAE(), clip=StandInCLIP(), pairs_folder="pairs", adapter_name="trained", steps=30,
        learning_rate=1e-2, batch_size=2, width=0, height=0, resize_policy="error", save_every=10, seed=0,
        resume=False))
    first, last = (float(x) for x in summary.split("loss ")[1].split(" (")[0].split(" -> "))
    assert last < first, summary
    loaded = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name="trained.safetensors"))[0]
    assert loaded.info.training["steps"] == 30
    # the default trains the FFN LoRA too (zero-initialised ``up``: non-zero only if it learned through the hooks)
    assert loaded.info.adapter_config.lora_rank == FFN_LORA_RANK
    assert all(pair.up.weight.abs().sum() > 0 for pair in loaded.adapter.ffn_lora.layers.values())


def test_cancelled_training_leaves_the_last_good_checkpoint(comfyui, tiny_wan, monkeypatch):
    import comfy.model_management as mm
    model, _ = tiny_wan
    _write_pairs(comfyui.base / "input" / "pairs2")
    calls = {"n": 0}

    def interrupted():
        calls["n"] += 1
        if calls["n"] > 12:  # the user presses cancel before step 13
            mm.interrupt_current_processing(True)
        return real()

    real = mm.processing_interrupted
    monkeypatch.setattr(mm, "processing_interrupted", interrupted)
    with pytest.raises(mm.InterruptProcessingException):
        comfyui.nodes["IMVETrainAdapter"].execute(
            model=model, vae=StandInVAE(), clip=StandInCLIP(), pairs_folder="pairs2", adapter_name="cancelled",
            steps=50, learning_rate=1e-3, batch_size=2, width=0, height=0, resize_policy="error", save_every=5,
            seed=0, resume=False)
    folder = comfyui.base / "models" / "imvideoedit"
    names = sorted(p.name for p in folder.iterdir() if p.name.startswith("cancelled") or p.name.startswith("."))
    assert names == ["cancelled.safetensors", "cancelled.train-state.safetensors"]  # no temporary files
    loaded = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name="cancelled.safetensors"))[0]
    assert loaded.info.training["steps"] == 10


def test_load_video_frames_streams_and_refuses_what_does_not_fit(comfyui, monkeypatch):
    from imvideoedit_core.io.video import write_video
    clip = torch.rand(12, 40, 56, 3)
    write_video(comfyui.base / "input" / "clip.mp4", clip, fps=12)
    node = comfyui.nodes["IMVELoadVideoFrames"]
    frames, fps, count, info = output(node.execute(video="clip.mp4", fps=0.0, max_frames=9, skip_first=1,
                                                   every_nth=1, resize_to_multiple=16))
    assert frames.shape == (9, 48, 64, 3) and count == 9 and fps == pytest.approx(12.0) and "clip.mp4" in info
    from imvideoedit_pack.nodes import video_nodes
    monkeypatch.setattr(video_nodes.psutil, "virtual_memory", lambda: type("M", (), {"available": 1000})())
    with pytest.raises(ValueError, match="GiB of RAM is free: lower max_frames"):
        node.execute(video="clip.mp4", fps=0.0, max_frames=0, skip_first=0, every_nth=1, resize_to_multiple=0)


def test_apply_adapter_patches_only_the_chosen_blocks(comfyui, tiny_wan, adapter_file):
    model, _ = tiny_wan
    holder = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name="tiny_edit.safetensors"))[0]
    patched = output(comfyui.nodes["IMVEApplyAdapter"].execute(model=model, adapter=holder, strength=1.0,
                                                               source_cache="device", blocks="1"))[0]
    replaced = patched.model_options["transformer_options"]["patches_replace"]["dit"]
    assert set(replaced) == {("double_block", 1)}
    assert "patches_replace" not in model.model_options.get("transformer_options", {})  # the input MODEL untouched
    with pytest.raises(ValueError, match=r"blocks \[7\] carry no adapter"):
        comfyui.nodes["IMVEApplyAdapter"].execute(model=model, adapter=holder, strength=1.0, source_cache="device",
                                                  blocks="7")


def _sample(model, latent, positive, negative, seed=3):
    import comfy.sample
    import comfy.samplers
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample_custom(model, noise, 2.0, comfy.samplers.sampler_object("euler"),
                                      flow_sigmas(3, shift=3.0).float(), positive, negative, latent, seed=seed,
                                      disable_pbar=True)


def test_loras_apply_before_or_after_the_adapter(comfyui, tiny_wan, adapter_file):
    import comfy.sd
    model, _ = tiny_wan
    lora = ffn_lora(TINY, scale=0.2)  # on the FFN input projections, in ComfyUI's generic key format
    latent = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    positive, negative, _, _ = conditioning(comfyui, latent)
    with_lora, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)
    before, _ = patched_model(comfyui, with_lora)                                   # LoRA, then adapter
    after, _ = comfy.sd.load_lora_for_models(patched_model(comfyui, model)[0], None, lora, 1.0, 0)  # and reversed
    a, b = _sample(before, latent, positive, negative), _sample(after, latent, positive, negative)
    assert torch.allclose(a, b, atol=1e-6)
    assert (a - _sample(patched_model(comfyui, model)[0], latent, positive, negative)).abs().max() > 1e-4


def test_ksampler_advanced_and_offloading(comfyui, tiny_wan, adapter_file):
    import comfy.model_management as mm
    import nodes as comfy_nodes
    model, _ = tiny_wan
    patched, holder = patched_model(comfyui, model)
    latent = torch.randn(1, 16, 3, 8, 8)
    positive, negative, _, _ = conditioning(comfyui, latent)
    out = comfy_nodes.KSamplerAdvanced().sample(patched, "enable", 1, 3, 2.0, "euler", "simple", positive, negative,
                                                {"samples": latent}, 0, 10000, "disable")[0]["samples"]
    assert out.shape == latent.shape and torch.isfinite(out).all()
    assert any(loaded.model is holder.patcher for loaded in mm.current_loaded_models)
    mm.unload_all_models()
    assert not any(loaded.model is holder.patcher for loaded in mm.current_loaded_models)
    again = comfy_nodes.KSamplerAdvanced().sample(patched, "enable", 1, 3, 2.0, "euler", "simple", positive,
                                                  negative, {"samples": latent}, 0, 10000, "disable")[0]["samples"]
    assert torch.equal(out, again)  # reloaded, same result


def test_cancelled_sampling_leaves_nothing_stale(comfyui, tiny_wan, adapter_file, monkeypatch):
    import comfy.model_management as mm
    import latent_preview
    model, _ = tiny_wan
    patched, _ = patched_model(comfyui, model)
    latent = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(10))
    positive, negative, _, _ = conditioning(comfyui, latent)
    kwargs = dict(model=patched, positive=positive, negative=negative, latent={"samples": latent}, seed=2, steps=4,
                  cfg=2.0, shift=3.0, strength=1.0, solver="euler", source_cache="device")
    reference = output(comfyui.nodes["IMVESampler"].execute(**kwargs))[0]["samples"]

    def cancelling(model, steps, x0_output_dict=None):
        def callback(step, x0, x, total):
            if step == 1:
                mm.interrupt_current_processing(True)
                mm.throw_exception_if_processing_interrupted()
        return callback

    monkeypatch.setattr(latent_preview, "prepare_callback", cancelling)
    with pytest.raises(mm.InterruptProcessingException):
        comfyui.nodes["IMVESampler"].execute(**kwargs)
    monkeypatch.undo()
    assert torch.equal(output(comfyui.nodes["IMVESampler"].execute(**kwargs))[0]["samples"], reference)
    assert not list((comfyui.base / "output").iterdir())  # sampling writes no files, finished or not


def test_training_node_takes_image_batches(comfyui, tiny_wan):
    model, _ = tiny_wan
    sources = torch.zeros(4, 32, 32, 3)
    sources[:, 8:24, 8:24] = 0.5
    targets = sources.clone()
    targets[:, 8:24, 8:24] = torch.tensor([1.0, 0.0, 0.0])
    node = comfyui.nodes["IMVETrainAdapter"]
    kwargs = dict(model=model, vae=StandInVAE(), clip=StandInCLIP(), pairs_folder="unused", adapter_name="batches",
                  steps=3, learning_rate=1e-3, batch_size=2, width=0, height=0, resize_policy="error", save_every=3,
                  seed=0, resume=False)
    _, summary = output(node.execute(**kwargs, source_images=sources, target_images=targets,
                                     instructions="make the square red"))
    assert "3 steps on 4 pairs" in summary
    with pytest.raises(ValueError, match="4 pairs but 2 instructions"):
        node.execute(**kwargs, source_images=sources, target_images=targets, instructions="a\nb")
    with pytest.raises(ValueError, match="connect both source_images and target_images"):
        node.execute(**kwargs, source_images=sources)


def test_load_video_frames_from_a_video_socket(comfyui):
    from comfy_api.latest import InputImpl
    from imvideoedit_core.io.video import write_video
    path = comfyui.base / "clip_socket.mp4"
    write_video(path, torch.rand(6, 32, 48, 3), fps=6)
    frames, fps, count, info = output(comfyui.nodes["IMVELoadVideoFrames"].execute(
        video="unused.mp4", fps=0.0, max_frames=0, skip_first=0, every_nth=2, resize_to_multiple=16,
        video_input=InputImpl.VideoFromFile(str(path))))
    assert frames.shape == (3, 32, 48, 3) and count == 3 and fps == pytest.approx(3.0)


def test_the_adapter_computes_and_caches_in_the_models_compute_dtype(comfyui, tiny_wan, adapter_file, monkeypatch):
    from imvideoedit_pack.nodes import host
    model, _ = tiny_wan
    save_adapter(comfyui.base / "models" / "imvideoedit" / "tiny_bf16.safetensors", adapter_file)
    holder = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name="tiny_bf16.safetensors"))[0]
    assert holder.info.dtype == "bfloat16" and holder.dtype == torch.bfloat16   # files store bf16 by default
    assert host.compute_dtype(model) == torch.float32                          # ComfyUI on a CPU computes in fp32
    as_fp32 = holder.in_dtype(torch.float32)
    assert as_fp32.dtype == torch.float32 and holder.in_dtype(torch.float32) is as_fp32  # one copy, made once
    assert holder.dtype == torch.bfloat16                                        # the loaded adapter is untouched
    monkeypatch.setattr(model.model, "manual_cast_dtype", torch.bfloat16)        # as with fp8 weights on a GPU
    patched = output(comfyui.nodes["IMVEApplyAdapter"].execute(model=model, adapter=holder, strength=1.0,
                                                             source_cache="device"))[0]
    wrapper = host.find_wrapper(patched)
    assert wrapper.holder.dtype == torch.bfloat16
    latent = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(8))
    positive, negative, _, _ = conditioning(comfyui, latent)
    monkeypatch.setattr(model.model, "manual_cast_dtype", None)                  # sample on the CPU in fp32
    caches = []  # the run's caches, as the run ends and releases them
    release = wrapper.release
    monkeypatch.setattr(wrapper, "release", lambda: (caches.extend(wrapper._caches.values()), release()))
    output(comfyui.nodes["IMVESampler"].execute(model=patched, positive=positive, negative=negative,
                                              latent={"samples": latent}, seed=0, steps=1, cfg=2.0, shift=3.0,
                                              strength=1.0, solver="euler", source_cache="device"))
    assert not wrapper._caches  # released when the run ended
    assert caches and all(kv.k.dtype == torch.bfloat16 for c in caches for kv in c.blocks.values())
