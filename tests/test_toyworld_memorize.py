"""The memorisation probe: trains a (variant of a) preset on a few clips and judges its samples of them."""

from __future__ import annotations

import math

import pytest

from bench.toyworld.memorize import _overrides, memorise


def test_memorise_trains_the_variant_it_is_given_and_judges_both_guidance_scales():
    plain = memorise("tiny", steps=2, clips=2, batch=2)
    shallow = memorise("tiny", steps=2, clips=2, batch=2, overrides={"num_layers": 1})
    assert shallow["overrides"] == {"num_layers": 1} and shallow["parameters"] < plain["parameters"]
    for result in (plain, shallow):
        assert result["clips"] == 2 and math.isfinite(result["final_loss"])
        for scale in ("cfg 1", "cfg 3"):
            scores = result[scale]
            assert 0.0 <= scores["present"] <= 1.0 and scores["mae"] > 0.0, scores


def test_overrides_take_integer_backbone_fields_only():
    assert _overrides(["dim=256", "num_heads=2"]) == {"dim": 256, "num_heads": 2}
    for bad in (["width=256"], ["dim=wide"], ["dim"]):
        with pytest.raises(SystemExit, match="expected FIELD=INT"):
            _overrides(bad)
