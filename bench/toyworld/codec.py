"""ToyWorld's learned video codec: a small convolutional autoencoder that stands in for Wan's VAE.

Wan's DiT never draws pixels: its VAE compresses 8x in space, and its decoder draws the edges. ToyWorld's
``PatchCodec`` is an exact 2x2 space-to-depth, so the toy DiT had to draw every edge itself (issue 9: 85-90% of its
denoising error was detail inside tokens). ``ConvCodec`` takes that burden off the DiT:

    frames [T, H, W, 3] in 0..1 --encoder--> latent (1, C, T, H/s, W/s) --decoder--> frames [T, H, W, 3]

with ``s = spatial_stride`` (2 per entry of ``widths`` after the first). Frames are coded one by one (temporal
stride 1), so an image is a one-frame video exactly as in Wan, and a clip of any length is a latent of as many
frames. The encoder is deterministic (no sampling); the latent is normalised per channel with the training
latents' mean and standard deviation (as ComfyUI's Wan latent format does), so the backbone sees unit-scale
channels. The interface is ``PatchCodec``'s: ``encode``, ``decode``, ``encode_images``, ``channels``,
``spatial_stride``, ``temporal_stride``.

``CausalCodec`` (``temporal_stride`` k > 1: issue 18's measurement of Wan's layout in time) codes frame 0 alone and
then each group of k frames into one latent frame, as Wan's VAE does (k = 4 there): a clip of k*n + 1 frames is a
latent of n + 1 frames, and an image is still a one-frame video, coded exactly as a clip's first frame. Each
latent frame depends on its own frames only (causal); the decoder draws a group's k frames from its latent frame.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class CodecConfig:
    channels: int = 16                    # latent channels (the backbone's in_dim)
    widths: tuple[int, ...] = (32, 48, 64)  # feature widths, full resolution first; each later one halves the size
    temporal_stride: int = 1              # 1: frames coded one by one; k > 1: frame 0 alone, then groups of k

    def __post_init__(self):
        if self.channels < 1 or not self.widths or min(self.widths) < 1:
            raise ValueError(f"a codec needs positive channels and widths, got {self.channels} and {self.widths}")
        if self.temporal_stride < 1:
            raise ValueError(f"temporal_stride {self.temporal_stride}: give 1 (frame by frame) or a group size k > 1")

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.widths) - 1)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "CodecConfig":
        data = json.loads(text)
        return cls(channels=int(data["channels"]), widths=tuple(int(w) for w in data["widths"]),
                   temporal_stride=int(data.get("temporal_stride", 1)))  # files from before the field: 1


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class Encoder(nn.Module):
    """(N, 3, H, W) in -1..1 -> (N, C, H/s, W/s)."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        w = cfg.widths
        layers: list[nn.Module] = [nn.Conv2d(3, w[0], 3, padding=1), ResBlock(w[0])]
        for a, b in zip(w, w[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), ResBlock(b)]
        layers += [nn.SiLU(), nn.Conv2d(w[-1], cfg.channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(N, C, h, w) -> (N, 3, h*s, w*s), unclamped, about -1..1."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        w = cfg.widths[::-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.channels, w[0], 3, padding=1), ResBlock(w[0])]
        for a, b in zip(w, w[1:]):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, padding=1), ResBlock(b)]
        layers += [nn.SiLU(), nn.Conv2d(w[-1], 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class _LearnedCodec(nn.Module):
    """What both learned codecs share: the config, its strides and the per-channel latent statistics."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.config = cfg
        # per-channel statistics of the training latents; identity until ``set_normalisation``
        self.register_buffer("latent_mean", torch.zeros(cfg.channels))
        self.register_buffer("latent_std", torch.ones(cfg.channels))

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def spatial_stride(self) -> int:
        return self.config.spatial_stride

    @property
    def temporal_stride(self) -> int:
        return self.config.temporal_stride


class ConvCodec(_LearnedCodec):
    """Encoder, decoder and the per-channel latent statistics; ``encode``/``decode`` are PatchCodec's interface."""

    def __init__(self, cfg: CodecConfig = CodecConfig()):
        if cfg.temporal_stride != 1:
            raise ValueError("ConvCodec codes frames one by one: a temporal_stride above 1 is CausalCodec's")
        super().__init__(cfg)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encoder_parameters(self):
        """What makes the latent space (a decoder-only run keeps these)."""
        return self.encoder.parameters()

    def _scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latent_mean.view(1, -1, 1, 1), self.latent_std.view(1, -1, 1, 1)

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in 0..1 -> normalised latents (N, C, H/s, W/s)."""
        _, _, h, w = pixels.shape
        if h % self.spatial_stride or w % self.spatial_stride:
            raise ValueError(f"frame size {h}x{w} is not a multiple of the codec's stride {self.spatial_stride}")
        mean, std = self._scale()
        return (self.encoder(pixels * 2 - 1) - mean) / std

    def decode_frames(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (N, C, h, w) -> (N, 3, h*s, w*s) in -1..1, unclamped (what training compares)."""
        mean, std = self._scale()
        return self.decoder(latents * std + mean)

    @torch.no_grad()
    def set_normalisation(self, latents: torch.Tensor) -> None:
        """Unnormalised latents (N, C, h, w) of training frames -> per-channel mean and std."""
        self.latent_mean.copy_(latents.mean(dim=(0, 2, 3)))
        self.latent_std.copy_(latents.std(dim=(0, 2, 3)).clamp_min(1e-4))

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [T, H, W, 3] in 0..1 -> latent (1, C, T, H/s, W/s)."""
        z = self.encode_frames(frames.permute(0, 3, 1, 2).to(self.latent_mean.dtype))  # (T, C, h, w)
        return z.permute(1, 0, 2, 3).unsqueeze(0)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (1, C, T, h, w) -> frames [T, H, W, 3] in 0..1 (clamped)."""
        z = latent[0].permute(1, 0, 2, 3).to(self.latent_mean.dtype)                     # (T, C, h, w)
        return ((self.decode_frames(z) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of images (B, 3, H, W) in 0..1 as one-frame videos: (B, C, 1, H/s, W/s)."""
        return self.encode_frames(images.to(self.latent_mean.dtype)).unsqueeze(2)


class CausalCodec(_LearnedCodec):
    """Frame 0 alone, then groups of k frames, each one latent frame (see the module docstring). A per-frame
    convolutional encoder and decoder (``Encoder``/``Decoder`` at the last width) do the space; 3x3 convolutions
    merge a group's k feature maps into one latent frame and split it back."""

    def __init__(self, cfg: CodecConfig):
        if cfg.temporal_stride < 2:
            raise ValueError("CausalCodec groups frames: give a temporal_stride of 2 or more (1 is ConvCodec)")
        super().__init__(cfg)
        k, width = cfg.temporal_stride, cfg.widths[-1]
        features = CodecConfig(channels=width, widths=cfg.widths)
        self.frame_encoder, self.frame_decoder = Encoder(features), Decoder(features)
        self.first_in = nn.Conv2d(width, cfg.channels, 3, padding=1)
        self.group_in = nn.Conv2d(k * width, cfg.channels, 3, padding=1)
        self.first_out = nn.Conv2d(cfg.channels, width, 3, padding=1)
        self.group_out = nn.Conv2d(cfg.channels, k * width, 3, padding=1)

    def encoder_parameters(self):
        """What makes the latent space (a decoder-only run keeps these)."""
        return [p for m in (self.frame_encoder, self.first_in, self.group_in) for p in m.parameters()]

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a clip of ``frames`` frames; a length off the k*n + 1 grid is named."""
        k = self.temporal_stride
        if frames < 1 or (frames - 1) % k:
            raise ValueError(f"{frames} frames: this codec takes {k}n + 1 frames (1, {k + 1}, {2 * k + 1}, ...)")
        return (frames - 1) // k + 1

    def raw_encode(self, clips: torch.Tensor) -> torch.Tensor:
        """clips (B, T, 3, H, W) in -1..1 -> unnormalised latents (B, C, L, h, w), L = (T - 1) / k + 1."""
        b, t, _, h, w = clips.shape
        if h % self.spatial_stride or w % self.spatial_stride:
            raise ValueError(f"frame size {h}x{w} is not a multiple of the codec's stride {self.spatial_stride}")
        n = self.latent_frames(t) - 1
        f = self.frame_encoder(clips.flatten(0, 1)).unflatten(0, (b, t))                 # (B, T, E, h, w)
        latents = [self.first_in(f[:, 0])[:, :, None]]                                    # (B, C, 1, h, w)
        if n:
            groups = f[:, 1:].unflatten(1, (n, self.temporal_stride)).flatten(2, 3)      # (B, n, k*E, h, w)
            latents.append(self.group_in(groups.flatten(0, 1)).unflatten(0, (b, n)).transpose(1, 2))
        return torch.cat(latents, dim=2)

    def raw_decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unnormalised latents (B, C, L, h, w) -> clips (B, (L-1)*k + 1, 3, H, W) in about -1..1, unclamped."""
        b, _, frames, _, _ = z.shape
        features = [self.first_out(z[:, :, 0])[:, None]]                                  # (B, 1, E, h, w)
        if frames > 1:
            groups = self.group_out(z[:, :, 1:].transpose(1, 2).flatten(0, 1))           # (B*n, k*E, h, w)
            groups = groups.unflatten(1, (self.temporal_stride, -1))                      # (B*n, k, E, h, w)
            features.append(groups.unflatten(0, (b, frames - 1)).flatten(1, 2))          # (B, n*k, E, h, w)
        f = torch.cat(features, dim=1)
        return self.frame_decoder(f.flatten(0, 1)).unflatten(0, (b, f.shape[1]))

    def _scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latent_mean.view(1, -1, 1, 1, 1), self.latent_std.view(1, -1, 1, 1, 1)

    @torch.no_grad()
    def set_normalisation(self, latents: torch.Tensor) -> None:
        """Unnormalised latents (B, C, L, h, w) of training clips -> per-channel mean and std."""
        self.latent_mean.copy_(latents.mean(dim=(0, 2, 3, 4)))
        self.latent_std.copy_(latents.std(dim=(0, 2, 3, 4)).clamp_min(1e-4))

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [T, H, W, 3] in 0..1, T = k*n + 1 -> latent (1, C, n + 1, H/s, W/s)."""
        mean, std = self._scale()
        clips = frames.permute(0, 3, 1, 2).to(self.latent_mean.dtype)[None] * 2 - 1     # (1, T, 3, H, W)
        return (self.raw_encode(clips) - mean) / std

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (1, C, L, h, w) -> frames [(L - 1) * k + 1, H, W, 3] in 0..1 (clamped)."""
        mean, std = self._scale()
        clips = self.raw_decode(latent.to(self.latent_mean.dtype) * std + mean)
        return ((clips[0] + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of images (B, 3, H, W) in 0..1 as one-frame videos: (B, C, 1, H/s, W/s)."""
        mean, std = self._scale()
        return (self.raw_encode(images.to(self.latent_mean.dtype)[:, None] * 2 - 1) - mean) / std


def build_codec(cfg: CodecConfig) -> ConvCodec | CausalCodec:
    """The codec class for ``cfg``: frame by frame (``ConvCodec``) or causal groups (``CausalCodec``)."""
    return CausalCodec(cfg) if cfg.temporal_stride > 1 else ConvCodec(cfg)
