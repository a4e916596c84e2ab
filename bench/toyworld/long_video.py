"""Long ToyWorld clips edited window by window: drift and seams with and without keyframe sharing; memory.

    python -m bench.toyworld.long_video            # full: 3 videos per edit type, 32-frame clips (4x the window)
    python -m bench.toyworld.long_video --quick    # smoke run: 1 video per type, 16 frames, 2 steps, nothing written

The backbone was trained on 8-frame clips, so the window is 8 frames. Systems (same adapter, seed, sampler):
    one_pass        the whole clip in one sampling run (memory grows with the clip)
    independent     windows of 8, no overlap, no sharing
    overlap         windows of 8 overlapping by 2 (pinned and cross-faded), no keyframes
    overlap+attn    + 3 keyframes edited first and prepended, pinned, to every window (3D self-attention sharing)
    overlap+adapter + the same keyframes' adapter keys/values shared with every frame's PU-SDA
    overlap+both    + both kinds of sharing
    w6 ...          windows of 6 (+ 2 keyframes = the 8 frames the backbone was trained on)
Memory: the file -> edit -> file path in a fresh process per clip length (1x, 4x, 16x the window), peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from imvideoedit_core.model.adapter_file import load_adapter
from imvideoedit_core.edit.long_video import (WindowConfig, edit_long_video, edit_video_file, keyframe_indices,
                                              plan_windows, runner_window_editor)
from imvideoedit_core.edit.sampling import EditRequest, edit_latent
from imvideoedit_core.edit.streams import TwoStreamRunner
from imvideoedit_core.io.video import read_video, write_video

from . import world
from .evaluate import EvalConfig, score
from .models import ADAPTER_FILE, FRAME_SIZE, MODELS_DIR, ToyModels, load_models
from .report import Record, add_models_argument, markdown_rows, models_folder, publish

WINDOW = 8
SYSTEMS: dict[str, WindowConfig | None] = {
    "one_pass": None,
    "independent": WindowConfig(window=WINDOW, overlap=0, keyframes=0),
    "overlap": WindowConfig(window=WINDOW, overlap=2, keyframes=0),
    "overlap+attn": WindowConfig(window=WINDOW, overlap=2, keyframes=3, share_adapter=False),
    "overlap+adapter": WindowConfig(window=WINDOW, overlap=2, keyframes=3, share_attention=False,
                                    share_adapter=True),
    "overlap+both": WindowConfig(window=WINDOW, overlap=2, keyframes=3, share_adapter=True),
    "w6 overlap": WindowConfig(window=6, overlap=2, keyframes=0),
    "w6 overlap+attn": WindowConfig(window=6, overlap=2, keyframes=2, share_adapter=False),
}
METRICS = ("psnr_target", "success", "warp_error", "flicker", "drift", "seam_jump", "interior_jump",
           "psnr_first_window", "psnr_last_window")


@dataclass(frozen=True)
class LongConfig:
    per_kind: int = 3
    frames: int = 4 * WINDOW
    eval: EvalConfig = EvalConfig()


def examples(kind: str, cfg: LongConfig) -> list[world.EditExample]:
    start = 1_000_000 * (1 + world.EDIT_KINDS.index(kind))
    seeds = world.split_seeds("eval", count=cfg.per_kind, start=start)
    return [world.make_example(s, size=FRAME_SIZE, frames=cfg.frames, edit_kinds=(kind,)) for s in seeds]


def edit_clip(models: ToyModels, adapter, example: world.EditExample, system: WindowConfig | None,
              cfg: LongConfig) -> torch.Tensor:
    """One long clip through one system -> edited frames [T, H, W, 3]."""
    enc = models.text_encoder
    context, empty = enc([example.instruction]), enc([""])
    sampler = cfg.eval.sampler()
    with TwoStreamRunner(models.backbone, adapter) as runner:
        if system is None:
            out = edit_latent(runner, EditRequest(source=models.codec.encode(example.source_frames), context=context,
                                                  negative_context=empty, config=sampler)).latent
            return models.codec.decode(out)
        edit = runner_window_editor(runner, context=context, negative_context=empty, config=sampler)
        frames = example.source_frames
        indices = keyframe_indices(frames.shape[0], system.keyframes)
        return torch.stack(list(edit_long_video(iter(frames), total=frames.shape[0], keyframes=frames[indices],
                                                codec=models.codec, edit=edit, config=system)))


def seam_transitions(frames: int, system: WindowConfig | None) -> set[int]:
    """Frame transitions t-1 -> t where one window hands over to the next (its cross-fade included)."""
    cfg = system or WindowConfig(window=WINDOW, overlap=0, keyframes=0)  # one_pass: where windows would meet
    seams = set()
    for w in plan_windows(frames, cfg)[1:]:
        seams.update(range(w.start, w.start + max(cfg.overlap, 1) + 1))
    return seams


def temporal_scores(edited: torch.Tensor, example: world.EditExample, system: WindowConfig | None) -> dict:
    """Drift of the edit region's colour error from the first window to the last, and jumps at seams."""
    target, mask = example.target_frames, example.edit_mask
    t = edited.shape[0]

    def region_error(frames: range) -> np.ndarray:  # mean RGB error inside the edit region over these frames
        m = mask[list(frames)].bool()
        return (edited[list(frames)] - target[list(frames)])[m].mean(0).numpy()

    first, last = range(0, WINDOW), range(t - WINDOW, t)
    drift = float(np.linalg.norm(region_error(last) - region_error(first)))
    change = ((edited[1:] - edited[:-1]) - (target[1:] - target[:-1])).abs().mean(dim=(1, 2, 3))  # (T-1,)
    seams = seam_transitions(t, system)
    seam = [float(change[i - 1]) for i in range(1, t) if i in seams]
    interior = [float(change[i - 1]) for i in range(1, t) if i not in seams]
    psnr = lambda fr: float(score(edited[list(fr)], _slice(example, fr))["psnr_target"])  # noqa: E731
    return {"drift": drift, "seam_jump": float(np.mean(seam)), "interior_jump": float(np.mean(interior)),
            "psnr_first_window": psnr(first), "psnr_last_window": psnr(last)}


def _slice(example: world.EditExample, frames: range) -> world.EditExample:
    idx = list(frames)
    return replace(example, source_frames=example.source_frames[idx], target_frames=example.target_frames[idx],
                   edit_mask=example.edit_mask[idx])


def quality(models: ToyModels, adapter, cfg: LongConfig, names: list[str]) -> dict:
    per: dict[str, dict[str, list[float]]] = {name: {m: [] for m in METRICS} for name in names}
    for kind in world.EDIT_KINDS:
        for example in examples(kind, cfg):
            for name in names:
                system = SYSTEMS[name]
                edited = edit_clip(models, adapter, example, system, cfg)
                s = {k: v for k, v in score(edited, example).items() if k in METRICS}
                s.update(temporal_scores(edited, example, system))
                for m in METRICS:
                    if s[m] is not None and np.isfinite(s[m]):
                        per[name][m].append(float(s[m]))
        print(f"{kind}: done", flush=True)
    return {name: {m: float(np.mean(v)) if v else None for m, v in metrics.items()} for name, metrics in per.items()}


# -- memory: one fresh process per clip length --

def memory_probe(frames: int, mode: str, steps: int) -> dict:
    """Edit one ToyWorld clip of ``frames`` frames file -> file (mode 'stream') or in one pass ('one_pass')."""
    torch.set_num_threads(1)
    models = load_models(MODELS_DIR)
    adapter = load_adapter(MODELS_DIR / ADAPTER_FILE)
    example = world.make_example(world.split_seeds("eval", count=1)[0], size=FRAME_SIZE, frames=frames)
    cfg = LongConfig(eval=replace(EvalConfig(), steps=steps))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.mp4"
        write_video(src, example.source_frames, fps=8)
        del example
        enc = models.text_encoder
        before = reset_peak_rss()
        start = time.perf_counter()
        if mode == "stream":
            with TwoStreamRunner(models.backbone, adapter) as runner:
                edit = runner_window_editor(runner, context=enc(["make the circle red"]), negative_context=enc([""]),
                                            config=cfg.eval.sampler())
                result = edit_video_file(src, Path(tmp) / "out.mp4", codec=models.codec, edit=edit,
                                         config=SYSTEMS["overlap+both"])
            held = result.peak_frames_held
        else:
            frames_in = read_video(src).frames
            with TwoStreamRunner(models.backbone, adapter) as runner, torch.no_grad():
                latent = edit_latent(runner, EditRequest(source=models.codec.encode(frames_in),
                                                         context=enc(["make the circle red"]),
                                                         negative_context=enc([""]), config=cfg.eval.sampler())).latent
            write_video(Path(tmp) / "out.mp4", models.codec.decode(latent), fps=8)
            held = frames
        seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM")
    return {"frames": frames, "mode": mode, "peak_rss_mb": peak / 1024, "rss_growth_mb": (peak - before) / 1024,
            "frames_held": held, "seconds": seconds}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (Linux only)")


def reset_peak_rss() -> int:
    """Reset the process's peak RSS (VmHWM) to its current RSS; returns that RSS in kB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS")


def memory(lengths: list[int], steps: int) -> list[dict]:
    rows = []
    for mode in ("stream", "one_pass"):
        for frames in lengths:
            out = subprocess.run([sys.executable, "-m", "bench.toyworld.long_video", "--probe", str(frames), mode,
                                  str(steps)], check=True, capture_output=True, text=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    return rows


def reading(results: dict) -> str:
    """The comparisons the issue asks about, in words, computed from the stored numbers."""
    q = results["quality"]
    mem = {(r["mode"], r["frames"] // WINDOW): r["rss_growth_mb"] for r in results.get("memory", [])}

    def cmp(a: str, b: str, metric: str) -> str:
        return f"{q[a][metric]:.3f} vs {q[b][metric]:.3f}"
    lines = [f"Seams: independent windows jump where they meet ({q['independent']['seam_jump']:.3f} against "
             f"{q['independent']['interior_jump']:.3f} inside windows); overlapping windows do not "
             f"({q['overlap']['seam_jump']:.3f} against {q['overlap']['interior_jump']:.3f})."]
    shared = [n for n in ("overlap+attn", "overlap+adapter", "overlap+both") if n in q]
    if shared:
        lines.append(f"Drift (overlap -> {' / '.join(shared)}): {q['overlap']['drift']:.3f} -> "
                     + " / ".join(f"{q[n]['drift']:.3f}" for n in shared)
                     + f"; psnr_target {q['overlap']['psnr_target']:.2f} -> "
                     + " / ".join(f"{q[n]['psnr_target']:.2f}" for n in shared) + " dB.")
    if "overlap+adapter" in q:
        lines.append(f"Success {cmp('overlap', 'overlap+adapter', 'success')} (overlap vs +adapter).")
    if "w6 overlap" in q and "w6 overlap+attn" in q:
        lines.append(f"Window 6 (overlap vs +attention): drift {cmp('w6 overlap', 'w6 overlap+attn', 'drift')}, "
                     f"psnr_target {cmp('w6 overlap', 'w6 overlap+attn', 'psnr_target')}.")
    if ("stream", 16) in mem and ("one_pass", 16) in mem:
        lines.append(f"Memory from 1x to 16x the window: the streamed edit grows {mem[('stream', 1)]:.0f} -> "
                     f"{mem[('stream', 16)]:.0f} MB, the one-pass edit {mem[('one_pass', 1)]:.0f} -> "
                     f"{mem[('one_pass', 16)]:.0f} MB.")
    return " ".join(lines)


def report(results: dict, command: str = "python -m bench.toyworld.long_video") -> str:
    q = results["quality"]
    timing = ", ".join(f"{part} {results[f'{part}_seconds']:.0f} s" for part in ("quality", "memory")
                       if f"{part}_seconds" in results) or "timed per rerun"
    quality_table = markdown_rows(["system"] + list(METRICS),
                                  [[n] + [q[n][m] for m in METRICS] for n in SYSTEMS if n in q])
    rerun = results.get("partial_rerun")
    partial = "" if rerun is None else f" (last rerun: {', '.join(rerun['systems'])}, {rerun['seconds']:.0f} s)"
    return f"""## Long videos: windows and keyframe sharing

{results['videos']} held-out clips of {results['frames']} frames (4x the 8-frame window the backbone was trained
on; {results['per_kind']} per edit type), seed 0, {results['steps']} Euler steps, cfg 3, shift 2, the main adapter.
**drift**: the norm of the change of the edit region's mean RGB error from the first window's frames to the last
window's (0 = the last window looks as right, or as wrong, as the first). **seam_jump** / **interior_jump**: mean
absolute difference between the edited and the ground-truth frame-to-frame change, at transitions where windows
hand over (cross-fades included) / everywhere else. Lower is better for drift, jumps, warp error and flicker.

{quality_table}

{reading(results)} ToyWorld's edits leave windows little room to disagree (an instruction names one exact
colour, shape or background), so drift is small even for independent windows; edits with freedom (a style, a
new texture) are where sharing is meant to matter, and ToyWorld cannot measure them.
{memory_report(results)}
Reproduce: `{command}` ({timing} on 2 cores shared with other jobs); `--part quality` or `--part memory` reruns
one part, `--systems NAME ...` some systems{partial}.
"""


def memory_report(results: dict) -> str:
    """The memory block; empty where only the quality part was measured (a candidate backbone's record)."""
    if "memory" not in results:
        return ""
    mem_table = markdown_rows(["path", "frames (x window)", "frames held", "peak RSS MB", "RSS growth MB", "s"],
                              [[r["mode"], f"{r['frames']} ({r['frames'] // WINDOW}x)", r["frames_held"],
                                r["peak_rss_mb"], r["rss_growth_mb"], r["seconds"]] for r in results["memory"]])
    return f"""
Memory of the file -> edit -> file path (`overlap+both`, window 8) against the one-pass edit, one fresh process per
row ({results['memory_steps']} steps). **RSS growth**: the peak resident memory during the edit above the resident
memory just before it (the peak is reset with /proc/self/clear_refs after torch, the models and the source file are
ready); **frames held**: the most video frames the loop held at once.

{mem_table}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 video per type, 16 frames, 2 steps, nothing written")
    parser.add_argument("--part", choices=("all", "quality", "memory"),
                        help="rerun one part; the other is kept from results.json (default: all; with --models "
                             "another folder, quality: the memory part does not depend on the weights)")
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS),
                        help="measure only these systems (the others' stored numbers are kept)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the docs block from the stored results.json, measuring nothing")
    parser.add_argument("--probe", nargs=3, metavar=("FRAMES", "MODE", "STEPS"), help=argparse.SUPPRESS)
    add_models_argument(parser)
    args = parser.parse_args()
    record = Record(models_folder(args.models))
    part = args.part or ("all" if record.bundled else "quality")
    command = record.command("long_video")
    if args.probe:
        print(json.dumps(memory_probe(int(args.probe[0]), args.probe[1], int(args.probe[2]))))
        return
    if args.report_only:
        record.save("long_video", record.stored("long_video"), lambda r: report(r, command))
        return
    torch.set_num_threads(2)
    cfg = LongConfig(per_kind=1, frames=2 * WINDOW, eval=replace(EvalConfig(), steps=2)) if args.quick \
        else LongConfig()
    start = time.perf_counter()
    old = record.stored("long_video") or {}
    results = {k: v for k, v in old.items() if k != "seconds"}
    if part in ("all", "quality"):
        models = load_models(record.models)
        adapter = load_adapter(record.models / ADAPTER_FILE)
        with torch.no_grad():
            fresh = quality(models, adapter, cfg, args.systems)
        stored = results.get("quality", {})
        results["quality"] = {n: fresh.get(n, stored.get(n)) for n in SYSTEMS if n in fresh or n in stored}
        results.update(videos=cfg.per_kind * len(world.EDIT_KINDS), per_kind=cfg.per_kind, frames=cfg.frames,
                       steps=cfg.eval.steps, systems={n: (None if s is None else s.__dict__)
                                                      for n, s in SYSTEMS.items()})
        seconds = round(time.perf_counter() - start, 1)
        if set(args.systems) == set(SYSTEMS):
            results["quality_seconds"] = seconds
            results.pop("partial_rerun", None)
        else:
            results["partial_rerun"] = {"systems": args.systems, "seconds": seconds}
    if part in ("all", "memory"):
        mem_start = time.perf_counter()
        results["memory_steps"] = 1 if args.quick else 10
        lengths = [WINDOW] if args.quick else [WINDOW, 4 * WINDOW, 16 * WINDOW]
        results["memory"] = memory(lengths, results["memory_steps"])
        results["memory_seconds"] = round(time.perf_counter() - mem_start, 1)
    publish("long_video", results, lambda r: report(r, command), write=not args.quick, record=record)


if __name__ == "__main__":
    main()
