"""ComfyUI imported in-process (CPU) with its folders in a given base directory and this pack loaded.

Used by the integration tier's ``comfyui`` fixture and by benchmarks that run the pack's nodes (``realdim.py``).
The checkout is the one named by ``COMFYUI_DIR``; the interpreter must be one that runs it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_comfyui(base: Path) -> types.SimpleNamespace:
    """Import ComfyUI (CPU), point its models/input/output folders into ``base`` and load this pack.

    Returns ``pack``, ``nodes`` (node id -> node class), ``base`` and ``folder_paths``."""
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        raise RuntimeError("COMFYUI_DIR is not set: point it at a ComfyUI checkout (README, 'Testing with ComfyUI')")
    sys.path.insert(0, str(Path(comfy_dir).resolve()))  # first: ComfyUI's `nodes` module must win over nodes/
    from comfy.cli_args import args
    args.cpu = True
    import comfy.model_management  # noqa: F401  (imported after args.cpu, which it reads)
    import folder_paths

    folder_paths.models_dir = str(base / "models")
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.set_output_directory(str(base / "output"))
    for sub in ("input", "output", "models/imvideoedit", "models/diffusion_models"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    folder_paths.folder_names_and_paths["diffusion_models"] = ([str(base / "models" / "diffusion_models")],
                                                               folder_paths.supported_pt_extensions)
    spec = importlib.util.spec_from_file_location("imvideoedit_pack", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["imvideoedit_pack"] = pack
    spec.loader.exec_module(pack)
    extension = asyncio.run(pack.comfy_entrypoint())
    nodes = asyncio.run(extension.get_node_list())
    folder_paths.folder_names_and_paths["imvideoedit"] = ([str(base / "models" / "imvideoedit")], {".safetensors"})
    return types.SimpleNamespace(pack=pack, nodes={n.define_schema().node_id: n for n in nodes}, base=base,
                                 folder_paths=folder_paths)
