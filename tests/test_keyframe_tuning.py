"""Keyframe tuning: paired affine augmentation, the keyframe dataset, and tuning a copy of the adapter."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from imvideoedit_core.model.config import adapter_config_for, adapter_preset
from imvideoedit_core.train.keyframe_tuning import (TRAINED_START, ZERO_START, AffineLimits, AffineParams,
                                                    CopyStart, KeyframePairs, KeyframeTuning, affine_warp,
                                                    augment_pair, check_keyframes, copy_start_adapter, draw_affine,
                                                    start_defaults, tune_on_keyframe, zero_start_adapter)
from bench.standins import ByteTextEncoder, PatchCodec
from imvideoedit_core.edit.streams import TwoStreamRunner
from imvideoedit_core.train.trainer import FlowMatchingLoss, LatentBatch, TrainingCancelled

CODEC = PatchCodec(channels=16, patch=2)
TEXT = ByteTextEncoder(32, max_len=24, seed=0)
INSTRUCTION = "make the square red"


def keyframes(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """A grey square on a ramp background, and the same square red: [H, W, 3] each."""
    ramp = torch.linspace(0, 1, size)
    source = torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size),
                          torch.full((size, size), 0.3)], dim=-1)  # [H, W, 3]
    source[8:20, 10:22] = 0.5
    edited = source.clone()
    edited[8:20, 10:22] = torch.tensor([1.0, 0.0, 0.0])
    return source, edited


def test_zero_limits_draw_the_identity_and_warp_returns_the_input():
    source, _ = keyframes()
    for seed in range(5):
        params = draw_affine(AffineLimits.none(), seed=seed)
        assert params.is_identity
        assert torch.equal(affine_warp(source[None], params)[0], source)


def test_draws_respect_the_limits_and_are_deterministic():
    limits = AffineLimits()
    draws = [draw_affine(limits, seed=s) for s in range(300)]
    for p in draws:
        assert abs(p.rotation_deg) <= 5 and abs(p.shear_deg) <= 10 and 0.75 <= p.crop <= 1.0
        room = (1 - p.crop) / 2 + 0.05  # the window stays inside the image, plus at most 5% translation
        assert abs(p.offset_x) <= room and abs(p.offset_y) <= room
    assert max(abs(p.rotation_deg) for p in draws) > 4.5 and min(p.crop for p in draws) < 0.76  # the range is used
    assert draw_affine(limits, seed=7) == draws[7] and draws[7] != draws[8]


def test_the_same_transform_reaches_both_images():
    source, edited = keyframes()
    params = draw_affine(AffineLimits(), seed=3)
    a, b = augment_pair(source, source.clone(), params)
    assert torch.equal(a, b)  # an identity edit stays an identity edit
    a, b = augment_pair(source, edited, params)
    assert torch.equal(a, affine_warp(source[None], params)[0]) and torch.equal(b, affine_warp(edited[None], params)[0])
    assert not torch.equal(a, source)


def test_a_whole_pixel_translation_moves_pixels_exactly():
    source, _ = keyframes()
    moved = affine_warp(source[None], AffineParams(offset_x=2 / 32, offset_y=-1 / 32))[0]  # sample 2 px right, 1 px up
    assert torch.allclose(moved[1:, :-2], source[:-1, 2:], atol=1e-6)


def test_rotation_is_a_rotation_on_non_square_images():
    image = torch.zeros(16, 32, 3)
    image[6:10, :, 0] = 1.0  # a horizontal bar through the centre, across the whole width
    turned = affine_warp(image[None], AffineParams(rotation_deg=90.0))[0]
    # rotated by 90 degrees about the centre the bar is vertical: 4 px wide, as tall as the image
    assert torch.allclose(turned[:, 14:18, 0], torch.ones(16, 4), atol=1e-5)
    assert turned[:, :12, 0].abs().max() < 1e-5 and turned[:, 20:, 0].abs().max() < 1e-5


def test_keyframe_pairs_start_with_the_pair_itself():
    source, edited = keyframes()
    pairs = KeyframePairs(source, edited, INSTRUCTION, count=6, limits=AffineLimits(), seed=0)
    assert len(pairs) == 6 and torch.equal(pairs[0].source, source) and torch.equal(pairs[0].target, edited)
    assert not torch.equal(pairs[1].source, source) and pairs[3].instruction == INSTRUCTION
    again = KeyframePairs(source, edited, INSTRUCTION, count=6, limits=AffineLimits(), seed=0)
    assert torch.equal(again[4].target, pairs[4].target)
    plain = KeyframePairs(source, edited, INSTRUCTION, count=6, limits=None, seed=0)
    assert all(torch.equal(plain[i].target, edited) for i in range(6))
    with pytest.raises(ValueError, match="instruction is empty"):
        KeyframePairs(source, edited, "  ", count=2, limits=None, seed=0)


def test_keyframe_errors_say_what_to_change():
    source, edited = keyframes()
    with pytest.raises(ValueError, match=r"edited keyframe is 48x32 but the source keyframe is 32x32 \(width x h"):
        check_keyframes(source, torch.zeros(32, 48, 3))
    with pytest.raises(ValueError, match=r"keyframes are 32x32 but the video's frames are 64x48"):
        check_keyframes(source, edited, video_size=(48, 64))
    with pytest.raises(ValueError, match="multiples of 16"):
        check_keyframes(torch.zeros(24, 32, 3), torch.zeros(24, 32, 3))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        KeyframeTuning(steps=0)
    with pytest.raises(ValueError, match="batch_size <= variants"):
        KeyframeTuning(batch_size=8, variants=4)
    with pytest.raises(ValueError, match=r"crop must be \(low, high\)"):
        AffineLimits(crop=(0.9, 0.8))


def fixed_loss(backbone, adapter, source, edited) -> float:
    """The flow-matching loss of the keyframe pair at fixed noise levels and noise (before/after comparable)."""
    src, tgt = CODEC.encode(source[None]), CODEC.encode(edited[None])  # (1, 16, 1, 16, 16)
    sigma = torch.linspace(0.2, 0.8, 4)
    noise = torch.randn(4, *src.shape[1:], generator=torch.Generator().manual_seed(5))
    batch = LatentBatch(source=src.expand(4, -1, -1, -1, -1), target=tgt.expand(4, -1, -1, -1, -1),
                        context=TEXT([INSTRUCTION] * 4), empty_context=TEXT([""]))
    with TwoStreamRunner(backbone, adapter) as runner, torch.no_grad():
        return FlowMatchingLoss(runner)(batch, batch.context, sigma, noise).item()


def tune(backbone, adapter, **kwargs):
    source, edited = keyframes()
    return tune_on_keyframe(partial(TwoStreamRunner, backbone), adapter, source=source, edited=edited,
                            instruction=INSTRUCTION,
                            encode_images=CODEC.encode_images, encode_text=TEXT, **kwargs)


def test_tuning_trains_a_copy_and_leaves_the_base_adapter_alone(tiny_backbone, trained_adapter):
    base = {k: v.clone() for k, v in trained_adapter.state_dict().items()}
    source, edited = keyframes()
    before = fixed_loss(tiny_backbone, trained_adapter, source, edited)
    result = tune(tiny_backbone, trained_adapter, config=KeyframeTuning(steps=40, lr=3e-3, batch_size=2, variants=8))
    assert all(torch.equal(v, base[k]) for k, v in trained_adapter.state_dict().items())
    assert result.adapter is not trained_adapter and not result.adapter.training
    assert not any(p.requires_grad for p in result.adapter.parameters())  # ready for inference
    assert result.steps_done == 40 and len(result.losses) == 40
    after = fixed_loss(tiny_backbone, result.adapter, source, edited)
    assert after < 0.8 * before, (before, after)
    again = tune(tiny_backbone, trained_adapter, config=KeyframeTuning(steps=40, lr=3e-3, batch_size=2, variants=8))
    assert all(torch.equal(v, again.adapter.state_dict()[k]) for k, v in result.adapter.state_dict().items())


def test_augmentation_changes_what_is_learned(tiny_backbone, trained_adapter):
    cfg = KeyframeTuning(steps=3, batch_size=2, variants=4)
    aug = tune(tiny_backbone, trained_adapter, config=cfg).adapter.state_dict()
    plain = tune(tiny_backbone, trained_adapter, config=KeyframeTuning(steps=3, batch_size=2, variants=4,
                                                                        augment=False)).adapter.state_dict()
    assert not torch.equal(aug["blocks.0.o.weight"], plain["blocks.0.o.weight"])


def test_cancel_stops_tuning_and_size_checks_come_first(tiny_backbone, trained_adapter):
    base = {k: v.clone() for k, v in trained_adapter.state_dict().items()}
    seen = []
    with pytest.raises(TrainingCancelled, match="after 2 of 10 steps"):
        tune(tiny_backbone, trained_adapter, config=KeyframeTuning(steps=10, batch_size=2, variants=4),
             callback=lambda p: seen.append(p.step), cancel=lambda: len(seen) >= 2)
    assert all(torch.equal(v, base[k]) for k, v in trained_adapter.state_dict().items())
    with pytest.raises(ValueError, match="video's frames are 64x64"):
        tune(tiny_backbone, trained_adapter, video_size=(64, 64))


def test_zero_start_tunes_a_fresh_adapter_that_begins_as_a_no_op(tiny_backbone):
    """No adapter file: a fresh adapter sized for the backbone changes nothing until tuned, then learns the pair."""
    fresh = zero_start_adapter(tiny_backbone.config, seed=0)
    assert fresh.config == adapter_config_for(tiny_backbone.config) == adapter_preset("tiny")
    x = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    context = TEXT([INSTRUCTION])
    with TwoStreamRunner(tiny_backbone, fresh) as runner, torch.no_grad():
        edited = runner(x, torch.tensor([500.0]), context, runner.source(x, context)).velocity
    assert torch.equal(edited, tiny_backbone(x, torch.tensor([500.0]), context))
    source, target = keyframes()
    before = fixed_loss(tiny_backbone, fresh, source, target)
    defaults = start_defaults(zero_start=True)
    assert (defaults.steps, defaults.lr) == (ZERO_START.steps, ZERO_START.lr) and ZERO_START.lr > TRAINED_START.lr
    result = tune(tiny_backbone, fresh, config=KeyframeTuning(steps=40, lr=defaults.lr, batch_size=2, variants=8))
    assert fixed_loss(tiny_backbone, result.adapter, source, target) < 0.9 * before


def test_several_keyframes_are_all_learned_from():
    """K edited keyframes (e.g. first, middle, last): indices 0..K-1 are the pairs themselves, augmented copies
    cycle through them, and one keyframe behaves exactly as before."""
    source, edited = keyframes()
    sources = torch.stack([source, source.flip(1), source.flip(0)])
    editeds = torch.stack([edited, edited.flip(1), edited.flip(0)])
    pairs = KeyframePairs(sources, editeds, INSTRUCTION, count=9, limits=AffineLimits(), seed=0)
    for k in range(3):
        assert torch.equal(pairs[k].source, sources[k]) and torch.equal(pairs[k].target, editeds[k])
    assert pairs.params(2).is_identity and not pairs.params(3).is_identity
    single = KeyframePairs(source, edited, INSTRUCTION, count=9, limits=AffineLimits(), seed=0)
    batched_one = KeyframePairs(source[None], edited[None], INSTRUCTION, count=9, limits=AffineLimits(), seed=0)
    assert all(torch.equal(single[i].target, batched_one[i].target) for i in range(9))
    check_keyframes(sources, editeds, video_size=(32, 32))
    with pytest.raises(ValueError, match="3 source keyframes but 2 edited keyframes"):
        check_keyframes(sources, editeds[:2])
    with pytest.raises(ValueError, match=r"must be an RGB image \[H, W, 3\] or a batch"):
        check_keyframes(source[0], edited)


def test_copy_pairs_follow_the_keyframe_pairs_with_the_clip_frames_and_no_instruction():
    source, edited = keyframes()
    clip = torch.stack([source, source.flip(1)])                   # [2, H, W, 3]
    tuning = KeyframeTuning(variants=6, batch_size=2, copy_share=0.25)
    assert tuning.copy_count == 2                                   # 2 of 8 pairs: a quarter
    pairs = KeyframePairs(source, edited, INSTRUCTION, count=6, limits=AffineLimits(), seed=0, copies=clip,
                          copy_count=tuning.copy_count)
    assert len(pairs) == 8 and pairs[5].instruction == INSTRUCTION
    copies = [pairs[6], pairs[7]]
    assert all(p.instruction == "" and torch.equal(p.source, p.target) for p in copies)
    assert torch.equal(copies[1].source, affine_warp(clip[1:2], pairs.params(7))[0])  # frame 1, augmented
    assert len(KeyframePairs(source, edited, INSTRUCTION, count=6, limits=None, seed=0, copies=None,
                             copy_count=3)) == 6                     # no frames, no copy pairs
    with pytest.raises(ValueError, match=r"the clip's frames are 48x32 but the keyframes 32x32"):
        KeyframePairs(source, edited, INSTRUCTION, count=6, limits=None, seed=0, copies=torch.zeros(2, 32, 48, 3),
                      copy_count=2)
    with pytest.raises(ValueError, match=r"copy_share must be in \[0, 1\)"):
        KeyframeTuning(copy_share=1.0)


def test_tuning_with_copy_pairs_trains_on_the_clip_frames(tiny_backbone):
    fresh = zero_start_adapter(tiny_backbone.config, seed=0)
    source, edited = keyframes()
    cfg = KeyframeTuning(steps=3, batch_size=2, variants=4, copy_share=0.5)
    plain = tune(tiny_backbone, fresh, config=KeyframeTuning(steps=3, batch_size=2, variants=4)).adapter
    mixed = tune(tiny_backbone, fresh, config=cfg, clip_frames=torch.stack([source.flip(0)] * 3)).adapter
    own = tune(tiny_backbone, fresh, config=cfg).adapter            # without clip frames: the source keyframe
    for a, b in ((plain, mixed), (mixed, own)):
        assert not torch.equal(a.state_dict()["blocks.0.o.weight"], b.state_dict()["blocks.0.o.weight"])


def test_copy_start_aligns_each_target_token_with_its_source_token(tiny_backbone):
    """Position-only attention: whatever the tokens hold, token i reads the source token at its own position, and
    the update is pull * V^T V (n(s) - n(x)) with the gate nearly closed; where target = source it is zero."""
    adapter = copy_start_adapter(tiny_backbone.config, seed=0, start=CopyStart(pull=0.5))
    block = adapter.block(0)
    grid = (2, 4, 4)                                                # (F, H, W) tokens
    gen = torch.Generator().manual_seed(0)
    x, s = torch.randn(1, 32, 64, generator=gen), torch.randn(1, 32, 64, generator=gen)  # (B, F*H*W, D)
    kw = dict(text=torch.randn(1, 64, generator=gen), time_feat=torch.randn(1, 16, generator=gen), grid=grid)
    with torch.no_grad():
        step = block(x, block.source_features(s, grid), **kw)
        unchanged = block(s, block.source_features(s, grid), **kw)
    assert step.gate.max() < 0.05
    v = block.v.weight                                              # (inner, D), orthonormal rows
    assert torch.allclose(v @ v.T, torch.eye(v.shape[0]), atol=1e-5)
    norm = lambda t: torch.nn.functional.layer_norm(t, t.shape[-1:], eps=1e-6)  # noqa: E731
    want = 0.5 * (norm(s) - norm(x)) @ v.T @ v                      # (1, 32, D)
    delta = step.tokens - x
    assert torch.nn.functional.cosine_similarity(delta.flatten(), want.flatten(), dim=0) > 0.95
    assert (unchanged.tokens - s).abs().max() < 0.05 * (step.tokens - x).abs().max()
    assert all(p.requires_grad for p in adapter.parameters())     # everything stays trainable


def test_untuned_copy_start_is_closer_to_the_source_than_the_zero_start():
    """On the shipped ToyWorld backbone (issue 20: 10.3 against 7.8 dB on 4 held-out clips, 20 steps)."""
    from bench.metrics import psnr
    from bench.toyworld.evaluate import EvalConfig
    from bench.toyworld.keyframe_tuning import edit_video, examples
    from bench.toyworld.models import load_models
    models = load_models()
    clip = examples("recolor", count=1, frames=4)[0]
    cfg = EvalConfig(steps=10)
    scores = {name: psnr(edit_video(models, start(models.backbone.config, seed=0), clip, cfg, pin_first=False),
                         clip.source_frames) for name, start in (("zero", zero_start_adapter),
                                                                 ("copy", copy_start_adapter))}
    assert scores["copy"] > scores["zero"] + 0.5, scores


def test_low_resolution_steps_come_first_and_cost_their_share_of_pixels(tiny_backbone, trained_adapter):
    """low_res_steps at half the size, then steps at full size: the same adapter (shapes, one copy trained
    through both phases), the compute counted in full-size-step equivalents; no low phase is the plain recipe."""
    sizes = []

    def encode(images):
        sizes.append(tuple(images.shape[-2:]))
        return CODEC.encode_images(images)
    source, edited = keyframes()
    config = KeyframeTuning(steps=3, lr=3e-3, batch_size=2, variants=8, low_res_steps=4, low_res_scale=0.5)
    result = tune_on_keyframe(partial(TwoStreamRunner, tiny_backbone), trained_adapter, source=source,
                              edited=edited, instruction=INSTRUCTION, encode_images=encode, encode_text=TEXT,
                              config=config)
    assert result.steps_done == 7 and len(result.losses) == 7
    assert result.full_steps_equivalent == pytest.approx(3 + 4 * 0.25)
    assert set(sizes) == {(16, 16), (32, 32)} and sizes.index((32, 32)) > sizes.index((16, 16))
    assert {k: v.shape for k, v in result.adapter.state_dict().items()} == \
        {k: v.shape for k, v in trained_adapter.state_dict().items()}
    plain = tune(tiny_backbone, trained_adapter, config=KeyframeTuning(steps=3, lr=3e-3, batch_size=2, variants=8))
    same = tune(tiny_backbone, trained_adapter, config=KeyframeTuning(steps=3, lr=3e-3, batch_size=2, variants=8,
                                                                      low_res_steps=0))
    assert plain.full_steps_equivalent == 3 and plain.losses == same.losses
    assert result.losses[4:] != plain.losses  # the full-size phase starts from the low-resolution weights
    with pytest.raises(ValueError, match="low_res_scale in"):
        KeyframeTuning(low_res_steps=10, low_res_scale=1.5)
