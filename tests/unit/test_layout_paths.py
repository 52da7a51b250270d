"""Output paths and model-folder file names are spelled in one place: ``emotions.layout``.

No string literal anywhere else in ``src/emotions`` nor in ``flows/`` may start with one of the
DVC output roots (``"artifacts/"``, ``"metrics/"``, ``"plots/"``, ``"reports/"``), be one of them
(``Path("artifacts") / dataset``), or name a file of the model folder (``"best.pt"``, also as
``".../best.pt"``). Checked statically: every ``str`` constant, the constant parts of f-strings
included. Prose is exempt: module, class and function docstrings, and argparse ``help=`` texts.

A bare root word used as a mapping key is a field name, not a path, and is exempt too:
``{"metrics": ...}``, ``record["metrics"]``, ``record.get("metrics")``, ``"metrics" in record``.
``"metrics/..."`` and ``Path("metrics")``, ``root / "metrics"`` are never exempt.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "src" / "emotions"
LAYOUT = (PACKAGE_DIR / "layout.py", PACKAGE_DIR / "layout")  # the module (or a package of it)

OUTPUT_ROOTS = ("artifacts", "metrics", "plots", "reports")
MODEL_FILES = ("best.pt", "last.pt", "model.json", "temperature.json")
PROSE_KEYWORDS = ("help",)  # argparse's help= is prose for the user
KEY_METHODS = ("get", "pop", "setdefault")  # mapping.get("metrics"): a key, not a path


@dataclass(frozen=True)
class Hit:
    path: Path
    line: int
    value: str
    why: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}: {self.value!r} ({self.why})"


def _is_layout(path: Path) -> bool:
    return path == LAYOUT[0] or LAYOUT[1] in path.parents


def source_files(folder: str) -> list[Path]:
    files = sorted((ROOT / folder).rglob("*.py"))
    return [p for p in files if "__pycache__" not in p.parts and not _is_layout(p)]


def _prose(tree: ast.Module) -> set[int]:
    """``id``s of the nodes whose strings are prose: docstrings and ``help=`` values."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
        elif isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg in PROSE_KEYWORDS:
                    ids.update(id(sub) for sub in ast.walk(keyword.value))
    return ids


def _keys(tree: ast.Module) -> set[int]:
    """``id``s of the string constants used as mapping keys."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            ids.update(id(key) for key in node.keys if key is not None)
        elif isinstance(node, ast.Subscript):
            ids.add(id(node.slice))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in KEY_METHODS
            and node.args
        ):
            ids.add(id(node.args[0]))
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
            ids.add(id(node.left))
    return ids


def code_strings(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line, value, is_key) of every ``str`` constant of ``path`` that is not prose."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    prose, keys = _prose(tree), _keys(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            yield node.lineno, node.value, id(node) in keys


def _output_root(value: str, is_key: bool) -> str | None:
    for root in OUTPUT_ROOTS:
        if (value == root and not is_key) or value.startswith(root + "/"):
            return f"output root {root}/"
    return None


def _model_file(value: str, is_key: bool) -> str | None:
    del is_key  # a model file name is a path even as a key
    for name in MODEL_FILES:
        if value == name or value.endswith("/" + name):
            return f"model-folder file {name}"
    return None


def _find(folder: str, classify: Callable[[str, bool], str | None]) -> list[str]:
    found: list[Hit] = []
    for path in source_files(folder):
        for line, value, is_key in code_strings(path):
            why = classify(value, is_key)
            if why:
                found.append(Hit(path, line, value, why))
    return [str(hit) for hit in sorted(found, key=lambda h: (h.path, h.line, h.value))]


FOLDERS = ("src/emotions", "flows")


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_output_paths_outside_layout(folder: str) -> None:
    found = _find(folder, _output_root)
    assert not found, (
        f"output paths spelled in {folder}/ outside src/emotions/layout.py "
        "(use emotions.layout):\n" + "\n".join(found)
    )


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_model_file_names_outside_layout(folder: str) -> None:
    found = _find(folder, _model_file)
    assert not found, (
        f"model-folder file names spelled in {folder}/ outside src/emotions/layout.py "
        "(use emotions.layout):\n" + "\n".join(found)
    )
