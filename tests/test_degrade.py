"""Degradation of the sampler's start latent, image animation, and sampling from a degraded start."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from imvideoedit_core.edit.degrade import MOTIONS, DegradeConfig, animate_image, degrade_latent
from imvideoedit_core.edit.sampling import (EditRequest, SamplerConfig, StartLatent, StepInfo, edit_latent,
                                            guided_velocity, sample_from)
from imvideoedit_core.edit.streams import TwoStreamRunner
from tiny import latent, text


def test_factor_one_is_an_exact_copy():
    x = latent(0, frames=5)
    out = degrade_latent(x, DegradeConfig())
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_spatial_degradation_matches_area_down_bilinear_up():
    x = latent(1, frames=3, size=8, batch=2)
    out = degrade_latent(x, DegradeConfig(spatial_factor=2))
    frames = x.permute(0, 2, 1, 3, 4).reshape(6, 16, 8, 8)  # (B*F, C, H, W)
    ref = F.interpolate(F.avg_pool2d(frames, 2), size=(8, 8), mode="bilinear", align_corners=False)
    ref = ref.reshape(2, 3, 16, 8, 8).permute(0, 2, 1, 3, 4)  # (B, C, F, H, W)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(out, x)
    # the 2x2 block means survive the round trip closely (only the detail inside a block is lost)
    torch.testing.assert_close(F.avg_pool3d(out, (1, 4, 4)), F.avg_pool3d(x, (1, 4, 4)), atol=0.15, rtol=0)


def test_spatial_factor_not_dividing_the_size_keeps_the_shape():
    x = latent(2, frames=2, size=7)
    assert degrade_latent(x, DegradeConfig(spatial_factor=3)).shape == x.shape


@pytest.mark.parametrize("fill", ["hold", "linear"])
def test_temporal_degradation_keeps_every_kth_frame_exactly(fill):
    x = latent(3, frames=6)
    out = degrade_latent(x, DegradeConfig(temporal_factor=2, temporal_fill=fill))
    for f in (0, 2, 4):
        assert torch.equal(out[:, :, f], x[:, :, f])
    assert torch.equal(out[:, :, 5], x[:, :, 4])  # after the last kept frame: held in both modes
    if fill == "hold":
        assert torch.equal(out[:, :, 1], x[:, :, 0]) and torch.equal(out[:, :, 3], x[:, :, 2])
    else:
        torch.testing.assert_close(out[:, :, 1], (x[:, :, 0] + x[:, :, 2]) / 2)
        torch.testing.assert_close(out[:, :, 3], (x[:, :, 2] + x[:, :, 4]) / 2)


def test_linear_fill_at_factor_three_interpolates_by_thirds():
    x = latent(4, frames=4)
    out = degrade_latent(x, DegradeConfig(temporal_factor=3))
    torch.testing.assert_close(out[:, :, 1], x[:, :, 0] * 2 / 3 + x[:, :, 3] / 3)
    assert torch.equal(out[:, :, 3], x[:, :, 3])


def test_degradation_commutes_with_an_affine_latent_format():
    x = latent(5, frames=5)
    config = DegradeConfig(spatial_factor=2, temporal_factor=2)
    torch.testing.assert_close(degrade_latent(x * 0.5 + 0.3, config), degrade_latent(x, config) * 0.5 + 0.3)


@pytest.mark.parametrize("kwargs, message", [
    ({"spatial_factor": 0}, "spatial_factor must be an integer >= 1"),
    ({"temporal_factor": -1}, "temporal_factor must be an integer >= 1"),
    ({"spatial_factor": 1.5}, "spatial_factor must be an integer >= 1"),
    ({"temporal_fill": "cubic"}, "unknown temporal_fill"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DegradeConfig(**kwargs)


def test_factors_larger_than_the_latent_and_wrong_rank_are_refused():
    with pytest.raises(ValueError, match="spatial_factor 9 is larger than the latent"):
        degrade_latent(latent(0, size=8), DegradeConfig(spatial_factor=9))
    with pytest.raises(ValueError, match="temporal_factor 4 is larger than the latent's 3 frames"):
        degrade_latent(latent(0, frames=3), DegradeConfig(temporal_factor=4))
    with pytest.raises(ValueError, match="expected a video latent"):
        degrade_latent(torch.zeros(1, 16, 8, 8), DegradeConfig())


# -- image animation --

def _image(h: int = 16, w: int = 16) -> torch.Tensor:
    return torch.rand(h, w, 3, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("motion", MOTIONS)
def test_animation_starts_on_the_image_and_moves(motion):
    image = _image()
    video = animate_image(image[None], frames=5, motion=motion, amount=0.5)
    assert video.shape == (5, 16, 16, 3) and video.dtype == image.dtype
    assert torch.equal(video[0], image)
    assert not torch.allclose(video[-1], image, atol=1e-3)
    steps = [(video[t + 1] - video[t]).abs().mean() for t in range(4)]
    assert max(steps) < 4 * min(steps)  # a smooth motion, no jump


@pytest.mark.parametrize("motion", MOTIONS)
def test_no_motion_replicates_the_image(motion):
    image = _image()
    video = animate_image(image, frames=3, motion=motion, amount=0.0)
    torch.testing.assert_close(video, image.expand(3, -1, -1, -1), atol=1e-5, rtol=0)


def test_pan_right_shifts_by_whole_pixels():
    image = _image()
    video = animate_image(image, frames=5, motion="pan_right", amount=0.25)  # last frame: a quarter width = 4 px
    torch.testing.assert_close(video[-1][:, :12], image[:, 4:], atol=1e-5, rtol=0)
    torch.testing.assert_close(video[2][:, :14], image[:, 2:], atol=1e-5, rtol=0)  # halfway: 2 px


def test_zoom_in_magnifies_the_centre():
    image = torch.zeros(16, 16, 3)
    image[6:10, 6:10] = 1.0  # a 4x4 white square in the centre
    video = animate_image(image, frames=2, motion="zoom_in", amount=1.0)  # 2x at the last frame
    assert float(video[-1].sum()) == pytest.approx(4 * float(image.sum()), rel=0.05)
    assert video[-1][5:11, 5:11].min() > 0.99 and video[-1][:3].max() == 0  # 8x8 now, soft edge


def test_perspective_recedes_the_top_edge():
    image = torch.zeros(16, 16, 3)
    image[:, 6:10] = 1.0  # a vertical stripe
    video = animate_image(image, frames=2, motion="perspective", amount=1.0)
    top, bottom = video[-1][0].sum(), video[-1][-1].sum()
    assert top < image[0].sum() < bottom  # the stripe narrows at the far (top) edge, widens at the near one


def test_one_frame_is_the_image():
    image = _image()
    assert torch.equal(animate_image(image, frames=1, motion="zoom_in", amount=1.0), image[None])


@pytest.mark.parametrize("kwargs, message", [
    ({"frames": 0}, "frames must be an integer >= 1"),
    ({"motion": "spin"}, "unknown motion 'spin'"),
    ({"amount": 1.5}, r"amount must be in \[0, 1.0\]"),
    ({"amount": -0.1}, r"amount must be in \[0, 1.0\]"),
    ({"image": torch.zeros(2, 8, 8, 3)}, "expected one image"),
    ({"image": torch.zeros(8, 8)}, "expected one image"),
])
def test_animation_errors(kwargs, message):
    args = {"image": _image(), "frames": 3, "motion": "zoom_in", "amount": 0.5, **kwargs}
    image = args.pop("image")
    with pytest.raises(ValueError, match=message):
        animate_image(image, **args)


# -- sampling from a degraded start (sampling.sample_from / edit_latent ``start``) --

def _edit(runner, config, *, start=None, callback=None):
    request = EditRequest(source=latent(1), context=text(0), negative_context=torch.zeros(1, 2, 32), config=config,
                          features=[StartLatent(start)] if start is not None else [])
    with torch.no_grad():
        return edit_latent(runner, request, callback=callback).latent


def test_edit_from_a_degraded_start_keeps_the_source_stream_clean(tiny_backbone, trained_adapter):
    source = latent(1)
    start = degrade_latent(source, DegradeConfig(spatial_factor=2))
    config = SamplerConfig(steps=3, strength=0.75, seed=3)
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner:
        ours = _edit(runner, config, start=start)
        with torch.no_grad():
            fn = guided_velocity(runner, source, text(0), torch.zeros(1, 2, 32), cfg=config.cfg, cache="device",
                                 recorder=None)
            reference = sample_from(fn, source, config, start=start)
            degraded_source = edit_latent(runner, EditRequest(source=start, context=text(0),
                                                              negative_context=torch.zeros(1, 2, 32),
                                                              config=config)).latent
        plain = _edit(runner, config)
        default = _edit(runner, config, start=source)
    assert torch.equal(ours, reference)
    assert torch.equal(plain, default)                     # start defaults to the source
    assert not torch.allclose(ours, plain)                 # the start matters ...
    assert not torch.allclose(ours, degraded_source)       # ... and the source stream stays the clean source


def test_start_is_noised_to_the_strength(tiny_backbone, trained_adapter):
    start = degrade_latent(latent(1), DegradeConfig(temporal_factor=2))
    seen: list[StepInfo] = []
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner:
        assert torch.equal(_edit(runner, SamplerConfig(steps=2, strength=0.0), start=start), start)
        _edit(runner, SamplerConfig(steps=2, strength=0.5), start=start, callback=seen.append)
    assert seen[0].sigma == pytest.approx(0.5)


def test_start_of_the_wrong_shape_is_refused(tiny_backbone, trained_adapter):
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner:
        with pytest.raises(ValueError, match=r"start \(1, 16, 2, 8, 8\) must have the latent's shape"):
            _edit(runner, SamplerConfig(steps=1), start=latent(1, frames=2))
