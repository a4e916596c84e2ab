"""Soak run (marker `soak`, IMVE_SOAK=1): 20 edits queued back to back on a real ComfyUI server through its HTTP API,
one cancelled in the middle. Resident memory after the last edit stays within 5% of after the first, no temporary
or partial file is left anywhere under the server's folders, and every prompt's history entry is complete.

The server runs this pack and `comfy_standin_nodes/` (the stand-in text encoder and VAE as loader nodes); the
diffusion model is a tiny Wan 2.1 file loaded by ComfyUI's own UNETLoader.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tiny import randomize
from imvideoedit_core.io.video import write_video
from imvideoedit_core.model.adapter import build_adapter
from imvideoedit_core.model.adapter_file import save_adapter
from imvideoedit_core.model.backbone import build_backbone
from imvideoedit_core.model.config import adapter_preset, backbone_preset

pytestmark = pytest.mark.soak

HERE = Path(__file__).resolve().parent
EDITS, CANCELLED = 20, 9  # the 10th edit is interrupted while it samples
TINY = backbone_preset("tiny")


def _prepare(base: Path) -> None:
    """The tiny model, an adapter and a clip where the server looks for them; the stand-in nodes linked in."""
    (base / "models" / "diffusion_models").mkdir(parents=True)
    core = build_backbone(TINY, seed=0)
    meta = {"config": json.dumps({"transformer": {"num_heads": TINY.num_heads, "freq_dim": TINY.freq_dim,
                                                  "text_dim": TINY.text_dim}})}
    save_file({k: v.contiguous() for k, v in core.state_dict().items()},
              str(base / "models" / "diffusion_models" / "wan_tiny.safetensors"), metadata=meta)
    adapter = randomize(build_adapter(adapter_preset("tiny"), TINY, seed=0), seed=2, std=0.2)
    save_adapter(base / "models" / "imvideoedit" / "tiny_edit.safetensors", adapter)
    (base / "input").mkdir(parents=True)
    write_video(base / "input" / "clip.mp4", torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(0)),
                fps=8)
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "comfy_standin_nodes").symlink_to(HERE / "comfy_standin_nodes", target_is_directory=True)


def _prompt(seed: int, steps: int) -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan_tiny.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "IMVETestStandInCLIP", "inputs": {}},
        "3": {"class_type": "IMVETestStandInVAE", "inputs": {}},
        "4": {"class_type": "IMVELoadVideoFrames", "inputs": {"video": "clip.mp4", "fps": 0.0, "max_frames": 81,
                                                             "skip_first": 0, "every_nth": 1,
                                                             "resize_to_multiple": 16}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "make it red"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": ""}},
        "7": {"class_type": "IMVEEditConditioning", "inputs": {"vae": ["3", 0], "source": ["4", 0],
                                                              "positive": ["5", 0], "negative": ["6", 0]}},
        "8": {"class_type": "IMVELoadAdapter", "inputs": {"adapter_name": "tiny_edit.safetensors"}},
        "9": {"class_type": "IMVEApplyAdapter", "inputs": {"model": ["1", 0], "adapter": ["8", 0], "strength": 1.0,
                                                          "source_cache": "cpu", "blocks": "all"}},
        "10": {"class_type": "IMVESampler", "inputs": {"model": ["9", 0], "positive": ["7", 0], "negative": ["7", 1],
                                                       "latent": ["7", 2], "seed": seed, "steps": steps, "cfg": 2.0,
                                                       "shift": 3.0, "strength": 1.0, "solver": "euler",
                                                       "source_cache": "cpu"}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["3", 0]}},
        "12": {"class_type": "CreateVideo", "inputs": {"images": ["11", 0], "fps": 8.0}},
        "13": {"class_type": "SaveVideo", "inputs": {"video": ["12", 0], "filename_prefix": "soak/edit",
                                                     "format": "auto", "format.codec": "auto"}},
    }


def _call(url: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{path}: {error.code} {error.read()[:3000]!r}") from None


def _wait(condition, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _rss(pid: int) -> int:
    import psutil
    return psutil.Process(pid).memory_info().rss


def test_twenty_queued_edits_with_one_cancelled_leave_no_trace(tmp_path_factory, launch_comfyui):
    base = tmp_path_factory.mktemp("soak_base")
    _prepare(base)
    with launch_comfyui(base) as server:
        url, client = server["url"], str(uuid.uuid4())
        history = lambda pid: _call(url, f"/history/{pid}").get(pid)  # noqa: E731
        ids = []
        for i in range(EDITS):  # each a new seed, so ComfyUI's cache never skips the sampler
            steps = 200 if i == CANCELLED else 3
            queued = _call(url, "/prompt", {"prompt": _prompt(seed=i, steps=steps), "client_id": client})
            ids.append(queued["prompt_id"])
            if i == 0:
                _wait(lambda: history(ids[0]), timeout=120, what="the first edit")
                first_rss = _rss(server["pid"])

        def cancelled_is_running() -> bool:
            running = _call(url, "/queue")["queue_running"]
            return bool(running) and running[0][1] == ids[CANCELLED]

        _wait(cancelled_is_running, timeout=300, what="the edit to cancel to start")
        time.sleep(0.5)  # into its sampling
        _call(url, "/interrupt", {})
        entries = [_wait(lambda pid=pid: history(pid), timeout=300, what=f"prompt {pid}") for pid in ids]
        last_rss = _rss(server["pid"])

    for i, entry in enumerate(entries):
        status = entry["status"]
        messages = [event for event, _ in status["messages"]]
        assert "execution_start" in messages, (i, status)
        if i == CANCELLED:
            assert "execution_interrupted" in messages and not status["completed"], status
        else:
            assert status["completed"] and status["status_str"] == "success", (i, status)
            assert entry["outputs"]["13"], entry["outputs"]  # Save Video reported its file
    videos = sorted((base / "output" / "soak").glob("*.mp4"))
    assert len(videos) == EDITS - 1
    leftovers = [p for p in base.rglob("*") if p.is_file() and (".partial" in p.name or p.name.endswith(".tmp"))]
    assert not leftovers, leftovers
    growth = (last_rss - first_rss) / first_rss
    print(f"soak: resident memory after edit 1 {first_rss / 2**20:.0f} MiB, after edit {EDITS} "
          f"{last_rss / 2**20:.0f} MiB ({growth:+.1%})")
    assert abs(growth) <= 0.05, f"resident memory {first_rss / 2**20:.0f} -> {last_rss / 2**20:.0f} MiB ({growth:+.1%})"
