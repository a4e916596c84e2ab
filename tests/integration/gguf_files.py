"""Writing small Wan checkpoints as GGUF files the way ComfyUI-GGUF lays them out (no pytest, no ComfyUI imports).

Tensor names are the checkpoint's own, the architecture is "wan", 1-D and small tensors and the modulations stay
float32, the 5-D patch embedding is stored flat with its shape in ``comfy.gguf.orig_shape.<name>``. The ``gguf``
package quantizes Q8_0 itself; it has no K-quant quantizer, so ``quantize_q6_k`` packs Q6_K blocks here, in the
layout gguf's own ``Q6_K.dequantize_blocks`` reads (which the tests check).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch

QK_K = 256  # values per K-quant block


def quantize_q6_k(values: np.ndarray) -> np.ndarray:
    """float32 [..., n * 256] -> Q6_K bytes [..., n * 210]: 16 sub-blocks of 16 values, each with an int8 scale of
    one float16 super-scale; 6-bit values stored as 4 low bits (ql) and 2 high bits (qh)."""
    rows = values.reshape(-1, QK_K).astype(np.float32)                       # (n, 256)
    sub = rows.reshape(-1, 16, 16)
    sub_scale = np.abs(sub).max(axis=2) / 31                                  # (n, 16): q in [-32, 31]
    d = (np.abs(sub_scale).max(axis=1) / 127).astype(np.float16)             # (n,)
    d32 = d.astype(np.float32)
    scales = np.where(d32[:, None] > 0, np.round(sub_scale / np.where(d32 > 0, d32, 1)[:, None]), 0)
    scales = np.clip(scales, -128, 127).astype(np.int8)                       # (n, 16)
    step = (d32[:, None] * scales.astype(np.float32))[:, :, None]            # (n, 16, 1)
    q = np.where(step > 0, np.round(sub / np.where(step > 0, step, 1)), 0)
    q = (np.clip(q, -32, 31) + 32).astype(np.uint8).reshape(-1, 2, 2, 2, 32)  # (n, half, shift, 2, 32)
    low = (q & 0x0F).reshape(-1, 2, 2, 64)                                    # (n, half, shift, 64)
    ql = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(-1, QK_K // 2)          # (n, 128)
    high = (q >> 4).reshape(-1, 2, 4, 32)                                     # (n, half, quarter, 32)
    qh = (high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)).reshape(-1, QK_K // 4)
    blocks = np.concatenate([ql, qh, scales.view(np.uint8), d.reshape(-1, 1).view(np.uint8)], axis=1)
    return blocks.reshape(*values.shape[:-1], -1)


def quantize(values: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    if qtype == gguf.GGMLQuantizationType.Q6_K:
        return quantize_q6_k(values)
    return gguf.quants.quantize(values, qtype)


def _keeps_full_precision(name: str, value: np.ndarray, block: int) -> bool:
    return value.ndim < 2 or value.size <= 1024 or ".modulation" in name or value.shape[-1] % block != 0


def write_wan_gguf(path: Path, state_dict: dict[str, torch.Tensor], qtype: gguf.GGMLQuantizationType) -> dict:
    """Writes the checkpoint; returns {name: the float32 weights a reader gets back} (dequantized where quantized)."""
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    writer = gguf.GGUFWriter(str(path), "wan")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    restored = {}
    for name, tensor in state_dict.items():
        value = tensor.float().numpy()
        if _keeps_full_precision(name, value, block):
            if value.ndim > 4:  # ggml has 4 dimensions at most
                writer.add_array(f"comfy.gguf.orig_shape.{name}", list(value.shape))
                writer.add_tensor(name, value.reshape(value.shape[0], -1))
            else:
                writer.add_tensor(name, value)
            restored[name] = torch.from_numpy(value.copy())
        else:
            packed = quantize(value, qtype)
            writer.add_tensor(name, packed, raw_dtype=qtype)
            restored[name] = torch.from_numpy(gguf.quants.dequantize(packed, qtype).reshape(value.shape).copy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return restored
