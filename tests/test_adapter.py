"""PU-SDA adapter and the two-stream runner: identity at init, attach/detach, gradients, cache, 2D locality."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from tiny import latent, randomize, text
from imvideoedit_core.model.adapter import ImVideoEditAdapter, build_adapter, ffn_lora_applied
from imvideoedit_core.model.config import AdapterConfig, adapter_preset, backbone_preset
from imvideoedit_core.edit.streams import TwoStreamRunner

T = torch.tensor([600.0])


def run(runner: TwoStreamRunner, x, ctx, src, *, placement="device", t=T):
    return runner(x, t, ctx, runner.source(src, ctx, placement=placement), return_gates=True)


def test_untrained_adapter_is_bit_for_bit_identity(tiny_backbone, untrained_adapter):
    x, src, ctx = latent(0), latent(1), text(0)
    plain = tiny_backbone(x, T, ctx)
    with TwoStreamRunner(tiny_backbone, untrained_adapter) as runner:
        out = run(runner, x, ctx, src)
    assert torch.equal(out.velocity, plain)
    assert set(out.gates) == set(untrained_adapter.block_ids)


def test_trained_adapter_changes_output_and_detach_restores_it(tiny_backbone, trained_adapter):
    x, src, ctx = latent(0), latent(1), text(0)
    plain = tiny_backbone(x, T, ctx)
    runner = TwoStreamRunner(tiny_backbone, trained_adapter).attach()
    edited = run(runner, x, ctx, src).velocity
    assert (edited - plain).abs().max() > 1e-3
    runner.detach()
    assert not runner.attached
    assert all(not block._forward_hooks for block in tiny_backbone.blocks)
    assert torch.equal(tiny_backbone(x, T, ctx), plain)
    with pytest.raises(RuntimeError, match="attach"):
        run(runner, x, ctx, src)


def test_context_manager_detaches_on_error(tiny_backbone, trained_adapter):
    with pytest.raises(KeyError):
        with TwoStreamRunner(tiny_backbone, trained_adapter):
            raise KeyError("boom")
    assert all(not block._forward_hooks for block in tiny_backbone.blocks)


def test_gradients_reach_only_the_adapter(tiny_backbone, trained_adapter):
    tiny_backbone.requires_grad_(False)
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner:
        run(runner, latent(0), text(0), latent(1)).velocity.square().mean().backward()
    assert all(p.grad is None for p in tiny_backbone.parameters())
    missing = [n for n, p in trained_adapter.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"adapter parameters without gradient: {missing}"


@pytest.mark.parametrize("placement", ["cpu", "off"])
def test_source_cache_equals_recomputation(tiny_backbone, trained_adapter, placement):
    src, ctx = latent(1), text(0)
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner, torch.no_grad():
        cached = runner.source(src, ctx, placement="device")
        other = runner.source(src, ctx, placement=placement)
        for step, t in enumerate((900.0, 500.0, 100.0)):  # several steps reuse the same cache
            x = latent(10 + step)
            a = runner(x, torch.tensor([t]), ctx, cached).velocity
            b = runner(x, torch.tensor([t]), ctx, other).velocity
            assert torch.equal(a, b)
    assert cached.cache_bytes() > 0
    assert (other.cache_bytes() > 0) == (placement == "cpu")


def test_adapter_is_2d_frame_f_sees_only_source_frame_f(tiny_backbone, trained_adapter):
    """Within one PU-SDA block, changing source frame j changes no target frame other than j."""
    grid, block = (3, 4, 4), trained_adapter.block(0)
    x = torch.randn(1, 48, 64, generator=torch.Generator().manual_seed(0))   # (B, F*H*W, D) target tokens
    s = torch.randn(1, 48, 64, generator=torch.Generator().manual_seed(1))   # source tokens
    s_changed = s.clone()
    # frame 1 only; a random change, since a constant shift is removed by the source's layer norm
    s_changed[:, 16:32] += torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(2))
    text_embedding = torch.randn(1, 64, generator=torch.Generator().manual_seed(3))
    kw = dict(text=text_embedding, time_feat=trained_adapter.time_features(T), grid=grid)
    a = block(x, block.source_features(s, grid), **kw).tokens.view(1, 3, 16, 64)
    b = block(x, block.source_features(s_changed, grid), **kw).tokens.view(1, 3, 16, 64)
    assert torch.equal(a[:, 0], b[:, 0]) and torch.equal(a[:, 2], b[:, 2])
    assert (a[:, 1] - b[:, 1]).abs().max() > 1e-3


def test_gate_is_a_text_and_time_dependent_map_in_unit_interval(tiny_backbone, trained_adapter):
    x, src = latent(0), latent(1)
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner:
        gates_a = run(runner, x, text(0), src).gates
        gates_b = run(runner, x, text(5), src).gates
        gates_c = run(runner, x, text(0), src, t=torch.tensor([50.0])).gates
    for g in gates_a.values():
        assert g.shape == (1, 3, 4, 4) and (g > 0).all() and (g < 1).all()
    assert not torch.allclose(gates_a[0], gates_b[0])  # the instruction moves the gate
    assert not torch.allclose(gates_a[0], gates_c[0])  # and so does the timestep


def test_strength_zero_is_identity_even_when_trained(tiny_backbone, trained_adapter):
    x, src, ctx = latent(0), latent(1), text(0)
    with TwoStreamRunner(tiny_backbone, trained_adapter, strength=0.0) as runner:
        assert torch.equal(run(runner, x, ctx, src).velocity, tiny_backbone(x, T, ctx))


def test_ffn_lora_is_identity_at_init_and_detaches(tiny_backbone):
    cfg = AdapterConfig(inner_dim=32, num_heads=2, gate_dim=8, time_freq_dim=16, lora_rank=4)
    adapter = build_adapter(cfg, backbone_preset("tiny"), seed=0)
    x, src, ctx = latent(0), latent(1), text(0)
    plain = tiny_backbone(x, T, ctx)
    with TwoStreamRunner(tiny_backbone, adapter) as runner:
        assert torch.equal(run(runner, x, ctx, src).velocity, plain)
        randomize(adapter.ffn_lora, seed=4)
        assert not torch.allclose(run(runner, x, ctx, src).velocity, plain)
    assert all(not block.ffn[0]._forward_hooks for block in tiny_backbone.blocks)
    assert torch.equal(tiny_backbone(x, T, ctx), plain)


def test_ffn_lora_hooks_equal_merged_weights_and_scale_with_strength(tiny_backbone):
    cfg = AdapterConfig(inner_dim=32, num_heads=2, gate_dim=8, time_freq_dim=16, lora_rank=4, lora_alpha=2.0)
    adapter = build_adapter(cfg, backbone_preset("tiny"), seed=0)
    randomize(adapter.ffn_lora, seed=4)
    x, ctx = latent(0), text(0)
    merged = copy.deepcopy(tiny_backbone)
    with torch.no_grad():
        for key, pair in adapter.ffn_lora.layers.items():
            block, layer = key.split("_")
            linear = merged.blocks[int(block)].ffn[int(layer)]
            linear.weight += 0.5 * pair.scale * pair.up.weight @ pair.down.weight  # W + strength * alpha/r * B A
    with ffn_lora_applied(tiny_backbone.blocks, adapter.ffn_lora, strength=0.5):
        hooked = tiny_backbone(x, T, ctx)
    torch.testing.assert_close(hooked, merged(x, T, ctx), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(hooked, tiny_backbone(x, T, ctx))  # the with block detached the hooks
    with ffn_lora_applied(tiny_backbone.blocks, None):  # an adapter without a LoRA: nothing attached
        assert torch.equal(tiny_backbone(x, T, ctx), tiny_backbone(x, T, ctx))
        assert all(not block.ffn[0]._forward_hooks for block in tiny_backbone.blocks)


def test_strength_zero_is_identity_with_an_ffn_lora(tiny_backbone):
    cfg = AdapterConfig(inner_dim=32, num_heads=2, gate_dim=8, time_freq_dim=16, lora_rank=4)
    adapter = build_adapter(cfg, backbone_preset("tiny"), seed=0)
    randomize(adapter, seed=5)
    x, src, ctx = latent(0), latent(1), text(0)
    with TwoStreamRunner(tiny_backbone, adapter, strength=0.0) as runner:
        assert torch.equal(run(runner, x, ctx, src).velocity, tiny_backbone(x, T, ctx))


def test_block_selection_and_operations_injection():
    created = []

    class CountingLinear(torch.nn.Linear):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(self)

    cfg = AdapterConfig(inner_dim=32, num_heads=2, gate_dim=8, time_freq_dim=16, blocks=(1,))
    adapter = ImVideoEditAdapter(cfg, backbone_preset("tiny"), operations=SimpleNamespace(Linear=CountingLinear))
    assert adapter.block_ids == (1,)
    assert len(created) == 8  # q, k, v, o and four gate projections (token, text, two for time)
    assert torch.equal(adapter.block(1).o.weight, torch.zeros_like(adapter.block(1).o.weight))
    assert AdapterConfig(block_stride=2).block_ids(30) == tuple(range(0, 30, 2))


def test_adapter_config_errors():
    with pytest.raises(ValueError, match=r"blocks \[5\] do not exist in a backbone with 2 blocks"):
        ImVideoEditAdapter(AdapterConfig(inner_dim=32, num_heads=2, blocks=(0, 5)), backbone_preset("tiny"))
    with pytest.raises(ValueError, match="multiple of 4"):
        AdapterConfig(inner_dim=30, num_heads=3)
    with pytest.raises(ValueError, match="block_stride must be >= 1"):
        AdapterConfig(block_stride=0)
    with pytest.raises(ValueError, match="unknown adapter preset"):
        adapter_preset("huge")
    assert AdapterConfig.from_json(adapter_preset("toy").to_json()) == adapter_preset("toy")


def test_runner_refuses_mismatched_models(tiny_backbone):
    adapter = build_adapter(adapter_preset("toy"), backbone_preset("toy"), seed=0)
    with pytest.raises(ValueError, match="built for dim 128, backbone has dim 64"):
        TwoStreamRunner(tiny_backbone, adapter)


def test_runner_refuses_source_of_another_shape(tiny_backbone, untrained_adapter):
    with TwoStreamRunner(tiny_backbone, untrained_adapter) as runner:
        with pytest.raises(ValueError, match="does not match target"):
            runner(latent(0, frames=3), T, text(0), runner.source(latent(1, frames=2), text(0)))


def test_gate_ablations():
    """Same tokens, two instructions: the text gate tells them apart, the blind gate cannot, "none" is zero."""
    n = torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(0))   # (B*F, H*W, D) normalised tokens
    texts = torch.randn(2, 2, 64, generator=torch.Generator().manual_seed(1))
    t = torch.randn(2, 16, generator=torch.Generator().manual_seed(2))
    gates = {}
    for mode in ("text", "blind", "none"):
        cfg = AdapterConfig(inner_dim=32, num_heads=2, gate_dim=8, time_freq_dim=16, gate=mode)
        block = randomize(build_adapter(cfg, backbone_preset("tiny"), seed=0), seed=2, std=0.2).block(0)
        gates[mode] = [block._gate(n, texts[i], t) for i in range(2)]
    assert not torch.allclose(*gates["text"])
    assert torch.equal(*gates["blind"])
    assert torch.equal(gates["none"][0], torch.zeros(2, 16, 1))
    with pytest.raises(ValueError, match="unknown gate mode 'soft'"):
        AdapterConfig(gate="soft")


def test_adapter_config_for_any_backbone():
    from imvideoedit_core.model.config import BACKBONE_PRESETS, BackboneConfig, adapter_config_for
    assert adapter_config_for(BACKBONE_PRESETS["wan2.1-t2v-1.3b"]) == adapter_preset("wan2.1-t2v-1.3b")
    odd = adapter_config_for(BackboneConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2))  # ComfyUI's tiny Wan
    assert odd.inner_dim == 32 and odd.inner_dim % odd.num_heads == 0
    build_adapter(odd, BackboneConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2), seed=0)


def test_parse_blocks():
    from imvideoedit_core.model.config import parse_blocks
    assert parse_blocks("all", available=(0, 1, 2)) == (0, 1, 2)
    assert parse_blocks(" 0-1, 2 ", available=(0, 1, 2, 3)) == (0, 1, 2)
    with pytest.raises(ValueError, match=r"blocks \[5\] carry no adapter"):
        parse_blocks("5", available=(0, 1))
    with pytest.raises(ValueError, match="write 'all' or indices"):
        parse_blocks("first", available=(0, 1))
