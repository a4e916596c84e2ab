"""Masked edits on ToyWorld: preservation outside the mask and seam visibility, hard versus progressive boundary.

    python -m bench.toyworld.masks            # full: 6 videos per object edit type (recolor, reshape, remove)
    python -m bench.toyworld.masks --quick    # smoke run: 1 video per type, 4 steps, nothing written

The mask is the ground-truth edit region dilated by 2 pixels (what an artist would paint). Systems (same adapter,
seed, sampler):
    none               ours without a mask
    hard               the mask at every step
    progressive_b{r}   a band of r latent pixels (2r pixels) around the mask at the first step, narrowing to 0
    gate               the first (unmasked) edit's gate as the mask (per video min-max normalised, >= 0.5), progressive
    gate_inverted      the same with 1 - gate (the toy adapter's gate turns out lower where it edits)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imvideoedit_core.model.adapter_file import load_adapter
from imvideoedit_core.edit.masks import MaskBoundary, gate_latent_mask, latent_mask, masked_edit
from bench.metrics import psnr
from imvideoedit_core.edit.sampling import EditRequest, edit_latent
from imvideoedit_core.edit.streams import TwoStreamRunner

from . import world
from .evaluate import Batch, EvalConfig, decode, edit_success, eval_examples, make_batch
from .models import ADAPTER_FILE, FRAME_SIZE, MODELS_DIR, load_models
from .report import Record, add_models_argument, markdown_rows, models_folder, publish

KINDS = world.OBJECT_EDIT_KINDS  # recolor, reshape, remove: the edits with a local region
DILATE = 2   # pixels added around the ground-truth region to make the user mask
RING = 2     # pixels on each side of the mask boundary where seams are measured
GATE_BAND = 2.0
SYSTEM_ORDER = ("none", "hard", "progressive_b", "gate", "gate_inverted")
METRICS = ("psnr_target", "success", "psnr_source_outside", "outside_mask_mae", "seam_mae", "seam_grad",
           "mask_fraction")


@dataclass(frozen=True)
class MaskBenchConfig:
    per_kind: int = 6
    bands: tuple[float, ...] = (1.0, 2.0, 4.0)  # latent pixels
    eval: EvalConfig = field(default_factory=EvalConfig)


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """[T, H, W] binary -> grown by ``pixels`` (chessboard)."""
    return F.max_pool2d(mask[:, None], 2 * pixels + 1, stride=1, padding=pixels)[:, 0]


def erode(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    return 1 - dilate(1 - mask, pixels)


def user_masks(batch: Batch) -> torch.Tensor:
    """The painted masks: ground-truth regions dilated by DILATE pixels, [B, T, H, W]."""
    return torch.stack([dilate(e.edit_mask, DILATE) for e in batch.examples])


def to_latent_grid(masks: torch.Tensor, stride: int) -> torch.Tensor:
    """[B, T, H, W] pixel masks -> (B, 1, T, h, w) for a codec of this spatial stride (temporal stride 1)."""
    _, t, h, w = masks.shape
    grids = [latent_mask(m, frames=t, height=h, width=w, temporal_stride=1, spatial_stride=stride)
             for m in masks]
    return (torch.cat(grids) >= 0.5).float()


def gate_masks(gate: torch.Tensor, *, latent_size: int, invert: bool) -> torch.Tensor:
    """First-edit gates (B, T, h', w') -> binary latent masks: per-video min-max normalised, >= 0.5."""
    lo, hi = gate.amin(dim=(1, 2, 3), keepdim=True), gate.amax(dim=(1, 2, 3), keepdim=True)
    norm = (gate - lo) / (hi - lo).clamp_min(1e-6)
    return gate_latent_mask(1 - norm if invert else norm, height=latent_size, width=latent_size, threshold=0.5)


def pixel_mask(latent_grid: torch.Tensor, stride: int) -> torch.Tensor:
    """(1, 1, T, h, w) latent mask -> [T, H, W] pixels (nearest), for a codec of this spatial stride."""
    return latent_grid[0, 0].repeat_interleave(stride, -2).repeat_interleave(stride, -1)


def gradients(video: torch.Tensor) -> torch.Tensor:
    """[T, H, W, 3] -> |dx| + |dy| per pixel [T, H, W] (forward differences, zero at the far border)."""
    dx = F.pad((video[:, :, 1:] - video[:, :, :-1]).abs().sum(-1), (0, 1))
    dy = F.pad((video[:, 1:] - video[:, :-1]).abs().sum(-1), (0, 0, 0, 1))
    return dx + dy


def seam_scores(edited: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """MAE to the ground truth, and the gradient excess over it, in the ring of RING pixels around the boundary."""
    ring = (dilate(mask, RING) - erode(mask, RING)) > 0
    mae = float((edited - target).abs().mean(-1)[ring].mean())
    grad = float((gradients(edited) - gradients(target)).abs()[ring].mean())
    return mae, grad


def score(edited: torch.Tensor, example: world.EditExample, *, user_mask: torch.Tensor,
          system_mask: torch.Tensor) -> dict[str, float]:
    seam_mae, seam_grad = seam_scores(edited, example.target_frames, user_mask)
    outside = system_mask == 0
    return {"psnr_target": psnr(edited, example.target_frames), "success": edit_success(edited, example),
            "psnr_source_outside": psnr(edited, example.source_frames, mask=1 - example.edit_mask),
            "outside_mask_mae": float((edited - example.source_frames).abs().mean(-1)[outside].mean()),
            "seam_mae": seam_mae, "seam_grad": seam_grad, "mask_fraction": float(system_mask.mean())}


def run_systems(runner: TwoStreamRunner, batch: Batch, cfg: MaskBenchConfig) -> dict[str, tuple]:
    """Every system's (latents, latent masks or None) for one batch."""
    sampler = cfg.eval.sampler()
    args = dict(context=batch.instruction, negative_context=batch.empty, config=sampler)
    first = edit_latent(runner, EditRequest(source=batch.source, return_gate=True, **args))
    size = batch.source.shape[-1]
    grid = to_latent_grid(user_masks(batch), FRAME_SIZE // size)
    masks = {"hard": (grid, MaskBoundary(kind="hard"))}
    masks.update({f"progressive_b{b:g}": (grid, MaskBoundary(kind="progressive", band=b)) for b in cfg.bands})
    masks["gate"] = (gate_masks(first.gate, latent_size=size, invert=False), MaskBoundary(band=GATE_BAND))
    masks["gate_inverted"] = (gate_masks(first.gate, latent_size=size, invert=True), MaskBoundary(band=GATE_BAND))
    out = {"none": (first.latent, None)}
    for name, (mask, boundary) in masks.items():
        out[name] = (masked_edit(runner, batch.source, mask, boundary=boundary, **args).latent, mask)
    return out


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def measure(cfg: MaskBenchConfig, models_dir: Path = MODELS_DIR) -> dict:
    models = load_models(models_dir)
    adapter = load_adapter(models_dir / ADAPTER_FILE)
    scores: dict[str, list[dict[str, float]]] = {}
    exact_outside = True
    start = time.perf_counter()
    with TwoStreamRunner(models.backbone, adapter) as runner, torch.no_grad():
        for kind in KINDS:
            batch = make_batch(eval_examples(kind, replace(cfg.eval, per_kind=cfg.per_kind)), models)
            painted = user_masks(batch)
            for name, (latents, masks) in run_systems(runner, batch, cfg).items():
                frames = decode(latents, models.codec)
                for i, example in enumerate(batch.examples):
                    system_mask = (painted[i] if masks is None
                                   else pixel_mask(masks[i:i + 1], models.codec.spatial_stride))
                    scores.setdefault(name, []).append(score(frames[i], example, user_mask=painted[i],
                                                             system_mask=system_mask))
                    if masks is not None:
                        outside = (masks[i:i + 1] == 0).expand_as(latents[i:i + 1])
                        exact_outside &= bool(torch.equal(latents[i:i + 1][outside],
                                                          batch.source[i:i + 1][outside]))
            print(f"{kind}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    return {"config": {"per_kind": cfg.per_kind, "kinds": list(KINDS), "bands_latent_px": list(cfg.bands),
                       "dilate_px": DILATE, "ring_px": RING, "steps": cfg.eval.steps, "cfg": cfg.eval.cfg,
                       "shift": cfg.eval.shift, "seed": cfg.eval.seed},
            "videos": cfg.per_kind * len(KINDS), "latent_exact_outside_mask": exact_outside,
            "codec": type(models.codec).__name__,
            "seconds": round(time.perf_counter() - start, 1),
            "systems": {name: {m: _mean([s[m] for s in rows]) for m in METRICS} for name, rows in scores.items()}}


def markdown(results: dict, command: str = "python -m bench.toyworld.masks") -> str:
    c = results["config"]
    order = sorted(results["systems"], key=lambda n: (SYSTEM_ORDER.index(n.rstrip("0123456789.")), n))
    table = markdown_rows(["system", *METRICS], [[name, *[results["systems"][name][m] for m in METRICS]]
                                                 for name in order])
    return "\n".join([
        "## Masks: hard versus progressive boundary",
        "",
        f"{results['videos']} held-out videos ({c['per_kind']} each of {', '.join(c['kinds'])}; 8 frames at "
        f"{FRAME_SIZE}x{FRAME_SIZE}), {c['steps']} Euler steps, cfg {c['cfg']}, shift {c['shift']}, seed "
        f"{c['seed']}. The mask is the ground-truth edit region dilated by {c['dilate_px']} px. "
        "`outside_mask_mae`: mean absolute error to the source outside the mask the system used (0 = kept exactly; "
        "for `none`, the painted mask). `seam_mae` / `seam_grad`: mean absolute error to the ground truth, and "
        "absolute difference of the gradient magnitude (|dx|+|dy|, RGB summed) to the ground truth's, in a ring of "
        f"{c['ring_px']} px on each side of the painted mask's boundary (lower is better). `mask_fraction`: share "
        "of pixels the system may edit. Latents outside the mask equal the source bit for bit in every masked run: "
        f"**{results['latent_exact_outside_mask']}**.",
        "",
        table,
        "",
        f"Command: `nice -n 5 {command}` ({results['seconds']:.0f} s on one thread).",
        "",
        reading(results),
    ])


def _compare(a: float, b: float, *, lower_is_better: bool) -> str:
    if f"{a:.4f}" == f"{b:.4f}":
        return f"equal to 4 decimals ({a:.4f})"
    better = a < b if lower_is_better else a > b
    return f"{'better' if better else 'worse'} ({a:.4f} vs {b:.4f})"


def reading(results: dict) -> str:
    """The result in words, computed from the numbers (so a rerun cannot contradict its own table)."""
    s = results["systems"]
    bands = [n for n in s if n.startswith("progressive_")]
    best = min(bands, key=lambda n: s[n]["seam_mae"])
    hard, prog, none = s["hard"], s[best], s["none"]
    gain = hard["seam_mae"] - prog["seam_mae"]
    verdict = ("helps a little" if gain > 0.002 else "does not measurably help" if gain > -0.002
               else "hurts")
    codec = ("the codec is exact" if results.get("codec", "PatchCodec") == "PatchCodec" else
             "the codec is learned (its decoder draws soft object edges, as a VAE's does)")
    why_no_band = (f"In ToyWorld {codec} and the edits are flat-coloured objects on a clean background, so a hard "
                   "seam has little to hide, and probably the late steps, which always see the plain mask, decide "
                   "the result near it; textures a VAE's decoder smears across the seam are where the band is "
                   "meant to matter. ")
    gate_polarity = ("the gate marks the edited region" if s["gate"]["psnr_target"] >= s["gate_inverted"]["psnr_target"]
                     else "this adapter's gate is *lower* where it edits, so only the inverted gate works as a mask")
    return (f"Reading: against no mask, the hard mask is "
            f"{_compare(hard['psnr_source_outside'], none['psnr_source_outside'], lower_is_better=False)} on "
            f"preservation outside the edit region (psnr_source_outside, dB) and "
            f"{_compare(hard['psnr_target'], none['psnr_target'], lower_is_better=False)} on psnr_target: the "
            f"unmasked edit changes pixels outside the painted region, the masked ones cannot. The progressive "
            f"boundary (best band: {best}) {verdict} against the hard one on the seam: seam_mae "
            f"{_compare(prog['seam_mae'], hard['seam_mae'], lower_is_better=True)}, seam_grad "
            f"{_compare(prog['seam_grad'], hard['seam_grad'], lower_is_better=True)}, psnr_target "
            f"{_compare(prog['psnr_target'], hard['psnr_target'], lower_is_better=False)}. {why_no_band}"
            f"Success is at most "
            f"{max(row['success'] for row in s.values()):.2f} for every system: a mask confines an edit, it "
            f"cannot make a failed one succeed (ours already fails most object edits, see the main table). Gate as "
            f"mask: {gate_polarity}; the gate systems' seam numbers are not comparable with the others' (their "
            f"masks differ from the painted one, and keeping the source in the ring scores well there).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 video per type, 4 steps, nothing written")
    add_models_argument(parser)
    args = parser.parse_args()
    record = Record(models_folder(args.models))
    torch.set_num_threads(1)
    cfg = (MaskBenchConfig(per_kind=1, bands=(2.0,), eval=EvalConfig(steps=4)) if args.quick
           else MaskBenchConfig())
    results = measure(cfg, record.models)
    publish("masks", results, lambda r: markdown(r, record.command("masks")), write=not args.quick, record=record)
    print(json.dumps({"seconds": results["seconds"]}))


if __name__ == "__main__":
    main()
