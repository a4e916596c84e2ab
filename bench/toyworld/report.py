"""Where ToyWorld feature measurements land: a section of ``results.json`` and a block of ``docs/toyworld.md``.

The main evaluation (``evaluate.py``) owns the ``systems``/``overall`` tables; each feature measurement
(long videos, masks, keyframe tuning, strength) owns one entry under ``features`` and one marked block in the
report, so the measurements can be rerun one at a time without touching each other.
"""

from __future__ import annotations

import fcntl
import json
import re
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
REPORT = HERE.parents[1] / "docs" / "toyworld.md"
FEATURES_KEY = "features"


@contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path``.lock, so two measurements finishing together do not lose an update."""
    with open(path.with_suffix(path.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def save_feature_results(name: str, results: dict, *, path: Path = RESULTS) -> None:
    """Store ``results`` as ``features[name]`` in results.json, keeping everything else."""
    with _locked(path):
        data = json.loads(path.read_text()) if path.is_file() else {}
        data.setdefault(FEATURES_KEY, {})[name] = results
        _write(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def keep_feature_results(new_results: dict, *, path: Path = RESULTS) -> dict:
    """``new_results`` (a fresh main evaluation) with the feature sections already stored in ``path``."""
    if path.is_file():
        old = json.loads(path.read_text())
        if FEATURES_KEY in old:
            return {**new_results, FEATURES_KEY: old[FEATURES_KEY]}
    return new_results


def write_feature_section(name: str, markdown: str, *, path: Path = REPORT) -> None:
    """Replace the block between ``<!-- name:begin -->`` and ``<!-- name:end -->``, appending it if missing."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    with _locked(path):
        text = path.read_text()
        if begin in text:
            text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        _write(path, text)


def quick_flag(doc: str, help_text: str) -> bool:
    """Parse a measurement's command line (only ``--quick``) and pin it to one thread; True for a smoke run."""
    import argparse
    import torch
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=help_text)
    quick = parser.parse_args().quick
    torch.set_num_threads(1)
    return quick


def publish(name: str, results: dict, markdown: str, *, write: bool) -> None:
    """Print a measurement's section; with ``write``, store it in results.json and the report too."""
    print(markdown)
    if write:
        save_feature_results(name, results)
        write_feature_section(name, markdown)


def markdown_rows(header: list[str], rows: list[list]) -> str:
    """A markdown table; floats with 3 decimals, None as '-'."""
    def cell(v) -> str:
        if v is None:
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
