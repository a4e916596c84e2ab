"""The adapter file format: round trip, metadata, atomic writes and every mismatch error."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from tiny import randomize
from imvideoedit_core.model import adapter_file
from imvideoedit_core.model.adapter import build_adapter
from imvideoedit_core.model.adapter_file import (AdapterFileError, check_compatible, load_adapter, read_adapter_info,
                                                 save_adapter)
from imvideoedit_core.model.config import AdapterConfig, adapter_preset, backbone_preset


@pytest.fixture
def adapter():
    return randomize(build_adapter(adapter_preset("tiny"), backbone_preset("tiny"), seed=0), seed=1)


def test_round_trip_keeps_weights_configs_and_summary(adapter, tmp_path):
    path = tmp_path / "edit.safetensors"
    save_adapter(path, adapter, training={"steps": 12, "data": "pairs/"})
    info = read_adapter_info(path)
    assert info.adapter_config == adapter.config
    assert info.backbone_config == backbone_preset("tiny")
    assert info.training == {"steps": 12, "data": "pairs/"}
    assert info.dtype == "bfloat16"  # stored in bf16 by default: half the bytes
    loaded = load_adapter(path, backbone=backbone_preset("tiny"))
    for k, v in adapter.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.to(torch.bfloat16)), k
    assert [p.name for p in tmp_path.iterdir()] == ["edit.safetensors"]  # no temporary file left


def test_float32_storage_round_trips_exactly_and_the_compute_dtype_is_the_loaders_choice(adapter, tmp_path):
    path = tmp_path / "fp32.safetensors"
    save_adapter(path, adapter, dtype="float32")
    assert read_adapter_info(path).dtype == "float32"
    loaded = load_adapter(path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in adapter.state_dict().items())
    assert next(load_adapter(path, dtype=torch.bfloat16).parameters()).dtype == torch.bfloat16
    bf16 = tmp_path / "bf16.safetensors"
    save_adapter(bf16, adapter)
    assert bf16.stat().st_size < 0.6 * path.stat().st_size
    assert next(load_adapter(bf16).parameters()).dtype == torch.bfloat16
    assert next(load_adapter(bf16, dtype=torch.float32).parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="float8"):
        save_adapter(tmp_path / "x.safetensors", adapter, dtype="float8")


def test_failed_write_leaves_the_old_file_untouched(adapter, tmp_path, monkeypatch):
    path = tmp_path / "edit.safetensors"
    save_adapter(path, adapter, training={"version": 1})
    before = path.read_bytes()

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(adapter_file, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(path, adapter, training={"version": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["edit.safetensors"]


def test_not_an_adapter_files_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no adapter file"):
        read_adapter_info(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(AdapterFileError, match="junk.safetensors is not a readable safetensors file"):
        read_adapter_info(tmp_path / "junk.safetensors")
    save_file({"patch_embedding.weight": torch.zeros(2)}, tmp_path / "wan.safetensors")
    with pytest.raises(AdapterFileError, match="not an ImVideoEdit adapter.*Load Diffusion Model"):
        read_adapter_info(tmp_path / "wan.safetensors")


def _rewrite_metadata(path, **changes):
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = {**f.metadata(), **changes}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, path, metadata=meta)


def test_future_version_and_damaged_metadata(adapter, tmp_path):
    path = tmp_path / "edit.safetensors"
    save_adapter(path, adapter)
    _rewrite_metadata(path, format_version="7")
    with pytest.raises(AdapterFileError, match="format version 7.*update the ImVideoEdit node pack"):
        read_adapter_info(path)
    _rewrite_metadata(path, format_version="1", adapter_config="{not json")
    with pytest.raises(AdapterFileError, match="damaged adapter metadata"):
        read_adapter_info(path)


def test_mismatched_backbone_names_each_dimension(adapter, tmp_path):
    path = tmp_path / "tiny_adapter.safetensors"
    save_adapter(path, adapter)
    with pytest.raises(AdapterFileError) as err:
        load_adapter(path, backbone=backbone_preset("wan2.1-t2v-1.3b"))
    message = str(err.value)
    assert "tiny_adapter.safetensors does not fit" in message
    assert "hidden size: adapter 64, model 1536" in message and "blocks: adapter 2, model 30" in message


def test_weights_that_contradict_the_metadata_are_reported(adapter, tmp_path):
    path = tmp_path / "edit.safetensors"
    save_adapter(path, adapter)
    _rewrite_metadata(path, adapter_config=AdapterConfig(inner_dim=64, num_heads=2, gate_dim=8,
                                                         time_freq_dim=16).to_json())
    with pytest.raises(AdapterFileError, match="do not match its own metadata.*re-export"):
        load_adapter(path)


def test_metadata_is_plain_json(adapter, tmp_path):
    path = tmp_path / "edit.safetensors"
    save_adapter(path, adapter, training={"loss": 0.5})
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "imvideoedit-adapter" and meta["format_version"] == "1"
    assert json.loads(meta["backbone"])["dim"] == 64
    assert json.loads(meta["adapter_config"])["inner_dim"] == 32


def test_check_compatible_accepts_the_same_backbone(adapter, tmp_path):
    save_adapter(tmp_path / "a.safetensors", adapter)
    check_compatible(read_adapter_info(tmp_path / "a.safetensors"), backbone_preset("tiny"))


def test_a_training_resume_state_is_named_as_such(tmp_path):
    save_file({"adapter.x": torch.zeros(1)}, tmp_path / "edit.train-state.safetensors",
              metadata={"format": "imvideoedit-train-state", "step": "3"})
    with pytest.raises(AdapterFileError, match="training resume state, not an adapter: load edit.safetensors"):
        read_adapter_info(tmp_path / "edit.train-state.safetensors")
