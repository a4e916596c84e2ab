"""Metrics against synthetic clips with known answers: constant offsets, closed-form SSIM, known translations
(so known flow), injected flicker, opposite motion."""

import math

import cv2
import numpy as np
import pytest
import torch

from bench.metrics import (
    MaskedPSNR,
    VideoFlows,
    VideoMetrics,
    evaluate_edit,
    flicker,
    motion_preservation,
    occlusion_mask,
    optical_flow,
    psnr,
    psnr_masked,
    ssim,
    video_flows,
    flow_warp,
    warp_error,
)

# ----------------------------------------------------------------------------------------------------------------
# Synthetic clips
# ----------------------------------------------------------------------------------------------------------------


def texture(height: int, width: int, seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """Smooth random RGB texture [H, W, 3] float64 spanning 0.1..0.9 (room for +/- offsets without clipping)."""
    noise = np.random.default_rng(seed).random((height, width, 3))
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return 0.1 + 0.8 * smooth


def translating_clip(frames: int, size: int, dx: int, dy: int, seed: int = 0) -> torch.Tensor:
    """Clip [T, size, size, 3] whose content moves dx px right and dy px down per frame (crops of a larger
    texture, so new content enters instead of wrapping around)."""
    margin = frames * max(abs(dx), abs(dy)) + 2
    big = texture(size + 2 * margin, size + 2 * margin, seed)
    tops, lefts = [margin - t * dy for t in range(frames)], [margin - t * dx for t in range(frames)]
    crops = [big[top : top + size, left : left + size] for top, left in zip(tops, lefts)]
    return torch.from_numpy(np.stack(crops))  # [T, size, size, 3]


# ----------------------------------------------------------------------------------------------------------------
# PSNR
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset, expected_db", [(0.1, 20.0), (0.01, 40.0), (0.5, 10 * math.log10(4))])
def test_psnr_of_constant_offset_is_exact(offset, expected_db):
    a = torch.from_numpy(texture(16, 16)).expand(3, 16, 16, 3) * 0.1  # values 0.01..0.09
    assert psnr(a, a + offset) == pytest.approx(expected_db, abs=1e-9)


def test_psnr_of_identical_inputs_is_inf_for_tensors_and_arrays():
    video = translating_clip(3, 16, 1, 0)
    assert psnr(video, video.clone()) == float("inf")
    assert psnr(video.numpy(), video.numpy().copy()) == float("inf")
    assert psnr(video[0], video[0]) == float("inf")  # a single image [H, W, 3]


def test_psnr_pools_mse_over_frames():
    a = torch.zeros(2, 8, 8, 3, dtype=torch.float64)
    b = a.clone()
    b[1] += 0.1  # error in one frame of two: MSE = 0.01 / 2
    assert psnr(a, b) == pytest.approx(10 * math.log10(200), abs=1e-9)


def test_psnr_masked_with_a_change_only_inside_the_mask():
    a = torch.from_numpy(texture(32, 32)).expand(4, 32, 32, 3) * 0.5
    mask = torch.zeros(4, 32, 32, dtype=torch.float64)
    mask[:, 8:20, 4:30] = 1
    b = a + 0.2 * mask[..., None]
    result = psnr_masked(a, b, mask)
    assert isinstance(result, MaskedPSNR)
    assert result.outside == float("inf")
    assert result.inside == pytest.approx(10 * math.log10(1 / 0.2**2), abs=1e-9)
    assert psnr(a, b, mask=mask) == result.inside
    # one [H, W] mask applies to every frame
    assert psnr_masked(a, b, mask[0]).inside == pytest.approx(result.inside, abs=1e-12)


def test_psnr_over_an_empty_region_is_nan():
    a = torch.rand(2, 8, 8, 3)
    assert math.isnan(psnr_masked(a, a * 0.5, torch.ones(8, 8)).outside)


# ----------------------------------------------------------------------------------------------------------------
# SSIM
# ----------------------------------------------------------------------------------------------------------------


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Independent SSIM of two images [H, W, 3] with OpenCV filters: Gaussian 11/1.5, valid region, channel mean."""
    c1, c2 = 0.01**2, 0.03**2
    g = cv2.getGaussianKernel(11, 1.5)

    def blur(x):
        return cv2.sepFilter2D(x, cv2.CV_64F, g, g)[5:-5, 5:-5]

    scores = []
    for c in range(3):
        x, y = a[..., c], b[..., c]
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        scores.append(((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())
    return float(np.mean(scores))


def test_ssim_of_identical_inputs_is_one():
    video = translating_clip(3, 32, 1, 1)
    assert ssim(video, video) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("mean_a, mean_b", [(0.2, 0.6), (0.5, 0.55), (0.0, 1.0)])
def test_ssim_of_constant_images_has_closed_form(mean_a, mean_b):
    # sigma = 0 everywhere, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    c1 = 0.01**2
    expected = (2 * mean_a * mean_b + c1) / (mean_a**2 + mean_b**2 + c1)
    a = torch.full((2, 20, 24, 3), mean_a, dtype=torch.float64)
    b = torch.full((2, 20, 24, 3), mean_b, dtype=torch.float64)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-9)


def test_ssim_matches_an_independent_implementation():
    a = texture(40, 48, seed=1)
    b = np.clip(a + 0.1 * np.random.default_rng(2).standard_normal(a.shape), 0, 1)
    assert ssim(a, b) == pytest.approx(reference_ssim(a, b), abs=1e-9)


def test_ssim_decreases_with_noise():
    clean = texture(32, 32, seed=3)
    rng = np.random.default_rng(4)
    scores = [ssim(clean, np.clip(clean + s * rng.standard_normal(clean.shape), 0, 1)) for s in (0.01, 0.05, 0.2)]
    assert 1 > scores[0] > scores[1] > scores[2] > 0


@pytest.mark.parametrize("height, width", [(6, 9), (1, 1), (10, 64)])
def test_ssim_handles_frames_smaller_than_the_window(height, width):
    a = texture(height, width, seed=5) if min(height, width) > 1 else np.full((1, 1, 3), 0.3)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert 0 < ssim(a, a * 0.5) < 1


# ----------------------------------------------------------------------------------------------------------------
# Flow, warp, occlusion
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64, 96])
def test_optical_flow_recovers_a_known_translation(size):
    clip = translating_clip(2, size, dx=3, dy=2)
    flow = optical_flow(clip[0], clip[1])  # frame 0 (x) = frame 1 (x + (3, 2))
    assert flow.shape == (size, size, 2) and flow.dtype == np.float32
    interior = flow[6:-6, 6:-6].reshape(-1, 2)
    assert np.abs(interior.mean(0) - [3, 2]).max() < 0.02  # measured <= 0.006
    assert np.abs(interior - [3, 2]).max() < 0.2  # measured: 0.06 at 32 px, 0.03 at 64 px, 0.09 at 96 px


@pytest.mark.parametrize("height, width", [(16, 100), (11, 40), (8, 8), (100, 12), (1, 1)])
def test_optical_flow_on_small_and_narrow_frames(height, width):
    # raw DIS crashes the process on some of these shapes; optical_flow upsamples them first
    frame = texture(height, width) if min(height, width) > 1 else np.full((height, width, 3), 0.5)
    flow = optical_flow(frame, frame)
    assert flow.shape == (height, width, 2)
    assert np.abs(flow).max() < 0.1


def test_warp_with_an_exact_integer_flow_samples_the_shifted_pixels():
    image = texture(24, 24)
    flow = np.broadcast_to(np.float32([3, 2]), (24, 24, 2)).copy()  # out(y, x) = image(y + 2, x + 3)
    out = flow_warp(image, flow)
    assert np.allclose(out[:-2, :-3], image[2:, 3:], atol=1e-6)
    assert np.allclose(out[-1, -1], image[-1, -1], atol=1e-6)  # border replicated
    assert flow_warp(image[..., 0], flow).shape == (24, 24)  # single channel keeps its layout


def test_warp_with_estimated_flow_aligns_the_next_frame():
    clip = translating_clip(2, 64, dx=3, dy=2)
    aligned = flow_warp(clip[0], optical_flow(clip[1], clip[0]))  # ≈ clip[1]
    interior = (slice(2 + 4, -4), slice(3 + 4, -4))  # skip the uncovered band (top 2 rows, left 3 columns)
    error = np.abs(aligned - clip[1].numpy())[interior].mean()
    unaligned = np.abs(clip[0].numpy() - clip[1].numpy())[interior].mean()
    assert error < 0.002  # measured ~4e-4
    assert unaligned > 20 * error


def test_occlusion_mask_with_analytic_flows_flags_exactly_the_uncovered_band():
    # frame 1 seen from frame 0: content moved (3, 2), so frame 1 (x) = frame 0 (x - (3, 2))
    flow_10 = np.broadcast_to(np.float32([-3, -2]), (32, 32, 2)).copy()
    flow_01 = -flow_10
    y, x = np.indices((32, 32))
    assert np.array_equal(occlusion_mask(flow_10, flow_01), (x < 3) | (y < 2))
    # a backward flow that does not undo the forward one flags everything
    assert occlusion_mask(flow_01, flow_01).all()


@pytest.mark.parametrize("size", [32, 64])
def test_occlusion_mask_with_estimated_flows_flags_the_uncovered_band(size):
    clip = translating_clip(2, size, dx=3, dy=2)
    occluded = occlusion_mask(optical_flow(clip[1], clip[0]), optical_flow(clip[0], clip[1]))
    assert occluded[:, :3].all() and occluded[:2, :].all()
    assert occluded[4:, 5:].mean() < 0.01  # measured 0


# ----------------------------------------------------------------------------------------------------------------
# Warp error, flicker, motion preservation
# ----------------------------------------------------------------------------------------------------------------

SHUFFLE = [3, 0, 6, 1, 7, 2, 5, 4]


@pytest.mark.parametrize("size", [32, 64])
def test_warp_error_is_low_for_a_translation_and_high_for_shuffled_frames(size):
    clip = translating_clip(8, size, dx=2, dy=1)
    clean = warp_error(clip)  # measured ~1e-6
    assert clean < 1e-4
    assert warp_error(clip[SHUFFLE], flow_from=clip) > 100 * clean  # the edit ignores the source motion
    unrelated = torch.from_numpy(np.stack([texture(size, size, seed=s) for s in range(8)]))
    assert warp_error(unrelated) > 100 * clean  # no motion explains independent frames


def test_warp_error_with_source_flow_accepts_an_edit_that_follows_the_motion():
    clip = translating_clip(8, 32, dx=2, dy=1)
    recoloured = clip[..., [2, 0, 1]] * 0.8  # a colour edit: different pixels, same motion
    flows = video_flows(clip)
    assert warp_error(recoloured, flow_from=flows) == pytest.approx(warp_error(recoloured, flow_from=clip))
    assert warp_error(recoloured, flow_from=flows) < 1e-4
    assert warp_error(clip[SHUFFLE], flow_from=flows) > 1e-2


def test_flicker_of_a_static_clip_equals_the_injected_delta():
    delta = 0.05
    static = torch.from_numpy(texture(32, 32)).expand(8, 32, 32, 3).clone()
    assert flicker(static) == 0
    flickering = static.clone()
    flickering[1::2] += delta  # +delta on every other frame
    assert flicker(flickering) == pytest.approx(delta, abs=1e-12)


@pytest.mark.parametrize("size", [32, 64])
def test_flicker_of_a_moving_clip_is_close_to_the_injected_delta(size):
    delta = 0.05
    clip = translating_clip(8, size, dx=2, dy=1)
    flickering = clip.clone()
    flickering[1::2] += delta
    assert flicker(clip) < 0.005  # content entering the view; measured 0.0019 (32 px), 0.0008 (64 px)
    assert flicker(flickering) == pytest.approx(delta, abs=0.005)


@pytest.mark.parametrize("size", [32, 64])
def test_motion_preservation_is_zero_for_same_motion_and_the_endpoint_error_for_opposite_motion(size):
    clip = translating_clip(8, size, dx=2, dy=1)
    assert motion_preservation(clip, clip) == 0
    assert motion_preservation(clip[..., [2, 0, 1]] * 0.8, clip) < 0.1  # recoloured; measured 0.04 (32), 0.004 (64)
    reverse = translating_clip(8, size, dx=-2, dy=-1, seed=1)
    expected = math.hypot(4, 2)  # |(2, 1) - (-2, -1)|
    assert motion_preservation(reverse, clip) == pytest.approx(expected, rel=0.05)


# ----------------------------------------------------------------------------------------------------------------
# evaluate_edit
# ----------------------------------------------------------------------------------------------------------------


def test_evaluate_edit_fills_every_metric_the_inputs_allow():
    source = translating_clip(8, 32, dx=2, dy=1)
    mask = torch.zeros(8, 32, 32)
    mask[:, 8:24, 8:24] = 1
    edited = torch.where(mask[..., None] > 0, source[..., [2, 0, 1]], source)
    result = evaluate_edit(edited, source, target=edited.clone(), mask=mask)
    assert isinstance(result, VideoMetrics)
    assert result.psnr_target == float("inf") and result.ssim_target == pytest.approx(1.0)
    assert result.psnr_source_outside == float("inf")
    assert result.warp_error_source < 1e-4 and result.warp_error > result.warp_error_source
    assert result.flicker_source == pytest.approx(flicker(source))
    assert result.motion_preservation == pytest.approx(motion_preservation(edited, source))


def test_evaluate_edit_leaves_what_the_inputs_do_not_allow_as_none():
    source = translating_clip(4, 32, dx=1, dy=0)
    partial = evaluate_edit(source, source)
    assert partial.psnr_target is None and partial.ssim_target is None and partial.psnr_source_outside is None
    assert partial.motion_preservation == 0 and partial.flicker is not None
    image = evaluate_edit(source[0] * 0.9, source[0], target=source[0])
    assert image.warp_error is None and image.flicker is None and image.motion_preservation is None
    mse = 0.1**2 * source[0].square().mean().item()  # (0.9 s - s)^2 = 0.01 s^2
    assert image.psnr_target == pytest.approx(10 * math.log10(1 / mse), abs=1e-9)


# ----------------------------------------------------------------------------------------------------------------
# Error messages
# ----------------------------------------------------------------------------------------------------------------


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match=r"a and b must have the same shape .*resize or trim"):
        psnr(torch.rand(2, 8, 8, 3), torch.rand(2, 8, 9, 3))
    with pytest.raises(ValueError, match="edited and source must have the same shape"):
        motion_preservation(torch.rand(3, 16, 16, 3), torch.rand(4, 16, 16, 3))


def test_out_of_range_values_are_refused_with_a_hint():
    video = torch.rand(2, 8, 8, 3)
    with pytest.raises(ValueError, match=r"values in 0..1.*divide by 255"):
        ssim(video * 255, video)
    with pytest.raises(ValueError, match=r"-1..1; map it with \(x \+ 1\) / 2"):
        psnr(video, video * 2 - 1)
    with pytest.raises(ValueError, match=r"clamp it with x.clamp\(0, 1\)"):
        flicker(video + 0.2)
    with pytest.raises(ValueError, match="NaN or inf"):
        psnr(video, torch.full_like(video, float("nan")))


def test_wrong_layouts_are_refused_with_a_hint():
    with pytest.raises(ValueError, match=r"channel-first; use x.permute\(0, 2, 3, 1\)"):
        psnr(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"channel-first; use x.permute\(1, 2, 0\)"):
        ssim(torch.rand(3, 8, 8), torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r"RGBA\?\); drop alpha with x\[\.\.\., :3\]"):
        flicker(torch.rand(2, 8, 8, 4))
    with pytest.raises(ValueError, match=r"dtype torch.uint8: use x.float\(\) / 255"):
        psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"one frame \[H, W, 3\]; got a video .*pass video\[t\]"):
        optical_flow(torch.rand(2, 16, 16, 3), torch.rand(2, 16, 16, 3))
    with pytest.raises(TypeError, match="torch.Tensor or numpy array; got list"):
        psnr([[0.0]], [[0.0]])


def test_bad_masks_are_refused():
    video = torch.rand(4, 8, 8, 3)
    with pytest.raises(ValueError, match="mask is 8x9 but the frames are 8x8: resize the mask"):
        psnr(video, video, mask=torch.ones(8, 9))
    with pytest.raises(ValueError, match="mask has 3 frames but the video has 4"):
        psnr_masked(video, video, torch.ones(3, 8, 8))
    with pytest.raises(ValueError, match=r"ComfyUI MASK.*mask\[\.\.\., 0\]"):
        psnr(video, video, mask=torch.ones(4, 8, 8, 1))
    with pytest.raises(ValueError, match="mask must hold values in 0..1"):
        psnr(video, video, mask=torch.full((8, 8), 255.0))


def test_temporal_metrics_need_two_frames_and_matching_flows():
    with pytest.raises(ValueError, match=r"warp_error needs at least 2 frames; video has 1"):
        warp_error(torch.rand(1, 16, 16, 3))
    with pytest.raises(ValueError, match="flicker needs at least 2 frames"):
        flicker(torch.rand(16, 16, 3))
    flows = video_flows(torch.rand(3, 16, 16, 3))
    with pytest.raises(ValueError, match=r"flow_from covers a video \[T, H, W\] = \[3, 16, 16\] but video is \[4, 16"):
        warp_error(torch.rand(4, 16, 16, 3), flow_from=flows)
    with pytest.raises(ValueError, match=r"flow must be a flow \[H, W, 2\]"):
        flow_warp(np.zeros((8, 8, 3)), np.zeros((8, 9, 2)))
    with pytest.raises(ValueError, match=r"must both be \[T-1, H, W, 2\]"):
        VideoFlows(forward=np.zeros((2, 8, 8, 2)), backward=np.zeros((1, 8, 8, 2)))
    with pytest.raises(ValueError, match="max_val must be positive"):
        psnr(torch.rand(8, 8, 3), torch.rand(8, 8, 3), max_val=0)

