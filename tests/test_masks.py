"""Masked edits: pixel masks on the latent grid, hard and progressive boundaries, exact preservation, gate masks."""

from __future__ import annotations

import pytest
import torch

from tiny import latent, text
from imvideoedit_core.edit.masks import (MaskBoundary, band_radius, edit_weight, gate_latent_mask, keep_schedule,
                                         latent_mask, mask_hook, masked_edit, soft_dilate, step_index)
from imvideoedit_core.edit.sampling import EditRequest, SamplerConfig, edit_latent, flow_sigmas
from imvideoedit_core.edit.streams import TwoStreamRunner

CONFIG = SamplerConfig(steps=4, cfg=2.0, shift=3.0, seed=3)


def square_mask(frames: int = 3, size: int = 8, lo: int = 2, hi: int = 5) -> torch.Tensor:
    mask = torch.zeros(1, 1, frames, size, size)
    mask[..., lo:hi, lo:hi] = 1
    return mask


def chessboard_distance(mask: torch.Tensor) -> torch.Tensor:
    """Brute-force reference: per frame, the chessboard distance of every pixel to the nearest masked pixel."""
    f, h, w = mask.shape[-3:]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out = torch.full((f, h, w), float("inf"))
    for t in range(f):
        for y, x in (mask[0, 0, t] > 0.5).nonzero().tolist():
            out[t] = torch.minimum(out[t], torch.maximum((ys - y).abs(), (xs - x).abs()).float())
    return out


# -- pixel masks -> the latent grid --

def test_latent_mask_takes_area_in_space_and_max_over_wan_frame_groups():
    mask = torch.zeros(9, 16, 16)
    mask[0, :2, :2] = 1          # latent frame 0, one full 2x2 block
    mask[3, 4:5, 4:6] = 1        # frame 3 belongs to latent frame 1 (frames 1-4): half a block
    mask[8, 8:10, 8:10] = 1      # frame 8 belongs to latent frame 2 (frames 5-8)
    out = latent_mask(mask, frames=9, height=16, width=16, temporal_stride=4, spatial_stride=2)
    assert out.shape == (1, 1, 3, 8, 8)
    assert out[0, 0, 0, 0, 0] == 1 and out[0, 0, 0].sum() == 1
    assert out[0, 0, 1, 2, 2] == 0.5 and out[0, 0, 1].sum() == 0.5
    assert out[0, 0, 2, 4, 4] == 1 and out[0, 0, 2].sum() == 1


@pytest.mark.parametrize("shape", [(16, 16), (1, 16, 16)])
def test_one_mask_applies_to_every_frame(shape):
    mask = torch.zeros(shape)
    mask[..., 2:6, 2:6] = 1
    out = latent_mask(mask, frames=5, height=16, width=16, temporal_stride=1, spatial_stride=2)
    assert out.shape == (1, 1, 5, 8, 8)
    assert all(torch.equal(out[0, 0, t], out[0, 0, 0]) for t in range(5)) and out[0, 0, 0].sum() == 4


@pytest.mark.parametrize("mask, message", [
    (torch.zeros(9, 16, 24), r"the mask is 24x16 pixels but the video frames are 16x16: resize the mask to 16x16"),
    (torch.zeros(4, 16, 16), r"the mask has 4 frames but the video has 9: give one mask for all frames"),
    (torch.zeros(1, 9, 16, 16), r"expected a MASK \[frames, height, width\]"),
    (torch.full((16, 16), 1.5), r"mask values must lie in \[0, 1\]"),
])
def test_latent_mask_errors(mask, message):
    with pytest.raises(ValueError, match=message):
        latent_mask(mask, frames=9, height=16, width=16, temporal_stride=4, spatial_stride=2)


def test_gate_as_mask_upscales_the_token_grid_and_thresholds():
    gate = torch.tensor([[0.2, 0.9], [0.6, 0.1]]).reshape(1, 1, 2, 2).repeat(2, 3, 1, 1)  # (B=2, F=3, 2, 2)
    soft = gate_latent_mask(gate, height=4, width=4)
    assert soft.shape == (2, 1, 3, 4, 4) and torch.equal(soft[0, 0, 0, :2, 2:], torch.full((2, 2), 0.9))
    hard = gate_latent_mask(gate, height=4, width=4, threshold=0.5)
    assert torch.equal(hard[1, 0, 2], torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0.]]))
    with pytest.raises(ValueError, match="does not divide the latent 5x4"):
        gate_latent_mask(gate, height=4, width=5)


# -- boundaries --

@pytest.mark.parametrize("radius", [0.0, 1.0, 2.5, 4.0])
def test_soft_dilation_follows_the_chessboard_distance(radius):
    mask = square_mask(size=12, lo=4, hi=6)
    mask[..., 0, 10, 1] = 1  # a second region in one frame only: frames are dilated independently
    distance = chessboard_distance(mask)
    expected = (1 - distance / (radius + 1)).clamp(0, 1)
    torch.testing.assert_close(soft_dilate(mask, radius)[0, 0], expected, rtol=0, atol=1e-6)


def test_hard_boundary_is_the_binary_mask_at_every_step():
    mask = square_mask() * 0.7  # soft values >= 0.5 count as inside
    for step in range(4):
        assert torch.equal(edit_weight(mask, boundary=MaskBoundary(kind="hard"), step=step, total=4),
                           square_mask())


def test_progressive_band_narrows_to_the_mask_by_the_last_step():
    mask = square_mask(size=16, lo=6, hi=9)
    boundary = MaskBoundary(kind="progressive", band=3.0)
    weights = [edit_weight(mask, boundary=boundary, step=s, total=6) for s in range(6)]
    sizes = [float(w.sum()) for w in weights]
    assert all(a > b for a, b in zip(sizes, sizes[1:])), sizes
    assert all(torch.equal(w * mask, mask) for w in weights)  # never less than the mask itself
    assert torch.equal(weights[-1], mask)                     # last step: exactly the mask
    assert [band_radius(s, 6, 3.0) for s in (0, 5)] == [3.0, 0.0]
    keep = keep_schedule(mask, boundary=boundary)
    assert torch.equal(keep(5, 6), 1 - mask)


def test_step_index_finds_the_call_in_a_run():
    sigmas = flow_sigmas(5, shift=3.0).float()
    assert [step_index(float(s), sigmas) for s in sigmas] == [(0, 5), (1, 5), (2, 5), (3, 5), (4, 5), (4, 5)]


def test_boundary_config_errors():
    with pytest.raises(ValueError, match="unknown boundary 'soft'"):
        MaskBoundary(kind="soft")
    with pytest.raises(ValueError, match="band must be a finite number >= 0"):
        MaskBoundary(band=-1)


# -- masked edits --

@pytest.mark.parametrize("kind", ["hard", "progressive"])
def test_masked_edit_keeps_the_source_exactly_outside_the_mask(tiny_backbone, trained_adapter, kind):
    source, mask = latent(1), square_mask()
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner, torch.no_grad():
        out = masked_edit(runner, source, mask, context=text(0), negative_context=torch.zeros(1, 2, 32),
                          config=CONFIG, boundary=MaskBoundary(kind=kind, band=2.0)).latent
        again = masked_edit(runner, source, mask, context=text(0), negative_context=torch.zeros(1, 2, 32),
                            config=CONFIG, boundary=MaskBoundary(kind=kind, band=2.0)).latent
    outside = (mask == 0).expand_as(source)
    assert torch.equal(out[outside], source[outside])
    assert (out[~outside] - source[~outside]).abs().mean() > 0.1
    assert torch.equal(out, again)


def test_progressive_and_hard_boundaries_give_different_edits_inside(tiny_backbone, trained_adapter):
    source, mask = latent(1), square_mask()
    outs = {}
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner, torch.no_grad():
        for kind in ("hard", "progressive"):
            outs[kind] = masked_edit(runner, source, mask, context=text(0), negative_context=None,
                                     config=CONFIG, boundary=MaskBoundary(kind=kind, band=2.0)).latent
    inside = (mask > 0).expand_as(source)
    assert (outs["hard"][inside] - outs["progressive"][inside]).abs().max() > 1e-3


def test_full_mask_equals_the_unmasked_edit(tiny_backbone, trained_adapter):
    source = latent(1)
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner, torch.no_grad():
        full = masked_edit(runner, source, torch.ones(1, 1, 3, 8, 8), context=text(0), negative_context=None,
                           config=CONFIG).latent
        plain = edit_latent(runner, EditRequest(source=source, context=text(0), negative_context=None,
                                                config=CONFIG)).latent
    assert torch.equal(full, plain)


def test_gate_of_a_first_edit_restricts_a_second(tiny_backbone, trained_adapter):
    source = latent(1)
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner, torch.no_grad():
        first = edit_latent(runner, EditRequest(source=source, context=text(0), negative_context=None, config=CONFIG,
                                                return_gate=True))
        mask = gate_latent_mask(first.gate, height=8, width=8, threshold=float(first.gate.median()))
        second = masked_edit(runner, source, mask, context=text(1), negative_context=None, config=CONFIG).latent
    assert 0 < mask.mean() < 1
    outside = (mask == 0).expand_as(source)
    assert torch.equal(second[outside], source[outside])


def test_mask_hook_refuses_a_mask_off_the_latent_grid():
    with pytest.raises(ValueError, match=r"must be \(batch, 1, frames, height, width\) on the latent grid"):
        mask_hook(latent(1), torch.ones(1, 1, 3, 16, 16), noise=latent(2), boundary=MaskBoundary())
