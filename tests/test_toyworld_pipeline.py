"""The ToyWorld pipeline end to end in its quick mode: pretrain -> adapters -> evaluation, in a scratch folder."""

from __future__ import annotations

import math

from bench.toyworld import world
from bench.toyworld.evaluate import METRICS
from bench.toyworld.pipeline import run
from bench.toyworld.train_adapter import VARIANTS

SYSTEMS = {"ours", "per_frame", "dtr_0.5", "dtr_0.75", "oracle", "no_gate", "blind_gate", "unfrozen", "ours_tpos"}


def test_quick_pipeline_runs_every_stage(tmp_path):
    summary = run(quick=True, out=tmp_path, pretrain_minutes=1.0, adapter_steps=2)
    assert summary["pretrain"]["steps"] == 4
    assert [a["variant"] for a in summary["adapters"]] == list(VARIANTS)
    for name in ("backbone", "text_encoder", "adapter"):
        assert (tmp_path / "models" / f"{name}.safetensors").is_file()
    assert (tmp_path / "runs" / "unfrozen.self_attn.safetensors").is_file()
    evaluation = summary["evaluation"]
    assert evaluation["cache_off_max_abs_diff"] == 0.0  # the source cache changes nothing but the cost
    assert set(evaluation["overall"]) == SYSTEMS
    for name, metrics in evaluation["overall"].items():
        assert set(metrics) == set(METRICS), name
        assert all(metrics[m] is None or math.isfinite(metrics[m]) for m in METRICS), (name, metrics)
    assert len(world.EDIT_KINDS) == 5
