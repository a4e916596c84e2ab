"""Edit a held-out ToyWorld clip with the bundled models: an mp4 and a side-by-side PNG, in seconds on a CPU.

    python -m bench.toyworld.demo --out out/demo [--kind recolor|background|reshape|remove|style] [--index 0]

The backbone, the text encoder and the adapter in bench/toyworld/models/ were trained here (pretrain.py,
train_adapter.py); no network is used. The clip comes from the evaluation split, so the models never saw it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch

from imvideoedit_core.model.adapter_file import load_adapter
from imvideoedit_core.io.video import write_video

from . import judge, world
from .evaluate import EvalConfig, edit_success, eval_examples, gate_heat_map, make_batch, run_adapter, write_sheet
from .models import ADAPTER_FILE, MODELS_DIR, load_models

REFERENCE = MODELS_DIR / "demo_reference.json"


def frames_digest(frames: torch.Tensor) -> str:
    """sha256 of the frames as 8-bit RGB: what the mp4 encoder receives."""
    return hashlib.sha256((frames.clamp(0, 1) * 255).round().to(torch.uint8).numpy().tobytes()).hexdigest()


def run(out: Path, *, kind: str = "recolor", index: int = 0, models_dir: Path = MODELS_DIR) -> dict:
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
    return {"instruction": example.instruction, "source_caption": example.source_caption,
            "mp4": str(out / "edited.mp4"), "codec": video.codec, "png": str(out / "side_by_side.png"),
            "success": edit_success(frames, example), "judge": judge.judge_edit(frames, example).as_dict(),
            "digest": frames_digest(frames)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--kind", choices=world.EDIT_KINDS, default="recolor")
    parser.add_argument("--index", type=int, default=0, help="which held-out clip of that kind")
    parser.add_argument("--write-reference", action="store_true",
                        help="store the output digest that tests/test_toyworld_models.py checks")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread: the output is bit-for-bit reproducible
    start = time.perf_counter()
    summary = run(args.out, kind=args.kind, index=args.index)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    if args.write_reference:
        REFERENCE.write_text(json.dumps({"kind": args.kind, "index": args.index,
                                         "digest": summary["digest"]}, indent=1) + "\n")
    print("rows of side_by_side.png: source, edited, ground truth, gate (where the edit happens)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
