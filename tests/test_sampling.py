"""Flow-matching schedule, solvers, guidance, strength, callbacks and cancellation."""

from __future__ import annotations

import math

import pytest
import torch

from tiny import latent, text
from imvideoedit_core.edit.sampling import (EditRequest, SamplerConfig, SamplingCancelled, StartLatent, StepInfo,
                                            edit_latent, flow_sigmas, guided_velocity, pad_contexts, sample,
                                            seeded_noise, shift_sigma)
from imvideoedit_core.edit.streams import TwoStreamRunner


def test_schedule_shape_endpoints_and_shift():
    sigmas = flow_sigmas(10, shift=8.0)
    assert sigmas.shape == (11,) and sigmas[0] == 1.0 and sigmas[-1] == 0.0
    assert (sigmas[1:] < sigmas[:-1]).all()
    u = torch.linspace(1, 0, 11, dtype=torch.float64)
    assert torch.allclose(sigmas, 8.0 * u / (1 + 7.0 * u))  # sigma' = s*u / (1 + (s-1)*u)
    partial = flow_sigmas(4, shift=3.0, strength=0.6)
    assert math.isclose(float(partial[0]), 0.6, rel_tol=1e-12) and partial[-1] == 0.0 and len(partial) == 5
    assert torch.allclose(flow_sigmas(5, shift=1.0), torch.linspace(1, 0, 6, dtype=torch.float64))


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_exact_velocity_recovers_the_clean_sample(solver):
    """On the straight path x = (1-s) x0 + s n the velocity n - x0 is constant: any solver lands on x0."""
    x0, noise = torch.randn(1, 4, 2, 3, 3), torch.randn(1, 4, 2, 3, 3)
    out = sample(lambda x, s: noise - x0, noise.clone(), flow_sigmas(7, shift=5.0), solver=solver)
    assert torch.allclose(out, x0, atol=1e-5)


def test_heun_is_second_order():
    """dx/ds = x from s=1 to s=0 gives x(0) = x(1)/e; halving the step cuts Heun's error about 4x, Euler's 2x."""
    def error(solver, steps):
        x = sample(lambda x, s: x, torch.ones(1), torch.linspace(1, 0, steps + 1, dtype=torch.float64),
                   solver=solver)
        # heun's last step is Euler (it lands on sigma 0); compare against the exact map of the same steps
        return abs(float(x) - math.exp(-1))
    euler_ratio = error("euler", 20) / error("euler", 40)
    heun_ratio = error("heun", 20) / error("heun", 40)
    assert 1.8 < euler_ratio < 2.2
    assert heun_ratio > euler_ratio
    assert error("heun", 20) < error("euler", 20) / 4


def test_seeded_noise_is_reproducible():
    assert torch.equal(seeded_noise((2, 3), seed=5), seeded_noise((2, 3), seed=5))
    assert not torch.equal(seeded_noise((2, 3), seed=5), seeded_noise((2, 3), seed=6))
    assert seeded_noise((2, 3), seed=5, dtype=torch.bfloat16).dtype == torch.bfloat16


def _edit(runner, config, *, features=(), return_gate=False, callback=None, cancel=None):
    request = EditRequest(source=latent(1), context=text(0), negative_context=torch.zeros(1, 2, 32), config=config,
                          features=features, return_gate=return_gate)
    with torch.no_grad():
        return edit_latent(runner, request, callback=callback, cancel=cancel)


def test_edit_is_deterministic_for_a_seed(tiny_backbone, trained_adapter):
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner:
        a = _edit(runner, SamplerConfig(steps=3, seed=1)).latent
        b = _edit(runner, SamplerConfig(steps=3, seed=1)).latent
        c = _edit(runner, SamplerConfig(steps=3, seed=2)).latent
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_guidance_combines_conditional_and_unconditional(tiny_backbone, trained_adapter):
    src, cond, uncond = latent(1), text(0), torch.zeros(1, 5, 32)
    x, sigma = latent(3), 0.7
    t = torch.tensor([700.0])
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner, torch.no_grad():
        v_c = runner(x, t, cond, runner.source(src, cond)).velocity
        v_u = runner(x, t, uncond, runner.source(src, uncond)).velocity
        guided = guided_velocity(runner, src, cond, uncond, cfg=4.0, cache="device", recorder=None)(x, sigma)
        no_cfg = guided_velocity(runner, src, cond, uncond, cfg=1.0, cache="device", recorder=None)(x, sigma)
    assert torch.allclose(guided, v_u + 4.0 * (v_c - v_u), atol=1e-5)
    assert torch.allclose(no_cfg, v_c, atol=1e-6)


def test_strength_zero_returns_the_source_and_partial_strength_starts_from_it(tiny_backbone, trained_adapter):
    seen: list[StepInfo] = []
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner:
        assert torch.equal(_edit(runner, SamplerConfig(steps=4, strength=0.0)).latent, latent(1))
        _edit(runner, SamplerConfig(steps=4, strength=0.5), callback=seen.append)
    assert [s.index for s in seen] == [0, 1, 2, 3] and seen[0].total == 4
    assert math.isclose(seen[0].sigma, 0.5, rel_tol=1e-9) and seen[-1].sigma_next == 0.0
    assert seen[0].denoised.shape == latent(1).shape


def test_cancel_stops_at_the_requested_step(tiny_backbone, trained_adapter):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner:
        with pytest.raises(SamplingCancelled, match="step 3 of 5"):
            _edit(runner, SamplerConfig(steps=5), cancel=cancel)


def test_step_hooks_rewrite_the_latent(tiny_backbone, trained_adapter):
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner:
        out = _edit(runner, SamplerConfig(steps=3), features=[lambda info: torch.zeros_like(info.x)])
    assert torch.equal(out.latent, torch.zeros_like(out.latent))


def test_gate_map_of_a_run(tiny_backbone, trained_adapter):
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner:
        out = _edit(runner, SamplerConfig(steps=2, solver="heun"), return_gate=True)
    assert out.gate.shape == (1, 3, 4, 4) and ((out.gate > 0) & (out.gate < 1)).all()


def test_shift_is_monotone_and_keeps_endpoints():
    s = torch.linspace(0, 1, 11, dtype=torch.float64)
    shifted = shift_sigma(s, 8.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and (shifted >= s).all()


@pytest.mark.parametrize("kwargs,message", [
    ({"steps": 0}, "steps must be at least 1"), ({"cfg": 0.5}, "cfg must be >= 1"),
    ({"shift": 0}, "shift must be positive"), ({"strength": 1.5}, r"strength must be in \[0, 1\]"),
    ({"solver": "dpm"}, "unknown solver 'dpm'")])
def test_sampler_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**kwargs)


def test_plain_backbone_guidance_and_explicit_noise(tiny_backbone):
    from imvideoedit_core.edit.sampling import backbone_velocity, sample_from
    cond, uncond, x, sigma = text(0), torch.zeros(1, 5, 32), latent(3), 0.4
    t = torch.tensor([400.0])
    with torch.no_grad():
        v_c, v_u = tiny_backbone(x, t, cond), tiny_backbone(x, t, uncond)
        guided = backbone_velocity(tiny_backbone, cond, uncond, cfg=3.0)(x, sigma)
    assert torch.allclose(guided, v_u + 3.0 * (v_c - v_u), atol=1e-5)
    fn = lambda x, s: torch.zeros_like(x)  # noqa: E731  (a model that never moves: the result is the start)
    src, noise = latent(1), latent(2)
    out = sample_from(fn, src, SamplerConfig(steps=2, strength=0.25), noise=noise)
    assert torch.allclose(out, 0.75 * src + 0.25 * noise)
    with pytest.raises(ValueError, match="must have the latent's shape"):
        sample_from(fn, src, SamplerConfig(steps=2), noise=latent(2, frames=2))


def test_an_edit_request_takes_each_latent_feature_once(tiny_backbone, trained_adapter):
    start = StartLatent(latent(1))
    request = EditRequest(source=latent(1), context=text(0), negative_context=None, config=SamplerConfig(steps=1),
                          features=[start, StartLatent(latent(1))])
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner, pytest.raises(ValueError, match="at most one Sta"):
        edit_latent(runner, request)
    hook = lambda info: info.x  # noqa: E731
    assert EditRequest(source=latent(1), context=text(0), negative_context=None, config=SamplerConfig(),
                       features=[start, hook]).step_hooks() == [hook]


def test_a_shared_source_encoding_serves_both_guidance_branches_with_half_the_cache(tiny_backbone, trained_adapter):
    source, ctx, neg = latent(1), text(0), torch.zeros(1, 2, 32)
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner, torch.no_grad():
        both = runner.source(source.repeat(2, 1, 1, 1, 1), pad_contexts(ctx, neg))
        once = runner.source(source, ctx, branches=2)
        x, t = latent(5, batch=2), torch.full((2,), 400.0)
        contexts = pad_contexts(ctx, neg)
        separate, shared = runner(x, t, contexts, both).velocity, runner(x, t, contexts, once).velocity
        assert once.cache_bytes() * 2 == both.cache_bytes()
        torch.testing.assert_close(shared[:1], separate[:1])  # the conditional branch sees the same source
        assert not torch.allclose(shared[1:], separate[1:])   # the unconditional one sees it with the instruction
        with_instruction = runner.source(source.repeat(2, 1, 1, 1, 1), pad_contexts(ctx, ctx))
        torch.testing.assert_close(shared, runner(x, t, contexts, with_instruction).velocity)
        request = dict(source=source, context=ctx, negative_context=neg, config=SamplerConfig(steps=2, cfg=1.0))
        assert torch.equal(edit_latent(runner, EditRequest(**request)).latent,
                           edit_latent(runner, EditRequest(**request, share_source=True)).latent)  # one branch
