"""Per-clip adaptation on one edited keyframe (LoRA-Edit, Via): fine-tune a copy of the adapter, then edit the video.

The user edits the first frame (or any keyframe) with any image tool. A copy of the adapter is trained for a few
hundred steps on that (source keyframe, edited keyframe, instruction) pair and on random affine augmentations of
both images (the same transform on both), with the ordinary training loop, ``training.train_adapter``. The tuned
copy then edits the whole clip like any adapter; the base adapter is never modified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..model.adapter import ImVideoEditAdapter, build_adapter
from ..model.config import BackboneConfig, adapter_config_for
from ..model.wan_strides import SIZE_MULTIPLE
from .pair_dataset import ImagePair
from .trainer import AdaptedModel, EncodedPairs, TrainConfig, TrainProgress, TrainResult, train_adapter



@dataclass(frozen=True)
class AffineLimits:
    """How far one random augmentation may go; every draw is uniform within these limits."""

    rotation_deg: float = 5.0          # rotation in [-this, this] degrees
    translate: float = 0.05            # shift in [-this, this] of the image side, per axis
    crop: tuple[float, float] = (0.75, 1.0)  # zoom into a window of this share of the side, resized back
    shear_deg: float = 10.0            # horizontal shear in [-this, this] degrees

    def __post_init__(self) -> None:
        low, high = self.crop
        checks = [(0 <= self.rotation_deg <= 45, f"rotation_deg must be in [0, 45], got {self.rotation_deg}"),
                  (0 <= self.translate <= 0.5, f"translate must be in [0, 0.5] of the side, got {self.translate}"),
                  (0 < low <= high <= 1, f"crop must be (low, high) with 0 < low <= high <= 1, got {self.crop}"),
                  (0 <= self.shear_deg <= 45, f"shear_deg must be in [0, 45], got {self.shear_deg}")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @classmethod
    def none(cls) -> "AffineLimits":
        """Limits that only ever draw the identity."""
        return cls(rotation_deg=0.0, translate=0.0, crop=(1.0, 1.0), shear_deg=0.0)


@dataclass(frozen=True)
class AffineParams:
    """One drawn augmentation; offsets are fractions of the image side."""

    rotation_deg: float = 0.0
    shear_deg: float = 0.0
    crop: float = 1.0        # side of the window zoomed into, as a share of the image side
    offset_x: float = 0.0    # centre of the window (crop position plus translation), share of the width
    offset_y: float = 0.0

    @property
    def is_identity(self) -> bool:
        return self == AffineParams()


def draw_affine(limits: AffineLimits, *, seed: int) -> AffineParams:
    """A random augmentation within ``limits``; the same seed gives the same draw."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(5, generator=gen, dtype=torch.float64).tolist()  # 5 uniforms in [0, 1)
    crop = limits.crop[0] + (limits.crop[1] - limits.crop[0]) * u[2]
    span = (1 - crop) / 2 + limits.translate  # window position inside the image, plus the translation
    return AffineParams(rotation_deg=limits.rotation_deg * (2 * u[0] - 1), shear_deg=limits.shear_deg * (2 * u[1] - 1),
                        crop=crop, offset_x=span * (2 * u[3] - 1), offset_y=span * (2 * u[4] - 1))


def affine_theta(params: AffineParams, *, height: int, width: int) -> torch.Tensor:
    """The (2, 3) matrix of ``F.affine_grid``: output pixel -> input pixel, in normalised [-1, 1] coordinates.

    Built in pixel units (so a rotation stays a rotation on non-square images) and mapped to normalised units.
    """
    a, s = math.radians(params.rotation_deg), math.tan(math.radians(params.shear_deg))
    rotate = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    shear = torch.tensor([[1.0, s], [0.0, 1.0]], dtype=torch.float64)
    linear_px = params.crop * rotate @ shear                                      # (2, 2) in pixel units
    half = torch.tensor([width / 2, height / 2], dtype=torch.float64)             # pixels per normalised unit
    linear = linear_px * half[None, :] / half[:, None]                            # diag(1/half) @ M @ diag(half)
    shift = torch.tensor([2 * params.offset_x, 2 * params.offset_y], dtype=torch.float64)  # side share -> [-1, 1]
    return torch.cat([linear, shift[:, None]], dim=1).float()                      # (2, 3)


def affine_warp(images: torch.Tensor, params: AffineParams) -> torch.Tensor:
    """Apply one augmentation to a batch [N, H, W, C] (ComfyUI IMAGE layout); the identity returns the input."""
    if params.is_identity:
        return images
    n, h, w, _ = images.shape
    theta = affine_theta(params, height=h, width=w).to(images.device)[None].expand(n, 2, 3)  # (N, 2, 3)
    x = images.movedim(-1, 1).float()                                              # [N, H, W, C] -> [N, C, H, W]
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)       # (N, H, W, 2)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.movedim(1, -1).clamp(0, 1).to(images.dtype)                         # [N, C, H, W] -> [N, H, W, C]


def augment_pair(source: torch.Tensor, edited: torch.Tensor, params: AffineParams) -> tuple[torch.Tensor, torch.Tensor]:
    """The same augmentation on both images [H, W, 3] (warped together, as one batch)."""
    both = affine_warp(torch.stack([source, edited]), params)  # [2, H, W, 3]
    return both[0], both[1]


def as_keyframes(images: torch.Tensor, name: str) -> torch.Tensor:
    """One keyframe [H, W, 3] or several [K, H, W, 3] (RGB, any extra channel dropped) -> [K, H, W, 3]."""
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] < 3 or images.shape[0] < 1:
        raise ValueError(f"the {name} must be an RGB image [H, W, 3] or a batch of them [K, H, W, 3], got shape "
                         f"{tuple(images.shape)}")
    return images[..., :3]


def check_keyframes(source: torch.Tensor, edited: torch.Tensor, *,
                    video_size: tuple[int, int] | None = None) -> None:
    """ValueErrors for keyframe pairs that cannot be tuned on: one pair [H, W, 3] or K pairs [K, H, W, 3], all of
    one size (that of the video)."""
    source, edited = as_keyframes(source, "source keyframe"), as_keyframes(edited, "edited keyframe")
    if source.shape[0] != edited.shape[0]:
        raise ValueError(f"{source.shape[0]} source keyframes but {edited.shape[0]} edited keyframes: give one edited "
                         "frame per source frame, in the same order")
    if source.shape[1:3] != edited.shape[1:3]:
        raise ValueError(f"the edited keyframe is {edited.shape[2]}x{edited.shape[1]} but the source keyframe is "
                         f"{source.shape[2]}x{source.shape[1]} (width x height): save the edit at the source "
                         "frame's size, or scale it to that size (e.g. with Upscale Image)")
    h, w = source.shape[1:3]
    if video_size is not None and tuple(video_size) != (h, w):
        raise ValueError(f"the keyframes are {w}x{h} but the video's frames are {video_size[1]}x{video_size[0]} "
                         "(width x height): take the source keyframe from the frames you edit (after any resizing) "
                         "and save the edited keyframe at that size")
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise ValueError(f"the keyframes are {w}x{h}; width and height must be multiples of {SIZE_MULTIPLE} "
                         "(the VAE and patch embedding): load the video with resize_to_multiple=16 and edit that frame")


class KeyframePairs:
    """``count`` augmented copies of K keyframe pairs as ``ImagePair``s; indices 0..K-1 are the pairs themselves.

    Index i uses keyframe i mod K; index i >= K is warped with ``draw_affine(limits, ...)`` seeded by (seed, i),
    so the set is the same for a seed; with ``limits=None`` every index is its pair itself. source, edited:
    [H, W, 3] (one keyframe) or [K, H, W, 3].
    """

    def __init__(self, source: torch.Tensor, edited: torch.Tensor, instruction: str, *, count: int,
                 limits: AffineLimits | None, seed: int):
        self.source = as_keyframes(source, "source keyframe").float()  # [K, H, W, 3]
        self.edited = as_keyframes(edited, "edited keyframe").float()
        if count < self.source.shape[0]:
            raise ValueError(f"count must be >= the {self.source.shape[0]} keyframes, got {count}")
        if not instruction.strip():
            raise ValueError("the instruction is empty: write what the edit does, e.g. 'make the car red'")
        self.instruction, self.count, self.limits, self.seed = instruction.strip(), count, limits, seed

    def __len__(self) -> int:
        return self.count

    def params(self, index: int) -> AffineParams:
        if index < self.source.shape[0] or self.limits is None:
            return AffineParams()
        return draw_affine(self.limits, seed=self.seed * 1_000_003 + index)

    def __getitem__(self, index: int) -> ImagePair:
        if not 0 <= index < self.count:
            raise IndexError(f"index {index} out of range({self.count})")
        k = index % self.source.shape[0]
        source, edited = augment_pair(self.source[k], self.edited[k], self.params(index))
        return ImagePair(name=f"keyframe{index:04d}", source=source, target=edited, instruction=self.instruction)


@dataclass(frozen=True)
class KeyframeTuning:
    """Settings of one per-clip adaptation (defaults chosen on ToyWorld, see docs/toyworld.md)."""

    steps: int = 300
    lr: float = 3e-4
    batch_size: int = 4
    augment: bool = True
    limits: AffineLimits = field(default_factory=AffineLimits)
    variants: int = 64            # augmented pairs (index 0 un-augmented); without augment, copies of the pair
    context_dropout: float = 0.1  # keeps the empty-instruction branch trained for guidance
    seed: int = 0
    gradient_checkpointing: bool = False  # recompute the frozen blocks in backward (less memory)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1 or self.variants < self.batch_size:
            raise ValueError(f"need 1 <= batch_size <= variants, got batch_size={self.batch_size}, "
                             f"variants={self.variants}")

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                           context_dropout=self.context_dropout, seed=self.seed,
                           gradient_checkpointing=self.gradient_checkpointing)


@dataclass(frozen=True)
class StartDefaults:
    """The tuning length and learning rate that suit one start (trained adapter or a fresh one)."""

    steps: int
    lr: float


# Measured on ToyWorld (docs/decisions.md, "Keyframe tuning"): a trained adapter needs a few hundred gentle steps;
# a fresh one (zero start, no adapter file) needs a 3x higher rate and about 5x the steps to reach the same result.
TRAINED_START = StartDefaults(steps=300, lr=3e-4)
ZERO_START = StartDefaults(steps=1500, lr=1e-3)


def start_defaults(*, zero_start: bool) -> StartDefaults:
    return ZERO_START if zero_start else TRAINED_START


def zero_start_adapter(backbone: BackboneConfig, *, seed: int = 0) -> ImVideoEditAdapter:
    """A freshly built adapter sized for ``backbone`` (as a general adapter would be trained), to tune on a
    keyframe when no adapter file exists. Its output starts at zero, so untuned it leaves the backbone as it is."""
    return build_adapter(adapter_config_for(backbone), backbone, seed=seed)


@dataclass
class TuneResult:
    adapter: ImVideoEditAdapter   # the tuned copy (eval mode, no gradients)
    losses: list[float]           # one per step
    steps_done: int


def copy_adapter(adapter: ImVideoEditAdapter, *, device=None) -> ImVideoEditAdapter:
    """A fresh float32 adapter with the same configuration and weights (trainable copies stay float32)."""
    first = next(adapter.parameters())
    copy = ImVideoEditAdapter(adapter.config, adapter.backbone_config, device=device or first.device,
                              dtype=torch.float32)
    copy.load_state_dict({k: v.detach().clone() for k, v in adapter.state_dict().items()})
    return copy


def tune_on_keyframe(bind: Callable[[ImVideoEditAdapter], AdaptedModel], adapter: ImVideoEditAdapter, *,
                     source: torch.Tensor, edited: torch.Tensor, instruction: str,
                     encode_images: Callable[[torch.Tensor], torch.Tensor],
                     encode_text: Callable[[list[str]], torch.Tensor], config: KeyframeTuning = KeyframeTuning(),
                     video_size: tuple[int, int] | None = None,
                     callback: Callable[[TrainProgress], None] | None = None,
                     cancel: Callable[[], bool] | None = None) -> TuneResult:
    """Fine-tune a copy of ``adapter`` on keyframe pairs (one [H, W, 3] or K [K, H, W, 3], in 0..1, e.g. the
    first, middle and last frame each edited); ``adapter`` is untouched.

    ``bind``: attaches the copy to the frozen backbone, e.g. ``functools.partial(TwoStreamRunner, backbone)``
    for the core's own backbone, or ComfyUI's loaded MODEL (``nodes/host.py``).
    ``encode_images``: (B, 3, H, W) -> (B, C, 1, h, w) latents; ``encode_text``: list of B strings -> contexts.
    ``video_size`` (height, width), if given, must be the keyframes' size. Raises ``TrainingCancelled`` if
    ``cancel`` says so between steps.
    """
    check_keyframes(source, edited, video_size=video_size)
    pairs = KeyframePairs(source, edited, instruction, count=config.variants,
                          limits=config.limits if config.augment else None, seed=config.seed)
    tuned = copy_adapter(adapter)
    model = bind(tuned)
    tuned.to(model.device)
    data = EncodedPairs(pairs, encode_images=encode_images, encode_text=encode_text, batch_size=config.batch_size,
                        seed=config.seed, device=model.device)
    result: TrainResult = train_adapter(model, data, config.train_config(), callback=callback, cancel=cancel)
    return TuneResult(adapter=tuned.requires_grad_(False).eval(), losses=result.losses, steps_done=result.steps_done)
