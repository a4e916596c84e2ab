"""Image-pair datasets, scanned: find every (source, target, instruction) of a folder or manifest and check it
before training starts (loading is ``pair_dataset``, batching ``pair_batches``, writing ``pair_writer``).

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
[H, W, 3]. Grayscale is repeated to three channels; an alpha channel is dropped (``io.images``: the pack's one
policy, as ComfyUI's Load Image); 16-bit images are divided by 65535. EXIF orientation is ignored (pixels are used as
stored, the same way for source and target, so a pair stays aligned). Under ``resize_policy="error"`` a pair whose
source and target sizes differ is a problem; ``"resize_target"`` lets ``pair_dataset`` scale the target.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import cv2
import numpy as np
from PIL import Image

from ..io.images import opencv_to_rgb

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
            problems.append(size_mismatch(item.where, source=sizes["source"], target=sizes["target"]))
    return problems


def size_mismatch(where: str, *, source: tuple[int, int], target: tuple[int, int]) -> PairProblem:
    reason = (f"source is {source[0]}x{source[1]} but target is {target[0]}x{target[1]} (height x width) "
              f"under resize_policy='error'")
    fix = "make both images the same size, or choose resize_policy='resize_target' to scale targets to their sources"
    return PairProblem(where=where, reason=reason, fix=fix)


def validate_resize_policy(resize_policy: str) -> ResizePolicy:
    """``resize_policy`` itself if it is one of RESIZE_POLICIES, else a ValueError naming the choices."""
    if resize_policy not in RESIZE_POLICIES:
        raise ValueError(f"resize_policy={resize_policy!r} is not one of {RESIZE_POLICIES}: 'error' requires "
                         "equal source and target sizes, 'resize_target' scales each target to its source's size")
    return resize_policy
