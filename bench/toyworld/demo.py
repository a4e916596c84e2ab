"""Edit a held-out ToyWorld clip with the best models trained so far: an mp4 and a side-by-side PNG, in seconds.

    python -m bench.toyworld.demo --out out/demo [--kind recolor|background|reshape|remove|style] [--index 1]
        [--models bench/toyworld/models]

The default models are the codec backbone of issue 18 (``runs/pretrain_codec``: a learned codec standing in for
Wan's VAE, the backbone trained in its latent space, the adapter trained on image pairs only); ``--models
bench/toyworld/models`` runs the older pixel-space models. Everything was trained here; no network is used. The
clip comes from the evaluation split, so the models never saw it. The default clip is one that the adapter edits
successfully; the summary also prints how often edits of that kind succeed over the stored evaluation's clips, so
the one clip is not taken for the rate.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imvideoedit_core.model.adapter_file import load_adapter
from imvideoedit_core.io.video import write_video

from . import judge, world
from .evaluate import EvalConfig, edit_success, eval_examples, gate_heat_map, make_batch, run_adapter, write_sheet
from .models import ADAPTER_FILE, load_models

DEMO_MODELS = Path(__file__).resolve().parent / "runs" / "pretrain_codec"
REFERENCE = DEMO_MODELS / "demo_reference.json"            # kind, index and the edit's success
REFERENCE_FRAMES = DEMO_MODELS / "demo_reference_frames.npz"  # the edited frames as 8-bit RGB
DEFAULT_KIND, DEFAULT_INDEX = "recolor", 1  # "make the circle cyan": a held-out clip this adapter edits well


@dataclass
class DemoResult:
    summary: dict          # what the demo prints
    frames: np.ndarray     # (T, H, W, 3) uint8: the edited clip as the mp4 encoder receives it


def write_reference(result: DemoResult, *, kind: str, index: int) -> None:
    """Store what ``tests/test_toyworld_models.py`` compares a fresh demo run with."""
    REFERENCE.write_text(json.dumps({"kind": kind, "index": index, "success": result.summary["success"]},
                                    indent=1) + "\n")
    np.savez_compressed(REFERENCE_FRAMES, frames=result.frames)


def kind_success_rate(models_dir: Path, kind: str) -> dict | None:
    """The stored evaluation's success of the adapter ("ours") on edits of ``kind``, if the folder has one."""
    path = models_dir / "evaluation.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    per_kind = data.get("systems", {}).get("ours", {}).get(kind)
    if per_kind is None:
        return None
    return {"success": per_kind["success"], "clips": data["config"]["per_kind"]}


def run(out: Path, *, kind: str = DEFAULT_KIND, index: int = DEFAULT_INDEX,
        models_dir: Path = DEMO_MODELS) -> DemoResult:
    models = load_models(models_dir)
    adapter = load_adapter(models_dir / ADAPTER_FILE, backbone=models.backbone.config)
    cfg = EvalConfig(per_kind=index + 1)
    example = eval_examples(kind, cfg)[index]
    with torch.no_grad():
        edited = run_adapter(models, adapter, make_batch([example], models), cfg)
    frames = edited.frames[0]
    out.mkdir(parents=True, exist_ok=True)
    video = write_video(out / "edited.mp4", frames, fps=4)
    write_sheet([example.source_frames, frames, example.target_frames, gate_heat_map(edited.gate[0])],
                out / "side_by_side.png")
    summary = {"instruction": example.instruction, "source_caption": example.source_caption,
               "mp4": str(out / "edited.mp4"), "codec": video.codec, "png": str(out / "side_by_side.png"),
               "success": edit_success(frames, example), "judge": judge.judge_edit(frames, example).as_dict(),
               "kind_success_in_evaluation": kind_success_rate(models_dir, kind)}
    return DemoResult(summary=summary, frames=(frames.clamp(0, 1) * 255).round().to(torch.uint8).numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--kind", choices=world.EDIT_KINDS, default=DEFAULT_KIND)
    parser.add_argument("--index", type=int, default=DEFAULT_INDEX, help="which held-out clip of that kind")
    parser.add_argument("--models", type=Path, default=DEMO_MODELS,
                        help="a ToyWorld model folder (default: the codec backbone; bench/toyworld/models: the "
                             "older pixel-space models)")
    parser.add_argument("--write-reference", action="store_true",
                        help="store the output that tests/test_toyworld_models.py compares with")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread: the output is bit-for-bit reproducible on one machine
    start = time.perf_counter()
    result = run(args.out, kind=args.kind, index=args.index, models_dir=args.models)
    summary = {**result.summary, "seconds": round(time.perf_counter() - start, 2)}
    if args.write_reference and args.models == DEMO_MODELS:
        write_reference(result, kind=args.kind, index=args.index)
    print("rows of side_by_side.png: source, edited, ground truth, gate (the adapter's mix of edit and source: "
          "bright = generated, dark = kept from the source)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
