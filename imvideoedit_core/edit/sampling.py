"""Flow-matching sampling: one loop, with solvers, guidance, strength and step hooks as small pieces.

Convention (Wan 2.1, rectified flow): ``x_sigma = (1 - sigma) * x0 + sigma * noise``, the model predicts the
velocity ``v = noise - x0`` at timestep ``t = 1000 * sigma``, and a step moves ``x += (sigma_next - sigma) * v``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import torch

from .streams import CachePlacement, GateAverage, TwoStreamRunner, mean_over_blocks

Solver = Literal["euler", "heun"]
SOLVERS = ("euler", "heun")

# (x, sigma) -> velocity; x: (B, C, F, H, W), sigma: python float
VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]


class SamplingCancelled(RuntimeError):
    """Raised inside the loop when the cancel hook says so; nothing of the run is returned."""


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 30
    cfg: float = 5.0          # classifier-free guidance scale; 1 turns the unconditional pass off
    shift: float = 8.0        # timestep shift (Wan 2.1 T2V in ComfyUI: 8.0)
    seed: int = 0
    strength: float = 1.0     # 1: start from pure noise; s < 1: from the source noised to sigma = s
    solver: Solver = "euler"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.cfg < 1.0:
            raise ValueError(f"cfg must be >= 1 (1 disables guidance), got {self.cfg}")
        if self.shift <= 0:
            raise ValueError(f"shift must be positive (Wan 2.1 uses 8.0 for T2V), got {self.shift}")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1] (1 = regenerate fully), got {self.strength}")
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver {self.solver!r}; choose one of {SOLVERS}")


@dataclass
class StepInfo:
    """What the progress callback and the step hooks see after each step."""

    index: int                 # 0-based step number
    total: int
    sigma: float               # noise level at the start of the step
    sigma_next: float
    x: torch.Tensor            # the latent after the step
    denoised: torch.Tensor     # the step's prediction of the clean latent (for previews)


StepHook = Callable[[StepInfo], torch.Tensor]


# -- schedule --

def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * sigma / (1 + (shift - 1) * sigma)


def unshift_sigma(sigma: float, shift: float) -> float:
    return sigma / (shift - (shift - 1) * sigma)


def flow_sigmas(steps: int, *, shift: float, strength: float = 1.0) -> torch.Tensor:
    """``steps + 1`` shifted noise levels from ``strength`` down to 0 (float64)."""
    start = unshift_sigma(strength, shift)
    return shift_sigma(torch.linspace(start, 0.0, steps + 1, dtype=torch.float64), shift)


def seeded_noise(shape: Sequence[int], *, seed: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Gaussian noise drawn on the CPU from ``seed``, so a seed gives the same latent on every device."""
    gen = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)


def noised(clean: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    return (1 - sigma) * clean + sigma * noise


# -- solvers: (velocity_fn, x, sigma, sigma_next) -> (x_next, velocity at x) --

def euler_step(fn: VelocityFn, x: torch.Tensor, sigma: float, sigma_next: float):
    v = fn(x, sigma)
    return x + (sigma_next - sigma) * v, v


def heun_step(fn: VelocityFn, x: torch.Tensor, sigma: float, sigma_next: float):
    """Second order (trapezoidal); the last step, which lands on sigma = 0, is an Euler step."""
    x_euler, v = euler_step(fn, x, sigma, sigma_next)
    if sigma_next == 0:
        return x_euler, v
    v_next = fn(x_euler, sigma_next)
    return x + (sigma_next - sigma) * 0.5 * (v + v_next), v


_SOLVER_STEPS = {"euler": euler_step, "heun": heun_step}


def sample(fn: VelocityFn, x: torch.Tensor, sigmas: torch.Tensor, *, solver: Solver = "euler",
           step_hooks: Sequence[StepHook] = (), callback: Callable[[StepInfo], None] | None = None,
           cancel: Callable[[], bool] | None = None) -> torch.Tensor:
    """The sampling loop. ``step_hooks`` may rewrite the latent after each step (masks, blending)."""
    step = _SOLVER_STEPS[solver]
    total = len(sigmas) - 1
    for i in range(total):
        if cancel is not None and cancel():
            raise SamplingCancelled(f"sampling cancelled at step {i + 1} of {total}")
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x_next, v = step(fn, x, sigma, sigma_next)
        info = StepInfo(index=i, total=total, sigma=sigma, sigma_next=sigma_next, x=x_next,
                        denoised=x - sigma * v)
        for hook in step_hooks:
            info.x = hook(info)
        x = info.x
        if callback is not None:
            callback(info)
    return x


# -- known regions: keep part of the latent on a given clean latent, noised to the current level --

# (step index, total steps) -> keep weight, broadcastable to the latent; 1 = take the known latent, 0 = sampled
KeepSchedule = Callable[[int, int], torch.Tensor]


def blend_known(x: torch.Tensor, known: torch.Tensor, noise: torch.Tensor, keep: torch.Tensor,
                sigma: float) -> torch.Tensor:
    """``keep * noised(known, sigma) + (1 - keep) * x``: the known latent at the level x has reached."""
    return keep * noised(known, noise, sigma) + (1 - keep) * x


@dataclass
class KnownLatentHook:
    """A step hook that pulls the latent towards ``known`` where ``keep`` says so, after every step.

    ``keep`` is a fixed weight tensor, or a :data:`KeepSchedule` of the step (e.g. a mask boundary that narrows
    over the steps). The known latent is noised with the same ``noise`` the run started from, so kept and
    sampled regions stay at one noise level and, at the last step (sigma 0), kept regions equal ``known``.
    """

    known: torch.Tensor                       # (B, C, F, H, W) clean latent
    noise: torch.Tensor                       # (B, C, F, H, W) the run's initial noise
    keep: torch.Tensor | KeepSchedule         # broadcastable to (B, C, F, H, W), in [0, 1]

    def weight(self, index: int, total: int) -> torch.Tensor:
        return self.keep(index, total) if callable(self.keep) else self.keep

    def __call__(self, info: StepInfo) -> torch.Tensor:
        keep = self.weight(info.index, info.total).to(device=info.x.device, dtype=info.x.dtype)
        return blend_known(info.x, self.known, self.noise, keep, info.sigma_next)


# -- ImVideoEdit: guidance over the two-stream runner --

def pad_contexts(*contexts: torch.Tensor) -> torch.Tensor:
    """Stack (B, L_i, C) contexts along the batch, zero-padding to the longest (Wan pads text with zeros)."""
    length = max(c.shape[1] for c in contexts)
    padded = [torch.nn.functional.pad(c, (0, 0, 0, length - c.shape[1])) for c in contexts]
    return torch.cat(padded, dim=0)


@dataclass
class GateRecorder:
    """Averages the conditional branch's gate maps over blocks and steps."""

    batch: int
    average: GateAverage = field(default_factory=GateAverage)

    def add(self, gates: dict[int, torch.Tensor]) -> None:
        self.average.add(mean_over_blocks(gates)[: self.batch])  # (B, F, H, W): the conditional branch

    def result(self) -> torch.Tensor | None:
        return self.average.mean()


@dataclass
class EditResult:
    latent: torch.Tensor                # (B, C, F, H, W)
    gate: torch.Tensor | None = None    # (B, F', H', W') mean gate of the conditional branch, on request


@dataclass
class GuidanceBatch:
    """The contexts of one guided forward: conditional first, then (when guiding) unconditional."""

    contexts: torch.Tensor  # (branches*B, L, C)
    branches: int           # 2 with guidance, 1 without
    cfg: float

    @classmethod
    def build(cls, context: torch.Tensor, negative_context: torch.Tensor | None, cfg: float) -> "GuidanceBatch":
        if cfg == 1.0 or negative_context is None:
            return cls(contexts=context, branches=1, cfg=1.0)
        return cls(contexts=pad_contexts(context, negative_context), branches=2, cfg=cfg)

    def velocity(self, call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> VelocityFn:
        """Wrap ``call(x, t) -> v`` on the branch-batched latent into a guided (x, sigma) -> v."""
        def fn(x: torch.Tensor, sigma: float) -> torch.Tensor:
            xx = x.repeat(self.branches, 1, 1, 1, 1)
            v = call(xx, torch.full((xx.shape[0],), 1000.0 * sigma, device=x.device))
            if self.branches == 1:
                return v
            v_cond, v_uncond = v.chunk(2)
            return v_uncond + self.cfg * (v_cond - v_uncond)
        return fn


def guided_velocity(runner: TwoStreamRunner, source_latent: torch.Tensor, context: torch.Tensor,
                    negative_context: torch.Tensor | None, *, cfg: float, cache: CachePlacement,
                    recorder: GateRecorder | None, shared: torch.Tensor | None = None,
                    share_source: bool = False) -> VelocityFn:
    """The velocity function of an edit: conditional and unconditional branches batched in one forward.

    ``shared``: edited keyframes (B, C, K, H, W) whose adapter keys/values every frame also attends to.
    ``share_source``: encode the source once, with the instruction, for both branches (else once per branch,
    each with its own text).
    """
    batch = GuidanceBatch.build(context, negative_context, cfg)
    if share_source:
        source = runner.source(source_latent, context, placement=cache, shared=shared, branches=batch.branches)
    else:
        repeat = (lambda t: None if t is None else t.repeat(batch.branches, 1, 1, 1, 1))
        source = runner.source(repeat(source_latent), batch.contexts, placement=cache, shared=repeat(shared))

    def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = runner(x, t, batch.contexts, source, return_gates=recorder is not None)
        if recorder is not None:
            recorder.add(out.gates)
        return out.velocity

    return batch.velocity(call)


def backbone_velocity(backbone: torch.nn.Module, context: torch.Tensor, negative_context: torch.Tensor | None, *,
                      cfg: float) -> VelocityFn:
    """The plain backbone under guidance (no adapter): text-to-video, or degrade-then-regenerate from a source."""
    batch = GuidanceBatch.build(context, negative_context, cfg)
    return batch.velocity(lambda x, t: backbone(x, t, batch.contexts))


def sample_from(fn: VelocityFn, source_latent: torch.Tensor, config: SamplerConfig, *,
                noise: torch.Tensor | None = None, step_hooks: Sequence[StepHook] = (),
                callback: Callable[[StepInfo], None] | None = None,
                cancel: Callable[[], bool] | None = None, start: torch.Tensor | None = None) -> torch.Tensor:
    """Sample from ``source_latent`` noised to ``config.strength`` (pure noise at 1, the source itself at 0).

    ``noise`` (same shape) replaces the seeded noise, e.g. to give every frame of a per-frame edit the same noise.
    ``start`` (same shape) replaces the source as the clean latent that is noised, e.g. a degraded source.
    """
    if start is not None and start.shape != source_latent.shape:
        raise ValueError(f"start {tuple(start.shape)} must have the latent's shape {tuple(source_latent.shape)}")
    source_latent = source_latent if start is None else start
    if config.strength == 0.0:
        return source_latent.clone()
    if noise is None:
        noise = seeded_noise(source_latent.shape, seed=config.seed, device=source_latent.device,
                             dtype=source_latent.dtype)
    elif noise.shape != source_latent.shape:
        raise ValueError(f"noise {tuple(noise.shape)} must have the latent's shape {tuple(source_latent.shape)}")
    sigmas = flow_sigmas(config.steps, shift=config.shift, strength=config.strength)
    x = noised(source_latent, noise, config.strength)
    return sample(fn, x, sigmas, solver=config.solver, step_hooks=step_hooks, callback=callback, cancel=cancel)


@dataclass(frozen=True)
class SharedKeyframes:
    """Edit feature (long videos): already edited keyframes (B, C, K, H, W) whose adapter keys/values every frame
    also attends to."""

    latent: torch.Tensor


@dataclass(frozen=True)
class StartLatent:
    """Edit feature (Dreamix): the clean latent the sampler noises instead of the source, e.g. a degraded source;
    the source stream still sees the clean source."""

    latent: torch.Tensor


# What an edit request composes: a StepHook (masks, pinned frames: rewrites the latent after each step), shared
# keyframes, a start latent. Each feature adds one of these; the loop stays the same.
EditFeature = StepHook | SharedKeyframes | StartLatent


@dataclass
class EditRequest:
    """One edit: the source latent, the instruction, the sampler settings, and the features that shape it."""

    source: torch.Tensor                        # (B, C, F, H, W)
    context: torch.Tensor                       # (B, L, text_dim): the instruction
    negative_context: torch.Tensor | None       # (B, L', text_dim), or None: no guidance
    config: SamplerConfig
    features: Sequence[EditFeature] = ()
    cache: CachePlacement = "device"
    noise: torch.Tensor | None = None           # (B, C, F, H, W); default: seeded by config.seed
    return_gate: bool = False                   # also average the conditional branch's gate maps
    share_source: bool = False                  # one source encoding (with the instruction) for both branches

    def feature(self, kind: type) -> object | None:
        """The one feature of this kind, or None; two of a kind is an error."""
        found = [f for f in self.features if isinstance(f, kind)]
        if len(found) > 1:
            raise ValueError(f"an edit takes at most one {kind.__name__}, got {len(found)}")
        return found[0] if found else None

    def step_hooks(self) -> list[StepHook]:
        return [f for f in self.features if not isinstance(f, (SharedKeyframes, StartLatent))]


def edit_latent(runner: TwoStreamRunner, request: EditRequest, *, callback: Callable[[StepInfo], None] | None = None,
                cancel: Callable[[], bool] | None = None) -> EditResult:
    """Edit ``request.source`` following its instruction, with its features; the runner must be attached."""
    shared, start = request.feature(SharedKeyframes), request.feature(StartLatent)
    recorder = GateRecorder(batch=request.source.shape[0]) if request.return_gate else None
    fn = guided_velocity(runner, request.source, request.context, request.negative_context, cfg=request.config.cfg,
                         cache=request.cache, recorder=recorder, shared=shared.latent if shared else None,
                         share_source=request.share_source)
    latent = sample_from(fn, request.source, request.config, noise=request.noise, step_hooks=request.step_hooks(),
                         callback=callback, cancel=cancel, start=start.latent if start else None)
    return EditResult(latent=latent, gate=recorder.result() if recorder else None)
