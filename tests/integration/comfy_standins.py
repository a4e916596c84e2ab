"""Stand-ins for the Wan VAE and the umT5 text encoder, small enough for CPU tests (no pytest, no ComfyUI imports):
the in-process tests use them directly, and `comfy_standin_nodes/` serves them to a real ComfyUI server."""

from __future__ import annotations

import torch


class StandInVAE:
    """Wan-VAE-shaped stand-in: [T, H, W, 3] -> [1, 16, (T-1)//4+1, H/8, W/8] (frames 0, 4, 8, ...; 8x8 means)."""

    def __init__(self):
        self.mix = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        frames = pixels[::4, :, :, :3].movedim(-1, 1)                       # (F, 3, H, W)
        pooled = torch.nn.functional.avg_pool2d(frames, 8)                   # (F, 3, H/8, W/8)
        return torch.einsum("fchw,cd->dfhw", pooled, self.mix)[None]         # (1, 16, F, H/8, W/8)


class StandInCLIP:
    """Text -> a (1, 5, 32) context, deterministic per text (stands in for umT5)."""

    def tokenize(self, text: str) -> str:
        return text

    def encode_from_tokens_scheduled(self, tokens: str, show_pbar: bool = True) -> list:
        seed = sum(tokens.encode()) % 10_000
        return [[torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(seed)), {}]]


class StandInCodecVAE(StandInVAE):
    """The stand-in VAE plus a decoder: (1, 16, F, h, w) -> (1, 4(F-1)+1, 8h, 8w, 3) in 0..1."""

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        rgb = torch.einsum("bdfhw,dc->bfhwc", latent.float(), torch.linalg.pinv(self.mix))  # (1, F, h, w, 3)
        rgb = rgb.repeat_interleave(4, dim=1)[:, 3:]                                       # 4(F-1)+1 frames
        rgb = rgb.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
        return rgb.sigmoid()
