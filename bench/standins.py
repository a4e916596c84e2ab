"""Small, weight-free stand-ins for the Wan VAE and the umT5 text encoder.

They let the core train and edit end to end without downloaded weights (tests, the demo, ToyWorld). ComfyUI
hosts use the real VAE and text encoder instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class PatchCodec:
    """An exactly invertible stand-in for a VAE: space-to-depth on ``patch`` x ``patch`` pixel blocks.

    RGB frames [T, H, W, 3] in 0..1 become a latent (1, channels, T, H/patch, W/patch) in -1..1: the 3*patch^2
    pixel values of a block, then zero channels up to ``channels``. One frame maps to one latent frame, as the
    Wan VAE maps one image to one latent frame.
    """

    def __init__(self, channels: int = 16, patch: int = 2):
        if 3 * patch * patch > channels:
            raise ValueError(f"{channels} latent channels cannot hold {patch}x{patch} RGB blocks "
                             f"({3 * patch * patch} values): use a smaller patch or more channels")
        self.channels = channels
        self.patch = patch

    temporal_stride = 1  # one frame, one latent frame

    @property
    def spatial_stride(self) -> int:
        return self.patch

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [T, H, W, 3] in 0..1 -> latent (1, C, T, H/p, W/p)."""
        t, h, w, _ = frames.shape
        if h % self.patch or w % self.patch:
            raise ValueError(f"frame size {h}x{w} is not a multiple of the codec patch {self.patch}")
        x = F.pixel_unshuffle(frames.permute(0, 3, 1, 2) * 2 - 1, self.patch)  # (T, 3p^2, H/p, W/p)
        x = F.pad(x, (0, 0, 0, 0, 0, self.channels - x.shape[1]))             # (T, C, H/p, W/p)
        return x.permute(1, 0, 2, 3).unsqueeze(0)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (1, C, T, h, w) -> frames [T, h*p, w*p, 3] in 0..1 (clamped)."""
        x = latent[0, : 3 * self.patch**2].permute(1, 0, 2, 3)                # (T, 3p^2, h, w)
        frames = F.pixel_shuffle(x, self.patch).permute(0, 2, 3, 1)          # (T, H, W, 3)
        return ((frames + 1) / 2).clamp(0, 1)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of images (B, 3, H, W) in 0..1 as one-frame videos: (B, C, 1, H/p, W/p)."""
        return torch.cat([self.encode(img.permute(1, 2, 0)[None]) for img in images], dim=0)


class ByteTextEncoder(nn.Module):
    """Text -> (B, max_len, text_dim): UTF-8 bytes through an embedding table plus sinusoidal positions.

    Deterministic for a seed; trainable if wanted (ToyWorld pretrains one). Padding positions are zero, as
    Wan pads umT5 outputs with zeros.
    """

    def __init__(self, text_dim: int, *, max_len: int = 32, seed: int = 0):
        super().__init__()
        self.max_len = max_len
        self.embed = nn.Embedding(256, text_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nn.init.normal_(self.embed.weight, std=1.0)
        half = text_dim // 2
        pos = torch.arange(max_len, dtype=torch.float32)[:, None] / 10000 ** (torch.arange(half) / half)
        self.register_buffer("positions", torch.cat([pos.sin(), pos.cos()], dim=1) / math.sqrt(2), persistent=False)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        mask = torch.zeros(len(texts), self.max_len, dtype=torch.bool)
        for row, text in enumerate(texts):
            data = list(text.encode("utf-8"))[: self.max_len]
            ids[row, : len(data)] = torch.tensor(data, dtype=torch.long)
            mask[row, : len(data)] = True
        return ids, mask

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids, mask = self.tokenize(texts)
        ids, mask = ids.to(self.embed.weight.device), mask.to(self.embed.weight.device)
        x = self.embed(ids) + self.positions[: self.max_len].to(self.embed.weight.dtype)  # (B, L, text_dim)
        return x * mask[..., None]


class WordTextEncoder(nn.Module):
    """A small trainable text encoder over a fixed word list (for closed worlds such as ToyWorld).

    Words (lower case, split on anything that is not a letter) -> embeddings + learned positions -> one residual
    1D convolution over neighbouring words (so "red circle" binds colour to shape) -> (B, max_len, text_dim), zero
    at padding. Unknown words map to ``<unk>``. The vocabulary travels with the weights (``config()``).
    """

    PAD, UNK = 0, 1

    def __init__(self, vocab: list[str], text_dim: int, *, max_len: int = 24):
        super().__init__()
        self.vocab = list(vocab)
        self.max_len = max_len
        self.index = {word: i + 2 for i, word in enumerate(self.vocab)}
        self.embed = nn.Embedding(len(self.vocab) + 2, text_dim)
        self.positions = nn.Parameter(torch.randn(max_len, text_dim) * 0.02)
        self.mix = nn.Conv1d(text_dim, text_dim, kernel_size=3, padding=1)
        self.out = nn.Linear(text_dim, text_dim)

    def config(self) -> dict:
        return {"vocab": self.vocab, "text_dim": self.embed.embedding_dim, "max_len": self.max_len}

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        ids = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for row, text in enumerate(texts):
            words = [w for w in "".join(c if c.isalpha() else " " for c in text.lower()).split()][: self.max_len]
            ids[row, : len(words)] = torch.tensor([self.index.get(w, self.UNK) for w in words], dtype=torch.long)
        return ids

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenize(texts).to(self.embed.weight.device)
        mask = (ids != self.PAD)[..., None].to(self.embed.weight.dtype)  # (B, L, 1)
        x = (self.embed(ids) + self.positions) * mask                       # (B, L, D)
        x = x + self.out(F.gelu(self.mix(x.transpose(1, 2)).transpose(1, 2)))
        return x * mask
