"""ToyWorld scenes: procedural short videos, edits of their description, and the exact ground truth of each edit.

A scene is a background and one to three flat-coloured shapes that move at constant velocity and bounce off the
frame borders; later objects are drawn in front of earlier ones. An edit changes the description (recolour an
object, change the background, swap a shape, remove an object, or apply a global style), and rendering the edited
scene with the same motion gives the exact edited video and the exact region the edit owns::

    example = make_example(7, size=32, frames=8)
    example.instruction      # e.g. "make the circle green"
    example.source_frames    # [T, H, W, 3] float32 in 0..1 (ComfyUI IMAGE layout)
    example.target_frames    # [T, H, W, 3]: the ground-truth edit
    example.edit_mask        # [T, H, W] float32 in {0, 1} (ComfyUI MASK layout)

Rendering is not antialiased: a pixel belongs to a shape when its centre lies strictly inside it, so object masks
are exact and every pixel value is a multiple of 1/255 (PNG files round-trip bit for bit). Objects of one scene
have distinct colours, so "the red circle" names exactly one object; an instruction names an object by its shape
alone when no other object shares the shape, else by colour and shape ("make the red circle green").

Everything is a function of an integer seed through ``np.random.default_rng`` (never the global RNG).
``split_of(seed)`` assigns every seed to "train" or "eval" by a hash, so training examples and held-out
evaluation examples never come from the same seed; ``split_seeds`` lists the seeds of one split.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

# ----------------------------------------------------------------------------------------------------------------
# The palette: shapes, object colours, backgrounds and styles

SHAPES: tuple[str, ...] = ("square", "circle", "triangle")

COLOURS: dict[str, tuple[int, int, int]] = {  # object colours, 8-bit RGB
    "red": (230, 25, 25),
    "green": (30, 200, 50),
    "blue": (40, 80, 235),
    "yellow": (250, 220, 30),
    "magenta": (220, 40, 220),
    "cyan": (40, 220, 230),
    "white": (250, 250, 250),
    "orange": (250, 140, 20),
}

SOLID_BACKGROUNDS: dict[str, tuple[int, int, int]] = {  # none of them is an object colour
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "brown": (110, 70, 40),
}
TEXTURES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {  # the two colours of each texture
    "stripes": ((45, 45, 60), (95, 95, 115)),  # diagonal bands
    "checker": ((40, 75, 55), (85, 120, 95)),  # squares
    "gradient": ((20, 50, 90), (120, 40, 110)),  # left to right
}
BACKGROUNDS: tuple[str, ...] = (*SOLID_BACKGROUNDS, *TEXTURES)

STYLES: tuple[str, ...] = ("grayscale", "invert", "sepia")
NO_STYLE = "none"
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as cv2.COLOR_RGB2GRAY
SEPIA_MATRIX = ((0.393, 0.769, 0.189), (0.349, 0.686, 0.168), (0.272, 0.534, 0.131))  # rows: output R, G, B

EDIT_KINDS: tuple[str, ...] = ("recolor", "background", "reshape", "remove", "style")
OBJECT_EDIT_KINDS: tuple[str, ...] = ("recolor", "reshape", "remove")  # the kinds that have a target object

# ----------------------------------------------------------------------------------------------------------------
# Limits of the random generator

SIZE_MULTIPLE = 16  # the Wan VAE downsamples by 8 and the patch embedding by 2
MIN_SIZE, MAX_SIZE = 32, 128  # frame side in px of random scenes
MAX_FRAMES = 128
MAX_OBJECTS = 3
MIN_OBJECT_SIZE = 3  # px; any shape this large covers at least one pixel centre
OBJECT_SIZE_FRACTIONS = (0.2, 0.35)  # object side as a fraction of the frame side: 6..11 px at 32x32
SPEED_PER_32PX = 3.0  # default max speed, px per frame, at 32 px; scaled with the frame side (DIS flow stays reliable)
MIN_SPEED_FRACTION = 0.25  # random speeds lie in [0.25, 1] x max speed: every object visibly moves
MIN_VISIBLE_FRACTION = 0.3  # random scenes keep at least this fraction of every object visible in every frame
MAX_PLACEMENT_TRIES = 100  # random placements tried before a crowded random scene gets one object fewer

SPLITS: tuple[str, ...] = ("train", "eval")
EVAL_PERCENT = 10  # share of seeds held out for evaluation

# The words: caption adjectives and instruction templates
_BACKGROUND_ADJECTIVE = {"black": "black", "gray": "gray", "brown": "brown",
                         "stripes": "striped", "checker": "checkered", "gradient": "gradient"}
_BACKGROUND_INSTRUCTION = {"black": "make the background black", "gray": "make the background gray",
                           "brown": "make the background brown", "stripes": "change the background to stripes",
                           "checker": "change the background to a checkerboard",
                           "gradient": "change the background to a gradient"}
_STYLE_INSTRUCTION = {"grayscale": "make it black and white", "invert": "invert the colours",
                      "sepia": "make it sepia"}
_STYLE_CAPTION = {"grayscale": "in black and white", "invert": "with inverted colours", "sepia": "in sepia"}

_SCENE_STREAM, _EDIT_STREAM = 0, 1  # independent random streams of one seed


# ----------------------------------------------------------------------------------------------------------------
# Data types


@dataclass(frozen=True)
class ObjectSpec:
    """One flat-coloured shape and its motion; positions are the shape's centre in px from the top-left corner."""

    shape: str  # one of SHAPES
    colour: str  # a key of COLOURS
    size: int  # side of the shape's bounding square, px
    x: float  # centre at frame 0
    y: float
    vx: float  # px per frame, before bouncing
    vy: float

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape={self.shape!r} is not one of {SHAPES}")
        if self.colour not in COLOURS:
            raise ValueError(f"colour={self.colour!r} is not one of {tuple(COLOURS)}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < MIN_OBJECT_SIZE:
            raise ValueError(f"size={self.size!r} must be an integer of at least {MIN_OBJECT_SIZE} px")
        for name in ("x", "y", "vx", "vy"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)!r} must be a finite number")


@dataclass(frozen=True)
class Scene:
    """A background, objects in depth order (the last is in front) and the video's size; ``style`` is global."""

    background: str  # one of BACKGROUNDS
    objects: tuple[ObjectSpec, ...]
    width: int
    height: int
    frames: int
    style: str = NO_STYLE  # NO_STYLE or one of STYLES, applied to the rendered pixels

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background={self.background!r} is not one of {BACKGROUNDS}")
        if self.style != NO_STYLE and self.style not in STYLES:
            raise ValueError(f"style={self.style!r} is not {NO_STYLE!r} or one of {STYLES}")
        for name in ("width", "height", "frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name}={value!r} must be an integer")
        if min(self.width, self.height) < 8 or self.frames < 1:
            raise ValueError(f"width={self.width}, height={self.height}, frames={self.frames}: need at least "
                             "8x8 pixels and one frame")
        colours = [obj.colour for obj in self.objects]
        if len(set(colours)) != len(colours):
            raise ValueError(f"object colours {colours} repeat: objects of a scene have distinct colours, which "
                             "keeps instructions such as 'remove the red circle' unambiguous")
        for index, obj in enumerate(self.objects):
            _check_inside(obj, index=index, width=self.width, height=self.height)


def _check_inside(obj: ObjectSpec, *, index: int, width: int, height: int) -> None:
    """ValueError unless the object's bounding square lies inside the frame at frame 0."""
    half = obj.size / 2
    if obj.size > min(width, height):
        raise ValueError(f"object {index} ({obj.colour} {obj.shape}) of size {obj.size} does not fit a "
                         f"{width}x{height} frame")
    if not (half <= obj.x <= width - half and half <= obj.y <= height - half):
        raise ValueError(f"object {index} ({obj.colour} {obj.shape}) starts at ({obj.x}, {obj.y}); its centre "
                         f"must lie in [{half}, {width - half}] x [{half}, {height - half}] so that it is fully "
                         "inside the frame")


@dataclass(frozen=True)
class Edit:
    """One operation on a scene description and the instruction that asks for it."""

    kind: str  # one of EDIT_KINDS
    target: int | None  # index into Scene.objects for recolor, reshape, remove; None for background, style
    value: str | None  # the new colour, shape, background or style; None for remove
    instruction: str

    def __post_init__(self) -> None:
        if self.kind not in EDIT_KINDS:
            raise ValueError(f"edit kind {self.kind!r} is not one of {EDIT_KINDS}")


@dataclass(frozen=True, eq=False)
class RenderResult:
    """A rendered scene and where each object is visible after occlusion."""

    frames: torch.Tensor  # [T, H, W, 3] float32 in 0..1, multiples of 1/255
    masks: torch.Tensor  # [N, T, H, W] bool, one per object in Scene.objects order


@dataclass(frozen=True, eq=False)
class EditExample:
    """A source video, an edit, and its exact ground truth: the edited scene rendered with the same motion."""

    seed: int | None  # None when built from a hand-made scene and edit
    kind: str
    instruction: str
    edit: Edit
    source_scene: Scene
    target_scene: Scene
    source_frames: torch.Tensor  # [T, H, W, 3] float32 in 0..1
    target_frames: torch.Tensor  # [T, H, W, 3] float32 in 0..1
    edit_mask: torch.Tensor  # [T, H, W] float32 in {0, 1}; target == source exactly where it is 0
    source_caption: str
    target_caption: str


# ----------------------------------------------------------------------------------------------------------------
# Motion


def object_positions(scene: Scene) -> np.ndarray:
    """Every object's centre in every frame, float64 [N, T, 2] as (x, y) px.

    Constant velocity, reflected at the borders so that the bounding square stays inside the frame. Edits never
    change an object's size, start or velocity, so source and edited scenes share these positions exactly.
    """
    steps = np.arange(scene.frames, dtype=np.float64)  # [T]
    positions = np.zeros((len(scene.objects), scene.frames, 2))  # [N, T, 2]
    for index, obj in enumerate(scene.objects):
        half = obj.size / 2
        positions[index, :, 0] = _bounce(obj.x, obj.vx, low=half, high=scene.width - half, steps=steps)
        positions[index, :, 1] = _bounce(obj.y, obj.vy, low=half, high=scene.height - half, steps=steps)
    return positions


def _bounce(start: float, velocity: float, *, low: float, high: float, steps: np.ndarray) -> np.ndarray:
    """Position [T] of a point on [low, high] that moves at ``velocity`` and reflects off both ends."""
    span = high - low
    if span == 0:
        return np.full(steps.shape, low)
    unfolded = np.mod(start - low + velocity * steps, 2 * span)  # position on a loop of length 2 * span
    return low + np.where(unfolded > span, 2 * span - unfolded, unfolded)


# ----------------------------------------------------------------------------------------------------------------
# Rasterising


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Whether offsets (dx, dy) from the centre lie strictly inside the shape; broadcasts dx with dy."""
    if shape == "square":
        return (np.abs(dx) < half) & (np.abs(dy) < half)
    if shape == "circle":
        return dx * dx + dy * dy < half * half
    # triangle: apex at the top middle of the bounding square, base along its bottom edge
    return (dy < half) & (np.abs(dx) < (dy + half) / 2)


def shape_mask(*, shape: str, size: int, center_x: float, center_y: float, height: int, width: int) -> np.ndarray:
    """[H, W] bool: the pixels whose centre lies strictly inside the shape (parts outside the canvas are cut)."""
    if shape not in SHAPES:
        raise ValueError(f"shape={shape!r} is not one of {SHAPES}")
    dx = np.arange(width)[None, :] + 0.5 - center_x  # [1, W]
    dy = np.arange(height)[:, None] + 0.5 - center_y  # [H, 1]
    return _inside(shape, dx, dy, size / 2)


def object_coverage(scene: Scene) -> np.ndarray:
    """Where every object is drawn, ignoring occlusion, [N, T, H, W] bool."""
    centres = object_positions(scene)  # [N, T, 2]
    coverage = np.zeros((len(scene.objects), scene.frames, scene.height, scene.width), dtype=bool)
    xs = np.arange(scene.width) + 0.5  # pixel centres [W]
    ys = np.arange(scene.height) + 0.5  # [H]
    for index, obj in enumerate(scene.objects):
        dx = xs[None, None, :] - centres[index, :, 0, None, None]  # [T, 1, W]
        dy = ys[None, :, None] - centres[index, :, 1, None, None]  # [T, H, 1]
        coverage[index] = _inside(obj.shape, dx, dy, obj.size / 2)
    return coverage


def _visible(coverage: np.ndarray) -> np.ndarray:
    """[N, T, H, W] coverage in draw order -> [N, T, H, W] the part of each object no later object covers."""
    visible = coverage.copy()
    in_front = np.zeros(coverage.shape[1:], dtype=bool)  # [T, H, W]
    for index in reversed(range(len(coverage))):
        visible[index] &= ~in_front
        in_front |= coverage[index]
    return visible


def _visible_enough(scene: Scene) -> bool:
    """Whether every object keeps MIN_VISIBLE_FRACTION of its area visible in every frame."""
    coverage = object_coverage(scene)  # [N, T, H, W]
    area = coverage.sum(axis=(2, 3))  # [N, T]
    shown = _visible(coverage).sum(axis=(2, 3))  # [N, T]
    return bool(np.all(shown >= MIN_VISIBLE_FRACTION * area))


# ----------------------------------------------------------------------------------------------------------------
# Pixels: backgrounds, styles, rendering


def _to_float(levels: np.ndarray) -> np.ndarray:
    """8-bit levels (any shape) -> float32 in 0..1, computed as image readers do (float32(level) / 255)."""
    return levels.astype(np.float32) / np.float32(255.0)


def background_image(name: str, *, height: int, width: int) -> np.ndarray:
    """The background ``name`` as float32 [H, W, 3] in 0..1; textures scale with the frame side."""
    if name not in BACKGROUNDS:
        raise ValueError(f"background={name!r} is not one of {BACKGROUNDS}")
    if name in SOLID_BACKGROUNDS:
        levels = np.broadcast_to(np.array(SOLID_BACKGROUNDS[name], dtype=np.uint8), (height, width, 3))
        return _to_float(levels)
    first, second = (np.array(colour, dtype=np.float64) for colour in TEXTURES[name])  # [3] each
    ys, xs = np.mgrid[0:height, 0:width]  # [H, W] each
    side = min(height, width)
    if name == "gradient":
        ramp = (xs[..., None] + 0.5) / width  # [H, W, 1]
        return _to_float(np.round(first + (second - first) * ramp).astype(np.uint8))
    if name == "stripes":
        second_colour = ((xs + ys) // max(2, side // 8)) % 2 == 1  # [H, W]
    else:  # checker
        cell = max(2, side // 8)
        second_colour = (xs // cell + ys // cell) % 2 == 1  # [H, W]
    return _to_float(np.where(second_colour[..., None], second, first).astype(np.uint8))


def apply_style(frames: torch.Tensor, style: str) -> torch.Tensor:
    """A global colour transform of RGB frames [..., 3] in 0..1 -> [..., 3] float32.

    It works on 8-bit levels (inputs are rounded to multiples of 1/255 first) and returns multiples of 1/255, so
    the styled video is as exact as the unstyled one. Element-wise arithmetic only: the result of a pixel does not
    depend on the batch it comes in.
    """
    if style not in STYLES:
        raise ValueError(f"style={style!r} is not one of {STYLES}")
    levels = torch.round(frames.to(torch.float64).clamp(0.0, 1.0) * 255.0)  # [..., 3] in 0..255
    red, green, blue = levels.unbind(dim=-1)  # [...] each
    if style == "grayscale":
        luma = torch.round(LUMA_WEIGHTS[0] * red + LUMA_WEIGHTS[1] * green + LUMA_WEIGHTS[2] * blue)  # [...]
        styled = torch.stack([luma, luma, luma], dim=-1)  # [..., 3]
    elif style == "invert":
        styled = 255.0 - levels
    else:  # sepia
        rows = [row[0] * red + row[1] * green + row[2] * blue for row in SEPIA_MATRIX]
        styled = torch.round(torch.stack(rows, dim=-1).clamp(max=255.0))  # [..., 3]
    return styled.to(torch.float32) / 255.0


def render(scene: Scene) -> RenderResult:
    """The scene's video and every object's visibility mask after occlusion."""
    coverage = object_coverage(scene)  # [N, T, H, W]
    background = background_image(scene.background, height=scene.height, width=scene.width)  # [H, W, 3]
    frames = np.repeat(background[None], scene.frames, axis=0)  # [T, H, W, 3]
    for obj, drawn in zip(scene.objects, coverage):  # back to front: later objects paint over earlier ones
        frames[drawn] = _to_float(np.array(COLOURS[obj.colour], dtype=np.uint8))
    video = torch.from_numpy(frames)
    if scene.style != NO_STYLE:
        video = apply_style(video, scene.style)
    return RenderResult(frames=video, masks=torch.from_numpy(_visible(coverage)))


# ----------------------------------------------------------------------------------------------------------------
# Words: object descriptions, captions, instructions


def _with_article(words: str) -> str:
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def describe_object(scene: Scene, index: int) -> str:
    """The shortest unambiguous name of an object: its shape if no other object shares it, else colour and shape."""
    obj = scene.objects[index]
    shared = sum(other.shape == obj.shape for other in scene.objects)
    return obj.shape if shared == 1 else f"{obj.colour} {obj.shape}"


def caption(scene: Scene) -> str:
    """E.g. "a red circle and a blue square on a striped background", objects back to front."""
    things = [_with_article(f"{obj.colour} {obj.shape}") for obj in scene.objects]
    background = _with_article(f"{_BACKGROUND_ADJECTIVE[scene.background]} background")
    if not things:
        text = background
    else:
        listed = things[0] if len(things) == 1 else f"{', '.join(things[:-1])} and {things[-1]}"
        text = f"{listed} on {background}"
    if scene.style != NO_STYLE:
        text = f"{text}, {_STYLE_CAPTION[scene.style]}"
    return text


def _instruction(scene: Scene, *, kind: str, target: int | None, value: str | None) -> str:
    """The instruction of a checked edit, from one template per kind."""
    if kind == "recolor":
        return f"make the {describe_object(scene, target)} {value}"
    if kind == "reshape":
        return f"turn the {describe_object(scene, target)} into {_with_article(value)}"
    if kind == "remove":
        return f"remove the {describe_object(scene, target)}"
    if kind == "background":
        return _BACKGROUND_INSTRUCTION[value]
    return _STYLE_INSTRUCTION[value]


# ----------------------------------------------------------------------------------------------------------------
# Edits


def _check_edit(scene: Scene, *, kind: str, target: int | None, value: str | None) -> None:
    """ValueError, saying what would be valid, unless the edit applies to the scene and changes it."""
    if kind not in EDIT_KINDS:
        raise ValueError(f"edit kind {kind!r} is not one of {EDIT_KINDS}")
    if kind in OBJECT_EDIT_KINDS:
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < len(scene.objects):
            raise ValueError(f"a {kind} edit needs target, an object index in range({len(scene.objects)}), "
                             f"got {target!r}")
        obj = scene.objects[target]
    elif target is not None:
        raise ValueError(f"a {kind} edit changes the whole frame: pass target=None, not {target!r}")
    if kind == "recolor":
        taken = {other.colour for other in scene.objects}
        if value not in COLOURS or value in taken:
            free = [colour for colour in COLOURS if colour not in taken]
            raise ValueError(f"cannot recolour the {obj.colour} {obj.shape} to {value!r}: choose one of {free} "
                             "(objects of a scene have distinct colours)")
    elif kind == "reshape" and (value not in SHAPES or value == obj.shape):
        raise ValueError(f"cannot turn the {obj.colour} {obj.shape} into {value!r}: choose one of "
                         f"{[shape for shape in SHAPES if shape != obj.shape]}")
    elif kind == "remove" and value is not None:
        raise ValueError(f"a remove edit takes value=None, not {value!r}")
    elif kind == "background" and (value not in BACKGROUNDS or value == scene.background):
        raise ValueError(f"cannot change the background to {value!r}: choose one of "
                         f"{[name for name in BACKGROUNDS if name != scene.background]}")
    elif kind == "style":
        if scene.style != NO_STYLE:
            raise ValueError(f"the scene already has style {scene.style!r}: styles do not compose, apply a style "
                             "edit to an unstyled scene")
        if value not in STYLES:
            raise ValueError(f"style {value!r} is not one of {STYLES}")


def make_edit(scene: Scene, *, kind: str, target: int | None = None, value: str | None = None) -> Edit:
    """A checked edit of ``scene`` with its instruction, e.g. make_edit(scene, kind="recolor", target=0,
    value="green")."""
    _check_edit(scene, kind=kind, target=target, value=value)
    return Edit(kind=kind, target=target, value=value,
                instruction=_instruction(scene, kind=kind, target=target, value=value))


def apply_edit(scene: Scene, edit: Edit) -> Scene:
    """The edited scene description; sizes, starts and velocities are kept, so the motion is unchanged."""
    _check_edit(scene, kind=edit.kind, target=edit.target, value=edit.value)
    objects = list(scene.objects)
    if edit.kind == "recolor":
        objects[edit.target] = replace(objects[edit.target], colour=edit.value)
    elif edit.kind == "reshape":
        objects[edit.target] = replace(objects[edit.target], shape=edit.value)
    elif edit.kind == "remove":
        del objects[edit.target]
    elif edit.kind == "background":
        return replace(scene, background=edit.value)
    else:
        return replace(scene, style=edit.value)
    return replace(scene, objects=tuple(objects))


def _candidate_edits(scene: Scene, kind: str) -> list[Edit]:
    """Every valid edit of one kind, in a fixed order."""
    objects = scene.objects
    if kind == "recolor":
        taken = {obj.colour for obj in objects}
        return [make_edit(scene, kind=kind, target=index, value=colour)
                for index in range(len(objects)) for colour in COLOURS if colour not in taken]
    if kind == "reshape":
        return [make_edit(scene, kind=kind, target=index, value=shape)
                for index, obj in enumerate(objects) for shape in SHAPES if shape != obj.shape]
    if kind == "remove":
        return [make_edit(scene, kind=kind, target=index) for index in range(len(objects))]
    if kind == "background":
        return [make_edit(scene, kind=kind, value=name) for name in BACKGROUNDS if name != scene.background]
    if scene.style != NO_STYLE:
        return []
    return [make_edit(scene, kind=kind, value=style) for style in STYLES]


def random_edit(scene: Scene, rng: np.random.Generator | int, *, kinds: Sequence[str] = EDIT_KINDS) -> Edit:
    """A uniformly chosen kind among ``kinds`` that applies, then a uniformly chosen edit of that kind.

    An edit that would leave an object less than MIN_VISIBLE_FRACTION visible in some frame (a reshape that grows
    a front object) is skipped, unless the scene already breaks that rule.
    """
    rng = _as_rng(rng)
    kinds = _check_kinds(kinds)
    check_visibility = _visible_enough(scene)
    pools = {kind: _candidate_edits(scene, kind) for kind in kinds}
    available = [kind for kind in kinds if pools[kind]]
    while available:
        kind = available[int(rng.integers(len(available)))]
        for index in rng.permutation(len(pools[kind])):
            edit = pools[kind][index]
            if not check_visibility or _visible_enough(apply_edit(scene, edit)):
                return edit
        available.remove(kind)
    raise ValueError(f"no edit of kinds {kinds} applies to this scene ({caption(scene)}): object edits need an "
                     "object and a style edit needs an unstyled scene; allow more kinds")


# ----------------------------------------------------------------------------------------------------------------
# Random scenes


def default_max_speed(size: int) -> float:
    """The default speed limit in px per frame: SPEED_PER_32PX at 32 px, proportional to the frame side."""
    return SPEED_PER_32PX * size / 32


def random_scene(
    rng: np.random.Generator | int,
    *,
    size: int = 32,
    frames: int = 8,
    max_objects: int = MAX_OBJECTS,
    max_speed: float | None = None,
) -> Scene:
    """A random size x size scene of 1..max_objects objects with distinct colours, each at least
    MIN_VISIBLE_FRACTION visible in every frame; speeds are at most ``max_speed`` (default_max_speed(size))."""
    rng = _as_rng(rng)
    _check_generator_args(size=size, frames=frames, max_objects=max_objects)
    speed = default_max_speed(size) if max_speed is None else _check_speed(max_speed, size=size)
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    count = int(rng.integers(1, max_objects + 1))
    while True:  # ends: one object is always visible enough
        for _ in range(MAX_PLACEMENT_TRIES):
            objects = _random_objects(rng, count=count, size=size, max_speed=speed)
            scene = Scene(background=background, objects=objects, width=size, height=size, frames=frames)
            if _visible_enough(scene):
                return scene
        count -= 1


def _random_objects(rng: np.random.Generator, *, count: int, size: int, max_speed: float) -> tuple[ObjectSpec, ...]:
    """``count`` objects of distinct colours, random shapes, sizes, starts and velocities."""
    names = list(COLOURS)
    smallest = max(MIN_OBJECT_SIZE, round(OBJECT_SIZE_FRACTIONS[0] * size))
    largest = round(OBJECT_SIZE_FRACTIONS[1] * size)
    objects = []
    for colour_index in rng.choice(len(names), size=count, replace=False):
        side = int(rng.integers(smallest, largest + 1))
        half = side / 2
        x, y = rng.uniform(half, size - half, size=2)
        speed = rng.uniform(MIN_SPEED_FRACTION, 1.0) * max_speed
        angle = rng.uniform(0.0, 2 * math.pi)
        objects.append(ObjectSpec(shape=SHAPES[int(rng.integers(len(SHAPES)))], colour=names[colour_index],
                                  size=side, x=float(x), y=float(y),
                                  vx=float(speed * math.cos(angle)), vy=float(speed * math.sin(angle))))
    return tuple(objects)


# ----------------------------------------------------------------------------------------------------------------
# Examples: a scene, an edit and the ground truth


def edit_region(edit: Edit, *, source: RenderResult, target: RenderResult) -> torch.Tensor:
    """[T, H, W] bool: the pixels the edit owns; the target equals the source everywhere else.

    recolor, remove: the object's visible pixels in the source. reshape: the union of its visible pixels before
    and after. background: the pixels no object covers. style: every pixel. Inside the region a pixel can keep
    its value where old and new content agree (a gray pixel under "make it black and white").
    """
    if edit.kind in ("recolor", "remove"):
        return source.masks[edit.target].clone()
    if edit.kind == "reshape":
        return source.masks[edit.target] | target.masks[edit.target]
    if edit.kind == "background":
        return ~source.masks.any(dim=0)  # [N, T, H, W] -> [T, H, W]; all True without objects
    return torch.ones(source.frames.shape[:3], dtype=torch.bool)


def build_example(scene: Scene, edit: Edit, *, seed: int | None = None) -> EditExample:
    """Render ``scene`` and its edit with the same motion: the exact ground truth of a hand-made or random edit."""
    target_scene = apply_edit(scene, edit)
    source = render(scene)
    target = render(target_scene)
    return EditExample(
        seed=seed,
        kind=edit.kind,
        instruction=edit.instruction,
        edit=edit,
        source_scene=scene,
        target_scene=target_scene,
        source_frames=source.frames,
        target_frames=target.frames,
        edit_mask=edit_region(edit, source=source, target=target).to(torch.float32),
        source_caption=caption(scene),
        target_caption=caption(target_scene),
    )


def make_example(
    seed: int,
    *,
    size: int = 32,
    frames: int = 8,
    edit_kinds: Sequence[str] = EDIT_KINDS,
    max_objects: int = MAX_OBJECTS,
) -> EditExample:
    """The example of one seed: a random scene and a random edit of one of ``edit_kinds``.

    The scene and the edit come from independent random streams of the seed, so the scene of a seed does not
    depend on ``edit_kinds``.
    """
    seed = _check_seed(seed)
    kinds = _check_kinds(edit_kinds)
    scene = random_scene(np.random.default_rng([seed, _SCENE_STREAM]), size=size, frames=frames,
                         max_objects=max_objects)
    edit = random_edit(scene, np.random.default_rng([seed, _EDIT_STREAM]), kinds=kinds)
    return build_example(scene, edit, seed=seed)


def image_pair(seed: int, *, size: int = 32, edit_kinds: Sequence[str] = EDIT_KINDS) -> EditExample:
    """A single-frame example (frames=1) for training on image pairs; frames are [1, H, W, 3]."""
    return make_example(seed, size=size, frames=1, edit_kinds=edit_kinds)


def pair_name(seed: int, kind: str) -> str:
    """NAME of a written pair: sorts by seed, and says the edit kind for per-kind evaluation."""
    return f"seed{seed:08d}_{kind}"


def write_image_pairs(
    folder: str | os.PathLike,
    seeds: Sequence[int],
    *,
    size: int = 32,
    edit_kinds: Sequence[str] = EDIT_KINDS,
) -> list[str]:
    """Write image_pair(seed) for every seed as NAME_src.png, NAME_tgt.png and NAME.txt (the instruction) in
    ``folder``, the layout imvideoedit_core.train.pair_scan reads; returns the NAMEs in order. Use
    split_seeds("train", ...)
    for training data."""
    seeds = [_check_seed(seed) for seed in seeds]
    if not seeds:
        raise ValueError("seeds is empty: pass the seeds to write, e.g. split_seeds('train', count=1000)")
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds repeat: every seed gives one pair, pass each seed once")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for seed in seeds:
        example = image_pair(seed, size=size, edit_kinds=edit_kinds)
        name = pair_name(seed, example.kind)
        _write_png(folder / f"{name}_src.png", example.source_frames[0])
        _write_png(folder / f"{name}_tgt.png", example.target_frames[0])
        (folder / f"{name}.txt").write_text(example.instruction + "\n", encoding="utf-8")
        names.append(name)
    return names


def _write_png(path: Path, image: torch.Tensor) -> None:
    """[H, W, 3] RGB float in 0..1 -> an 8-bit PNG (written from bytes, so non-ASCII paths work)."""
    levels = torch.round(image.clamp(0.0, 1.0) * 255.0).to(torch.uint8).numpy()  # [H, W, 3] RGB
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(levels[:, :, ::-1]))  # RGB -> BGR
    if not ok:
        raise OSError(f"OpenCV could not encode {path.name} as PNG")
    encoded.tofile(path)


# ----------------------------------------------------------------------------------------------------------------
# Train / eval splits


def split_of(seed: int) -> str:
    """"eval" for EVAL_PERCENT percent of seeds, chosen by a hash of the seed, else "train".

    The split is a pure function of the seed, so any range of seeds can be used for training as long as the
    training loop skips eval seeds (or draws them from split_seeds("train", ...)): no held-out scene is trained on.
    """
    seed = _check_seed(seed)
    digest = hashlib.blake2b(str(seed).encode("ascii"), digest_size=8, person=b"toyworld").digest()
    return "eval" if int.from_bytes(digest, "little") % 100 < EVAL_PERCENT else "train"


def split_seeds(split: str, *, count: int, start: int = 0) -> list[int]:
    """The first ``count`` seeds >= ``start`` that belong to ``split`` ("train" or "eval")."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count={count!r} must be a non-negative integer")
    seeds: list[int] = []
    seed = _check_seed(start)
    while len(seeds) < count:
        if split_of(seed) == split:
            seeds.append(seed)
        seed += 1
    return seeds


# ----------------------------------------------------------------------------------------------------------------
# Argument checks


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    return int(seed)


def _as_rng(rng: np.random.Generator | int) -> np.random.Generator:
    """A Generator as it is, or a new one from a non-negative integer seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(_check_seed(rng))


def _check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """``kinds`` without repeats, in order; ValueError for an empty or unknown selection."""
    if isinstance(kinds, str):
        raise ValueError(f"kinds={kinds!r} must be a sequence of edit kinds, e.g. ({kinds!r},)")
    unknown = [kind for kind in kinds if kind not in EDIT_KINDS]
    if unknown:
        raise ValueError(f"unknown edit kinds {unknown}: choose from {EDIT_KINDS}")
    if not kinds:
        raise ValueError(f"no edit kinds given: choose at least one of {EDIT_KINDS}")
    return tuple(dict.fromkeys(kinds))


def _check_generator_args(*, size: int, frames: int, max_objects: int) -> None:
    """ValueErrors for random-scene arguments outside the supported ranges."""
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE \
            or size % SIZE_MULTIPLE:
        supported = list(range(MIN_SIZE, MAX_SIZE + 1, SIZE_MULTIPLE))
        raise ValueError(f"size={size!r} is not supported: use a frame side in {supported} (multiples of "
                         f"{SIZE_MULTIPLE}, which the VAE and patch embedding need)")
    if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"frames={frames!r} must be an integer in 1..{MAX_FRAMES} (1 for image pairs)")
    if isinstance(max_objects, bool) or not isinstance(max_objects, int) or not 1 <= max_objects <= MAX_OBJECTS:
        raise ValueError(f"max_objects={max_objects!r} must be an integer in 1..{MAX_OBJECTS}")


def _check_speed(max_speed: float, *, size: int) -> float:
    if not (isinstance(max_speed, (int, float)) and 0 < max_speed <= size / 4):
        raise ValueError(f"max_speed={max_speed!r} must be in (0, {size / 4}] px per frame for size {size}; "
                         f"the default is {default_max_speed(size)}")
    return float(max_speed)
