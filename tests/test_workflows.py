"""Example workflows and node ids, checked without ComfyUI: structure, links, node types, notes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
# ComfyUI core nodes the workflows may use (MarkdownNote is a frontend node: it never reaches the server)
CORE_NODES = {"UNETLoader", "CLIPLoader", "VAELoader", "CLIPTextEncode", "VAEDecode", "CreateVideo", "SaveVideo",
              "MaskPreview", "PreviewImage", "PreviewAny", "WanContextWindowsManual", "MarkdownNote",
              "LoadImageMask", "ImageFromBatch", "LoadImage", "ImageInvert"}


def catalog():
    """nodes/catalog.py on its own (the nodes package itself needs ComfyUI)."""
    spec = importlib.util.spec_from_file_location("imve_catalog", ROOT / "nodes" / "catalog.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_node_ids_are_unique_and_prefixed():
    ids = list(catalog().NODE_IDS.values())
    assert len(ids) == len(set(ids)) == 14
    assert all(i.startswith("IMVE") for i in ids)


def test_the_example_workflows_exist():
    assert {p.stem for p in WORKFLOWS} == {"imvideoedit_basic_edit", "imvideoedit_gate_mask_preview",
                                          "imvideoedit_long_video_context_windows", "imvideoedit_train_adapter",
                                          "imvideoedit_long_video_keyframes", "imvideoedit_masked_edit",
                                          "imvideoedit_first_frame_guidance", "imvideoedit_animate_image",
                                          "imvideoedit_zero_start_edit", "imvideoedit_build_pair_dataset",
                                          "imvideoedit_wan22_5b_edit", "imvideoedit_wan22_5b_first_frame",
                                          "imvideoedit_wan22_a14b_zero_start"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_uses_known_nodes_and_consistent_links(path):
    data = json.loads(path.read_text())
    nodes = {n["id"]: n for n in data["nodes"]}
    known = set(catalog().NODE_IDS.values()) | CORE_NODES
    assert {n["type"] for n in nodes.values()} <= known
    assert any(n["type"] == "MarkdownNote" and len(n["widgets_values"][0]) > 200 for n in nodes.values())
    for link_id, src, src_slot, dst, dst_slot, kind in data["links"]:
        out, inp = nodes[src]["outputs"][src_slot], nodes[dst]["inputs"][dst_slot]
        assert link_id in out["links"] and inp["link"] == link_id
        assert out["type"] == kind and inp["type"] in (kind, "*"), (path.name, link_id)
    for node in nodes.values():  # every required socket is connected
        for inp in node.get("inputs", []):
            optional = (node["type"], inp["name"]) in {("IMVELoadVideoFrames", "video_input"),
                                                      ("CreateVideo", "audio"),
                                                      ("IMVETrainAdapter", "source_images"),
                                                      ("IMVETrainAdapter", "target_images"),
                                                      ("IMVETuneOnKeyframe", "adapter")}
            assert inp["link"] is not None or optional, (path.name, node["type"], inp["name"])
    assert data["last_link_id"] == max(l[0] for l in data["links"])


# The canvas a 1600x1000 browser window leaves free (the browser tier's viewport): below the tab bar and the graph
# toolbar, right of the sidebar, above the zoom controls. The frontend draws graph point p at (p + offset) * scale.
FREE_CANVAS = (60, 90, 1600, 960)  # left, top, right, bottom in px
TITLE_HEIGHT = 30


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_opens_with_the_whole_graph_in_view(path):
    data = json.loads(path.read_text())
    boxes = [(n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in data["nodes"]]
    boxes += [(x, y, x + w, y + h) for x, y, w, h in (g["bounding"] for g in data.get("groups", []))]
    view = data["extra"]["ds"]
    (ox, oy), scale = view["offset"], view["scale"]
    left, top, right, bottom = FREE_CANVAS
    for x0, y0, x1, y1 in boxes:
        assert left <= (x0 + ox) * scale and (x1 + ox) * scale <= right, (path.name, x0, x1, view)
        assert top <= (y0 + oy) * scale and (y1 + oy) * scale <= bottom, (path.name, y0, y1, view)
