"""Where ToyWorld feature measurements land: a section of ``results.json`` and a block of ``docs/toyworld.md``.

The main evaluation (``evaluate.py``) owns the ``systems``/``overall`` tables; each feature measurement
(long videos, masks, keyframe tuning, strength) owns one entry under ``features`` and one marked block in the
report, so the measurements can be rerun one at a time without touching each other.

A measurement of a candidate backbone (``--models DIR`` other than the bundled ``models/``) lands in that folder's
own ``features.json`` and in report blocks named ``NAME@DIR``: measuring a candidate never overwrites the bundled
models' numbers (as ``evaluate --models DIR --no-write`` keeps its results in ``DIR/evaluation.json``).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .models import MODELS_DIR

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


@dataclass(frozen=True)
class Record:
    """Where measurements on the ToyWorld models in ``models`` land (see the module docstring)."""

    models: Path = MODELS_DIR
    report: Path = REPORT

    @property
    def bundled(self) -> bool:
        return self.models.resolve() == MODELS_DIR.resolve()

    @property
    def results(self) -> Path:
        return RESULTS if self.bundled else self.models / "features.json"

    def command(self, module: str) -> str:
        """How to rerun measurement ``module`` (a module of bench.toyworld) on these models."""
        return f"python -m bench.toyworld.{module}" + ("" if self.bundled else f" --models {self.models}")

    def section(self, name: str) -> str:
        return name if self.bundled else f"{name}@{self.models.name}"

    def stored(self, name: str) -> dict | None:
        """The stored results of measurement ``name``, or None."""
        return json.loads(self.results.read_text()).get(FEATURES_KEY, {}).get(name) if self.results.is_file() else None

    def save(self, name: str, results: dict, render: Callable[[dict], str]) -> str:
        """Store ``results``, then render them and write the report block; the rendered markdown. The numbers are
        stored first, so a report that fails to render never costs the measurement."""
        save_feature_results(name, results, path=self.results)
        markdown = render(results)
        write_feature_section(self.section(name), markdown if self.bundled else self.retitled(markdown),
                              path=self.report)
        return markdown

    def retitled(self, markdown: str) -> str:
        """A candidate's block sits inside its backbone's section: headings one level down, the folder named."""
        lines = re.sub(r"^(#+) ", r"\1# ", markdown.strip(), flags=re.M).split("\n")
        if lines[0].startswith("#"):
            lines[0] += f" (models: `{self.models}`)"
        return "\n".join(lines)


@dataclass(frozen=True)
class MeasurementArgs:
    quick: bool = False
    record: Record = field(default_factory=Record)


def add_models_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=Path, default=MODELS_DIR,
                        help="folder of the ToyWorld models to measure (default: the bundled ones); another folder "
                             "keeps its results in FOLDER/features.json and report blocks named NAME@FOLDER")


def models_folder(path: Path) -> Path:
    """``path`` if it holds a backbone and an adapter; a ValueError that says what is missing otherwise."""
    missing = [f for f in ("backbone.safetensors", "adapter.safetensors") if not (path / f).is_file()]
    if missing:
        raise ValueError(f"--models {path}: no {' or '.join(missing)} there; point it at a folder of ToyWorld models "
                         "(a pretrain --out folder with an adapter trained by train_adapter --models)")
    return path


def measurement_args(doc: str, help_text: str) -> MeasurementArgs:
    """Parse a measurement's command line (``--quick``, ``--models``) and pin it to one thread."""
    import torch
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=help_text)
    add_models_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    return MeasurementArgs(quick=args.quick, record=Record(models_folder(args.models)))


def publish(name: str, results: dict, render: Callable[[dict], str], *, write: bool,
            record: Record = Record()) -> None:
    """Print a measurement's section (``render(results)``); with ``write``, store both where ``record`` says."""
    print(record.save(name, results, render) if write else render(results))


def markdown_rows(header: list[str], rows: list[list]) -> str:
    """A markdown table; floats with 3 decimals, None as '-'."""
    def cell(v) -> str:
        if v is None:
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
