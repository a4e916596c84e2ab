"""The Wan 2.2 family in the core: presets, expert marks, per-frame timesteps, expert noise ranges, VAE strides."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tiny import randomize, text
from imvideoedit_core.edit.frame_policy import fit_frames
from imvideoedit_core.edit.sampling import shift_sigma
from imvideoedit_core.edit.streams import TwoStreamRunner, gate_timestep
from imvideoedit_core.model.adapter import build_adapter
from imvideoedit_core.model.adapter_file import AdapterFileError, check_compatible, read_adapter_info, save_adapter
from imvideoedit_core.model.backbone import build_backbone, velocity_from_x0
from imvideoedit_core.model.config import (A14B_T2V_BOUNDARY, WAN22_A14B_FAMILY, WAN22_TI2V_FAMILY, BackboneConfig,
                                           adapter_config_for, adapter_preset, backbone_preset, expert_sigma_range)
from imvideoedit_core.model.wan_strides import size_multiple
from imvideoedit_core.train.pair_dataset import validate_size
from imvideoedit_core.train.trainer import LatentBatch, TrainConfig, _draw, _step_generator

TINY48 = dataclasses.replace(backbone_preset("tiny"), in_dim=48, out_dim=48, family=WAN22_TI2V_FAMILY)


def test_the_wan22_presets_carry_the_official_dimensions():
    ti2v = backbone_preset("wan2.2-ti2v-5b")
    assert (ti2v.dim, ti2v.ffn_dim, ti2v.num_heads, ti2v.num_layers, ti2v.in_dim, ti2v.out_dim) == \
        (3072, 14336, 24, 30, 48, 48)
    assert ti2v.head_dim == 128 and ti2v.describe() == "Wan 2.2 TI2V 5B"
    high, low = backbone_preset("wan2.2-t2v-a14b-high"), backbone_preset("wan2.2-t2v-a14b-low")
    shapes = lambda c: dataclasses.replace(c, family="wan2.1-t2v", expert="")  # noqa: E731
    assert shapes(high) == shapes(low) == backbone_preset("wan2.1-t2v-14b")  # only the user can tell them apart
    assert high.describe() == "Wan 2.2 T2V A14B (high-noise expert)"
    # the adapter: a quarter of the width in 128-wide heads, as for Wan 2.1
    assert adapter_config_for(ti2v) == adapter_preset("wan2.2-ti2v-5b")
    assert (adapter_preset("wan2.2-ti2v-5b").inner_dim, adapter_preset("wan2.2-ti2v-5b").num_heads) == (768, 6)
    assert adapter_config_for(high) == adapter_preset("wan2.1-t2v-14b")


def test_experts_belong_to_the_a14b_family_only():
    with pytest.raises(ValueError, match="one of its two experts"):
        BackboneConfig(family=WAN22_A14B_FAMILY)
    with pytest.raises(ValueError, match="no other family has experts"):
        BackboneConfig(expert="high")
    with pytest.raises(ValueError, match="unknown expert 'middle'"):
        BackboneConfig(family=WAN22_A14B_FAMILY, expert="middle")


def test_an_adapter_names_the_family_and_expert_it_was_trained_for(tmp_path):
    tiny = backbone_preset("tiny")
    high = dataclasses.replace(tiny, family=WAN22_A14B_FAMILY, expert="high")
    path = tmp_path / "high.safetensors"
    save_adapter(path, build_adapter(adapter_preset("tiny"), high, seed=0))
    info = read_adapter_info(path)
    assert info.backbone_config.expert == "high"
    check_compatible(info, high)
    with pytest.raises(AdapterFileError, match=r"trained on Wan 2.2 T2V A14B \(high-noise expert\), the model is "
                                               r"Wan 2.2 T2V A14B \(low-noise expert\)"):
        check_compatible(info, dataclasses.replace(high, expert="low"))
    plain = tmp_path / "wan21.safetensors"
    save_adapter(plain, build_adapter(adapter_preset("tiny"), tiny, seed=0))
    with pytest.raises(AdapterFileError, match=r"trained on Wan 2.1 T2V, the model is Wan 2.2 T2V A14B"):
        check_compatible(read_adapter_info(plain), high)


def test_per_frame_timesteps_equal_one_timestep_when_they_agree_and_move_only_by_frame():
    backbone = randomize(build_backbone(TINY48, seed=0), seed=1).eval()
    x = torch.randn(2, 48, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    context = text(0, batch=2)
    t = torch.tensor([700.0, 300.0])
    with torch.no_grad():
        one = backbone(x, t, context)
        per_frame = backbone(x, t[:, None].expand(2, 3).contiguous(), context)
        first_clean = backbone(x, torch.tensor([[0.0, 700.0, 700.0], [0.0, 300.0, 300.0]]), context)
    assert one.shape == (2, 48, 3, 8, 8)
    torch.testing.assert_close(per_frame, one, rtol=1e-5, atol=1e-6)
    assert (first_clean - one).abs().amax() > 1e-3  # frame 0 at t = 0 changes the prediction
    with pytest.raises(ValueError, match=r"neither one per sample \(2,\) nor one per latent frame \(2, 3\)"):
        backbone(x, torch.zeros(2, 5), context)


def test_x0_velocity_with_per_frame_timesteps_divides_each_frame_by_its_own_sigma():
    x, x0 = torch.ones(1, 2, 2, 1, 1), torch.zeros(1, 2, 2, 1, 1)
    v = velocity_from_x0(x, x0, torch.tensor([[500.0, 250.0]]))
    assert v[0, :, 0].flatten().tolist() == [2.0, 2.0] and v[0, :, 1].flatten().tolist() == [4.0, 4.0]


def test_the_adapter_runs_on_a_48_channel_backbone_with_a_clean_first_frame():
    backbone = randomize(build_backbone(TINY48, seed=0), seed=1).eval()
    adapter = randomize(build_adapter(adapter_config_for(TINY48), TINY48, seed=0), seed=2, std=0.2)
    x = torch.randn(1, 48, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    source = torch.randn(1, 48, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    context = text(1)
    t = torch.tensor([[0.0, 800.0, 800.0]])
    with TwoStreamRunner(backbone, adapter) as runner, torch.no_grad():
        stream = runner.source(source, context)
        per_frame = runner(x, t, context, stream).velocity
        same_gate = runner(x, torch.tensor([800.0]), context, stream).velocity
    assert per_frame.shape == x.shape and torch.isfinite(per_frame).all()
    assert (per_frame - same_gate).abs().amax() > 1e-4
    assert gate_timestep(t).tolist() == [800.0]  # the gate sees the frames being generated


def test_each_expert_trains_on_its_own_noise_levels():
    assert expert_sigma_range("") == (0.0, 1.0)
    assert expert_sigma_range("high") == (A14B_T2V_BOUNDARY, 1.0)
    assert expert_sigma_range("low", boundary=0.9) == (0.0, 0.9)
    batch = LatentBatch(source=torch.zeros(64, 16, 1, 2, 2), target=torch.zeros(64, 16, 1, 2, 2),
                        context=torch.zeros(64, 3, 8), empty_context=torch.zeros(1, 3, 8))
    for shift in (1.0, 3.0):
        whole = _draw(batch, TrainConfig(sigma_shift=shift), step=5, rank=0)[0]
        u = torch.rand(64, generator=_step_generator(0, 5, 0), dtype=torch.float64)
        torch.testing.assert_close(whole, shift_sigma(u, shift).float())  # the default draws as before
        high = _draw(batch, TrainConfig(sigma_shift=shift, sigma_range=expert_sigma_range("high")), 5, 0)[0]
        low = _draw(batch, TrainConfig(sigma_shift=shift, sigma_range=expert_sigma_range("low")), 5, 0)[0]
        assert high.min() >= A14B_T2V_BOUNDARY - 1e-6 and high.max() <= 1.0
        assert low.max() < A14B_T2V_BOUNDARY and low.min() >= 0.0
        assert high.std() > 0.01 and low.std() > 0.05  # spread over the range, not one value
    with pytest.raises(ValueError, match="sigma_range must be"):
        TrainConfig(sigma_range=(0.9, 0.5))


def test_frame_sizes_follow_the_vae_stride():
    assert size_multiple(8) == 16 and size_multiple(16) == 32
    frames = torch.rand(6, 40, 72, 3)
    fitted = fit_frames(frames, multiple=32)
    assert fitted.images.shape == (5, 32, 64, 3)
    assert "to multiples of 32" in fitted.describe()
    assert fit_frames(frames).images.shape == (5, 48, 80, 3)
    assert validate_size((64, 96), multiple=32) == (64, 96)
    with pytest.raises(ValueError, match=r"multiples of 32 \(the VAE downsamples by 16.*nearest valid size is "
                                         r"\(64, 96\)"):
        validate_size((48, 96), multiple=32)
