"""Strength, start degradation and image animation (Dreamix) on ToyWorld: the fidelity/editability trade-off.

    python -m bench.toyworld.strength            # full: 2 videos per edit type, ~6 minutes on 2 shared cores
    python -m bench.toyworld.strength --quick    # smoke run: 1 video per type, 3 steps, nothing written

Sweeps the sampler's strength for ours (adapter, instruction) and degrade-then-regenerate (plain backbone, target
caption), each from the plain source and from a degraded start (spatial 2x + temporal 2x; the adapter's source
stream stays the clean source). Image animation: frame 0 of a source and of its ground truth, animated with the
same camera motion, then the animated source edited by ours and scored against the animated ground truth.
Writes ``features.strength`` in results.json and the ``strength`` block of docs/toyworld.md.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from imvideoedit_core.model.adapter_file import load_adapter
from imvideoedit_core.edit.degrade import DegradeConfig, animate_image, degrade_latent
from imvideoedit_core.edit.sampling import EditRequest, StartLatent, backbone_velocity, edit_latent, sample_from
from imvideoedit_core.edit.streams import TwoStreamRunner

from . import world
from .evaluate import Batch, EvalConfig, decode, eval_examples, make_batch, score
from .models import ADAPTER_FILE, ToyModels, load_models
from .report import Record, add_models_argument, markdown_rows, models_folder, publish

FIDELITY = ("psnr_source_outside", "motion_preservation", "warp_error")  # higher, lower, lower is better
EDITABILITY = ("success", "psnr_target")                                 # higher is better
METRICS = FIDELITY + EDITABILITY
DEGRADATIONS = {"none": DegradeConfig(), "s2t2": DegradeConfig(spatial_factor=2, temporal_factor=2)}
MOTIONS = {"zoom_in": 0.3, "pan_right": 0.25, "perspective": 0.5}  # motion -> amount at the last frame


@dataclass(frozen=True)
class StrengthConfig:
    eval: EvalConfig = EvalConfig(per_kind=4)
    strengths: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9, 1.0)
    degraded_strengths: tuple[float, ...] = (0.5, 0.75, 0.9)  # at 1.0 the start is pure noise: same as "none"
    animation_strengths: tuple[float, ...] = (0.75, 1.0)
    animation_per_kind: int = 2


def run_ours(models: ToyModels, adapter, batch: Batch, cfg: EvalConfig, strength: float,
             start: torch.Tensor | None) -> torch.Tensor:
    with TwoStreamRunner(models.backbone, adapter) as runner:
        out = edit_latent(runner, EditRequest(source=batch.source, context=batch.instruction,
                                              negative_context=batch.empty, config=cfg.sampler(strength),
                                              features=[StartLatent(start)]))
    return decode(out.latent, models.codec)


def run_degrade_then_regenerate(models: ToyModels, batch: Batch, cfg: EvalConfig, strength: float,
            start: torch.Tensor | None) -> torch.Tensor:
    """evaluate.run_degrade_then_regenerate with a start latent: plain backbone, target caption, from the
    (degraded) source."""
    fn = backbone_velocity(models.backbone, batch.caption, batch.empty, cfg=cfg.cfg)
    return decode(sample_from(fn, batch.source, cfg.sampler(strength), start=start), models.codec)


def mean_scores(frames: torch.Tensor, examples: list[world.EditExample]) -> dict[str, float | None]:
    scores = [score(frames[i], e) for i, e in enumerate(examples)]
    out = {}
    for m in METRICS:
        finite = [s[m] for s in scores if s[m] is not None and math.isfinite(s[m])]
        out[m] = float(np.mean(finite)) if finite else None
    return out


def sweep(models: ToyModels, adapter, cfg: StrengthConfig) -> list[dict]:
    """One batch with every edit type; one row per (system, degradation, strength)."""
    examples = [e for kind in world.EDIT_KINDS for e in eval_examples(kind, cfg.eval)]
    batch = make_batch(examples, models)
    systems = {"ours": lambda s, start: run_ours(models, adapter, batch, cfg.eval, s, start),
               "regenerate": lambda s, start: run_degrade_then_regenerate(models, batch, cfg.eval, s, start)}
    rows = []
    for degradation, degrade in DEGRADATIONS.items():
        start = None if degrade.is_identity else degrade_latent(batch.source, degrade)
        strengths = cfg.strengths if start is None else cfg.degraded_strengths
        for system, run in systems.items():
            for s in strengths:
                rows.append({"system": system, "degradation": degradation, "strength": s,
                             **mean_scores(run(s, start), examples)})
                print(f"{system} {degradation} {s}: {rows[-1]}", flush=True)
    return rows


def animated(example: world.EditExample, motion: str, frames: int) -> world.EditExample:
    """Frame 0 of the source, the ground truth and the edit mask, each animated with the same motion."""
    move = lambda image: animate_image(image, frames=frames, motion=motion, amount=MOTIONS[motion])  # noqa: E731
    mask = move(example.edit_mask[0][..., None])[..., 0]                        # (T, H, W)
    return replace(example, source_frames=move(example.source_frames[0]), target_frames=move(example.target_frames[0]),
                   edit_mask=(mask > 0.5).float())


def animation(models: ToyModels, adapter, cfg: StrengthConfig) -> list[dict]:
    """Ours on animated stills against the animated ground truth; 'unedited' is the animated source itself."""
    per_kind = replace(cfg.eval, per_kind=cfg.animation_per_kind)
    stills = [e for kind in world.EDIT_KINDS for e in eval_examples(kind, per_kind)]
    rows = []
    for motion in MOTIONS:
        examples = [animated(e, motion, cfg.eval.frames) for e in stills]
        batch = make_batch(examples, models)
        rows.append({"motion": motion, "system": "unedited", "strength": None,
                     **mean_scores(torch.stack([e.source_frames for e in examples]), examples)})
        for s in cfg.animation_strengths:
            rows.append({"motion": motion, "system": "ours", "strength": s,
                         **mean_scores(run_ours(models, adapter, batch, cfg.eval, s, None), examples)})
        print(f"animation {motion}: {rows[-1]}", flush=True)
    return rows


def _best(rows: list[dict], metric: str) -> dict:
    return max(rows, key=lambda r: r[metric] if r[metric] is not None else -math.inf)


def degradation_effect(rows: list[dict], system: str, metric: str) -> float | None:
    """Mean change of ``metric`` from degrading the start, over the strengths measured both ways."""
    plain = {r["strength"]: r[metric] for r in rows if r["system"] == system and r["degradation"] == "none"}
    deltas = [r[metric] - plain[r["strength"]] for r in rows
              if r["system"] == system and r["degradation"] != "none" and r["strength"] in plain
              and r[metric] is not None and plain[r["strength"]] is not None]
    return float(np.mean(deltas)) if deltas else None


def reading(results: dict) -> str:
    """Sentences computed from the numbers (so a rerun never leaves a stale claim)."""
    rows, lines = results["sweep"], []
    for system in ("ours", "regenerate"):
        plain = [r for r in rows if r["system"] == system and r["degradation"] == "none"]
        by_s = sorted(plain, key=lambda r: r["strength"])
        best = _best(plain, "success")
        lines.append(f"{system}: from strength {by_s[0]['strength']} to {by_s[-1]['strength']} success goes "
                     f"{by_s[0]['success']:.2f} -> {by_s[-1]['success']:.2f} and psnr_source_outside "
                     f"{by_s[0]['psnr_source_outside']:.1f} -> {by_s[-1]['psnr_source_outside']:.1f} dB; best "
                     f"success {best['success']:.2f} at strength {best['strength']}.")
        ds, dp = degradation_effect(rows, system, "success"), degradation_effect(rows, system, "psnr_source_outside")
        if ds is not None and dp is not None:
            lines.append(f"Degrading the start ({system}) changes success by {ds:+.2f} and psnr_source_outside by "
                         f"{dp:+.1f} dB on average over the strengths below 1.")
    lines.append(f"With {results['videos']} videos one success is {1 / results['videos']:.2f}, so success "
                 "differences of one or two videos are within noise; the fidelity columns are the steadier signal.")
    return " ".join(lines)


def report(results: dict, command: str = "nice -n 5 python -m bench.toyworld.strength") -> str:
    sweep_table = markdown_rows(["system", "start", "strength"] + list(METRICS),
                                [[r["system"], r["degradation"], r["strength"]] + [r[m] for m in METRICS]
                                 for r in results["sweep"]])
    anim_table = markdown_rows(["motion", "system", "strength"] + list(METRICS),
                               [[r["motion"], r["system"], r["strength"]] + [r[m] for m in METRICS]
                                for r in results["animation"]])
    return f"""## Strength, degraded starts and image animation (Dreamix)

{results['videos']} held-out clips ({results['per_kind']} per edit type, {results['frames']} frames), seed 0,
{results['steps']} Euler steps, cfg 3, shift 2. **ours**: the main adapter with the instruction; **regenerate**: the
plain backbone with the target caption (degrade-then-regenerate). Both start from the source noised to the strength
(`start none`) or from a degraded source (`s2t2`: spatial 2x area-down/bilinear-up and every 2nd frame kept,
linear fill; for ours the adapter's source stream still sees the clean source). At strength 1 the start is pure
noise, so degraded starts are measured below 1 only. Fidelity: psnr_source_outside (dB, higher is better),
motion_preservation and warp_error (lower is better); editability: success and psnr_target (higher is better).

{sweep_table}

Image animation: frame 0 of {results['animation_videos']} sources and of their ground truths, animated with the
same motion into {results['frames']}-frame clips (zoom_in 0.3, pan_right 0.25, perspective 0.5), the animated
source edited by ours and scored against the animated ground truth; `unedited` scores the animated source itself.

{anim_table}

Reading: {reading(results)}

Reproduce: `{command}` ({results['seconds']:.0f} s on 2 cores).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 video per type, 3 steps, nothing written")
    parser.add_argument("--per-kind", type=int, default=4)
    add_models_argument(parser)
    args = parser.parse_args()
    record = Record(models_folder(args.models))
    torch.set_num_threads(2)
    cfg = StrengthConfig(eval=EvalConfig(per_kind=1 if args.quick else args.per_kind, steps=3 if args.quick else 20))
    start = time.perf_counter()
    models = load_models(record.models)
    adapter = load_adapter(record.models / ADAPTER_FILE)
    with torch.no_grad():
        results = {"sweep": sweep(models, adapter, cfg), "animation": animation(models, adapter, cfg)}
    results.update(videos=cfg.eval.per_kind * len(world.EDIT_KINDS), per_kind=cfg.eval.per_kind,
                   animation_videos=cfg.animation_per_kind * len(world.EDIT_KINDS), frames=cfg.eval.frames,
                   steps=cfg.eval.steps, motions=MOTIONS, seconds=round(time.perf_counter() - start, 1))
    command = "nice -n 5 " + record.command("strength")
    publish("strength", results, lambda r: report(r, command), write=not args.quick, record=record)


if __name__ == "__main__":
    main()
