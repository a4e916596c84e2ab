"""Helpers shared by the benchmark scripts (run them as ``python bench/<name>.py`` from the repository root).

Importing this module puts the repository root on ``sys.path`` so that ``imvideoedit_core`` is importable
without installing the pack.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from imvideoedit_core.model.adapter import build_adapter  # noqa: E402
from imvideoedit_core.model.backbone import build_backbone  # noqa: E402
from imvideoedit_core.model.attention import math_attention, use_attention  # noqa: E402
from imvideoedit_core.model.config import AdapterConfig, BackboneConfig  # noqa: E402
from imvideoedit_core.edit.streams import TwoStreamRunner  # noqa: E402

GIB = 2**30


def build_runner(backbone_cfg: BackboneConfig, adapter_cfg: AdapterConfig, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, seed: int = 0) -> TwoStreamRunner:
    """A frozen backbone and an adapter joined by a (not yet attached) two-stream runner.

    On ``meta`` nothing is allocated or initialised; elsewhere the weights are seeded.
    """
    backbone = build_backbone(backbone_cfg, device=device, dtype=dtype, seed=seed)
    adapter = build_adapter(adapter_cfg, backbone_cfg, device=device, dtype=dtype, seed=seed + 1)
    return TwoStreamRunner(backbone.requires_grad_(False).eval(), adapter.requires_grad_(False).eval())


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of ``fn()`` (matmuls and convolutions) without autograd, attention as explicit matmuls.

    ``math_attention`` makes attention countable on every device: on the CPU, ``F.scaled_dot_product_attention``
    runs a fused kernel that FlopCounterMode does not count (torch 2.13: 0 FLOPs).
    """
    with torch.no_grad(), use_attention(math_attention), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:]))
        return "  ".join([first, *rest])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def print_result_json(result: dict[str, Any]) -> None:
    """The machine-readable result: always the last line a benchmark prints."""
    print(json.dumps(result, sort_keys=False))
