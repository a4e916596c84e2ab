"""The ComfyUI integration tier: runs against a ComfyUI checkout named by COMFYUI_DIR, and is skipped without one.

    COMFYUI_DIR=/path/to/ComfyUI /path/to/comfy-venv/bin/python -m pytest tests/integration

The interpreter must be one that runs that ComfyUI (its requirements installed). Everything runs in-process on the
CPU with tiny models; ComfyUI's folders (models, input, output) point into a temporary directory. The `server`
fixture (and `launch_comfyui` for a prepared base directory) runs a real ComfyUI server on 127.0.0.1 instead.
"""

from __future__ import annotations

import contextlib
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
REALDIM_REASON = ("real-dimension tier SKIPPED: set IMVE_REALDIM=1 to run it (minutes, ~10 GB of memory and disk; "
                  "README, 'Testing with ComfyUI')")


def pytest_collection_modifyitems(config, items):
    for marker, variable, reason in (("soak", "IMVE_SOAK", SOAK_REASON), ("realdim", "IMVE_REALDIM", REALDIM_REASON)):
        for item in items:
            if marker in item.keywords and not os.environ.get(variable):
                item.add_marker(pytest.mark.skip(reason=reason))
    if COMFYUI_DIR:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory) -> types.SimpleNamespace:
    """ComfyUI imported in-process (CPU) with its folders in a temporary base directory, and this pack loaded."""
    from bench.comfy_inprocess import start_comfyui
    return start_comfyui(tmp_path_factory.mktemp("comfy_base"))


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
