"""The image-pair dataset builder: what it writes is what the trainer reads, append-only, deduplicated, whole."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from imvideoedit_core.io import files
from imvideoedit_core.train.pair_writer import IMAGES_DIR, append_pairs
from imvideoedit_core.train.pair_dataset import PairDataset
from imvideoedit_core.train.pair_scan import MANIFEST_NAME, PairDatasetError


def images(count: int, *, seed: int, size: tuple[int, int] = (16, 24)) -> torch.Tensor:
    """(B, H, W, 3) with values on the 8-bit grid, as ComfyUI's Load Image gives them."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, *size, 3), generator=gen).float() / 255


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_written_pairs_read_back_exactly_through_the_trainers_loader(tmp_path):
    sources, targets = images(3, seed=0), images(3, seed=1)
    report = append_pairs(tmp_path / "set", sources, targets, ["make it red", "make it blue", "make it green"])
    assert (report.added, report.skipped, report.total) == (3, 0, 3)
    dataset = PairDataset.from_path(tmp_path / "set", check="decode")
    assert [dataset[i].instruction for i in range(3)] == ["make it red", "make it blue", "make it green"]
    for i in range(3):
        assert torch.equal(torch.as_tensor(dataset[i].source), sources[i])
        assert torch.equal(torch.as_tensor(dataset[i].target), targets[i])


def test_appends_keep_old_lines_and_skip_duplicates(tmp_path):
    folder = tmp_path / "set"
    first = images(2, seed=0)
    append_pairs(folder, first, images(2, seed=1), "make it red")
    before = (folder / MANIFEST_NAME).read_bytes()
    again = append_pairs(folder, first, images(2, seed=1), "make it red")
    assert (again.added, again.skipped, again.total) == (0, 2, 2)
    assert (folder / MANIFEST_NAME).read_bytes() == before
    more = append_pairs(folder, torch.cat([first[:1], images(1, seed=5)]), images(2, seed=1), "make it red")
    assert (more.added, more.skipped, more.total) == (1, 1, 3)
    after = (folder / MANIFEST_NAME).read_bytes()
    assert after.startswith(before) and after.count(b"\n") == 3
    twice = append_pairs(tmp_path / "dup", torch.cat([first[:1]] * 2), torch.cat([first[1:]] * 2), "x")
    assert (twice.added, twice.skipped) == (1, 1)  # a duplicate inside one batch
    different_text = append_pairs(folder, first[:1], images(1, seed=1), "make it orange")
    assert different_text.added == 1  # the same images with another instruction are another pair


def test_a_hand_written_manifest_is_extended_not_rewritten(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    line = json.dumps({"source": "a.png", "target": "b.png", "instruction": "old", "name": "mine"})
    (folder / MANIFEST_NAME).write_text(line)  # no trailing newline
    append_pairs(folder, images(1, seed=0), images(1, seed=1), "new")
    lines = (folder / MANIFEST_NAME).read_text().splitlines()
    assert lines[0] == line and json.loads(lines[1])["instruction"] == "new" and len(lines) == 2


@pytest.mark.parametrize("call, message", [
    (lambda d: append_pairs(d, images(2, seed=0), images(2, seed=1, size=(16, 32)), "x"),
     r"edited images are 32x16 but the source images are 24x16: scale"),
    (lambda d: append_pairs(d, images(2, seed=0), images(3, seed=1), "x"), r"2 source images but 3 edited"),
    (lambda d: append_pairs(d, images(2, seed=0), images(2, seed=1), ["a", "b", "c"]), r"3 instructions for 2"),
    (lambda d: append_pairs(d, images(2, seed=0), images(2, seed=1), ["a", "  "]), r"pair\(s\) \[1\] is empty"),
    (lambda d: append_pairs(d, images(1, seed=0, size=(8, 8)), images(1, seed=1, size=(8, 8)), "x"),
     r"at least 16 px"),
    (lambda d: append_pairs(d, images(1, seed=0)[0], images(1, seed=1)[0], "x"), r"must be an IMAGE batch"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, call, message):
    folder = tmp_path / "set"
    append_pairs(folder, images(1, seed=9), images(1, seed=8), "keep me")
    before = snapshot(folder)
    with pytest.raises(ValueError, match=message):
        call(folder)
    assert snapshot(folder) == before


def test_a_broken_manifest_or_a_folder_layout_dataset_is_left_alone(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MANIFEST_NAME).write_text('{"source": "a.png"}\nnot json\n')
    with pytest.raises(PairDatasetError, match=r"line 2: is not JSON.*Repair or delete"):
        append_pairs(broken, images(1, seed=0), images(1, seed=1), "x")
    assert snapshot(broken) == {MANIFEST_NAME: b'{"source": "a.png"}\nnot json\n'}
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "cat_src.png").write_bytes(b"")
    with pytest.raises(ValueError, match="would hide them"):
        append_pairs(layout, images(1, seed=0), images(1, seed=1), "x")
    assert snapshot(layout) == {"cat_src.png": b""}


def test_a_crash_while_writing_the_manifest_leaves_the_old_one_whole(tmp_path, monkeypatch):
    folder = tmp_path / "set"
    append_pairs(folder, images(1, seed=0), images(1, seed=1), "first")
    before = (folder / MANIFEST_NAME).read_bytes()
    real_replace = os.replace

    def crash_on_manifest(src, dst):
        if str(dst).endswith(MANIFEST_NAME):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", crash_on_manifest)
    with pytest.raises(OSError, match="disk full"):
        append_pairs(folder, images(1, seed=2), images(1, seed=3), "second")
    assert (folder / MANIFEST_NAME).read_bytes() == before
    assert not [p for p in folder.rglob("*.tmp")]
    monkeypatch.setattr(files.os, "replace", real_replace)
    retry = append_pairs(folder, images(1, seed=2), images(1, seed=3), "second")  # reuses the orphaned images
    assert (retry.added, retry.total) == (1, 2)
    assert len(list((folder / IMAGES_DIR).iterdir())) == 4


def test_an_alpha_channel_is_dropped_as_everywhere_in_the_pack(tmp_path):
    rgba = torch.cat([images(1, seed=0), torch.zeros(1, 16, 24, 1)], dim=-1)
    append_pairs(tmp_path / "set", rgba, images(1, seed=1), "x")
    pair = PairDataset.from_path(tmp_path / "set")[0]
    np.testing.assert_array_equal(np.asarray(pair.source), rgba[0, ..., :3].numpy())
