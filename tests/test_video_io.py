"""Video I/O: round trips on generated clips and on the real WebP clips of comfyui-workflow-templates-media-video.

Every clip is generated at test time under tmp_path (no media in the repository). Synthetic frames carry their own
index as an 8-bit black/white code in a top band, so a test can tell which source frame came back after lossy
encoding, resampling and resizing.

Codec tolerance: the mp4 writer falls back to MPEG-4 Part 2 ('mp4v') on the opencv-python wheels; round trips are
accepted at a mean absolute error below 8/255 per channel (measured: about 1-3/255 on these clips).
"""

from __future__ import annotations

import importlib.util
import math
import os
import pathlib
from dataclasses import dataclass

import cv2
import av
import numpy as np
import pytest
import torch

from imvideoedit_core.io import video as video_io
from imvideoedit_core.io.video import (
    MP4_CODECS,
    ReadOptions,
    VideoReadError,
    VideoWriteError,
    VideoWriter,
    iter_frames,
    probe_video,
    read_video,
    write_video,
)

WIDTH, HEIGHT = 96, 64
BACKGROUND = (40, 90, 160)  # RGB
SQUARE = (230, 40, 30)  # RGB, red: a BGR/RGB swap shows up as blue
MEAN_ABS_TOLERANCE = 8 / 255  # lossy mp4 round trip, per channel, in 0..1 units


# --------------------------------------------------------------------------------------------------------------
# Synthetic clips
# --------------------------------------------------------------------------------------------------------------


def make_frame(index: int, *, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """(H, W, 3) uint8 RGB: the index as 8 black/white cells in the top quarter, a red square moving below."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = BACKGROUND
    band = height // 4
    for bit in range(8):
        cell = slice(bit * width // 8, (bit + 1) * width // 8)
        frame[:band, cell] = 255 if (index >> bit) & 1 else 0
    side = height // 4
    x = (index * 3) % (width - side)
    frame[height // 2 : height // 2 + side, x : x + side] = SQUARE
    return frame


def decode_index(frame: np.ndarray) -> int:
    """Inverse of make_frame's code; reads the centre of each cell so codec ringing at the edges does not matter."""
    height, width = frame.shape[:2]
    band = frame[1 : height // 4 - 1]
    index = 0
    for bit in range(8):
        lo, hi = bit * width // 8, (bit + 1) * width // 8
        margin = max(1, (hi - lo) // 4)
        if band[:, lo + margin : hi - margin].mean() > 127:
            index |= 1 << bit
    return index


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[T, H, W, 3] float 0..1 -> uint8 numpy."""
    return (frames * 255.0).round().to(torch.uint8).numpy()


def indices_of(frames: torch.Tensor) -> list[int]:
    return [decode_index(frame) for frame in to_uint8(frames)]


def make_frames(count: int, **size) -> np.ndarray:
    return np.stack([make_frame(i, **size) for i in range(count)])  # [T, H, W, 3] uint8


def write_animation(path: pathlib.Path, frames: np.ndarray, *, duration_ms: int) -> None:
    animation = cv2.Animation()
    animation.frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
    animation.durations = [duration_ms] * len(frames)
    assert cv2.imwriteanimation(str(path), animation)


@pytest.fixture(scope="module")
def clip30(tmp_path_factory) -> pathlib.Path:
    """30 frames, 96x64, 30 fps, written by the module under test."""
    path = tmp_path_factory.mktemp("clips") / "clip30.mp4"
    write_video(path, make_frames(30), fps=30)
    return path


@pytest.fixture
def fresh_codec_cache(monkeypatch):
    """The OpenCV fallback (as without PyAV), with no codec check remembered."""
    monkeypatch.setattr(video_io, "pyav_h264_available", lambda: False)
    video_io._pick_codec.cache_clear()
    yield
    video_io._pick_codec.cache_clear()


# --------------------------------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------------------------------


def test_round_trip_keeps_shape_fps_order_and_colours(clip30):
    video = read_video(clip30)
    assert video.frames.shape == (30, HEIGHT, WIDTH, 3)
    assert video.frames.dtype == torch.float32
    assert 0.0 <= video.frames.min() and video.frames.max() <= 1.0
    assert video.info.fps == pytest.approx(30.0)
    assert video.info.frame_count == 30
    assert video.source_indices == tuple(range(30))
    assert indices_of(video.frames) == list(range(30))

    expected = torch.from_numpy(make_frames(30)).float() / 255
    assert (video.frames - expected).abs().mean() < MEAN_ABS_TOLERANCE
    frame = to_uint8(video.frames[10:11])[0]
    side = HEIGHT // 4
    x = 30 + side // 2  # centre of the square in frame 10
    assert np.abs(frame[HEIGHT // 2 + side // 2, x].astype(int) - SQUARE).max() < 30  # red, not blue: RGB order
    assert np.abs(frame[HEIGHT - 3, WIDTH - 3].astype(int) - BACKGROUND).max() < 15


def test_writer_accepts_float_tensors_batches_and_single_frames(tmp_path):
    frames = torch.from_numpy(make_frames(6)).float() / 255  # [T, H, W, 3] float 0..1
    path = tmp_path / "mixed.mp4"
    with VideoWriter(path, fps=12) as writer:
        writer.write(frames[:3])  # torch batch
        writer.write(frames[3].numpy())  # numpy float frame
        writer.write(make_frame(4))  # numpy uint8 frame
        writer.write(torch.from_numpy(make_frame(5)))  # torch uint8 frame
    assert writer.frames_written == 6
    assert indices_of(read_video(path).frames) == [0, 1, 2, 3, 4, 5]


def test_iter_frames_streams_uint8_rgb(clip30):
    frames = iter_frames(clip30, ReadOptions(max_frames=3))
    assert not isinstance(frames, (list, tuple))
    first = next(frames)
    assert first.dtype == np.uint8 and first.shape == (HEIGHT, WIDTH, 3)
    assert [decode_index(first)] + [decode_index(f) for f in frames] == [0, 1, 2]


def test_streaming_transcode(clip30, tmp_path):
    info = write_video(tmp_path / "copy.mp4", iter_frames(clip30, ReadOptions(every_nth=3)), fps=10)
    assert info.frame_count == 10
    assert indices_of(read_video(info.path).frames) == list(range(0, 30, 3))


def test_unicode_paths(tmp_path):
    video_path = tmp_path / "vidéo 日本.mp4"
    write_video(video_path, make_frames(4), fps=8)
    assert indices_of(read_video(video_path).frames) == [0, 1, 2, 3]
    gif_path = tmp_path / "анимация.gif"
    write_animation(gif_path, make_frames(4), duration_ms=100)
    assert probe_video(gif_path).frame_count == 4


# --------------------------------------------------------------------------------------------------------------
# Read options
# --------------------------------------------------------------------------------------------------------------

# Source: 30 frames at 30 fps. Expected indices are worked out by hand from the documented rule
# (skip -> pick floor(t * source_fps) at t = j / target_fps -> every n-th -> cap).
OPTION_CASES = {
    "default": (ReadOptions(), list(range(30)), 30.0),
    "fps 30->12": (ReadOptions(target_fps=12), [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27], 12.0),
    "fps 30->60 repeats": (ReadOptions(target_fps=60, max_frames=6), [0, 0, 1, 1, 2, 2], 60.0),
    "skip 25": (ReadOptions(skip_first=25), [25, 26, 27, 28, 29], 30.0),
    "every 4th": (ReadOptions(every_nth=4), [0, 4, 8, 12, 16, 20, 24, 28], 7.5),
    "cap 7": (ReadOptions(max_frames=7), [0, 1, 2, 3, 4, 5, 6], 30.0),
    "cap 0 = all": (ReadOptions(max_frames=0), list(range(30)), 30.0),
    "all, in order": (ReadOptions(skip_first=3, target_fps=15, every_nth=2, max_frames=4), [3, 7, 11, 15], 7.5),
}


@pytest.mark.parametrize("options, expected, fps", OPTION_CASES.values(), ids=OPTION_CASES.keys())
def test_read_options_pick_the_right_frames(clip30, options, expected, fps):
    video = read_video(clip30, options)
    assert indices_of(video.frames) == expected  # from the pixels
    assert list(video.source_indices) == expected
    assert video.info.fps == pytest.approx(fps)
    planned = probe_video(clip30).output_info(options)
    assert planned.frame_count == video.info.frame_count == len(expected)


def test_resize_to_multiple_of_16_scales(tmp_path):
    path = tmp_path / "odd_multiple.mp4"
    write_video(path, make_frames(5, width=100, height=70), fps=10)
    video = read_video(path, ReadOptions(resize_to_multiple=16))
    assert video.frames.shape == (5, 64, 96, 3)  # 100 -> 96, 70 -> 64: nearest multiples
    assert indices_of(video.frames) == [0, 1, 2, 3, 4]  # scaled, not cropped: the code band survives

    one_side = read_video(path, ReadOptions(width=48, resize_to_multiple=16))
    assert one_side.frames.shape[1:3] == (32, 48)  # height 70 * 48 / 100 = 33.6 -> 32
    enlarged = read_video(path, ReadOptions(width=200, height=140, max_frames=1))
    assert enlarged.frames.shape == (1, 140, 200, 3)


@pytest.mark.parametrize(
    "size, options, expected",
    [
        ((350, 350), ReadOptions(resize_to_multiple=16), (352, 352)),
        ((360, 200), ReadOptions(resize_to_multiple=16), (368, 208)),  # 22.5 and 12.5 multiples: halves round up
        ((5, 5), ReadOptions(resize_to_multiple=16), (16, 16)),  # at least one multiple
        ((832, 480), ReadOptions(), (832, 480)),
        ((832, 480), ReadOptions(height=240), (416, 240)),
        ((100, 70), ReadOptions(width=50, height=50, resize_to_multiple=16), (48, 48)),
    ],
)
def test_output_size(size, options, expected):
    assert options.output_size(*size) == expected


@pytest.mark.parametrize(
    "fields, mentions",
    [
        (dict(every_nth=0), "every_nth"),
        (dict(max_frames=-1), "max_frames"),
        (dict(skip_first=1.5), "skip_first"),
        (dict(skip_first=True), "skip_first"),
        (dict(target_fps=-3), "target_fps"),
        (dict(target_fps=float("nan")), "target_fps"),
        (dict(target_fps="30"), "target_fps"),
        (dict(resize_to_multiple=-16), "resize_to_multiple"),
        (dict(width=-1), "width"),
        (dict(height=2.0), "height"),
    ],
)
def test_bad_read_options_say_what_to_change(fields, mentions):
    with pytest.raises(ValueError, match=rf"ReadOptions\.{mentions} must be .*got"):
        ReadOptions(**fields)


def test_read_options_are_keyword_only():
    with pytest.raises(TypeError):
        ReadOptions(12)


def test_container_without_a_frame_count_is_flagged(tmp_path):
    path = tmp_path / "clip.mkv"  # Matroska stores no frame count: OpenCV estimates duration * fps
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), 24.0, (WIDTH, HEIGHT))
    for frame in make_frames(6):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    assert not probe_video(path).frame_count_exact
    video = read_video(path)
    assert indices_of(video.frames) == list(range(6)) and video.info.frame_count_exact


def test_skipping_past_the_end_is_a_clear_error(clip30):
    with pytest.raises(ValueError, match="lower skip_first"):
        read_video(clip30, ReadOptions(skip_first=40))


# --------------------------------------------------------------------------------------------------------------
# Probe and memory estimate
# --------------------------------------------------------------------------------------------------------------


def test_probe_video(clip30):
    info = probe_video(clip30)
    assert (info.width, info.height, info.frame_count) == (WIDTH, HEIGHT, 30)
    assert info.fps == pytest.approx(30.0)
    assert info.frame_count_exact
    assert info.duration_s == pytest.approx(1.0)
    assert info.decoder == "ffmpeg"
    assert info.codec not in ("", "unknown")
    assert info.path == os.fspath(clip30)


def test_memory_estimate_matches_the_decode(clip30):
    info = probe_video(clip30)
    assert info.estimate_decode_bytes() == 30 * HEIGHT * WIDTH * 3 * 4
    options = ReadOptions(target_fps=12, resize_to_multiple=32)
    video = read_video(clip30, options)
    assert info.estimate_decode_bytes(options) == video.frames.numel() * video.frames.element_size()


def test_read_refuses_over_the_memory_budget(clip30):
    with pytest.raises(ValueError, match=r"GiB.*lower max_frames"):
        read_video(clip30, max_bytes=10 * HEIGHT * WIDTH * 3 * 4)
    assert read_video(clip30, ReadOptions(max_frames=10), max_bytes=10 * HEIGHT * WIDTH * 3 * 4).info.frame_count == 10


def test_on_frame_reports_progress_and_can_cancel(clip30):
    seen = []
    read_video(clip30, ReadOptions(max_frames=4), on_frame=seen.append)
    assert seen == [1, 2, 3, 4]

    def cancel(done: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        read_video(clip30, on_frame=cancel)


# --------------------------------------------------------------------------------------------------------------
# Writer: codec, odd sizes, atomicity
# --------------------------------------------------------------------------------------------------------------


def test_writer_writes_h264_that_browsers_play(tmp_path):
    info = write_video(tmp_path / "a.mp4", make_frames(2), fps=10)
    assert info.codec == "h264"
    with VideoWriter(tmp_path / "b.mp4", fps=10) as writer:
        writer.write(make_frames(2))
    assert writer.codec == info.codec and writer.is_h264
    assert sorted(os.listdir(tmp_path)) == ["a.mp4", "b.mp4"]  # temporary files moved into place, none left over
    with av.open(str(tmp_path / "a.mp4")) as container:  # checked with PyAV, not with our own reader
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert container.format.name.split(",")[0] == "mov" and float(stream.average_rate) == 10.0
        assert sum(1 for _ in container.decode(stream)) == 2


def test_without_pyav_the_opencv_fallback_says_what_it_wrote(tmp_path, fresh_codec_cache, caplog):
    with caplog.at_level("WARNING", logger="imvideoedit_core.io.video"):
        info = write_video(tmp_path / "a.mp4", make_frames(2), fps=10)
    assert info.codec in MP4_CODECS
    if info.codec == "mp4v":  # the opencv-python wheels have no H.264 encoder
        assert "MPEG-4 Part 2 (mp4v)" in caplog.text and "pip install av" in caplog.text
    assert indices_of(read_video(info.path).frames) == [0, 1]


def test_writer_falls_back_when_a_codec_writes_nothing(tmp_path, monkeypatch, fresh_codec_cache):
    class SilentWriter:  # opens fine, writes nothing: what some OpenCV builds do
        def isOpened(self) -> bool:
            return True

        def write(self, frame) -> None:
            pass

        def release(self) -> None:
            pass

    real_open = video_io._open_cv_writer

    def open_writer(path, *, fourcc, fps, size):
        return SilentWriter() if fourcc == "avc1" else real_open(path, fourcc=fourcc, fps=fps, size=size)

    monkeypatch.setattr(video_io, "_open_cv_writer", open_writer)
    info = write_video(tmp_path / "fallback.mp4", make_frames(3), fps=10, codecs=("avc1", "mp4v"))
    assert info.codec == "mp4v"
    assert indices_of(read_video(info.path).frames) == [0, 1, 2]


def test_writer_says_when_no_codec_works(tmp_path, fresh_codec_cache):
    path = tmp_path / "none.mp4"
    with pytest.raises(VideoWriteError, match="ZZZZ"):
        write_video(path, make_frames(2), fps=10, codecs=("ZZZZ",))
    assert os.listdir(tmp_path) == []
    assert write_video(path, make_frames(2), fps=10, codecs=("ZZZZ", "mp4v")).codec == "mp4v"


def test_odd_sizes_are_padded_to_even(tmp_path):
    frames = make_frames(3, width=95, height=63)
    info = write_video(tmp_path / "odd.mp4", frames, fps=10)
    assert (info.width, info.height) == (96, 64)
    video = read_video(info.path)
    assert video.frames.shape == (3, 64, 96, 3)
    back = to_uint8(video.frames)
    assert np.abs(back[:, :63, :95].astype(int) - frames).mean() < MEAN_ABS_TOLERANCE * 255


def test_failed_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous video")

    def frames():
        yield from make_frames(5)
        yield make_frame(5, width=WIDTH + 2)

    with pytest.raises(ValueError, match="same size"):
        write_video(path, frames(), fps=10)
    assert path.read_bytes() == b"previous video"  # untouched
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]  # no temporary file left


def test_exception_inside_the_with_block_aborts(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(tmp_path / "x.mp4", fps=10) as writer:
            writer.write(make_frames(3))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with pytest.raises(VideoWriteError, match="aborted"):
        writer.close()


@pytest.mark.parametrize(
    "frames, error, match",
    [
        (np.zeros((2, 8, 8, 4), np.uint8), ValueError, r"expected \[H, W, 3\]"),
        (np.zeros((8, 8), np.uint8), ValueError, r"expected \[H, W, 3\]"),
        (np.zeros((2, 8, 8, 3), np.int32), ValueError, "dtype"),
        ([[0, 1, 2]], TypeError, "numpy array or a torch tensor"),
    ],
)
def test_writer_rejects_bad_frames(tmp_path, frames, error, match):
    with pytest.raises(error, match=match):
        write_video(tmp_path / "bad.mp4", frames, fps=10)
    assert os.listdir(tmp_path) == []


def test_writer_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"\*\.mp4"):
        VideoWriter(tmp_path / "clip.avi", fps=10)
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "clip.mp4", fps=0)
    with pytest.raises(ValueError, match="at least one frame"):
        write_video(tmp_path / "empty.mp4", [], fps=10)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------------------------
# Unreadable files
# --------------------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        probe_video(path)
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        iter_frames(path)  # eager, not at the first next()


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoReadError, match=r"noise\.mp4.*cannot open it.*re-encode"):
        read_video(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty"):
        probe_video(path)


def test_truncated_mp4(clip30, tmp_path):
    data = clip30.read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match=r"half\.mp4.*truncated or corrupt"):
        read_video(path)


def test_truncated_avi_stops_short_of_its_header(tmp_path):
    full = tmp_path / "full.avi"
    writer = cv2.VideoWriter(str(full), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (WIDTH, HEIGHT))
    for frame in make_frames(30):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    data = full.read_bytes()
    path = tmp_path / "half.avi"
    path.write_bytes(data[: len(data) // 2])

    assert probe_video(path).frame_count == 30  # the header still promises 30
    assert indices_of(read_video(path, ReadOptions(max_frames=2)).frames) == [0, 1]  # the readable part
    with pytest.raises(VideoReadError, match=r"half\.avi.*decoding stopped after \d+ frames.*says it has 30"):
        read_video(path)


def test_truncated_animated_webp(tmp_path):
    full = tmp_path / "full.webp"
    write_animation(full, make_frames(8), duration_ms=100)
    data = full.read_bytes()
    path = tmp_path / "half.webp"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match=r"half\.webp.*webp.*truncated or corrupt"):
        read_video(path)


# --------------------------------------------------------------------------------------------------------------
# Animated images (cv2.imreadanimation)
# --------------------------------------------------------------------------------------------------------------


def test_apng_is_read_exactly_with_fps_from_durations(tmp_path):
    frames = make_frames(12)
    path = tmp_path / "anim.png"
    write_animation(path, frames, duration_ms=50)
    info = probe_video(path)
    assert (info.decoder, info.codec, info.frame_count, info.fps) == ("imgcodecs", "png", 12, pytest.approx(20.0))
    video = read_video(path)
    assert np.array_equal(to_uint8(video.frames), frames)  # lossless, and RGB order kept


@pytest.mark.parametrize("suffix, fps", [(".gif", 25.0), (".webp", 12.5)])
def test_gif_and_webp_animations(tmp_path, suffix, fps):
    path = tmp_path / f"anim{suffix}"
    write_animation(path, make_frames(10), duration_ms=round(1000 / fps))
    video = read_video(path, ReadOptions(every_nth=3))
    assert video.source.fps == pytest.approx(fps)
    assert indices_of(video.frames) == [0, 3, 6, 9]


def test_transparent_pixels_keep_their_stored_colour_as_in_pair_images(tmp_path):
    bgra = np.zeros((8, 8, 4), dtype=np.uint8)
    bgra[..., 2] = 200  # red
    bgra[..., 3] = np.arange(8, dtype=np.uint8) * 36  # alpha ramp along x: 0 .. 252
    animation = cv2.Animation()
    animation.frames, animation.durations = [bgra, bgra], [100, 100]
    path = tmp_path / "alpha.png"
    assert cv2.imwriteanimation(str(path), animation)
    frames = to_uint8(read_video(path).frames)
    assert (frames[..., 0] == 200).all() and (frames[..., 1:] == 0).all()  # one alpha policy: dropped


def test_without_imreadanimation_animations_fall_back_to_ffmpeg(tmp_path, monkeypatch):
    gif, webp = tmp_path / "anim.gif", tmp_path / "anim.webp"
    write_animation(gif, make_frames(4), duration_ms=100)
    write_animation(webp, make_frames(4), duration_ms=100)
    monkeypatch.delattr(cv2, "imreadanimation")  # as on OpenCV < 4.11
    video = read_video(gif)
    assert video.source.decoder == "ffmpeg" and indices_of(video.frames) == [0, 1, 2, 3]
    try:  # the opencv-python 5.0 wheel's FFmpeg backend decoded no WebP frame; 5.1's decodes them all
        video = read_video(webp)
    except VideoReadError as error:
        assert "opencv-python >= 4.11" in str(error)
    else:
        assert video.source.decoder == "ffmpeg" and indices_of(video.frames) == [0, 1, 2, 3]


def test_without_imreadanimation_an_animation_ffmpeg_cannot_decode_names_the_fix(tmp_path, monkeypatch):
    webp = tmp_path / "anim.webp"
    write_animation(webp, make_frames(4), duration_ms=100)
    monkeypatch.delattr(cv2, "imreadanimation")
    opened = cv2.VideoCapture

    class DecodesNothing:  # what the opencv-python 5.0 wheel's FFmpeg backend did with an animated WebP
        def __init__(self, *args):
            self._cap = opened(*args)

        def isOpened(self):
            return self._cap.isOpened()

        def read(self):
            return False, None

        def release(self):
            self._cap.release()

    monkeypatch.setattr(cv2, "VideoCapture", DecodesNothing)
    with pytest.raises(VideoReadError, match=r"anim\.webp.*no decodable video frame.*opencv-python >= 4\.11"):
        read_video(webp)


def test_animation_read_in_chunks_matches_one_pass(tmp_path, monkeypatch):
    path = tmp_path / "anim.png"
    write_animation(path, make_frames(12), duration_ms=40)
    options = ReadOptions(skip_first=1, every_nth=2)
    whole = read_video(path, options)
    monkeypatch.setattr(video_io, "ANIMATION_CHUNK_BYTES", WIDTH * HEIGHT * 4 * 3)  # 3 frames per chunk
    chunked = read_video(path, options)
    assert chunked.source_indices == whole.source_indices == (1, 3, 5, 7, 9, 11)
    assert torch.equal(chunked.frames, whole.frames)


# --------------------------------------------------------------------------------------------------------------
# Real clips: animated WebP from comfyui-workflow-templates-media-video
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebPHeader:
    width: int
    height: int
    durations_ms: tuple[int, ...]  # one per ANMF (animation frame) chunk


def read_webp_header(path: pathlib.Path) -> WebPHeader:
    """Canvas size and frame durations straight from the RIFF chunks, independent of OpenCV."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP", path
    width = height = 0
    durations = []
    pos = 12
    while pos + 8 <= len(data):
        fourcc, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = data[pos + 8 : pos + 8 + size]
        if fourcc == b"VP8X":  # flags(1) reserved(3) canvas_width-1(3) canvas_height-1(3)
            width, height = 1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little")
        elif fourcc == b"ANMF":  # x(3) y(3) width-1(3) height-1(3) duration(3) flags(1)
            durations.append(int.from_bytes(body[12:15], "little"))
        pos += 8 + size + (size & 1)
    return WebPHeader(width=width, height=height, durations_ms=tuple(durations))


@pytest.fixture(scope="module")
def real_clips() -> list[tuple[pathlib.Path, WebPHeader]]:
    """The two smallest animated clips of the package, with their headers."""
    spec = importlib.util.find_spec("comfyui_workflow_templates_media_video")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("comfyui-workflow-templates-media-video is not installed (pip install -r requirements-dev.txt)")
    folder = pathlib.Path(next(iter(spec.submodule_search_locations))) / "templates"
    clips = []
    for path in sorted(folder.glob("*.webp"), key=lambda p: (p.stat().st_size, p.name)):
        header = read_webp_header(path)
        if len(header.durations_ms) > 1:
            clips.append((path, header))
        if len(clips) == 2:
            return clips
    pytest.skip(f"fewer than two animated WebP clips under {folder}")


def test_real_clips_match_their_headers(real_clips):
    for path, header in real_clips:
        info = probe_video(path)
        assert (info.width, info.height) == (header.width, header.height)
        assert info.frame_count == len(header.durations_ms)
        assert info.fps == pytest.approx(1000 * len(header.durations_ms) / sum(header.durations_ms))
        assert info.decoder == "imgcodecs" and info.codec == "webp"
        video = read_video(path)
        assert video.frames.shape == (len(header.durations_ms), header.height, header.width, 3)
        assert 0.05 < video.frames.mean() < 0.95  # real content, not a blank decode


def test_real_clip_with_options(real_clips):
    path, header = real_clips[0]
    options = ReadOptions(target_fps=8, resize_to_multiple=16, max_frames=5)
    video = read_video(path, options)
    source_fps = 1000 * len(header.durations_ms) / sum(header.durations_ms)
    expected = [math.floor(j * source_fps / 8 + 1e-6) for j in range(5)]
    assert list(video.source_indices) == expected
    assert video.frames.shape == (5, round(header.height / 16) * 16, round(header.width / 16) * 16, 3)


def test_real_clip_round_trips_through_mp4(real_clips, tmp_path):
    path, header = real_clips[0]
    source = read_video(path)
    info = write_video(tmp_path / "real.mp4", source.frames, fps=source.info.fps)
    back = read_video(info.path)
    even = (header.height + header.height % 2, header.width + header.width % 2)
    assert back.frames.shape == (source.info.frame_count, *even, 3)
    assert back.info.fps == pytest.approx(source.info.fps, abs=0.01)
    crop = back.frames[:, : header.height, : header.width]
    assert (crop - source.frames).abs().mean() < MEAN_ABS_TOLERANCE
