"""Frozen configuration dataclasses and named presets for the backbone and the adapter.

Configs travel with the weights: ``to_json``/``from_json`` round-trip them through safetensors metadata, so a
file always says what it is instead of being identified by its keys.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

WAN21_FAMILY = "wan2.1-t2v"
WAN22_TI2V_FAMILY = "wan2.2-ti2v"      # Wan 2.2 TI2V 5B: 48 latent channels, the Wan 2.2 VAE
WAN22_A14B_FAMILY = "wan2.2-t2v-a14b"  # Wan 2.2 T2V A14B: two 14B-sized experts, the Wan 2.1 VAE
FAMILIES = (WAN21_FAMILY, WAN22_TI2V_FAMILY, WAN22_A14B_FAMILY)
FAMILY_NAMES = {WAN21_FAMILY: "Wan 2.1 T2V", WAN22_TI2V_FAMILY: "Wan 2.2 TI2V 5B",
                WAN22_A14B_FAMILY: "Wan 2.2 T2V A14B"}
EXPERTS = ("", "high", "low")
# Wan 2.2 T2V A14B hands the schedule from the high-noise to the low-noise expert where the shifted noise level
# falls below this (wan/configs/wan_t2v_A14B.py: boundary 0.875 of 1000 timesteps; I2V A14B: 0.900)
A14B_T2V_BOUNDARY = 0.875  # "": a single model; the A14B pair's high-noise and low-noise experts
PREDICTIONS = ("velocity", "x0")
ABSOLUTE_POSITIONS = ("none", "learned")
GATE_MODES = ("text", "blind", "none")


def _to_json(cfg: Any) -> str:
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


def _from_json(cls: type[T], text: str | dict) -> T:
    data = json.loads(text) if isinstance(text, str) else dict(text)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {unknown}; the file was written by a newer version "
                         f"of ImVideoEdit: update the node pack")
    for f in dataclasses.fields(cls):  # JSON turns tuples into lists
        if f.name in data and isinstance(data[f.name], list):
            data[f.name] = tuple(data[f.name])
    return cls(**data)


@dataclass(frozen=True)
class BackboneConfig:
    """Dimensions of a Wan text-to-video DiT (names follow the official checkpoints): Wan 2.1 T2V, Wan 2.2 TI2V 5B
    or one expert of Wan 2.2 T2V A14B (``family`` and ``expert`` say which; the shapes cannot tell an A14B expert
    from Wan 2.1 14B)."""

    dim: int = 1536
    ffn_dim: int = 8960
    freq_dim: int = 256          # sinusoidal timestep embedding width
    text_dim: int = 4096         # umT5-XXL hidden size
    num_heads: int = 12
    num_layers: int = 30
    in_dim: int = 16             # latent channels
    out_dim: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (frames, height, width)
    eps: float = 1e-6
    family: str = WAN21_FAMILY
    expert: str = ""             # A14B only: "high" (sigma >= the boundary) or "low" (below it)
    # what the head predicts: "velocity" (Wan) or "x0", the clean latent, turned into the same velocity by
    # forward() (docs/decisions.md, ToyWorld: small models denoise pixel-like latents better that way)
    prediction: str = "velocity"
    # "learned": add learned embeddings of each token's frame, row and column in the clip (at most
    # ``position_grid``) to the patch embedding. Wan has none (3D RoPE is relative only); a small model trained
    # briefly cannot infer absolute positions from relative ones, so ToyWorld's backbone needs them to place
    # objects (docs/decisions.md, ToyWorld)
    absolute_position: str = "none"
    position_grid: tuple[int, int, int] = (8, 8, 8)  # token frames, rows, columns the learned embeddings cover

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if (self.dim // self.num_heads) % 2:
            raise ValueError(f"head dim {self.dim // self.num_heads} must be even for rotary embeddings")
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must be (frames, height, width), got {self.patch_size}")
        if self.expert not in EXPERTS:
            raise ValueError(f"unknown expert {self.expert!r}; choose one of {EXPERTS}")
        if (self.family == WAN22_A14B_FAMILY) != bool(self.expert):
            raise ValueError(f"a {WAN22_A14B_FAMILY} backbone is one of its two experts ('high' or 'low') and no "
                             f"other family has experts; got family {self.family!r}, expert {self.expert!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}; choose one of {PREDICTIONS}")
        if self.absolute_position not in ABSOLUTE_POSITIONS:
            raise ValueError(f"unknown absolute_position {self.absolute_position!r}; choose one of "
                             f"{ABSOLUTE_POSITIONS}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def describe(self) -> str:
        """The model in a user's words, e.g. 'Wan 2.2 T2V A14B (high-noise expert)'."""
        name = FAMILY_NAMES.get(self.family, self.family)
        return f"{name} ({self.expert}-noise expert)" if self.expert else name

    def to_json(self) -> str:
        return _to_json(self)

    @classmethod
    def from_json(cls, text: str | dict) -> "BackboneConfig":
        return _from_json(cls, text)


# The FFN LoRA rank of ToyWorld's ``ffn_lora`` variant, ahead of PU-SDA alone on the codec backbone on two seeds
# (docs/toyworld.md): IMVE Train Adapter's default. ``AdapterConfig.lora_rank`` stays 0 (the measured tables' "ours").
FFN_LORA_RANK = 8


@dataclass(frozen=True)
class AdapterConfig:
    """The PU-SDA adapter and its semantic gate.

    ``inner_dim`` is the width of the adapter's 2D attention; a quarter of the backbone's ``dim`` keeps the
    adapter at 2.1% of a backbone step for Wan 2.1 1.3B and 3.7% for 14B (``bench/flops.py``).
    """

    inner_dim: int = 384
    num_heads: int = 3
    gate_dim: int = 64           # d_g of the gate's bilinear token/text score
    time_freq_dim: int = 64      # sinusoidal timestep features seen by the gate
    block_stride: int = 1        # an adapter after every k-th block ...
    blocks: tuple[int, ...] | None = None  # ... or after exactly these blocks
    lora_rank: int = 0           # optional LoRA on the backbone FFNs; 0 = off
    lora_alpha: float = 1.0
    gate: str = "text"           # "text": the text-guided gate; "blind": ignores the text; "none": g = 0 (ablations)

    def __post_init__(self) -> None:
        if self.inner_dim % self.num_heads or (self.inner_dim // self.num_heads) % 4:
            raise ValueError(f"inner_dim {self.inner_dim} must split into num_heads {self.num_heads} heads "
                             f"whose width is a multiple of 4 (2D rotary embedding)")
        if self.block_stride < 1:
            raise ValueError(f"block_stride must be >= 1, got {self.block_stride}")
        if self.blocks is not None and (not self.blocks or min(self.blocks) < 0):
            raise ValueError(f"blocks must be a non-empty list of block indices >= 0, got {self.blocks}")
        if self.gate not in GATE_MODES:
            raise ValueError(f"unknown gate mode {self.gate!r}; choose one of {GATE_MODES}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0 (0 turns the FFN LoRA off), got {self.lora_rank}")

    def block_ids(self, num_layers: int) -> tuple[int, ...]:
        """Indices of the backbone blocks followed by an adapter."""
        if self.blocks is None:
            return tuple(range(0, num_layers, self.block_stride))
        too_deep = [i for i in self.blocks if i >= num_layers]
        if too_deep:
            raise ValueError(f"adapter blocks {too_deep} do not exist in a backbone with {num_layers} blocks")
        return tuple(sorted(set(self.blocks)))

    def to_json(self) -> str:
        return _to_json(self)

    @classmethod
    def from_json(cls, text: str | dict) -> "AdapterConfig":
        return _from_json(cls, text)


BACKBONE_PRESETS: dict[str, BackboneConfig] = {
    # tests: milliseconds on a CPU
    "tiny": BackboneConfig(dim=64, ffn_dim=128, freq_dim=32, text_dim=32, num_heads=2, num_layers=2),
    # the ToyWorld experiments: small enough to pretrain on two CPU cores
    "toy": BackboneConfig(dim=128, ffn_dim=384, freq_dim=64, text_dim=64, num_heads=4, num_layers=4),
    # ToyWorld experiment: 4x the parameters, Wan's 128-wide heads (docs/decisions.md, ToyWorld)
    "toy-256": BackboneConfig(dim=256, ffn_dim=768, freq_dim=64, text_dim=64, num_heads=2, num_layers=4),
    # ToyWorld: "toy" with absolute positions (issue 9: a RoPE-only toy cannot even memorise one video)
    "toy-pos": BackboneConfig(dim=128, ffn_dim=384, freq_dim=64, text_dim=64, num_heads=4, num_layers=4,
                              absolute_position="learned"),
    # ToyWorld experiment: "toy-pos" twice as deep (issue 9: depth as a lever at equal compute)
    "toy-pos-deep": BackboneConfig(dim=128, ffn_dim=384, freq_dim=64, text_dim=64, num_heads=4, num_layers=8,
                                   absolute_position="learned"),
    # ToyWorld experiment: "toy-pos" twice as wide in Wan's 128-wide heads (issue 18: a larger model on the codec's
    # 16-token frames against more steps of the small one)
    "toy-pos-wide": BackboneConfig(dim=256, ffn_dim=768, freq_dim=64, text_dim=64, num_heads=2, num_layers=4,
                                   absolute_position="learned"),
    # real sizes (FLOP counting on the meta device, and real checkpoints)
    "wan2.1-t2v-1.3b": BackboneConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    "wan2.1-t2v-14b": BackboneConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    # Wan 2.2 (wan/configs/wan_ti2v_5B.py, wan_t2v_A14B.py; 48 channels: the Wan 2.2 VAE's z_dim, docs/wan22_facts.md)
    "wan2.2-ti2v-5b": BackboneConfig(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48, out_dim=48,
                                     family=WAN22_TI2V_FAMILY),
    "wan2.2-t2v-a14b-high": BackboneConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40,
                                           family=WAN22_A14B_FAMILY, expert="high"),
    "wan2.2-t2v-a14b-low": BackboneConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40,
                                          family=WAN22_A14B_FAMILY, expert="low"),
}

ADAPTER_PRESETS: dict[str, AdapterConfig] = {
    "tiny": AdapterConfig(inner_dim=32, num_heads=2, gate_dim=8, time_freq_dim=16),
    "toy": AdapterConfig(inner_dim=64, num_heads=2, gate_dim=16, time_freq_dim=32),
    "toy-256": AdapterConfig(inner_dim=64, num_heads=2, gate_dim=16, time_freq_dim=32),
    "toy-pos": AdapterConfig(inner_dim=64, num_heads=2, gate_dim=16, time_freq_dim=32),
    "toy-pos-deep": AdapterConfig(inner_dim=64, num_heads=2, gate_dim=16, time_freq_dim=32),
    "toy-pos-wide": AdapterConfig(inner_dim=64, num_heads=2, gate_dim=16, time_freq_dim=32),
    "wan2.1-t2v-1.3b": AdapterConfig(inner_dim=384, num_heads=3, gate_dim=64),
    "wan2.1-t2v-14b": AdapterConfig(inner_dim=1280, num_heads=10, gate_dim=64),
    # a quarter of the backbone's width in 128-wide heads, as for 1.3B and 14B (cost share: bench/flops.py)
    "wan2.2-ti2v-5b": AdapterConfig(inner_dim=768, num_heads=6, gate_dim=64),
    "wan2.2-t2v-a14b-high": AdapterConfig(inner_dim=1280, num_heads=10, gate_dim=64),
    "wan2.2-t2v-a14b-low": AdapterConfig(inner_dim=1280, num_heads=10, gate_dim=64),
}


def expert_sigma_range(expert: str, *, boundary: float = A14B_T2V_BOUNDARY) -> tuple[float, float]:
    """The noise levels [low, high) an expert denoises (and is trained on): the whole range for a single model."""
    if not 0 < boundary < 1:
        raise ValueError(f"boundary must be in (0, 1), got {boundary}")
    return {"": (0.0, 1.0), "high": (boundary, 1.0), "low": (0.0, boundary)}[expert]


def _preset(table: dict[str, T], name: str, what: str) -> T:
    if name not in table:
        raise ValueError(f"unknown {what} preset {name!r}; choose one of {sorted(table)}")
    return table[name]


def backbone_preset(name: str) -> BackboneConfig:
    return _preset(BACKBONE_PRESETS, name, "backbone")


def adapter_preset(name: str) -> AdapterConfig:
    return _preset(ADAPTER_PRESETS, name, "adapter")


def adapter_config_for(backbone: BackboneConfig) -> AdapterConfig:
    """The adapter preset of a known backbone size, else the same rule: a quarter of its width, 128-wide heads."""
    shape = dataclasses.replace(backbone, prediction="velocity")  # the head's target does not size the adapter
    for name, cfg in BACKBONE_PRESETS.items():
        if cfg == shape and name in ADAPTER_PRESETS:
            return ADAPTER_PRESETS[name]
    inner = max(16, backbone.dim // 4 // 16 * 16)
    heads = max(1, inner // 128)
    while inner % heads or (inner // heads) % 4:
        heads -= 1
    return AdapterConfig(inner_dim=inner, num_heads=heads, gate_dim=min(64, max(8, inner // 4)))


def parse_blocks(text: str, *, available: tuple[int, ...]) -> tuple[int, ...]:
    """'all' or a list such as '0-9, 20' -> the chosen block indices, each one an adapted block."""
    text = text.strip().lower()
    if text in ("", "all"):
        return tuple(available)
    chosen: set[int] = set()
    try:
        for part in text.replace(" ", "").split(","):
            low, _, high = part.partition("-")
            chosen.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ValueError(f"blocks {text!r}: write 'all' or indices and ranges such as '0-9, 20'") from None
    missing = sorted(chosen - set(available))
    if missing:
        raise ValueError(f"blocks {missing} carry no adapter; this adapter has blocks {list(available)}")
    return tuple(sorted(chosen))
