"""Params overlays: a partial params file (e.g. params/ours-closest.yaml) applied on params.yaml.

Why an overlay and not a second full params file: the preset states only what it changes, so
it stays readable and never drifts from the rest of params.yaml. Mappings merge key by key;
any other value (a scalar, a list) replaces the base's. The result is validated with the same
schema as params.yaml, so a preset with a typo fails with the key named.

Three ways to use one (``emotions params``): validate and list the changes; ``--write PATH`` the
merged file (then ``dvc repro``); ``--set-args`` print ``-S key=value`` overrides for
``dvc exp run`` (keys absent from the base are added with Hydra's ``++`` prefix), so the preset
runs as a DVC experiment without touching the workspace params.yaml.

``--write`` edits the base file's values in place through ruamel.yaml's round-trip mode:
params.yaml is the documented reference for every knob, so its comments, key order and flow
style (``[a, b]``, ``{k: v}``) must survive; only the overlay's values change.
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


def changed(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The overlay's leaves whose value differs from the base's (or that the base lacks)."""
    out = []
    for key, value in leaves(overlay):
        node: Any = base
        for part in key.split("."):
            node = node.get(part, _MISSING) if isinstance(node, Mapping) else _MISSING
        if node != value:
            out.append((key, value))
    return out


_MISSING = object()


def write_merged(merged: Mapping[str, Any], out: str | Path) -> Path:
    """``merged`` as a fresh YAML file (no base file to keep comments from)."""
    return atomic_write_text(
        Path(out), yaml.safe_dump(dict(merged), sort_keys=False, allow_unicode=True)
    )


def write_overlay(base_path: str | Path, overlay: Mapping[str, Any], out: str | Path) -> Path:
    """The base file with the overlay's values edited in place, written to ``out``.

    Comments, key order, quoting and flow style of the base survive: a replaced list keeps the
    flow or block style of the list it replaces (and of its first item, for lists of maps).
    """
    import io

    from ruamel.yaml import YAML

    loader = YAML()  # round-trip: keeps comments and styles
    loader.preserve_quotes = True
    loader.width = 4096  # never re-wrap a long line the user wrote
    loader.indent(mapping=2, sequence=4, offset=2)
    # ruamel writes None as an empty value; params.yaml spells it `null`.
    loader.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    document = loader.load(Path(base_path).read_text(encoding="utf-8"))
    _assign(document, overlay)
    text = io.StringIO()
    loader.dump(document, text)
    return atomic_write_text(Path(out), text.getvalue())


def _assign(node: Any, overlay: Mapping[str, Any]) -> None:
    for key, value in overlay.items():
        current = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            _assign(current, value)
        elif key in node and current == value:
            continue
        else:
            node[key] = _styled_like(current, value)


def _styled_like(old: Any, new: Any) -> Any:
    """``new`` as a ruamel node in the style of ``old`` (flow or block)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(new, list) and isinstance(old, CommentedSeq):
        seq = CommentedSeq(_styled_like(old[0] if len(old) else None, item) for item in new)
        if old.fa.flow_style():
            seq.fa.set_flow_style()
        return seq
    if isinstance(new, Mapping) and isinstance(old, CommentedMap):
        mapping = CommentedMap(new)
        if old.fa.flow_style():
            mapping.fa.set_flow_style()
        return mapping
    return new
