"""Edit-quality metrics that need no downloaded weights.

Fidelity: PSNR and SSIM against a ground-truth target. Preservation: PSNR against the source outside the edit
mask. Temporal consistency: warp error with OpenCV DIS optical flow and a forward-backward occlusion check,
flicker, and motion preservation (flow of the edit against flow of the source). ``evaluate_edit`` fills every
metric that its inputs allow.

Layouts (ComfyUI's)::

    video   torch.Tensor [T, H, W, 3], float in 0..1. An image [H, W, 3] counts as a video of one frame.
    mask    torch.Tensor [T, H, W] or [H, W], float (or bool) in 0..1, 1 = inside the edit region.
            [H, W] and [1, H, W] apply to every frame.
    flow    np.ndarray [H, W, 2], float32, in pixels, channels (dx, dy). "Flow from a to b" means
            a(x) ≈ b(x + flow(x)), OpenCV's convention.

NumPy arrays are accepted wherever a tensor is. The flow helpers (``optical_flow``, ``flow_warp``,
``occlusion_mask``) return NumPy arrays because OpenCV works in NumPy.

Conventions: every metric returns a Python float. PSNR of identical inputs is ``float('inf')`` (no cap). A
metric over an empty region (PSNR outside an all-ones mask, warp error when every pixel is occluded) is
``float('nan')``. Float64 inputs are computed in float64 (so a constant offset of 0.1 gives 20 dB to 1e-12),
everything else in float32 (PSNR always accumulates its squared error in float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

Video = Union[torch.Tensor, np.ndarray]  # [T, H, W, 3] or [H, W, 3], float in 0..1

VALUE_TOLERANCE = 1e-3  # inputs may overshoot 0..1 by this much (round-off from a decoder) before we refuse
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights of cv2.COLOR_RGB2GRAY

SSIM_WINDOW = 11  # Gaussian window of Wang et al. 2004
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM  # patch 12, finest pyramid level 1
FLOW_MIN_SIDE = 72  # frames with a shorter side are upsampled before DIS (see optical_flow)
FB_ALPHA1 = 0.01  # forward-backward check of Sundaram et al. 2010: |fw + bw|^2 < a1 (|fw|^2 + |bw|^2) + a2
FB_ALPHA2 = 0.5


# ----------------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------------


def _as_tensor(x: Video, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, torch.Tensor):
        return x.detach()
    raise TypeError(f"{name} must be a torch.Tensor or numpy array; got {type(x).__name__}")


def _layout_hint(shape: tuple[int, ...]) -> str:
    if len(shape) in (3, 4) and shape[-3] == 3:
        order = "(1, 2, 0)" if len(shape) == 3 else "(0, 2, 3, 1)"
        return f"it looks channel-first; use x.permute{order}"
    if shape[-1] == 4:
        return "it has 4 channels (RGBA?); drop alpha with x[..., :3]"
    if shape[-1] == 1:
        return "it has 1 channel; repeat it to RGB with x.expand(*x.shape[:-1], 3)"
    return "ComfyUI IMAGE is channel-last RGB"


def _check_range(x: torch.Tensor, name: str) -> None:
    lo, hi = (float(v) for v in x.aminmax())  # NaN anywhere makes both NaN
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or inf; metrics need finite values in 0..1")
    if lo >= -VALUE_TOLERANCE and hi <= 1 + VALUE_TOLERANCE:
        return
    if hi > 2:
        hint = "it looks like 0..255; divide by 255"
    elif lo < -0.5:
        hint = "it looks like -1..1; map it with (x + 1) / 2"
    else:
        hint = "clamp it with x.clamp(0, 1)"
    raise ValueError(f"{name} must hold values in 0..1; got min {lo:.4g}, max {hi:.4g}: {hint}")


def _as_video(x: Video, name: str) -> torch.Tensor:
    """Validate a video or image and return it as a float tensor [T, H, W, 3] (float64 kept, else float32)."""
    x = _as_tensor(x, name)
    if x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise ValueError(
            f"{name} must be a video [T, H, W, 3] or an image [H, W, 3] (RGB, channel-last); "
            f"got shape {tuple(x.shape)}: {_layout_hint(tuple(x.shape))}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be float in 0..1; got dtype {x.dtype}: use x.float() / 255 for 8-bit frames")
    _check_range(x, name)
    if x.ndim == 3:
        x = x.unsqueeze(0)  # [H, W, 3] -> [1, H, W, 3]
    return x if x.dtype == torch.float64 else x.float()


def _as_image(x: Video, name: str) -> torch.Tensor:
    """Validate one frame and return it as a float tensor [H, W, 3]."""
    if isinstance(x, (torch.Tensor, np.ndarray)) and x.ndim == 4:
        raise ValueError(f"{name} must be one frame [H, W, 3]; got a video of shape {tuple(x.shape)}: pass video[t]")
    return _as_video(x, name)[0]


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape [T, H, W, 3]; got {tuple(a.shape)} and "
            f"{tuple(b.shape)}: resize or trim one of them"
        )


def _require_frames(video: torch.Tensor, name: str, what: str) -> None:
    if video.shape[0] < 2:
        raise ValueError(
            f"{what} needs at least 2 frames; {name} has {video.shape[0]}: pass a video [T, H, W, 3] with T >= 2"
        )


def _as_mask(mask: Video, video_shape: tuple[int, int, int], name: str = "mask") -> torch.Tensor:
    """Validate a mask against a video's [T, H, W] and return it expanded to float64 [T, H, W]."""
    m = _as_tensor(mask, name)
    t, h, w = video_shape
    if m.ndim == 2:
        m = m.unsqueeze(0)  # [H, W] -> [1, H, W]
    if m.ndim != 3:
        raise ValueError(
            f"{name} must be [T, H, W] or [H, W] (ComfyUI MASK); got shape {tuple(m.shape)}: "
            "for a [T, H, W, 1] or RGB mask pass mask[..., 0]"
        )
    if tuple(m.shape[1:]) != (h, w):
        raise ValueError(f"{name} is {m.shape[1]}x{m.shape[2]} but the frames are {h}x{w}: resize the mask")
    if m.shape[0] not in (1, t):
        raise ValueError(
            f"{name} has {m.shape[0]} frames but the video has {t}: pass one mask per frame, or one [H, W] for all"
        )
    m = m.to(torch.float64)
    _check_range(m, name)
    return m.expand(t, h, w)


# ----------------------------------------------------------------------------------------------------------------
# Fidelity: PSNR and SSIM
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskedPSNR:
    """PSNR in dB inside and outside an edit mask (see ``psnr_masked``)."""

    inside: float
    outside: float


def _check_max_val(max_val: float) -> None:
    if not max_val > 0:
        raise ValueError(f"max_val must be positive (the peak value, 1.0 for 0..1 images); got {max_val}")


def psnr(a: Video, b: Video, *, mask: Video | None = None, max_val: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over a whole video or image, optionally weighted by a mask.

        MSE  = sum_{t,y,x,c} w (a - b)^2 / (3 sum_{t,y,x} w)        w = mask, or 1 without one
        PSNR = 10 log10(max_val^2 / MSE)

    The MSE is pooled over all frames (not an average of per-frame PSNRs). Returns ``float('inf')`` when the MSE
    is 0 (identical inputs) and ``float('nan')`` when the mask has zero weight.
    """
    _check_max_val(max_val)
    a, b = _as_video(a, "a"), _as_video(b, "b")
    _check_same_shape(a, b, "a", "b")
    weight = _as_mask(mask, tuple(a.shape[:3])) if mask is not None else None
    return _psnr(a, b, weight, max_val)


def _psnr(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None, max_val: float) -> float:
    """psnr on checked videos [T, H, W, 3] and a checked weight [T, H, W] (None: all ones)."""
    squared_error = 0.0
    for t in range(a.shape[0]):
        per_pixel = (a[t].double() - b[t].double()).square().sum(-1)  # [H, W], summed over RGB
        if weight is not None:
            per_pixel = per_pixel * weight[t].to(per_pixel.device)
        squared_error += float(per_pixel.sum())
    total_weight = float(weight.sum()) if weight is not None else a[..., 0].numel()
    if total_weight == 0:
        return float("nan")
    mse = squared_error / (3 * total_weight)
    return float("inf") if mse == 0 else 10 * math.log10(max_val**2 / mse)


def psnr_masked(a: Video, b: Video, mask: Video, *, max_val: float = 1.0) -> MaskedPSNR:
    """PSNR inside the mask (weight ``mask``) and outside it (weight ``1 - mask``); see ``psnr``."""
    _check_max_val(max_val)
    a, b = _as_video(a, "a"), _as_video(b, "b")
    _check_same_shape(a, b, "a", "b")
    m = _as_mask(mask, tuple(a.shape[:3]))
    return MaskedPSNR(inside=_psnr(a, b, m, max_val), outside=_psnr(a, b, 1 - m, max_val))


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-x.square() / (2 * sigma**2))
    return kernel / kernel.sum()  # [size]


def _ssim_frame(a: torch.Tensor, b: torch.Tensor, kernel: torch.Tensor, c1: float, c2: float) -> float:
    """Mean SSIM of one RGB frame pair a, b [H, W, 3] with a separable 'valid' Gaussian window [k]."""
    k = kernel.numel()
    stats = torch.stack([a, b, a * a, b * b, a * b])  # [5, H, W, 3]
    stats = stats.permute(0, 3, 1, 2).reshape(1, 15, *a.shape[:2])  # [1, 5*3, H, W]
    stats = F.conv2d(stats, kernel.view(1, 1, k, 1).expand(15, 1, k, 1), groups=15)  # blur along H
    stats = F.conv2d(stats, kernel.view(1, 1, 1, k).expand(15, 1, 1, k), groups=15)  # blur along W
    mu_a, mu_b, e_aa, e_bb, e_ab = stats.view(5, 3, *stats.shape[-2:])  # each [3, H-k+1, W-k+1]
    var_a, var_b, cov = e_aa - mu_a.square(), e_bb - mu_b.square(), e_ab - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    denominator = (mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2)
    return float((numerator / denominator).mean())


def ssim(a: Video, b: Video, *, max_val: float = 1.0) -> float:
    """Mean structural similarity (Wang et al. 2004) over frames, RGB channels and window positions.

    With Gaussian-weighted local means mu, variances var and covariance cov (window 11, sigma 1.5):

        SSIM = (2 mu_a mu_b + C1)(2 cov_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2))
        C1 = (K1 L)^2, C2 = (K2 L)^2, K1 = 0.01, K2 = 0.03, L = max_val

    Computed per RGB channel and averaged (a colour-only edit lowers it; SSIM on luma would miss it), over
    'valid' window positions only (no padding). Frames smaller than 11 px use the largest odd window that fits,
    with the same sigma, down to 1 px (where SSIM reduces to its luminance term). Identical inputs give 1.
    """
    _check_max_val(max_val)
    a, b = _as_video(a, "a"), _as_video(b, "b")
    _check_same_shape(a, b, "a", "b")
    return _ssim(a, b, max_val)


def _ssim(a: torch.Tensor, b: torch.Tensor, max_val: float) -> float:
    """ssim on checked videos [T, H, W, 3]."""
    size = min(SSIM_WINDOW, a.shape[1], a.shape[2])
    size -= 1 - size % 2  # largest odd window that fits
    kernel = _gaussian_kernel(size, SSIM_SIGMA).to(a.device, a.dtype)
    c1, c2 = (SSIM_K1 * max_val) ** 2, (SSIM_K2 * max_val) ** 2
    scores = [_ssim_frame(a[t], b[t], kernel, c1, c2) for t in range(a.shape[0])]
    return sum(scores) / len(scores)


# ----------------------------------------------------------------------------------------------------------------
# Optical flow, warping, occlusion
# ----------------------------------------------------------------------------------------------------------------


def _as_flow(flow: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    if isinstance(flow, torch.Tensor):
        flow = flow.detach().cpu().numpy()
    if not isinstance(flow, np.ndarray) or flow.shape != (*shape, 2):
        got = tuple(flow.shape) if hasattr(flow, "shape") else type(flow).__name__
        raise ValueError(f"{name} must be a flow [H, W, 2] = {[*shape, 2]} (dx, dy in pixels); got {got}")
    if not np.isfinite(flow).all():
        raise ValueError(f"{name} contains NaN or inf")
    return flow.astype(np.float32, copy=False)


def _luma_u8(frame: torch.Tensor, scale: int) -> np.ndarray:
    """BT.601 luma of an RGB frame [H, W, 3] in 0..1, upsampled `scale` times, as uint8 [scale H, scale W]."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=frame.dtype, device=frame.device)
    luma = (frame @ weights).cpu().numpy().astype(np.float32)  # [H, W]
    if scale > 1:
        h, w = luma.shape
        luma = cv2.resize(luma, (w * scale, h * scale), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.rint(luma * 255), 0, 255).astype(np.uint8)


def optical_flow(frame_a: Video, frame_b: Video) -> np.ndarray:
    """Dense optical flow from frame_a to frame_b with OpenCV DIS, preset MEDIUM, on uint8 BT.601 luma.

    Returns flow [H, W, 2] float32 in pixels, (dx, dy), such that frame_a(x) ≈ frame_b(x + flow(x)).

    Small frames: when the shorter side is under 72 px, both frames are upsampled (bilinear) by the smallest
    integer factor k that lifts it to 72 px, and the flow is averaged back over k x k blocks and divided by k.
    At that size DIS runs its normal pyramid; its own small-image fallback picks pyramid levels from the width
    alone and crashes the process on short, wide frames (seen with OpenCV 5.0, e.g. 11x40). On fine textures
    DIS is reliable up to about 3-4 px of motion per frame at 32x32; larger motion on such small frames is not
    recovered.
    """
    a, b = _as_image(frame_a, "frame_a"), _as_image(frame_b, "frame_b")
    if a.shape != b.shape:
        raise ValueError(f"frame_a and frame_b must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    return _dis_flow(a, b)


def _dis_flow(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """optical_flow on frames [H, W, 3] that are already checked."""
    h, w = a.shape[:2]
    scale = math.ceil(FLOW_MIN_SIDE / min(h, w))
    dis = cv2.DISOpticalFlow_create(DIS_PRESET)  # a fresh object per call: DIS keeps per-size state
    flow = dis.calc(_luma_u8(a, scale), _luma_u8(b, scale), None)  # [scale H, scale W, 2]
    if scale > 1:
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA) / scale  # [H, W, 2]
    return flow.astype(np.float32)


def flow_warp(image: Video, flow: np.ndarray) -> np.ndarray:
    """Backward warp: out(x) = image(x + flow(x)), bilinear, with the border replicated outside the frame.

    image is [H, W] or [H, W, C] with any C (frames, flows, masks; values are not range-checked); flow is
    [H, W, 2]. With flow = optical_flow(b, a), flow_warp(a, flow) ≈ b. Returns a float32 array of image's shape.
    """
    img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be [H, W] or [H, W, C]; got shape {img.shape}: warp one frame at a time")
    return _remap(img.astype(np.float32), _as_flow(flow, img.shape[:2], "flow"))


def _remap(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """warp on a float32 image [H, W(, C)] and a float32 flow [H, W, 2] that are already checked."""
    grid_y, grid_x = np.indices(image.shape[:2], dtype=np.float32)  # each [H, W]
    out = cv2.remap(
        image, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return out.reshape(image.shape)  # remap drops a trailing channel axis of size 1


def occlusion_mask(
    flow_fw: np.ndarray, flow_bw: np.ndarray, *, alpha1: float = FB_ALPHA1, alpha2: float = FB_ALPHA2
) -> np.ndarray:
    """Pixels of frame a whose forward flow is not confirmed by the backward flow (Sundaram et al. 2010).

    flow_fw goes from a to b, flow_bw from b to a, both [H, W, 2]. With bw(x) = flow_bw(x + flow_fw(x)) (the
    backward flow read where x lands), x is occluded when

        |fw + bw|^2 > alpha1 (|fw|^2 + |bw|^2) + alpha2,        alpha1 = 0.01, alpha2 = 0.5 (px^2)

    or when x + fw(x) lands outside the frame (content that leaves the view, or, seen from the later frame,
    content that just entered it). Returns bool [H, W], True = occluded.
    """
    fw = _as_flow(flow_fw, np.shape(flow_fw)[:2], "flow_fw")
    bw = _as_flow(flow_bw, fw.shape[:2], "flow_bw")
    return _occluded(fw, bw, alpha1, alpha2)


def _occluded(fw: np.ndarray, bw: np.ndarray, alpha1: float = FB_ALPHA1, alpha2: float = FB_ALPHA2) -> np.ndarray:
    """occlusion_mask on float32 flows [H, W, 2] that are already checked."""
    bw = _remap(bw, fw)  # [H, W, 2], backward flow at x + fw(x)
    fw_sq, bw_sq = np.square(fw).sum(-1), np.square(bw).sum(-1)  # each [H, W]
    inconsistent = np.square(fw + bw).sum(-1) > alpha1 * (fw_sq + bw_sq) + alpha2
    h, w = fw.shape[:2]
    grid_y, grid_x = np.indices((h, w), dtype=np.float32)
    target_x, target_y = grid_x + fw[..., 0], grid_y + fw[..., 1]
    outside = (target_x < 0) | (target_x > w - 1) | (target_y < 0) | (target_y > h - 1)
    return inconsistent | outside


@dataclass(frozen=True)
class VideoFlows:
    """Optical flow between consecutive frames of one video: T frames give T-1 pairs.

    forward[t]:  frame t -> t+1, frame_t(x) ≈ frame_{t+1}(x + forward[t](x)),   [T-1, H, W, 2] float32
    backward[t]: frame t+1 -> t, frame_{t+1}(x) ≈ frame_t(x + backward[t](x)),  [T-1, H, W, 2] float32
    """

    forward: np.ndarray
    backward: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "forward", np.asarray(self.forward, dtype=np.float32))  # cv2.remap needs float32
        object.__setattr__(self, "backward", np.asarray(self.backward, dtype=np.float32))
        if self.forward.ndim != 4 or self.forward.shape[-1] != 2 or self.forward.shape != self.backward.shape:
            raise ValueError(
                "VideoFlows.forward and .backward must both be [T-1, H, W, 2]; "
                f"got {self.forward.shape} and {self.backward.shape}"
            )

    @property
    def video_shape(self) -> tuple[int, int, int]:
        """[T, H, W] of the video the flows belong to."""
        pairs, h, w, _ = self.forward.shape
        return (pairs + 1, h, w)


def _forward_flows(video: torch.Tensor) -> np.ndarray:
    return np.stack([_dis_flow(video[t], video[t + 1]) for t in range(video.shape[0] - 1)])  # [T-1, H, W, 2]


def video_flows(video: Video) -> VideoFlows:
    """Forward and backward DIS flow of every consecutive frame pair of a video [T, H, W, 3], T >= 2."""
    v = _as_video(video, "video")
    _require_frames(v, "video", "video_flows")
    backward = np.stack([_dis_flow(v[t + 1], v[t]) for t in range(v.shape[0] - 1)])  # [T-1, H, W, 2]
    return VideoFlows(forward=_forward_flows(v), backward=backward)


# ----------------------------------------------------------------------------------------------------------------
# Temporal metrics
# ----------------------------------------------------------------------------------------------------------------


def _flows_for(video: torch.Tensor, flow_from: Video | VideoFlows | None) -> VideoFlows:
    if flow_from is None:
        return video_flows(video)
    if isinstance(flow_from, VideoFlows):
        flows = flow_from
    else:
        source = _as_video(flow_from, "flow_from")
        _check_same_shape(video, source, "video", "flow_from")
        flows = video_flows(source)
    if flows.video_shape != tuple(video.shape[:3]):
        raise ValueError(
            f"flow_from covers a video [T, H, W] = {list(flows.video_shape)} but video is {list(video.shape[:3])}: "
            "compute the flows from the source of this video"
        )
    return flows


def warp_error(video: Video, *, flow_from: Video | VideoFlows | None = None) -> float:
    """Mean squared error between each frame and its motion-compensated predecessor, on non-occluded pixels.

    For each pair (t, t+1), with flows from ``flow_from`` (a source video or its ``VideoFlows``; by default the
    video's own flow):

        warped_t = flow_warp(video[t], backward[t])                       # ≈ video[t+1]
        valid_t  = not occlusion_mask(backward[t], forward[t])       # in frame t+1's pixels
        E_t      = sum_{x in valid_t} mean_c (video[t+1] - warped_t)^2 / |valid_t|

    Returns the mean of E_t over pairs with at least one valid pixel (nan if there are none); lower is better.
    This is the warp error of Lai et al. 2018, averaged over colour channels instead of summed. Judged with the
    source's flow, it asks whether an edit moves with the source.
    """
    v = _as_video(video, "video")
    _require_frames(v, "video", "warp_error")
    return _warp_error(v, _flows_for(v, flow_from))


def _warp_error(v: torch.Tensor, flows: VideoFlows) -> float:
    """warp_error on a checked video [T, H, W, 3] with flows of the same [T, H, W]."""
    errors = []
    for t in range(v.shape[0] - 1):
        frame, next_frame = v[t].cpu().numpy().astype(np.float32), v[t + 1].cpu().numpy()
        warped = _remap(frame, flows.backward[t])  # [H, W, 3], ≈ next_frame
        valid = ~_occluded(flows.backward[t], flows.forward[t])  # [H, W]
        if valid.any():
            squared = np.square(next_frame.astype(np.float64) - warped).mean(-1)  # [H, W]
            errors.append(float(squared[valid].mean()))
    return sum(errors) / len(errors) if errors else float("nan")


def flicker(video: Video) -> float:
    """Mean absolute change of frame brightness between consecutive frames.

        B_t     = mean_{y,x} (0.299 R + 0.587 G + 0.114 B)(video[t])        (BT.601 luma)
        flicker = mean_t |B_{t+1} - B_t|

    Adding delta to every other frame gives flicker = delta. Global brightness ignores motion as long as the
    content stays in view; content entering or leaving the frame changes it a little, so compare an edit with
    its source's flicker (``evaluate_edit`` reports both).
    """
    v = _as_video(video, "video")
    _require_frames(v, "video", "flicker")
    return _flicker(v)


def _flicker(v: torch.Tensor) -> float:
    """flicker on a checked video [T, H, W, 3], T >= 2."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64, device=v.device)
    brightness = torch.stack([(frame.double() @ weights).mean() for frame in v])  # [T]
    return float(brightness.diff().abs().mean())


def _endpoint_error(flow_a: np.ndarray, flow_b: np.ndarray) -> float:
    """Mean of ||flow_a - flow_b||_2 over all leading axes; flows [..., 2]."""
    return float(np.sqrt(np.square(flow_a - flow_b).sum(-1)).mean(dtype=np.float64))


def motion_preservation(edited: Video, source: Video) -> float:
    """Mean endpoint error in pixels between the optical flow of the edited video and that of the source.

        EPE = mean_{t,y,x} || F_edit[t](x) - F_src[t](x) ||_2        F[t] = optical_flow(frame t, frame t+1)

    0 when the edit keeps the source motion; lower is better. Two clips moving by opposite constant
    translations d and -d score about 2|d|.
    """
    e, s = _as_video(edited, "edited"), _as_video(source, "source")
    _check_same_shape(e, s, "edited", "source")
    _require_frames(e, "edited", "motion_preservation")
    return _endpoint_error(_forward_flows(e), _forward_flows(s))


# ----------------------------------------------------------------------------------------------------------------
# All at once
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoMetrics:
    """Every metric ``evaluate_edit`` could compute from its inputs; None where they do not allow it."""

    psnr_target: float | None = None  # dB, edited vs ground-truth target (needs target)
    ssim_target: float | None = None  # edited vs ground-truth target (needs target)
    psnr_source_outside: float | None = None  # dB, edited vs source outside the mask: preservation (needs mask)
    warp_error: float | None = None  # edited, judged with the source's flow (needs T >= 2)
    warp_error_source: float | None = None  # the source's own warp error: the floor to compare with
    flicker: float | None = None  # edited
    flicker_source: float | None = None  # the source's, for comparison
    motion_preservation: float | None = None  # px, EPE between flows of edited and source


def evaluate_edit(
    edited: Video, source: Video, *, target: Video | None = None, mask: Video | None = None
) -> VideoMetrics:
    """Fill every metric the inputs allow for an edited video [T, H, W, 3] of a source of the same shape.

    target (same shape) adds PSNR/SSIM against the ground truth; mask ([T, H, W] or [H, W], 1 = edit region)
    adds PSNR against the source outside the mask; T >= 2 adds the temporal metrics. The source's flow is
    computed once and shared by warp error and motion preservation.
    """
    e, s = _as_video(edited, "edited"), _as_video(source, "source")
    _check_same_shape(e, s, "edited", "source")
    fields: dict[str, float] = {}
    if target is not None:
        t = _as_video(target, "target")
        _check_same_shape(e, t, "edited", "target")
        fields.update(psnr_target=_psnr(e, t, None, 1.0), ssim_target=_ssim(e, t, 1.0))
    if mask is not None:
        fields.update(psnr_source_outside=_psnr(e, s, 1 - _as_mask(mask, tuple(e.shape[:3])), 1.0))
    if e.shape[0] >= 2:
        source_flows = video_flows(s)
        fields.update(
            warp_error=_warp_error(e, source_flows),
            warp_error_source=_warp_error(s, source_flows),
            flicker=_flicker(e),
            flicker_source=_flicker(s),
            motion_preservation=_endpoint_error(_forward_flows(e), source_flows.forward),
        )
    return VideoMetrics(**fields)
