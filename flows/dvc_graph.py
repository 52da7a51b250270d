"""The stage graph, read from DVC itself (its Python API), never by parsing dvc.yaml by hand.

DVC resolves `foreach` templates, `${...}` interpolation and the edges between stages (an edge
wherever a stage's dependency overlaps another stage's output), so the flow sees exactly the
DAG `dvc repro` would run, under the names `dvc repro` accepts (`train@emotions-full`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import networkx as nx


class UnknownTargetError(ValueError):
    """A target names no stage of the repository."""


@dataclass(frozen=True)
class StageNode:
    """One stage: its DVC address, the stages it depends on, and its command."""

    name: str
    upstream: tuple[str, ...]
    # None for a .dvc file (a data source or an import): DVC re-hashes or re-imports it.
    cmd: str | None

    @property
    def group(self) -> str:
        """The `foreach` group a templated stage belongs to (`train` for `train@x`)."""
        return self.name.split("@", 1)[0]


def _address(stage, root: str) -> str:
    """The stage's name as `dvc repro` takes it when run from the repository root.

    DVC's own `stage.addressing` is relative to the current directory of *this* process, which
    need not be the repository (`pipeline(repo=...)`); the stage processes run in the root.
    """
    from dvc.stage import PipelineStage

    path = Path(os.path.relpath(stage.path, root)).as_posix()
    if isinstance(stage, PipelineStage):
        return stage.name if path == "dvc.yaml" else f"{path}:{stage.name}"
    return path


def load_graph(repo: Path) -> list[StageNode]:
    """Every stage of the repository, upstream before downstream.

    The order is a topological order of DVC's graph that breaks ties by the order stages are
    declared in (DVC's `index.stages` is file order): deterministic from run to run, and the
    same reading order as dvc.yaml.
    """
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        root = dvc_repo.root_dir
        index = dvc_repo.index
        position = {stage: i for i, stage in enumerate(index.stages)}
        graph = index.graph  # an edge (a, b) means stage a depends on stage b
        order = nx.lexicographical_topological_sort(
            graph.reverse(copy=False), key=lambda stage: position.get(stage, len(position))
        )
        return [
            StageNode(
                name=_address(stage, root),
                upstream=tuple(sorted(_address(dep, root) for dep in graph.successors(stage))),
                cmd=getattr(stage, "cmd", None) or None,
            )
            for stage in order
        ]


def select(nodes: list[StageNode], targets: list[str] | None) -> list[StageNode]:
    """The targets and everything upstream of them (what `dvc repro TARGET...` runs).

    A target is a stage address (`evaluate@emotions-full`) or a `foreach` group (`train`).
    """
    if not targets:
        return list(nodes)
    by_name = {node.name: node for node in nodes}
    wanted: set[str] = set()
    for target in targets:
        matched = [node.name for node in nodes if target in (node.name, node.group)]
        if not matched:
            known = ", ".join(node.name for node in nodes)
            raise UnknownTargetError(f"unknown stage '{target}' (the DAG has: {known})")
        stack = matched
        while stack:
            name = stack.pop()
            if name not in wanted:
                wanted.add(name)
                stack.extend(by_name[name].upstream)
    return [node for node in nodes if node.name in wanted]


def metrics_paths(repo: Path) -> list[str]:
    """The metrics files the stages declare (`metrics:` in dvc.yaml), relative to the repo."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        root = dvc_repo.root_dir
        paths = {
            Path(os.path.relpath(out.fs_path, root)).as_posix()
            for stage in dvc_repo.index.stages
            for out in stage.outs
            if out.metric
        }
    return sorted(paths)


def data_sources(repo: Path) -> list[tuple[str, bool]]:
    """The `.dvc` files (relative paths) and whether each is an import (`dvc update` refreshes
    an import from its source; `dvc pull` restores the others from the remote)."""
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(repo)) as dvc_repo:
        root = dvc_repo.root_dir
        return sorted(
            (
                Path(os.path.relpath(stage.path, root)).as_posix(),
                bool(stage.is_import or stage.is_repo_import),
            )
            for stage in dvc_repo.index.stages
            if not isinstance(stage, PipelineStage)
        )
