"""Stand-ins for the Wan VAE and the umT5 text encoder, small enough for CPU tests (no pytest, no ComfyUI imports):
the in-process tests use them directly, and `comfy_standin_nodes/` serves them to a real ComfyUI server."""

from __future__ import annotations

import torch


class StandInVAE:
    """Wan-VAE-shaped stand-in: [T, H, W, 3] -> [1, C, (T-1)//4+1, H/s, W/s] (frames 0, 4, 8, ...; sxs means).
    C, s = 16, 8 as the Wan 2.1 VAE (default) or 48, 16 as the Wan 2.2 VAE; it reports its stride as ComfyUI's
    VAE does."""

    def __init__(self, channels: int = 16, stride: int = 8):
        self.mix = torch.randn(3, channels, generator=torch.Generator().manual_seed(0))
        self.stride = stride
        self.latent_channels = channels

    def spacial_compression_encode(self) -> int:
        return self.stride

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        frames = pixels[::4, :, :, :3].movedim(-1, 1)                       # (F, 3, H, W)
        pooled = torch.nn.functional.avg_pool2d(frames, self.stride)         # (F, 3, H/s, W/s)
        return torch.einsum("fchw,cd->dfhw", pooled, self.mix)[None]         # (1, C, F, H/s, W/s)


class StandInCLIP:
    """Text -> a (1, 5, dim) context, deterministic per text (stands in for umT5, whose dim is 4096)."""

    def __init__(self, dim: int = 32):
        self.dim = dim

    def tokenize(self, text: str) -> str:
        return text

    def encode_from_tokens_scheduled(self, tokens: str, show_pbar: bool = True) -> list:
        seed = sum(tokens.encode()) % 10_000
        return [[torch.randn(1, 5, self.dim, generator=torch.Generator().manual_seed(seed)), {}]]


class StandInCodecVAE(StandInVAE):
    """The stand-in VAE plus a decoder: (1, C, F, h, w) -> (1, 4(F-1)+1, sh, sw, 3) in 0..1."""

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        rgb = torch.einsum("bdfhw,dc->bfhwc", latent.float(), torch.linalg.pinv(self.mix))  # (1, F, h, w, 3)
        rgb = rgb.repeat_interleave(4, dim=1)[:, 3:]                                       # 4(F-1)+1 frames
        rgb = rgb.repeat_interleave(self.stride, dim=2).repeat_interleave(self.stride, dim=3)
        return rgb.sigmoid()


def ffn_lora(cfg, *, scale: float, rank: int = 4, seed: int = 9) -> dict[str, torch.Tensor]:
    """A random LoRA on every block's FFN input projection, in ComfyUI's generic key format, for a backbone
    config ``cfg`` (num_layers, dim, ffn_dim)."""
    gen = torch.Generator().manual_seed(seed)
    lora = {}
    for i in range(cfg.num_layers):
        key = f"diffusion_model.blocks.{i}.ffn.0"
        lora[f"{key}.lora_up.weight"] = torch.randn(cfg.ffn_dim, rank, generator=gen) * scale
        lora[f"{key}.lora_down.weight"] = torch.randn(rank, cfg.dim, generator=gen) * scale
    return lora
