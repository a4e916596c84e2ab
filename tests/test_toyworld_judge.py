"""The ToyWorld judge is trusted only after this: ground truth scores ~1 on every axis, and each deliberately
broken video (wrong colour, a missing object, flicker, blur, a shifted frame, a swapped shape) is caught on the
axis that names its fault."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from bench.toyworld import judge, world
from bench.toyworld.evaluate import EvalConfig, eval_examples

EXAMPLES = {kind: eval_examples(kind, EvalConfig(per_kind=6)) for kind in world.EDIT_KINDS}


def _scenes(count: int = 12) -> list[world.Scene]:
    seeds = world.split_seeds("eval", count=count, start=5_000_000)
    return [world.random_scene(np.random.default_rng(s), size=32, frames=8) for s in seeds]


def _paint_background(frames: torch.Tensor, scene: world.Scene, mask: torch.Tensor) -> torch.Tensor:
    """frames with the pixels of ``mask`` [T, H, W] replaced by the scene's background."""
    background = torch.from_numpy(judge.scene_background(scene)).expand_as(frames)
    return torch.where(mask[..., None], background, frames)


def _blur(frames: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.stack([cv2.GaussianBlur(f, (5, 5), 1.0) for f in frames.numpy()]))


def _shift_frame(frames: torch.Tensor, t: int, pixels: int = 3) -> torch.Tensor:
    shifted = frames.clone()
    shifted[t] = torch.roll(frames[t], shifts=pixels, dims=1)
    return shifted


@pytest.mark.parametrize("kind", world.EDIT_KINDS)
def test_ground_truth_scores_one_on_every_axis(kind):
    for example in EXAMPLES[kind]:
        scores = judge.judge_edit(example.target_frames, example)
        assert min(scores.as_dict().values()) >= 0.98, (example.instruction, scores)


@pytest.mark.parametrize("kind", world.EDIT_KINDS)
def test_an_unedited_video_fails_adherence_and_nothing_else_that_it_keeps(kind):
    for example in EXAMPLES[kind]:
        scores = judge.judge_edit(example.source_frames, example)
        assert scores.adherence <= 0.2, (example.instruction, scores)
        if kind != "style":
            assert scores.preservation == 1.0


def test_wrong_colour_fails_adherence():
    for example in EXAMPLES["recolor"]:
        wrong = next(c for c in world.COLOURS if c not in (example.edit.value,
                                                           *(o.colour for o in example.source_scene.objects)))
        scene = world.apply_edit(example.source_scene, world.make_edit(example.source_scene, kind="recolor",
                                                                       target=example.edit.target, value=wrong))
        scores = judge.judge_edit(world.render(scene).frames, example)
        assert scores.adherence == 0.0 and scores.preservation == 1.0


def test_swapped_shape_fails_adherence():
    for example in EXAMPLES["reshape"]:
        old = example.source_scene.objects[example.edit.target].shape
        wrong = next(s for s in world.SHAPES if s not in (old, example.edit.value))
        scene = world.apply_edit(example.source_scene, world.make_edit(example.source_scene, kind="reshape",
                                                                       target=example.edit.target, value=wrong))
        scores = judge.judge_edit(world.render(scene).frames, example)
        assert scores.adherence <= 0.25, (example.instruction, wrong, scores)


def test_missing_object_fails_preservation_and_temporal():
    for example in EXAMPLES["recolor"] + EXAMPLES["background"]:
        target = world.render(example.target_scene)
        keep = [i for i in range(len(example.target_scene.objects))
                if example.kind != "recolor" or i != example.edit.target]
        if not keep:
            continue
        broken = _paint_background(target.frames, example.target_scene, target.masks[keep[0]])
        scores = judge.judge_edit(broken, example)
        assert scores.temporal < 0.9 and scores.preservation < 0.5, (example.instruction, scores)


def test_flicker_every_other_frame_fails_temporal():
    for example in EXAMPLES["recolor"]:
        target = world.render(example.target_scene)
        mask = target.masks[example.edit.target].clone()
        mask[0::2] = False  # the edited object vanishes on every odd frame
        scores = judge.judge_edit(_paint_background(target.frames, example.target_scene, mask), example)
        others = len(example.target_scene.objects) - 1  # their transitions stay consistent
        assert scores.temporal <= others / (others + 1) + 0.01 and scores.adherence <= 0.5, (example.instruction,
                                                                                             scores)


def test_blur_fails_fidelity():
    for kind in world.EDIT_KINDS:
        for example in EXAMPLES[kind]:
            if np.array_equal(_blur(example.target_frames), example.target_frames):
                continue  # a flat frame (e.g. an object removed from a solid background) has nothing to blur
            scores = judge.judge_edit(_blur(example.target_frames), example)
            assert scores.fidelity <= 0.2, (example.instruction, scores)


def test_one_shifted_frame_fails_temporal_on_its_transitions():
    for example in EXAMPLES["recolor"]:
        scores = judge.judge_edit(_shift_frame(example.target_frames, 4), example)
        assert scores.temporal <= 0.8, (example.instruction, scores)


def test_judge_names_a_video_of_the_wrong_shape():
    example = EXAMPLES["recolor"][0]
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        judge.judge_edit(example.target_frames[..., 0], example)
    with pytest.raises(ValueError, match="example's frames"):
        judge.judge_edit(example.target_frames[:4], example)


# -- the text-to-video judge --

def _pooled(videos, scenes) -> dict:
    stats = judge.GenerationStats()
    for video, scene in zip(videos, scenes):
        stats += judge.generation_stats(video, scene)
    return stats.scores()


def test_ground_truth_generation_scores_near_one():
    scenes = _scenes()
    scores = _pooled([world.render(s).frames for s in scenes], scenes)
    assert scores["present"] >= 0.98 and scores["shape"] >= 0.98
    assert scores["background"] == 0.0
    assert scores["stability"] < 0.1 and scores["acceleration"] < 1.5


def test_generation_judge_catches_each_fault():
    scenes = _scenes()
    truth = _pooled([world.render(s).frames for s in scenes], scenes)
    renders = [world.render(s) for s in scenes]
    missing = _pooled([_paint_background(r.frames, s, r.masks[-1]) for r, s in zip(renders, scenes)], scenes)
    assert missing["present"] <= truth["present"] - 0.25
    flicker = []
    for r, s in zip(renders, scenes):
        mask = r.masks.any(dim=0).clone()
        mask[0::2] = False
        flicker.append(_paint_background(r.frames, s, mask))
    assert _pooled(flicker, scenes)["stability"] >= 5 * truth["stability"]
    recoloured = [world.render(world.apply_edit(s, world.make_edit(s, kind="recolor", target=0, value=next(
        c for c in world.COLOURS if c not in {o.colour for o in s.objects})))).frames for s in scenes]
    assert _pooled(recoloured, scenes)["present"] <= truth["present"] - 0.25
    swapped = [world.render(world.apply_edit(s, world.make_edit(s, kind="reshape", target=0, value=next(
        x for x in world.SHAPES if x != s.objects[0].shape)))).frames for s in scenes]
    assert _pooled(swapped, scenes)["shape"] <= truth["shape"] - 0.2
    assert _pooled([_blur(r.frames) for r in renders], scenes)["background"] >= 0.005
    jumpy = [_shift_frame(r.frames, 4, pixels=4) for r in renders]
    assert _pooled(jumpy, scenes)["acceleration"] >= truth["acceleration"] + 0.5


@pytest.mark.parametrize("shape", world.SHAPES)
def test_best_shape_recognises_every_shape_at_every_size(shape):
    for size in range(6, 12):
        blob = world.shape_mask(shape=shape, size=size, center_x=15.3, center_y=16.7, height=32, width=32)
        assert judge.best_shape(blob) == shape, size
