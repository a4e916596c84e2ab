"""Run under torchrun: trains a tiny adapter on each rank's own shard and saves this rank's final weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from train_data import ReconstructionPairs, tiny_runner  # noqa: E402
from imvideoedit_core.train.trainer import TrainConfig, train_adapter  # noqa: E402


def main(out_dir: str, steps: int) -> None:
    dist.init_process_group("gloo")
    runner = tiny_runner()
    train_adapter(runner, ReconstructionPairs(), TrainConfig(steps=steps, batch_size=2, lr=1e-3, seed=0))
    rank = dist.get_rank()
    save_file({k: v.contiguous() for k, v in runner.adapter.state_dict().items()},
              str(Path(out_dir) / f"rank{rank}.safetensors"))
    dist.barrier()  # both ranks are done before either tears the group down (gloo aborts otherwise, now and then)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
