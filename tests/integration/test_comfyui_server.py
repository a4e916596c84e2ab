"""The pack in a real ComfyUI server on 127.0.0.1 (the `server` fixture, conftest.py): node listing, workflow
validation, workflow templates."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
FRONTEND_ONLY = {"MarkdownNote", "Note"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "COMFY_DYNAMICCOMBO_V3"}


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def widget_count(spec: dict) -> int:
    """Widgets a node shows (and a UI workflow stores) for its /object_info spec."""
    count = 0
    for section in ("required", "optional"):
        for name in spec["input_order"].get(section, []):
            kind, options = (spec["input"][section][name] + [{}])[:2]
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                if options.get("forceInput"):
                    continue
                count += 1
                count += bool(options.get("control_after_generate"))
                count += bool(options.get("video_upload") or options.get("image_upload"))
    return count


def test_every_imve_node_is_listed_and_the_pack_imported_cleanly(server):
    from test_workflows import catalog
    listed = {k for k in server["object_info"] if k.startswith("IMVE")}
    assert listed == set(catalog().NODE_IDS.values())
    log = server["log"].read_text()
    assert "IMPORT FAILED" not in log and "Error while calling comfy_entrypoint" not in log


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_nodes_and_widgets_fit_the_schemas(server, path):
    info = server["object_info"]
    for node in json.loads(path.read_text())["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node["type"] in info, f"{path.name}: unknown node {node['type']}"
        expected = widget_count(info[node["type"]])
        assert len(node["widgets_values"]) == expected, (path.name, node["type"], node["widgets_values"], expected)


def test_workflows_are_served_as_templates(server):
    templates = _get(f"{server['url']}/api/workflow_templates")
    assert sorted(templates["comfyui-imvideoedit"]) == sorted(p.stem for p in WORKFLOWS)


def test_object_info_widgets_have_tooltips(server):
    for name, spec in server["object_info"].items():
        if name.startswith("IMVE"):
            for section in ("required", "optional"):
                for key, value in spec["input"].get(section, {}).items():
                    assert len(value) > 1 and value[1].get("tooltip"), (name, key)
