"""Load Video Frames: a streaming decode with a memory check before anything is loaded."""

from __future__ import annotations

import os
import tempfile

import psutil

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..imvideoedit_core.io.video import ReadOptions, probe_video, read_video
from .catalog import CATEGORY, NODE_IDS

MEMORY_SHARE = 0.75  # refuse a decode that would need more than this share of the free RAM


def input_videos() -> list[str]:
    folder = folder_paths.get_input_directory()
    files = [f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))]
    return sorted(folder_paths.filter_files_content_types(files, ["video", "image"]))


def _path_of(video) -> tuple[str, bool]:
    """A file path for a VIDEO socket value (a temporary copy when it lives in memory) and whether to delete it."""
    source = video.get_stream_source()
    if isinstance(source, str):
        return source, False
    handle, path = tempfile.mkstemp(suffix=".mp4")
    with os.fdopen(handle, "wb") as f:
        f.write(source.getvalue())
    return path, True


def check_memory(needed: int) -> None:
    available = psutil.virtual_memory().available
    if needed > MEMORY_SHARE * available:
        raise ValueError(f"decoding this video needs {needed / 2**30:.1f} GiB but only {available / 2**30:.1f} GiB "
                         "of RAM is free: lower max_frames, raise every_nth, lower fps, or resize it smaller")


class LoadVideoFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_IDS["load_video_frames"], display_name="IMVE Load Video Frames", category=CATEGORY,
            description="Decodes a video into frames, streaming, after checking that they fit in memory. Options "
                        "apply in this order: skip_first, fps, every_nth, max_frames, resize.",
            inputs=[io.Combo.Input("video", options=input_videos(), upload=io.UploadType.video,
                                   tooltip="A video in ComfyUI's input folder (mp4, webm, mkv, mov, gif, webp, ...)"),
                    io.Float.Input("fps", default=0.0, min=0.0, max=120.0, step=0.5,
                                   tooltip="Resample to this frame rate by picking frames; 0 keeps the video's"),
                    io.Int.Input("max_frames", default=81, min=0, max=100000,
                                 tooltip="Stop after this many frames; 0 = all. Wan 2.1 is trained on 81"),
                    io.Int.Input("skip_first", default=0, min=0, max=100000, tooltip="Frames skipped at the start"),
                    io.Int.Input("every_nth", default=1, min=1, max=100, tooltip="Keep every n-th frame"),
                    io.Int.Input("resize_to_multiple", default=16, min=0, max=128,
                                 tooltip="Scale each side to the nearest multiple of this (16 for Wan); 0 keeps "
                                         "the size"),
                    io.Video.Input("video_input", optional=True,
                                   tooltip="A VIDEO from another node; used instead of the file when connected")],
            outputs=[io.Image.Output(display_name="frames"), io.Float.Output(display_name="fps"),
                     io.Int.Output(display_name="frame_count"), io.String.Output(display_name="info")])

    @classmethod
    def execute(cls, video: str, fps: float, max_frames: int, skip_first: int, every_nth: int,
                resize_to_multiple: int, video_input=None) -> io.NodeOutput:
        options = ReadOptions(target_fps=fps or None, max_frames=max_frames or None, skip_first=skip_first,
                              every_nth=every_nth, resize_to_multiple=resize_to_multiple)
        path, temporary = _path_of(video_input) if video_input is not None else (
            folder_paths.get_annotated_filepath(video), False)
        try:
            info = probe_video(path)
            check_memory(info.estimate_decode_bytes(options))
            bar = comfy.utils.ProgressBar(max(info.output_info(options).frame_count, 1))

            def on_frame(decoded_so_far: int) -> None:
                comfy.model_management.throw_exception_if_processing_interrupted()
                bar.update_absolute(decoded_so_far)

            decoded = read_video(path, options, on_frame=on_frame)
        finally:
            if temporary:
                os.remove(path)
        out = decoded.info
        text = (f"{os.path.basename(path)}: {out.frame_count} frames at {out.width}x{out.height}, {out.fps:.3g} fps "
                f"(source {decoded.source.frame_count} frames at {decoded.source.width}x{decoded.source.height}, "
                f"{decoded.source.fps:.3g} fps, {decoded.source.codec})")
        return io.NodeOutput(decoded.frames, float(out.fps), int(out.frame_count), text)

    @classmethod
    def fingerprint_inputs(cls, video: str, **kwargs) -> str:
        """Re-run when the file changes on disk."""
        path = folder_paths.get_annotated_filepath(video)
        return f"{path}:{os.path.getmtime(path) if os.path.exists(path) else 0}"

    @classmethod
    def validate_inputs(cls, video: str) -> bool | str:
        if not folder_paths.exists_annotated_filepath(video):
            return f"no video named {video!r} in the input folder: upload it or pick another"
        return True
