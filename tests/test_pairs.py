"""Image-pair datasets (train.pair_scan, pair_dataset, pair_batches): scanning, error reports, loading, resizing,
batching, collation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
import pytest
import torch

from imvideoedit_core.train import pair_scan
from imvideoedit_core.train.pair_batches import batch_indices, collate
from imvideoedit_core.train.pair_dataset import ImagePair, PairDataset, validate_size
from imvideoedit_core.train.pair_scan import (MAX_LISTED_PROBLEMS, PairDatasetError, PairEntry, PairProblem, read_image,
                                              read_image_size, scan_pairs)

RED_BGR = (0, 0, 255)
GREEN_BGR = (0, 255, 0)
BLUE_BGR = (255, 0, 0)


def write_image(path: Path, pixels: np.ndarray, params: tuple[int, ...] = ()) -> Path:
    """Encode with OpenCV and write the bytes ourselves, so non-ASCII paths work everywhere."""
    ok, encoded = cv2.imencode(path.suffix, pixels, list(params))
    assert ok, path
    encoded.tofile(path)
    return path


def solid(height: int, width: int, bgr: tuple[int, int, int]) -> np.ndarray:
    """[height, width, 3] uint8 image of one BGR colour."""
    return np.full((height, width, 3), bgr, dtype=np.uint8)


def make_pair(
    folder: Path,
    name: str,
    *,
    instruction: str = "make it blue",
    source_bgr: tuple[int, int, int] = RED_BGR,
    target_bgr: tuple[int, int, int] = BLUE_BGR,
    source_size: tuple[int, int] = (32, 48),
    target_size: tuple[int, int] | None = None,
    ext: str = ".png",
) -> None:
    """NAME_src.EXT, NAME_tgt.EXT and NAME.txt in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_image(folder / f"{name}_src{ext}", solid(*source_size, source_bgr))
    write_image(folder / f"{name}_tgt{ext}", solid(*(target_size or source_size), target_bgr))
    (folder / f"{name}.txt").write_text(instruction, encoding="utf-8")


def write_manifest(path: Path, records: list[dict | str]) -> Path:
    """One line per record: dicts as JSON, strings verbatim."""
    lines = [record if isinstance(record, str) else json.dumps(record, ensure_ascii=False) for record in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def scan_error(path: Path, **options) -> PairDatasetError:
    with pytest.raises(PairDatasetError) as caught:
        scan_pairs(path, **options)
    return caught.value


# ----------------------------------------------------------------------------------------------------------------
# Layouts


def test_folder_layout_loads_sorted_with_rgb_values(tmp_path):
    for name in ("cherry", "apple", "banana"):
        make_pair(tmp_path, name, instruction="  make it blue \n")
    entries = scan_pairs(tmp_path)
    assert [entry.name for entry in entries] == ["apple", "banana", "cherry"]
    assert entries[0].source_path == tmp_path / "apple_src.png"
    assert entries[0].target_path == tmp_path / "apple_tgt.png"
    assert entries[0].instruction == "make it blue"

    pair = PairDataset(entries)[0]
    assert isinstance(pair, ImagePair) and pair.name == "apple"
    assert pair.source.dtype == torch.float32 and pair.source.shape == (32, 48, 3)
    assert torch.equal(pair.source[0, 0], torch.tensor([1.0, 0.0, 0.0]))  # red lands in channel 0
    assert torch.equal(pair.target[5, 7], torch.tensor([0.0, 0.0, 1.0]))  # blue lands in channel 2


def test_folder_layout_accepts_every_extension_in_any_case(tmp_path):
    for index, ext in enumerate((".png", ".jpg", ".JPEG", ".webp", ".Bmp")):
        make_pair(tmp_path, f"pair{index}", ext=ext)
    entries = scan_pairs(tmp_path)
    assert len(entries) == 5
    pair = PairDataset(entries)[1]  # JPEG: lossy, so compare loosely
    assert torch.allclose(pair.source.mean(dim=(0, 1)), torch.tensor([1.0, 0.0, 0.0]), atol=0.02)


def test_manifest_layout_loads_in_manifest_order(tmp_path):
    data = tmp_path / "data"
    (data / "before").mkdir(parents=True)
    (data / "after").mkdir()
    write_image(data / "before" / "cat.png", solid(16, 16, GREEN_BGR))
    write_image(data / "after" / "cat.png", solid(16, 16, RED_BGR))
    write_image(tmp_path / "outside.png", solid(16, 16, BLUE_BGR))
    manifest = write_manifest(data / "manifest.jsonl", [
        {"source": "before/cat.png", "target": "after/cat.png", "instruction": " make the cat red ", "name": "cat"},
        "",
        {"source": "after/cat.png", "target": "../outside.png", "instruction": "make it blue"},
    ])
    entries = scan_pairs(manifest)
    assert [entry.name for entry in entries] == ["cat", "line3"]  # default name: the line number
    assert entries[0].instruction == "make the cat red"
    assert entries[0].source_path == (data / "before" / "cat.png").resolve()
    assert entries[1].target_path == (tmp_path / "outside.png").resolve()  # paths that leave the folder resolve
    pair = PairDataset(entries)[0]
    assert torch.equal(pair.source[0, 0], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(pair.target[0, 0], torch.tensor([1.0, 0.0, 0.0]))


def test_manifest_in_folder_wins_over_pair_files(tmp_path, caplog):
    make_pair(tmp_path, "from_files")
    write_image(tmp_path / "orphan_src.png", solid(16, 16, RED_BGR))  # malformed, but ignored: the manifest wins
    write_manifest(tmp_path / "manifest.jsonl", [
        {"source": "from_files_tgt.png", "target": "from_files_src.png", "instruction": "undo", "name": "listed"},
    ])
    with caplog.at_level(logging.INFO, logger="imvideoedit_core.train.pair_scan"):
        entries = scan_pairs(tmp_path)
    assert [entry.name for entry in entries] == ["listed"]
    assert "manifest wins" in caplog.text


def test_stray_files_are_ignored_with_a_warning(tmp_path, caplog):
    make_pair(tmp_path, "good")
    (tmp_path / "README.txt").write_text("how this dataset was made", encoding="utf-8")
    (tmp_path / "notes.md").write_text("notes", encoding="utf-8")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "subfolder").mkdir()
    with caplog.at_level(logging.WARNING, logger="imvideoedit_core.train.pair_scan"):
        entries = scan_pairs(tmp_path)
    assert [entry.name for entry in entries] == ["good"]
    assert "README.txt" in caplog.text and "notes.md" in caplog.text and ".DS_Store" not in caplog.text


def test_non_ascii_names_and_folders(tmp_path):
    folder = tmp_path / "données"
    make_pair(folder, "猫", instruction="сделай кота синим")
    write_manifest(tmp_path / "清单.jsonl", [
        {"source": "données/猫_src.png", "target": "données/猫_tgt.png", "instruction": "bleu",
         "name": "chat été"},
    ])
    entries = scan_pairs(folder)
    assert entries[0].name == "猫" and entries[0].instruction == "сделай кота синим"
    assert PairDataset(entries)[0].source.shape == (32, 48, 3)
    assert scan_pairs(tmp_path / "清单.jsonl")[0].name == "chat été"


# ----------------------------------------------------------------------------------------------------------------
# Error reports


def test_folder_problems_are_listed_together(tmp_path, caplog):
    make_pair(tmp_path, "good")
    make_pair(tmp_path, "no_target")
    (tmp_path / "no_target_tgt.png").unlink()
    make_pair(tmp_path, "no_source")
    (tmp_path / "no_source_src.png").unlink()
    make_pair(tmp_path, "blank", instruction=" \n\t ")
    make_pair(tmp_path, "untold")
    (tmp_path / "untold.txt").unlink()
    make_pair(tmp_path, "corrupt")
    (tmp_path / "corrupt_tgt.png").write_bytes(b"this is not an image")
    make_pair(tmp_path, "mismatch", target_size=(16, 48))
    make_pair(tmp_path, "twice")
    write_image(tmp_path / "twice_src.jpg", solid(32, 48, RED_BGR))
    make_pair(tmp_path, "tiff")
    (tmp_path / "tiff_src.png").rename(tmp_path / "tiff_src.tif")

    error = scan_error(tmp_path)
    message = str(error)
    assert len(error.problems) == 8, message
    assert message.startswith(f"8 problems in {tmp_path}:")
    expected = {
        "no_target": "no target image no_target_tgt.*",
        "no_source": "no source image no_source_src.*",
        "blank": "empty instruction: blank.txt is empty or whitespace only",
        "untold": "no instruction file untold.txt",
        "corrupt": "target image corrupt_tgt.png cannot be decoded",
        "mismatch": "source is 32x48 but target is 16x48 (height x width)",
        "twice": "2 source images: twice_src.jpg, twice_src.png",
        "tiff": "source image tiff_src.tif has an unsupported extension",
    }
    for where, reason in expected.items():
        assert f"{where}: {reason}" in message
    assert "good" not in [problem.where for problem in error.problems]
    assert "resize_policy='resize_target'" in message  # the mismatch names the policy to choose instead


def test_manifest_problems_are_listed_together(tmp_path):
    write_image(tmp_path / "a.png", solid(16, 16, RED_BGR))
    write_image(tmp_path / "b.png", solid(16, 16, BLUE_BGR))
    good = {"source": "a.png", "target": "b.png", "instruction": "make it blue"}
    manifest = write_manifest(tmp_path / "pairs.jsonl", [
        {**good, "name": "first"},
        '{"source": "a.png", "target": "b.png",',
        '["a.png", "b.png", "make it blue"]',
        {**good, "instrution": "typo"},
        {"source": "a.png", "target": "b.png"},
        {**good, "instruction": "   "},
        {**good, "target": "missing.png"},
        {**good, "name": "first"},
        {**good, "name": 7},
    ])
    error = scan_error(manifest)
    message = str(error)
    assert message.startswith(f"8 problems in {manifest}:"), message
    for text in (
        "line 2: not valid JSON",
        "line 3: expected a JSON object, got list",
        "line 4: unknown key 'instrution'. Did you mean 'instruction'?",
        "line 5: missing key 'instruction'",
        "line 6: empty instruction",
        "line 7: target image 'missing.png' not found",
        "line 8: duplicate name 'first' (first used on line 1)",
        "line 9: 'name' is of type int, not a string",
    ):
        assert text in message
    assert "line 1:" not in message


def test_empty_or_missing_dataset_errors(tmp_path):
    (tmp_path / "notes.md").write_text("nothing here", encoding="utf-8")
    error = scan_error(tmp_path)
    expected = f"no pairs found in {tmp_path}: expected NAME_src.png, NAME_tgt.png, NAME.txt or a manifest.jsonl"
    assert expected in str(error)
    assert "has no entries" in str(scan_error(write_manifest(tmp_path / "empty.jsonl", [""])))
    assert "does not exist" in str(scan_error(tmp_path / "nowhere"))


def test_truncated_image_is_caught_by_decode_check_and_at_load(tmp_path):
    make_pair(tmp_path, "cut")
    target = tmp_path / "cut_tgt.png"
    random_pixels = np.random.default_rng(0).integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
    write_image(target, random_pixels)
    target.write_bytes(target.read_bytes()[:200])  # the header survives, the pixel data does not

    entries = scan_pairs(tmp_path)  # the default header check is cheap and cannot see this
    assert "cannot be decoded" in str(scan_error(tmp_path, check="decode"))
    with pytest.raises(PairDatasetError, match="cut_tgt.png: cannot be decoded"):
        PairDataset(entries)[0]


def test_error_message_is_capped_but_problems_are_complete():
    problems = [PairProblem(where=f"pair{i}", reason="broken", fix="fix it") for i in range(MAX_LISTED_PROBLEMS + 5)]
    error = PairDatasetError(problems, origin="somewhere")
    assert len(error.problems) == MAX_LISTED_PROBLEMS + 5
    assert "... and 5 more" in str(error)
    assert isinstance(error, ValueError)


def test_bad_options_raise_value_errors(tmp_path):
    make_pair(tmp_path, "a")
    entries = scan_pairs(tmp_path)
    with pytest.raises(ValueError, match="resize_policy='stretch' is not one of"):
        PairDataset(entries, resize_policy="stretch")
    with pytest.raises(ValueError, match="check='full' is not one of"):
        scan_pairs(tmp_path, check="full")
    with pytest.raises(ValueError, match="at least one entry"):
        PairDataset([])


# ----------------------------------------------------------------------------------------------------------------
# Sizes


def test_resize_policy_error_names_both_sizes(tmp_path):
    make_pair(tmp_path, "pair", source_size=(32, 48), target_size=(16, 24))
    message = str(scan_error(tmp_path, resize_policy="error"))
    assert "source is 32x48 but target is 16x24" in message and "resize_target" in message

    entry = scan_pairs(tmp_path, resize_policy="resize_target")[0]  # entries built elsewhere are checked at load
    with pytest.raises(PairDatasetError, match="source is 32x48 but target is 16x24"):
        PairDataset([entry], resize_policy="error")[0]


def test_resize_target_scales_target_to_source(tmp_path):
    make_pair(tmp_path, "pair", source_size=(32, 48), target_size=(16, 24))
    entries = scan_pairs(tmp_path, resize_policy="resize_target")
    pair = PairDataset(entries, resize_policy="resize_target")[0]
    assert pair.source.shape == (32, 48, 3) and pair.target.shape == (32, 48, 3)
    assert torch.allclose(pair.target, torch.tensor([0.0, 0.0, 1.0]).expand(32, 48, 3))


def test_size_scales_both_images(tmp_path):
    make_pair(tmp_path, "same", source_size=(40, 50))
    make_pair(tmp_path, "different", source_size=(32, 48), target_size=(100, 20))
    entries = scan_pairs(tmp_path, resize_policy="resize_target")
    dataset = PairDataset(entries, resize_policy="resize_target", size=(64, 32))
    for pair in (dataset[0], dataset[1]):
        assert pair.source.shape == (64, 32, 3) and pair.target.shape == (64, 32, 3)
        assert torch.allclose(pair.source, torch.tensor([1.0, 0.0, 0.0]).expand(64, 32, 3))
    from_path = PairDataset.from_path(tmp_path, resize_policy="resize_target", size=(16, 16))
    assert from_path[0].target.shape == (16, 16, 3)


def test_size_must_be_multiples_of_16():
    assert validate_size(None) is None
    assert validate_size([480, 832]) == (480, 832)
    with pytest.raises(ValueError, match=r"nearest valid size is \(496, 832\)"):
        validate_size((500, 833))
    with pytest.raises(ValueError, match=r"nearest valid size is \(16, 16\)"):
        validate_size((0, 5))
    with pytest.raises(ValueError, match="two integers"):
        validate_size((512,))
    with pytest.raises(ValueError, match="multiples of 16"):
        PairDataset([PairEntry("a", Path("a.png"), Path("b.png"), "x")], size=(100, 100))


# ----------------------------------------------------------------------------------------------------------------
# Pixel formats


def test_grayscale_becomes_rgb(tmp_path):
    path = write_image(tmp_path / "gray.png", np.full((8, 8), 51, dtype=np.uint8))
    image = read_image(path)
    assert image.shape == (8, 8, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image, 0.2, atol=1e-6)


def test_rgba_keeps_the_stored_colour_as_comfyui_load_image_does(tmp_path):
    pixels = np.zeros((4, 3, 4), dtype=np.uint8)  # BGRA
    pixels[..., 2] = 255  # red
    pixels[:, 0, 3] = 255  # opaque
    pixels[:, 1, 3] = 0  # transparent
    pixels[:, 2, 3] = 51  # alpha 0.2
    path = write_image(tmp_path / "rgba.png", pixels)
    image = read_image(path)
    assert image.shape == (4, 3, 3)
    np.testing.assert_allclose(image[0], [[1.0, 0.0, 0.0]] * 3, atol=1e-6)  # alpha dropped everywhere
    with Image.open(path) as pil:  # ComfyUI's Load Image: Image.convert("RGB")
        expected = np.asarray(pil.convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_array_equal(image, expected)


def test_16_bit_images_scale_to_unit_range(tmp_path):
    gray = np.full((5, 6), 16384, dtype=np.uint16)
    np.testing.assert_allclose(read_image(write_image(tmp_path / "g16.png", gray)), 16384 / 65535, atol=1e-7)
    color = np.zeros((5, 6, 3), dtype=np.uint16)
    color[..., 2] = 65535  # red in BGR
    color[..., 0] = 32768  # some blue
    image = read_image(write_image(tmp_path / "c16.png", color))
    np.testing.assert_allclose(image[2, 3], [1.0, 0.0, 32768 / 65535], atol=1e-7)


@pytest.mark.parametrize("name, params", [
    ("image.png", ()),
    ("image.jpg", ()),
    ("image.bmp", ()),
    ("lossy.webp", (cv2.IMWRITE_WEBP_QUALITY, 80)),
    ("lossless.webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),
    ("alpha.webp", ()),
])
def test_header_size_matches_decoded_size(tmp_path, monkeypatch, name, params):
    channels = 4 if name.startswith("alpha") else 3
    pixels = np.random.default_rng(1).integers(0, 256, size=(37, 53, channels), dtype=np.uint8)
    path = write_image(tmp_path / name, pixels, params)
    assert read_image(path).shape[:2] == (37, 53)
    monkeypatch.setattr(pair_scan, "read_image", lambda path: pytest.fail("fell back to a full decode"))
    assert read_image_size(path) == (37, 53)


# ----------------------------------------------------------------------------------------------------------------
# Batching


def test_batch_indices_is_deterministic_and_changes_with_epoch_and_seed():
    first = batch_indices(50, batch_size=4, seed=3, epoch=0)
    assert first == batch_indices(50, batch_size=4, seed=3, epoch=0)
    assert first != batch_indices(50, batch_size=4, seed=3, epoch=1)
    assert first != batch_indices(50, batch_size=4, seed=4, epoch=0)
    assert len(first) == 12 and all(len(batch) == 4 for batch in first)  # 50 // 4, the last 2 dropped
    flat = [index for batch in first for index in batch]
    assert len(set(flat)) == 48 and set(flat) <= set(range(50))


def test_batch_indices_shards_disjoint_and_equal_across_ranks():
    shards = [batch_indices(12, batch_size=3, seed=0, epoch=2, rank=rank, world_size=2) for rank in (0, 1)]
    assert [len(shard) for shard in shards] == [2, 2]
    flat = [[index for batch in shard for index in batch] for shard in shards]
    assert not set(flat[0]) & set(flat[1])
    assert sorted(flat[0] + flat[1]) == list(range(12))

    dropped = [batch_indices(11, batch_size=3, seed=0, epoch=2, rank=rank, world_size=2) for rank in (0, 1)]
    assert [[len(batch) for batch in shard] for shard in dropped] == [[3], [3]]  # 11 // 6 steps: 5 dropped


def test_batch_indices_without_drop_last_pads_to_cover_everything():
    shards = [batch_indices(11, batch_size=4, seed=5, epoch=0, rank=rank, world_size=2, drop_last=False)
              for rank in (0, 1)]
    assert [[len(batch) for batch in shard] for shard in shards] == [[4, 2], [4, 2]]
    flat = [index for shard in shards for batch in shard for index in batch]
    assert set(flat) == set(range(11)) and len(flat) == 12  # one index repeated to make the ranks equal
    assert batch_indices(3, batch_size=8, seed=0, epoch=0, drop_last=False) != []  # one short batch
    assert len(batch_indices(3, batch_size=8, seed=0, epoch=0, drop_last=False)[0]) == 3


def test_batch_indices_rejects_impossible_arguments():
    with pytest.raises(ValueError, match="drop_last=False"):
        batch_indices(5, batch_size=4, seed=0, epoch=0, world_size=2)
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        batch_indices(8, batch_size=2, seed=0, epoch=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size=0"):
        batch_indices(8, batch_size=0, seed=0, epoch=0)


def test_collate_stacks_channels_first(tmp_path):
    for name in ("a", "b", "c"):
        make_pair(tmp_path, name, instruction=f"edit {name}")
    dataset = PairDataset(scan_pairs(tmp_path))
    batch = collate([dataset[2], dataset[0]])
    assert batch.source.shape == (2, 3, 32, 48) and batch.target.shape == (2, 3, 32, 48)
    assert batch.names == ["c", "a"] and batch.instructions == ["edit c", "edit a"]
    assert torch.all(batch.source[:, 0] == 1.0) and torch.all(batch.source[:, 1:] == 0.0)
    assert batch.to("cpu", dtype=torch.float16).target.dtype == torch.float16

    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batch_indices(len(dataset), batch_size=3, seed=0, epoch=0), collate_fn=collate)
    assert [tuple(loaded.source.shape) for loaded in loader] == [(3, 3, 32, 48)]


def test_collate_rejects_mixed_sizes(tmp_path):
    make_pair(tmp_path, "small", source_size=(16, 16))
    make_pair(tmp_path, "large", source_size=(32, 48))
    dataset = PairDataset(scan_pairs(tmp_path))
    with pytest.raises(ValueError, match=r"share a size.*32x48: large; 16x16: small.*size=\(height, width\)"):
        collate([dataset[0], dataset[1]])


def test_pairs_from_image_batches():
    from imvideoedit_core.train.pair_dataset import pairs_from_tensors
    sources, targets = torch.rand(3, 16, 16, 3), torch.rand(3, 16, 16, 3)
    pairs = pairs_from_tensors(sources, targets, ["make it red"])
    assert [p.instruction for p in pairs] == ["make it red"] * 3 and torch.equal(pairs[2].target, targets[2])
    assert collate(pairs).source.shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="3 pairs but 2 instructions"):
        pairs_from_tensors(sources, targets, ["a", "b"])
    with pytest.raises(ValueError, match=r"pairs \[1\] have an empty instruction"):
        pairs_from_tensors(sources, targets, ["a", " ", "c"])
    with pytest.raises(ValueError, match="one target per source"):
        pairs_from_tensors(sources, targets[:2], ["a"])
