"""GGUF-loaded Wan models (ComfyUI-GGUF's own Unet Loader; weights dequantized on the fly): Apply Adapter, sampling
and Tune On Keyframe work on them, with gradients through activations only. Needs ComfyUI-GGUF (its folder in
``COMFYUI_GGUF_DIR`` or ``$COMFYUI_DIR/custom_nodes/ComfyUI-GGUF``) and the ``gguf`` package in ComfyUI's Python;
skipped with that reason otherwise."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from test_comfyui_inprocess import StandInCLIP, StandInVAE, host_and_core_edits, output  # noqa: F401
from tiny import randomize
from imvideoedit_core.model.adapter import build_adapter
from imvideoedit_core.model.adapter_file import save_adapter
from imvideoedit_core.model.backbone import build_backbone
from imvideoedit_core.model.config import BackboneConfig, adapter_config_for

gguf = pytest.importorskip("gguf", reason="GGUF tier SKIPPED: the gguf package is not installed in ComfyUI's Python "
                                          "(pip install gguf; README, 'Testing with ComfyUI')")
from gguf_files import write_wan_gguf  # noqa: E402  (needs gguf)

# ComfyUI reads a GGUF Wan's sizes from its tensors alone: 128-wide heads, freq_dim 256, text_dim 4096
GGUF_TINY = BackboneConfig(dim=256, ffn_dim=512, freq_dim=256, text_dim=4096, num_heads=2, num_layers=2)
QTYPES = {"Q8_0": gguf.GGMLQuantizationType.Q8_0, "Q6_K": gguf.GGMLQuantizationType.Q6_K}


def gguf_folder() -> Path | None:
    named = os.environ.get("COMFYUI_GGUF_DIR")
    if named:
        return Path(named)
    comfy = os.environ.get("COMFYUI_DIR")
    folder = Path(comfy) / "custom_nodes" / "ComfyUI-GGUF" if comfy else None
    return folder if folder is not None and folder.is_dir() else None


@pytest.fixture(scope="module")
def gguf_nodes(comfyui):
    folder = gguf_folder()
    if folder is None or not (folder / "nodes.py").is_file():
        pytest.skip("GGUF tier SKIPPED: ComfyUI-GGUF not found (clone city96/ComfyUI-GGUF into "
                    "$COMFYUI_DIR/custom_nodes/ or set COMFYUI_GGUF_DIR)")
    spec = importlib.util.spec_from_file_location("comfyui_gguf", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_gguf"] = package
    spec.loader.exec_module(package)
    return package.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module", params=sorted(QTYPES))
def gguf_wan(request, comfyui, gguf_nodes):
    """A small Wan T2V checkpoint quantized to Q8_0 or Q6_K and loaded by Unet Loader (GGUF); the core holds the
    weights ComfyUI-GGUF's own dequantization gives (what the MODEL computes with)."""
    from comfyui_gguf.dequant import dequantize_tensor
    core = randomize(build_backbone(GGUF_TINY, seed=0), seed=1, std=0.03)
    original = {k: v.clone() for k, v in core.state_dict().items()}
    name = f"wan_tiny_{request.param}.gguf"
    restored = write_wan_gguf(comfyui.base / "models" / "diffusion_models" / name, original, QTYPES[request.param])
    model = gguf_nodes["UnetLoaderGGUF"]().load_unet(name)[0]
    stored = model.model.diffusion_model
    core.load_state_dict({k: dequantize_tensor(stored.get_parameter(k), dtype=torch.float32).reshape(v.shape)
                          for k, v in original.items()})
    return types.SimpleNamespace(qtype=request.param, model=model, core=core.requires_grad_(False).eval(),
                                 original=original, restored=restored)


@pytest.fixture(scope="module")
def gguf_adapter(comfyui):
    adapter = randomize(build_adapter(adapter_config_for(GGUF_TINY), GGUF_TINY, seed=0), seed=2, std=0.1)
    save_adapter(comfyui.base / "models" / "imvideoedit" / "gguf_tiny.safetensors", adapter, dtype="float32")
    return adapter


def test_the_file_is_quantized_and_detected_as_wan_t2v(gguf_wan):
    from imvideoedit_pack.nodes.host import backbone_config_of
    model = gguf_wan.model
    weight = model.model.diffusion_model.blocks[0].self_attn.q.weight
    assert getattr(weight, "tensor_type", None) == QTYPES[gguf_wan.qtype]  # stored quantized, dequantized per call
    cfg = backbone_config_of(model)
    assert (cfg.dim, cfg.num_layers, cfg.text_dim, cfg.family) == (256, 2, 4096, "wan2.1-t2v")
    # the writer's blocks decode (gguf's own dequantizer) to the weights within the format's rounding, and
    # ComfyUI-GGUF's dequantization agrees with gguf's to float16 precision
    name = "blocks.0.ffn.0.weight"
    worst = {"Q8_0": 1 / 127, "Q6_K": 1 / 31}[gguf_wan.qtype]  # half a step of the coarsest scale, doubled
    original = gguf_wan.original[name]
    assert (gguf_wan.restored[name] - original).abs().max() <= worst * original.abs().max()
    torch.testing.assert_close(gguf_wan.core.state_dict()[name], gguf_wan.restored[name], atol=2e-4, rtol=0)


def test_a_gguf_model_edits_as_the_core_does_with_the_same_weights(comfyui, gguf_wan, gguf_adapter):
    from imvideoedit_pack.nodes.edit_nodes import with_source
    model = gguf_wan.model
    holder = output(comfyui.nodes["IMVELoadAdapter"].execute(adapter_name="gguf_tiny.safetensors"))[0]
    patched = output(comfyui.nodes["IMVEApplyAdapter"].execute(model=model, adapter=holder, strength=1.0,
                                                             source_cache="device"))[0]
    latent = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    ctx, neg = torch.randn(1, 5, 4096, generator=torch.Generator().manual_seed(3)), torch.zeros(1, 5, 4096)
    got, ref = host_and_core_edits(model, patched, gguf_wan.core, gguf_adapter, latent,
                                   with_source([[ctx, {}]], latent), with_source([[neg, {}]], latent), ctx, neg,
                                   share_source=True)  # Apply Adapter's default source encoding
    torch.testing.assert_close(got, ref, atol=5e-4, rtol=1e-3)


def test_tune_on_keyframe_trains_the_adapter_through_a_gguf_model(comfyui, gguf_wan):
    """Gradients reach the adapter through the dequantized layers; the quantized weights stay as they are."""
    model = gguf_wan.model
    weight = model.model.diffusion_model.blocks[0].ffn[0].weight
    before = weight.clone()
    source = torch.zeros(1, 32, 32, 3)
    source[:, 8:24, 8:24] = 0.5
    edited = source.clone()
    edited[:, 8:24, 8:24, 0] = 1.0
    fresh = comfyui.nodes["IMVETuneOnKeyframe"]._fresh(model, 0)
    tuned, summary = output(comfyui.nodes["IMVETuneOnKeyframe"].execute(
        model=model, vae=StandInVAE(), clip=StandInCLIP(dim=4096), source_keyframe=source, edited_keyframe=edited,
        instruction="make the square red", steps=3, learning_rate=0.0, seed=0, augment=False, save_name=""))
    assert "tuned a fresh adapter 3 steps" in summary
    moved = [k for k, v in tuned.adapter.state_dict().items() if not torch.equal(v, fresh.adapter.state_dict()[k])]
    assert moved  # the adapter learned
    assert torch.equal(weight, before) and not weight.requires_grad


def test_train_adapter_and_the_sampler_node_run_on_a_gguf_model(comfyui, gguf_wan):
    from imvideoedit_pack.nodes.edit_nodes import with_source
    model = gguf_wan.model
    sources = torch.zeros(4, 32, 32, 3)
    sources[:, 8:24, 8:24] = 0.5
    targets = sources.clone()
    targets[:, 8:24, 8:24, 0] = 1.0
    holder, summary = output(comfyui.nodes["IMVETrainAdapter"].execute(
        model=model, vae=StandInVAE(), clip=StandInCLIP(dim=4096), pairs_folder="unused",
        adapter_name=f"gguf_trained_{gguf_wan.qtype}", steps=2, learning_rate=1e-3, batch_size=2, width=0, height=0,
        resize_policy="error", save_every=2, seed=0, resume=False, source_images=sources, target_images=targets,
        instructions="make the square red"))
    assert "2 steps on 4 pairs" in summary
    patched = output(comfyui.nodes["IMVEApplyAdapter"].execute(model=model, adapter=holder, strength=1.0,
                                                             source_cache="device"))[0]
    latent = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    ctx = torch.randn(1, 5, 4096, generator=torch.Generator().manual_seed(2))
    edit = output(comfyui.nodes["IMVESampler"].execute(
        model=patched, positive=with_source([[ctx, {}]], latent),
        negative=with_source([[torch.zeros(1, 5, 4096), {}]], latent), latent={"samples": latent}, seed=0, steps=2,
        cfg=2.0, shift=3.0, strength=1.0, solver="euler", source_cache="device"))[0]["samples"]
    assert edit.shape == latent.shape and torch.isfinite(edit).all()
