"""The ImVideoEdit node pack (ComfyUI V3 API): the extension and its model folder."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import ComfyExtension, io

from ..imvideoedit_core.edit.sampling import SamplingCancelled
from ..imvideoedit_core.io.video import VideoReadError, VideoWriteError
from ..imvideoedit_core.model.adapter_file import AdapterFileError
from ..imvideoedit_core.model.wan_weights import WanWeightsError
from ..imvideoedit_core.train.pair_scan import PairDatasetError
from ..imvideoedit_core.train.trainer import TrainingCancelled
from .adapter_nodes import ApplyAdapter, LoadAdapter, Wan22Expert
from .catalog import ADAPTER_FOLDER
from .dataset_nodes import SaveImagePairs
from .degrade_nodes import AnimateImage, DegradeLatent
from .edit_nodes import EditConditioning, EditSampler, GateMask
from .long_video_nodes import LongVideoEdit
from .mask_nodes import EditMask
from .train_nodes import TrainAdapter
from .tune_nodes import TuneOnKeyframe
from .video_nodes import LoadVideoFrames


ERROR_MODULE = "imvideoedit"  # what ComfyUI prints before an error's class name


def name_errors_for_users() -> None:
    """ComfyUI shows an exception as ``module.Class``, and a custom node's module is named after its folder path:
    the pack's own errors read as ``imvideoedit.PairDatasetError`` instead of a file-system path."""
    for error in (AdapterFileError, PairDatasetError, SamplingCancelled, TrainingCancelled, VideoReadError,
                  VideoWriteError, WanWeightsError):
        error.__module__ = ERROR_MODULE


def register_model_folder() -> None:
    """models/imvideoedit/ for adapter files (kept if extra_model_paths.yaml already defines it)."""
    if ADAPTER_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[ADAPTER_FOLDER] = (
            [os.path.join(folder_paths.models_dir, ADAPTER_FOLDER)], {".safetensors"})


class ImVideoEditExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [LoadAdapter, ApplyAdapter, EditConditioning, EditSampler, GateMask, LoadVideoFrames, TrainAdapter,
                LongVideoEdit, EditMask, TuneOnKeyframe, DegradeLatent, AnimateImage, SaveImagePairs, Wan22Expert]


async def comfy_entrypoint() -> ImVideoEditExtension:
    register_model_folder()
    name_errors_for_users()
    return ImVideoEditExtension()
