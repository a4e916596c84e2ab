"""Pretrain the ToyWorld text-to-video backbone and its text encoder (flow matching, captioned videos and frames).

    python -m bench.toyworld.pretrain --minutes 60          # one chunk of the shipped run; run it again to go on
    python -m bench.toyworld.pretrain --quick --out /tmp/tw  # a smoke run for CI

The run is defined by its total ``--steps`` (the learning-rate schedule decays over them) and is trained in chunks:
each call trains for at most ``--minutes`` and stops; the resume state (weights, EMA, AdamW moments, step) is
written to ``OUT/pretrain.train-state.safetensors`` every ``--save-every`` steps and at the end of the chunk, so a
cut-off run loses only the steps since its last save, and the next call continues exactly (batches, noise and the
schedule are functions of (seed, step)). The model files in ``OUT`` hold the weights (the EMA where it is on) in
float16. The defaults reproduce the shipped backbone; ``--wide`` runs the 4x larger recipe with EMA and a cosine
decay, which measured no better (docs/decisions.md, ToyWorld):

    python -m bench.toyworld.pretrain --wide --out out/pretrain-wide --minutes 90   # 81 min for 8000 steps
    python -m bench.toyworld.pretrain --long --out out/pretrain-long --minutes 60   # 16000 steps, ~65 min alone
    python -m bench.toyworld.pretrain --positions --out out/pretrain-pos --minutes 60  # 10000 steps, toy-pos
    python -m bench.toyworld.pretrain --positions --lr 2e-3 --out out/pretrain-pos-lr   # the same at a tuned rate
    python -m bench.toyworld.pretrain --positions --lr 2e-3 --preset toy-pos-deep --steps 6000 --out out/deep

``--preset``, ``--steps`` and ``--lr`` change one setting of the chosen recipe (``--lr`` the peak; the decay still
ends at the recipe's min_lr); ``--noise-shift S`` trains at noise levels moved towards pure noise by the sampler's
time shift. ``--workers N`` renders the batches ahead in N processes: the same batches, so the same weights (tested);
on 2 cores it measured no faster (0.22 s a step either way), it is meant for a machine with cores to spare.
``--device cuda`` trains there (batches and noise are still made on the CPU, so the run is the same one; untested
on a GPU so far, none was lent):

    python -m bench.toyworld.pretrain --positions --lr 2e-3 --noise-shift 3 --steps 40000 --device cuda --workers 12 \
        --out out/pretrain-gpu

In a learned codec's latent space (issue 18: ``--codec DIR`` copies ``DIR/codec.safetensors`` into the run folder,
whose models then load with that codec), with batches drawn from a pool of clips encoded once, and the weights
judged on held-out captions every 4000 steps (``OUT/generation_curve.jsonl``):

    python -m bench.toyworld.train_codec --out out/codec            # the codec first (~15 min alone)
    python -m bench.toyworld.pretrain --positions --lr 2e-3 --noise-shift 3 --codec out/codec --video-batch 16 \
        --image-batch 64 --pool-clips 12000 --steps 20000 --judge-every 4000 --out out/pretrain-codec

A run can start from another run's weights under a new recipe (``--init DIR``, same backbone preset and codec),
e.g. videos only (``--video-every 1``) against the alternation continued, at about equal compute:

    python -m bench.toyworld.pretrain --positions --lr 5e-4 --noise-shift 3 --codec DIR --init DIR --video-batch 16 \
        --image-batch 64 --pool-clips 12000 --video-every 1 --steps 6000 --judge-every 2000 --out out/videos-only

Steps alternate between batches of 8-frame videos and batches of single frames (one-frame videos), as Wan is
trained on both (``--video-every``). Scenes come from training-split seeds only; a share of them carries a global style so that the
backbone can render the targets of style edits.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open

from imvideoedit_core.model.adapter_file import STATE_FORMAT, atomic_save_safetensors
from imvideoedit_core.model.config import BackboneConfig, backbone_preset
from imvideoedit_core.edit.sampling import noised, shift_sigma
from imvideoedit_core.train.trainer import EMA, load_train_state, save_train_state

from . import world
from .models import (BACKBONE_FILE, CODEC_FILE, FRAME_SIZE, MODELS_DIR, ToyModels, folder_codec, load_models,
                     new_backbone, new_text_encoder, on_codec_grid, save_models)

STYLE_SHARE = 0.2       # scenes rendered with a random global style
CAPTION_DROPOUT = 0.1   # scenes trained with the empty caption (for classifier-free guidance)
STATE_FILE = "pretrain.train-state.safetensors"
LOG_FILE = "pretrain_log.txt"
CURVE_FILE = "generation_curve.jsonl"  # --judge-every: one line of held-out generation scores per checkpoint
CURVE_CAPTIONS = 32


@dataclass(frozen=True)
class PretrainConfig:
    """Defaults: the shipped backbone's run (issue 4: constant learning rate, no EMA; it stopped at 10 249 steps
    after 55 minutes). ``WIDE_RECIPE`` is the 4x larger run with EMA and a cosine decay (docs/decisions.md)."""

    steps: int = 10_249            # the whole run; the learning rate decays to min_lr over it
    preset: str = "toy"            # backbone preset
    prediction: str = "velocity"   # what the backbone's head predicts ("x0": the clean latent)
    video_batch: int = 8
    image_batch: int = 32
    frames: int = 8
    lr: float = 5e-4
    min_lr: float = 5e-4           # = lr: a constant learning rate after the warm-up
    warmup: int = 200
    ema_decay: float = 0.0         # 0: the files hold the raw weights
    seed: int = 0
    max_objects: int = world.MAX_OBJECTS  # fewer: a simpler world (a diagnostic of what the compute can learn)
    noise_shift: float = 1.0       # > 1: training noise levels moved towards pure noise (where layouts are decided)
    pool_clips: int = 0            # > 0: draw batches from this many clips encoded once (``LatentPool``)
    video_every: int = 2           # a video batch every this many steps, single frames between (1: videos only)
    init: str = ""                 # a model folder whose backbone and text encoder start the run (same codec)

    def is_video_step(self, step: int) -> bool:
        return step % self.video_every == 0

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then a cosine decay from lr to min_lr at the last step."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress))


WIDE_RECIPE = dict(preset="toy-256", steps=8_000, lr=6e-4, min_lr=2e-5, warmup=500, ema_decay=0.999)
# The shipped preset trained longer, with a cosine decay and EMA (docs/decisions.md, ToyWorld; issue 9)
LONG_RECIPE = dict(steps=16_000, min_lr=2e-5, ema_decay=0.999)
# The shipped preset plus a learned absolute position embedding (issue 9: RoPE alone could not place objects)
POSITION_RECIPE = dict(preset="toy-pos", steps=10_000, min_lr=2e-5, ema_decay=0.999)


def train_seed(seed: int, step: int, index: int) -> int:
    """A training-split scene seed for (run seed, step, position in batch), never an evaluation seed."""
    candidate = int(np.random.SeedSequence([seed, step, index]).generate_state(1)[0]) % (1 << 30)
    while world.split_of(candidate) != "train":
        candidate += 1
    return candidate


def training_scene(scene_seed: int, *, frames: int, max_objects: int = world.MAX_OBJECTS) -> world.Scene:
    rng = np.random.default_rng(scene_seed)
    scene = world.random_scene(rng, size=FRAME_SIZE, frames=frames, max_objects=max_objects)
    if rng.random() < STYLE_SHARE:
        style = world.STYLES[int(rng.integers(len(world.STYLES)))]
        scene = world.apply_edit(scene, world.make_edit(scene, kind="style", value=style))
    return scene


def batch(cfg: PretrainConfig, step: int, codec) -> tuple[torch.Tensor, list[str]]:
    """Latents (B, C, T, h, w) through ``codec`` and captions for one step: videos every ``video_every`` steps,
    single frames on the others."""
    video = cfg.is_video_step(step)
    size, frames = (cfg.video_batch, cfg.frames) if video else (cfg.image_batch, 1)
    scenes = [training_scene(train_seed(cfg.seed, step, i), frames=frames, max_objects=cfg.max_objects)
              for i in range(size)]
    latents = torch.cat([codec.encode(world.render(s).frames) for s in scenes])
    drop = np.random.default_rng([cfg.seed, step, 99]).random(size) < CAPTION_DROPOUT
    captions = ["" if d else world.caption(s) for s, d in zip(scenes, drop)]
    return latents, captions


@dataclass(frozen=True)
class LatentPool:
    """Training clips encoded once: a learned codec's encoder costs about as much per step as the toy backbone's
    training step (0.28 s for a step's 128 frames, measured), so a codec run draws its batches from a pool instead
    of encoding fresh scenes every step. Video steps take whole clips; image steps take one random latent frame of a
    clip (any frame of a scene is itself a scene's render), or its first for a codec that groups frames (the others
    are groups, not images)."""

    latents: torch.Tensor  # (P, C, T, h, w), float16
    captions: list[str]
    images_anywhere: bool = True  # every latent frame is one frame's (a frame-by-frame codec)

    def batch(self, cfg: PretrainConfig, step: int) -> tuple[torch.Tensor, list[str]]:
        rng = np.random.default_rng([cfg.seed, step, 7])
        video = cfg.is_video_step(step)
        size = cfg.video_batch if video else cfg.image_batch
        clips = rng.integers(len(self.captions), size=size)
        if video:
            latents = self.latents[clips]                                          # (B, C, T, h, w)
        else:
            # a frame-by-frame codec's latent frames are all images; a grouping codec's first one alone is
            frames = rng.integers(self.latents.shape[2] if self.images_anywhere else 1, size=size)
            latents = self.latents[clips, :, frames].unsqueeze(2)                  # (B, C, 1, h, w)
        drop = np.random.default_rng([cfg.seed, step, 99]).random(size) < CAPTION_DROPOUT
        return latents.float(), ["" if d else self.captions[c] for c, d in zip(clips, drop)]


POOL_FILE = "latent_pool.safetensors"


def latent_pool(cfg: PretrainConfig, codec, out: Path) -> LatentPool:
    """The run's pool: read from ``out/POOL_FILE`` when it was made for this run (seed, size, codec), else encoded
    from training-split scenes (a function of the seed) and written there, so a resumed run does not encode again."""
    identity = {"seed": str(cfg.seed), "pool_clips": str(cfg.pool_clips), "frames": str(cfg.frames),
                "max_objects": str(cfg.max_objects), "codec_sha256": str(_codec_digest(out))}
    path = out / POOL_FILE
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if all(meta.get(k) == v for k, v in identity.items()):
                return LatentPool(latents=f.get_tensor("latents"), captions=json.loads(meta["captions"]),
                                  images_anywhere=codec.temporal_stride == 1)
    scenes = [training_scene(train_seed(cfg.seed, 1 << 40, i), frames=cfg.frames, max_objects=cfg.max_objects)
              for i in range(cfg.pool_clips)]
    latents = torch.cat([codec.encode(world.render(s).frames).to(torch.float16) for s in scenes])
    pool = LatentPool(latents=latents, captions=[world.caption(s) for s in scenes],
                      images_anywhere=codec.temporal_stride == 1)
    atomic_save_safetensors({"latents": latents}, path, {**identity, "captions": json.dumps(pool.captions)})
    return pool


def flow_loss(models: ToyModels, latents: torch.Tensor, captions: list[str], gen: torch.Generator, *,
              noise_shift: float = 1.0) -> torch.Tensor:
    """Flow matching at logit-normal noise levels, moved towards pure noise by the sampler's time shift when
    ``noise_shift`` > 1 (0 and 1 stay fixed): predict noise - x0 from the noised latent."""
    sigma = shift_sigma(torch.sigmoid(torch.randn(latents.shape[0], generator=gen)), noise_shift).to(latents.device)
    noise = torch.randn(latents.shape, generator=gen).to(latents.device)  # drawn on the CPU: the same on any device
    x = noised(latents, noise, sigma.view(-1, 1, 1, 1, 1))
    velocity = models.backbone(x, 1000.0 * sigma, models.text_encoder(captions))
    return F.mse_loss(velocity, noise - latents)


class _Batches(torch.utils.data.Dataset):
    """The run's batches from ``start`` on, item i being step start+i's: a pure function of (seed, step), so
    rendering them in worker processes changes nothing but the time."""

    def __init__(self, cfg: PretrainConfig, start: int, codec, pool: LatentPool | None = None):
        self.cfg, self.start, self.codec, self.pool = cfg, start, codec, pool

    def __len__(self) -> int:
        return max(0, self.cfg.steps - self.start)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[str]]:
        if self.pool is not None:
            return self.pool.batch(self.cfg, self.start + index)
        return batch(self.cfg, self.start + index, self.codec)


def batches(cfg: PretrainConfig, start: int, codec, *, workers: int = 0,
            pool: LatentPool | None = None) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """Step start's batch, then the next ones (from ``pool`` when given); ``workers`` > 0 renders them ahead in
    that many processes."""
    return iter(torch.utils.data.DataLoader(_Batches(cfg, start, codec, pool), batch_size=None, num_workers=workers,
                                            prefetch_factor=2 if workers else None))


class _Both(nn.Module):
    """Backbone and text encoder as one module, so that one state dict, one EMA and one optimiser cover both."""

    def __init__(self, models: ToyModels):
        super().__init__()
        self.backbone, self.text_encoder = models.backbone, models.text_encoder


def check_resumable(path: Path, identity: dict) -> None:
    """Refuse to continue the training state at ``path`` unless it was saved with the same ``identity``."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a training state; move it away or pick another --out")
    saved = json.loads(meta.get("train_config", "{}"))
    wanted = json.loads(json.dumps(identity))  # tuples become lists, as in the saved JSON
    if saved != wanted:
        changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        raise ValueError(f"{path} belongs to a run with other settings ({', '.join(changed)} differ): continue "
                         "it with the same --steps/--seed, or start a new run in another --out folder")


@dataclass(frozen=True)
class _StateConfig:
    """What the resume state records as the run's identity: the schedule, the backbone's shape and the codec."""

    run: PretrainConfig
    backbone: BackboneConfig
    codec: str | None = None  # sha256 of the codec file the latents come from; None: the pixel codec

    def as_dict(self) -> dict:  # dataclasses.asdict of this would nest the backbone's own fields
        run = dataclasses.asdict(self.run)
        if run["max_objects"] == world.MAX_OBJECTS:  # the full world: states saved before the option still resume
            del run["max_objects"]
        if run["noise_shift"] == 1.0:  # as above
            del run["noise_shift"]
        if run["pool_clips"] == 0:  # as above
            del run["pool_clips"]
        backbone = json.loads(self.backbone.to_json())
        if backbone["absolute_position"] == "none":  # as above: states saved before the option still resume
            del backbone["absolute_position"], backbone["position_grid"]
        codec = {} if self.codec is None else {"codec_sha256": self.codec}  # as above
        return {**run, "backbone": backbone, **codec}


def use_codec(out: Path, codec_dir: Path) -> None:
    """Put ``codec_dir``'s codec file into the run folder ``out`` (a run keeps the codec its latents came from)."""
    source, kept = codec_dir / CODEC_FILE, out / CODEC_FILE
    if not source.is_file():
        raise ValueError(f"no codec file in {codec_dir}: train one with `python -m bench.toyworld.train_codec`")
    if kept.is_file() and kept.read_bytes() != source.read_bytes():
        raise ValueError(f"{out} already trains on another codec: continue it without --codec, or pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, kept)


def _codec_digest(out: Path) -> str | None:
    path = out / CODEC_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def judge_checkpoint(out: Path, step: int) -> dict:
    """Judge the model files in ``out`` as a text-to-video generator on held-out captions (``generation``) and
    append the scores to ``out/CURVE_FILE``: the run's curve of presence, shape and stability against steps."""
    from .evaluate import EvalConfig  # here: evaluate imports train_adapter, which imports this module
    from .generation import measure
    with torch.random.fork_rng(devices=[]):
        result = measure(out, count=CURVE_CAPTIONS, cfg=EvalConfig(), from_truth=())
    line = {"step": step, "captions": CURVE_CAPTIONS, "seconds": result["seconds"], **result["sampled"]}
    with (out / CURVE_FILE).open("a") as curve:
        print(json.dumps(line), file=curve, flush=True)
    return line


def pretrain(cfg: PretrainConfig, out: Path, *, minutes: float = math.inf, save_every: int = 500,
             log_every: int = 100, workers: int = 0, device: str = "cpu", judge_every: int = 0) -> dict:
    """Train (or continue) the run in ``out`` for at most ``minutes``; returns a summary of the whole run.
    The latents come from the codec file in ``out`` (``use_codec``), else from the pixel codec.
    ``workers``: render the batches ahead in that many processes (the same batches, sooner); ``device``: where
    the models train (batches and noise are made on the CPU, so a run can move between devices); ``judge_every``:
    judge the saved weights every that many steps (``judge_checkpoint``; 0: never)."""
    codec = folder_codec(out)
    if on_codec_grid(cfg.frames, codec) != cfg.frames:
        raise ValueError(f"{cfg.frames}-frame clips: this run's codec takes {codec.temporal_stride}n + 1 frames "
                         f"(e.g. {on_codec_grid(cfg.frames, codec)})")
    backbone = new_backbone(cfg.seed, cfg.preset, cfg.prediction)
    models = ToyModels(backbone=backbone, text_encoder=new_text_encoder(cfg.seed, backbone.config))
    if cfg.init:
        start_from(models, Path(cfg.init), out)
    both = _Both(models).to(device)
    optimizer = torch.optim.AdamW(both.parameters(), lr=cfg.lr, weight_decay=0.01)
    ema = EMA(both, cfg.ema_decay)
    out.mkdir(parents=True, exist_ok=True)
    state_path, identity = out / STATE_FILE, _StateConfig(cfg, backbone.config, _codec_digest(out))
    step = 0
    if state_path.is_file():
        check_resumable(state_path, identity.as_dict())
        step = load_train_state(state_path, both, optimizer, ema)
        ema.shadow = {k: v.to(device) for k, v in ema.shadow.items()}
    start, losses = time.perf_counter(), []
    pool = latent_pool(cfg, codec, out) if cfg.pool_clips else None
    data = batches(cfg, step, codec, workers=workers, pool=pool)
    with (out / LOG_FILE).open("a") as log:
        while step < cfg.steps and time.perf_counter() - start < 60 * minutes:
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr_at(step)
            latents, captions = next(data)
            latents = latents.to(device)
            loss = flow_loss(models, latents, captions, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step),
                             noise_shift=cfg.noise_shift)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(both.parameters(), 1.0)
            optimizer.step()
            ema.update(both)
            losses.append(loss.item())
            step += 1
            if step % log_every == 0:
                recent = sum(losses[-log_every:]) / len(losses[-log_every:])
                print(f"step {step}: loss {recent:.4f} lr {cfg.lr_at(step - 1):.2e} "
                      f"({time.perf_counter() - start:.0f} s this chunk)", file=log, flush=True)
            judging = judge_every > 0 and step % judge_every == 0
            if judging or (step % save_every == 0 and step < cfg.steps):
                _save(out, both, optimizer, ema, step, identity, losses)
            if judging:
                judge_checkpoint(out, step)
        _save(out, both, optimizer, ema, step, identity, losses)  # the end of the run or of this chunk
        summary = _summary(identity, step, losses, time.perf_counter() - start)
        print(json.dumps(summary), file=log, flush=True)
    return summary


def start_from(models: ToyModels, folder: Path, out: Path) -> None:
    """Copy the backbone and text encoder of the model folder ``folder`` into ``models`` (a run continued under a
    new recipe); refused unless its backbone has the run's shape and its codec is the run's."""
    start = load_models(folder)
    if start.backbone.config != models.backbone.config:
        raise ValueError(f"--init {folder}: its backbone is {start.backbone.config.to_json()}, this run's preset "
                         f"builds {models.backbone.config.to_json()}: pick the matching --preset")
    if _codec_digest(folder) != _codec_digest(out):
        raise ValueError(f"--init {folder}: its codec is not this run's; give the same --codec folder")
    models.backbone.load_state_dict(start.backbone.state_dict())
    models.text_encoder.load_state_dict(start.text_encoder.state_dict())


def _save(out: Path, both: _Both, optimizer, ema: EMA, step: int, identity: _StateConfig,
          losses: list[float]) -> None:
    save_train_state(out / STATE_FILE, both, optimizer, ema, step, identity.as_dict())
    shadow = {k: v.to(torch.float16) for k, v in ema.shadow.items()}  # with ema_decay 0: the raw weights
    save_models(out, ToyModels(backbone=both.backbone, text_encoder=both.text_encoder),
                summary=_summary(identity, step, losses, None),
                state_dicts={"backbone": {k.removeprefix("backbone."): v for k, v in shadow.items()
                                          if k.startswith("backbone.")},
                             "text_encoder": {k.removeprefix("text_encoder."): v for k, v in shadow.items()
                                              if k.startswith("text_encoder.")}})


def _summary(identity: _StateConfig, step: int, losses: list[float], seconds: float | None) -> dict:
    tail = losses[-200:]
    kind = "ema" if identity.run.ema_decay else "raw"
    summary = {"steps": step, "chunk_steps": len(losses), "config": identity.as_dict(), "weights": f"{kind}, float16",
               "recent_loss": sum(tail) / max(len(tail), 1)}
    if seconds is not None:
        summary["chunk_seconds"] = round(seconds, 1)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=MODELS_DIR)
    parser.add_argument("--minutes", type=float, default=60.0, help="stop this chunk after this long")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"the whole run's length (default: the recipe's, else {PretrainConfig.steps})")
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wide", action="store_true", help="the 4x larger recipe (toy-256, EMA, cosine decay)")
    parser.add_argument("--long", action="store_true", help="the shipped preset for 16000 steps, EMA, cosine decay")
    parser.add_argument("--positions", action="store_true",
                        help="the shipped preset with learned absolute positions (toy-pos), EMA, cosine decay")
    parser.add_argument("--max-objects", type=int, default=world.MAX_OBJECTS,
                        help="train on scenes of at most this many objects (a diagnostic; the world has 3)")
    parser.add_argument("--preset", default=None, help="the backbone preset (default: the recipe's, else toy)")
    parser.add_argument("--lr", type=float, default=None,
                        help="the peak learning rate (default: the recipe's; it decays to the recipe's min_lr)")
    parser.add_argument("--noise-shift", type=float, default=1.0,
                        help="train at noise levels shifted towards pure noise by this factor (1: logit-normal)")
    parser.add_argument("--workers", type=int, default=0,
                        help="render batches ahead in this many processes (0: in the training process)")
    parser.add_argument("--device", default="cpu", help="where to train, e.g. cuda (untested here: no GPU)")
    parser.add_argument("--judge-every", type=int, default=0,
                        help=f"judge the weights on {CURVE_CAPTIONS} held-out captions every this many steps "
                             f"(appended to OUT/{CURVE_FILE}; 0: never)")
    parser.add_argument("--codec", type=Path, default=None,
                        help="train in the latent space of the codec file in this folder (copied into --out)")
    parser.add_argument("--pool-clips", type=int, default=0,
                        help="draw batches from this many training clips encoded once (0: fresh scenes every step)")
    parser.add_argument("--video-batch", type=int, default=None, help="clips a video step (default: the recipe's)")
    parser.add_argument("--image-batch", type=int, default=None, help="frames an image step (default: the recipe's)")
    parser.add_argument("--video-every", type=int, default=None,
                        help="a video batch every this many steps, single frames between (default 2; 1: videos only)")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from this model folder's backbone and text encoder (a run continued under a new "
                             "recipe; its codec must be the run's)")
    parser.add_argument("--quick", action="store_true", help="a few steps on small batches (CI smoke run)")
    args = parser.parse_args()
    try:
        torch.empty(0, device=args.device)
    except (RuntimeError, AssertionError) as error:
        raise SystemExit(f"--device {args.device}: {str(error).splitlines()[0]}") from None
    if args.judge_every < 0:
        raise SystemExit(f"--judge-every {args.judge_every}: give a number of steps, or 0 for never")
    if args.workers < 0:
        raise SystemExit(f"--workers {args.workers}: give 0 or more worker processes")
    recipe = WIDE_RECIPE if args.wide else LONG_RECIPE if args.long else POSITION_RECIPE if args.positions else None
    cfg = PretrainConfig(**(recipe or {}), seed=args.seed)
    if args.quick:
        cfg = PretrainConfig(steps=min(args.steps or 20, 20), video_batch=2, image_batch=4, warmup=5, seed=args.seed)
    if not args.noise_shift > 0:
        raise SystemExit(f"--noise-shift {args.noise_shift}: the shift must be positive (1: the levels unchanged)")
    cfg = dataclasses.replace(cfg, max_objects=args.max_objects, noise_shift=args.noise_shift)
    if args.steps is not None and not args.quick:
        if not args.steps > cfg.warmup:
            raise SystemExit(f"--steps {args.steps}: a run must be longer than its {cfg.warmup} warm-up steps")
        cfg = dataclasses.replace(cfg, steps=args.steps)
    if args.preset is not None:
        try:
            backbone_preset(args.preset)
        except ValueError as error:
            raise SystemExit(f"--preset: {error}") from None
        cfg = dataclasses.replace(cfg, preset=args.preset)
    if args.lr is not None:
        if not args.lr > 0:
            raise SystemExit(f"--lr {args.lr}: the learning rate must be positive")
        cfg = dataclasses.replace(cfg, lr=args.lr, min_lr=min(cfg.min_lr, args.lr))
    if args.pool_clips < 0:
        raise SystemExit(f"--pool-clips {args.pool_clips}: give a number of clips, or 0 for fresh scenes")
    cfg = dataclasses.replace(cfg, pool_clips=args.pool_clips)
    for name in ("video_batch", "image_batch"):
        if getattr(args, name) is not None:
            if getattr(args, name) < 1:
                raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)}: give at least 1")
            cfg = dataclasses.replace(cfg, **{name: getattr(args, name)})
    if args.video_every is not None:
        if args.video_every < 1:
            raise SystemExit(f"--video-every {args.video_every}: give 1 (videos only) or more")
        cfg = dataclasses.replace(cfg, video_every=args.video_every)
    if args.init is not None:
        if not (args.init / BACKBONE_FILE).is_file():
            raise SystemExit(f"--init {args.init}: no {BACKBONE_FILE} there; give a ToyWorld model folder")
        cfg = dataclasses.replace(cfg, init=str(args.init))
    if args.codec is not None:
        try:
            use_codec(args.out, args.codec)
        except ValueError as error:
            raise SystemExit(f"--codec: {error}") from None
    cfg = dataclasses.replace(cfg, frames=on_codec_grid(cfg.frames, folder_codec(args.out)))  # 9 for Wan's groups
    torch.set_num_threads(2)
    try:
        summary = pretrain(cfg, args.out, minutes=args.minutes, save_every=args.save_every, workers=args.workers,
                           device=args.device, judge_every=args.judge_every)
    except ValueError as error:  # a run the options do not fit (--init's shape or codec, a resume's settings)
        raise SystemExit(str(error)) from None
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
