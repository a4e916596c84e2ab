"""Long Video Edit inside a real ComfyUI (in-process, CPU, tiny models): file -> windows -> file, sharing."""

from __future__ import annotations

import shutil

import pytest
import torch

from test_comfyui_inprocess import (StandInVAE, adapter_file, conditioning, host_and_core_edits, output,  # noqa: F401
                                    patched_model, tiny_wan)
from imvideoedit_core.edit.long_video import WindowJob
from imvideoedit_core.edit.sampling import SharedKeyframes
from imvideoedit_core.io.video import read_video, write_video


class StandInVideoVAE(StandInVAE):
    """The stand-in VAE with a decoder: latent frame 0 -> 1 frame, every later latent frame -> 4 frames."""

    @property
    def downscale_index_formula(self) -> tuple[int, int, int]:
        return (4, self.stride, self.stride)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        rgb = torch.einsum("dfhw,dc->fchw", latent[0], torch.linalg.pinv(self.mix))     # (F, 3, h, w)
        frames = torch.cat([rgb[:1], rgb[1:].repeat_interleave(4, 0)])                    # (1 + 4(F-1), 3, h, w)
        pixels = torch.nn.functional.interpolate(frames, scale_factor=self.stride, mode="nearest")  # (T, 3, H, W)
        return pixels.movedim(1, -1).clamp(0, 1)[None]                                   # (1, T, H, W, 3)


@pytest.fixture
def video_file(comfyui):
    """A 21-frame clip in the input folder; what the node writes under output/imve_test is removed afterwards."""
    frames = torch.rand(21, 32, 48, 3, generator=torch.Generator().manual_seed(0))
    write_video(comfyui.base / "input" / "long_clip.mp4", frames, fps=8)
    yield "long_clip.mp4"
    shutil.rmtree(comfyui.base / "output" / "imve_test", ignore_errors=True)


def run_node(comfyui, model, **overrides):
    ctx = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(3))
    kwargs = dict(model=model, vae=StandInVideoVAE(), positive=[[ctx, {}]], negative=[[torch.zeros(1, 5, 32), {}]],
                  video="long_clip.mp4", filename_prefix="imve_test/long", window=9, overlap=5, keyframes=3,
                  sharing="attention+adapter", seed=0, steps=2, cfg=2.0, shift=3.0, solver="euler", max_frames=0,
                  resize_to_multiple=16)
    kwargs.update(overrides)
    return output(comfyui.nodes["IMVELongVideoEdit"].execute(**kwargs))


@pytest.mark.parametrize("sharing", ["attention+adapter", "off"])
def test_long_video_node_writes_every_frame(comfyui, tiny_wan, adapter_file, video_file, sharing):
    model, _ = tiny_wan
    patched, _ = patched_model(comfyui, model)
    path, info, video = run_node(comfyui, patched, sharing=sharing)
    assert path.endswith(".mp4") and "21 frames in 4 windows" in info and "codec h264" in info
    written = read_video(path)
    assert written.frames.shape == (21, 32, 48, 3)
    assert video.get_dimensions() == (48, 32)  # the same file as ComfyUI's VIDEO, for Save Video and previews
    assert video.get_components().images.shape == (21, 32, 48, 3)


def test_long_video_node_names_user_errors(comfyui, tiny_wan, adapter_file, video_file):
    model, _ = tiny_wan
    patched, _ = patched_model(comfyui, model)
    with pytest.raises(ValueError, match=r"window \(25 frames\) is longer than the clip \(21 frames"):
        run_node(comfyui, patched, window=25)
    with pytest.raises(ValueError, match="the window is 8 frames"):
        run_node(comfyui, patched, window=8, overlap=0)
    with pytest.raises(ValueError, match="carries no ImVideoEdit adapter"):
        run_node(comfyui, model)


def test_window_editor_keeps_pinned_frames(comfyui, tiny_wan, adapter_file):
    from imvideoedit_pack.nodes.long_video_nodes import comfy_window_editor
    model, _ = tiny_wan
    patched, _ = patched_model(comfyui, model)
    ctx = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(3))
    source = torch.randn(1, 16, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    known = torch.randn(1, 16, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    keep = torch.tensor([1.0, 0.5, 0.0, 0.0]).reshape(1, 1, 4, 1, 1)
    edit = comfy_window_editor(patched, [[ctx, {}]], [[torch.zeros(1, 5, 32), {}]], seed=0, steps=3, cfg=2.0,
                               shift=3.0, solver="euler")
    out = edit(WindowJob(index=0, source=source, known=known, keep=keep, shared=known[:, :, :2]))
    torch.testing.assert_close(out[:, :, 0], known[:, :, 0], atol=1e-5, rtol=0)  # pinned with weight 1: exact
    assert not torch.allclose(out[:, :, 2:], known[:, :, 2:], atol=1e-2)


def test_shared_keyframes_match_the_core_engine(comfyui, tiny_wan, adapter_file):
    """The host's keyframe sharing (SHARED_OPTION) gives the core's edit_latent(shared=...) result."""
    from imvideoedit_pack.nodes.host import SHARED_OPTION
    model, core = tiny_wan
    patched, _ = patched_model(comfyui, model)
    latent = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    shared = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(8))
    sharing = patched.clone()
    sharing.model_options["transformer_options"] = {**sharing.model_options.get("transformer_options", {}),
                                                    SHARED_OPTION: shared}
    got, ref = host_and_core_edits(model, sharing, core, adapter_file, latent, *conditioning(comfyui, latent),
                                   features=[SharedKeyframes(model.model.process_latent_in(shared))])
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=1e-4)


def test_cancel_between_steps_leaves_no_output_file(comfyui, tiny_wan, adapter_file, video_file, monkeypatch):
    import comfy.model_management as mm
    import latent_preview
    model, _ = tiny_wan
    patched, _ = patched_model(comfyui, model)
    calls = []

    def cancelling(model, steps, x0_output_dict=None):
        calls.append(steps)

        def callback(step, x0, x, total):
            if len(calls) == 3 and step == 1:  # during the third window
                mm.interrupt_current_processing(True)
                mm.throw_exception_if_processing_interrupted()
        return callback

    monkeypatch.setattr(latent_preview, "prepare_callback", cancelling)
    with pytest.raises(mm.InterruptProcessingException):
        run_node(comfyui, patched, sharing="off")
    leftovers = [p for p in (comfyui.base / "output").rglob("*") if p.is_file()]
    assert not leftovers  # the mp4 is written atomically: no half-written file, no temporary file
