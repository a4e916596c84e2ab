"""The ToyWorld pipeline end to end in its quick mode: pretrain -> adapters -> evaluation, in a scratch folder."""

from __future__ import annotations

import math
import types

import pytest
import torch
from safetensors.torch import load_file

from bench.toyworld import world
from bench.toyworld.evaluate import METRICS
from bench.toyworld.models import BACKBONE_FILE, TEXT_FILE
from bench.toyworld.pipeline import run
from bench.toyworld.pretrain import STATE_FILE, PretrainConfig, flow_loss, pretrain
from bench.toyworld.pretrain import main as pretrain_main
from bench.toyworld.train_adapter import VARIANTS

SYSTEMS = {"ours", "per_frame", "regenerate_0.5", "regenerate_0.75", "oracle", "no_gate", "blind_gate", "unfrozen",
           "ours_time_offset", "gate_loss", "ffn_lora", "still"}


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


def test_pretraining_resumes_exactly_where_a_cut_off_run_stopped(tmp_path):
    cfg = PretrainConfig(steps=4, video_batch=1, image_batch=2, warmup=2)
    pretrain(cfg, tmp_path / "straight", save_every=100)
    cut = tmp_path / "cut"
    first = pretrain(cfg, cut, minutes=0.0, save_every=100)  # a chunk that stops at once still saves its state
    assert first["steps"] == 0 and (cut / STATE_FILE).is_file()
    pretrain(PretrainConfig(steps=4, video_batch=1, image_batch=2, warmup=2), cut, minutes=math.inf, save_every=2)
    for name in (BACKBONE_FILE, TEXT_FILE):
        a, b = load_file(str(tmp_path / "straight" / name)), load_file(str(cut / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert load_file(str(cut / BACKBONE_FILE))["head.head.weight"].dtype == torch.float16  # EMA weights, fp16


def test_batches_rendered_by_worker_processes_train_the_same_weights(tmp_path):
    cfg = PretrainConfig(steps=3, video_batch=1, image_batch=2, warmup=1)
    for workers in (0, 1):
        pretrain(cfg, tmp_path / str(workers), workers=workers)
    a, b = load_file(str(tmp_path / "0" / BACKBONE_FILE)), load_file(str(tmp_path / "1" / BACKBONE_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretraining_refuses_to_continue_a_run_with_other_settings(tmp_path):
    pretrain(PretrainConfig(steps=2, video_batch=1, image_batch=2, warmup=1), tmp_path)
    with pytest.raises(ValueError, match="steps differ.*another --out"):
        pretrain(PretrainConfig(steps=3, video_batch=1, image_batch=2, warmup=1), tmp_path)
    with pytest.raises(ValueError, match="noise_shift differ"):
        pretrain(PretrainConfig(steps=2, video_batch=1, image_batch=2, warmup=1, noise_shift=3.0), tmp_path)


def test_the_noise_shift_moves_training_towards_pure_noise():
    seen = {}

    class Backbone:  # records the noise levels flow_loss trains at
        def __call__(self, x, t, context):
            seen.setdefault(shift, []).append(t / 1000)
            return x

    for shift in (1.0, 3.0):
        models = types.SimpleNamespace(backbone=Backbone(), text_encoder=lambda captions: None)
        flow_loss(models, torch.zeros(4096, 1, 1, 1, 1), [""] * 4096, torch.Generator().manual_seed(0),
                  noise_shift=shift)
    plain, moved = seen[1.0][0], seen[3.0][0]
    assert torch.allclose(moved, 3 * plain / (1 + 2 * plain))  # the sampler's shift, level by level
    assert 0.45 < plain.mean() < 0.55 and moved.mean() > 0.7


@pytest.mark.parametrize("argv, message", [
    (["--preset", "nope"], "--preset: unknown backbone preset 'nope'"),
    (["--positions", "--steps", "100"], "--steps 100: a run must be longer than its 200 warm-up steps"),
    (["--lr", "0"], "--lr 0.0: the learning rate must be positive"),
    (["--noise-shift", "-1"], "--noise-shift -1.0: the shift must be positive"),
    (["--workers", "-2"], "--workers -2: give 0 or more worker processes"),
    (["--device", "nope"], "--device nope: Expected one of cpu"),
    (["--video-every", "0"], r"--video-every 0: give 1 \(videos only\) or more"),
    (["--init", "/nowhere"], "--init /nowhere: no backbone.safetensors there; give a ToyWorld model folder"),
])
def test_pretraining_command_line_names_a_bad_setting_before_training(tmp_path, monkeypatch, argv, message):
    monkeypatch.setattr("sys.argv", ["pretrain", "--out", str(tmp_path), *argv])
    with pytest.raises(SystemExit, match=message):
        pretrain_main()
    assert not any(tmp_path.iterdir())  # nothing written
