"""Load Adapter, Apply Adapter, and Wan 2.2 Expert (which A14B expert a MODEL is)."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..imvideoedit_core.model.adapter_file import load_adapter, read_adapter_info
from ..imvideoedit_core.model.config import parse_blocks
from ..imvideoedit_core.edit.streams import CACHE_PLACEMENTS
from ..imvideoedit_core.train.trainer import STATE_SUFFIX
from .catalog import ADAPTER_FOLDER, CATEGORY, NODE_IDS
from .host import AdapterHolder, apply_adapter, mark_expert

Adapter = io.Custom("IMVE_ADAPTER")
SOURCE_ENCODINGS = ("per branch", "shared")
EXPERT_CHOICES = {"high-noise": "high", "low-noise": "low"}


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
            description="Patches a Wan text-to-video MODEL (Wan 2.1 T2V, Wan 2.2 TI2V 5B, or one Wan 2.2 A14B expert "
                        "marked with IMVE Wan 2.2 Expert) with an ImVideoEdit adapter made for it. The patched MODEL "
                        "edits the source carried by IMVE Edit Conditioning with any sampler (KSampler, "
                        "SamplerCustom, IMVE Sampler) and with context windows; without that conditioning it behaves "
                        "as before.",
            inputs=[io.Model.Input("model", tooltip="A Wan T2V model (Load Diffusion Model or Unet Loader (GGUF); "
                                                    "LoRAs may be applied before or after)"),
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
                    io.Combo.Input("source_encoding", options=list(SOURCE_ENCODINGS), default="shared",
                                   optional=True,
                                   tooltip="shared: the source is encoded once, with the instruction, for both "
                                           "guidance branches (half the source cache and its encoding; on ToyWorld "
                                           "within noise of per branch). per branch: with each branch's own text")],
            outputs=[io.Model.Output(display_name="model")])

    @classmethod
    def execute(cls, model, adapter: AdapterHolder, strength: float, source_cache: str,
                blocks: str = "all", source_encoding: str = "shared") -> io.NodeOutput:
        chosen = parse_blocks(blocks, available=adapter.adapter.block_ids)
        if source_encoding not in SOURCE_ENCODINGS:
            raise ValueError(f"source_encoding {source_encoding!r}: choose one of {', '.join(SOURCE_ENCODINGS)}")
        return io.NodeOutput(apply_adapter(model, adapter, strength=strength, cache=source_cache, blocks=chosen,
                                           share_source=source_encoding == "shared"))


class Wan22Expert(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_IDS["wan22_expert"], display_name="IMVE Wan 2.2 Expert", category=CATEGORY,
            description="Says which expert of Wan 2.2 T2V A14B a MODEL is. An expert has the same shapes as Wan 2.1 "
                        "14B, so nothing else can tell them apart: mark each expert right after its loader. Apply "
                        "Adapter then accepts only that expert's adapter, and Train Adapter and Tune On Keyframe "
                        "train it on that expert's noise levels (high: sigma >= 0.875, low: below).",
            inputs=[io.Model.Input("model", tooltip="A Wan 2.2 T2V A14B expert (e.g. "
                                                    "wan2.2_t2v_high_noise_14B or wan2.2_t2v_low_noise_14B)"),
                    io.Combo.Input("expert", options=list(EXPERT_CHOICES), default="high-noise",
                                   tooltip="high-noise: the file named high_noise (the first part of the schedule); "
                                           "low-noise: the file named low_noise")],
            outputs=[io.Model.Output(display_name="model")])

    @classmethod
    def execute(cls, model, expert: str) -> io.NodeOutput:
        if expert not in EXPERT_CHOICES:
            raise ValueError(f"expert {expert!r}: choose one of {', '.join(EXPERT_CHOICES)}")
        return io.NodeOutput(mark_expert(model, EXPERT_CHOICES[expert]))
