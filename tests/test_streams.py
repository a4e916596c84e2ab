"""The host-neutral two-stream runtime: token grids, the source cache and the gate average that both bindings use."""

from __future__ import annotations

import pytest
import torch

from tiny import latent, text
from imvideoedit_core.model.adapter import SourceKV
from imvideoedit_core.edit.streams import GateAverage, SourceCache, TwoStreamRunner, token_grid


def kv(seed: int, rows: int = 2) -> SourceKV:
    g = torch.Generator().manual_seed(seed)
    return SourceKV(k=torch.randn(rows, 4, 8, generator=g), v=torch.randn(rows, 4, 8, generator=g))


def test_token_grid_matches_the_backbones_patch_embedding_and_pads_like_wan(tiny_backbone):
    x = latent(0, frames=3)
    state = tiny_backbone.embed(x, torch.zeros(1), text(0))
    assert token_grid(x.shape, tiny_backbone.config.patch_size) == state.block_context.grid
    assert token_grid((1, 16, 21, 60, 105), (1, 2, 2)) == (21, 30, 53)  # odd sizes round up, as Wan pads


@pytest.mark.parametrize("placement", ["device", "cpu", "off"])
def test_source_cache_gives_back_what_was_put_for_every_branch(placement):
    cache = SourceCache(placement, branches=2)
    for block in (0, 2):
        cache.put(block, kv(block))
    for block in (0, 2):
        got = cache.features(block, torch.device("cpu"))
        assert torch.equal(got.k, kv(block).k.repeat(2, 1, 1)) and torch.equal(got.v, kv(block).v.repeat(2, 1, 1))
    assert cache.nbytes() == 2 * 2 * kv(0).k.nbytes
    with pytest.raises(RuntimeError, match="block 1"):
        cache.features(1, torch.device("cpu"))


@pytest.mark.parametrize("placement", ["device", "cpu"])
def test_a_branch_view_reads_the_same_features_without_copying_them(placement):
    cache = SourceCache(placement)
    cache.put(0, kv(0))
    assert cache.for_branches(1) is cache
    view = cache.for_branches(3)
    got = view.features(0, torch.device("cpu"))
    assert torch.equal(got.k, kv(0).k.repeat(3, 1, 1)) and torch.equal(got.v, kv(0).v.repeat(3, 1, 1))
    assert view.blocks is cache.blocks and cache.features(0, torch.device("cpu")).k.shape[0] == 2


def test_source_cache_refuses_an_unknown_placement():
    with pytest.raises(ValueError, match="'gpu'.*device.*cpu.*off"):
        SourceCache("gpu")


def test_shared_keyframes_are_appended_to_every_frames_keys():
    cache, shared = SourceCache("cpu"), SourceCache("device")
    cache.put(0, kv(0, rows=3))    # one clip of 3 frames
    shared.put(0, kv(5, rows=2))   # 2 keyframes
    cache.add_shared(shared, batch=1)
    got = cache.features(0, torch.device("cpu"))
    assert got.k.shape == (3, 4 + 2 * 4, 8)
    for frame in range(3):
        assert torch.equal(got.k[frame, :4], kv(0, rows=3).k[frame])
        assert torch.equal(got.k[frame, 4:], kv(5, rows=2).k.reshape(8, 8))


def test_gate_average_grows_with_the_windows_it_sees_and_averages_overlaps():
    average = GateAverage()
    assert average.mean() is None
    average.add(torch.full((1, 3, 2, 2), 1.0), frames=[0, 1, 2])
    average.add(torch.full((1, 3, 2, 2), 0.0), frames=[2, 3, 4])   # overlaps frame 2, grows to 5 frames
    mean = average.mean()
    assert mean.shape == (1, 5, 2, 2)
    assert mean[0, :, 0, 0].tolist() == [1.0, 1.0, 0.5, 0.0, 0.0]
    average.add(torch.full((1, 5, 2, 2), 1.0))                        # a whole-clip step
    assert average.mean()[0, :, 0, 0].tolist() == pytest.approx([1.0, 1.0, 2 / 3, 0.5, 0.5])


def test_the_cpu_placement_keeps_the_runners_features_in_host_memory(tiny_backbone, trained_adapter):
    x, ctx = latent(0), text(0)
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner:
        stream = runner.source(x, ctx, placement="cpu")
        runner(x, torch.tensor([500.0]), ctx, stream)
        assert set(stream.cache.blocks) == set(trained_adapter.block_ids)
        assert all(f.k.device.type == "cpu" for f in stream.cache.blocks.values())
        off = runner.source(x, ctx, placement="off")
        runner(x, torch.tensor([500.0]), ctx, off)
        assert off.cache is None and off.cache_bytes() == 0   # nothing kept between steps
