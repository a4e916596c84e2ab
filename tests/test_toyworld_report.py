"""Where ToyWorld measurements land: the bundled models' results.json, or a candidate backbone's own record."""

import json

import pytest

from bench.toyworld.models import MODELS_DIR
from bench.toyworld.report import RESULTS, Record, models_folder


def test_the_bundled_models_own_results_json_and_the_plain_blocks():
    record = Record()
    assert record.bundled and record.results == RESULTS and record.section("strength") == "strength"


def test_a_candidate_keeps_its_own_record_and_a_named_block_inside_its_section(tmp_path):
    candidate = tmp_path / "pretrain_codec"
    candidate.mkdir()
    report = tmp_path / "toyworld.md"
    report.write_text("# ToyWorld\n\nintro\n\n<!-- strength@pretrain_codec:begin -->\n"
                      "<!-- strength@pretrain_codec:end -->\n\n## Systems\n")
    record = Record(candidate, report=report)
    assert not record.bundled and record.stored("strength") is None
    record.save("strength", {"sweep": [1, 2]}, lambda r: f"## Strength\n\ntext\n\n### Animation {len(r['sweep'])}\n")
    record.save("masks", {"videos": 4}, lambda r: "## Masks\n")
    assert json.loads((candidate / "features.json").read_text()) == {
        "features": {"strength": {"sweep": [1, 2]}, "masks": {"videos": 4}}}
    assert record.stored("strength") == {"sweep": [1, 2]}
    text = report.read_text()
    block = text[text.index("<!-- strength@pretrain_codec:begin -->"):text.index("## Systems")]
    assert f"### Strength (models: `{candidate}`)\n\ntext\n\n#### Animation 2" in block
    assert text.rstrip().endswith(f"### Masks (models: `{candidate}`)\n<!-- masks@pretrain_codec:end -->")


def test_a_report_that_fails_to_render_keeps_the_measured_numbers(tmp_path):
    record = Record(tmp_path, report=tmp_path / "toyworld.md")
    (tmp_path / "toyworld.md").write_text("# ToyWorld\n")

    def broken(results: dict) -> str:
        return results["a key the measurement did not write"]

    with pytest.raises(KeyError):
        record.save("zero_start", {"recipes": [{"name": "trained, 1 keyframe"}]}, broken)
    assert record.stored("zero_start") == {"recipes": [{"name": "trained, 1 keyframe"}]}
    assert (tmp_path / "toyworld.md").read_text() == "# ToyWorld\n"


def test_a_models_folder_without_weights_is_named(tmp_path):
    assert models_folder(MODELS_DIR) == MODELS_DIR
    (tmp_path / "backbone.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no adapter\.safetensors there.*train_adapter --models"):
        models_folder(tmp_path)
