"""The example workflows in a real browser: ComfyUI's own frontend (the comfyui-frontend-package its server serves)
in headless Chromium opens each workflows/*.json through its own file-open path (app.handleFile) and shows no
missing-node or widget warning; screenshots of each are kept (the whole graph, and the view the workflow opens at).

Needs, besides COMFYUI_DIR: Chromium and its ChromeDriver (Debian: `apt-get install chromium chromium-driver`; or name
them with CHROMIUM and CHROMEDRIVER) and `selenium` in ComfyUI's Python; skipped with the reason otherwise. Nothing is
downloaded: the driver path is given explicitly, so Selenium Manager never runs. Screenshots go to $IMVE_ARTIFACTS
when it is set (else into pytest's temporary directory) and their paths are printed (`pytest -s`).

The server gets what the workflows' notes ask the user to put in place (model and adapter files: empty placeholders,
the frontend only lists them; the input video: a tiny real clip), so a warning can only come from the workflow
itself: a node type the frontend does not know, widget values it rejects, reorders or reads into the wrong widget,
or any dialog, toast or error overlay it raises while loading.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
VIEWPORT = (1600, 1000)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}"]
# Where the files a workflow names in its first widget live (relative to the server's base directory).
USER_FILES = {"UNETLoader": "models/diffusion_models", "CLIPLoader": "models/text_encoders", "VAELoader": "models/vae",
              "IMVELoadAdapter": "models/imvideoedit", "IMVELoadVideoFrames": "input", "IMVELongVideoEdit": "input",
              "LoadImage": "input", "LoadImageMask": "input"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# A user who has finished the first-run tour (else the template browser covers the graph), no restored tabs; for the
# screenshots, nodes drawn in full at any zoom and no minimap over the graph.
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.Persist": False, "LiteGraph.Canvas.MinFontSizeForLOD": 0,
            "Comfy.Minimap.Visible": False}
# Console messages that speak of the workflow's nodes or widgets.
RELEVANT_CONSOLE = re.compile(r"missing|not found|unknown|unregistered|widget|not in list|invalid|unsupported|"
                              r"validat|could not|cannot|failed to (load|configure|convert)|error loading", re.I)
STARTUP_TIMEOUT_S = 240
SETTLE_S = (1.5, 15.0)  # after the load: at least, at most (until the page has made no request for a second)

# Injected before any page script: keeps console.warn/error and uncaught errors where the test can read them.
CONSOLE_HOOK = r"""
(() => {
  const seen = window.__imveConsole = [];
  const text = a => {
    if (a instanceof Error) return a.stack || String(a);
    if (a && typeof a === 'object') { try { return JSON.stringify(a).slice(0, 2000); } catch (e) { return String(a); } }
    return String(a);
  };
  for (const level of ['error', 'warn']) {
    const original = console[level].bind(console);
    console[level] = (...args) => {
      try { seen.push({level, text: args.map(text).join(' ').slice(0, 4000)}); } catch (e) {}
      return original(...args);
    };
  }
  window.addEventListener('error', e => seen.push({level: 'uncaught', text: String(e.message)}));
  window.addEventListener('unhandledrejection', e => seen.push({level: 'unhandledrejection', text: text(e.reason)}));
})();
"""

# What a user sees pop up: toasts, dialogs, alerts and the "N errors found" overlay, recorded as they appear.
SURFACES = ('.p-toast-message, [role="dialog"], [role="alertdialog"], [role="alert"], .p-dialog, '
            '[data-testid="error-overlay"]')
WATCH_SURFACES = r"""
const SEL = arguments[0];
window.__imveShown = [];
const describe = el => ({
  what: el.getAttribute('data-testid') || el.getAttribute('role') || String(el.className).split(' ')[0],
  severity: (String(el.className).match(/p-toast-message-(\w+)/) || [])[1] || null,
  text: (el.innerText || el.textContent || '').trim().slice(0, 2000)});
window.__imveVisibleSurfaces = () => [...document.querySelectorAll(SEL)]
  .filter(el => el.getClientRects().length).map(describe);
new MutationObserver(mutations => {
  for (const m of mutations) for (const n of m.addedNodes) {
    if (n.nodeType !== 1) continue;
    const found = n.matches(SEL) ? [n] : [];
    found.push(...n.querySelectorAll(SEL));
    for (const el of found) window.__imveShown.push(describe(el));
  }
}).observe(document.body, {childList: true, subtree: true});
"""

APP_READY = """
return !!(window.app && window.LiteGraph && window.app.canvas && (window.app.rootGraph || window.app.graph)
          && document.querySelector('canvas') && 'KSampler' in window.LiteGraph.registered_node_types)
"""

# The user's "open a workflow file" path (drag and drop / Workflow > Open both end in app.handleFile).
LOAD = r"""
const [name, text, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
window.__imveConsole.length = 0;
window.__imveShown.length = 0;
const workflow = JSON.parse(text);
const unknownBefore = workflow.nodes.filter(n => !(n.type in LiteGraph.registered_node_types))
  .map(n => ({id: String(n.id), type: n.type}));
const file = new File([text], name, {type: 'application/json'});
const loading = app.handleFile ? app.handleFile(file) : app.loadGraphData(workflow, true, true, name);
Promise.resolve(loading).then(() => done({ok: true, unknownBefore}),
                              e => done({ok: false, error: String((e && e.stack) || e), unknownBefore}));
"""

# The whole graph in view (what the frontend's "fit view" does), for the screenshot.
FIT_VIEW = r"""
const canvas = app.canvas, nodes = (app.rootGraph || app.graph)._nodes;
let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
for (const node of nodes) {
  const [x, y, w, h] = node.boundingRect;
  x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h);
}
if (nodes.length && canvas.ds.fitToBounds) canvas.ds.fitToBounds([x0, y0, x1 - x0, y1 - y0]);
canvas.setDirty(true, true);
"""
NEXT_FRAMES = "return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 300))))"

INSPECT = r"""
const plain = x => {
  try { return JSON.parse(JSON.stringify(x === undefined ? null : x)); } catch (e) { return String(x); }
};
const graph = app.rootGraph || app.graph;
const widgetInfo = w => ({
  name: w.name, type: w.type, value: plain(w.value), hidden: !!(w.hidden || (w.options && w.options.hidden)),
  serialize: w.serialize !== false, min: w.options && w.options.min != null ? w.options.min : null,
  max: w.options && w.options.max != null ? w.options.max : null,
  options: w.options && Array.isArray(w.options.values) ? plain(w.options.values) : null});
const fresh = {};
const nodes = (graph._nodes || graph.nodes).map(node => {
  if (!(node.type in fresh)) {
    try {
      const f = LiteGraph.createNode(node.type);
      fresh[node.type] = f && {values: plain(f.serialize().widgets_values || []),
                               widgets: (f.widgets || []).map(widgetInfo)};
    } catch (e) { fresh[node.type] = {error: String(e)}; }
  }
  return {id: String(node.id), type: node.type, title: node.title,
          registered: node.type in LiteGraph.registered_node_types, has_errors: !!node.has_errors,
          values: plain(node.serialize().widgets_values || []), widgets: (node.widgets || []).map(widgetInfo)};
});
const saved = graph.serialize();
const pinia = (((document.querySelector('#vue-app') || {}).__vue_app__ || {}).config || {}).globalProperties;
const store = id => pinia && pinia.$pinia && pinia.$pinia._s.get(id);
const stores = pinia && pinia.$pinia ? {
  missing_nodes: plain(store('missingNodesError') && store('missingNodesError').missingNodesError),
  missing_models: plain(((store('missingModel') || {}).missingModelCandidates || []).filter(c => c.isMissing)),
  missing_media: plain(((store('missingMedia') || {}).missingMediaCandidates || []).filter(c => c.isMissing)),
  error_overlay_open: !!(store('executionError') || {}).isErrorOverlayOpen} : null;
return {nodes, fresh, saved_nodes: saved.nodes.length, saved_links: (saved.links || []).length, stores,
        console: window.__imveConsole.slice(), shown: window.__imveShown.slice(),
        visible: window.__imveVisibleSurfaces(), frontend: window.__COMFYUI_FRONTEND_VERSION__ || null};
"""


def _executable(path: str | None) -> str | None:
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None


def _browser_tools() -> tuple[str | None, str | None, list[str]]:
    chromium = _executable(os.environ.get("CHROMIUM")) or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = _executable(os.environ.get("CHROMEDRIVER")) or shutil.which("chromedriver")
    missing = [what for what, found in (("Chromium", chromium), ("ChromeDriver", driver)) if not found]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append(f"the selenium package (for {sys.executable})")
    return chromium, driver, missing


def _tiny_image(path: Path) -> None:
    """A 64x64 gray picture (Pillow ships with ComfyUI)."""
    from PIL import Image
    Image.new("RGB", (64, 64), (128, 128, 128)).save(path)


def _tiny_video(path: Path) -> None:
    """16 frames, 64x64: enough for the frontend's preview; an empty file when PyAV cannot write one."""
    try:
        import av
        import numpy as np
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=16)
            stream.width = stream.height = 64
            stream.pix_fmt = "yuv420p"
            for i in range(16):
                frame = np.full((64, 64, 3), (16 * i, 128, 255 - 16 * i), np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    except Exception:  # noqa: BLE001  (a placeholder still puts the name in the list)
        path.write_bytes(b"")


def _prepare_base(base: Path) -> list[str]:
    """The files the workflows name (as their notes tell the user to install them) and the frontend settings."""
    placed = []
    for workflow in WORKFLOWS:
        for node in json.loads(workflow.read_text())["nodes"]:
            folder = USER_FILES.get(node["type"])
            if folder and node.get("widgets_values") and isinstance(node["widgets_values"][0], str):
                path = base / folder / node["widgets_values"][0]
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    if folder != "input":
                        path.write_bytes(b"")
                    elif path.suffix.lower() in IMAGE_SUFFIXES:
                        _tiny_image(path)
                    else:
                        _tiny_video(path)
                    placed.append(f"{folder}/{path.name}")
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(SETTINGS))
    return placed


class Frontend:
    """One headless Chromium on the served frontend."""

    def __init__(self, driver, url: str, artifacts: Path, placed: list[str]):
        self.driver, self.url, self.artifacts, self.placed = driver, url, artifacts, placed
        self.screenshots: list[Path] = []

    def open(self) -> None:
        self.driver.get(self.url + "/")
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.driver.execute_script(APP_READY):
            if time.monotonic() > deadline:
                raise TimeoutError("the ComfyUI frontend did not become ready")
            time.sleep(0.5)
        self.driver.execute_script(WATCH_SURFACES, SURFACES)

    def settle(self) -> None:
        """Wait until the page has made no new request for a second (the frontend checks models and media after
        the load returns)."""
        start = time.monotonic()
        count, since = -1, start
        while time.monotonic() - start < SETTLE_S[1]:
            now_count = self.driver.execute_script("return performance.getEntriesByType('resource').length")
            if now_count != count:
                count, since = now_count, time.monotonic()
            elif time.monotonic() - since >= 1.0 and time.monotonic() - start >= SETTLE_S[0]:
                break
            time.sleep(0.25)
        self.driver.execute_script(NEXT_FRAMES)

    def screenshot(self, name: str) -> Path:
        path = self.artifacts / name
        self.driver.save_screenshot(str(path))
        self.screenshots.append(path)
        return path

    def load(self, path: Path) -> dict:
        self.open()
        self.driver.get_log("browser")  # drop what the start-up logged
        result = self.driver.execute_async_script(LOAD, path.name, path.read_text())
        self.settle()
        result.update(self.driver.execute_script(INSPECT))
        result["network"] = [entry for entry in self.driver.get_log("browser") if entry.get("source") == "network"]
        result["screenshot_as_opened"] = self.screenshot(f"{path.stem}.as_opened.png")  # the workflow's own view
        self.driver.execute_script(FIT_VIEW)
        self.driver.execute_script(NEXT_FRAMES)
        result["screenshot"] = self.screenshot(f"{path.stem}.png")  # the whole graph
        return result


@pytest.fixture(scope="module")
def frontend(tmp_path_factory, launch_comfyui):
    chromium, chromedriver, missing = _browser_tools()
    if missing:
        pytest.skip("browser test SKIPPED: " + ", ".join(missing) + " not available (Debian: apt-get install chromium "
                    "chromium-driver; pip install selenium into ComfyUI's Python; or set CHROMIUM / CHROMEDRIVER)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    artifacts = Path(os.environ["IMVE_ARTIFACTS"]) if os.environ.get("IMVE_ARTIFACTS") else \
        tmp_path_factory.mktemp("browser_screenshots")
    artifacts.mkdir(parents=True, exist_ok=True)
    base = tmp_path_factory.mktemp("browser_server_base")
    placed = _prepare_base(base)
    with launch_comfyui(base) as running, tempfile.TemporaryDirectory(prefix="imve-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # Its own session (process group), so that nothing of this Chromium outlives the module.
        service = Service(executable_path=chromedriver, log_output=str(base / "chromedriver.log"),
                          popen_kw={"start_new_session": True})
        driver = webdriver.Chrome(service=service, options=options)
        page = None
        try:
            driver.set_page_load_timeout(STARTUP_TIMEOUT_S)
            driver.set_script_timeout(STARTUP_TIMEOUT_S)
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False})
            driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CONSOLE_HOOK})
            page = Frontend(driver, running["url"], artifacts, placed)
            page.base = running["base"]
            yield page
        finally:
            group = service.process.pid if service.process else None
            try:
                driver.quit()
            finally:
                if group:
                    try:
                        os.killpg(group, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            if page is not None:
                print("\nbrowser screenshots:\n" + "\n".join(f"  {p}" for p in page.screenshots))


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _kind(value) -> str:
    if value is None or isinstance(value, (bool, str)):
        return {type(None): "null", bool: "boolean", str: "string"}[type(value)]
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def _widget_problems(where: str, stored: list, node: dict, fresh: dict | None) -> list[str]:
    """Values stored in the workflow against the widgets the frontend built and what it would save again."""
    problems = []
    widgets, kept = node["widgets"], node["values"]
    names = [w["name"] for w in widgets]
    expected = ""
    if fresh and "values" in fresh:
        expected = (f"; the frontend's widgets are {names} and a new node stores "
                    f"{json.dumps(fresh['values'])}")
    if len(kept) < len(stored):
        problems.append(f"{where}: the workflow stores {len(stored)} widget values, the frontend keeps {len(kept)} "
                        f"({json.dumps(kept)}; dropped {json.dumps(stored[len(kept):])}){expected}")
    for i, value in enumerate(stored[:len(kept)]):
        name = names[i] if i < len(names) else f"#{i}"
        if not _same(value, kept[i]):
            problems.append(f"{where}: widget '{name}' (value #{i}): the workflow has {json.dumps(value)}, the "
                            f"frontend made it {json.dumps(kept[i])}{expected}")
            continue
        if i >= len(widgets):
            continue
        widget = widgets[i]
        default = fresh["values"][i] if fresh and "values" in fresh and i < len(fresh["values"]) else None
        if widget["type"] == "combo" and widget["options"] is not None and value not in widget["options"]:
            problems.append(f"{where}: widget '{name}' (value #{i}) = {json.dumps(value)} is not one of its options "
                            f"{json.dumps(widget['options'][:20])}")
        elif widget["type"] in ("number", "slider") and _kind(value) == "number":
            low, high = widget["min"], widget["max"]
            if (low is not None and value < low) or (high is not None and value > high):
                problems.append(f"{where}: widget '{name}' (value #{i}) = {json.dumps(value)} is outside its range "
                                f"[{low}, {high}] (default {json.dumps(default)})")
        if default is not None and _kind(value) != _kind(default):
            problems.append(f"{where}: widget '{name}' (value #{i}, a {widget['type']} widget) holds "
                            f"{json.dumps(value)}, a {_kind(value)}; the frontend expects a {_kind(default)} like its "
                            f"default {json.dumps(default)}{expected}")
    for i in range(len(stored), len(kept)):
        widget = widgets[i] if i < len(widgets) else {"name": f"#{i}", "hidden": False}
        if not widget["hidden"]:
            problems.append(f"{where}: the workflow stores {len(stored)} widget values but the frontend shows widget "
                            f"'{widget['name']}' (value #{i}) as well and saves {json.dumps(kept)}{expected}")
    return problems


def _problems(workflow: dict, result: dict, server_url: str) -> tuple[list[str], list[str]]:
    problems, notes = [], []
    if not result["ok"]:
        problems.append(f"the frontend failed to load the workflow: {result['error']}")
    for node in result["unknownBefore"]:
        problems.append(f"node {node['id']}: type {node['type']!r} is not registered in the frontend (missing node)")
    loaded = {node["id"]: node for node in result["nodes"]}
    if result["saved_nodes"] != len(workflow["nodes"]) or result["saved_links"] != len(workflow["links"]):
        problems.append(f"the workflow has {len(workflow['nodes'])} nodes and {len(workflow['links'])} links, the "
                        f"frontend's graph {result['saved_nodes']} and {result['saved_links']}")
    for stored in workflow["nodes"]:
        where = f"node {stored['id']} {stored['type']}"
        node = loaded.get(str(stored["id"]))
        if node is None:
            problems.append(f"{where}: not in the frontend's graph")
            continue
        if node["type"] != stored["type"] or not node["registered"] or node["has_errors"]:
            problems.append(f"{where}: the frontend made it {node['type']!r} (registered: {node['registered']}, "
                            f"marked as having errors: {node['has_errors']})")
            continue
        values = stored.get("widgets_values") or []
        if isinstance(values, dict):
            if values != node["values"]:
                problems.append(f"{where}: widgets {json.dumps(values)} became {json.dumps(node['values'])}")
            continue
        problems += _widget_problems(where, values, node, result["fresh"].get(node["type"]))
    stores = result["stores"]
    if stores is None:
        notes.append("the frontend's stores were not readable; judged by what is shown and logged only")
    else:
        for key in ("missing_nodes", "missing_models", "missing_media"):
            if stores[key]:
                problems.append(f"the frontend reports {key.replace('_', ' ')}: {json.dumps(stores[key])[:1500]}")
        if stores["error_overlay_open"]:
            problems.append("the frontend's error overlay is open")
    for surface in result["shown"] + result["visible"]:
        if surface["severity"] in ("success", "info", "secondary", "contrast"):
            notes.append(f"{surface['severity']} toast: {surface['text'][:300]}")
        elif surface["text"] or surface["what"] == "error-overlay":
            problems.append(f"the frontend showed {surface['what']} ({surface['severity'] or 'no severity'}): "
                            f"{surface['text'][:1000]!r}")
    for entry in result["console"]:
        (problems if RELEVANT_CONSOLE.search(entry["text"]) else notes).append(
            f"console.{entry['level']} while loading: {entry['text'][:1000]}")
    for entry in result["network"]:
        (problems if server_url in entry["message"] else notes).append(f"request failed: {entry['message'][:500]}")
    return list(dict.fromkeys(problems)), list(dict.fromkeys(notes))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_opens_in_the_frontend_without_warnings(frontend, path):
    workflow = json.loads(path.read_text())
    result = frontend.load(path)
    problems, notes = _problems(workflow, result, frontend.url)
    print(f"\n{path.name} (frontend {result['frontend']}, {len(result['nodes'])} nodes): screenshots "
          f"{result['screenshot']} (whole graph), {result['screenshot_as_opened']} (as opened); placed for the test: "
          f"{', '.join(frontend.placed)}")
    for line in notes:
        print(f"  note: {line}")
    for line in problems:
        print(f"  PROBLEM: {line}")
    assert not problems, (f"{path.name} in ComfyUI's frontend:\n  " + "\n  ".join(problems) +
                          f"\nscreenshots: {result['screenshot']} (whole graph), {result['screenshot_as_opened']} "
                          f"(as opened)\nall screenshots so far: {[str(p) for p in frontend.screenshots]}")


# Loads a URL into a <video> element, as ComfyUI's video preview does, and reports whether a frame decoded.
PLAYBACK = r"""
const [url, done] = [arguments[0], arguments[arguments.length - 1]];
const video = document.createElement('video');
video.muted = true;
video.preload = 'auto';
let reported = false;
const finish = ok => {
  if (reported) return;
  reported = true;
  done({ok, width: video.videoWidth, height: video.videoHeight, error: video.error ? video.error.code : null});
};
video.onloadeddata = () => finish(true);
video.onerror = () => finish(false);
setTimeout(() => finish(false), 15000);
video.src = url;
document.body.appendChild(video);
"""


def test_a_video_the_pack_writes_plays_in_the_browser(frontend, monkeypatch):
    """The pack's mp4 (H.264 through PyAV), served by ComfyUI's /view as its preview fetches it, decodes in
    Chromium; the OpenCV fallback's MPEG-4 Part 2 file, what the pack wrote before, does not (so the check can
    fail)."""
    import torch
    from imvideoedit_core.io import video as video_io
    frames = torch.rand(9, 48, 64, 3, generator=torch.Generator().manual_seed(0))
    output = frontend.base / "output"
    h264 = video_io.write_video(output / "imve_h264.mp4", frames, fps=8)
    monkeypatch.setattr(video_io, "pyav_h264_available", lambda: False)
    mp4v = video_io.write_video(output / "imve_mp4v.mp4", frames, fps=8)
    assert (h264.codec, mp4v.codec) == ("h264", "mp4v")
    frontend.open()
    played = {name: frontend.driver.execute_async_script(PLAYBACK, f"{frontend.url}/view?filename={name}&type=output")
              for name in ("imve_h264.mp4", "imve_mp4v.mp4")}
    assert played["imve_h264.mp4"]["ok"] and (played["imve_h264.mp4"]["width"], played["imve_h264.mp4"]["height"]) \
        == (64, 48), played
    assert not played["imve_mp4v.mp4"]["ok"], played
