"""The adapter file: safetensors weights plus metadata that says what the file is and what it fits.

Metadata keys (all strings, as safetensors requires):
    format            "imvideoedit-adapter"
    format_version    "1"
    adapter_config    AdapterConfig as JSON
    backbone          BackboneConfig of the backbone it was trained on, as JSON
    training          free-form JSON summary (steps, data, loss, ...)
    dtype             the stored weights' dtype ("bfloat16" by default; files before it: float32)
A file is identified by this metadata, never by its keys. Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..io.files import atomic_write
from .adapter import TORCH_OPERATIONS, ImVideoEditAdapter
from .config import AdapterConfig, BackboneConfig

FORMAT_NAME = "imvideoedit-adapter"
FORMAT_VERSION = 1
STATE_FORMAT = "imvideoedit-train-state"  # the trainer's resume state (training.py), never an adapter
STORAGE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
DEFAULT_STORAGE = "bfloat16"  # half the bytes of float32; the adapter computes in whatever dtype it is loaded into


class AdapterFileError(ValueError):
    pass


@dataclass(frozen=True)
class AdapterFileInfo:
    path: Path
    adapter_config: AdapterConfig
    backbone_config: BackboneConfig
    training: dict = field(default_factory=dict)
    dtype: str = "float32"  # how the weights are stored


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> None:
    """Write to a temporary file in the target folder, then rename: a crash never leaves half a file."""
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata=metadata))


def storage_dtype(name: str) -> torch.dtype:
    if name not in STORAGE_DTYPES:
        raise ValueError(f"adapter files store {sorted(STORAGE_DTYPES)}, not {name!r}")
    return STORAGE_DTYPES[name]


def save_adapter(path: str | Path, adapter: ImVideoEditAdapter, *, training: dict | None = None,
                 state_dict: dict[str, torch.Tensor] | None = None, dtype: str = DEFAULT_STORAGE) -> None:
    """Save ``adapter`` (or ``state_dict``, e.g. EMA weights of the same shape) with its metadata, its weights
    stored as ``dtype`` (bfloat16 by default)."""
    target = storage_dtype(dtype)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "adapter_config": adapter.config.to_json(),
        "backbone": adapter.backbone_config.to_json(),
        "training": json.dumps(training or {}, sort_keys=True),
        "dtype": dtype,
    }
    weights = state_dict if state_dict is not None else adapter.state_dict()
    atomic_save_safetensors({k: v.to(target) if v.is_floating_point() else v for k, v in weights.items()}, path,
                            metadata)


def read_adapter_info(path: str | Path) -> AdapterFileInfo:
    """Read and check the metadata only (cheap: no weights are loaded)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise AdapterFileError(f"{path.name} is not a readable safetensors file ({err}); "
                               "pick an ImVideoEdit adapter (.safetensors)") from err
    if meta.get("format") == STATE_FORMAT:
        raise AdapterFileError(f"{path.name} is a training resume state, not an adapter: load "
                               f"{path.name.removesuffix('.train-state.safetensors')}.safetensors instead")
    if meta.get("format") != FORMAT_NAME:
        raise AdapterFileError(
            f"{path.name} is not an ImVideoEdit adapter (its metadata has no format={FORMAT_NAME!r}); "
            "a Wan checkpoint goes into Load Diffusion Model and a LoRA into a LoRA loader")
    version = int(meta.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise AdapterFileError(f"{path.name} has adapter format version {version}; this version reads up to "
                               f"{FORMAT_VERSION}: update the ImVideoEdit node pack")
    try:
        return AdapterFileInfo(path=path, adapter_config=AdapterConfig.from_json(meta["adapter_config"]),
                               backbone_config=BackboneConfig.from_json(meta["backbone"]),
                               training=json.loads(meta.get("training", "{}")), dtype=meta.get("dtype", "float32"))
    except (KeyError, json.JSONDecodeError, TypeError) as err:
        raise AdapterFileError(f"{path.name} has damaged adapter metadata ({err!r}); re-export the adapter") from err


def check_compatible(info: AdapterFileInfo, backbone: BackboneConfig) -> None:
    """Raise with a message naming every dimension on which the adapter does not fit ``backbone``."""
    trained = info.backbone_config
    problems = []
    if (trained.family, trained.expert) != (backbone.family, backbone.expert):
        problems.append(f"it was trained on {trained.describe()}, the model is {backbone.describe()}")
    if trained.dim != backbone.dim:
        problems.append(f"hidden size: adapter {trained.dim}, model {backbone.dim}")
    if trained.num_layers != backbone.num_layers:
        problems.append(f"blocks: adapter {trained.num_layers}, model {backbone.num_layers}")
    if problems:
        raise AdapterFileError(f"{info.path.name} does not fit this backbone: " + "; ".join(problems)
                               + ". Load an adapter trained for this model (e.g. Wan 2.1 1.3B: dim 1536, 30 blocks; "
                               "14B: dim 5120, 40 blocks; Wan 2.2 TI2V 5B: dim 3072, 30 blocks; each Wan 2.2 A14B "
                               "expert has its own adapter)")


def load_adapter(path: str | Path, *, backbone: BackboneConfig | None = None, device="cpu",
                 dtype: torch.dtype | None = None, operations=TORCH_OPERATIONS) -> ImVideoEditAdapter:
    """Build the adapter the file describes and load its weights; checks fit against ``backbone`` if given.

    ``dtype``: the dtype to compute in (default: as stored); a host passes its model's compute dtype."""
    info = read_adapter_info(path)
    if backbone is not None:
        check_compatible(info, backbone)
    with safe_open(str(info.path), framework="pt", device=str(device)) as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    dtype = dtype or next(iter(tensors.values())).dtype
    adapter = ImVideoEditAdapter(info.adapter_config, info.backbone_config, device=device, dtype=dtype,
                                 operations=operations)
    expected = adapter.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise AdapterFileError(f"{info.path.name}: weights do not match its own metadata (missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}); the file is damaged: "
                               "re-export it")
    adapter.load_state_dict(tensors)
    return adapter
