"""Real-dimension tier (marker `realdim`, IMVE_REALDIM=1): Wan 2.1 T2V 1.3B at random weights, saved as fp16, as
fp8_e4m3fn and as scaled fp8 with official key names and no metadata, each loaded by ComfyUI's own UNETLoader;
then Apply Adapter -> IMVE Sampler, Train Adapter and Tune On Keyframe (2 steps each, tiny frames) as nodes. Wan 2.2
TI2V 5B the same way as fp8_e4m3fn (5 GB; ComfyUI detects it as WAN22 from the tensors), sampling only.

Asserts that every combination runs and that training and tuning hold no second backbone: what they add to the
loaded model is the adapter's fp32 training state, plus what ComfyUI itself adds when gradients flow through its
model (measured without the pack in the same run: with scaled fp8 on a CPU it dequantizes weights for the backward,
several GiB at 1.3B), plus less than half the backbone's size for activations. A LoRA applied before the adapter
must change the training loss. `bench/realdim.py` prints the same measurements."""

from __future__ import annotations

import pytest
import torch

from comfy_standins import ffn_lora
from bench.realdim import adapter_training_state_bytes, measure_all
from bench.wan_files import FORMATS
from imvideoedit_core.model.backbone import build_backbone
from imvideoedit_core.model.config import backbone_preset

pytestmark = pytest.mark.realdim
PRESET = backbone_preset("wan2.1-t2v-1.3b")


@pytest.fixture(scope="module")
def footprints(comfyui):
    return {row["format"]: row for row in measure_all(comfyui, formats=FORMATS)}


@pytest.fixture(scope="module")
def ti2v_footprint(comfyui):
    return measure_all(comfyui, formats=("fp8_e4m3fn",), preset="wan2.2-ti2v-5b", train_and_tune=False)[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_samples_trains_and_tunes(footprints, fmt):
    row = footprints[fmt]
    assert row["sample_finite"], fmt
    assert "2 steps" in row["train_summary"] and "loss" in row["train_summary"], row["train_summary"]
    assert "tuned" in row["tune_summary"], row["tune_summary"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_training_and_tuning_hold_no_second_backbone(footprints, fmt):
    row = footprints[fmt]
    fp8_backbone = sum(p.numel() for p in build_backbone(PRESET, device="meta").parameters())  # >= 1 byte each
    state = adapter_training_state_bytes()
    for step in ("training_bytes", "tuning_bytes"):
        added = row[step]
        print(f"{fmt} {step}: {added / 2**30:.2f} GiB above the loaded model (adapter training state "
              f"{state / 2**30:.2f} GiB, ComfyUI's own backward {row['plain_backward_bytes'] / 2**30:.2f} GiB, "
              f"backbone >= {fp8_backbone / 2**30:.2f} GiB)")
        assert added < state + row["plain_backward_bytes"] + 0.5 * fp8_backbone, (fmt, step, added)


def test_a_lora_before_the_adapter_changes_the_training_loss(comfyui, footprints):
    import comfy.sd
    import nodes as comfy_nodes
    from imvideoedit_core.model.adapter import build_adapter
    from imvideoedit_core.model.config import adapter_config_for
    from imvideoedit_pack.nodes.host import ComfyAdaptedModel
    model = comfy_nodes.UNETLoader().load_unet("wan2.1-t2v-1.3b_random_fp16.safetensors", "default")[0]
    with_lora = comfy.sd.load_lora_for_models(model, None, ffn_lora(PRESET, scale=0.05), 1.0, 0)[0]
    g = torch.Generator().manual_seed(4)
    x, source = torch.randn(1, 16, 1, 4, 4, generator=g), torch.randn(1, 16, 1, 4, 4, generator=g)
    context, t = torch.randn(1, 5, PRESET.text_dim, generator=g), torch.tensor([500.0])
    losses = []
    for patcher in (model, with_lora):
        adapted = ComfyAdaptedModel(patcher, build_adapter(adapter_config_for(PRESET), PRESET, seed=0))
        with torch.inference_mode(False), adapted.training(gradient_checkpointing=True):
            losses.append(adapted.velocity(x, t, context, source).velocity.float().square().mean().item())
    assert abs(losses[1] - losses[0]) > 1e-4 * abs(losses[0]), losses


def test_ti2v_5b_fp8_loads_and_samples(ti2v_footprint):
    """Sampling (and ComfyUI's own backward) only. On a CPU ComfyUI holds the fp8 file's weights in float32 (19.1 GiB
    resident after loading, 2026-12-02), so training the 5B adapter (+4.4 GiB of fp32 training state) needs more
    than this machine's 24 GB: it was killed by the OOM killer at 23.5 GB resident."""
    row = ti2v_footprint
    assert row["sample_finite"]
    print(f"TI2V 5B fp8: loaded {row['loaded_bytes'] / 2**30:.2f} GiB resident; sampling adds "
          f"{row['sampling_bytes'] / 2**30:.2f} GiB, ComfyUI's own backward {row['plain_backward_bytes'] / 2**30:.2f}")
    backbone = sum(p.numel() for p in build_backbone(backbone_preset("wan2.2-ti2v-5b"), device="meta").parameters())
    assert row["sampling_bytes"] < 0.5 * backbone  # no second copy of the (fp8, >= 1 byte a weight) backbone
