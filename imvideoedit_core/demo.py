"""The whole pipeline on a CPU in seconds: image pairs -> train an adapter -> save/load -> edit a clip -> mp4.

    python -m imvideoedit_core.demo --out out/demo

The backbone is the ``tiny`` preset with seeded random weights (no real Wan weights can be downloaded here), so
the output shows that every stage runs and how the pieces connect, not edit quality; the stand-ins replace the
Wan VAE (exact space-to-depth) and the umT5 text encoder (byte embeddings).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from .adapter import build_adapter
from .adapter_file import load_adapter
from .backbone import build_backbone
from .config import adapter_preset, backbone_preset
from .metrics import evaluate_edit, psnr
from .pairs import PairDataset
from .sampling import SamplerConfig, edit_latent
from .standins import ByteTextEncoder, PatchCodec
from .streams import TwoStreamRunner
from .training import EncodedPairs, TrainConfig, train_adapter
from .video_io import write_video

INSTRUCTION = "make the square red"
BACKGROUND = (0.10, 0.15, 0.35)
GREY, RED = (0.6, 0.6, 0.6), (0.9, 0.1, 0.1)


def square_frame(size: int, *, x: int, y: int, side: int, colour) -> np.ndarray:
    """One RGB frame [size, size, 3] in 0..1: a square of ``colour`` on the background."""
    frame = np.empty((size, size, 3), np.float32)
    frame[:] = BACKGROUND
    frame[y:y + side, x:x + side] = colour
    return frame


def source_clip(*, frames: int, size: int) -> torch.Tensor:
    """A grey square moving right: [T, size, size, 3]."""
    side = size // 4
    return torch.from_numpy(np.stack([square_frame(size, x=2 + 2 * t, y=size // 3, side=side, colour=GREY)
                                      for t in range(frames)]))


def write_pairs(folder: Path, *, count: int, size: int, seed: int) -> None:
    """Image pairs in the loader's folder layout: NAME_src.png, NAME_tgt.png, NAME.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        side = int(rng.integers(size // 6, size // 3))
        x, y = (int(v) for v in rng.integers(0, size - side, size=2))
        for role, colour in (("src", GREY), ("tgt", RED)):
            rgb = square_frame(size, x=x, y=y, side=side, colour=colour)
            cv2.imwrite(str(folder / f"pair{i:03d}_{role}.png"), (rgb[..., ::-1] * 255).round().astype(np.uint8))
        (folder / f"pair{i:03d}.txt").write_text(INSTRUCTION + "\n", encoding="utf-8")


def tiny_backbone(seed: int):
    """The tiny preset with a random (non-zero) head: Wan's zero-initialised head would predict nothing."""
    model = build_backbone(backbone_preset("tiny"), seed=seed)
    with torch.no_grad():
        model.head.head.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(seed))
    return model.requires_grad_(False).eval()


def run(out: Path, *, train_steps: int, steps: int, strength: float, seed: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    size, codec = 64, PatchCodec(channels=16, patch=2)
    encoder = ByteTextEncoder(backbone_preset("tiny").text_dim, max_len=32, seed=seed)
    backbone = tiny_backbone(seed)

    write_pairs(out / "pairs", count=32, size=size, seed=seed)
    data = EncodedPairs(PairDataset.from_path(out / "pairs"), encode_images=codec.encode_images,
                        encode_text=encoder, batch_size=4, seed=seed)
    runner = TwoStreamRunner(backbone, build_adapter(adapter_preset("tiny"), backbone.config, seed=seed))
    trained = train_adapter(runner, data, TrainConfig(steps=train_steps, batch_size=4, lr=1e-2, seed=seed),
                            out_path=out / "adapter.safetensors", info={"data": "demo pairs"},
                            callback=lambda p: p.step % 50 == 0 and print(f"train step {p.step}: loss {p.loss:.3f}"))

    adapter = load_adapter(out / "adapter.safetensors", backbone=backbone.config)
    clip = source_clip(frames=9, size=size)
    with TwoStreamRunner(backbone, adapter) as editor, torch.no_grad():
        result = edit_latent(editor, codec.encode(clip), context=encoder([INSTRUCTION]),
                             negative_context=encoder([""]), return_gate=True,
                             config=SamplerConfig(steps=steps, cfg=3.0, shift=3.0, strength=strength, seed=seed))
    edited = codec.decode(result.latent)
    video = write_video(out / "edited.mp4", edited, fps=8)
    side_by_side = torch.cat([clip, edited], dim=2)  # [T, H, 2W, 3]
    write_video(out / "side_by_side.mp4", side_by_side, fps=8)
    metrics = evaluate_edit(edited, clip)
    return {"out": str(out / "edited.mp4"), "codec": video.codec, "frames": int(edited.shape[0]),
            "train_loss_first": trained.losses[0], "train_loss_last": trained.losses[-1],
            "psnr_vs_source": psnr(edited, clip), "warp_error": metrics.warp_error,
            "warp_error_source": metrics.warp_error_source, "flicker": metrics.flicker,
            "mean_gate": float(result.gate.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    parser.add_argument("--train-steps", type=int, default=100, help="adapter training steps")
    parser.add_argument("--steps", type=int, default=8, help="sampling steps")
    parser.add_argument("--strength", type=float, default=0.6, help="1 = from noise, <1 = from the noised source")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    start = time.perf_counter()
    summary = run(args.out, train_steps=args.train_steps, steps=args.steps, strength=args.strength, seed=args.seed)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    print("note: tiny random backbone (no Wan weights here): this shows the pipeline, not edit quality")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
