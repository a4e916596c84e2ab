"""Per-clip adaptation on one edited keyframe (LoRA-Edit, Via): fine-tune a copy of the adapter, then edit the video.

The user edits the first frame (or any keyframe) with any image tool. A copy of the adapter is trained for a few
hundred steps on that (source keyframe, edited keyframe, instruction) pair and on random affine augmentations of
both images (the same transform on both), with the ordinary training loop, ``training.train_adapter``. The tuned
copy then edits the whole clip like any adapter; the base adapter is never modified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
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
                    video_size: tuple[int, int] | None = None, multiple: int = SIZE_MULTIPLE) -> None:
    """ValueErrors for keyframe pairs that cannot be tuned on: one pair [H, W, 3] or K pairs [K, H, W, 3], all of
    one size (that of the video), with sides a multiple of ``multiple`` (16 for the Wan 2.1 VAE, 32 for Wan 2.2's)."""
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
    if h % multiple or w % multiple:
        raise ValueError(f"the keyframes are {w}x{h}; width and height must be multiples of {multiple} "
                         f"(the VAE and patch embedding): load the video with resize_to_multiple={multiple} and edit "
                         "that frame")


class KeyframePairs:
    """``count`` augmented copies of K keyframe pairs as ``ImagePair``s; indices 0..K-1 are the pairs themselves.

    Index i uses keyframe i mod K; index i >= K is warped with ``draw_affine(limits, ...)`` seeded by (seed, i),
    so the set is the same for a seed; with ``limits=None`` every index is its pair itself. source, edited:
    [H, W, 3] (one keyframe) or [K, H, W, 3].

    ``copies`` (frames of the source clip, [N, H, W, 3]) adds ``copy_count`` copy pairs after the keyframe pairs:
    a frame as both source and target, with the empty instruction (augmented like the keyframes). They teach a
    fresh adapter to carry the source across where the instruction asks for nothing, which is also the empty
    branch of classifier-free guidance.
    """

    def __init__(self, source: torch.Tensor, edited: torch.Tensor, instruction: str, *, count: int,
                 limits: AffineLimits | None, seed: int, copies: torch.Tensor | None = None, copy_count: int = 0):
        self.source = as_keyframes(source, "source keyframe").float()  # [K, H, W, 3]
        self.edited = as_keyframes(edited, "edited keyframe").float()
        if count < self.source.shape[0]:
            raise ValueError(f"count must be >= the {self.source.shape[0]} keyframes, got {count}")
        if not instruction.strip():
            raise ValueError("the instruction is empty: write what the edit does, e.g. 'make the car red'")
        self.instruction, self.count, self.limits, self.seed = instruction.strip(), count, limits, seed
        self.copies = None if copies is None or copy_count == 0 else as_keyframes(copies, "clip frames").float()
        self.copy_count = copy_count if self.copies is not None else 0
        if self.copies is not None and self.copies.shape[1:3] != self.source.shape[1:3]:
            raise ValueError(f"the clip's frames are {self.copies.shape[2]}x{self.copies.shape[1]} but the keyframes "
                             f"{self.source.shape[2]}x{self.source.shape[1]}: give the frames the keyframe came from")

    def __len__(self) -> int:
        return self.count + self.copy_count

    def params(self, index: int) -> AffineParams:
        if index < self.source.shape[0] or self.limits is None:
            return AffineParams()
        return draw_affine(self.limits, seed=self.seed * 1_000_003 + index)

    def __getitem__(self, index: int) -> ImagePair:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range({len(self)})")
        if index >= self.count:  # a copy pair: one clip frame, twice, with the empty instruction
            frame = self.copies[(index - self.count) % self.copies.shape[0]]
            warped = affine_warp(frame[None], self.params(index))[0]
            return ImagePair(name=f"copy{index - self.count:04d}", source=warped, target=warped, instruction="")
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
    copy_share: float = 0.0       # share of the pairs that are copy pairs of the clip's frames (KeyframePairs)
    sigma_range: tuple[float, float] = (0.0, 1.0)  # the noise levels tuned on (an A14B expert's own range)
    # cheaper steps first: this many steps on the keyframes scaled by ``low_res_scale`` (sides rounded to the size
    # multiple; PU-SDA's 2D rotary positions fix no size), then ``steps`` at full size
    low_res_steps: int = 0
    low_res_scale: float = 0.5

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.low_res_steps < 0 or not 0 < self.low_res_scale < 1:
            raise ValueError(f"low_res_steps must be >= 0 and low_res_scale in (0, 1), got {self.low_res_steps} "
                             f"and {self.low_res_scale}")
        if not 0 <= self.copy_share < 1:
            raise ValueError(f"copy_share must be in [0, 1), got {self.copy_share}")
        if self.batch_size < 1 or self.variants < self.batch_size:
            raise ValueError(f"need 1 <= batch_size <= variants, got batch_size={self.batch_size}, "
                             f"variants={self.variants}")

    @property
    def copy_count(self) -> int:
        """Copy pairs added to the ``variants`` keyframe pairs so that they make ``copy_share`` of the whole."""
        return round(self.variants * self.copy_share / (1 - self.copy_share))

    def train_config(self, *, steps: int | None = None, seed_offset: int = 0) -> TrainConfig:
        return TrainConfig(steps=self.steps if steps is None else steps, batch_size=self.batch_size, lr=self.lr,
                           context_dropout=self.context_dropout, seed=self.seed + seed_offset,
                           gradient_checkpointing=self.gradient_checkpointing, sigma_range=self.sigma_range)


@dataclass(frozen=True)
class StartDefaults:
    """The tuning length and learning rate that suit one start (trained adapter or a fresh one)."""

    steps: int
    lr: float
    low_res_steps: int = 0   # steps at KeyframeTuning's low_res_scale (half size) before ``steps`` at full size

    @property
    def full_steps_equivalent(self) -> float:
        """The compute in full-size steps: a low-resolution step counts its share of the pixels."""
        return self.steps + self.low_res_steps * KeyframeTuning.low_res_scale ** 2


# Measured on ToyWorld (docs/decisions.md, "Keyframe tuning"): a trained adapter needs a few hundred gentle steps;
# a fresh one (no adapter file; the copy start) a 3x higher rate, and the cheapest measured recipe that reaches the
# trained start's 300-step result (27.9 dB) is 800 steps at half size, then 100 at full size: 28.1 dB for 300
# full-size-step equivalents (1000 full-size steps: 29.6 dB; the zero start needed 1500 for 28.8 dB).
TRAINED_START = StartDefaults(steps=300, lr=3e-4)
ZERO_START = StartDefaults(steps=100, lr=1e-3, low_res_steps=800)


def start_defaults(*, zero_start: bool) -> StartDefaults:
    return ZERO_START if zero_start else TRAINED_START


def zero_start_adapter(backbone: BackboneConfig, *, seed: int = 0) -> ImVideoEditAdapter:
    """A freshly built adapter sized for ``backbone`` (as a general adapter would be trained), to tune on a
    keyframe when no adapter file exists. Its output starts at zero, so untuned it leaves the backbone as it is."""
    return build_adapter(adapter_config_for(backbone), backbone, seed=seed)


@dataclass(frozen=True)
class CopyStart:
    """How a copy start sets a fresh adapter (``copy_start_adapter``).

    ``sharpness``: the norm weight of the position-only queries and keys; at 6 a toy adapter's target token puts
    nearly all its attention on the source token at its own position. ``pull``: the update's gain on the
    normalised source-target difference (0.25: the best untuned PSNR against the source on ToyWorld, 10.3 dB
    against the zero start's 7.8 dB, of 0.1-3 tried; docs/decisions.md). ``gate_bias``: the gate's time bias
    (sigmoid(-4) = 0.018: the gate starts nearly closed, so the update acts everywhere)."""

    sharpness: float = 6.0
    pull: float = 0.25
    gate_bias: float = -4.0


@torch.no_grad()
def copy_start_adapter(backbone: BackboneConfig, *, seed: int = 0, start: CopyStart = CopyStart()
                       ) -> ImVideoEditAdapter:
    """A fresh adapter whose update already pulls every target token towards the source token at its position.

    Per block: queries and keys start position-only (zero weights, a constant bias, sharp norms), so the rotary
    2D positions alone align target token i with source token i; values are an orthonormal projection ``V`` and
    the update ``Wo = pull * V^T``, so ``Wo((1 - g) d) ~ pull * V^T V (n(s_i) - n(x_i))``; the gate starts nearly
    closed everywhere (its token term at zero). Every weight stays trainable and receives gradients, so tuning can
    make the attention content-aware and teach the gate where to open."""
    adapter = zero_start_adapter(backbone, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    for block in adapter.blocks.values():
        inner, dim = block.v.weight.shape
        for lin, norm in ((block.q, block.norm_q), (block.k, block.norm_k)):
            lin.weight.zero_()
            lin.bias.fill_(1.0)
            norm.weight.fill_(start.sharpness)
        basis, _ = torch.linalg.qr(torch.randn(dim, inner, generator=gen, dtype=torch.float64))  # (dim, inner)
        block.v.weight.copy_(basis.T)
        block.v.bias.zero_()
        block.o.weight.copy_(start.pull * basis)
        block.gate.token_proj.weight.zero_()  # no token term yet: the gate is sigmoid(gate_bias) everywhere
        block.gate.token_proj.bias.zero_()
        block.gate.time_bias[2].bias.fill_(start.gate_bias)
    return adapter


@dataclass
class TuneResult:
    adapter: ImVideoEditAdapter   # the tuned copy (eval mode, no gradients)
    losses: list[float]           # one per step (low-resolution steps first)
    steps_done: int
    full_steps_equivalent: float = 0.0  # the compute in full-size steps: a low-resolution step counts its pixels


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
                     video_size: tuple[int, int] | None = None, clip_frames: torch.Tensor | None = None,
                     multiple: int = SIZE_MULTIPLE, callback: Callable[[TrainProgress], None] | None = None,
                     cancel: Callable[[], bool] | None = None) -> TuneResult:
    """Fine-tune a copy of ``adapter`` on keyframe pairs (one [H, W, 3] or K [K, H, W, 3], in 0..1, e.g. the
    first, middle and last frame each edited); ``adapter`` is untouched.

    ``bind``: attaches the copy to the frozen backbone, e.g. ``functools.partial(TwoStreamRunner, backbone)``
    for the core's own backbone, or ComfyUI's loaded MODEL (``nodes/host.py``).
    ``encode_images``: (B, 3, H, W) -> (B, C, 1, h, w) latents; ``encode_text``: list of B strings -> contexts.
    ``video_size`` (height, width), if given, must be the keyframes' size. ``clip_frames`` [N, H, W, 3]: the
    source clip's frames for the copy pairs of ``config.copy_share`` (default: the source keyframes).
    ``multiple``: what the sides must be a multiple of (16: the Wan 2.1 VAE, 32: Wan 2.2's), also for the
    low-resolution phase (``config.low_res_steps`` at ``config.low_res_scale``, then ``config.steps`` at full
    size; the result counts both in full-size-step equivalents). Raises ``TrainingCancelled`` if ``cancel`` says
    so between steps.
    """
    check_keyframes(source, edited, video_size=video_size, multiple=multiple)
    clip = source if clip_frames is None else clip_frames
    tuned = copy_adapter(adapter)
    model = bind(tuned)
    tuned.to(model.device)
    full = tuple(as_keyframes(source, "source keyframe").shape[1:3])
    phases = [(config.low_res_steps, scaled_size(full, config.low_res_scale, multiple)), (config.steps, full)]
    losses, done, equivalent = [], 0, 0.0
    for index, (steps, size) in enumerate(p for p in phases if p[0] > 0):
        pairs = KeyframePairs(*(resize_frames(x, size) for x in (source, edited)), instruction,
                              count=config.variants, limits=config.limits if config.augment else None,
                              seed=config.seed, copies=resize_frames(clip, size), copy_count=config.copy_count)
        data = EncodedPairs(pairs, encode_images=encode_images, encode_text=encode_text,
                            batch_size=config.batch_size, seed=config.seed + index, device=model.device)
        offset = done
        result: TrainResult = train_adapter(
            model, data, config.train_config(steps=steps, seed_offset=index), cancel=cancel,
            callback=None if callback is None else lambda p: callback(replace(
                p, step=p.step + offset, total=config.low_res_steps + config.steps)))
        losses += result.losses
        done += result.steps_done
        equivalent += result.steps_done * (size[0] * size[1]) / (full[0] * full[1])
    return TuneResult(adapter=tuned.requires_grad_(False).eval(), losses=losses, steps_done=done,
                      full_steps_equivalent=equivalent)


def scaled_size(size: tuple[int, int], scale: float, multiple: int) -> tuple[int, int]:
    """(height, width) scaled by ``scale``, each side rounded to a multiple of ``multiple`` (at least one)."""
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in size)


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[H, W, 3] or [K, H, W, 3] in 0..1 -> [K, h, w, 3] at ``size`` (bilinear, antialiased); as is if it fits."""
    frames = as_keyframes(frames, "frames").float()
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    return F.interpolate(frames.movedim(-1, 1), size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=True).movedim(1, -1).clamp(0, 1)
