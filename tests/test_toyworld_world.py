"""Tests for bench.toyworld.world: determinism, exact ground truth of every edit kind, motion, occlusion,
unambiguous instructions, image-pair folders and argument errors."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import torch

from bench.toyworld.world import (
    COLOURS,
    EDIT_KINDS,
    MIN_VISIBLE_FRACTION,
    EditExample,
    ObjectSpec,
    Scene,
    apply_edit,
    apply_style,
    background_image,
    build_example,
    caption,
    image_pair,
    make_edit,
    make_example,
    object_coverage,
    object_positions,
    random_edit,
    random_scene,
    render,
    shape_mask,
    split_of,
    split_seeds,
    write_image_pairs,
)
from imvideoedit_core.train.pair_dataset import PairDataset

SEEDS = range(300)


@pytest.fixture(scope="module")
def examples() -> list[EditExample]:
    """300 random 8-frame examples at 32x32, all edit kinds."""
    return [make_example(seed, size=32, frames=8) for seed in SEEDS]


def of_kind(examples: list[EditExample], kind: str) -> list[EditExample]:
    chosen = [example for example in examples if example.kind == kind]
    assert len(chosen) >= 20, (kind, len(chosen))
    return chosen


def colour(name: str) -> torch.Tensor:
    """A palette colour as the renderer writes it: float32 [3]."""
    return torch.tensor(COLOURS[name], dtype=torch.uint8).to(torch.float32) / 255.0


def still(shape: str, colour_name: str, *, size: int, x: float, y: float) -> ObjectSpec:
    return ObjectSpec(shape=shape, colour=colour_name, size=size, x=x, y=y, vx=0.0, vy=0.0)


# ----------------------------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_identical_examples():
    for seed in (0, 1, 17, 123456789):
        first, second = make_example(seed, frames=8), make_example(seed, frames=8)
        assert first.source_scene == second.source_scene and first.edit == second.edit
        assert first.instruction == second.instruction and first.target_caption == second.target_caption
        assert torch.equal(first.source_frames, second.source_frames)
        assert torch.equal(first.target_frames, second.target_frames)
        assert torch.equal(first.edit_mask, second.edit_mask)
    assert random_scene(5, size=64, frames=4) == random_scene(np.random.default_rng(5), size=64, frames=4)


def test_different_seeds_give_different_examples(examples):
    scenes = [example.source_scene for example in examples]
    assert len(set(scenes)) == len(scenes)
    assert not torch.equal(examples[0].source_frames, examples[1].source_frames)


def test_scene_of_a_seed_does_not_depend_on_the_edit_kinds():
    for seed in range(10):
        recolours = make_example(seed, edit_kinds=("recolor",))
        styles = make_example(seed, edit_kinds=("style",))
        assert recolours.source_scene == styles.source_scene
        assert (recolours.kind, styles.kind) == ("recolor", "style")


def test_frames_are_images_on_the_8bit_grid(examples):
    for example in examples[:50]:
        for frames in (example.source_frames, example.target_frames):
            assert frames.dtype == torch.float32 and frames.shape == (8, 32, 32, 3)
            levels = frames * 255
            assert torch.equal(levels, levels.round()) and frames.min() >= 0 and frames.max() <= 1
        assert example.edit_mask.shape == (8, 32, 32) and example.edit_mask.dtype == torch.float32
        assert set(example.edit_mask.unique().tolist()) <= {0.0, 1.0}


# ----------------------------------------------------------------------------------------------------------------
# Ground truth of every edit kind


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_target_equals_source_outside_the_edit_mask(examples, kind):
    for example in of_kind(examples, kind):
        outside = example.edit_mask == 0  # [T, H, W]
        assert torch.equal(example.target_frames[outside], example.source_frames[outside])
        changed = (example.target_frames != example.source_frames).any(dim=-1)  # [T, H, W]
        assert changed.any(), example.instruction  # every edit does something


def test_recolour_paints_the_new_colour_exactly_inside_the_mask(examples):
    for example in of_kind(examples, "recolor"):
        inside = example.edit_mask == 1
        assert inside.any()
        new = colour(example.edit.value)
        assert torch.equal(example.target_frames[inside], new.expand(int(inside.sum()), 3))
        old = colour(example.source_scene.objects[example.edit.target].colour)
        assert torch.equal(example.source_frames[inside], old.expand(int(inside.sum()), 3))


def test_remove_reveals_exactly_what_was_behind(examples):
    for example in of_kind(examples, "remove"):
        kept = [obj for index, obj in enumerate(example.source_scene.objects) if index != example.edit.target]
        without = render(Scene(background=example.source_scene.background, objects=tuple(kept),
                               width=32, height=32, frames=8))
        assert torch.equal(example.target_frames, without.frames)
        assert torch.equal(example.edit_mask.bool(), render(example.source_scene).masks[example.edit.target])


def test_reshape_region_is_the_union_of_old_and_new_shape(examples):
    for example in of_kind(examples, "reshape"):
        index = example.edit.target
        before = render(example.source_scene).masks[index]
        after = render(example.target_scene).masks[index]
        assert torch.equal(example.edit_mask.bool(), before | after)
        paint = colour(example.target_scene.objects[index].colour)
        assert torch.equal(example.target_frames[after], paint.expand(int(after.sum()), 3))
        assert example.target_scene.objects[index].shape == example.edit.value


def test_background_change_keeps_every_object_pixel(examples):
    for example in of_kind(examples, "background"):
        objects = render(example.source_scene).masks.any(dim=0)  # [T, H, W]
        assert torch.equal(example.target_frames[objects], example.source_frames[objects])
        assert torch.equal(example.edit_mask.bool(), ~objects)
        new = torch.from_numpy(background_image(example.edit.value, height=32, width=32))  # [H, W, 3]
        background = ~objects
        assert torch.equal(example.target_frames[background], new.expand(8, -1, -1, -1)[background])


def test_style_target_is_the_transform_of_the_source(examples):
    for example in of_kind(examples, "style"):
        assert torch.equal(example.target_frames, apply_style(example.source_frames, example.edit.value))
        assert bool(example.edit_mask.all())
    frames = make_example(3).source_frames
    gray = apply_style(frames, "grayscale")
    assert torch.equal(gray[..., 0], gray[..., 1]) and torch.equal(gray[..., 1], gray[..., 2])
    assert torch.equal(apply_style(apply_style(frames, "invert"), "invert"), frames)
    assert torch.equal(apply_style(frames[:1], "sepia"), apply_style(frames, "sepia")[:1])  # no batch effects


def test_hand_made_recolour_with_two_circles():
    scene = Scene(background="gray", width=32, height=32, frames=2,
                  objects=(still("circle", "red", size=8, x=8, y=8), still("circle", "blue", size=8, x=24, y=24)))
    edit = make_edit(scene, kind="recolor", target=0, value="green")
    assert edit.instruction == "make the red circle green"
    example = build_example(scene, edit)
    assert example.target_caption == "a green circle and a blue circle on a gray background"
    assert example.edit_mask.sum() == 2 * shape_mask(shape="circle", size=8, center_x=8, center_y=8,
                                                     height=32, width=32).sum()


# ----------------------------------------------------------------------------------------------------------------
# Motion and occlusion


def test_motion_is_identical_in_source_and_edited_scene(examples):
    for example in examples:
        source = object_positions(example.source_scene)  # [N, T, 2]
        if example.kind == "remove":
            source = np.delete(source, example.edit.target, axis=0)
        assert np.array_equal(source, object_positions(example.target_scene))


def test_bounce_reflects_position_at_the_borders():
    obj = ObjectSpec(shape="square", colour="red", size=8, x=26.0, y=5.0, vx=3.0, vy=-3.0)
    scene = Scene(background="black", objects=(obj,), width=32, height=32, frames=4)
    positions = object_positions(scene)[0]  # [T, 2]; the centre stays in [4, 28]
    assert positions[:, 0].tolist() == [26.0, 27.0, 24.0, 21.0]
    assert positions[:, 1].tolist() == [5.0, 6.0, 9.0, 12.0]


@pytest.mark.parametrize("size", [32, 64])
def test_objects_stay_fully_inside_the_frame(size):
    margin = size
    for seed in range(20):
        scene = random_scene(seed, size=size, frames=16, max_speed=size / 4)  # the fastest allowed
        for obj, centres in zip(scene.objects, object_positions(scene)):
            half = obj.size / 2
            assert centres.min() >= half and centres.max() <= size - half
            for x, y in centres:  # nothing is cut: the frame holds as many pixels as a larger canvas
                inside = shape_mask(shape=obj.shape, size=obj.size, center_x=x, center_y=y, height=size, width=size)
                larger = shape_mask(shape=obj.shape, size=obj.size, center_x=x + margin, center_y=y + margin,
                                    height=size + 2 * margin, width=size + 2 * margin)
                assert inside.sum() == larger.sum() > 0


def test_front_object_hides_the_back_one():
    back, front = still("square", "red", size=10, x=14, y=16), still("circle", "blue", size=10, x=18, y=16)
    scene = Scene(background="black", objects=(back, front), width=32, height=32, frames=1)
    result = render(scene)
    coverage = torch.from_numpy(object_coverage(scene))  # [2, 1, H, W]
    assert torch.equal(result.masks[1], coverage[1])  # the front object is fully visible
    assert torch.equal(result.masks[0], coverage[0] & ~coverage[1])
    overlap = coverage[0] & coverage[1]
    assert overlap.any() and torch.equal(result.frames[overlap], colour("blue").expand(int(overlap.sum()), 3))


def test_masks_of_random_scenes_are_disjoint_and_visible_enough(examples):
    for example in examples[:60]:
        scene = example.source_scene
        result = render(scene)
        assert result.masks.sum(dim=0).max() <= 1  # an object pixel belongs to one object
        area = torch.from_numpy(object_coverage(scene)).sum(dim=(2, 3))  # [N, T]
        assert bool((result.masks.sum(dim=(2, 3)) >= MIN_VISIBLE_FRACTION * area).all())
        for obj, mask in zip(scene.objects, result.masks):
            assert torch.equal(result.frames[mask], colour(obj.colour).expand(int(mask.sum()), 3))


# ----------------------------------------------------------------------------------------------------------------
# Edits and words


def test_every_edit_kind_appears(examples):
    counts = Counter(example.kind for example in examples)
    assert set(counts) == set(EDIT_KINDS)
    assert min(counts.values()) >= 30, counts


_TARGET = r"the (?:(?P<colour>\w+) )?(?P<shape>square|circle|triangle)"
_TEMPLATES = {
    "recolor": re.compile(rf"^make {_TARGET} (?P<value>\w+)$"),
    "reshape": re.compile(rf"^turn {_TARGET} into an? (?P<value>\w+)$"),
    "remove": re.compile(rf"^remove {_TARGET}$"),
}


@pytest.mark.parametrize("kind", ["recolor", "reshape", "remove"])
def test_instructions_name_exactly_one_object(examples, kind):
    for example in of_kind(examples, kind):
        match = _TEMPLATES[kind].match(example.instruction)
        assert match, example.instruction
        objects = example.source_scene.objects
        named = [index for index, obj in enumerate(objects)
                 if obj.shape == match["shape"] and match["colour"] in (None, obj.colour)]
        assert named == [example.edit.target], (example.instruction, objects)
        if kind != "remove":
            assert match["value"] == example.edit.value


def test_captions_and_instructions_follow_the_templates():
    scene = Scene(background="stripes", width=32, height=32, frames=1,
                  objects=(still("circle", "red", size=8, x=8, y=8), still("square", "orange", size=8, x=20, y=20)))
    assert caption(scene) == "a red circle and an orange square on a striped background"
    assert make_edit(scene, kind="reshape", target=1, value="triangle").instruction == \
        "turn the square into a triangle"
    assert make_edit(scene, kind="background", value="checker").instruction == \
        "change the background to a checkerboard"
    styled = apply_edit(scene, make_edit(scene, kind="style", value="grayscale"))
    assert caption(styled) == "a red circle and an orange square on a striped background, in black and white"
    empty = apply_edit(scene, make_edit(scene, kind="remove", target=0))
    empty = apply_edit(empty, make_edit(empty, kind="remove", target=0))
    assert caption(empty) == "a striped background"
    assert render(empty).masks.shape == (0, 1, 32, 32)


def test_random_edits_are_valid_for_every_kind():
    scene = random_scene(11, size=32, frames=4, max_objects=3)
    rng = np.random.default_rng(0)
    for kind in EDIT_KINDS:
        edit = random_edit(scene, rng, kinds=(kind,))
        assert edit.kind == kind
        apply_edit(scene, edit)  # does not raise
    styled = apply_edit(scene, make_edit(scene, kind="style", value="sepia"))
    with pytest.raises(ValueError, match="no edit of kinds"):
        random_edit(styled, rng, kinds=("style",))


# ----------------------------------------------------------------------------------------------------------------
# Image pairs and splits


def test_image_pairs_load_with_the_pair_loader(tmp_path):
    seeds = split_seeds("train", count=6)
    names = write_image_pairs(tmp_path, seeds, size=32)
    dataset = PairDataset.from_path(tmp_path)
    assert [entry.name for entry in dataset.entries] == sorted(names)
    for seed, name in zip(seeds, names):
        example = image_pair(seed, size=32)
        assert example.source_frames.shape == (1, 32, 32, 3)
        pair = dataset[sorted(names).index(name)]
        assert pair.instruction == example.instruction and name.endswith(example.kind)
        # frames are multiples of 1/255, so 8-bit PNGs round-trip exactly (the general tolerance is 0.5/255)
        assert torch.equal(pair.source, example.source_frames[0])
        assert torch.equal(pair.target, example.target_frames[0])


def test_train_and_eval_seeds_are_disjoint():
    train, held_out = split_seeds("train", count=900), split_seeds("eval", count=100)
    assert not set(train) & set(held_out)
    assert all(split_of(seed) == "train" for seed in train) and all(split_of(seed) == "eval" for seed in held_out)
    share = sum(split_of(seed) == "eval" for seed in range(5000)) / 5000
    assert 0.08 < share < 0.12
    assert split_seeds("eval", count=3, start=1000) == split_seeds("eval", count=3, start=1000)
    assert min(split_seeds("eval", count=3, start=1000)) >= 1000


# ----------------------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(("call", "message"), [
    (lambda: make_example(0, size=40), "size=40 is not supported"),
    (lambda: make_example(0, size=16), "size=16 is not supported"),
    (lambda: make_example(0, frames=0), "frames=0"),
    (lambda: make_example(0, max_objects=4), "max_objects=4"),
    (lambda: make_example(-1), "seed=-1 must be a non-negative integer"),
    (lambda: make_example(0, edit_kinds=("recolour",)), "unknown edit kinds \\['recolour'\\]"),
    (lambda: make_example(0, edit_kinds="recolor"), "must be a sequence of edit kinds"),
    (lambda: make_example(0, edit_kinds=()), "no edit kinds given"),
    (lambda: random_scene(0, max_speed=0.0), "max_speed=0.0"),
    (lambda: split_seeds("test", count=1), "split='test'"),
    (lambda: write_image_pairs("/nonexistent", []), "seeds is empty"),
    (lambda: ObjectSpec(shape="star", colour="red", size=5, x=5, y=5, vx=0, vy=0), "shape='star'"),
    (lambda: Scene(background="plaid", objects=(), width=32, height=32, frames=1), "background='plaid'"),
    (lambda: Scene(background="gray", width=32, height=32, frames=1,
                   objects=(still("circle", "red", size=6, x=8, y=8), still("square", "red", size=6, x=20, y=20))),
     "distinct colours"),
    (lambda: Scene(background="gray", objects=(), width=32.0, height=32, frames=1), "width=32.0 must be an integer"),
    (lambda: Scene(background="gray", width=32, height=32, frames=1,
                   objects=(still("circle", "red", size=10, x=2, y=8),)), "fully inside the frame"),
])
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_invalid_edits_say_what_would_be_valid():
    scene = Scene(background="gray", width=32, height=32, frames=1,
                  objects=(still("circle", "red", size=8, x=8, y=8), still("square", "blue", size=8, x=20, y=20)))
    with pytest.raises(ValueError, match="choose one of \\['green'"):
        make_edit(scene, kind="recolor", target=0, value="blue")  # taken by the square
    with pytest.raises(ValueError, match="in range\\(2\\)"):
        make_edit(scene, kind="remove", target=2)
    with pytest.raises(ValueError, match="choose one of \\['square', 'triangle'\\]"):
        make_edit(scene, kind="reshape", target=0, value="circle")
    with pytest.raises(ValueError, match="pass target=None"):
        make_edit(scene, kind="background", target=0, value="black")
    styled = apply_edit(scene, make_edit(scene, kind="style", value="invert"))
    with pytest.raises(ValueError, match="styles do not compose"):
        make_edit(styled, kind="style", value="sepia")
