"""Save Image Pairs: grow an image-pair dataset from any ComfyUI image editor, for IMVE Train Adapter."""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths
from comfy_api.latest import io

from ..imvideoedit_core.train.pair_writer import append_pairs
from .catalog import CATEGORY, NODE_IDS

DEFAULT_DATASET = "imvideoedit_pairs"  # IMVE Train Adapter's default pairs_folder


def dataset_folder(name: str) -> Path:
    """An absolute path as it is; a plain name inside ComfyUI's input folder (where Train Adapter looks)."""
    name = name.strip()
    if not name:
        raise ValueError("dataset is empty: name a folder inside ComfyUI's input folder (e.g. imvideoedit_pairs) "
                         "or give an absolute path")
    if os.path.isabs(name):
        return Path(name)
    if ".." in Path(name).parts:
        raise ValueError(f"dataset {name!r} leaves ComfyUI's input folder: use a plain folder name or an "
                         "absolute path")
    return Path(folder_paths.get_input_directory()) / name


class SaveImagePairs(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_IDS["save_image_pairs"], display_name="IMVE Save Image Pairs", category=CATEGORY,
            description="Adds (source image, edited image, instruction) pairs to a dataset folder that IMVE Train "
                        "Adapter reads (manifest.jsonl + images/). Append-only; the same pair twice is stored "
                        "once; sizes and instructions are checked before anything is written. Run it over many "
                        "images with any image editor to build a set for training a general adapter.",
            inputs=[io.Image.Input("source_images", tooltip="The images before the edit (one or a batch)"),
                    io.Image.Input("edited_images", tooltip="The same images after the edit, same count and size"),
                    io.String.Input("instruction", default="", multiline=True,
                                    tooltip="The edit, in words (e.g. 'make the car red'): one line for the whole "
                                            "batch, or one line per pair"),
                    io.String.Input("dataset", default=DEFAULT_DATASET,
                                    tooltip="Folder inside ComfyUI's input folder (or an absolute path); use the "
                                            "same name as IMVE Train Adapter's pairs_folder")],
            outputs=[io.String.Output(display_name="pairs_folder"), io.String.Output(display_name="summary")],
            is_output_node=True)

    @classmethod
    def execute(cls, source_images, edited_images, instruction: str, dataset: str) -> io.NodeOutput:
        lines = [line for line in instruction.splitlines() if line.strip()] or [""]
        report = append_pairs(dataset_folder(dataset), source_images, edited_images, lines)
        summary = (f"{report.folder}: {report.added} pair(s) added, {report.skipped} already there; "
                   f"{report.total} in the dataset")
        return io.NodeOutput(str(report.folder), summary)
