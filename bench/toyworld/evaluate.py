"""Evaluate ImVideoEdit on held-out ToyWorld edits against baselines and ablations.

    python -m bench.toyworld.evaluate                 # full: 16 videos per edit type (80), all systems
    python -m bench.toyworld.evaluate --quick         # CI smoke run: 2 videos per type, few steps

Writes ``bench/toyworld/results.json`` (systems x edit types x metrics), one contact sheet per edit type under
``docs/toyworld/`` and the results table inside ``docs/toyworld.md`` (between its results markers).

Systems (all from the same frozen backbone, text encoder, seed and sampler settings):
    ours         the adapter trained on image pairs, editing whole videos
    per_frame    the same adapter applied to each frame as a one-frame video (every frame gets the same noise)
    regenerate_0.5/0.75 degrade-then-regenerate: plain backbone, target caption, started from the source noised to s
    oracle       the adapter trained on video pairs with the same steps and frames per batch
    no_gate, blind_gate, unfrozen   ablations (see train_adapter.py); cache_off is checked to equal ours
    ours_time_offset    ours trained with image pairs at random temporal RoPE positions
    gate_loss    ours with the gate also taught the pairs' difference masks (an auxiliary loss)
    ffn_lora     ours plus a LoRA on the backbone's FFNs, trained on the same image pairs
    still        ours trained on the same image pairs shown as still 8-frame videos (the oracle's batch)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from safetensors.torch import load_file

from imvideoedit_core.model.adapter_file import load_adapter
from bench.metrics import evaluate_edit
from imvideoedit_core.edit.sampling import (EditRequest, SamplerConfig, backbone_velocity, edit_latent, sample_from,
                                            seeded_noise)
from imvideoedit_core.edit.streams import TwoStreamRunner

from . import judge, world
from .models import ADAPTER_FILE, FRAME_SIZE, MODELS_DIR, ToyModels, load_models
from .report import keep_feature_results
from .train_adapter import RUNS_DIR, VARIANTS

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results.json"
REPORT = ROOT / "docs" / "toyworld.md"
SHEETS = ROOT / "docs" / "toyworld"
SUCCESS_MAE = 0.1  # an edit succeeds when its mean absolute error to the ground truth inside the edit region is below
METRICS = ("psnr_target", "ssim_target", "psnr_source_outside", "success", "warp_error", "flicker",
           "motion_preservation", *judge.EDIT_AXES)


@dataclass(frozen=True)
class EvalConfig:
    per_kind: int = 16
    frames: int = 8
    steps: int = 20
    cfg: float = 3.0
    shift: float = 2.0
    seed: int = 0
    regenerate_strengths: tuple[float, ...] = (0.5, 0.75)

    def sampler(self, strength: float = 1.0) -> SamplerConfig:
        return SamplerConfig(steps=self.steps, cfg=self.cfg, shift=self.shift, seed=self.seed, strength=strength)


def eval_examples(kind: str, cfg: EvalConfig) -> list[world.EditExample]:
    """The first ``per_kind`` evaluation-split seeds of this kind's own seed range (never seen in training)."""
    start = 1_000_000 * (1 + world.EDIT_KINDS.index(kind))
    seeds = world.split_seeds("eval", count=cfg.per_kind, start=start)
    return [world.make_example(s, size=FRAME_SIZE, frames=cfg.frames, edit_kinds=(kind,)) for s in seeds]


@dataclass
class Batch:
    examples: list[world.EditExample]
    source: torch.Tensor       # (B, C, T, h, w) latents
    instruction: torch.Tensor  # (B, L, text_dim)
    caption: torch.Tensor      # target captions, for degrade-then-regenerate
    empty: torch.Tensor        # (B, L, text_dim)


def make_batch(examples: list[world.EditExample], models: ToyModels) -> Batch:
    enc = models.text_encoder
    return Batch(examples=examples, source=torch.cat([models.codec.encode(e.source_frames) for e in examples]),
                 instruction=enc([e.instruction for e in examples]), caption=enc([e.target_caption for e in examples]),
                 empty=enc([""] * len(examples)))


def decode(latents: torch.Tensor, codec) -> torch.Tensor:
    """(B, C, T, h, w) -> (B, T, H, W, 3) through the models' codec."""
    return torch.stack([codec.decode(latents[i:i + 1]) for i in range(latents.shape[0])])


@dataclass
class SystemOutput:
    frames: torch.Tensor              # (B, T, H, W, 3)
    gate: torch.Tensor | None = None  # (B, T, h', w')
    latent: torch.Tensor | None = None


def run_adapter(models: ToyModels, adapter, batch: Batch, cfg: EvalConfig, *, cache: str = "device",
                backbone=None, share_source: bool = False) -> SystemOutput:
    with TwoStreamRunner(backbone or models.backbone, adapter) as runner:
        out = edit_latent(runner, EditRequest(source=batch.source, context=batch.instruction,
                                              negative_context=batch.empty, config=cfg.sampler(), cache=cache,
                                              return_gate=True, share_source=share_source))
    return SystemOutput(frames=decode(out.latent, models.codec), gate=out.gate, latent=out.latent)


def run_per_frame(models: ToyModels, adapter, batch: Batch, cfg: EvalConfig) -> SystemOutput:
    b, c, t, h, w = batch.source.shape
    frames = batch.source.permute(0, 2, 1, 3, 4).reshape(b * t, c, 1, h, w)       # every frame a one-frame video
    noise = seeded_noise((b, c, 1, h, w), seed=cfg.seed).repeat_interleave(t, 0)  # the same noise for each frame
    with TwoStreamRunner(models.backbone, adapter) as runner:
        out = edit_latent(runner, EditRequest(source=frames, context=batch.instruction.repeat_interleave(t, 0),
                                              negative_context=batch.empty.repeat_interleave(t, 0),
                                              config=cfg.sampler(), noise=noise))
    latent = out.latent.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
    return SystemOutput(frames=decode(latent, models.codec))


def run_degrade_then_regenerate(models: ToyModels, batch: Batch, cfg: EvalConfig, strength: float) -> SystemOutput:
    fn = backbone_velocity(models.backbone, batch.caption, batch.empty, cfg=cfg.cfg)
    return SystemOutput(frames=decode(sample_from(fn, batch.source, cfg.sampler(strength)), models.codec))


def unfrozen_backbone(models: ToyModels, runs_dir: Path) -> torch.nn.Module:
    backbone = copy.deepcopy(models.backbone)
    backbone.load_state_dict(load_file(str(runs_dir / "unfrozen.self_attn.safetensors")), strict=False)
    return backbone


@dataclass(frozen=True)
class Folders:
    models: Path = MODELS_DIR  # backbone, text encoder, our adapter
    runs: Path = RUNS_DIR      # oracle and ablation adapters


def systems(models: ToyModels, ours, cfg: EvalConfig, folders: Folders) -> dict[str, Callable[[Batch], SystemOutput]]:
    """Every system that has its weights on disk (a missing ablation is skipped and reported)."""
    table = {"ours": lambda b: run_adapter(models, ours, b, cfg),
             "per_frame": lambda b: run_per_frame(models, ours, b, cfg)}
    for s in cfg.regenerate_strengths:
        table[f"regenerate_{s}"] = lambda b, s=s: run_degrade_then_regenerate(models, b, cfg, s)
    for name in (v for v in VARIANTS if v != "ours"):
        path = folders.runs / f"{name}.safetensors"
        if not path.is_file():
            print(f"skipping {name}: {path} not found (python -m bench.toyworld.train_adapter --variant {name})")
            continue
        adapter = load_adapter(path)
        backbone = unfrozen_backbone(models, folders.runs) if name == "unfrozen" else None
        table[name] = lambda b, a=adapter, bb=backbone: run_adapter(models, a, b, cfg, backbone=bb)
    return table


def edit_success(edited: torch.Tensor, example: world.EditExample) -> float:
    """1 if the edit region matches the ground truth within SUCCESS_MAE (mean absolute error, 0..1 pixels)."""
    mask = example.edit_mask[..., None].expand_as(edited)
    error = (edited - example.target_frames).abs()[mask > 0].mean()
    return float(error < SUCCESS_MAE)


def score(edited: torch.Tensor, example: world.EditExample) -> dict[str, float | None]:
    """Pixel metrics against the ground truth, and the judge's axes where the example has its scene description
    for exactly these frames (a hand-made pixel edit or a slice of a clip has none: None)."""
    m = evaluate_edit(edited, example.source_frames, target=example.target_frames, mask=example.edit_mask)
    scores = {"psnr_target": m.psnr_target, "ssim_target": m.ssim_target, "psnr_source_outside": m.psnr_source_outside,
              "success": edit_success(edited, example), "warp_error": m.warp_error, "flicker": m.flicker,
              "motion_preservation": m.motion_preservation}
    scene = getattr(example, "target_scene", None)
    judged = scene is not None and scene.frames == edited.shape[0]
    axes = judge.judge_edit(edited, example).as_dict() if judged else dict.fromkeys(judge.EDIT_AXES)
    return {**scores, **axes}


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def gate_heat_map(gate: torch.Tensor) -> torch.Tensor:
    """Gate maps (T, h, w) in 0..1 -> RGB heat maps (T, H, W, 3) at frame size (nearest upscale, inferno)."""
    up = torch.nn.functional.interpolate(gate[None].float(), size=(FRAME_SIZE, FRAME_SIZE), mode="nearest")[0]
    heat = [cv2.applyColorMap((g.numpy() * 255).round().astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
            for g in up]
    return torch.from_numpy(np.stack(heat).astype(np.float32) / 255.0)


def write_sheet(rows: list[torch.Tensor], path: Path, *, scale: int = 4) -> None:
    """Videos (T, H, W, 3) as rows of frames in one PNG, upscaled ``scale`` times (nearest)."""
    sheet = torch.cat([torch.cat(list(r), dim=1) for r in rows], dim=0).clamp(0, 1)      # (rows*H, T*W, 3)
    image = cv2.resize((sheet.numpy()[..., ::-1] * 255).round().astype(np.uint8), None, fx=scale, fy=scale,
                       interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def contact_sheet(batch: Batch, outputs: dict[str, SystemOutput], path: Path) -> None:
    """Rows: source, ours, per-frame, ground truth, ours' gate heat map; columns: frames."""
    e = batch.examples[0]
    write_sheet([e.source_frames, outputs["ours"].frames[0], outputs["per_frame"].frames[0], e.target_frames,
                 gate_heat_map(outputs["ours"].gate[0])], path)


def evaluate(cfg: EvalConfig, *, folders: Folders = Folders(), sheets: Path | None = SHEETS) -> dict:
    """Every system on ``cfg.per_kind`` held-out clips of each edit kind; a contact sheet per kind into ``sheets``
    (None: none)."""
    models = load_models(folders.models)
    ours = load_adapter(folders.models / ADAPTER_FILE)
    table = systems(models, ours, cfg, folders)
    per_system: dict[str, dict[str, dict[str, list[float]]]] = {name: {} for name in table}
    cache_gap, start = 0.0, time.perf_counter()
    with torch.no_grad():
        for kind in world.EDIT_KINDS:
            batch = make_batch(eval_examples(kind, cfg), models)
            outputs = {name: run(batch) for name, run in table.items()}
            off = run_adapter(models, ours, batch, cfg, cache="off")
            cache_gap = max(cache_gap, float((off.latent - outputs["ours"].latent).abs().max()))
            for name, out in outputs.items():
                scores = [score(out.frames[i], e) for i, e in enumerate(batch.examples)]
                per_system[name][kind] = {m: [s[m] for s in scores] for m in METRICS}
            if sheets is not None:
                sheets.mkdir(parents=True, exist_ok=True)
                contact_sheet(batch, outputs, sheets / f"{kind}.png")
            print(f"{kind}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    results = {"config": cfg.__dict__, "videos": cfg.per_kind * len(world.EDIT_KINDS),
               "success_threshold_mae": SUCCESS_MAE, "cache_off_max_abs_diff": cache_gap,
               "seconds": round(time.perf_counter() - start, 1),
               "systems": {name: {kind: {m: _mean(v) for m, v in kinds[kind].items()} for kind in kinds}
                           for name, kinds in per_system.items()},
               "overall": {name: {m: _mean([x for k in kinds.values() for x in k[m]]) for m in METRICS}
                           for name, kinds in per_system.items()}}
    return results


def markdown_table(results: dict) -> str:
    """One table per metric family: systems as rows, edit types (and all) as columns."""
    kinds = list(world.EDIT_KINDS)
    lines = []
    for metric in METRICS:
        lines += [f"**{metric}**", "", "| system | " + " | ".join(kinds) + " | all |",
                  "|---" * (len(kinds) + 2) + "|"]
        for name, per_kind in results["systems"].items():
            cells = [per_kind[k][metric] for k in kinds] + [results["overall"][name][metric]]
            lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_report(results: dict) -> None:
    """Replace the table between the results markers of docs/toyworld.md (the prose around it is hand-written)."""
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    text = REPORT.read_text() if REPORT.is_file() else f"# ToyWorld\n\n{begin}\n{end}\n"
    block = f"{begin}\n{markdown_table(results)}\n{end}"
    REPORT.write_text(re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 videos per edit type, 4 steps, no docs written")
    parser.add_argument("--per-kind", type=int, default=16)
    parser.add_argument("--models", type=Path, default=MODELS_DIR)
    parser.add_argument("--runs", type=Path, default=RUNS_DIR)
    parser.add_argument("--no-write", action="store_true",
                        help="leave results.json, the report and the contact sheets alone; the results go to "
                             "MODELS/evaluation.json (a candidate backbone's own record)")
    parser.add_argument("--sheets", type=Path,
                        help=f"folder for the contact sheets (default: {SHEETS.relative_to(ROOT)}, none with "
                             "--no-write)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = EvalConfig(per_kind=2, steps=4) if args.quick else EvalConfig(per_kind=args.per_kind)
    write = not (args.quick or args.no_write)
    sheets = args.sheets or (SHEETS if write else None)
    results = evaluate(cfg, folders=Folders(models=args.models, runs=args.runs), sheets=sheets)
    if args.no_write and not args.quick:
        (args.models / "evaluation.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    if write:
        RESULTS.write_text(json.dumps(keep_feature_results(results), indent=1, sort_keys=True) + "\n")
        write_report(results)
    print(markdown_table(results))
    print(json.dumps({"overall": results["overall"], "cache_off_max_abs_diff": results["cache_off_max_abs_diff"],
                      "seconds": results["seconds"]}))


if __name__ == "__main__":
    main()
