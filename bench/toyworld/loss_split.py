"""Where a ToyWorld backbone's denoising error lies: in each token's mean colour, or in the detail inside it.

    python -m bench.toyworld.loss_split --models DIR [DIR ...]    # seconds per backbone on 2 cores

Held-out 8-frame clips (the generation judge's captions) are noised to each level and denoised in one step with the
caption (x0 = x - sigma * velocity, no guidance). The squared pixel error of that estimate splits exactly into two
orthogonal parts: the error of every token's mean colour (a token covers the codec's stride times the backbone's
2x2 patch: 4x4 pixels on the pixel codec, 8x8 on the learned one), which a blur of the right colour already gets
right, and the error of the detail around each token's mean, where an object's edge decides its shape. Nothing is
written.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from imvideoedit_core.edit.sampling import noised, seeded_noise

from . import world
from .generation import held_out_scenes
from .models import load_models

SIGMAS = (0.2, 0.4, 0.7)


@dataclass(frozen=True)
class ErrorSplit:
    """Mean squared pixel error (0..1 pixels) and its two parts; ``token_mean + detail == total``."""

    total: float
    token_mean: float
    detail: float


def split_error(estimate: torch.Tensor, truth: torch.Tensor, *, block: int) -> ErrorSplit:
    """Split the squared error of ``estimate`` against ``truth`` ([..., H, W, 3]) into its per-block mean and the
    rest; H and W must be multiples of ``block``."""
    if estimate.shape != truth.shape:
        raise ValueError(f"estimate {tuple(estimate.shape)} and truth {tuple(truth.shape)} differ in shape")
    h, w = truth.shape[-3:-1]
    if h % block or w % block:
        raise ValueError(f"frames of {h}x{w} px do not tile into {block}x{block} blocks")
    diff = (estimate - truth).reshape(-1, h, w, truth.shape[-1]).permute(0, 3, 1, 2).double()  # (N, 3, H, W)
    means = F.interpolate(F.avg_pool2d(diff, block), scale_factor=block, mode="nearest")        # (N, 3, H, W)
    return ErrorSplit(total=diff.square().mean().item(), token_mean=means.square().mean().item(),
                      detail=(diff - means).square().mean().item())


def measure(models_dir: Path, *, count: int = 32, sigmas: tuple[float, ...] = SIGMAS, seed: int = 0) -> dict:
    models = load_models(models_dir)
    scenes = held_out_scenes(count, frames=8)
    truths = torch.stack([world.render(s).frames for s in scenes])                 # (B, 8, 32, 32, 3)
    latents = torch.cat([models.codec.encode(t) for t in truths])                 # (B, C, 8, h, w)
    context = models.text_encoder([world.caption(s) for s in scenes])
    token_pixels = models.codec.spatial_stride * models.backbone.config.patch_size[-1]  # a token's side, px
    result = {}
    for sigma in sigmas:
        x = noised(latents, seeded_noise(latents.shape, seed=seed), sigma)
        with torch.no_grad():
            velocity = models.backbone(x, torch.full((count,), 1000.0 * sigma), context)
        estimate = torch.stack([models.codec.decode(x0[None]) for x0 in x - sigma * velocity])
        result[f"{sigma:g}"] = asdict(split_error(estimate, truths, block=token_pixels))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, nargs="+", required=True, help="ToyWorld model folders")
    parser.add_argument("--count", type=int, default=32, help="held-out clips")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(json.dumps({str(folder): measure(folder, count=args.count) for folder in args.models}, indent=1))


if __name__ == "__main__":
    main()
