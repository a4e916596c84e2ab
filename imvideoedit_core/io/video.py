"""Video I/O: probe a file and decode it as a stream (OpenCV), encode frames to H.264 mp4 atomically (PyAV).

Decoding (chosen per file by `_open_source`):
  * Video containers (mp4, mov, mkv, webm, avi, ...) go through OpenCV's FFmpeg backend, `cv2.VideoCapture(path,
    cv2.CAP_FFMPEG)`. Naming the backend keeps OpenCV's image-sequence backend from reading '%d' in a file name as
    a pattern.
  * Animated WebP, GIF, APNG and AVIF (and still images, as one-frame videos) go through OpenCV's imgcodecs
    animation API, `cv2.imreadanimation` (OpenCV >= 4.11). On the opencv-python 5.0 wheel the FFmpeg backend opens
    an animated WebP but decodes no frame ("image data not found"; 5.1's decodes them), while
    `cv2.imreadanimation` decodes all of them on both, so every file that imgcodecs recognises
    (`cv2.haveImageReader`) is read this way. The frame rate of such files
    comes from the frame durations stored in the file; files without durations get `DEFAULT_ANIMATION_FPS`.

Paths: both decoders and the writer take `str` paths; on Linux OpenCV hands them to FFmpeg/libwebp as UTF-8 bytes,
so non-ASCII file names work (the tests check one).

Encoding: `VideoWriter` writes H.264 (libx264, yuv420p, crf `H264_CRF`) in mp4 through PyAV, which ComfyUI
already depends on and whose wheels ship libx264: the files play in browsers and in ComfyUI's video preview.
Without PyAV it falls back to OpenCV's FFmpeg backend, trying H.264 FourCCs ('avc1', 'H264', 'X264') and then
'mp4v' (MPEG-4 Part 2); the opencv-python wheels have no H.264 software encoder, so that gives 'mp4v', which plays
in VLC and mpv but not in browsers, and a logged warning says so. `writer.codec` says what was written ('h264' or
the FourCC). Each OpenCV codec is checked by writing one frame and reading it back, because some builds open a
writer that silently writes nothing. Reading stays on OpenCV (see docs/decisions.md).
Odd frame sizes are padded by one replicated row/column to even size (H.264 and MPEG-4 with 4:2:0 chroma need
even sizes; OpenCV's mp4v writer otherwise crops silently). Files are written to a hidden temporary file in the
target folder and moved into place with `os.replace`, so a crash or cancel never leaves a half-written video.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import cv2
import numpy as np
import torch

from .images import opencv_to_rgb

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ANIMATION_FPS",
    "DEFAULT_FPS",
    "MP4_CODECS",
    "DecodedVideo",
    "ReadOptions",
    "VideoInfo",
    "VideoReadError",
    "VideoWriteError",
    "VideoWriter",
    "iter_frames",
    "probe_video",
    "read_video",
    "write_video",
]

DEFAULT_FPS = 25.0  # for a container that states no frame rate
DEFAULT_ANIMATION_FPS = 10.0  # for an animated image without frame durations (what browsers use for GIFs)
ANIMATION_CHUNK_BYTES = 256 * 2**20  # decoded animation frames held at once (BGRA uint8)
MP4_CODECS: tuple[str, ...] = ("avc1", "H264", "X264", "mp4v")  # tried in this order
_H264_TAGS = frozenset({"avc1", "h264", "H264", "x264", "X264"})
# Containers whose header stores the number of frames; elsewhere OpenCV estimates it from duration * fps.
_CONTAINERS_WITH_FRAME_COUNT = frozenset({".mp4", ".m4v", ".mov", ".avi", ".3gp"})
_INDEX_EPS = 1e-6  # absorbs float error in frame-index arithmetic (e.g. 3 * 29.97 / 29.97 -> 2.9999999)

_REENCODE_HINT = (
    "Check that the file was copied or downloaded completely, or re-encode it to H.264 mp4, "
    "e.g. `ffmpeg -i INPUT -c:v libx264 -pix_fmt yuv420p OUTPUT.mp4`."
)


class VideoReadError(ValueError):
    """A file exists but cannot be decoded: unsupported, corrupt, truncated, or without video frames."""


class VideoWriteError(RuntimeError):
    """OpenCV could not write the video (no working codec, or it wrote nothing)."""


# --------------------------------------------------------------------------------------------------------------
# Read options: which source frames become output frames, and at what size
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ReadOptions:
    """What to decode. The options apply in this order:

    1. ``skip_first``: drop this many frames at the start of the file.
    2. ``target_fps``: resample the rest to this rate by picking, for output time t = j / target_fps, the source
       frame shown at that time (index floor(t * source_fps)); no interpolation. Downsampling drops frames,
       upsampling repeats them. ``None`` or 0 keeps the source rate.
    3. ``every_nth``: keep every n-th frame of the resampled stream (the output fps is divided by n, so playback
       speed is preserved).
    4. ``max_frames``: stop after this many output frames (``None`` or 0: all).
    5. Resize every kept frame (scaling, never cropping): to ``width`` x ``height`` when given (one of them alone
       keeps the aspect ratio), then, when ``resize_to_multiple`` is m > 0, each side is rounded to the nearest
       multiple of m (halves round up, at least m). Rounding changes the aspect ratio by less than m/2 pixels per
       side. Shrinking uses cv2.INTER_AREA, enlarging cv2.INTER_LINEAR.
    """

    target_fps: float | None = None
    max_frames: int | None = None
    skip_first: int = 0
    every_nth: int = 1
    resize_to_multiple: int = 0
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        _check_fps_option(self.target_fps)
        _check_int_option("max_frames", self.max_frames, minimum=0, allow_none=True, hint="0 or None reads all frames")
        _check_int_option("skip_first", self.skip_first, minimum=0, allow_none=False, hint="0 skips nothing")
        _check_int_option("every_nth", self.every_nth, minimum=1, allow_none=False, hint="1 keeps every frame")
        _check_int_option(
            "resize_to_multiple", self.resize_to_multiple, minimum=0, allow_none=False, hint="0 keeps the size"
        )
        _check_int_option("width", self.width, minimum=0, allow_none=True, hint="0 or None keeps the width")
        _check_int_option("height", self.height, minimum=0, allow_none=True, hint="0 or None keeps the height")

    def source_index(self, k: int, source_fps: float) -> int:
        """Index in the file of output frame k (before the max_frames cap)."""
        j = k * self.every_nth  # index in the skipped, resampled stream
        if not self.target_fps:
            return self.skip_first + j
        return self.skip_first + math.floor(j * source_fps / self.target_fps + _INDEX_EPS)

    def iter_source_indices(self, source_fps: float) -> Iterator[int]:
        """Source index of output frame 0, 1, 2, ...: non-decreasing, repeats when upsampling, stops at max_frames."""
        k = 0
        while not self.max_frames or k < self.max_frames:
            yield self.source_index(k, source_fps)
            k += 1

    def output_frame_count(self, *, source_fps: float, source_frame_count: int) -> int:
        """Number of output frames from a file with this many frames."""
        available = source_frame_count - self.skip_first
        if available <= 0:
            return 0
        source_per_output = self.every_nth * (source_fps / self.target_fps if self.target_fps else 1.0)
        count = math.ceil(available / source_per_output)
        # Settle float error at the boundary with the exact rule the decoder uses.
        while count > 0 and self.source_index(count - 1, source_fps) >= source_frame_count:
            count -= 1
        while self.source_index(count, source_fps) < source_frame_count:
            count += 1
        return min(count, self.max_frames) if self.max_frames else count

    def output_fps(self, source_fps: float) -> float:
        """Frame rate of the output: the resampled rate divided by every_nth."""
        return (self.target_fps or source_fps) / self.every_nth

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of output frames for a source of this size."""
        target_w: float = self.width or 0
        target_h: float = self.height or 0
        if target_w and not target_h:
            target_h = height * target_w / width
        elif target_h and not target_w:
            target_w = width * target_h / height
        elif not target_w and not target_h:
            target_w, target_h = width, height
        m = self.resize_to_multiple
        if m:
            return _round_to_multiple(target_w, m), _round_to_multiple(target_h, m)
        return max(1, round(target_w)), max(1, round(target_h))


def _round_to_multiple(x: float, multiple: int) -> int:
    """Nearest multiple of `multiple` (halves round up), at least `multiple`."""
    return max(multiple, math.floor(x / multiple + 0.5) * multiple)


def _check_int_option(name: str, value: object, *, minimum: int, allow_none: bool, hint: str) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        accepted = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"ReadOptions.{name} must be {accepted} ({hint}); got {value!r}.")


def _is_real(value: object) -> bool:
    """A finite int or float (numpy scalars included), not a bool."""
    is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return is_number and math.isfinite(value)


def _check_fps_option(value: object) -> None:
    if value is None:
        return
    if not _is_real(value) or value < 0:
        raise ValueError(
            f"ReadOptions.target_fps must be a positive number of frames per second "
            f"(None or 0 keeps the source rate); got {value!r}."
        )


# --------------------------------------------------------------------------------------------------------------
# VideoInfo
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds (from `probe_video`), or what a decode returned (`DecodedVideo.info`)."""

    path: str
    width: int
    height: int
    fps: float
    frame_count: int
    frame_count_exact: bool  # False where the container stores no count and OpenCV estimated duration * fps
    codec: str  # FourCC as OpenCV reports it ('avc1', 'FMP4' for mp4v, ...) or an animation's format ('webp', ...)
    decoder: str  # "ffmpeg" (cv2.VideoCapture) or "imgcodecs" (cv2.imreadanimation)

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps

    def output_info(self, options: ReadOptions | None = None) -> VideoInfo:
        """The info `read_video(self.path, options)` will report: output size, fps and frame count."""
        options = options or ReadOptions()
        width, height = options.output_size(self.width, self.height)
        count = options.output_frame_count(source_fps=self.fps, source_frame_count=self.frame_count)
        return replace(self, width=width, height=height, fps=options.output_fps(self.fps), frame_count=count)

    def estimate_decode_bytes(self, options: ReadOptions | None = None) -> int:
        """Bytes of the float32 [T, H, W, 3] tensor `read_video` returns for these options.

        Peak memory during the decode is about 1.25x this (the uint8 frames are kept until the tensor is filled).
        An estimate where `frame_count_exact` is False.
        """
        out = self.output_info(options)
        return _float_frames_bytes(out.frame_count, height=out.height, width=out.width)


def _float_frames_bytes(frame_count: int, *, height: int, width: int) -> int:
    return frame_count * height * width * 3 * 4  # float32 RGB


# --------------------------------------------------------------------------------------------------------------
# Frame sources: one sequential decoder per file
# --------------------------------------------------------------------------------------------------------------


class _FrameSource(Protocol):
    """A decoder positioned before one frame of the file. Frames are OpenCV's (BGR, BGRA or gray) uint8."""

    info: VideoInfo

    def skip(self) -> bool:  # advance one frame without returning it; False at the end
        ...

    def read(self) -> np.ndarray | None:  # the next frame; None at the end
        ...

    def close(self) -> None: ...


def _unreadable(path: str, reason: str) -> VideoReadError:
    return VideoReadError(f"Cannot read video {path!r}: {reason}. {_REENCODE_HINT}")


def _check_not_truncated(info: VideoInfo, *, decoded: int) -> None:
    """Raise if the stream ended well before the frame count its header promised.

    Header counts can be a frame or two off (edit lists, a dropped last frame), so only a larger shortfall counts.
    """
    tolerance = max(2, info.frame_count // 100)
    if info.frame_count_exact and decoded < info.frame_count - tolerance:
        reason = (
            f"decoding stopped after {decoded} frames but the file says it has {info.frame_count}, "
            f"so it is truncated or corrupt (to use the readable part, read at most {decoded} frames with "
            f"skip_first + max_frames)"
        )
        raise _unreadable(info.path, reason)


class _CaptureSource:
    """Video containers through cv2.VideoCapture's FFmpeg backend."""

    def __init__(self, path: str):
        self._cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            reason = "the file is empty" if os.path.getsize(path) == 0 else (
                "OpenCV's FFmpeg backend cannot open it (not a video, an unsupported format, or a truncated or "
                "corrupt file)"
            )
            raise _unreadable(path, reason)
        ok, first = self._cap.read()
        if not ok:
            self._cap.release()
            reason = "it opens but holds no decodable video frame (corrupt, truncated, audio-only or unsupported codec)"
            raise _unreadable(path, reason)
        self._pending: np.ndarray | None = first  # frame 0, read to prove the file decodes
        self._position = 0  # index of the frame `read`/`skip` returns next
        self.info = self._probe(path, first)

    def _probe(self, path: str, first: np.ndarray) -> VideoInfo:
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        if not (math.isfinite(fps) and 0 < fps < 1000):
            fps = DEFAULT_FPS
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        if math.isfinite(count) and 0 < count < 2**31:
            frame_count = round(count)
            exact = os.path.splitext(path)[1].lower() in _CONTAINERS_WITH_FRAME_COUNT
        else:  # no count and no duration (e.g. a raw stream): count by decoding
            frame_count, exact = _count_frames(path), True
        return VideoInfo(
            path=path,
            width=first.shape[1],  # from the decoded frame: already rotated by the container's orientation
            height=first.shape[0],
            fps=float(fps),
            frame_count=frame_count,
            frame_count_exact=exact,
            codec=_fourcc_to_str(self._cap.get(cv2.CAP_PROP_FOURCC)),
            decoder="ffmpeg",
        )

    def skip(self) -> bool:
        if self._pending is not None:
            self._pending = None
        elif not self._cap.grab():  # grab() decodes but skips the colour conversion
            _check_not_truncated(self.info, decoded=self._position)
            return False
        self._position += 1
        return True

    def read(self) -> np.ndarray | None:
        frame, self._pending = self._pending, None
        if frame is None:
            ok, frame = self._cap.read()
            if not ok:
                _check_not_truncated(self.info, decoded=self._position)
                return None
        self._position += 1
        return frame

    def close(self) -> None:
        self._cap.release()


def _count_frames(path: str) -> int:
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    count = 0
    while cap.grab():
        count += 1
    cap.release()
    return count


def _fourcc_to_str(value: float) -> str:
    code = int(value)
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text if code and text.isprintable() else "unknown"


class _AnimationSource:
    """Animated WebP/GIF/APNG/AVIF (and still images) through cv2.imreadanimation.

    imreadanimation has no incremental decoder: it decodes `count` frames starting at `start`, re-decoding the
    frames before `start` without keeping them. Frames are therefore loaded in chunks of ANIMATION_CHUNK_BYTES;
    an animation that fits in one chunk (every clip we have seen) is decoded once.
    """

    def __init__(self, path: str):
        self._path = path
        self._count = cv2.imcount(path)
        ok, head = cv2.imreadanimation(path, 0, 1)
        if self._count <= 0 or not ok or not head.frames:
            fmt = _image_format(path)
            reason = f"OpenCV recognises it as a {fmt} image but cannot decode it (truncated or corrupt)"
            raise _unreadable(path, reason)
        height, width = head.frames[0].shape[:2]
        self._chunk_len = max(1, ANIMATION_CHUNK_BYTES // (width * height * 4))
        self._chunk: list[np.ndarray | None] = []
        self._chunk_start = 0
        self._position = 0  # index of the frame `read`/`skip` returns next
        durations = self._load_chunk(0)  # the frame rate comes from the first chunk's durations
        self.info = VideoInfo(
            path=path,
            width=width,
            height=height,
            fps=_fps_from_durations(durations),
            frame_count=self._count,
            frame_count_exact=True,  # imcount reads the frame count from the file's headers
            codec=_image_format(path),
            decoder="imgcodecs",
        )

    def _load_chunk(self, start: int) -> list[int]:
        """Decode frames [start, start + chunk) into memory; return their durations in milliseconds."""
        count = min(self._chunk_len, self._count - start)
        try:
            ok, animation = cv2.imreadanimation(self._path, start, count)
        except cv2.error:
            ok = False
        if not ok or len(animation.frames) != count:
            reason = f"frames {start}..{start + count - 1} do not decode (the file is truncated or corrupt)"
            raise _unreadable(self._path, reason)
        self._chunk, self._chunk_start = list(animation.frames), start
        return [int(d) for d in animation.durations]

    def skip(self) -> bool:
        if self._position >= self._count:
            return False
        self._position += 1
        return True

    def read(self) -> np.ndarray | None:
        if self._position >= self._count:
            return None
        offset = self._position - self._chunk_start
        if not 0 <= offset < len(self._chunk):
            self._load_chunk(self._position)
            offset = 0
        frame, self._chunk[offset] = self._chunk[offset], None  # release frames as they are consumed
        self._position += 1
        return frame

    def close(self) -> None:
        self._chunk = []


def _fps_from_durations(durations_ms: Sequence[int]) -> float:
    total = sum(durations_ms)
    return 1000.0 * len(durations_ms) / total if total > 0 else DEFAULT_ANIMATION_FPS


def _image_format(path: str) -> str:
    """Format name from the file's magic bytes (falls back to the extension)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"GIF8":
        return "gif"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "avif"
    return os.path.splitext(path)[1].lstrip(".").lower() or "image"


def _open_source(path: str | os.PathLike) -> _FrameSource:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No video file at {path!r}: check the path and the file name.")
    try:
        if not cv2.haveImageReader(path):
            return _CaptureSource(path)
        if hasattr(cv2, "imreadanimation"):  # an image format: animated WebP/GIF/APNG/AVIF, or a still image
            return _AnimationSource(path)
        return _open_image_with_ffmpeg(path)
    except cv2.error as error:
        raise _unreadable(path, f"OpenCV failed on it ({error})") from error


def _open_image_with_ffmpeg(path: str) -> _CaptureSource:
    """OpenCV < 4.11 has no imreadanimation; its FFmpeg backend still reads GIF and APNG, not animated WebP."""
    try:
        return _CaptureSource(path)
    except VideoReadError as error:
        hint = f" Animated WebP needs opencv-python >= 4.11 (cv2.imreadanimation); this is OpenCV {cv2.__version__}."
        raise VideoReadError(str(error) + hint) from None


# --------------------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------------------


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an OpenCV frame: BGR, BGRA (alpha dropped: ``images.opencv_to_rgb``) or gray."""
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    return opencv_to_rgb(frame)


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) -> (h, w, 3) for size = (w, h)."""
    height, width = frame.shape[:2]
    if size == (width, height):
        return frame
    shrink = size[0] <= width and size[1] <= height
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _decode(source: _FrameSource, options: ReadOptions) -> Iterator[tuple[int, np.ndarray]]:
    """(source index, (h, w, 3) uint8 RGB frame) for every output frame, in order. Closes the source."""
    info = source.info
    size = options.output_size(info.width, info.height)
    position = 0  # index of the frame the source returns next
    last_index, last_frame = -1, None
    try:
        for wanted in options.iter_source_indices(info.fps):
            if wanted == last_index:  # upsampling holds the previous frame
                yield wanted, last_frame.copy()
                continue
            while position < wanted:
                if not source.skip():
                    break
                position += 1
            raw = source.read() if position == wanted else None
            if raw is None:
                break
            position += 1
            last_index, last_frame = wanted, _resize(_to_rgb(raw), size)
            yield wanted, last_frame
        if last_index < 0:
            raise ValueError(
                f"No frames selected from {info.path!r}: it has {info.frame_count} frames and skip_first is "
                f"{options.skip_first}; lower skip_first."
            )
    finally:
        source.close()


def iter_frames(path: str | os.PathLike, options: ReadOptions | None = None) -> Iterator[np.ndarray]:
    """Stream the frames `options` select as (H, W, 3) uint8 RGB arrays, one at a time.

    The file is opened (and its first frame decoded) before this returns, so a missing or unreadable file fails
    here rather than at the first `next()`. Raises FileNotFoundError, VideoReadError, or ValueError (options).
    """
    source = _open_source(path)
    return (frame for _, frame in _decode(source, options or ReadOptions()))


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, fps, frame count and codec of a video file. Decodes the first frame to prove the file is readable."""
    source = _open_source(path)
    try:
        return source.info
    finally:
        source.close()


@dataclass(frozen=True)
class DecodedVideo:
    """Result of `read_video`."""

    frames: torch.Tensor  # [T, H, W, 3] float32 in 0..1 (ComfyUI IMAGE)
    info: VideoInfo  # of `frames`: output size, fps after resampling and every_nth, T frames
    source: VideoInfo  # of the file
    source_indices: tuple[int, ...]  # index in the file of every output frame


def read_video(
    path: str | os.PathLike,
    options: ReadOptions | None = None,
    *,
    max_bytes: int | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> DecodedVideo:
    """Decode the frames `options` select into a float32 [T, H, W, 3] tensor in 0..1.

    max_bytes: refuse (ValueError) when the output tensor would exceed this many bytes; checked against the
        estimate before decoding and against the real size while decoding.
    on_frame: called with the number of frames decoded so far after each output frame (progress; an exception
        raised there, e.g. a user cancel, stops the decode and closes the file).
    """
    options = options or ReadOptions()
    source = _open_source(path)
    frames_u8: list[np.ndarray | None] = []
    indices: list[int] = []
    try:
        planned = source.info.output_info(options)
        if max_bytes is not None:
            _check_budget(planned, max_bytes, frame_count=planned.frame_count)
        for index, frame in _decode(source, options):
            frames_u8.append(frame)
            indices.append(index)
            if max_bytes is not None:
                _check_budget(planned, max_bytes, frame_count=len(indices))
            if on_frame is not None:
                on_frame(len(indices))
    finally:
        source.close()  # now, even when on_frame raised (the generator would close it only when collected)
    info = replace(planned, frame_count=len(indices), frame_count_exact=True)
    return DecodedVideo(frames=_stack_as_float(frames_u8), info=info, source=source.info, source_indices=tuple(indices))


def _check_budget(planned: VideoInfo, max_bytes: int, *, frame_count: int) -> None:
    needed = _float_frames_bytes(frame_count, height=planned.height, width=planned.width)
    if needed > max_bytes:
        raise ValueError(
            f"Decoding {planned.path!r} at {planned.width}x{planned.height} would take "
            f"{needed / 2**30:.2f} GiB ({frame_count} float32 frames), over the limit of {max_bytes / 2**30:.2f} "
            f"GiB: lower max_frames, raise every_nth, lower target_fps or resize smaller."
        )


def _stack_as_float(frames: list[np.ndarray | None]) -> torch.Tensor:
    """[T] x (H, W, 3) uint8 -> [T, H, W, 3] float32 in 0..1, dropping each uint8 frame once copied."""
    height, width = frames[0].shape[:2]
    out = torch.empty((len(frames), height, width, 3), dtype=torch.float32)
    for t in range(len(frames)):
        out[t] = torch.from_numpy(frames[t])  # uint8 -> float32 copy
        frames[t] = None
    return out.div_(255.0)


# --------------------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------------------

Frames = torch.Tensor | np.ndarray  # one frame [H, W, 3] or a batch [T, H, W, 3]


def _open_cv_writer(path: str, *, fourcc: str, fps: float, size: tuple[int, int]) -> cv2.VideoWriter | None:
    """An opened FFmpeg-backend writer for (width, height) = size, or None if OpenCV refuses."""
    writer = cv2.VideoWriter(path, cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if writer.isOpened():
        return writer
    writer.release()
    return None


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what native code prints to file descriptor 2 (FFmpeg and OpenCV report every failed codec there)."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr descriptor (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _codec_writes(fourcc: str, *, size: tuple[int, int], fps: float) -> bool:
    """Whether a one-frame mp4 written with `fourcc` reads back (some builds open writers that write nothing)."""
    with tempfile.TemporaryDirectory(prefix="imve_codec_") as folder, _quiet_native_stderr():
        path = os.path.join(folder, "check.mp4")
        writer = _open_cv_writer(path, fourcc=fourcc, fps=fps, size=size)
        if writer is None:
            return False
        writer.write(np.zeros((size[1], size[0], 3), dtype=np.uint8))
        writer.release()
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            return False
        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        ok = cap.read()[0]
        cap.release()
        return ok


@functools.lru_cache(maxsize=32)
def _pick_codec(codecs: tuple[str, ...], size: tuple[int, int], fps: float) -> str:
    """First FourCC in `codecs` that really writes mp4 at this size and rate (cached: failed checks log noisily)."""
    for fourcc in codecs:
        if _codec_writes(fourcc, size=size, fps=fps):
            return fourcc
    raise VideoWriteError(
        f"This OpenCV build cannot write an mp4 of {size[0]}x{size[1]} at {fps} fps with any of the codecs "
        f"{list(codecs)}. Install an opencv-python build whose FFmpeg has an MPEG-4 or H.264 encoder."
    )


def _as_uint8_rgb(frame: Frames, *, index: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a uint8 (0..255) or float (0..1, clipped) frame, numpy or torch."""
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu()
        frame = (frame.float() if frame.is_floating_point() else frame).numpy()
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"Frame {index} is a {type(frame).__name__}; expected a numpy array or a torch tensor.")
    if frame.ndim != 3 or frame.shape[2] != 3 or min(frame.shape[:2]) < 1:
        shape = tuple(frame.shape)
        raise ValueError(f"Frame {index} has shape {shape}; expected [H, W, 3] RGB or a batch [T, H, W, 3].")
    if frame.dtype == np.uint8:
        return np.ascontiguousarray(frame)
    if np.issubdtype(frame.dtype, np.floating):
        return (np.nan_to_num(frame, nan=0.0).clip(0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise ValueError(f"Frame {index} has dtype {frame.dtype}; expected uint8 (0..255) or float (0..1).")


def _split_batch(frames: Frames) -> Iterable[Frames]:
    """[T, H, W, 3] -> T frames; [H, W, 3] -> one frame."""
    if isinstance(frames, (torch.Tensor, np.ndarray)) and frames.ndim == 4:
        return iter(frames)
    return (frames,)


def _pad_to_even(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H + H % 2, W + W % 2, 3), replicating the last row/column."""
    height, width = frame.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return frame
    return cv2.copyMakeBorder(frame, 0, height % 2, 0, width % 2, cv2.BORDER_REPLICATE)


H264_CRF = 17  # libx264 constant rate factor: visually lossless for typical footage


def pyav_h264_available() -> bool:
    """Whether PyAV is installed with a libx264 encoder (its wheels ship one; ComfyUI depends on PyAV)."""
    try:
        import av
    except ImportError:
        return False
    return "libx264" in av.codecs_available


class _PyAVEncoder:
    """H.264 (libx264, yuv420p) in mp4 through PyAV: plays in browsers and in ComfyUI's video preview."""

    codec = "h264"

    def __init__(self, path: str, *, fps: float, size: tuple[int, int]):
        import av
        from fractions import Fraction
        self._av = av
        self._container = av.open(path, mode="w", format="mp4")
        try:
            self._stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            self._stream.width, self._stream.height = size
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(H264_CRF)}
        except BaseException:
            self._container.close()
            raise

    def write(self, rgb: np.ndarray) -> None:
        """rgb: (H, W, 3) uint8 at the stream's (even) size."""
        for packet in self._stream.encode(self._av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():  # flush the encoder's delayed frames
            self._container.mux(packet)
        self._container.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()


class _OpenCVEncoder:
    """The fallback without PyAV: OpenCV's FFmpeg writer with the first FourCC that really writes."""

    def __init__(self, path: str, *, fps: float, size: tuple[int, int], codecs: tuple[str, ...]):
        self.codec = _pick_codec(codecs, size, fps)
        if self.codec not in _H264_TAGS:
            logger.warning("PyAV is not installed: writing MPEG-4 Part 2 (%s) through OpenCV, which browsers and "
                           "ComfyUI's preview may not play; install PyAV (pip install av) for H.264", self.codec)
        self._writer = _open_cv_writer(path, fourcc=self.codec, fps=fps, size=size)
        if self._writer is None:
            raise VideoWriteError(f"OpenCV could not open {path!r} for writing with codec {self.codec!r}.")

    def write(self, rgb: np.ndarray) -> None:
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()

    def abort(self) -> None:
        self._writer.release()


class VideoWriter:
    """Streaming, atomic mp4 writer (see the module docstring for the codec and odd-size policies).

        with VideoWriter("out.mp4", fps=16) as writer:
            writer.write(images)          # [T, H, W, 3] float 0..1 or uint8, torch or numpy; or one [H, W, 3]
        writer.codec, writer.info         # 'h264' (PyAV) or the OpenCV FourCC; VideoInfo of the file

    Frames go to a hidden temporary file next to `path`; `close()` moves it into place. Any error while writing,
    and leaving the `with` block by an exception, removes the temporary file and leaves `path` untouched.
    """

    def __init__(self, path: str | os.PathLike, *, fps: float, codecs: Sequence[str] = MP4_CODECS):
        self._done = True  # until fully constructed, so __del__ has nothing to clean
        self.path = os.fspath(path)
        if not self.path.lower().endswith(".mp4"):
            raise ValueError(f"VideoWriter writes mp4: name the output file '*.mp4' (got {self.path!r}).")
        if not _is_real(fps) or fps <= 0:
            raise ValueError(f"fps must be a positive number of frames per second; got {fps!r}.")
        if not codecs or any(not isinstance(c, str) or len(c) != 4 for c in codecs):
            raise ValueError(f"codecs must be four-character FourCC strings such as 'avc1' or 'mp4v'; got {codecs!r}.")
        self.fps = float(fps)
        self.codecs = tuple(codecs)
        self.codec: str | None = None  # FourCC that passed the check (one of `codecs`), known after the first frame
        self.frame_size: tuple[int, int] | None = None  # (width, height) written, after even padding
        self.frames_written = 0
        self.info: VideoInfo | None = None  # set by close()
        self._input_size: tuple[int, int] | None = None  # (width, height) of the frames given
        self._encoder: _PyAVEncoder | _OpenCVEncoder | None = None
        self._temp_path: str | None = None
        self._done = False

    @property
    def is_h264(self) -> bool:
        return self.codec in _H264_TAGS

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self.abort()

    def write(self, frames: Frames) -> None:
        """Append one frame [H, W, 3] or a batch [T, H, W, 3]. On any error the writer aborts (see class doc)."""
        if self._done:
            raise VideoWriteError(f"The writer for {self.path!r} is already closed or aborted.")
        try:
            for frame in _split_batch(frames):
                self._write_one(_as_uint8_rgb(frame, index=self.frames_written))
        except BaseException:  # also a cancel (KeyboardInterrupt, ComfyUI's interrupt)
            self.abort()
            raise

    def _write_one(self, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        if self._encoder is None:
            self._open(width=width, height=height)
        elif (width, height) != self._input_size:
            w0, h0 = self._input_size
            raise ValueError(
                f"Frame {self.frames_written} is {width}x{height} but the first frame was {w0}x{h0}: all frames of "
                f"a video must have the same size (resize them first)."
            )
        self._encoder.write(_pad_to_even(frame))
        self.frames_written += 1

    def _open(self, *, width: int, height: int) -> None:
        self._input_size = (width, height)
        self.frame_size = (width + width % 2, height + height % 2)
        folder, name = os.path.split(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        # Hidden, unique, and still ending in .mp4 (OpenCV picks the container from the extension).
        self._temp_path = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.partial.mp4")
        if pyav_h264_available():
            self._encoder = _PyAVEncoder(self._temp_path, fps=self.fps, size=self.frame_size)
        else:
            self._encoder = _OpenCVEncoder(self._temp_path, fps=self.fps, size=self.frame_size, codecs=self.codecs)
        self.codec = self._encoder.codec

    def close(self) -> VideoInfo:
        """Finish the file and move it into place; returns its VideoInfo. Calling it again returns the same info."""
        if self.info is not None:
            return self.info
        if self._done:
            raise VideoWriteError(f"The writer for {self.path!r} was aborted; nothing was written.")
        if self._encoder is None:
            self.abort()
            raise ValueError(f"No frames were written to {self.path!r}: give at least one frame.")
        try:
            self._encoder.close()
        except BaseException:
            self.abort()
            raise
        self._encoder = None
        if not os.path.isfile(self._temp_path) or os.path.getsize(self._temp_path) == 0:
            self.abort()
            raise VideoWriteError(f"The encoder wrote nothing for {self.path!r} with codec {self.codec!r}.")
        os.replace(self._temp_path, self.path)
        self._temp_path, self._done = None, True
        width, height = self.frame_size
        self.info = VideoInfo(
            path=self.path,
            width=width,
            height=height,
            fps=self.fps,
            frame_count=self.frames_written,
            frame_count_exact=True,
            codec=self.codec,
            decoder="ffmpeg",
        )
        return self.info

    def abort(self) -> None:
        """Drop everything written so far: close the encoder and delete the temporary file."""
        self._done = True
        if self._encoder is not None:
            self._encoder.abort()
            self._encoder = None
        if self._temp_path is not None and os.path.exists(self._temp_path):
            os.remove(self._temp_path)
        self._temp_path = None


def write_video(
    path: str | os.PathLike,
    frames: Frames | Iterable[Frames],
    *,
    fps: float,
    codecs: Sequence[str] = MP4_CODECS,
) -> VideoInfo:
    """Write frames to an mp4 atomically; returns the VideoInfo of the file (its `codec` says which was used).

    frames: a batch [T, H, W, 3] or an iterable of frames/batches (e.g. `iter_frames(...)`, streamed), uint8 0..255
    or float 0..1, numpy or torch.
    """
    with VideoWriter(path, fps=fps, codecs=codecs) as writer:
        if isinstance(frames, (torch.Tensor, np.ndarray)):
            writer.write(frames)
        else:
            for frame in frames:
                writer.write(frame)
    return writer.info
