"""Long videos: window plans, keyframes, overlap blending, keyframe sharing and the streaming file path."""

from __future__ import annotations

import pytest
import torch

from imvideoedit_core.model.adapter import SourceKV
from imvideoedit_core.edit.long_video import (LongEditStats, WindowConfig, WindowJob, edit_long_video, edit_video_file,
                                              keyframe_indices, overlap_ramp, plan_windows, runner_window_editor)
from imvideoedit_core.edit.sampling import EditRequest, SamplerConfig, SharedKeyframes, edit_latent
from bench.standins import PatchCodec
from imvideoedit_core.edit.streams import TwoStreamRunner
from imvideoedit_core.io.video import read_video, write_video
from tests.tiny import latent, text

CODEC = PatchCodec(channels=16, patch=2)


def clip(frames: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """A smooth moving gradient [T, H, W, 3] in 0..1, quantised to 8 bits."""
    t = torch.arange(frames, dtype=torch.float32)[:, None, None, None]
    y = torch.linspace(0, 1, size)[None, :, None, None]
    x = torch.linspace(0, 1, size)[None, None, :, None]
    rgb = torch.tensor([0.3, 0.6, 0.9]) + seed * 0.01
    return (((x + y) / 2 + 0.05 * t) * rgb % 1.0 * 255).round() / 255


# -- plans --

def test_windows_cover_the_clip_with_the_asked_overlap():
    windows = plan_windows(20, WindowConfig(window=8, overlap=2))
    assert [(w.start, w.stop) for w in windows] == [(0, 8), (6, 14), (12, 20)]
    windows = plan_windows(17, WindowConfig(window=8, overlap=2))
    assert [(w.start, w.stop) for w in windows] == [(0, 8), (6, 14), (12, 17)]  # the last one is shorter
    assert [(w.start, w.stop) for w in plan_windows(8, WindowConfig(window=8))] == [(0, 8)]


def test_wan_stride_needs_1_plus_4n_frames():
    windows = plan_windows(33, WindowConfig(window=17, overlap=5), stride=4)
    assert [(w.start, w.stop) for w in windows] == [(0, 17), (12, 29), (24, 33)]
    with pytest.raises(ValueError, match=r"the window is 16 frames.*1 \+ 4\*n"):
        plan_windows(33, WindowConfig(window=16, overlap=5), stride=4)
    with pytest.raises(ValueError, match="the clip is 32 frames"):
        plan_windows(32, WindowConfig(window=17, overlap=5), stride=4)


def test_window_longer_than_the_clip_is_refused():
    with pytest.raises(ValueError, match=r"window \(12 frames\) is longer than the clip \(10 frames\)"):
        plan_windows(10, WindowConfig(window=12))


@pytest.mark.parametrize("kwargs, message", [(dict(window=0), "at least 1"), (dict(window=4, overlap=4), "overlap"),
                                             (dict(keyframes=-1), "keyframes")])
def test_bad_window_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WindowConfig(**kwargs)


def test_keyframes_are_evenly_spaced_and_include_both_ends():
    assert keyframe_indices(33, 3) == [0, 16, 32]
    assert keyframe_indices(10, 4) == [0, 3, 6, 9]
    assert keyframe_indices(2, 5) == [0, 1]
    assert keyframe_indices(10, 0) == []
    assert overlap_ramp(3).tolist() == [0.25, 0.5, 0.75]


# -- the loop, with a fake editor that records what it was asked --

class RecordingEditor:
    """An 'edit' that adds a constant to the latent, and remembers every job."""

    def __init__(self, shift: float = 0.1):
        self.jobs: list[WindowJob] = []
        self.shift = shift

    def __call__(self, job: WindowJob) -> torch.Tensor:
        self.jobs.append(job)
        return job.source + self.shift


def run(frames: torch.Tensor, config: WindowConfig, editor) -> tuple[torch.Tensor, LongEditStats]:
    stats = LongEditStats()
    indices = keyframe_indices(frames.shape[0], config.keyframes)
    out = list(edit_long_video(iter(frames), total=frames.shape[0], keyframes=frames[indices], codec=CODEC,
                               edit=editor, config=config, stats=stats))
    return torch.stack(out), stats


def test_every_frame_comes_out_once_in_order():
    frames = clip(20)
    out, stats = run(frames, WindowConfig(window=8, overlap=2, keyframes=0), RecordingEditor(shift=0.0))
    assert out.shape == frames.shape and stats.frames_out == 20 and stats.windows == 3
    torch.testing.assert_close(out, frames, atol=1e-6, rtol=0)  # an identity edit round-trips exactly


def test_jobs_pin_keyframes_and_the_overlap():
    frames = clip(14)
    editor = RecordingEditor()
    run(frames, WindowConfig(window=8, overlap=2, keyframes=3, share_adapter=True), editor)
    keyframe_pass, first, second = editor.jobs
    assert keyframe_pass.index == -1 and keyframe_pass.source.shape[2] == 3 and keyframe_pass.keep is None
    assert first.prefix == 3 and first.source.shape[2] == 3 + 8  # keyframes prepended
    assert first.keep[0, 0, :, 0, 0].tolist() == [1, 1, 1] + [0] * 8
    assert torch.equal(first.known[:, :, :3], keyframe_pass.source + 0.1)  # pinned to the edited keyframes
    assert torch.equal(first.shared, keyframe_pass.source + 0.1)
    ramp = 1 - overlap_ramp(2)
    assert torch.allclose(second.keep[0, 0, 3:5, 0, 0], ramp) and not second.keep[0, 0, 5:].any()


def test_sharing_switches():
    frames = clip(14)
    editor = RecordingEditor()
    run(frames, WindowConfig(window=8, overlap=0, keyframes=2, share_attention=False, share_adapter=True), editor)
    assert editor.jobs[1].prefix == 0 and editor.jobs[1].keep is None and editor.jobs[1].shared is not None
    editor = RecordingEditor()
    run(frames, WindowConfig(window=8, overlap=0, keyframes=2), editor)
    assert editor.jobs[1].prefix == 2 and editor.jobs[1].shared is None
    editor = RecordingEditor()
    run(frames, WindowConfig(window=8, overlap=0, keyframes=0), editor)
    assert len(editor.jobs) == 2 and all(j.keep is None and j.shared is None for j in editor.jobs)


def test_overlap_is_cross_faded():
    """Window 0 adds 0.1, window 1 adds 0.3: the overlap frames ramp between the two."""
    frames = clip(14) * 0.5
    shifts = iter([0.1, 0.3])
    out, _ = run(frames, WindowConfig(window=8, overlap=2, keyframes=0),
                 lambda job: job.source + next(shifts))
    pixel = 0.1 / 2, 0.3 / 2  # the codec maps pixels p -> 2p - 1
    added = (out - frames).mean(dim=(1, 2, 3))
    expected = [pixel[0]] * 6 + [pixel[0] + (pixel[1] - pixel[0]) * r for r in (1 / 3, 2 / 3)] + [pixel[1]] * 6
    torch.testing.assert_close(added, torch.tensor(expected), atol=1e-5, rtol=0)


def test_memory_is_bounded_by_the_window():
    config = WindowConfig(window=8, overlap=2, keyframes=3, share_adapter=True)
    held = [run(clip(n), config, RecordingEditor())[1].peak_frames_held for n in (8, 32, 128)]
    assert held[0] <= held[1] == held[2] <= 8 + 2 + 2 * 3


def test_a_keyframe_of_another_size_is_refused_before_any_edit():
    frames, editor = clip(14), RecordingEditor()
    with pytest.raises(ValueError, match="keyframes are 8x8 but the video's frames are 16x16"):
        list(edit_long_video(iter(frames), total=14, keyframes=clip(3, size=8), codec=CODEC,
                             edit=editor, config=WindowConfig(window=8, keyframes=3)))
    assert editor.jobs == []
    with pytest.raises(ValueError, match=r"sharing needs the 3 keyframes at frames \[0, 6, 13\]"):
        list(edit_long_video(iter(frames), total=14, keyframes=clip(2), codec=CODEC,
                             edit=editor, config=WindowConfig(window=8, keyframes=3)))


def test_a_video_shorter_than_announced_is_named():
    with pytest.raises(ValueError, match="ended before frame 14"):
        list(edit_long_video(iter(clip(10)), total=14, keyframes=None, codec=CODEC, edit=RecordingEditor(),
                             config=WindowConfig(window=8, keyframes=0)))


# -- adapter sharing through the runner --

def test_shared_keys_are_appended_to_every_frame():
    kv = SourceKV(k=torch.randn(2 * 3, 4, 5), v=torch.randn(2 * 3, 4, 5))       # B=2, F=3, L=4
    shared = SourceKV(k=torch.randn(2 * 2, 4, 5), v=torch.randn(2 * 2, 4, 5))   # K=2
    out = kv.with_shared(shared, batch=2)
    assert out.k.shape == (6, 4 + 8, 5)
    assert torch.equal(out.k[4, :4], kv.k[4]) and torch.equal(out.k[4, 4:8], shared.k[2])  # batch 1, frame 1


def test_sharing_changes_the_edit_and_is_deterministic(tiny_backbone, trained_adapter):
    source, ctx = latent(1, frames=3), text(2)
    shared = latent(3, frames=2)
    config = SamplerConfig(steps=3, cfg=2.0, shift=1.0)
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner:
        plain = edit_latent(runner, EditRequest(source=source, context=ctx, negative_context=text(4),
                                                config=config)).latent
        a = edit_latent(runner, EditRequest(source=source, context=ctx, negative_context=text(4), config=config,
                                            features=[SharedKeyframes(shared)])).latent
        b = edit_latent(runner, EditRequest(source=source, context=ctx, negative_context=text(4), config=config,
                                            cache="cpu", features=[SharedKeyframes(shared)])).latent
    assert not torch.allclose(plain, a, atol=1e-4)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="shared keyframe latent"):
        with TwoStreamRunner(tiny_backbone, trained_adapter) as runner:
            edit_latent(runner, EditRequest(source=source, context=ctx, negative_context=None, config=config,
                                            features=[SharedKeyframes(latent(3, size=4))]))


def test_runner_editor_keeps_pinned_frames_exactly(tiny_backbone, trained_adapter):
    """Frames pinned with weight 1 end exactly on their known latent (sigma 0 at the last step)."""
    source, known = latent(1, frames=4), latent(5, frames=4)
    keep = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 4, 1, 1)
    with TwoStreamRunner(tiny_backbone, trained_adapter) as runner:
        edit = runner_window_editor(runner, context=text(2), negative_context=None,
                                    config=SamplerConfig(steps=4, cfg=1.0, shift=1.0))
        out = edit(WindowJob(index=0, source=source, known=known, keep=keep))
        again = edit(WindowJob(index=0, source=source, known=known, keep=keep))
    torch.testing.assert_close(out[:, :, :2], known[:, :, :2], atol=1e-6, rtol=0)
    assert not torch.allclose(out[:, :, 2:], known[:, :, 2:], atol=1e-2)
    assert torch.equal(out, again)


# -- file to file --

def test_file_to_file_streams_every_frame(tmp_path, tiny_backbone, trained_adapter):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    write_video(src, clip(13, size=16), fps=8)
    editor = RecordingEditor(shift=0.0)
    result = edit_video_file(src, dst, codec=CODEC, edit=editor, config=WindowConfig(window=6, overlap=2,
                                                                                        keyframes=2))
    assert (result.frames, result.windows, result.dropped) == (13, 3, 0)
    out = read_video(dst)
    assert out.frames.shape == (13, 16, 16, 3) and out.info.fps == pytest.approx(8)
    assert float((out.frames - read_video(src).frames).abs().mean()) < 0.02  # identity edit, lossy codec
    with pytest.raises(ValueError, match="longer than the clip"):
        edit_video_file(src, tmp_path / "never.mp4", codec=CODEC, edit=editor, config=WindowConfig(window=20))
    assert not (tmp_path / "never.mp4").exists()
