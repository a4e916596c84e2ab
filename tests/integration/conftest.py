"""The ComfyUI integration tier: runs against a ComfyUI checkout named by COMFYUI_DIR, and is skipped without one.

    COMFYUI_DIR=/path/to/ComfyUI /path/to/comfy-venv/bin/python -m pytest tests/integration

The interpreter must be one that runs that ComfyUI (its requirements installed). Everything runs in-process on the
CPU with tiny models; ComfyUI's folders (models, input, output) point into a temporary directory. The `server`
fixture (and `launch_comfyui` for a prepared base directory) runs a real ComfyUI server on 127.0.0.1 instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
SKIP_REASON = ("ComfyUI integration tier SKIPPED: COMFYUI_DIR is not set (point it at a ComfyUI checkout and run "
               "with that ComfyUI's Python; see README, 'Testing with ComfyUI')")


SOAK_REASON = "soak run SKIPPED: set IMVE_SOAK=1 to run it (about a minute; README, 'Testing with ComfyUI')"


def pytest_collection_modifyitems(config, items):
    soak = pytest.mark.skip(reason=SOAK_REASON)
    for item in items:
        if "soak" in item.keywords and not os.environ.get("IMVE_SOAK"):
            item.add_marker(soak)
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def comfyui_server(base: Path, startup_timeout: float = 180):
    """ComfyUI (main.py, CPU) on 127.0.0.1 with `base` as its base directory and this pack as its only custom node
    pack; `base` may be prepared beforehand (models, input, user settings). Yields url, object_info, log, base; the
    server is stopped on exit."""
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / "comfyui-imvideoedit").symlink_to(ROOT, target_is_directory=True)
    port = free_port()
    log_path = base / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                 "--disable-auto-launch", "--base-directory", str(base)],
                                cwd=COMFYUI_DIR, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                try:
                    info = get_json(f"{url}/object_info")
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("ComfyUI did not start:\n" + log_path.read_text()[-3000:])
                    time.sleep(1)
            yield {"url": url, "object_info": info, "log": log_path, "base": base, "pid": proc.pid}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture(scope="session")
def launch_comfyui():
    """`comfyui_server` for tests that prepare the base directory themselves (a fixture: two conftest.py files
    share the module name, so it is not imported)."""
    return comfyui_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """ComfyUI with this pack as its only custom node pack, on loopback, stopped after the module."""
    with comfyui_server(tmp_path_factory.mktemp("server_base")) as running:
        yield running
