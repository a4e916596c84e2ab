"""Image pairs for training the adapter: scan a dataset, load pairs lazily, batch them deterministically.

A training example is a before image, an after image and the instruction that turns one into the other. Two
layouts are read:

1. Folder layout, files directly in one folder (sub-folders are not searched)::

       cat_src.png   cat_tgt.png   cat.txt      # source, target, instruction (UTF-8; stripped)
       dog_src.jpg   dog_tgt.jpg   dog.txt

   Image extensions: png, jpg, jpeg, webp, bmp, in any letter case; ``.txt`` in any letter case. The suffixes
   ``_src`` and ``_tgt`` are lower case. Pairs are sorted by NAME. Files that match neither pattern, and ``.txt``
   files without any image of the same NAME, are ignored and listed in one logged warning; hidden files (a leading
   dot, e.g. ``.DS_Store``) are ignored silently.

2. JSONL manifest: ``manifest.jsonl`` in the folder, or any file passed explicitly. One JSON object per line::

       {"source": "before/cat.png", "target": "after/cat.png", "instruction": "make the cat orange", "name": "cat"}

   ``source``, ``target`` and ``instruction`` are required, ``name`` is optional (default ``line<N>``, N the
   1-based line number). Relative paths are resolved against the manifest's folder; absolute paths are used as
   they are. Blank lines are skipped. Entries keep the manifest's order. Any format OpenCV decodes is accepted.

   **The manifest wins**: a folder that holds ``manifest.jsonl`` is read through the manifest only, and its
   ``NAME_src``/``NAME_tgt`` files are ignored (a logged message says so).

``scan_pairs`` checks every entry before training starts and raises one ``PairDatasetError`` that lists every
problem found, each with what to do about it. Images are checked cheaply by default (``check="header"``: the size
is read from the file header, falling back to a full decode for formats the header reader does not know), which
catches missing, empty, mislabelled and non-image files and size mismatches in milliseconds for thousands of pairs.
Pixel data that is corrupt behind a valid header (a truncated download) is only caught by ``check="decode"``,
which decodes every image once; otherwise it fails later, at load time, with an error that names the file.

Pixels: ``cv2.imdecode`` of the raw bytes (so non-ASCII paths work), converted to RGB float32 in 0..1 with shape
[H, W, 3]. Grayscale is repeated to three channels; an alpha channel is dropped (``images``: the pack's one policy, as
ComfyUI's Load Image); 16-bit images are divided by 65535. EXIF orientation is ignored (pixels are used as stored, the same way for source and target, so
a pair stays aligned).

Sizes: ``resize_policy="error"`` requires source and target to have the same size; ``"resize_target"`` scales each
target to its source's size. Independently, ``size=(height, width)`` (multiples of 16) scales both images of every
pair to one size, stretching if the aspect ratio differs. Batches need one size for all their pairs.
"""

from __future__ import annotations

import difflib
import json
import logging
import operator
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from ..io.images import opencv_to_rgb
from ..model.wan_strides import SIZE_MULTIPLE

logger = logging.getLogger(__name__)

ResizePolicy = Literal["error", "resize_target"]
RESIZE_POLICIES: tuple[str, ...] = ("error", "resize_target")
ScanCheck = Literal["header", "decode"]
SCAN_CHECKS: tuple[str, ...] = ("header", "decode")

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MANIFEST_NAME = "manifest.jsonl"
MANIFEST_REQUIRED_KEYS: tuple[str, ...] = ("source", "target", "instruction")
MANIFEST_OPTIONAL_KEYS: tuple[str, ...] = ("name",)
MAX_LISTED_PROBLEMS = 50  # the error message lists this many; PairDatasetError.problems holds them all

_EXTENSIONS_TEXT = ", ".join(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
_PAIR_IMAGE = re.compile(r"^(?P<name>.+)_(?P<role>src|tgt)\.(?P<ext>[^.]+)$")
_INSTRUCTION_FILE = re.compile(r"^(?P<name>.+)\.txt$", re.IGNORECASE)


# ----------------------------------------------------------------------------------------------------------------
# Data types and the error


@dataclass(frozen=True)
class PairProblem:
    """One malformed entry: where it is, what is wrong, and what to do about it."""

    where: str  # a pair name, a file name or "line 7"
    reason: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}. {self.fix[:1].upper()}{self.fix[1:]}."


class PairDatasetError(ValueError):
    """A dataset of image pairs that cannot be used; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: Sequence[PairProblem], *, origin: str) -> None:
        self.problems = list(problems)
        self.origin = origin
        count = len(self.problems)
        lines = [f"{count} problem{'s' if count != 1 else ''} in {origin}:"]
        lines += [f"  - {problem}" for problem in self.problems[:MAX_LISTED_PROBLEMS]]
        if count > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {count - MAX_LISTED_PROBLEMS} more (all of them are in the error's .problems)")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class PairEntry:
    """One checked, not yet loaded pair: where its images are and what the edit is."""

    name: str
    source_path: Path
    target_path: Path
    instruction: str


@dataclass
class ImagePair:
    """One loaded pair; ``source`` and ``target`` are float32 RGB in 0..1, [H, W, 3] (ComfyUI's IMAGE layout)."""

    name: str
    source: torch.Tensor  # [H, W, 3]
    target: torch.Tensor  # [H, W, 3]
    instruction: str


@dataclass
class PairBatch:
    """Pairs stacked channels-first for the VAE: ``source`` and ``target`` are float32 in 0..1, [B, 3, H, W]."""

    source: torch.Tensor  # [B, 3, H, W]
    target: torch.Tensor  # [B, 3, H, W]
    instructions: list[str]
    names: list[str]

    def to(self, device: torch.device | str, *, dtype: torch.dtype | None = None) -> PairBatch:
        """The same batch with both image tensors moved to ``device`` (and cast to ``dtype`` when given)."""
        return PairBatch(
            source=self.source.to(device=device, dtype=dtype),
            target=self.target.to(device=device, dtype=dtype),
            instructions=list(self.instructions),
            names=list(self.names),
        )


# ----------------------------------------------------------------------------------------------------------------
# Reading images


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to RGB float32 in 0..1, [H, W, 3]; raises PairDatasetError if it cannot be read."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)  # raw bytes: works where cv2.imread fails on non-ASCII paths
    except OSError as error:
        raise _image_error(path, f"cannot be read ({error.strerror or error})", "check that the file exists") from error
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None  # [H, W], [H, W, C] BGR(A)
    if pixels is None:
        raise _image_error(path, "cannot be decoded (corrupt, truncated or not an image)", "re-export it as PNG")
    return _to_rgb_float(pixels, path)


def _to_rgb_float(pixels: np.ndarray, path: Path) -> np.ndarray:
    """[H, W] gray, [H, W, 1|3|4] BGR(A), uint8 or uint16 -> [H, W, 3] RGB float32 in 0..1 (alpha dropped:
    ``images.opencv_to_rgb``)."""
    scales = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
    if pixels.dtype not in scales:
        raise _image_error(path, f"has {pixels.dtype} pixels, only 8- and 16-bit are read", "re-export it as PNG")
    try:
        rgb = opencv_to_rgb(pixels)
    except ValueError as error:
        raise _image_error(path, str(error), "re-export it as an RGB or RGBA PNG") from None
    return rgb.astype(np.float32) / scales[pixels.dtype]


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image from its header (Pillow opens lazily and reads no pixel data); a file Pillow
    does not recognise is fully decoded, so that the decoder gives the verdict."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError as error:
        raise _image_error(path, f"cannot be read ({error.strerror or error})", "check that the file exists") from error
    except Image.DecompressionBombError as error:
        raise _image_error(path, f"is too large to read safely ({error})", "scale it down") from error
    except (OSError, ValueError):  # not an image Pillow knows: let the decoder give its verdict
        return read_image(path).shape[:2]
    return height, width


def _image_error(path: Path, reason: str, fix: str) -> PairDatasetError:
    return PairDatasetError([PairProblem(where=path.name, reason=reason, fix=fix)], origin=str(path))


# ----------------------------------------------------------------------------------------------------------------
# Scanning a dataset


@dataclass(frozen=True)
class _Found:
    """A structurally valid entry and how to refer to it in a problem report."""

    entry: PairEntry
    where: str


def scan_pairs(
    path: str | os.PathLike,
    *,
    resize_policy: ResizePolicy = "error",
    check: ScanCheck = "header",
) -> list[PairEntry]:
    """Every pair of a folder or JSONL manifest (see the module docstring), checked up front.

    Raises one PairDatasetError listing every malformed entry. Under ``resize_policy="error"`` pairs whose source
    and target sizes differ are among them. ``check="decode"`` fully decodes every image instead of reading headers.
    """
    resize_policy = validate_resize_policy(resize_policy)
    if check not in SCAN_CHECKS:
        raise ValueError(f"check={check!r} is not one of {SCAN_CHECKS}: use 'header' (fast) or 'decode' (thorough)")
    path = Path(path)
    if not path.exists():
        fix = "pass a folder of NAME_src/NAME_tgt/NAME.txt files or a JSONL manifest"
        raise PairDatasetError([PairProblem(where=path.name, reason="does not exist", fix=fix)], origin=str(path))
    manifest = path if path.is_file() else path / MANIFEST_NAME
    problems: list[PairProblem] = []
    if manifest.is_file():
        if manifest != path:
            logger.info("%s: using %s; NAME_src/NAME_tgt/NAME.txt files here are ignored (the manifest wins)",
                        path, MANIFEST_NAME)
        origin = manifest
        found = _scan_manifest(manifest, problems)
    else:
        origin = path
        found = _scan_folder(path, problems)
    problems += _check_images(found, resize_policy=resize_policy, check=check)
    if problems:
        raise PairDatasetError(problems, origin=str(origin))
    if not found:
        raise PairDatasetError([_nothing_found(origin, is_manifest=origin == manifest)], origin=str(origin))
    logger.info("%s: %d image pairs", origin, len(found))
    return [item.entry for item in found]


def _nothing_found(origin: Path, *, is_manifest: bool) -> PairProblem:
    if is_manifest:
        fix = 'add one line per pair: {"source": "a.png", "target": "b.png", "instruction": "..."}'
        return PairProblem(where=origin.name, reason="the manifest has no entries", fix=fix)
    reason = f"no pairs found in {origin}: expected NAME_src.png, NAME_tgt.png, NAME.txt or a {MANIFEST_NAME}"
    fix = f"add pairs (image extensions: {_EXTENSIONS_TEXT}), or point to the folder that holds them"
    return PairProblem(where=origin.name, reason=reason, fix=fix)


def _scan_folder(folder: Path, problems: list[PairProblem]) -> list[_Found]:
    """Group a folder's files by NAME and role; every complete, well-formed group becomes an entry."""
    files: dict[str, dict[str, list[Path]]] = {}  # name -> role ("src", "tgt", "txt") -> files
    stray: list[str] = []
    for file in sorted(folder.iterdir()):
        if file.name.startswith(".") or not file.is_file():
            continue
        image = _PAIR_IMAGE.match(file.name)
        text = _INSTRUCTION_FILE.match(file.name)
        if image:
            files.setdefault(image["name"], {}).setdefault(image["role"], []).append(file)
        elif text:
            files.setdefault(text["name"], {}).setdefault("txt", []).append(file)
        else:
            stray.append(file.name)
    found = []
    for name in sorted(files):
        roles = files[name]
        if "src" not in roles and "tgt" not in roles:
            stray += [file.name for file in roles["txt"]]  # a README.txt, not an instruction
            continue
        entry = _folder_entry(name, roles, problems)
        if entry is not None:
            found.append(_Found(entry=entry, where=name))
    if stray:
        shown = ", ".join(sorted(stray)[:10]) + (", ..." if len(stray) > 10 else "")
        logger.warning("%s: ignored %d file(s) that belong to no pair: %s", folder, len(stray), shown)
    return found


def _folder_entry(name: str, roles: dict[str, list[Path]], problems: list[PairProblem]) -> PairEntry | None:
    """The entry for one NAME's files, or None after adding what is wrong with them to ``problems``."""
    count_before = len(problems)
    others = ", ".join(file.name for files in roles.values() for file in files)
    source = _one_image(name, "src", roles.get("src", []), others, problems)
    target = _one_image(name, "tgt", roles.get("tgt", []), others, problems)
    instruction = _one_instruction(name, roles.get("txt", []), problems)
    if len(problems) > count_before:
        return None
    return PairEntry(name=name, source_path=source, target_path=target, instruction=instruction)


def _one_image(name: str, role: str, files: list[Path], others: str, problems: list[PairProblem]) -> Path | None:
    """The single supported image of one role, or None after reporting a missing, unsupported or doubled one."""
    label = "source" if role == "src" else "target"
    supported = [file for file in files if file.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        reason = f"no {label} image {name}_{role}.* next to {others}"
        fix = f"add {name}_{role}.png ({_EXTENSIONS_TEXT}), or remove the pair's other files"
    elif not supported:
        reason = f"{label} image {files[0].name} has an unsupported extension"
        fix = f"convert it to one of {_EXTENSIONS_TEXT}"
    elif len(supported) > 1:
        reason = f"{len(supported)} {label} images: {', '.join(file.name for file in supported)}"
        fix = "keep one of them"
    else:
        return supported[0]
    problems.append(PairProblem(where=name, reason=reason, fix=fix))
    return None


def _one_instruction(name: str, files: list[Path], problems: list[PairProblem]) -> str | None:
    """The stripped text of NAME.txt, or None after reporting a missing, doubled, undecodable or empty file."""
    if len(files) != 1:
        reason = f"no instruction file {name}.txt" if not files else f"{len(files)} instruction files"
        fix = f"write the edit instruction, as UTF-8 text, into one {name}.txt"
        problems.append(PairProblem(where=name, reason=reason, fix=fix))
        return None
    try:
        instruction = files[0].read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError:
        problems.append(PairProblem(where=name, reason=f"{files[0].name} is not UTF-8 text", fix="save it as UTF-8"))
        return None
    if not instruction:
        reason = f"empty instruction: {files[0].name} is empty or whitespace only"
        problems.append(PairProblem(where=name, reason=reason, fix="write the edit instruction into it"))
        return None
    return instruction


def _scan_manifest(manifest: Path, problems: list[PairProblem]) -> list[_Found]:
    """One entry per well-formed manifest line; every malformed line adds its problems."""
    try:
        lines = manifest.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        problems.append(PairProblem(where=manifest.name, reason="is not UTF-8 text", fix="save it as UTF-8"))
        return []
    found: list[_Found] = []
    first_line_of: dict[str, int] = {}  # name -> line number where it first appeared
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        entry = _manifest_entry(line, number=number, base=manifest.parent, problems=problems)
        if entry is None:
            continue
        if entry.name in first_line_of:
            reason = f"duplicate name {entry.name!r} (first used on line {first_line_of[entry.name]})"
            problems.append(PairProblem(where=f"line {number}", reason=reason, fix="give every entry its own name"))
            continue
        first_line_of[entry.name] = number
        found.append(_Found(entry=entry, where=f"line {number} ({entry.name})"))
    return found


def _manifest_entry(line: str, *, number: int, base: Path, problems: list[PairProblem]) -> PairEntry | None:
    """The entry for one manifest line, or None after adding what is wrong with it to ``problems``."""
    where = f"line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        fix = 'write one object per line, e.g. {"source": "a.png", "target": "b.png", "instruction": "..."}'
        problems.append(PairProblem(where=where, reason=f"not valid JSON ({error.msg}, column {error.colno})", fix=fix))
        return None
    if not isinstance(record, dict):
        reason = f"expected a JSON object, got {type(record).__name__}"
        problems.append(PairProblem(where=where, reason=reason, fix="write one JSON object per line"))
        return None
    count_before = len(problems)
    problems += _manifest_key_problems(record, where)
    if len(problems) > count_before:
        return None
    source = _manifest_path(record["source"], role="source", base=base, where=where, problems=problems)
    target = _manifest_path(record["target"], role="target", base=base, where=where, problems=problems)
    instruction = record["instruction"].strip()
    if not instruction:
        problems.append(PairProblem(where=where, reason="empty instruction", fix="write the edit instruction"))
    name = record.get("name", f"line{number}")
    if not name.strip():
        problems.append(PairProblem(where=where, reason="empty name", fix="give it a name or leave the key out"))
    if len(problems) > count_before:
        return None
    return PairEntry(name=name, source_path=source, target_path=target, instruction=instruction)


def _manifest_key_problems(record: dict, where: str) -> list[PairProblem]:
    """Unknown, missing and non-string keys of one manifest object."""
    allowed = MANIFEST_REQUIRED_KEYS + MANIFEST_OPTIONAL_KEYS
    problems = []
    for key in record:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "remove it"
            fix = f"{hint} (allowed keys: {', '.join(allowed)})"
            problems.append(PairProblem(where=where, reason=f"unknown key {key!r}", fix=fix))
    for key in MANIFEST_REQUIRED_KEYS:
        if key not in record:
            problems.append(PairProblem(where=where, reason=f"missing key {key!r}", fix=f"add \"{key}\": \"...\""))
    for key in allowed:
        if key in record and not isinstance(record[key], str):
            reason = f"{key!r} is of type {type(record[key]).__name__}, not a string"
            problems.append(PairProblem(where=where, reason=reason, fix="write it as a JSON string"))
    return problems


def _manifest_path(raw: str, *, role: str, base: Path, where: str, problems: list[PairProblem]) -> Path | None:
    """``raw`` resolved against the manifest's folder, or None after reporting a file that is not there."""
    path = (base / raw).resolve()
    if path.is_file():
        return path
    reason = f"{role} image {raw!r} not found (looked for {path})"
    fix = "fix the path (relative paths start at the manifest's folder) or remove the line"
    problems.append(PairProblem(where=where, reason=reason, fix=fix))
    return None


def _check_images(found: Sequence[_Found], *, resize_policy: ResizePolicy, check: ScanCheck) -> list[PairProblem]:
    """Problems with the image files themselves: unreadable ones, and mismatched sizes under policy "error"."""
    problems = []
    for item in found:
        sizes = {}
        for role, path in (("source", item.entry.source_path), ("target", item.entry.target_path)):
            try:
                sizes[role] = read_image_size(path) if check == "header" else read_image(path).shape[:2]
            except PairDatasetError as error:
                problems += [PairProblem(where=item.where, reason=f"{role} image {p.where} {p.reason}", fix=p.fix)
                             for p in error.problems]
        if len(sizes) == 2 and sizes["source"] != sizes["target"] and resize_policy == "error":
            problems.append(_size_mismatch(item.where, source=sizes["source"], target=sizes["target"]))
    return problems


def _size_mismatch(where: str, *, source: tuple[int, int], target: tuple[int, int]) -> PairProblem:
    reason = (f"source is {source[0]}x{source[1]} but target is {target[0]}x{target[1]} (height x width) "
              f"under resize_policy='error'")
    fix = "make both images the same size, or choose resize_policy='resize_target' to scale targets to their sources"
    return PairProblem(where=where, reason=reason, fix=fix)


# ----------------------------------------------------------------------------------------------------------------
# Loading pairs


def validate_resize_policy(resize_policy: str) -> ResizePolicy:
    """``resize_policy`` itself if it is one of RESIZE_POLICIES, else a ValueError naming the choices."""
    if resize_policy not in RESIZE_POLICIES:
        raise ValueError(f"resize_policy={resize_policy!r} is not one of {RESIZE_POLICIES}: 'error' requires "
                         "equal source and target sizes, 'resize_target' scales each target to its source's size")
    return resize_policy


def validate_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    """``size`` as a (height, width) tuple of positive multiples of 16, or None; otherwise a ValueError."""
    if size is None:
        return None
    try:
        height, width = (operator.index(value) for value in size)
    except (TypeError, ValueError):
        raise ValueError(f"size={size!r} must be None or (height, width), two integers") from None
    if height > 0 and width > 0 and height % SIZE_MULTIPLE == 0 and width % SIZE_MULTIPLE == 0:
        return height, width
    nearest = tuple(max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE) for value in (height, width))
    raise ValueError(f"size=({height}, {width}) must be (height, width) positive multiples of {SIZE_MULTIPLE} "
                     f"(the VAE downsamples by 8, the patch embedding by 2): the nearest valid size is {nearest}")


class PairDataset:
    """Loads checked pairs lazily, one ``ImagePair`` per index; usable as a torch Dataset.

    ``resize_policy`` reconciles a target with its source ("error" or "resize_target"); ``size`` (height, width),
    if given, then scales both images to that size. Use with ``batch_indices`` and ``collate``, e.g.
    ``DataLoader(dataset, batch_sampler=batch_indices(len(dataset), ...), collate_fn=collate)``.
    """

    def __init__(
        self,
        entries: Sequence[PairEntry],
        *,
        resize_policy: ResizePolicy = "error",
        size: tuple[int, int] | None = None,
    ) -> None:
        if not entries:
            raise ValueError("PairDataset needs at least one entry: build them with scan_pairs(folder)")
        self.entries = list(entries)
        self.resize_policy = validate_resize_policy(resize_policy)
        self.size = validate_size(size)

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike,
        *,
        resize_policy: ResizePolicy = "error",
        size: tuple[int, int] | None = None,
        check: ScanCheck = "header",
    ) -> PairDataset:
        """``scan_pairs`` then the dataset, with the same resize policy for both."""
        validate_size(size)  # fail on a bad size before a long scan
        entries = scan_pairs(path, resize_policy=resize_policy, check=check)
        return cls(entries, resize_policy=resize_policy, size=size)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> ImagePair:
        entry = self.entries[index]
        source = read_image(entry.source_path)  # [Hs, Ws, 3]
        target = read_image(entry.target_path)  # [Ht, Wt, 3]
        if source.shape != target.shape:
            if self.resize_policy == "error":
                problem = _size_mismatch(entry.name, source=source.shape[:2], target=target.shape[:2])
                raise PairDatasetError([problem], origin=str(entry.source_path.parent))
            target = _resize(target, height=source.shape[0], width=source.shape[1])  # [Hs, Ws, 3]
        if self.size is not None:
            source = _resize(source, height=self.size[0], width=self.size[1])  # [H, W, 3]
            target = _resize(target, height=self.size[0], width=self.size[1])  # [H, W, 3]
        return ImagePair(
            name=entry.name,
            source=torch.from_numpy(source),
            target=torch.from_numpy(target),
            instruction=entry.instruction,
        )


def _resize(image: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """[h, w, 3] -> [height, width, 3]; area averaging when shrinking, bilinear otherwise (no overshoot)."""
    if image.shape[:2] == (height, width):
        return image
    shrinking = height <= image.shape[0] and width <= image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=interpolation))


# ----------------------------------------------------------------------------------------------------------------
# Batching


def batch_indices(
    n: int,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
) -> list[list[int]]:
    """This rank's batches of dataset indices for one epoch; the same on every machine for the same arguments.

    One permutation of range(n) per (seed, epoch) is shared by all ranks. Step k takes the next
    ``batch_size * world_size`` indices of it and rank r gets the r-th slice of ``batch_size``, so ranks are
    disjoint and all get the same number of equally long batches. ``drop_last=True`` drops the tail that does not
    fill a whole step (a different tail each epoch). ``drop_last=False`` pads the permutation with its own first
    indices until its length divides by ``world_size`` (at most world_size - 1 repeats, as torch's
    DistributedSampler does), and the last batch of every rank is then shorter than ``batch_size`` but equal.
    """
    _check_batching(n, batch_size=batch_size, seed=seed, epoch=epoch, rank=rank, world_size=world_size)
    mixed_seed = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator().manual_seed(int(mixed_seed))
    order = torch.randperm(n, generator=generator).tolist()
    step = batch_size * world_size
    if drop_last:
        if n < step:
            raise ValueError(f"{n} pairs do not fill one step of batch_size={batch_size} x world_size={world_size} "
                             "with drop_last=True: lower batch_size or pass drop_last=False")
        order = order[: n - n % step]
    else:
        padding = -n % world_size
        order += [order[i % n] for i in range(padding)]
    batches = []
    for start in range(0, len(order), step):
        share = min(step, len(order) - start) // world_size  # batch_size, or less in the last, padded step
        first = start + rank * share
        batches.append(order[first : first + share])
    return batches


def _check_batching(n: int, *, batch_size: int, seed: int, epoch: int, rank: int, world_size: int) -> None:
    """ValueErrors for arguments of batch_indices that cannot work."""
    if n < 1:
        raise ValueError(f"n={n}: there must be at least one pair to batch")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed={seed} and epoch={epoch} must be non-negative integers")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank}, world_size={world_size}: need world_size >= 1 and 0 <= rank < world_size")


def collate(pairs: Sequence[ImagePair]) -> PairBatch:
    """Stack loaded pairs into a channels-first batch; all pairs must have the same size."""
    if not pairs:
        raise ValueError("collate needs at least one pair")
    names_by_size: dict[tuple[int, int], list[str]] = {}
    for pair in pairs:
        names_by_size.setdefault(tuple(pair.source.shape[:2]), []).append(pair.name)
    for pair in pairs:
        if pair.target.shape != pair.source.shape:
            raise ValueError(f"pair {pair.name!r}: source {tuple(pair.source.shape)} and target "
                             f"{tuple(pair.target.shape)} differ in shape; load pairs through PairDataset")
    if len(names_by_size) > 1:
        sizes = "; ".join(f"{h}x{w}: {', '.join(names)}" for (h, w), names in names_by_size.items())
        raise ValueError(f"pairs in one batch must share a size, got (height x width) {sizes}. "
                         "Pass size=(height, width) to PairDataset to scale every pair to one size")
    source = torch.stack([pair.source for pair in pairs])  # [B, H, W, 3]
    target = torch.stack([pair.target for pair in pairs])  # [B, H, W, 3]
    return PairBatch(
        source=source.permute(0, 3, 1, 2).contiguous(),  # [B, H, W, 3] -> [B, 3, H, W]
        target=target.permute(0, 3, 1, 2).contiguous(),  # [B, H, W, 3] -> [B, 3, H, W]
        instructions=[pair.instruction for pair in pairs],
        names=[pair.name for pair in pairs],
    )


def pairs_from_tensors(sources: torch.Tensor, targets: torch.Tensor, instructions: Sequence[str]) -> list[ImagePair]:
    """Pairs from image batches [N, H, W, 3] (ComfyUI IMAGE) and one instruction per pair (or one for all)."""
    if sources.ndim != 4 or sources.shape[-1] < 3 or sources.shape[:3] != targets.shape[:3]:
        raise ValueError(f"source images {tuple(sources.shape)} and target images {tuple(targets.shape)} must be "
                         "batches [N, H, W, 3] of the same count and size: one target per source")
    texts = [t.strip() for t in instructions]
    if len(texts) == 1:
        texts = texts * sources.shape[0]
    if len(texts) != sources.shape[0]:
        raise ValueError(f"{sources.shape[0]} pairs but {len(texts)} instructions: give one instruction per line "
                         "for each pair, or a single line for all of them")
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        raise ValueError(f"pairs {empty} have an empty instruction: every pair needs one")
    return [ImagePair(name=f"pair{i:04d}", source=sources[i, :, :, :3].float(), target=targets[i, :, :, :3].float(),
                      instruction=texts[i]) for i in range(sources.shape[0])]
