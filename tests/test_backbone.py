"""The Wan 2.1 backbone: checkpoint layout, rotary embeddings, loading, attention seam."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from safetensors.torch import save_file

from tiny import latent, text
from imvideoedit_core.model.attention import math_attention, sdpa_attention, use_attention
from imvideoedit_core.model.backbone import X0_MIN_SIGMA, WanDiT, build_backbone, velocity_from_x0
from imvideoedit_core.model.config import BACKBONE_PRESETS, BackboneConfig, backbone_preset
from imvideoedit_core.model.rope import rope_3d
from imvideoedit_core.model.wan_weights import WanWeightsError, load_wan_checkpoint, load_wan_state_dict


def official_wan21_t2v_shapes(dim: int, ffn: int, layers: int) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of an official Wan 2.1 T2V checkpoint, written out from its published layout."""
    shapes = {
        "patch_embedding.weight": (dim, 16, 1, 2, 2), "patch_embedding.bias": (dim,),
        "text_embedding.0.weight": (dim, 4096), "text_embedding.0.bias": (dim,),
        "text_embedding.2.weight": (dim, dim), "text_embedding.2.bias": (dim,),
        "time_embedding.0.weight": (dim, 256), "time_embedding.0.bias": (dim,),
        "time_embedding.2.weight": (dim, dim), "time_embedding.2.bias": (dim,),
        "time_projection.1.weight": (6 * dim, dim), "time_projection.1.bias": (6 * dim,),
        "head.head.weight": (64, dim), "head.head.bias": (64,), "head.modulation": (1, 2, dim),
    }
    for i in range(layers):
        p = f"blocks.{i}."
        for attn in ("self_attn", "cross_attn"):
            for lin in "qkvo":
                shapes[f"{p}{attn}.{lin}.weight"] = (dim, dim)
                shapes[f"{p}{attn}.{lin}.bias"] = (dim,)
            shapes[f"{p}{attn}.norm_q.weight"] = (dim,)
            shapes[f"{p}{attn}.norm_k.weight"] = (dim,)
        shapes.update({f"{p}norm3.weight": (dim,), f"{p}norm3.bias": (dim,), f"{p}modulation": (1, 6, dim),
                       f"{p}ffn.0.weight": (ffn, dim), f"{p}ffn.0.bias": (ffn,),
                       f"{p}ffn.2.weight": (dim, ffn), f"{p}ffn.2.bias": (dim,)})
    return shapes


@pytest.mark.parametrize("preset,dim,ffn,layers", [("wan2.1-t2v-1.3b", 1536, 8960, 30),
                                                   ("wan2.1-t2v-14b", 5120, 13824, 40)])
def test_state_dict_matches_official_checkpoint_layout(preset, dim, ffn, layers):
    model = WanDiT(backbone_preset(preset), device="meta")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == official_wan21_t2v_shapes(dim, ffn, layers)
    assert len(got) == 15 + 27 * layers  # 825 tensors for 1.3B, 1095 for 14B


def test_real_size_parameter_counts():
    counts = {name: sum(p.numel() for p in WanDiT(backbone_preset(name), device="meta").parameters())
              for name in ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b")}
    assert 1.3e9 < counts["wan2.1-t2v-1.3b"] < 1.5e9   # "1.3B"
    assert 13.5e9 < counts["wan2.1-t2v-14b"] < 14.5e9  # "14B"


def test_forward_shape_and_determinism(tiny_backbone):
    x, ctx = latent(0, frames=3, size=8, batch=2), text(0, batch=2)
    t = torch.tensor([999.0, 10.0])
    out = tiny_backbone(x, t, ctx)
    assert out.shape == x.shape
    assert torch.equal(out, tiny_backbone(x, t, ctx))
    assert not torch.allclose(out[0], tiny_backbone(x, t.flip(0), ctx)[0])  # the timestep matters


def test_rope_3d_matches_wan_axis_split():
    head_dim, grid = 12, (2, 3, 4)
    freqs = rope_3d(head_dim, grid)
    c = head_dim // 2
    split = [c - 2 * (c // 3), c // 3, c // 3]  # time, height, width pairs: 2, 2, 2
    assert freqs.shape == (math.prod(grid), c)
    # token (f, h, w) rotates pair j of an axis with n pairs by pos * 10000^(-2j / (2n))
    for f in range(2):
        for h in range(3):
            for w in range(4):
                expected = []
                for pos, n in zip((f, h, w), split):
                    expected += [pos * 10000.0 ** (-2 * j / (2 * n)) for j in range(n)]
                token = (f * 3 + h) * 4 + w
                assert torch.allclose(torch.view_as_real(freqs[token]), torch.view_as_real(
                    torch.polar(torch.ones(c), torch.tensor(expected))), atol=1e-6)


def test_bf16_checkpoint_with_comfy_prefix_loads(tiny_backbone, tmp_path):
    sd = {f"model.diffusion_model.{k}": v.to(torch.bfloat16) for k, v in tiny_backbone.state_dict().items()}
    save_file(sd, tmp_path / "wan_tiny.safetensors")
    loaded = load_wan_checkpoint(tmp_path / "wan_tiny.safetensors", backbone_preset("tiny"))
    assert next(loaded.parameters()).dtype == torch.bfloat16
    assert not any(p.requires_grad for p in loaded.parameters())
    for k, v in tiny_backbone.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.to(torch.bfloat16)), k


def test_wrong_checkpoint_names_the_mismatch(tiny_backbone):
    sd = dict(tiny_backbone.state_dict())
    toy = WanDiT(backbone_preset("toy"))
    with pytest.raises(WanWeightsError, match=r"shape mismatch|file has") as err:
        load_wan_state_dict(toy, sd, source="wan_tiny.safetensors")
    assert "wan_tiny.safetensors" in str(err.value) and "preset 'tiny'" in str(err.value)
    del sd["blocks.1.ffn.0.weight"]
    sd["blocks.1.img_emb.weight"] = torch.zeros(1)
    with pytest.raises(WanWeightsError, match=r"1 missing keys.*blocks\.1\.ffn\.0\.weight.*1 unexpected keys"):
        load_wan_state_dict(WanDiT(backbone_preset("tiny")), sd)
    with pytest.raises(WanWeightsError, match="not a Wan DiT checkpoint"):
        load_wan_state_dict(WanDiT(backbone_preset("tiny")), {"decoder.conv.weight": torch.zeros(1)})


def test_checkpoint_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Wan checkpoint"):
        load_wan_checkpoint(tmp_path / "missing.safetensors", backbone_preset("tiny"))
    (tmp_path / "wan.pt").write_bytes(b"\x80\x04")
    with pytest.raises(WanWeightsError, match="only .safetensors"):
        load_wan_checkpoint(tmp_path / "wan.pt", backbone_preset("tiny"))


def test_attention_seam_routes_every_call(tiny_backbone):
    x, ctx, t = latent(1), text(1), torch.tensor([500.0])
    calls = []

    def counting(q, k, v, heads):
        calls.append(q.shape)
        return math_attention(q, k, v, heads)

    reference = tiny_backbone(x, t, ctx)
    with use_attention(counting):
        routed = tiny_backbone(x, t, ctx)
    assert len(calls) == 2 * len(tiny_backbone.blocks)  # self + cross attention per block
    assert torch.allclose(routed, reference, atol=1e-5)
    q = torch.randn(2, 7, 12)
    assert torch.allclose(sdpa_attention(q, q, q, 3), math_attention(q, q, q, 3), atol=1e-6)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_backbone):
    model = tiny_backbone.requires_grad_(True).train()
    x, ctx, t = latent(2), text(2), torch.tensor([300.0])

    def grads():
        model.zero_grad()
        model(x, t, ctx).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.gradient_checkpointing = True
    checkpointed = grads()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed))


def test_build_backbone_is_seeded_and_config_validated():
    a = build_backbone(backbone_preset("tiny"), seed=3).state_dict()
    b = build_backbone(backbone_preset("tiny"), seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert set(BACKBONE_PRESETS) >= {"tiny", "toy", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b"}
    with pytest.raises(ValueError, match="unknown backbone preset 'wan3'.*choose one of"):
        backbone_preset("wan3")
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        BackboneConfig(dim=100, num_heads=3)
    cfg = backbone_preset("toy")
    assert BackboneConfig.from_json(cfg.to_json()) == cfg


def test_rope_frame_offset_shifts_the_time_axis_only():
    full = rope_3d(12, (5, 3, 4))
    shifted = rope_3d(12, (2, 3, 4), frame_offset=3)
    assert torch.equal(shifted, full[3 * 12:])  # frames 3 and 4 of the longer clip
    assert torch.equal(rope_3d(12, (1, 3, 4), frame_offset=0), full[:12])


def test_an_x0_head_returns_the_velocity_its_clean_latent_implies():
    """prediction="x0": the head predicts the clean latent and forward() returns (x - x0) / sigma (sigma clamped),
    so every consumer still sees a velocity; a perfect x0 gives exactly noise - x0."""
    x0, noise = torch.randn(2, 16, 2, 4, 4), torch.randn(2, 16, 2, 4, 4)
    t = torch.tensor([300.0, 10.0])  # sigma 0.3, and 0.01 (below the clamp)
    sigma = (t / 1000).view(-1, 1, 1, 1, 1)
    x = (1 - sigma) * x0 + sigma * noise
    v = velocity_from_x0(x, x0, t)
    torch.testing.assert_close(v[0], (noise - x0)[0])
    torch.testing.assert_close(v[1], ((x - x0) / X0_MIN_SIGMA)[1])
    velocity_model = build_backbone(backbone_preset("tiny"), seed=0)
    with torch.no_grad():
        velocity_model.head.head.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    x0_model = build_backbone(dataclasses.replace(backbone_preset("tiny"), prediction="x0"))
    x0_model.load_state_dict(velocity_model.state_dict())
    context = torch.randn(2, 5, 32)
    with torch.no_grad():
        head = velocity_model(x, t, context)  # the same weights: the head's raw output
        torch.testing.assert_close(x0_model(x, t, context), velocity_from_x0(x, head, t))
    with pytest.raises(ValueError, match="unknown prediction 'eps'"):
        dataclasses.replace(backbone_preset("tiny"), prediction="eps")


def test_absolute_positions_are_an_opt_in_table_that_tells_tokens_apart():
    plain = build_backbone(backbone_preset("toy"), seed=0)
    placed = build_backbone(backbone_preset("toy-pos"), seed=0)
    assert set(placed.state_dict()) - set(plain.state_dict()) == {"positions.table"}  # Wan's own keys: unchanged
    assert placed.positions.table.shape == (8, 8, 8, 128) and placed.positions.table.std() > 0
    x = torch.zeros(1, 16, 2, 16, 16)  # every token the same: only its position can tell it apart
    t, ctx = torch.tensor([999.0]), torch.zeros(1, 3, 64)
    with torch.no_grad():
        plain.head.head.weight.normal_(0, 0.05)
        placed.load_state_dict({**plain.state_dict(), "positions.table": placed.positions.table}, strict=True)
        v_plain, v_placed = plain(x, t, ctx), placed(x, t, ctx)
    tokens = lambda v: v[0, :, 0].unfold(1, 2, 2).unfold(2, 2, 2).reshape(16, 64, 4).permute(1, 0, 2)  # noqa: E731
    assert tokens(v_plain).std(0).max() < 1e-3     # relative RoPE alone: every token predicts the same
    assert tokens(v_placed).std(0).max() > 1e-2    # with positions: they differ
    with pytest.raises(ValueError, match="exceeds.*windows"):
        placed(torch.zeros(1, 16, 9, 16, 16), t, ctx)


def test_unknown_absolute_position_kind_is_refused():
    with pytest.raises(ValueError, match="absolute_position 'sincos'.*none.*learned"):
        BackboneConfig(absolute_position="sincos")
