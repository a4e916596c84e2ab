"""Long videos: windows with overlap, keyframe sharing, and a streaming file -> edit -> file path.

A clip longer than the backbone's window is edited window by window, in order, so memory is bounded by one window
(plus the keyframes), never by the clip:

1. Keyframes (``keyframes`` evenly spaced frames; none by default) are edited first, together, as one short clip.
2. Every window is sampled with the edited keyframes shared in two ways (each can be switched on or off; on
   ToyWorld the adapter way cuts drift but costs fidelity, see docs/toyworld.md):
   - attention: the keyframes are prepended to the window as frames pinned to their edited latent (noised to the
     current level at every step), so the window's 3D self-attention sees the edit the keyframes agreed on;
   - adapter: PU-SDA of every frame attends to the edited keyframes' keys/values as well as its source frame's.
3. Consecutive windows share ``overlap`` frames: the new window's overlap frames are pulled towards the previous
   window's result with a weight that falls off into the window, and the decoded frames are cross-faded.

Frames are counted in video frames. A codec with temporal stride ``s`` (Wan's VAE: 4; one frame per latent frame:
1) needs windows, overlaps and clips of ``1 + s*n`` frames, so that every window and every overlap encodes on its
own to whole latent frames (a causal VAE encodes a clip's first ``1 + s*m`` frames to its first ``m + 1`` latents).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np
import torch

from ..io.video import ReadOptions, VideoWriter, iter_frames, probe_video
from .sampling import (CachePlacement, EditRequest, KnownLatentHook, SamplerConfig, SharedKeyframes, edit_latent,
                       seeded_noise)
from .streams import TwoStreamRunner


@dataclass(frozen=True)
class WindowConfig:
    window: int = 8               # frames per window
    overlap: int = 2              # frames consecutive windows share (0: windows are edited independently)
    keyframes: int = 0            # evenly spaced keyframes edited first and shared with every window (0: none)
    share_attention: bool = True  # keyframes join every window as pinned frames (3D self-attention sees them)
    share_adapter: bool = False   # PU-SDA also attends to the edited keyframes' keys/values (costs fidelity on
                                  # ToyWorld: the adapter never saw extra keys in training; docs/toyworld.md)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be at least 1 frame, got {self.window}")
        if not 0 <= self.overlap < self.window:
            raise ValueError(f"overlap must be in [0, window) = [0, {self.window}), got {self.overlap}: "
                             "consecutive windows must each bring new frames")
        if self.keyframes < 0:
            raise ValueError(f"keyframes must be 0 (no sharing) or more, got {self.keyframes}")

    @property
    def shares(self) -> bool:
        return self.keyframes > 0 and (self.share_attention or self.share_adapter)


@dataclass(frozen=True)
class Window:
    start: int  # first frame
    stop: int   # one past the last frame

    @property
    def length(self) -> int:
        return self.stop - self.start


def _check_stride(name: str, frames: int, stride: int) -> None:
    if (frames - 1) % stride:
        raise ValueError(f"{name} is {frames} frames; with this codec (temporal stride {stride}) it must be "
                         f"1 + {stride}*n frames, e.g. {1 + stride * max((frames - 1) // stride, 1)}")


def plan_windows(total: int, config: WindowConfig, *, stride: int = 1) -> list[Window]:
    """Windows over ``total`` frames, each starting ``window - overlap`` after the last; the last may be shorter."""
    if config.window > total:
        raise ValueError(f"the window ({config.window} frames) is longer than the clip ({total} frames): use a "
                         f"window of at most {total} frames, or edit the clip in one pass")
    _check_stride("the clip", total, stride)
    _check_stride("the window", config.window, stride)
    if config.overlap:
        _check_stride("the overlap", config.overlap, stride)
    step = config.window - config.overlap
    windows, start = [], 0
    while True:
        stop = min(start + config.window, total)
        windows.append(Window(start, stop))
        if stop == total:
            return windows
        start += step


def keyframe_indices(total: int, count: int) -> list[int]:
    """``count`` evenly spaced frame indices from the first frame to the last (fewer when the clip is shorter)."""
    if count <= 0:
        return []
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, count)})


def overlap_ramp(length: int) -> torch.Tensor:
    """(length,) weights of the new window over the overlap, rising from 1/(length+1) to length/(length+1)."""
    return torch.arange(1, length + 1, dtype=torch.float32) / (length + 1)


# -- one window as a sampling job --

@dataclass
class WindowJob:
    """What one sampling run of a long edit gets; the keyframe pass has ``index`` -1 and nothing pinned."""

    index: int
    source: torch.Tensor              # (1, C, F, h, w) source latent (keyframes first when attention is shared)
    known: torch.Tensor | None = None  # (1, C, F, h, w) edited latent the pinned frames are pulled towards
    keep: torch.Tensor | None = None   # (1, 1, F, 1, 1) in [0, 1]: how strongly each frame is pinned
    shared: torch.Tensor | None = None  # (1, C, K, h, w) edited keyframes for PU-SDA sharing
    prefix: int = 0                    # leading keyframe frames of ``source``, dropped after the edit


EditWindowFn = Callable[[WindowJob], torch.Tensor]  # job -> edited latent with job.source's shape


def runner_window_editor(runner: TwoStreamRunner, *, context: torch.Tensor, negative_context: torch.Tensor | None,
                         config: SamplerConfig, cache: CachePlacement = "device") -> EditWindowFn:
    """Window jobs edited by the core's sampling loop (no gradients); window i draws its noise from seed + 1 + i."""
    @torch.no_grad()
    def edit(job: WindowJob) -> torch.Tensor:
        noise = seeded_noise(job.source.shape, seed=config.seed + 1 + job.index, device=job.source.device,
                             dtype=job.source.dtype)
        hooks = [] if job.keep is None else [KnownLatentHook(known=job.known, noise=noise, keep=job.keep)]
        features = hooks + ([SharedKeyframes(job.shared)] if job.shared is not None else [])
        request = EditRequest(source=job.source, context=context, negative_context=negative_context, config=config,
                              cache=cache, noise=noise, features=features)
        return edit_latent(runner, request).latent
    return edit


# -- the streaming loop --

class FrameCodec(Protocol):
    def encode(self, frames: torch.Tensor) -> torch.Tensor: ...   # [T, H, W, 3] 0..1 -> (1, C, T', h, w)
    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...   # (1, C, T', h, w) -> [T, H, W, 3] 0..1


@dataclass
class LongEditStats:
    windows: int = 0
    frames_out: int = 0
    peak_frames_held: int = 0  # most video frames held at once (window + overlap tail + keyframes)


def _encode_keyframes(codec: FrameCodec, frames: torch.Tensor) -> torch.Tensor:
    """[K, H, W, 3] -> (1, C, K, h, w): each keyframe encoded as a one-frame clip."""
    return torch.cat([codec.encode(frames[i:i + 1]) for i in range(frames.shape[0])], dim=2)


def _check_frame_size(frames: torch.Tensor, size: tuple[int, int], what: str) -> None:
    if tuple(frames.shape[1:3]) != size:
        raise ValueError(f"{what} are {frames.shape[1]}x{frames.shape[2]} but the video's frames are "
                         f"{size[0]}x{size[1]}: give keyframes of the video's size")


def edit_long_video(frames: Iterable[torch.Tensor], *, total: int, keyframes: torch.Tensor | None,
                    codec: FrameCodec, edit: EditWindowFn, config: WindowConfig, stride: int = 1,
                    stats: LongEditStats | None = None,
                    on_window: Callable[[int, int], None] | None = None) -> Iterator[torch.Tensor]:
    """Edit a clip of ``total`` frames window by window; yields edited frames [H, W, 3] in order, as they finish.

    frames: the source frames [H, W, 3] (0..1), consumed one window at a time. keyframes: [K, H, W, 3], the
    frames at ``keyframe_indices(total, config.keyframes)`` (needed when ``config.shares``).
    """
    windows = plan_windows(total, config, stride=stride)
    stats = stats if stats is not None else LongEditStats()
    source_iter = iter(frames)
    indices = keyframe_indices(total, config.keyframes)
    if config.shares and (keyframes is None or keyframes.shape[0] != len(indices)):
        raise ValueError(f"sharing needs the {len(indices)} keyframes at frames {indices}")
    kf_source = kf_edited = None
    held_source = held_edited = None  # the last window's overlap frames, [O, H, W, 3]
    for n, win in enumerate(windows):
        new = [next(source_iter, None) for _ in range(win.stop - (windows[n - 1].stop if n else 0))]
        if any(f is None for f in new):
            raise ValueError(f"the video ended before frame {win.stop} of the {total} it was said to have")
        pixels = torch.stack(new) if held_source is None else torch.cat([held_source, torch.stack(new)])
        if n == 0 and config.shares:  # the keyframes are edited first, once the frame size is known
            _check_frame_size(keyframes, tuple(pixels.shape[1:3]), "the keyframes")
            kf_source = _encode_keyframes(codec, keyframes)
            kf_edited = edit(WindowJob(index=-1, source=kf_source))
        job = _window_job(n, pixels, held_edited, kf_source, kf_edited, codec, config)
        edited = codec.decode(edit(job)[:, :, job.prefix:])
        if held_edited is not None:  # cross-fade the overlap: previous window's frames -> this window's
            ramp = overlap_ramp(held_edited.shape[0])[:, None, None, None]
            edited[: held_edited.shape[0]] = (1 - ramp) * held_edited + ramp * edited[: held_edited.shape[0]]
        held = config.overlap if n + 1 < len(windows) else 0
        keyframes_held = 0 if kf_source is None else 2 * kf_source.shape[2]         # source and edited
        tail_held = 0 if held_edited is None else held_edited.shape[0]
        stats.peak_frames_held = max(stats.peak_frames_held, pixels.shape[0] + keyframes_held + tail_held)
        for frame in edited[: edited.shape[0] - held]:
            stats.frames_out += 1
            yield frame
        held_source, held_edited = (pixels[pixels.shape[0] - held:], edited[edited.shape[0] - held:]) if held \
            else (None, None)
        stats.windows += 1
        if on_window is not None:
            on_window(n + 1, len(windows))


def _window_job(index: int, pixels: torch.Tensor, held_edited: torch.Tensor | None, kf_source: torch.Tensor | None,
                kf_edited: torch.Tensor | None, codec: FrameCodec, config: WindowConfig) -> WindowJob:
    """The sampling job of one window: [keyframes pinned] + [overlap pulled to the last window] + new frames."""
    source = codec.encode(pixels)                                        # (1, C, F, h, w)
    frames = source.shape[2]
    known = torch.zeros_like(source)
    keep = torch.zeros(1, 1, frames, 1, 1)
    if held_edited is not None:
        overlap = codec.encode(held_edited)                              # (1, C, O', h, w): the first O' latents
        o = overlap.shape[2]
        known[:, :, :o] = overlap
        keep[0, 0, :o, 0, 0] = 1 - overlap_ramp(o)
    shared = kf_edited if config.shares and config.share_adapter else None
    if kf_source is not None and config.share_attention:
        source = torch.cat([kf_source, source], dim=2)                   # (1, C, K+F, h, w)
        known = torch.cat([kf_edited, known], dim=2)
        keep = torch.cat([torch.ones(1, 1, kf_source.shape[2], 1, 1), keep], dim=2)
    pinned = bool(keep.any())
    return WindowJob(index=index, source=source, known=known if pinned else None, keep=keep if pinned else None,
                     shared=shared, prefix=source.shape[2] - frames)


# -- file -> edit -> file --

@dataclass(frozen=True)
class FileEditResult:
    path: str
    frames: int            # frames written
    dropped: int           # trailing frames left out to make 1 + stride*n
    windows: int
    peak_frames_held: int
    codec: str             # the writer's codec (see video_io.VideoWriter)


def _as_float(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frame).float() / 255.0  # (H, W, 3) uint8 -> float 0..1


def count_frames(path: str | os.PathLike, options: ReadOptions) -> int:
    """Frames ``options`` select from the file (one decoding pass; nothing is kept)."""
    return sum(1 for _ in iter_frames(path, options))


def frames_at(path: str | os.PathLike, options: ReadOptions, indices: list[int]) -> torch.Tensor:
    """The frames at ``indices`` (sorted) as [K, H, W, 3], in one decoding pass that keeps only those."""
    wanted, picked = set(indices), []
    for i, frame in enumerate(iter_frames(path, options)):
        if i in wanted:
            picked.append(_as_float(frame))
        if len(picked) == len(wanted):
            break
    return torch.stack(picked)


def edit_video_file(source_path: str | os.PathLike, output_path: str | os.PathLike, *, codec: FrameCodec,
                    edit: EditWindowFn, config: WindowConfig, options: ReadOptions | None = None, stride: int = 1,
                    on_window: Callable[[int, int], None] | None = None) -> FileEditResult:
    """Stream a video file through :func:`edit_long_video` into an mp4; memory is bounded by one window.

    The output is written atomically (nothing appears at ``output_path`` unless the whole edit succeeds).
    """
    options = options or ReadOptions()
    info = probe_video(source_path)
    available = count_frames(source_path, options)
    total = 1 + (available - 1) // stride * stride if available else 0
    if total < config.window:
        raise ValueError(f"the window ({config.window} frames) is longer than the clip ({available} frames "
                         f"after the read options): use a window of at most {total} frames")
    indices = keyframe_indices(total, config.keyframes) if config.shares else []
    keyframes = frames_at(source_path, options, indices) if indices else None
    source = (_as_float(f) for _, f in zip(range(total), iter_frames(source_path, options)))
    fps = (options.target_fps or info.fps) / max(options.every_nth or 1, 1)
    stats = LongEditStats()
    with VideoWriter(output_path, fps=fps) as writer:
        for frame in edit_long_video(source, total=total, keyframes=keyframes, codec=codec, edit=edit,
                                     config=config, stride=stride, stats=stats, on_window=on_window):
            writer.write(frame)
    return FileEditResult(path=str(output_path), frames=stats.frames_out, dropped=available - total,
                          windows=stats.windows, peak_frames_held=stats.peak_frames_held, codec=writer.codec)
