"""The ToyWorld measurements (long videos, masks, keyframe tuning, strength, text-to-video, zero start,
shared source encoding) in their quick modes.

Each runs end to end on the shipped models with few videos and steps, prints its tables and writes nothing: the
stored results and the report must be left exactly as they were.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORED = [ROOT / "bench" / "toyworld" / "results.json", ROOT / "docs" / "toyworld.md"]


def digest(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


@pytest.mark.parametrize("module, expected", [
    ("long_video", ["| overlap+attn |", "| stream | 8 (1x) |"]),
    ("masks", ["| progressive_b2 |"]),
    ("keyframe_tuning", ["tuned_aug"]),
    ("strength", ["| ours | none | 0.250 |", "perspective"]),
    ("generation", ['"present"', '"acceleration_vs_truth"']),
    ("zero_start", ["'zero, 3 keyframes, lr 1e-3'", "'untuned_trained_psnr'"]),
    ("shared_source", ["| one per branch |", "| shared |"]),
])
def test_quick_measurement_runs_and_writes_nothing(module, expected):
    before = digest(STORED)
    done = subprocess.run([sys.executable, "-m", f"bench.toyworld.{module}", "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for text in expected:
        assert text in done.stdout, (text, done.stdout[-2000:])
    assert digest(STORED) == before
