"""The package's import graph, checked statically: no cycles, layers only import downwards,
stages never import each other, and ``ls src/emotions/stages/`` is the DVC DAG.

Every ``.py`` under ``src/emotions`` is parsed with ``ast`` (nothing is imported, so this is fast
and works without torch). An import counts wherever it is written, inside functions included;
only the bodies of ``if TYPE_CHECKING:`` blocks are skipped (their ``else:`` still counts).
``pkg/__init__.py`` is module ``pkg``; ``from emotions.x import y`` counts as importing
``emotions.x.y`` when that is a module, else ``emotions.x``. Relative imports are resolved.
The parent packages Python runs on the way (``emotions``, ``emotions.x``) are not edges here.

The helpers (``modules``, ``import_edges``) are shared with ``test_dvc_deps.py``.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = "emotions"

# ---------------------------------------------------------------------------------------------
# Layer rules. A module is governed by the rule with the longest matching `source` ("a" matches
# "a" and "a.*"; an `exact` rule only "a"). Within `emotions` it may import only modules under
# one of `allowed` (name prefixes). Modules a rule's source covers must be listed to import
# each other. A new top-level module needs a line here (test_every_module_has_a_layer_rule).
# ---------------------------------------------------------------------------------------------
ATOMS = (
    "emotions.atomic",
    "emotions.layout",
    "emotions.errors",
    "emotions.diskspace",
    "emotions.corpus.labels",
)
SETTINGS = (*ATOMS, "emotions.models.settings")
LOW = (
    "emotions.media",
    "emotions.corpus",
    "emotions.cache",
    "emotions.config",
    "emotions.params_overlay",
    "emotions.atomic",
    "emotions.layout",
    "emotions.errors",
    "emotions.diskspace",
)
MID = (*LOW, "emotions.models", "emotions.training", "emotions.evaluation")
APP = (*MID, "emotions.model_folder")
ANNOTATION = (*APP, "emotions.serve", "emotions.monitor", "emotions.annotation")
BUT_CLI = (*APP, "emotions.serve", "emotions.monitor", "emotions.annotation", "emotions.synth")


@dataclass(frozen=True)
class Rule:
    source: str
    allowed: tuple[str, ...]
    exact: bool = False

    def governs(self, name: str) -> bool:
        return name == self.source if self.exact else is_under(name, self.source)


RULES: tuple[Rule, ...] = (
    Rule("emotions.models", ("emotions.models",)),  # the network: only itself
    Rule("emotions.atomic", ATOMS),  # leaves: atomic, layout, corpus.labels import only each other
    Rule("emotions.layout", ATOMS),  # (same leaf rule)
    Rule("emotions.errors", ATOMS),  # (same leaf rule)
    Rule("emotions.corpus.labels", ATOMS),  # (same leaf rule)
    Rule("emotions.lifetime", ATOMS),  # a stage process's lifetime and output lock: a leaf
    Rule("emotions.diskspace", ATOMS),  # free space and disk-full errors: a leaf
    Rule("emotions.config", SETTINGS),  # config: the leaves and the model's settings
    Rule("emotions.params_overlay", (*SETTINGS, "emotions.config")),  # config's overlay: as config
    Rule("emotions.media", LOW),  # data layer: each other, config, overlay, atomic, layout
    Rule("emotions.corpus", LOW),  # (same data layer)
    Rule("emotions.cache", LOW),  # (same data layer)
    Rule("emotions.training", MID),  # learning: the data layer plus models/training/evaluation
    Rule("emotions.evaluation", MID),  # (same learning layer)
    Rule("emotions.model_folder", MID),  # the trained folder on disk: the learning layer
    Rule("emotions.serve", (*APP, "emotions.serve")),  # apps: the above plus model_folder
    Rule("emotions.monitor", (*APP, "emotions.serve", "emotions.monitor")),  # monitor reads serve
    Rule("emotions.annotation", ANNOTATION),  # annotation may read serve and monitor too
    Rule("emotions.synth", (*APP, "emotions.synth")),  # the synthetic corpus: an app like serve
    Rule("emotions.stages", (*BUT_CLI, "emotions.stages")),  # anything but cli (siblings: below)
    Rule("emotions.cli", (PACKAGE,)),  # the entry point: anything of the package
    Rule("emotions.__main__", (PACKAGE,)),  # `python -m emotions`: anything
    Rule(PACKAGE, (), exact=True),  # the root __init__: nothing (`import emotions` stays free)
)
# Stages never import each other, except these (importer -> importable stages).
STAGE_EXCEPTIONS: dict[str, frozenset[str]] = {
    "ablate": frozenset({"train", "evaluate"}),  # ablate trains and evaluates its cells
}
FORBIDDEN_TOP_LEVEL = ("flows",)  # the Prefect flows drive the package; never the other way


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool

    @property
    def rel(self) -> str:
        return self.path.relative_to(ROOT).as_posix()


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``source``'s file line ``line``."""

    source: str
    target: str
    line: int
    resolved: bool  # False: target names no module under src/ (a stale import)

    def where(self) -> str:
        return f"{modules()[self.source].rel}:{self.line}"


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Module]:
    """Every module of the package by dotted name (``pkg/__init__.py`` is ``pkg``)."""
    found: dict[str, Module] = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        found[module_name(path)] = Module(module_name(path), path, path.name == "__init__.py")
    return found


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def raw_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, outside the bodies of ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _base_package(module: Module, level: int) -> str:
    parts = module.name.split(".")
    if not module.is_package:
        parts.pop()
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts)


def absolute_targets(module: Module, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The dotted names ``node`` imports, relative imports resolved; submodules where named."""
    known = modules()
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:
        base = _base_package(module, node.level)
        origin = f"{base}.{node.module}" if node.module else base
    else:
        origin = node.module or ""
    for alias in node.names:
        candidate = f"{origin}.{alias.name}"
        yield candidate if alias.name != "*" and candidate in known else origin


@cache
def import_edges() -> tuple[Edge, ...]:
    """Every import of the package from the package (``emotions.*``), one edge per name.

    A target that names no module keeps its written name and ``resolved=False``: with
    ``from emotions.x import attr`` the target is ``emotions.x``, so that means a moved module.
    """
    known = modules()
    edges: set[Edge] = set()
    for module in known.values():
        for node in raw_imports(parse(module.path)):
            for name in absolute_targets(module, node):
                if not is_under(name, PACKAGE) or name == module.name:
                    continue  # outside the package, or `from . import attr` in an __init__
                edges.add(Edge(module.name, name, node.lineno, name in known))
    return tuple(sorted(edges, key=lambda e: (e.source, e.line, e.target)))


def graph() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {name: set() for name in modules()}
    for edge in import_edges():
        if edge.resolved:
            out[edge.source].add(edge.target)
    return out


def is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def rule_for(name: str) -> Rule | None:
    matching = [rule for rule in RULES if rule.governs(name)]
    return max(matching, key=lambda rule: len(rule.source)) if matching else None


def _first_edge(source: str, target: str) -> Edge:
    return next(e for e in import_edges() if e.source == source and e.target == target)


def _strongly_connected(nodes: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(nodes[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(nodes[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def _cycle_in(component: list[str], nodes: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    members = set(component)
    start = component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for child in sorted(nodes[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    return component


def test_package_imports_resolve() -> None:
    """Every ``emotions.*`` import names a module (or an attribute of one) that exists."""
    stale = [
        f"{edge.where()}: {edge.source} imports {edge.target!r}, which no file under src/ defines"
        for edge in import_edges()
        if not edge.resolved
    ]
    assert not stale, "stale imports (moved or removed modules):\n" + "\n".join(stale)


def test_no_import_cycles() -> None:
    nodes = graph()
    reports: list[str] = []
    for component in _strongly_connected(nodes):
        cycle = _cycle_in(component, nodes)
        steps = [
            f"    {a} -> {b}  ({_first_edge(a, b).where()})" for a, b in itertools.pairwise(cycle)
        ]
        reports.append(
            f"cycle among {len(component)} modules ({', '.join(component)}):\n" + "\n".join(steps)
        )
    assert not reports, "import cycles:\n" + "\n".join(reports)


def test_every_module_has_a_layer_rule() -> None:
    missing = sorted(
        f"{module.rel} ({name})" for name, module in modules().items() if rule_for(name) is None
    )
    assert not missing, "modules no layer rule governs (add one to RULES):\n" + "\n".join(missing)


def test_layer_rules() -> None:
    violations: list[str] = []
    broken: dict[str, Rule] = {}
    for edge in import_edges():
        rule = rule_for(edge.source)
        if rule is None or any(is_under(edge.target, prefix) for prefix in rule.allowed):
            continue
        violations.append(
            f"{edge.where()}: {edge.source} imports {edge.target} (rule {rule.source!r})"
        )
        broken[rule.source] = rule
    allowed = [
        f"rule {source!r} allows only: {', '.join(rule.allowed) or 'nothing of the package'}"
        for source, rule in sorted(broken.items())
    ]
    assert not violations, "layer violations:\n" + "\n".join([*violations, "", *allowed])


def _stage_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["emotions", "stages"] else None


def test_stages_do_not_import_each_other() -> None:
    violations: list[str] = []
    for edge in import_edges():
        if not is_under(edge.source, "emotions.stages") or not is_under(
            edge.target, "emotions.stages"
        ):
            continue
        source, target = _stage_of(edge.source), _stage_of(edge.target)
        if target is None or source == target:
            continue
        if source is not None and target in STAGE_EXCEPTIONS.get(source, frozenset()):
            continue
        who = f"stage {source}" if source else "the stages package __init__"
        violations.append(f"{edge.where()}: {who} ({edge.source}) imports stage {edge.target}")
    assert not violations, (
        "stages import other stages (move the shared code below the stages, e.g. to "
        "emotions.model_folder / emotions.layout):\n" + "\n".join(violations)
    )


def test_src_never_imports_flows() -> None:
    violations: list[str] = []
    for module in modules().values():
        for node in raw_imports(parse(module.path)):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                if name and name.split(".")[0] in FORBIDDEN_TOP_LEVEL:
                    violations.append(f"{module.rel}:{node.lineno}: {module.name} imports {name}")
    assert not violations, "src imports the Prefect flows:\n" + "\n".join(violations)


def dvc_stage_names() -> set[str]:
    document = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    return set(document.get("stages") or {})


def stage_module_names() -> set[str]:
    folder = SRC / PACKAGE / "stages"
    names = {p.stem for p in folder.glob("*.py") if p.name != "__init__.py"}
    names |= {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
    return names


def test_stages_package_is_the_dag() -> None:
    """``ls src/emotions/stages/`` lists exactly the stages of dvc.yaml."""
    in_dvc, in_src = dvc_stage_names(), stage_module_names()
    problems = [
        f"dvc.yaml stage {name!r} has no module src/emotions/stages/{name}.py"
        for name in sorted(in_dvc - in_src)
    ] + [
        f"src/emotions/stages/{name} is no stage of dvc.yaml (move it below the stages)"
        for name in sorted(in_src - in_dvc)
    ]
    assert not problems, "stages/ and dvc.yaml disagree:\n" + "\n".join(problems)
