"""Example workflows run end to end in ComfyUI's own executor (in-process, CPU, tiny models).

Each workflows/*.json (the UI format a user opens) becomes an API prompt the way the frontend builds one: widget
values are matched to input names through the nodes' own input lists, links become [node, slot] inputs, notes are
left out. ComfyUI validates and executes that prompt with its real core nodes (CLIP Text Encode, Get Image from
Batch, Image Invert, VAE Decode, Create Video, Save Video, previews) and this pack's nodes. Only the three model
loaders are stand-ins (no Wan files here): they hand over the tiny Wan model, a stand-in CLIP and a stand-in VAE
whatever file name the workflow stores. Widgets a test overrides (tuning steps, sampling steps) are named.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from comfy_standins import StandInCLIP, StandInCodecVAE
from test_comfyui_inprocess import tiny_wan  # noqa: F401  (fixture)
from test_comfyui_wan22 import experts, tiny_ti2v  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]
FRONTEND_ONLY = {"MarkdownNote", "Note"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"


class _Server:
    """What PromptExecutor needs of the server: nobody is listening."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, event, data, sid=None) -> None:
        pass


def _loader(real, output_type: str, value):
    """A node with the real loader's input names (as strings: no file lists) that returns ``value``, or
    ``value(name)`` for the file name it is given when ``value`` is a function (a ``by_name`` lookup)."""
    names = list(real.INPUT_TYPES()["required"])

    class StandInLoader:
        RETURN_TYPES = (output_type,)
        FUNCTION = "load"
        CATEGORY = "tests"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {name: ("STRING", {}) for name in names}}

        def load(self, **files):
            return (value(next(iter(files.values()))) if isinstance(value, by_name) else value,)

    return StandInLoader


class by_name(dict):
    """What a stand-in loader hands over per file name: the first key contained in the name wins."""

    def __call__(self, name: str):
        return next(v for k, v in self.items() if k in name)


@pytest.fixture(scope="module")
def executor(comfyui, tiny_wan, tiny_ti2v, experts):  # noqa: F811
    """ComfyUI's node registry with its built-in extra nodes, this pack, and stand-in loaders (restored after)."""
    import nodes
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    model, _ = tiny_wan
    saved = dict(nodes.NODE_CLASS_MAPPINGS)
    nodes.NODE_CLASS_MAPPINGS.update(comfyui.nodes)
    models = by_name({"ti2v_5B": tiny_ti2v[0], "high_noise": experts["high file"], "low_noise": experts["low file"],
                      "": model})
    vaes = by_name({"wan2.2_vae": StandInCodecVAE(channels=48, stride=16), "": StandInCodecVAE()})
    for name, kind, value in (("UNETLoader", "MODEL", models), ("CLIPLoader", "CLIP", StandInCLIP()),
                              ("VAELoader", "VAE", vaes)):
        nodes.NODE_CLASS_MAPPINGS[name] = _loader(saved[name], kind, value)
    yield nodes.NODE_CLASS_MAPPINGS
    nodes.NODE_CLASS_MAPPINGS.clear()
    nodes.NODE_CLASS_MAPPINGS.update(saved)


def _widgets(spec: dict, values: list, prefix: str, inputs: dict) -> None:
    """Take this spec's widget values from the front of ``values`` in the frontend's order; a dynamic combo's
    chosen option brings its own widgets next, named ``combo.widget``."""
    for section in ("required", "optional"):
        for name, (kind, *rest) in spec.get(section, {}).items():
            options = rest[0] if rest else {}
            if not values or options.get("forceInput"):
                continue
            if kind == DYNAMIC_COMBO:
                inputs[prefix + name] = choice = values.pop(0)
                chosen = next(o for o in options["options"] if o["key"] == choice)
                _widgets(chosen["inputs"], values, f"{prefix}{name}.", inputs)
            elif isinstance(kind, list) or kind in WIDGET_TYPES:
                inputs[prefix + name] = values.pop(0)
                if options.get("control_after_generate"):
                    values.pop(0)  # the frontend keeps "fixed"/"randomize" right after the seed


def api_prompt(workflow: dict, classes: dict, overrides: dict[str, dict]) -> dict:
    """The API prompt of a UI workflow; ``overrides``: {node type: {input: value}}. An upload button's value
    comes after every other widget of its node, so it is simply left over."""
    links = {link[0]: [str(link[1]), link[2]] for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        inputs: dict = {}
        _widgets(classes[node["type"]].INPUT_TYPES(), list(node.get("widgets_values", [])), "", inputs)
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                inputs[socket["name"]] = links[socket["link"]]
        inputs.update(overrides.get(node["type"], {}))
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def run(name: str, classes: dict, overrides: dict[str, dict]) -> dict:
    """Validate and execute workflows/<name>.json; returns the executor's history result."""
    import execution
    workflow = json.loads((ROOT / "workflows" / f"{name}.json").read_text())
    prompt = api_prompt(workflow, classes, overrides)
    prompt_id = str(uuid.uuid4())
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    assert valid, (error, node_errors)
    classic = getattr(getattr(execution, "CacheType", None), "CLASSIC", False)
    runner = execution.PromptExecutor(_Server(), cache_type=classic,
                                      cache_args={"lru": 0, "ram": 0.0, "ram_inactive": 0.0})
    runner.execute(prompt, prompt_id, {}, outputs)
    errors = [data for event, data in runner.status_messages if event == "execution_error"]
    assert runner.success and not errors, errors
    return runner.history_result


def _write_clip(path: Path, frames: int = 9, size: int = 32) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8, (size, size))
    for i in range(frames):
        frame = np.zeros((size, size, 3), np.uint8)
        frame[8:20, 4 + i:16 + i] = (40, 200, 230)
        writer.write(frame)
    writer.release()


def test_zero_start_edit_runs_end_to_end_and_saves_a_browser_playable_video(comfyui, executor):
    """The day-one workflow: no adapter file; the edited keyframe comes from an image edit inside the graph."""
    _write_clip(Path(comfyui.folder_paths.get_input_directory()) / "input_video.mp4")
    history = run("imvideoedit_zero_start_edit", executor,
                  {"IMVETuneOnKeyframe": {"steps": 6}, "IMVESampler": {"steps": 2}})
    summaries = [v for out in history["outputs"].values() for v in out.get("text", [])]
    assert any(s.startswith("tuned a fresh adapter 6 steps at lr 0.001") for s in summaries), summaries
    videos = sorted((comfyui.base / "output" / "video").glob("imvideoedit_zero_start*.mp4"))
    assert videos, sorted(p.name for p in (comfyui.base / "output").rglob("*"))
    with av.open(str(videos[-1])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(stream)) == 9


def test_build_pair_dataset_appends_what_train_adapter_reads(comfyui, executor):
    from imvideoedit_pack.imvideoedit_core.train.pair_dataset import PairDataset
    image = np.zeros((32, 48, 3), np.uint8)
    image[4:20, 8:30] = (200, 60, 20)
    cv2.imwrite(str(Path(comfyui.folder_paths.get_input_directory()) / "source.png"), image)
    run("imvideoedit_build_pair_dataset", executor, {})
    folder = Path(comfyui.folder_paths.get_input_directory()) / "imvideoedit_pairs"
    dataset = PairDataset.from_path(folder)
    assert len(dataset) == 1 and dataset[0].instruction == "invert the colours"
    pair = dataset[0]
    np.testing.assert_allclose(np.asarray(pair.target), 1 - np.asarray(pair.source), atol=1 / 255 + 1e-6)


@pytest.mark.parametrize("name", ["imvideoedit_wan22_5b_edit", "imvideoedit_wan22_5b_first_frame"])
def test_the_wan22_5b_workflows_run_end_to_end(comfyui, executor, name):
    """TI2V 5B (48 channels, the Wan 2.2 VAE's 16x stride: sides of 32 multiples), with and without the edited
    first frame as the clean first frame."""
    _write_clip(Path(comfyui.folder_paths.get_input_directory()) / "input_video.mp4", size=64)
    history = run(name, executor, {"IMVETuneOnKeyframe": {"steps": 3}, "IMVESampler": {"steps": 2}})
    summaries = [v for out in history["outputs"].values() for v in out.get("text", [])]
    assert any(s.startswith("tuned a fresh adapter 3 steps") and "of 64x64" in s for s in summaries), summaries
    videos = sorted((comfyui.base / "output" / "video").glob(f"{name}_0*.mp4"))
    assert videos, sorted(p.name for p in (comfyui.base / "output").rglob("*"))
    with av.open(str(videos[-1])) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (64, 64)
        assert sum(1 for _ in container.decode(stream)) == 9


def test_the_a14b_zero_start_workflow_runs_both_experts(comfyui, executor):
    _write_clip(Path(comfyui.folder_paths.get_input_directory()) / "input_video.mp4")
    history = run("imvideoedit_wan22_a14b_zero_start", executor,
                  {"IMVETuneOnKeyframe": {"steps": 2}, "IMVESampler": {"steps": 3}})
    summaries = [v for out in history["outputs"].values() for v in out.get("text", [])]
    assert any(s.startswith("tuned a fresh adapter 2 steps") for s in summaries), summaries
    videos = sorted((comfyui.base / "output" / "video").glob("imvideoedit_wan22_a14b_zero_start_0*.mp4"))
    assert videos, sorted(p.name for p in (comfyui.base / "output").rglob("*"))
