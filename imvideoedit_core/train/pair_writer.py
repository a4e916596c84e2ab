"""Build an image-pair dataset: append (source, edited, instruction) triples to a folder the trainer reads.

The folder gets the manifest layout of ``pairs`` (``manifest.jsonl`` plus the images under ``images/``)::

    append_pairs(folder, sources, targets, ["make the car red"] * len(sources))

- **Append-only.** Existing lines are never rewritten or reordered; new pairs go at the end.
- **Never half-written.** Images are written first, each through a temporary file and a rename; then the whole
  manifest (old bytes + new lines) is written to a temporary file and renamed over the old one. A crash leaves
  either the old manifest or the new one, never a torn line; at worst unreferenced images, which a retry of
  the same pairs reuses (their names are content hashes).
- **Duplicates skipped.** A pair's name is a hash of its pixels and instruction, so the same triple added twice
  (within one call or across calls) is stored once.
- **Checked first.** Sizes (source and target equal, both sides at least ``MIN_SIDE``), non-empty instructions
  and the existing manifest are checked before anything is written; a problem raises ``ValueError`` (or
  ``pairs.PairDatasetError`` for an unreadable manifest) and leaves the folder as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..io.files import atomic_write_bytes
from ..model.wan_strides import SIZE_MULTIPLE
from .pair_scan import MANIFEST_NAME, PairDatasetError, PairProblem

IMAGES_DIR = "images"
MIN_SIDE = SIZE_MULTIPLE  # px: one token
NAME_LENGTH = 16  # hex digits of the content hash that name a pair


@dataclass(frozen=True)
class AppendReport:
    folder: Path
    added: int      # new pairs written
    skipped: int    # duplicates of pairs already in the dataset (or earlier in the same call)
    total: int      # pairs in the manifest afterwards


def append_pairs(folder: str | os.PathLike, sources: torch.Tensor, targets: torch.Tensor,
                 instructions: Sequence[str]) -> AppendReport:
    """Append pairs to the dataset in ``folder`` (created if missing).

    sources, targets: (B, H, W, 3) in 0..1 (ComfyUI IMAGE layout; a 4th channel is dropped, as everywhere in the
    pack); instructions: B strings, or one for the whole batch.
    """
    folder = Path(folder)
    _check_images(sources, targets)
    instructions = _instructions(instructions, count=sources.shape[0])
    manifest = folder / MANIFEST_NAME
    old = _existing_manifest(folder)
    known = set(_names(old, manifest))
    entries: list[dict] = []
    for source, target, instruction in zip(sources, targets, instructions):
        src_png, tgt_png = _png(source), _png(target)
        name = _pair_name(src_png, tgt_png, instruction)
        if name in known:
            continue
        known.add(name)
        for role, data in (("src", src_png), ("tgt", tgt_png)):
            atomic_write_bytes(folder / IMAGES_DIR / f"{name}_{role}.png", data)
        entries.append({"source": f"{IMAGES_DIR}/{name}_src.png", "target": f"{IMAGES_DIR}/{name}_tgt.png",
                        "instruction": instruction, "name": name})
    if entries:
        head = old if not old or old.endswith(b"\n") else old + b"\n"
        lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode("utf-8")
        atomic_write_bytes(manifest, head + lines)
    return AppendReport(folder=folder, added=len(entries), skipped=len(instructions) - len(entries),
                        total=len(known))


def _instructions(instructions: Sequence[str], *, count: int) -> list[str]:
    texts = [str(t).strip() for t in ([instructions] if isinstance(instructions, str) else instructions)]
    if len(texts) == 1 and count > 1:
        texts = texts * count
    if len(texts) != count:
        raise ValueError(f"{len(texts)} instructions for {count} image pairs: give one instruction for the whole "
                         "batch or one per pair")
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        raise ValueError(f"the instruction of pair(s) {empty} is empty: write the edit that turns the source into "
                         "the edited image (e.g. 'make the car red')")
    return texts


def _check_images(sources: torch.Tensor, targets: torch.Tensor) -> None:
    for name, images in (("source images", sources), ("edited images", targets)):
        if images.ndim != 4 or images.shape[-1] not in (3, 4):
            raise ValueError(f"{name} must be an IMAGE batch (B, H, W, 3), got shape {tuple(images.shape)}")
    if sources.shape[0] != targets.shape[0]:
        raise ValueError(f"{sources.shape[0]} source images but {targets.shape[0]} edited images: give one edited "
                         "image per source image")
    (h, w), (th, tw) = sources.shape[1:3], targets.shape[1:3]
    if (h, w) != (th, tw):
        raise ValueError(f"the edited images are {tw}x{th} but the source images are {w}x{h}: scale the edited "
                         "images to the source's size (e.g. Upscale Image, crop disabled) before saving the pair")
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"the images are {w}x{h}; both sides must be at least {MIN_SIDE} px for the Wan VAE")


def _existing_manifest(folder: Path) -> bytes:
    """The manifest's bytes (b"" if there is none); refuses a folder whose folder-layout pairs it would hide."""
    manifest = folder / MANIFEST_NAME
    if manifest.is_file():
        return manifest.read_bytes()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder: pick a folder name for the dataset")
    if folder.is_dir() and any(p.stem.endswith(("_src", "_tgt")) for p in folder.iterdir() if p.is_file()):
        raise ValueError(f"{folder} holds NAME_src/NAME_tgt pairs without a {MANIFEST_NAME}; writing one would "
                         "hide them from training (the manifest wins): pick another folder for the new pairs")
    return b""


def _names(data: bytes, manifest: Path) -> list[str]:
    """The ``name`` of every manifest line; a line that is not a JSON object is an error (nothing is written)."""
    names, problems = [], []
    for number, line in enumerate(data.decode("utf-8-sig", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(PairProblem(where=f"{manifest.name} line {number}", reason=f"is not JSON ({error.msg})",
                                        fix="repair or delete that line"))
            continue
        if not isinstance(record, dict):
            problems.append(PairProblem(where=f"{manifest.name} line {number}", reason="is not a JSON object",
                                        fix="repair or delete that line"))
            continue
        names.append(str(record.get("name", f"line{number}")))
    if problems:
        raise PairDatasetError(problems, origin=str(manifest))
    return names


def _png(image: torch.Tensor) -> bytes:
    """(H, W, C) in 0..1 -> PNG bytes of its RGB channels, rounded to 8 bits."""
    pixels = np.clip(np.round(image[..., :3].detach().cpu().float().numpy() * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", compress_level=4)
    return buffer.getvalue()


def _pair_name(source_png: bytes, target_png: bytes, instruction: str) -> str:
    digest = hashlib.sha256()
    for part in (source_png, target_png, instruction.encode("utf-8")):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()[:NAME_LENGTH]
