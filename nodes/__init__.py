"""The ImVideoEdit node pack (ComfyUI V3 API): the extension and its model folder."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import ComfyExtension, io

from .adapter_nodes import ApplyAdapter, LoadAdapter
from .catalog import ADAPTER_FOLDER
from .dataset_nodes import SaveImagePairs
from .degrade_nodes import AnimateImage, DegradeLatent
from .edit_nodes import EditConditioning, EditSampler, GateMask
from .long_video_nodes import LongVideoEdit
from .mask_nodes import EditMask
from .train_nodes import TrainAdapter
from .tune_nodes import TuneOnKeyframe
from .video_nodes import LoadVideoFrames


def register_model_folder() -> None:
    """models/imvideoedit/ for adapter files (kept if extra_model_paths.yaml already defines it)."""
    if ADAPTER_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[ADAPTER_FOLDER] = (
            [os.path.join(folder_paths.models_dir, ADAPTER_FOLDER)], {".safetensors"})


class ImVideoEditExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [LoadAdapter, ApplyAdapter, EditConditioning, EditSampler, GateMask, LoadVideoFrames, TrainAdapter,
                LongVideoEdit, EditMask, TuneOnKeyframe, DegradeLatent, AnimateImage, SaveImagePairs]


async def comfy_entrypoint() -> ImVideoEditExtension:
    register_model_folder()
    return ImVideoEditExtension()
