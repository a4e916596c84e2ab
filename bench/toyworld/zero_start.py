"""Zero start against trained start: how many keyframe-tuning steps a fresh adapter needs (issue 11).

    python -m bench.toyworld.zero_start           # 8 clips, every recipe (~35 min on two busy cores)
    python -m bench.toyworld.zero_start --quick   # smoke run: 1 clip, a few steps, nothing written

Clips: the novel edits of ``keyframe_tuning`` (pink, darker, swap_rb) and the known recolor, 2 held-out clips each,
8 frames. Each recipe tunes an adapter on edited keyframes (ground-truth edited frames, standing in for the
user's image edit) and edits the clip; the adapter is snapshotted during tuning, so one run gives the PSNR curve
over steps. Scored on frames 1, 2, 3, 5, 6, which no recipe is given (the 3-keyframe recipes see 0, 4 and 7), by
PSNR against the exact ground truth; 20 Euler steps, cfg 3, as the main evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from imvideoedit_core.model.adapter_file import load_adapter
from imvideoedit_core.train.keyframe_tuning import (TRAINED_START, ZERO_START, KeyframePairs, KeyframeTuning,
                                                    copy_adapter, zero_start_adapter)
from imvideoedit_core.edit.streams import TwoStreamRunner
from imvideoedit_core.train.trainer import EncodedPairs, train_adapter

from .evaluate import EvalConfig, score
from .keyframe_tuning import KNOWN_KIND, NOVEL_KINDS, Example, edit_video, examples
from .models import ADAPTER_FILE, CODEC, MODELS_DIR, ToyModels, load_models
from .report import markdown_rows, publish, quick_flag

NAME = "zero_start"
SCORED_FRAMES = (1, 2, 3, 5, 6)


@dataclass(frozen=True)
class Recipe:
    name: str
    start: str                       # "trained" (the shipped ToyWorld adapter) or "zero" (a fresh one)
    lr: float
    checkpoints: tuple[int, ...]     # steps at which the adapter is snapshotted and scored; the last ends the run
    keyframes: tuple[int, ...] = (0,)


RECIPES = (
    Recipe("trained, 1 keyframe", "trained", TRAINED_START.lr, (100, TRAINED_START.steps)),
    Recipe("zero, 1 keyframe, lr 1e-3", "zero", ZERO_START.lr, (100, 300, 600, 1000, 1500)),
    Recipe("zero, 1 keyframe, lr 3e-3", "zero", 3e-3, (100, 300, 600)),
    Recipe("zero, 3 keyframes, lr 1e-3", "zero", ZERO_START.lr, (100, 300, 600), keyframes=(0, 4, 7)),
    Recipe("trained, 3 keyframes", "trained", TRAINED_START.lr, (TRAINED_START.steps,), keyframes=(0, 4, 7)),
)


def frames(example: Example, index: tuple[int, ...]) -> Example:
    pick = list(index)
    return replace(example, source_frames=example.source_frames[pick], target_frames=example.target_frames[pick],
                   edit_mask=example.edit_mask[pick])


def tune_snapshots(models: ToyModels, start, example: Example, recipe: Recipe) -> tuple[dict[int, object], float]:
    """The tuned adapter at each checkpoint, and the tuning's wall-clock seconds (snapshots excluded).

    The same pieces as ``tune_on_keyframe`` (keyframe pairs, encoded pairs, the one training loop), with the
    tuned copy kept in hand so that it can be snapshotted between steps."""
    keys = list(recipe.keyframes)
    tuning = KeyframeTuning(steps=max(recipe.checkpoints), lr=recipe.lr)
    pairs = KeyframePairs(example.source_frames[keys], example.target_frames[keys], example.instruction,
                          count=tuning.variants, limits=tuning.limits, seed=tuning.seed)
    tuned = copy_adapter(start)
    data = EncodedPairs(pairs, encode_images=CODEC.encode_images, encode_text=models.text_encoder,
                        batch_size=tuning.batch_size, seed=tuning.seed)
    snapshots, spent = {}, [0.0]

    def keep(progress) -> None:
        if progress.step in recipe.checkpoints:
            begin = time.perf_counter()
            snapshots[progress.step] = copy_adapter(tuned).requires_grad_(False).eval()
            spent[0] += time.perf_counter() - begin

    begin = time.perf_counter()
    train_adapter(TwoStreamRunner(models.backbone, tuned), data, tuning.train_config(), callback=keep)
    return snapshots, time.perf_counter() - begin - spent[0]


def measure(*, per_kind: int, recipes: tuple[Recipe, ...], cfg: EvalConfig) -> dict:
    models = load_models(MODELS_DIR)
    trained = load_adapter(MODELS_DIR / ADAPTER_FILE)
    fresh = zero_start_adapter(models.backbone.config, seed=0)
    clips = [e for kind in (*NOVEL_KINDS, KNOWN_KIND) for e in examples(kind, count=per_kind, frames=cfg.frames)]
    psnr: dict[str, dict[int, list[float]]] = {r.name: {s: [] for s in r.checkpoints} for r in recipes}
    seconds: dict[str, list[float]] = {r.name: [] for r in recipes}
    untuned: list[float] = []
    start = time.perf_counter()
    for example in clips:
        scored = frames(example, SCORED_FRAMES)
        video = edit_video(models, trained, example, cfg, pin_first=False)
        untuned.append(score(video[list(SCORED_FRAMES)], scored)["psnr_target"])
        for recipe in recipes:
            snapshots, spent = tune_snapshots(models, trained if recipe.start == "trained" else fresh, example,
                                              recipe)
            seconds[recipe.name].append(spent)
            for step, adapter in snapshots.items():
                video = edit_video(models, adapter, example, cfg, pin_first=False)
                psnr[recipe.name][step].append(score(video[list(SCORED_FRAMES)], scored)["psnr_target"])
        print(f"{example.kind}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    return {"clips": len(clips), "per_kind": per_kind, "kinds": [*NOVEL_KINDS, KNOWN_KIND],
            "scored_frames": list(SCORED_FRAMES), "sampler_steps": cfg.steps, "cfg": cfg.cfg,
            "untuned_trained_psnr": float(np.mean(untuned)),
            "recipes": [{"name": r.name, "start": r.start, "lr": r.lr, "keyframes": list(r.keyframes),
                         "psnr_by_steps": {str(s): float(np.mean(v)) for s, v in psnr[r.name].items()},
                         "psnr_by_steps_per_clip": {str(s): v for s, v in psnr[r.name].items()},
                         "tuning_seconds_mean": float(np.mean(seconds[r.name]))} for r in recipes],
            "seconds": round(time.perf_counter() - start, 1)}


def markdown(results: dict, *, command: str) -> str:
    rows = [[r["name"], *(r["psnr_by_steps"].get(str(s)) for s in (100, 300, 600, 1000, 1500)),
             round(r["tuning_seconds_mean"], 1)] for r in results["recipes"]]
    table = markdown_rows(["recipe", "100 steps", "300", "600", "1000", "1500", "tuning s (last step)"], rows)
    return "\n".join([
        "## Zero start: keyframe tuning without a trained adapter", "",
        f"PSNR (dB) against the exact ground truth on frames {', '.join(map(str, results['scored_frames']))} "
        f"(never given as keyframes), mean over {results['clips']} held-out clips ({results['per_kind']} each of "
        f"{', '.join(results['kinds'])}), after tuning for the given steps. 'trained' starts from the shipped "
        "ToyWorld adapter, 'zero' from a fresh one (`zero_start_adapter`: its update starts at zero); keyframes are "
        "the ground-truth edited frames (frame 0, or 0, 4 and 7). Batch 4, 64 augmented variants, as IMVE Tune On "
        f"Keyframe. The untuned trained adapter scores {results['untuned_trained_psnr']:.2f} dB.", "", table, "",
        f"`{command}` ({results['seconds']:.0f} s wall-clock). " + reading(results)])


def reading(results: dict) -> str:
    by_name = {r["name"]: r["psnr_by_steps"] for r in results["recipes"]}
    reference = by_name["trained, 1 keyframe"]["300"]
    zero = by_name["zero, 1 keyframe, lr 1e-3"]
    reached = [int(s) for s, v in zero.items() if v >= reference - 0.5]
    fastest = [(name, int(s), v) for name, curve in by_name.items() if name.startswith("zero")
               for s, v in curve.items() if int(s) <= 300 and v >= reference - 0.5]
    return (f"The trained start reaches {reference:.2f} dB at 300 steps. The zero start at the default lr 1e-3 "
            + (f"comes within 0.5 dB of it from {min(reached)} steps on" if reached else
               f"stays more than 0.5 dB below it up to {max(map(int, zero))} steps (best {max(zero.values()):.2f} dB)")
            + "; within 300 steps "
            + (", ".join(f"{n} reaches {v:.2f} dB at {s}" for n, s, v in fastest) if fastest else
               "no zero-start recipe measured here comes within 0.5 dB of it (the goal of issue 11 is missed)")
            + ".")


def main() -> None:
    if quick_flag(__doc__, "smoke run: 1 clip per edit, a few steps, nothing written"):
        recipes = tuple(replace(r, checkpoints=(2, 4) if len(r.checkpoints) > 1 else (4,)) for r in RECIPES)
        print(measure(per_kind=1, recipes=recipes, cfg=EvalConfig(steps=2)))
        return
    results = measure(per_kind=2, recipes=RECIPES, cfg=EvalConfig())
    publish(NAME, results, markdown(results, command="python -m bench.toyworld.zero_start"), write=True)


if __name__ == "__main__":
    main()
