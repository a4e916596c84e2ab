"""Train ToyWorld's codec (``codec.ConvCodec``) and judge its reconstructions with the ToyWorld judge.

    python -m bench.toyworld.train_codec --out out/codec              # train (resumable), then judge
    python -m bench.toyworld.train_codec --out out/codec --judge-only  # judge the codec file in --out
    python -m bench.toyworld.train_codec --quick --out /tmp/codec      # a smoke run
    python -m bench.toyworld.train_codec --init DIR --decoder-only --lr 5e-4 --out out/codec-dec  # DIR's decoder on

A run can start from another codec's weights (``--init DIR``, the same widths and channels). With
``--decoder-only`` the encoder and the latent statistics stay exactly DIR's, so the latent space stays DIR's and
every backbone trained in it keeps working with the new codec file; only the decoder (which draws the pixels the
judge reads) trains on.

Frames come from training-split scenes of every background, style and object (``pretrain.training_scene``), drawn
from a pool rendered once per run (a function of the seed); every step takes a random batch of frames. The loss is
L1 + MSE of the decoded frames, decoded from latents with a little noise added (``LATENT_NOISE`` of each channel's
spread), so that the decoder forgives a latent that a diffusion model got nearly right. The run is resumable: the
training state is saved every ``--save-every`` steps and at the end. At the end the weights are rounded to
float16 (as shipped), the per-channel latent statistics are measured on training frames, and the codec file is
written beside the other ToyWorld models (``models.CODEC_FILE``).

The judgement (``judge_codec``): held-out scenes (evaluation-split seeds) reconstructed, scored by
``judge.generation_stats`` against the same statistics of the truth (present, shape, stability, background), and
held-out edit examples of every kind whose ground-truth targets are reconstructed and scored by ``judge_edit``
(adherence, temporal, fidelity, preservation; the truth scores 1 on each). Goals (issue 18): >= 0.98 on presence,
shape, colour and background, stability within 1.2x of the truth's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imvideoedit_core.train.trainer import load_train_state, save_train_state

from . import judge, world
from .codec import CausalCodec, CodecConfig, ConvCodec, build_codec
from .evaluate import EvalConfig, eval_examples
from .generation import _meets, _ratio, held_out_scenes
from .models import CODEC_FILE, load_codec, on_codec_grid, save_codec
from .pretrain import check_resumable, train_seed, training_scene

STATE_FILE = "codec.train-state.safetensors"
LOG_FILE = "codec_log.txt"
JUDGEMENT_FILE = "codec_judgement.json"
LATENT_NOISE = 0.05  # training noise on the latent, as a share of each channel's standard deviation
GOALS = {"present": 0.98, "shape": 0.98, "stability_vs_truth": 1.2,
         "edit_axes": 0.98}  # every judge_edit axis of the reconstructed targets, worst edit kind


@dataclass(frozen=True)
class CodecRun:
    steps: int = 6000
    batch: int = 32          # frames a step
    pool_scenes: int = 2000  # 8-frame training scenes rendered once (16 000 frames)
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup: int = 100
    seed: int = 0
    channels: int = CodecConfig.channels
    widths: tuple[int, ...] = CodecConfig.widths
    temporal_stride: int = 1     # > 1: a CausalCodec, trained on clips of 2k + 1 frames
    init: str = ""               # a folder whose codec file starts the run
    decoder_only: bool = False   # train the decoder alone: the encoder and latent statistics stay init's

    def __post_init__(self):
        if not 0 < self.lr:
            raise ValueError(f"--lr {self.lr}: the peak learning rate must be positive")
        if self.decoder_only and not self.init:
            raise ValueError("--decoder-only trains on another codec's decoder: give that codec's folder as --init")

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress))

    @property
    def codec_config(self) -> CodecConfig:
        return CodecConfig(channels=self.channels, widths=self.widths, temporal_stride=self.temporal_stride)

    @property
    def clip_frames(self) -> int:
        """Frames of each pooled training scene: 8, or 2k + 1 for a codec that groups k frames."""
        return 2 * self.temporal_stride + 1 if self.temporal_stride > 1 else 8

    @property
    def clips_a_step(self) -> int:
        """A causal codec's clips a step: about ``batch`` frames."""
        return max(1, math.ceil(self.batch / self.clip_frames))


def frame_pool(run: CodecRun) -> torch.Tensor:
    """(N, 3, H, W) training frames in 0..1, float16: ``pool_scenes`` scenes of 8 frames."""
    scenes = (training_scene(train_seed(run.seed + 7919, 0, i), frames=8) for i in range(run.pool_scenes))
    return torch.cat([world.render(s).frames.permute(0, 3, 1, 2).to(torch.float16) for s in scenes])


def clip_pool(run: CodecRun) -> torch.Tensor:
    """(S, T, 3, H, W) training clips in 0..1, float16: ``pool_scenes`` scenes of ``clip_frames`` frames."""
    scenes = (training_scene(train_seed(run.seed + 7919, 0, i), frames=run.clip_frames) for i in range(run.pool_scenes))
    return torch.stack([world.render(s).frames.permute(0, 3, 1, 2).to(torch.float16) for s in scenes])


def _noised_reconstruction_loss(z: torch.Tensor, decode, want: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Unnormalised latents z (channels in dim 1), noised by ``LATENT_NOISE`` of each channel's spread, decoded and
    compared with ``want`` in -1..1: L1 + MSE."""
    spread = z.detach().std(dim=[d for d in range(z.dim()) if d != 1], keepdim=True)
    out = decode(z + LATENT_NOISE * spread * torch.randn(z.shape, generator=gen))
    return F.l1_loss(out, want) + F.mse_loss(out, want)


def clip_loss(codec: CausalCodec, clips: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """clips (B, T, 3, H, W) in 0..1 -> ``codec_loss`` for a codec that groups frames."""
    return _noised_reconstruction_loss(codec.raw_encode(clips * 2 - 1), codec.raw_decode, clips * 2 - 1, gen)


def codec_loss(codec: ConvCodec, pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """pixels (N, 3, H, W) in 0..1 -> L1 + MSE of the reconstruction from a slightly noised latent."""
    return _noised_reconstruction_loss(codec.encoder(pixels * 2 - 1), codec.decoder, pixels * 2 - 1, gen)


def start_codec(run: CodecRun) -> ConvCodec | CausalCodec:
    """A fresh codec of the run's config, or the ``init`` folder's codec (which must have that config)."""
    torch.manual_seed(run.seed)
    if not run.init:
        return build_codec(run.codec_config)
    codec = load_codec(Path(run.init)).requires_grad_(True).train()
    if codec.config != run.codec_config:
        raise ValueError(f"--init {run.init}: its codec has channels {codec.channels}, widths "
                         f"{codec.config.widths} and temporal stride {codec.temporal_stride}, this run "
                         f"{run.channels}, {run.widths} and {run.temporal_stride}")
    for p in codec.encoder_parameters():
        p.requires_grad_(not run.decoder_only)
    return codec


def run_identity(run: CodecRun) -> dict:
    """What a resumed chunk must share with the run: its settings and the bytes of the codec it started from."""
    identity = {**asdict(run), "widths": list(run.widths)}
    if run.init:
        identity["init_sha256"] = hashlib.sha256((Path(run.init) / CODEC_FILE).read_bytes()).hexdigest()
    return identity


def train(run: CodecRun, out: Path, *, minutes: float = math.inf, save_every: int = 500,
          log_every: int = 100) -> ConvCodec | CausalCodec:
    """Train (or continue) the codec run in ``out`` for at most ``minutes``; at the last step the codec file is
    written (``finish``). Returns the codec as trained so far."""
    codec = start_codec(run)
    trained = [p for p in codec.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=run.lr, weight_decay=0.0)
    out.mkdir(parents=True, exist_ok=True)
    state, identity = out / STATE_FILE, run_identity(run)
    step = 0
    if state.is_file():
        check_resumable(state, identity)
        step = load_train_state(state, codec, optimizer, None)
    temporal = run.temporal_stride > 1
    pool = clip_pool(run) if temporal else frame_pool(run)  # (S, T, 3, H, W) clips or (N, 3, H, W) frames
    loss_of = clip_loss if temporal else codec_loss
    start, losses = time.perf_counter(), []
    with (out / LOG_FILE).open("a") as log:
        while step < run.steps and time.perf_counter() - start < 60 * minutes:
            for group in optimizer.param_groups:
                group["lr"] = run.lr_at(step)
            gen = torch.Generator().manual_seed(run.seed * 1_000_003 + step)
            pick = torch.randint(len(pool), (run.clips_a_step if temporal else run.batch,), generator=gen)
            loss = loss_of(codec, pool[pick].float(), gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if step % log_every == 0:
                print(f"step {step}: loss {np.mean(losses[-log_every:]):.4f} lr {run.lr_at(step - 1):.2e} "
                      f"({time.perf_counter() - start:.0f} s this chunk)", file=log, flush=True)
            if step % save_every == 0:
                save_train_state(state, codec, optimizer, None, step, identity)
    save_train_state(state, codec, optimizer, None, step, identity)  # the end of the run or of this chunk
    if step >= run.steps:
        finish(codec, pool, out, summary={"steps": step, "run": identity,
                                          "recent_loss": float(np.mean(losses[-200:])) if losses else None},
               measure_statistics=not run.decoder_only)
    return codec


@torch.no_grad()
def finish(codec: ConvCodec | CausalCodec, pool: torch.Tensor, out: Path, *, summary: dict,
           measure_statistics: bool = True) -> None:
    """Round the weights to float16 (as shipped), measure the latent statistics (unless the encoder's latent space
    is kept), write the codec file."""
    for p in codec.parameters():
        p.copy_(p.half().float())
    if not measure_statistics:
        save_codec(out, codec.eval(), summary=summary)
        return
    if isinstance(codec, CausalCodec):  # 512 clips of 2k + 1 frames, about as many frames as below
        sample = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(1))[:512]].float()
        codec.set_normalisation(torch.cat([codec.raw_encode(c * 2 - 1) for c in sample.split(64)]))
    else:
        sample = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(1))[:4096]].float()
        codec.set_normalisation(torch.cat([codec.encoder(c * 2 - 1) for c in sample.split(512)]))
    save_codec(out, codec.eval(), summary=summary)


def _reconstruct(codec, frames: torch.Tensor) -> torch.Tensor:
    return codec.decode(codec.encode(frames))


def judge_codec(codec, *, scenes: int = 64, edits_per_kind: int = 8, frames: int = 8) -> dict:
    """Reconstructions of held-out clips, judged as samples of their captions and as edits (see the docstring)."""
    recon, truth = judge.GenerationStats(), judge.GenerationStats()
    error = []
    for scene in held_out_scenes(scenes, frames=frames):
        reference = world.render(scene).frames
        video = _reconstruct(codec, reference)
        recon += judge.generation_stats(video, scene)
        truth += judge.generation_stats(reference, scene)
        error.append(float((video - reference).abs().mean()))
    generation = recon.scores()
    reference = truth.scores()
    generation["stability_vs_truth"] = _ratio(generation["stability"], reference["stability"])
    edits: dict[str, dict[str, float]] = {}
    for kind in world.EDIT_KINDS:
        cfg = EvalConfig(per_kind=edits_per_kind, frames=frames)
        scores = [judge.judge_edit(_reconstruct(codec, e.target_frames), e).as_dict()
                  for e in eval_examples(kind, cfg)]
        edits[kind] = {axis: float(np.mean([s[axis] for s in scores])) for axis in judge.EDIT_AXES}
    worst = {axis: min(e[axis] for e in edits.values()) for axis in judge.EDIT_AXES}
    return {"scenes": scenes, "edits_per_kind": edits_per_kind, "frames": frames,
            "reconstruction_mae": float(np.mean(error)), "generation": generation, "truth": reference,
            "edits": edits, "worst_edit_kind": worst,
            "goals_met": {"present": _meets(generation["present"], ">=", GOALS["present"]),
                          "shape": _meets(generation["shape"], ">=", GOALS["shape"]),
                          "stability_vs_truth": _meets(generation["stability_vs_truth"], "<=",
                                                       GOALS["stability_vs_truth"]),
                          "edit_axes": all(v >= GOALS["edit_axes"] for v in worst.values())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder of the run and of the codec file")
    parser.add_argument("--minutes", type=float, default=math.inf, help="stop this chunk after this long")
    parser.add_argument("--steps", type=int, default=CodecRun.steps)
    parser.add_argument("--lr", type=float, default=CodecRun.lr, help="peak learning rate (cosine to 1e-4)")
    parser.add_argument("--temporal-stride", type=int, default=1,
                        help="1: frames coded one by one; k > 1: frame 0 alone, then groups of k (Wan: 4)")
    parser.add_argument("--channels", type=int, default=CodecRun.channels, help="latent channels")
    parser.add_argument("--init", type=Path, default=None, help="start from the codec file in this folder")
    parser.add_argument("--decoder-only", action="store_true",
                        help="train --init's decoder alone; its encoder and latent space stay as they are")
    parser.add_argument("--judge-only", action="store_true", help="judge the codec file in --out")
    parser.add_argument("--quick", action="store_true", help="a few steps on a small pool, a small judgement")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: train at least one step")
    if args.init is not None and not (args.init / CODEC_FILE).is_file():
        parser.error(f"--init {args.init}: no {CODEC_FILE} there; give the folder of a trained codec")
    if args.init is not None and args.init.resolve() == args.out.resolve():
        parser.error(f"--out {args.out} is the --init folder: write the new codec to another folder")
    torch.set_num_threads(2)
    try:
        settings = dict(init=str(args.init or ""), decoder_only=args.decoder_only, lr=args.lr,
                        temporal_stride=args.temporal_stride, channels=args.channels)
        if args.init is not None:  # the run takes the shape of the codec it continues
            config = load_codec(args.init).config
            settings.update(channels=config.channels, widths=config.widths, temporal_stride=config.temporal_stride)
        CodecConfig(channels=settings["channels"], temporal_stride=settings["temporal_stride"])  # names a bad one
        run = CodecRun(steps=args.steps, **settings)
        if args.quick:
            run = replace(run, steps=min(args.steps, 5), batch=4, pool_scenes=4, warmup=2)
    except ValueError as error:
        parser.error(str(error))
    if not args.judge_only:
        train(run, args.out, minutes=args.minutes)
    if not (args.out / CODEC_FILE).is_file():
        if args.judge_only:
            parser.error(f"--judge-only: no {CODEC_FILE} in {args.out}; give the folder of a finished codec run")
        print(f"the run in {args.out} has not finished: run the same command again to continue it")
        return
    codec = load_codec(args.out)
    frames = on_codec_grid(8, codec)  # the judge's 8-frame clips, 9 for a codec that groups 4 frames
    judgement = judge_codec(codec, frames=frames, **(dict(scenes=2, edits_per_kind=1) if args.quick else {}))
    (args.out / JUDGEMENT_FILE).write_text(json.dumps(judgement, indent=1) + "\n")
    print(json.dumps(judgement, indent=1))


if __name__ == "__main__":
    main()
