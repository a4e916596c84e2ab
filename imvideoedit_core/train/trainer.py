"""Training the adapter on image pairs (one-frame videos) with a flow-matching loss; a plain loop.

Every random draw of step k (batch order, noise levels, noise, text dropout) comes from ``(seed, k, rank)``, so a
run is deterministic for a seed and a resumed run continues exactly where the saved one stopped. Under torchrun
(``torch.distributed`` initialised) the loss module is wrapped in DistributedDataParallel: each rank trains on its
own shard and gradients are averaged, so every rank holds the same weights. Only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Protocol, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open

from ..edit.sampling import noised, pad_contexts, shift_sigma, unshift_sigma
from ..edit.streams import StreamOutput
from ..model.adapter import ImVideoEditAdapter
from ..model.adapter_file import (DEFAULT_STORAGE, STATE_FORMAT, STORAGE_DTYPES, atomic_save_safetensors,
                                  save_adapter)
from .pair_batches import batch_indices, collate
from .pair_dataset import ImagePair, PairDataset

STATE_SUFFIX = ".train-state.safetensors"  # NAME.safetensors resumes from NAME.train-state.safetensors


class TrainingCancelled(RuntimeError):
    """Raised between steps when the cancel hook says so; files already saved stay as they were."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 4          # per rank
    lr: float = 1e-4
    warmup_steps: int = 0        # linear warm-up of the learning rate
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0       # max gradient norm; 0 = no clipping
    ema_decay: float = 0.0       # 0 = no EMA; else the saved adapter holds the EMA weights
    gradient_checkpointing: bool = False
    context_dropout: float = 0.1  # share of samples trained with the empty instruction (for guidance)
    sigma_shift: float = 1.0     # training noise levels: shift(uniform(0, 1))
    sigma_range: tuple[float, float] = (0.0, 1.0)  # ... restricted to [low, high) (an A14B expert's own range)
    max_frame_offset: int = 0    # place each step's clips at a random temporal RoPE position in [0, this]
    gate_loss: float = 0.0       # weight of the auxiliary loss that teaches the gate where the pair differs; 0 = off
    seed: int = 0
    save_every: int = 0          # write the adapter and resume state every N steps; 0 = at the end only
    save_dtype: str = DEFAULT_STORAGE  # the adapter file's weights (the resume state keeps float32)

    def __post_init__(self) -> None:
        checks = [(self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
                  (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
                  (self.lr > 0, f"lr must be positive, got {self.lr}"),
                  (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
                  (0 <= self.context_dropout <= 1, f"context_dropout must be in [0, 1], got {self.context_dropout}"),
                  (self.grad_clip >= 0, f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}"),
                  (self.sigma_shift > 0, f"sigma_shift must be positive, got {self.sigma_shift}"),
                  (0 <= self.sigma_range[0] < self.sigma_range[1] <= 1,
                   f"sigma_range must be (low, high) with 0 <= low < high <= 1, got {self.sigma_range}"),
                  (self.max_frame_offset >= 0, f"max_frame_offset must be >= 0, got {self.max_frame_offset}"),
                  (self.gate_loss >= 0, f"gate_loss must be >= 0 (0 = off), got {self.gate_loss}"),
                  (self.save_every >= 0, f"save_every must be >= 0, got {self.save_every}"),
                  (self.save_dtype in STORAGE_DTYPES,
                   f"save_dtype must be one of {sorted(STORAGE_DTYPES)}, got {self.save_dtype!r}")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class LatentBatch:
    """One training batch in latent space; images are one-frame videos."""

    source: torch.Tensor         # (B, C, 1, h, w)
    target: torch.Tensor         # (B, C, 1, h, w)
    context: torch.Tensor        # (B, L_text, text_dim)
    empty_context: torch.Tensor  # (1, L_text', text_dim): the empty instruction, for context dropout
    edit_mask: torch.Tensor | None = None  # (B, h, w) share of changed pixels per latent cell, for the gate loss


CHANGED_PIXEL = 0.1  # a pixel changed when a channel differs by more than this (0..1 images)


def difference_mask(source: torch.Tensor, target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Images (B, 3, H, W) in 0..1 -> (B, h, w): the share of pixels of each latent cell that the edit changed."""
    changed = ((source - target).abs().amax(dim=1, keepdim=True) > CHANGED_PIXEL).float()  # (B, 1, H, W)
    return F.adaptive_avg_pool2d(changed, size)[:, 0]


class BatchSource(Protocol):
    def batch(self, step: int, *, rank: int, world_size: int) -> LatentBatch: ...


class EncodedPairs:
    """Image pairs (a :class:`PairDataset`, or any sequence of ``ImagePair``), encoded on the fly by the host's VAE
    and text encoder."""

    def __init__(self, dataset: PairDataset | Sequence[ImagePair], *,
                 encode_images: Callable[[torch.Tensor], torch.Tensor],
                 encode_text: Callable[[list[str]], torch.Tensor], batch_size: int, seed: int, device="cpu"):
        self.dataset = dataset
        self.encode_images = encode_images  # (B, 3, H, W) in 0..1 -> (B, C, 1, h, w)
        self.encode_text = encode_text      # list of B strings -> (B, L_text, text_dim)
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self._epoch: tuple[int, list[list[int]]] | None = None

    def _batches(self, epoch: int, rank: int, world_size: int) -> list[list[int]]:
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, batch_indices(len(self.dataset), batch_size=self.batch_size, seed=self.seed,
                                                epoch=epoch, rank=rank, world_size=world_size))
        return self._epoch[1]

    def batch(self, step: int, *, rank: int, world_size: int) -> LatentBatch:
        per_epoch = len(self._batches(0, rank, world_size))
        indices = self._batches(step // per_epoch, rank, world_size)[step % per_epoch]
        pairs = collate([self.dataset[i] for i in indices]).to(self.device)
        with torch.no_grad():
            source, target = self.encode_images(pairs.source), self.encode_images(pairs.target)
            return LatentBatch(source=source, target=target, context=self.encode_text(pairs.instructions),
                               empty_context=self.encode_text([""]),
                               edit_mask=difference_mask(pairs.source, pairs.target, source.shape[-2:]))


class AdaptedModel(Protocol):
    """What training needs from a host: the adapter, where it runs, the adapted velocity, and a training mode.

    The core's own backbone provides it (``TwoStreamRunner``); so does ComfyUI's loaded MODEL (``nodes/host.py``),
    so that training there uses ComfyUI's weights, dtypes and memory management instead of a second backbone.
    """

    adapter: ImVideoEditAdapter

    @property
    def device(self) -> torch.device: ...

    def training(self, *, gradient_checkpointing: bool = False) -> ContextManager[None]:
        """Backbone frozen, adapter trainable and attached, for the duration of the block."""

    def velocity(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, source: torch.Tensor, *,
                 frame_offset: int = 0, gate_grad: bool = False) -> StreamOutput:
        """The adapted velocity of target x (B, C, F, H, W) at timesteps t (B,) in [0, 1000], the source latent
        (same shape) encoded at t=0 with ``context``; with ``gate_grad`` the gates too, in the autograd graph."""


class FlowMatchingLoss(nn.Module):
    """Loss of the target stream at noise level sigma; the source stream sees the clean source at t=0.

    With ``gate_loss`` > 0 and a batch that carries its ``edit_mask``, each block's gate is also pulled towards
    the share of changed pixels under its token (binary cross-entropy), so that g = 1 means "edited here".
    """

    def __init__(self, model: AdaptedModel, gate_loss: float = 0.0):
        super().__init__()
        self.adapter = model.adapter  # registered, so that DDP averages its gradients
        backbone = getattr(model, "backbone", None)
        if isinstance(backbone, nn.Module):  # registered too: ablations train some of its parameters
            self.backbone = backbone
        self.model = model
        self.gate_loss = gate_loss

    def forward(self, batch: LatentBatch, context: torch.Tensor, sigma: torch.Tensor,
                noise: torch.Tensor, frame_offset: int = 0) -> torch.Tensor:
        x = noised(batch.target, noise, sigma.view(-1, 1, 1, 1, 1))      # (B, C, 1, h, w)
        supervise = bool(self.gate_loss) and batch.edit_mask is not None
        out = self.model.velocity(x, 1000.0 * sigma, context, batch.source, frame_offset=frame_offset,
                                  gate_grad=supervise)
        loss = F.mse_loss(out.velocity.float(), (noise - batch.target).float())
        if supervise:
            loss = loss + self.gate_loss * gate_mask_loss(out.gates, batch.edit_mask)
        return loss


def gate_mask_loss(gates: dict[int, torch.Tensor], edit_mask: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every block's gate (B, F, H', W') against the edit mask (B, h, w)."""
    losses = []
    for gate in gates.values():
        target = F.adaptive_avg_pool2d(edit_mask[:, None].to(gate.device, torch.float32), gate.shape[-2:])
        losses.append(F.binary_cross_entropy(gate.float().clamp(1e-6, 1 - 1e-6), target.expand_as(gate)))
    return torch.stack(losses).mean()


class EMA:
    """Exponential moving average of the adapter's parameters."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            self.shadow[k].lerp_(v.detach(), 1 - self.decay)


@dataclass
class TrainProgress:
    step: int          # steps done
    total: int
    loss: float
    lr: float


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # this rank's loss per step run in this call
    steps_done: int = 0
    adapter_path: Path | None = None


def distributed_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def state_path(adapter_path: str | Path) -> Path:
    """Where the resume state of an adapter file lives (beside it; not an adapter itself)."""
    p = Path(adapter_path)
    return p.with_name(p.name.removesuffix(".safetensors") + STATE_SUFFIX)


def _step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    mixed = np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator("cpu").manual_seed(int(mixed))


def _draw(batch: LatentBatch, cfg: TrainConfig, step: int, rank: int):
    """The step's noise levels (B,), noise, contexts with dropout applied, and temporal RoPE offset."""
    gen = _step_generator(cfg.seed, step, rank)
    b = batch.target.shape[0]
    low, high = (unshift_sigma(s, cfg.sigma_shift) for s in cfg.sigma_range)  # the range before the shift
    u = low + (high - low) * torch.rand(b, generator=gen, dtype=torch.float64)
    sigma = shift_sigma(u, cfg.sigma_shift).float()
    noise = torch.randn(batch.target.shape, generator=gen)
    drop = torch.rand(b, generator=gen) < cfg.context_dropout
    contexts = pad_contexts(batch.context, batch.empty_context)          # (B+1, L, text_dim)
    context = torch.where(drop.view(-1, 1, 1).to(contexts.device), contexts[-1:], contexts[:-1])
    offset = int(torch.randint(cfg.max_frame_offset + 1, (1,), generator=gen)) if cfg.max_frame_offset else 0
    device = batch.target.device
    return sigma.to(device), noise.to(device, batch.target.dtype), context, offset


def _lr_at(cfg: TrainConfig, step: int) -> float:
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr


# -- resume state: adapter, EMA and AdamW moments in one safetensors file --

def save_train_state(path: Path, adapter: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA | None,
                     step: int, config: dict) -> None:
    """``config``: the run's settings as JSON-able values (recorded, so that a resume can check them)."""
    tensors = {f"adapter.{k}": v for k, v in adapter.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.shadow.items()})
    for index, state in optimizer.state_dict()["state"].items():
        tensors.update({f"optim.{index}.{k}": torch.as_tensor(v) for k, v in state.items()})
    meta = {"format": STATE_FORMAT, "step": str(step),
            "train_config": json.dumps(config, sort_keys=True)}
    atomic_save_safetensors(tensors, path, meta)


def load_train_state(path: Path, adapter: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA | None) -> int:
    """Restore a resume state; returns the number of steps it had done."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"{path.name} is not an ImVideoEdit training state; delete it or turn resume off")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    adapter_sd = {k[len("adapter."):]: v for k, v in tensors.items() if k.startswith("adapter.")}
    try:
        adapter.load_state_dict(adapter_sd)
    except RuntimeError as err:
        saved, wanted = _ffn_lora_rank(adapter_sd), _ffn_lora_rank(adapter.state_dict())
        detail = f" (an FFN LoRA of rank {saved}, this run asks for {wanted}: set ffn_lora_rank (lora_rank) to {saved})" \
            if saved != wanted else ""
        raise ValueError(f"{path.name} was saved for a different adapter configuration{detail}; start a new run "
                         f"(turn resume off) or pick the matching output name") from err
    if ema is not None:
        ema.shadow = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")} or ema.shadow
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    sd = optimizer.state_dict()
    sd["state"] = state
    optimizer.load_state_dict(sd)
    return int(meta["step"])


def _ffn_lora_rank(state_dict: dict[str, torch.Tensor]) -> int:
    """The rank of the FFN LoRA in an adapter state dict; 0 without one."""
    downs = [v for k, v in state_dict.items() if k.startswith("ffn_lora.") and k.endswith(".down.weight")]
    return downs[0].shape[0] if downs else 0


def _save(out: Path, adapter: ImVideoEditAdapter, optimizer, ema: EMA | None, step: int, cfg: TrainConfig,
          losses: list[float], info: dict) -> None:
    window = losses[-50:]
    summary = {**info, "steps": step, "train_config": dataclasses.asdict(cfg),
               "world_size": distributed_info()[1], "recent_loss": sum(window) / max(len(window), 1)}
    weights = ema.shadow if ema is not None else None
    save_train_state(state_path(out), adapter, optimizer, ema, step, dataclasses.asdict(cfg))
    save_adapter(out, adapter, training=summary, state_dict=weights, dtype=cfg.save_dtype)


@dataclass
class _Trainer:
    """What one optimisation step needs."""

    loss_module: nn.Module        # FlowMatchingLoss, wrapped in DDP under torchrun
    adapter: nn.Module
    trainable: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    cfg: TrainConfig
    rank: int

    def step(self, batch: LatentBatch, step: int) -> float:
        sigma, noise, context, offset = _draw(batch, self.cfg, step, self.rank)
        for group in self.optimizer.param_groups:
            group["lr"] = _lr_at(self.cfg, step)
        loss = self.loss_module(batch, context, sigma, noise, offset)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step + 1}; lower the learning rate "
                                     "or turn on gradient clipping (the weights before this step are kept)")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.adapter)
        return loss.item()


def train_adapter(model: AdaptedModel, data: BatchSource, cfg: TrainConfig, *, out_path: str | Path | None = None,
                  resume: bool = False, info: dict | None = None,
                  callback: Callable[[TrainProgress], None] | None = None,
                  cancel: Callable[[], bool] | None = None,
                  extra_parameters: Sequence[nn.Parameter] = ()) -> TrainResult:
    """Train ``model.adapter`` with the backbone frozen; writes ``out_path`` (and its resume state) on rank 0.

    ``extra_parameters`` (ablations only, e.g. the backbone's 3D attention) are optimised too, but are neither
    saved in the adapter file nor in the resume state, so such a run cannot be resumed.
    """
    if resume and extra_parameters:
        raise ValueError("a run with extra_parameters cannot be resumed: their weights are not in the state file")
    rank, world = distributed_info()
    adapter = model.adapter
    result = TrainResult()
    with model.training(gradient_checkpointing=cfg.gradient_checkpointing):
        for p in extra_parameters:
            p.requires_grad_(True)
        trainable = [*adapter.parameters(), *extra_parameters]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        ema = EMA(adapter, cfg.ema_decay) if cfg.ema_decay else None
        out = Path(out_path) if out_path is not None else None
        start = 0
        if resume and out is not None and state_path(out).is_file():
            start = load_train_state(state_path(out), adapter, optimizer, ema)
        loss_module: nn.Module = FlowMatchingLoss(model, gate_loss=cfg.gate_loss)
        if world > 1:
            loss_module = nn.parallel.DistributedDataParallel(loss_module)
        trainer = _Trainer(loss_module=loss_module, adapter=adapter, trainable=trainable, optimizer=optimizer,
                           ema=ema, cfg=cfg, rank=rank)
        result.steps_done = start
        for step in range(start, cfg.steps):
            if cancel is not None and cancel():
                raise TrainingCancelled(f"training cancelled after {step} of {cfg.steps} steps")
            result.losses.append(trainer.step(data.batch(step, rank=rank, world_size=world), step))
            result.steps_done = step + 1
            if callback is not None:
                callback(TrainProgress(step=step + 1, total=cfg.steps, loss=result.losses[-1], lr=_lr_at(cfg, step)))
            due = step + 1 == cfg.steps or (cfg.save_every and (step + 1) % cfg.save_every == 0)
            if out is not None and rank == 0 and due:
                _save(out, adapter, optimizer, ema, step + 1, cfg, result.losses, info or {})
                result.adapter_path = out
    return result
