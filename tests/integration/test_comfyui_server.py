"""The pack in a real ComfyUI server on 127.0.0.1 (the `server` fixture, conftest.py): node listing, workflow
validation, workflow templates."""

from __future__ import annotations

import json
import urllib.error
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
    problems = ("IMPORT FAILED", "Cannot import", "Error while calling comfy_entrypoint")
    ours = [line for line in log.splitlines() if any(p in line for p in problems) and "imvideoedit" in line.lower()]
    assert not ours, ours  # ComfyUI's own optional nodes may fail on a CPU-only torch (e.g. 0.26's nodes_glsl)


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


def _post_prompt(url: str, prompt: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_declared_ranges_are_enforced_at_submit(server):
    """validate_inputs names only `video`, so ComfyUI checks every other input's min/max before anything runs,
    and a missing file is reported once (not once per input)."""
    load = {"class_type": "IMVELoadVideoFrames",
            "inputs": {"video": "no_such_clip.mp4", "fps": 500.0, "max_frames": 81, "skip_first": 0,
                       "every_nth": 1, "resize_to_multiple": 1000}}
    status, body = _post_prompt(server["url"], {"1": load, "2": {"class_type": "PreviewImage",
                                                                 "inputs": {"images": ["1", 0]}}})
    assert status == 400
    errors = body["node_errors"]["1"]["errors"]
    kinds = sorted((e["type"], e["extra_info"]["input_name"]) for e in errors)
    assert kinds == [("custom_validation_failed", "video"), ("value_bigger_than_max", "fps"),
                     ("value_bigger_than_max", "resize_to_multiple")]
    assert "no_such_clip.mp4" in next(e["details"] for e in errors if e["type"] == "custom_validation_failed")


def test_no_pack_node_takes_over_all_input_checks(comfyui):
    """A validate_inputs with **kwargs makes ComfyUI skip every declared range of its node."""
    import inspect
    for node_id, node in comfyui.nodes.items():
        if "validate_inputs" in vars(node):
            assert inspect.getfullargspec(node.validate_inputs).varkw is None, node_id


def test_the_packs_errors_read_as_the_packs_not_as_a_path(comfyui):
    """ComfyUI names an exception module.Class; a custom node's module is its folder path."""
    from execution import full_type_name
    from imvideoedit_pack.imvideoedit_core.io.video import VideoReadError
    from imvideoedit_pack.imvideoedit_core.train.pair_scan import PairDatasetError
    assert full_type_name(VideoReadError) == "imvideoedit.VideoReadError"
    assert full_type_name(PairDatasetError) == "imvideoedit.PairDatasetError"
