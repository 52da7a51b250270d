"""Each dvc.yaml stage depends on every source file its command runs.

A stage's ``cmd`` is ``emotions <sub> ...``; ``<sub>`` runs module ``emotions.stages.<sub>``. Its
code is that module's import closure within ``emotions``, found statically (see
test_architecture.py: imports anywhere in a file, ``if TYPE_CHECKING:`` bodies skipped), plus:

* the parent packages Python runs on the way (``emotions/__init__.py``,
  ``emotions/stages/__init__.py``, ...): package ``__init__`` files count like any module, a
  dep on their folder covers them;
* modules named by a string literal (``"emotions.corpus.sources.csv:CsvSource"``,
  ``Registry("fusion", "emotions.models.fusions")``), the package's lazy and plugin imports; a
  string naming a package brings in every module directly in it (what ``pkgutil`` walks).

Each file of the closure must be a dep of the stage: the file itself or a folder holding it.
``emotions.cli`` (and ``emotions.__main__``) is deliberately not required: it only parses
arguments and calls the stage module, so a change there does not change a stage's results, and
depending on it would rerun the whole DAG on every new sub-command. Templated deps (``${...}``)
are skipped; with ``foreach``/``do`` the ``do`` block's ``cmd`` and ``deps`` are read raw.
"""

from __future__ import annotations

import ast
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_architecture import PACKAGE, ROOT, SRC, graph, is_under, modules, parse, raw_imports


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: tuple[str, ...]
    deps: tuple[str, ...]  # as written
    wdir: str

    def src_deps(self) -> list[str]:
        """The stage's deps as repository-relative paths, templated ones left out."""
        out: list[str] = []
        for dep in self.deps:
            if "${" in dep:
                continue
            path = (Path(self.wdir) / dep).as_posix()
            out.append(path.removeprefix("./").rstrip("/"))
        return out

    @property
    def sub_command(self) -> str | None:
        for line in self.cmd:
            words = shlex.split(line)
            if words[:3] == ["python", "-m", PACKAGE]:
                words = words[2:]
            if len(words) > 1 and words[0] == PACKAGE:
                return words[1]
        return None


def _listed(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        out.extend(item if isinstance(item, dict) else [str(item)])
    return tuple(out)


@cache
def dvc_stages() -> tuple[Stage, ...]:
    document = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    stages: list[Stage] = []
    for name, body in (document.get("stages") or {}).items():
        block = body.get("do", body)
        stages.append(
            Stage(
                name=name,
                cmd=_listed(block.get("cmd")),
                deps=_listed(block.get("deps")),
                wdir=str(block.get("wdir", body.get("wdir", "."))),
            )
        )
    return tuple(stages)


DYNAMIC_IMPORTERS = ("importlib", "pkgutil")  # modules whose module-name strings are imports
# Python runs every parent package's __init__ before a module: they are part of the closure,
# unless the __init__ holds only its docstring (it cannot change a result, and listing ten
# docstring files in every stage would bury the deps that matter).
PARENT_PACKAGES_COUNT = True


def _is_dunder_constant(node: ast.stmt) -> bool:
    """``__version__ = "0.1.0"``: metadata, not behaviour."""
    return (
        isinstance(node, ast.Assign)
        and all(isinstance(t, ast.Name) and t.id.startswith("__") for t in node.targets)
        and isinstance(node.value, ast.Constant)
    )


def _runs_code(package: str) -> bool:
    body = parse(modules()[package].path).body
    return any(
        not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
        and not _is_dunder_constant(node)
        for node in body
    )


def _imports_dynamically(tree: ast.Module) -> bool:
    for node in raw_imports(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
        if any(n and n.split(".")[0] in DYNAMIC_IMPORTERS for n in names):
            return True
    return False


def _string_imports(name: str) -> Iterator[str]:
    """Modules named by string literals of a module that imports ``importlib``/``pkgutil``:
    lazy ``"module:attr"`` tables, plugin packages (a package brings its direct modules).
    Elsewhere a string such as a logger name ``"emotions.serve"`` imports nothing."""
    known = modules()
    tree = parse(known[name].path)
    if not _imports_dynamically(tree):
        return
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        target = node.value.split(":", 1)[0]
        if target in (name, PACKAGE) or not is_under(target, PACKAGE) or target not in known:
            continue
        yield target
        if known[target].is_package:
            yield from (m for m in known if m.rsplit(".", 1)[0] == target)


@cache
def _edges() -> dict[str, set[str]]:
    edges = graph()
    for name in modules():
        edges[name] |= set(_string_imports(name))
        if PARENT_PACKAGES_COUNT:
            parts = name.split(".")
            parents = {".".join(parts[:i]) for i in range(1, len(parts))} & set(modules())
            edges[name] |= {package for package in parents if _runs_code(package)}
    return edges


def closure(start: str) -> dict[str, str]:
    """Every module ``start`` runs → the module that brought it in (``start`` → itself)."""
    edges = _edges()
    seen = {start: start}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for name in frontier:
            for target in sorted(edges[name]):
                if target not in seen:
                    seen[target] = name
                    following.append(target)
        frontier = following
    return seen


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep + "/") for dep in deps)


def _rel(name: str) -> str:
    return modules()[name].rel


def _suggest(missing: list[str], needed: set[str], stage: Stage) -> list[str]:
    """The stage's deps with the missing files added: a whole package folder where every file
    under it is needed, else the file. Its src/ deps come sorted, without ones that do not
    exist or that another covers; the other deps keep their order, first."""
    top = (SRC / PACKAGE).relative_to(ROOT)
    src = {d for d in stage.src_deps() if d.startswith("src/") and (ROOT / d).exists()}
    for path in missing:
        best, folder = path, Path(path).parent
        while folder != top:
            if {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*.py")} <= needed:
                best = folder.as_posix()
            folder = folder.parent
        src.add(best)
    minimal = sorted(d for d in src if not _covered(d, sorted(src - {d})))
    return [d for d in stage.deps if "${" in d or not d.startswith("src/")] + minimal


STAGES = {stage.name: stage for stage in dvc_stages()}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_runs_an_emotions_stage_module(name: str) -> None:
    stage = STAGES[name]
    sub = stage.sub_command
    assert sub, f"stage {name}: cmd {list(stage.cmd)} is no `emotions <sub-command> ...`"
    assert f"{PACKAGE}.stages.{sub}" in modules(), (
        f"stage {name}: `emotions {sub}` has no module src/emotions/stages/{sub}.py"
    )


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_source_deps_exist(name: str) -> None:
    stage = STAGES[name]
    gone = [d for d in stage.src_deps() if d.startswith("src/") and not (ROOT / d).exists()]
    assert not gone, f"stage {name}: deps on src/ paths that do not exist: {gone}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_its_code(name: str) -> None:
    stage = STAGES[name]
    start = f"{PACKAGE}.stages.{stage.sub_command}"
    if start not in modules():
        pytest.skip(f"no stage module {start} (test_stage_runs_an_emotions_stage_module)")
    reached = closure(start)
    needed = {_rel(m) for m in reached}
    deps = stage.src_deps()
    missing = sorted((_rel(m), m, by) for m, by in reached.items() if not _covered(_rel(m), deps))
    if not missing:
        return
    lines = [f"stage {name} (`emotions {stage.sub_command}` = {start}) misses deps on:"]
    for path, module, by in missing:
        if module == by:
            why = "the stage module"
        elif is_under(by, module):
            why = f"parent package of {by}"
        else:
            why = f"imported by {by}"
        lines.append(f"  {path}  ({why})")
    lines.append("suggested deps:")
    lines += [f"  - {dep}" for dep in _suggest([p for p, _, _ in missing], needed, stage)]
    pytest.fail("\n".join(lines), pytrace=False)
