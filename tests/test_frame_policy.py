"""The clip policy of Edit Conditioning and the mapping of gate maps back to video frames."""

from __future__ import annotations

import pytest
import torch

from imvideoedit_core.edit.frame_policy import fit_frames, latent_map_to_frames, nearest_multiple, wan_frame_count


def test_frame_counts_become_4k_plus_1():
    assert [wan_frame_count(t) for t in (1, 4, 5, 8, 9, 81, 83)] == [1, 1, 5, 5, 9, 81, 81]
    with pytest.raises(ValueError, match="no frames"):
        wan_frame_count(0)


def test_fit_frames_trims_scales_and_says_so():
    clip = torch.rand(11, 50, 70, 4)  # RGBA, 11 frames, 70x50
    fitted = fit_frames(clip)
    assert fitted.images.shape == (9, 48, 64, 3) and fitted.dropped_frames == 2
    assert "dropped the last 2 frame(s)" in fitted.describe() and "scaled from 70x50" in fitted.describe()
    same = fit_frames(torch.rand(5, 32, 48, 3))
    assert same.dropped_frames == 0 and same.images.shape == (5, 32, 48, 3)
    assert nearest_multiple(7) == 16 and nearest_multiple(24) == 32 and nearest_multiple(40) == 48  # halves up
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        fit_frames(torch.rand(5, 32, 48))


def test_latent_maps_expand_to_video_frames():
    maps = torch.arange(3.0).view(3, 1, 1).expand(3, 2, 2)  # latent frame f has value f
    frames = latent_map_to_frames(maps, height=32, width=32)
    assert frames.shape == (9, 32, 32)
    assert frames[:, 0, 0].tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2]
