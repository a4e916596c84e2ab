"""The core stays importable without ComfyUI, and importing it never pulls ComfyUI modules in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Every core module is imported in a fresh interpreter in which ComfyUI's top-level modules cannot be found.
PROBE = r"""
import importlib, pkgutil, sys
FORBIDDEN = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "nodes", "server",
             "execution", "latent_preview", "node_helpers"}

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"core imported ComfyUI module {name}")
        return None

sys.meta_path.insert(0, Block())
import imvideoedit_core
names = [m.name for m in pkgutil.walk_packages(imvideoedit_core.__path__, "imvideoedit_core.")]
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
assert not leaked, leaked
print(len(names))
"""


def test_every_core_module_imports_without_comfyui():
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) >= 10  # the probe really walked the package
