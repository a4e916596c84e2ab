"""One source encoding for both guidance branches, against one per branch (issue 10): edit quality on ToyWorld.

    python -m bench.toyworld.shared_source           # the main evaluation's examples, both ways (~3 min)
    python -m bench.toyworld.shared_source --quick   # smoke run: 1 example per kind, 2 steps, nothing written

With classifier-free guidance the source stream runs once per branch, each time with that branch's text (the
instruction, the empty negative). Shared: it runs once, with the instruction, and both branches read the same
keys/values: half the source cache and half the one-off encoding. Same adapter, examples, seeds and sampler as the
main evaluation's "ours"; scored by the same metrics and judge.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from imvideoedit_core.model.adapter_file import load_adapter

from . import world
from .evaluate import EvalConfig, eval_examples, make_batch, run_adapter, score
from .models import ADAPTER_FILE, MODELS_DIR, load_models
from .report import markdown_rows, measurement_args, publish

NAME = "shared_source"
METRICS = ("psnr_target", "success", "warp_error", "adherence", "temporal", "fidelity", "preservation")
SYSTEMS = ("one per branch", "shared")


def measure(cfg: EvalConfig, models_dir: Path = MODELS_DIR) -> dict:
    models = load_models(models_dir)
    adapter = load_adapter(models_dir / ADAPTER_FILE)
    scores = {name: {m: [] for m in METRICS} for name in SYSTEMS}
    seconds = dict.fromkeys(SYSTEMS, 0.0)
    start = time.perf_counter()
    for kind in world.EDIT_KINDS:
        batch = make_batch(eval_examples(kind, cfg), models)
        for name in SYSTEMS:
            begin = time.perf_counter()
            with torch.no_grad():
                out = run_adapter(models, adapter, batch, cfg, share_source=name == "shared")
            seconds[name] += time.perf_counter() - begin
            for video, example in zip(out.frames, batch.examples):
                result = score(video, example)
                for m in METRICS:
                    scores[name][m].append(result[m])
    mean = {name: {m: float(np.mean([v for v in values if v is not None])) for m, values in table.items()}
            for name, table in scores.items()}
    return {"examples": len(scores["shared"]["psnr_target"]), "per_kind": cfg.per_kind, "steps": cfg.steps,
            "cfg": cfg.cfg, "scores": mean, "edit_seconds": {k: round(v, 1) for k, v in seconds.items()},
            "seconds": round(time.perf_counter() - start, 1)}


def markdown(results: dict, command: str = f"python -m bench.toyworld.{NAME}") -> str:
    rows = [[name, *(results["scores"][name][m] for m in METRICS), results["edit_seconds"][name]] for name in SYSTEMS]
    one, shared = results["scores"]["one per branch"], results["scores"]["shared"]
    delta = shared["psnr_target"] - one["psnr_target"]
    return "\n".join([
        "## One source encoding for both guidance branches", "",
        f"The main adapter on the main evaluation's {results['examples']} held-out examples ({results['per_kind']} "
        f"per edit kind, {results['steps']} Euler steps, cfg {results['cfg']}): the source stream encoded once per "
        "guidance branch with that branch's text (the core's default), or once with the instruction and shared by "
        "both branches (half the source cache and half the encoding).", "",
        markdown_rows(["source encoding", *METRICS, "edit s"], rows), "",
        f"`{command}` ({results['seconds']:.0f} s). Sharing changes psnr_target by "
        f"{delta:+.2f} dB, adherence by {shared['adherence'] - one['adherence']:+.3f} and preservation by "
        f"{shared['preservation'] - one['preservation']:+.3f}."])


def main() -> None:
    args = measurement_args(__doc__, "1 example per kind, 2 steps, nothing written")
    results = measure(EvalConfig(per_kind=1, steps=2) if args.quick else EvalConfig(), args.record.models)
    publish(NAME, results, lambda r: markdown(r, args.record.command(NAME)), write=not args.quick,
            record=args.record)


if __name__ == "__main__":
    main()
