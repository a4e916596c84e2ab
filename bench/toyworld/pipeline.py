"""The whole ToyWorld pipeline in one command: pretrain -> train adapters -> evaluate.

    python -m bench.toyworld.pipeline --quick --out /tmp/toyworld   # CI smoke run into a scratch folder (~1 min)
    python -m bench.toyworld.pipeline                                # the shipped models and results (~90 min)

The full run writes the shipped files (models/, runs/, results.json, docs/); ``--quick`` writes only under
``--out`` and checks that every stage runs, not that anything is learned.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .report import keep_feature_results
from .evaluate import SHEETS, EvalConfig, Folders, RESULTS, evaluate, write_report
from .models import MODELS_DIR
from .pretrain import PretrainConfig, pretrain
from .train_adapter import RUNS_DIR, VARIANTS, train_variant


def run(*, quick: bool, out: Path | None, pretrain_minutes: float, adapter_steps: int) -> dict:
    folders = Folders(models=out / "models", runs=out / "runs") if out else Folders(MODELS_DIR, RUNS_DIR)
    folders.models.mkdir(parents=True, exist_ok=True)
    folders.runs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if quick:
        pre = PretrainConfig(steps=4, video_batch=2, image_batch=4, warmup=2)
        adapter_steps, evaluation = 2, EvalConfig(per_kind=1, steps=2)
    else:
        pre, evaluation = PretrainConfig(), EvalConfig()
    summary = {"pretrain": pretrain(pre, folders.models, minutes=pretrain_minutes, log_every=500)}
    summary["adapters"] = [train_variant(v, steps=adapter_steps, seed=0, models_dir=folders.models,
                                         runs_dir=folders.runs) for v in VARIANTS]
    results = evaluate(evaluation, folders=folders, sheets=None if quick else SHEETS)
    if not quick:
        RESULTS.write_text(json.dumps(keep_feature_results(results), indent=1, sort_keys=True) + "\n")
        write_report(results)
    summary["evaluation"] = {"overall": results["overall"], "cache_off_max_abs_diff": results["cache_off_max_abs_diff"]}
    summary["seconds"] = round(time.perf_counter() - start, 1)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="scratch folder (required with --quick)")
    parser.add_argument("--pretrain-minutes", type=float, default=float("inf"),
                        help="stop pretraining after this long (rerun to continue it where it stopped)")
    parser.add_argument("--adapter-steps", type=int, default=3000)
    args = parser.parse_args()
    if args.quick and args.out is None:
        parser.error("--quick writes into a scratch folder: pass --out DIR")
    torch.set_num_threads(2)
    print(json.dumps(run(quick=args.quick, out=args.out, pretrain_minutes=args.pretrain_minutes,
                         adapter_steps=args.adapter_steps)))


if __name__ == "__main__":
    main()
