"""Load Adapter and Apply Adapter."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..imvideoedit_core.model.adapter_file import load_adapter, read_adapter_info
from ..imvideoedit_core.model.config import parse_blocks
from ..imvideoedit_core.edit.streams import CACHE_PLACEMENTS
from ..imvideoedit_core.train.trainer import STATE_SUFFIX
from .catalog import ADAPTER_FOLDER, CATEGORY, NODE_IDS
from .host import AdapterHolder, apply_adapter

Adapter = io.Custom("IMVE_ADAPTER")
SOURCE_ENCODINGS = ("per branch", "shared")


def adapter_files() -> list[str]:
    """Adapter files in models/imvideoedit/ (training resume states are not adapters and are left out)."""
    return [name for name in folder_paths.get_filename_list(ADAPTER_FOLDER)
            if not name.endswith(STATE_SUFFIX)]


class LoadAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_IDS["load_adapter"], display_name="IMVE Load Adapter", category=CATEGORY,
            description="Loads an ImVideoEdit adapter (.safetensors) from models/imvideoedit/.",
            inputs=[io.Combo.Input("adapter_name", options=adapter_files(),
                                   tooltip="An adapter file in models/imvideoedit/ (trained with IMVE Train Adapter "
                                           "or downloaded)")],
            outputs=[Adapter.Output(display_name="adapter")])

    @classmethod
    def execute(cls, adapter_name: str) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise(ADAPTER_FOLDER, adapter_name)
        info = read_adapter_info(path)
        return io.NodeOutput(AdapterHolder.wrap(load_adapter(path), info))


class ApplyAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_IDS["apply_adapter"], display_name="IMVE Apply Adapter", category=CATEGORY,
            description="Patches a Wan 2.1 text-to-video MODEL with an ImVideoEdit adapter. The patched MODEL edits "
                        "the source carried by IMVE Edit Conditioning with any sampler (KSampler, SamplerCustom, "
                        "IMVE Sampler) and with context windows; without that conditioning it behaves as before.",
            inputs=[io.Model.Input("model", tooltip="A Wan 2.1 T2V model (Load Diffusion Model; LoRAs may be "
                                                    "applied before or after)"),
                    Adapter.Input("adapter", tooltip="From IMVE Load Adapter or IMVE Train Adapter"),
                    io.Float.Input("strength", default=1.0, min=0.0, max=2.0, step=0.05,
                                   tooltip="How strongly the adapter pulls the video towards the source outside the "
                                           "edit: 0 turns it off, 1 as trained"),
                    io.Combo.Input("source_cache", options=list(CACHE_PLACEMENTS), default="device",
                                   tooltip="Where the source stream's per-block features live: device (fastest), "
                                           "cpu (saves GPU memory), off (recompute every step: no memory, ~2x time)"),
                    io.String.Input("blocks", default="all",
                                    tooltip="Which of the adapter's blocks to use: 'all', or indices and ranges such "
                                            "as '0-9, 20' (fewer blocks: a weaker, cheaper edit)"),
                    io.Combo.Input("source_encoding", options=list(SOURCE_ENCODINGS), default="per branch",
                                   optional=True,
                                   tooltip="per branch: the source is encoded with each guidance branch's own text. "
                                           "shared: once, with the instruction, for both branches (half the "
                                           "source cache and its encoding; on ToyWorld within noise of per branch)")],
            outputs=[io.Model.Output(display_name="model")])

    @classmethod
    def execute(cls, model, adapter: AdapterHolder, strength: float, source_cache: str,
                blocks: str = "all", source_encoding: str = "per branch") -> io.NodeOutput:
        chosen = parse_blocks(blocks, available=adapter.adapter.block_ids)
        if source_encoding not in SOURCE_ENCODINGS:
            raise ValueError(f"source_encoding {source_encoding!r}: choose one of {', '.join(SOURCE_ENCODINGS)}")
        return io.NodeOutput(apply_adapter(model, adapter, strength=strength, cache=source_cache, blocks=chosen,
                                           share_source=source_encoding == "shared"))
