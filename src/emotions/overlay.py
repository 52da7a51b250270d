"""Params overlays: a partial params file (e.g. params/paper.yaml) applied on params.yaml.

Why an overlay and not a second full params file: the preset states only what it changes, so
it stays readable and never drifts from the rest of params.yaml. Mappings merge key by key;
any other value (a scalar, a list) replaces the base's. The result is validated with the same
schema as params.yaml, so a preset with a typo fails with the key named.

Three ways to use one (``emotions params``): validate and list the changes; ``--write PATH`` the
merged file (then ``dvc repro``); ``--set-args`` print ``-S key=value`` overrides for
``dvc exp run`` (keys absent from the base are added with Hydra's ``++`` prefix), so the preset
runs as a DVC experiment without touching the workspace params.yaml.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from emotions.atomic import atomic_write_text
from emotions.config import Params, parse_params, read_yaml


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay`` applied: mappings merge recursively, other values replace."""
    out = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every non-mapping value in ``tree``."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from leaves(value, f"{dotted}.")
        else:
            yield dotted, value


def _has(tree: Mapping[str, Any], dotted: str) -> bool:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def apply_overlay(base_path: str | Path, overlay_path: str | Path) -> tuple[Params, dict]:
    """The validated merged params and the merged mapping."""
    merged = merge(read_yaml(base_path), read_yaml(overlay_path))
    return parse_params(merged, f"{base_path} + {overlay_path}"), merged


def set_args(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> list[str]:
    """``dvc exp run`` overrides: ``-S key=value`` (``++key`` where the base lacks the key).

    Values are JSON (valid YAML without spaces, so the shell's word splitting keeps each
    override whole).
    """
    args = []
    for key, value in leaves(overlay):
        text = (
            value
            if isinstance(value, str) and value.strip() == value and " " not in value
            else json.dumps(value, separators=(",", ":"))
        )
        prefix = "" if _has(base, key) else "++"
        args += ["-S", f"{prefix}{key}={text}"]
    return args


def write_merged(merged: Mapping[str, Any], out: str | Path) -> Path:
    return atomic_write_text(
        Path(out), yaml.safe_dump(dict(merged), sort_keys=False, allow_unicode=True)
    )
