"""The ToyWorld judge: automatic scores of a video against its scene description, on the paper's evaluation axes.

The paper scores edits with a VLM judge and a user study (instruction adherence, temporal consistency, visual
fidelity). In ToyWorld the scene description says exactly what every frame must show, so the same axes can be
scored exactly. Every score is a share of small pass/fail checks (per frame, or per object and frame), in 0..1:

Edits (:func:`judge_edit`, the video against the example's source and ground-truth target):
    adherence     per frame, the named change happened: the object has the new colour (recolor) or the new shape
                  (reshape: of all shapes drawn on its track, the new one overlaps its pixels best, IoU >= 0.6),
                  it is gone (remove), the background is the new one (background), the frame has the new style
    temporal      per object and pair of consecutive frames: the object's area and its centroid's motion change as
                  they do in the ground truth (identity, size and track stable, moving as in the source)
    fidelity      per frame, the pixels are clean: on the scene's palette (an object colour or the right background
                  pixel) and not an isolated speck, all but 10% of the objects' area + 2 px; and the edges are crisp
                  (pixel-to-pixel steps projected on the truth's at least 0.8 of them)
    preservation  per frame, what the instruction does not name is unchanged: 95% of the pixels outside the edit
                  region match the source (style edits, which own every pixel: the layout of objects against the
                  background matches the target's)

Text-to-video samples (:func:`judge_generation`, a sample against the captioned scene; positions are free):
    present       per object and frame: its colour forms a blob of at least 40% of the object's true area
    shape         per object and frame where it is present and unoccluded: the blob's best-fitting shape is its shape
    stability     mean frame-to-frame change of each object's blob area, relative to its mean area
    background    mean absolute error of the pixels no object covers against the captioned background
    acceleration  mean |c(t+1) - 2 c(t) + c(t-1)| of each object's blob centroid, px (smooth motion is small)
Stability and acceleration are compared with the same statistics of the ground-truth renders of the same captions.

A pixel "has" a colour when every channel is within ``COLOUR_TOLERANCE`` of it; the palette's colours are at least
0.31 apart in some channel, so the tolerance never confuses two of them. Validated in tests/test_toyworld_judge.py:
ground truth scores 1 on every axis, and broken videos (wrong colour, a missing object, flicker, blur, a shifted
frame, a swapped shape) lose on the axis that names their fault.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np
import torch

from . import world

COLOUR_TOLERANCE = 0.15
EDIT_AXES = ("adherence", "temporal", "fidelity", "preservation")
SPECKS = (0.1, 2)           # fidelity: a frame may have 10% of its objects' area + 2 px that are not clean
SHARPNESS = 0.8             # fidelity: edges at least this sharp relative to the truth's
PRESERVED_SHARE = 0.95      # preservation: share of unnamed pixels that must match the source
COLOUR_SHARE = 0.6          # recolor: share of the object's pixels that must have the new colour
SHAPE_IOU = 0.6             # reshape: IoU of the object's pixels with its new shape
REMOVED_SHARE = 0.2         # remove: at most this share of the object's old area may keep its colour
STYLE_SHARE = 0.9           # background, style: share of the pixels that must match the target
AREA_SLACK, TRACK_SLACK = 0.25, 1.5  # temporal: area change within 25% of the mean area (+2 px); motion 1.5 px
PRESENT_SHARE = 0.4         # generation: a blob of at least this share of the object's true area


# -- pixels and colours --

def styled_colour(name: str, style: str = world.NO_STYLE) -> np.ndarray:
    """An object colour after the scene's style: float [3] in 0..1."""
    rgb = torch.tensor(world.COLOURS[name], dtype=torch.float32)[None] / 255.0  # [1, 3]
    return (rgb if style == world.NO_STYLE else world.apply_style(rgb, style))[0].numpy()


def scene_background(scene: world.Scene) -> np.ndarray:
    """The scene's background after its style: [H, W, 3]."""
    image = torch.from_numpy(world.background_image(scene.background, height=scene.height, width=scene.width))
    return (image if scene.style == world.NO_STYLE else world.apply_style(image, scene.style)).numpy()


def matches(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """[..., H, W, 3] against a colour [3] or an image that broadcasts -> [..., H, W] bool."""
    return np.all(np.abs(frames - reference) <= COLOUR_TOLERANCE, axis=-1)


def _as_numpy(video: torch.Tensor | np.ndarray) -> np.ndarray:
    frames = video.detach().cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"a video is [T, H, W, 3] in 0..1, got shape {frames.shape}")
    return frames.astype(np.float32)


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """[T, H, W] or [H, W] bool grown by ``pixels`` (a square neighbourhood)."""
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    if mask.ndim == 2:
        return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    return np.stack([_dilate(m, pixels) for m in mask])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _centroid(mask: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()]) if len(xs) else None


# -- the edit judge --

@dataclass(frozen=True)
class EditScores:
    adherence: float
    temporal: float
    fidelity: float
    preservation: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def judge_edit(video: torch.Tensor | np.ndarray, example: world.EditExample) -> EditScores:
    """Score an edited video [T, H, W, 3] against ``example`` (its source, edit and ground truth)."""
    frames = _as_numpy(video)
    target = world.render(example.target_scene)
    if frames.shape != tuple(target.frames.shape):
        raise ValueError(f"the video has shape {frames.shape}, the example's frames {tuple(target.frames.shape)}")
    truth, source = target.frames.numpy(), example.source_frames.numpy()
    return EditScores(adherence=_adherence(frames, example, truth, target),
                      temporal=_temporal(frames, truth, example.target_scene, target.masks.numpy()),
                      fidelity=_fidelity(frames, truth, example.target_scene, target.masks.numpy()),
                      preservation=_preservation(frames, example, truth, source))


def _adherence(frames: np.ndarray, example: world.EditExample, truth: np.ndarray, target: world.RenderResult) -> float:
    edit, scene = example.edit, example.target_scene
    if edit.kind in ("background", "style"):
        region = ~target.masks.numpy().any(axis=0) if edit.kind == "background" else np.ones(frames.shape[:3], bool)
        ok = [matches(f, t)[r].mean() >= STYLE_SHARE if r.any() else True for f, t, r in zip(frames, truth, region)]
        return float(np.mean(ok))
    old = example.source_scene.objects[edit.target]
    if edit.kind == "remove":
        hits = matches(frames, styled_colour(old.colour, scene.style))            # [T, H, W]
        area = world.render(example.source_scene).masks[edit.target].numpy().sum(axis=(1, 2))  # [T]
        return float(np.mean(hits.sum(axis=(1, 2)) <= REMOVED_SHARE * area))
    new_mask = target.masks[edit.target].numpy()                                 # [T, H, W]
    if edit.kind == "recolor":
        hits = matches(frames, styled_colour(edit.value, scene.style))
        return float(np.mean([h[m].mean() >= COLOUR_SHARE for h, m in zip(hits, new_mask)]))
    hits = matches(frames, styled_colour(old.colour, scene.style))               # reshape
    candidates = _visible_shapes(scene, edit.target)                              # shape -> [T, H, W]
    ok = []
    for t, h in enumerate(hits):
        fits = {shape: _iou(h, mask[t]) for shape, mask in candidates.items()}
        best = max(fits.values())
        ok.append(fits[edit.value] >= SHAPE_IOU and fits[edit.value] == best)
    return float(np.mean(ok))


def _visible_shapes(scene: world.Scene, index: int) -> dict[str, np.ndarray]:
    """Object ``index`` drawn as each shape on its own track, minus what the objects in front cover."""
    coverage = world.object_coverage(scene)                                       # [N, T, H, W]
    in_front = coverage[index + 1:].any(axis=0)                                   # [T, H, W]
    masks = {}
    for shape in world.SHAPES:
        objects = list(scene.objects)
        objects[index] = replace(objects[index], shape=shape)
        masks[shape] = world.object_coverage(replace(scene, objects=tuple(objects)))[index] & ~in_front
    return masks


def _object_track(frames: np.ndarray, colour: np.ndarray, near: np.ndarray):
    """Area [T] and centroids (list of [2] or None) of the pixels of ``colour`` near the object's true place."""
    hits = matches(frames, colour) & near                                        # [T, H, W]
    return hits.sum(axis=(1, 2)).astype(np.float64), [_centroid(h) for h in hits]


def _temporal(frames: np.ndarray, truth: np.ndarray, scene: world.Scene, masks: np.ndarray) -> float:
    """Per object and transition: the change of area and centroid agrees with the same probe on the truth."""
    ok = []
    for index, obj in enumerate(scene.objects):
        colour, near = styled_colour(obj.colour, scene.style), _dilate(masks[index], 2)
        area, centres = _object_track(frames, colour, near)
        true_area, true_centres = _object_track(truth, colour, near)
        slack = AREA_SLACK * true_area.mean() + 2
        for t in range(len(frames) - 1):
            if true_centres[t] is None or true_centres[t + 1] is None:
                continue  # the object is hidden in the truth: nothing to be consistent with
            if centres[t] is None or centres[t + 1] is None:
                ok.append(False)
                continue
            area_ok = abs((area[t + 1] - area[t]) - (true_area[t + 1] - true_area[t])) <= slack
            motion = (centres[t + 1] - centres[t]) - (true_centres[t + 1] - true_centres[t])
            ok.append(bool(area_ok and np.abs(motion).max() <= TRACK_SLACK))
    return float(np.mean(ok)) if ok else 1.0


def clean_pixels(frames: np.ndarray, scene: world.Scene) -> np.ndarray:
    """[T, H, W] bool: the pixel is the right background, or an object colour of the scene that is not a speck."""
    on_background = matches(frames, scene_background(scene))
    clean = on_background.copy()
    for obj in scene.objects:
        hits = matches(frames, styled_colour(obj.colour, scene.style)) & ~on_background
        neighbours = np.zeros_like(hits)
        neighbours[:, 1:] |= hits[:, :-1]
        neighbours[:, :-1] |= hits[:, 1:]
        neighbours[:, :, 1:] |= hits[:, :, :-1]
        neighbours[:, :, :-1] |= hits[:, :, 1:]
        clean |= hits & neighbours  # a pixel of an object colour with a 4-neighbour of the same colour
    return clean


def edge_sharpness(frames: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """[T]: the frames' pixel-to-pixel steps projected on the truth's, 1 for the truth, about 0.5 after a blur."""
    def steps(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.diff(v, axis=1), np.diff(v, axis=2)                           # [T, H-1, W, 3], [T, H, W-1, 3]
    dot = sum((a * b).sum(axis=(1, 2, 3)) for a, b in zip(steps(frames), steps(truth)))
    norm = sum((b * b).sum(axis=(1, 2, 3)) for b in steps(truth))
    return np.where(norm > 0, dot / np.maximum(norm, 1e-12), 1.0)


def _fidelity(frames: np.ndarray, truth: np.ndarray, scene: world.Scene, masks: np.ndarray) -> float:
    unclean = (~clean_pixels(frames, scene)).sum(axis=(1, 2))                    # [T]
    allowed = SPECKS[0] * masks.any(axis=0).sum(axis=(1, 2)) + SPECKS[1]         # [T]
    return float(np.mean((unclean <= allowed) & (edge_sharpness(frames, truth) >= SHARPNESS)))


def _preservation(frames: np.ndarray, example: world.EditExample, truth: np.ndarray, source: np.ndarray) -> float:
    if example.kind == "style":  # everything is the edit's; the layout (objects against background) must stay
        background = scene_background(example.target_scene)
        layout, true_layout = ~matches(frames, background), ~matches(truth, background)
        return float(np.mean([_iou(a, b) >= 0.8 for a, b in zip(layout, true_layout)]))
    outside = example.edit_mask.numpy() == 0                                    # [T, H, W]
    same = matches(frames, source)
    return float(np.mean([s[o].mean() >= PRESERVED_SHARE if o.any() else True for s, o in zip(same, outside)]))


# -- the text-to-video judge --

@dataclass(frozen=True)
class GenerationStats:
    """Raw statistics of one sample: sums and counts, so that samples can be pooled before dividing."""

    present: int = 0          # (object, frame) pairs with the object's blob
    pairs: int = 0            # (object, frame) pairs
    shape_right: int = 0      # present, unoccluded pairs whose blob has the object's shape
    shape_judged: int = 0     # present, unoccluded pairs
    area_change: float = 0.0  # sum over objects and transitions of |dA| / mean A
    transitions: int = 0
    background_error: float = 0.0  # sum of |error| over background pixels and channels
    background_values: int = 0
    acceleration: float = 0.0  # sum of |c(t+1) - 2c(t) + c(t-1)| over triples where the object is present
    triples: int = 0

    def __add__(self, other: "GenerationStats") -> "GenerationStats":
        return GenerationStats(**{k: v + getattr(other, k) for k, v in asdict(self).items()})

    def scores(self) -> dict[str, float | None]:
        def ratio(a: float, b: int) -> float | None:
            return a / b if b else None
        return {"present": ratio(self.present, self.pairs), "shape": ratio(self.shape_right, self.shape_judged),
                "stability": ratio(self.area_change, self.transitions),
                "background": ratio(self.background_error, self.background_values),
                "acceleration": ratio(self.acceleration, self.triples)}


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(mask)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def best_shape(blob: np.ndarray) -> str:
    """The shape whose rasterisation (any size, centred on the blob's bounding box) overlaps the blob best."""
    ys, xs = np.nonzero(blob)
    cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
    side = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
    h, w = blob.shape
    fits = {shape: max(_iou(blob, world.shape_mask(shape=shape, size=size, center_x=cx, center_y=cy, height=h,
                                                   width=w)) for size in range(max(3, side - 1), side + 3))
            for shape in world.SHAPES}
    return max(fits, key=fits.get)


def true_areas(scene: world.Scene) -> np.ndarray:
    """Each object's median visible area over the clip, px: [N]."""
    return np.median(world.render(scene).masks.numpy().sum(axis=(2, 3)), axis=1)


def generation_stats(video: torch.Tensor | np.ndarray, scene: world.Scene) -> GenerationStats:
    """Statistics of a text-to-video sample [T, H, W, 3] of ``scene``'s caption (positions and motion are free)."""
    frames = _as_numpy(video)
    colours = [styled_colour(o.colour, scene.style) for o in scene.objects]
    hits = [matches(frames, c) for c in colours]                                  # N x [T, H, W]
    blobs = [np.stack([_largest_blob(h) for h in obj]) for obj in hits]          # N x [T, H, W]
    stats = GenerationStats()
    for index, (obj, blob, area) in enumerate(zip(scene.objects, blobs, true_areas(scene))):
        others = np.zeros(frames.shape[:3], bool)
        for j, h in enumerate(hits):
            if j != index:
                others |= h
        sizes = blob.sum(axis=(1, 2)).astype(np.float64)                          # [T]
        present = sizes >= PRESENT_SHARE * area
        judged = [t for t in range(len(frames)) if present[t] and not (_dilate(blob[t], 1) & others[t]).any()]
        centres = [_centroid(b) if p else None for b, p in zip(blob, present)]
        steps = [np.abs(centres[t + 1] - 2 * centres[t] + centres[t - 1]).max()
                 for t in range(1, len(frames) - 1) if all(c is not None for c in centres[t - 1:t + 2])]
        stats += GenerationStats(
            present=int(present.sum()), pairs=len(frames),
            shape_right=sum(best_shape(blob[t]) == obj.shape for t in judged), shape_judged=len(judged),
            area_change=float(np.abs(np.diff(sizes)).sum() / max(sizes.mean(), 1.0)), transitions=len(frames) - 1,
            acceleration=float(np.sum(steps)), triples=len(steps))
    covered = _dilate(np.any(np.stack(hits), axis=0), 1) if hits else np.zeros(frames.shape[:3], bool)
    error = np.abs(frames - scene_background(scene))[~covered]                   # [pixels, 3]
    return stats + GenerationStats(background_error=float(error.sum()), background_values=int(error.size))
