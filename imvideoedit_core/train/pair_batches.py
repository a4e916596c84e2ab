"""Image-pair batches: deterministic shuffled batches for a seed, epoch and rank (DistributedDataParallel splits one
global order), collated channels-first for the VAE."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .pair_dataset import ImagePair


@dataclass
class PairBatch:
    """Pairs stacked channels-first for the VAE: ``source`` and ``target`` are float32 in 0..1, [B, 3, H, W]."""

    source: torch.Tensor  # [B, 3, H, W]
    target: torch.Tensor  # [B, 3, H, W]
    instructions: list[str]
    names: list[str]

    def to(self, device: torch.device | str, *, dtype: torch.dtype | None = None) -> PairBatch:
        """The same batch with both image tensors moved to ``device`` (and cast to ``dtype`` when given)."""
        return PairBatch(
            source=self.source.to(device=device, dtype=dtype),
            target=self.target.to(device=device, dtype=dtype),
            instructions=list(self.instructions),
            names=list(self.names),
        )


# ----------------------------------------------------------------------------------------------------------------
# Batching


def batch_indices(
    n: int,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
) -> list[list[int]]:
    """This rank's batches of dataset indices for one epoch; the same on every machine for the same arguments.

    One permutation of range(n) per (seed, epoch) is shared by all ranks. Step k takes the next
    ``batch_size * world_size`` indices of it and rank r gets the r-th slice of ``batch_size``, so ranks are
    disjoint and all get the same number of equally long batches. ``drop_last=True`` drops the tail that does not
    fill a whole step (a different tail each epoch). ``drop_last=False`` pads the permutation with its own first
    indices until its length divides by ``world_size`` (at most world_size - 1 repeats, as torch's
    DistributedSampler does), and the last batch of every rank is then shorter than ``batch_size`` but equal.
    """
    _check_batching(n, batch_size=batch_size, seed=seed, epoch=epoch, rank=rank, world_size=world_size)
    mixed_seed = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator().manual_seed(int(mixed_seed))
    order = torch.randperm(n, generator=generator).tolist()
    step = batch_size * world_size
    if drop_last:
        if n < step:
            raise ValueError(f"{n} pairs do not fill one step of batch_size={batch_size} x world_size={world_size} "
                             "with drop_last=True: lower batch_size or pass drop_last=False")
        order = order[: n - n % step]
    else:
        padding = -n % world_size
        order += [order[i % n] for i in range(padding)]
    batches = []
    for start in range(0, len(order), step):
        share = min(step, len(order) - start) // world_size  # batch_size, or less in the last, padded step
        first = start + rank * share
        batches.append(order[first : first + share])
    return batches


def _check_batching(n: int, *, batch_size: int, seed: int, epoch: int, rank: int, world_size: int) -> None:
    """ValueErrors for arguments of batch_indices that cannot work."""
    if n < 1:
        raise ValueError(f"n={n}: there must be at least one pair to batch")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed={seed} and epoch={epoch} must be non-negative integers")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank}, world_size={world_size}: need world_size >= 1 and 0 <= rank < world_size")


def collate(pairs: Sequence[ImagePair]) -> PairBatch:
    """Stack loaded pairs into a channels-first batch; all pairs must have the same size."""
    if not pairs:
        raise ValueError("collate needs at least one pair")
    names_by_size: dict[tuple[int, int], list[str]] = {}
    for pair in pairs:
        names_by_size.setdefault(tuple(pair.source.shape[:2]), []).append(pair.name)
    for pair in pairs:
        if pair.target.shape != pair.source.shape:
            raise ValueError(f"pair {pair.name!r}: source {tuple(pair.source.shape)} and target "
                             f"{tuple(pair.target.shape)} differ in shape; load pairs through PairDataset")
    if len(names_by_size) > 1:
        sizes = "; ".join(f"{h}x{w}: {', '.join(names)}" for (h, w), names in names_by_size.items())
        raise ValueError(f"pairs in one batch must share a size, got (height x width) {sizes}. "
                         "Pass size=(height, width) to PairDataset to scale every pair to one size")
    source = torch.stack([pair.source for pair in pairs])  # [B, H, W, 3]
    target = torch.stack([pair.target for pair in pairs])  # [B, H, W, 3]
    return PairBatch(
        source=source.permute(0, 3, 1, 2).contiguous(),  # [B, H, W, 3] -> [B, 3, H, W]
        target=target.permute(0, 3, 1, 2).contiguous(),  # [B, H, W, 3] -> [B, 3, H, W]
        instructions=[pair.instruction for pair in pairs],
        names=[pair.name for pair in pairs],
    )
