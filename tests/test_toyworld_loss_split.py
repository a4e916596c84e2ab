"""The denoising-error split: exact, orthogonal, and each part caught by the error it is named after."""

from __future__ import annotations

import pytest
import torch

from bench.toyworld.loss_split import measure, split_error
from bench.toyworld.models import MODELS_DIR


def test_parts_add_up_to_the_total_and_separate_a_colour_error_from_an_edge_error():
    truth = torch.rand(2, 8, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    noisy = split_error(truth + 0.1 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(1)), truth,
                        block=4)
    assert noisy.token_mean + noisy.detail == pytest.approx(noisy.total, rel=1e-9)

    tinted = split_error(truth + 0.2, truth, block=4)            # the same offset over every 4x4 block: all token mean
    assert tinted.token_mean == pytest.approx(0.04) and tinted.detail == pytest.approx(0.0, abs=1e-12)

    edge = truth.clone()
    edge[..., 0::2, :, :] += 0.2                        # alternate rows: zero mean in every 4x4 block
    edge[..., 1::2, :, :] -= 0.2
    shifted = split_error(edge, truth, block=4)
    assert shifted.token_mean == pytest.approx(0.0, abs=1e-12) and shifted.detail == pytest.approx(0.04)


def test_frames_that_do_not_tile_or_do_not_match_are_named():
    with pytest.raises(ValueError, match="do not tile into 4x4 blocks"):
        split_error(torch.zeros(1, 30, 32, 3), torch.zeros(1, 30, 32, 3), block=4)
    with pytest.raises(ValueError, match="differ in shape"):
        split_error(torch.zeros(1, 32, 32, 3), torch.zeros(2, 32, 32, 3), block=4)


def test_the_shipped_backbone_is_measured_at_each_noise_level():
    result = measure(MODELS_DIR, count=2, sigmas=(0.2, 0.7))
    assert set(result) == {"0.2", "0.7"}
    assert 0.0 < result["0.2"]["total"] < result["0.7"]["total"]  # more noise, a worse one-step estimate
