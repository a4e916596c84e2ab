"""The ComfyUI integration tier: runs against a ComfyUI checkout named by COMFYUI_DIR, and is skipped without one.

    COMFYUI_DIR=/path/to/ComfyUI /path/to/comfy-venv/bin/python -m pytest tests/integration

The interpreter must be one that runs that ComfyUI (its requirements installed). Everything runs in-process on the
CPU with tiny models; ComfyUI's folders (models, input, output) point into a temporary directory.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
SKIP_REASON = ("ComfyUI integration tier SKIPPED: COMFYUI_DIR is not set (point it at a ComfyUI checkout and run "
               "with that ComfyUI's Python; see README, 'Testing with ComfyUI')")


def pytest_collection_modifyitems(config, items):
    if COMFYUI_DIR:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory) -> types.SimpleNamespace:
    """ComfyUI imported in-process (CPU) with its folders in a temporary base directory, and this pack loaded."""
    comfy_dir = str(Path(COMFYUI_DIR).resolve())
    sys.path.insert(0, comfy_dir)  # first: ComfyUI's top-level `nodes` module must win over this repo's nodes/
    from comfy.cli_args import args
    args.cpu = True
    import comfy.model_management  # noqa: F401  (after args.cpu)
    import folder_paths

    base = tmp_path_factory.mktemp("comfy_base")
    folder_paths.models_dir = str(base / "models")
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.set_output_directory(str(base / "output"))
    for sub in ("input", "output", "models/imvideoedit"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    spec = importlib.util.spec_from_file_location("imvideoedit_pack", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["imvideoedit_pack"] = pack
    spec.loader.exec_module(pack)
    import asyncio
    extension = asyncio.run(pack.comfy_entrypoint())
    nodes = asyncio.run(extension.get_node_list())
    folder_paths.folder_names_and_paths["imvideoedit"] = ([str(base / "models" / "imvideoedit")], {".safetensors"})
    return types.SimpleNamespace(pack=pack, nodes={n.define_schema().node_id: n for n in nodes}, base=base,
                                 folder_paths=folder_paths)
