"""A `dvc` killed while it rewrote DVC's rwlock file left it empty, and every later `dvc repro`
failed with "Unable to read RWLock-file ... JSON structure is corrupted". The flow lock moves
such a leftover aside when a flow starts; a readable one is DVC's and is left alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.lock import repo_lock


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / ".dvc" / "tmp").mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize("left", ["", '{"read": {"data": [{"pid": 1', "\0\0\0"])
def test_an_unreadable_rwlock_is_moved_aside_with_a_warning(repo: Path, left: str):
    rwlock = repo / ".dvc" / "tmp" / "rwlock"
    rwlock.write_text(left, encoding="utf-8")
    told: list[str] = []
    with repo_lock(repo, owner="test", wait_s=1, on_wait=told.append):
        assert not rwlock.exists()
    (aside,) = (repo / ".dvc" / "tmp").glob("rwlock.unreadable-*")
    assert aside.read_text(encoding="utf-8") == left  # kept for whoever wants to look
    assert len(told) == 1 and "left unreadable by a killed `dvc`" in told[0]


def test_a_readable_rwlock_and_a_missing_one_are_left_alone(repo: Path):
    told: list[str] = []
    with repo_lock(repo, owner="test", wait_s=1, on_wait=told.append):
        pass
    rwlock = repo / ".dvc" / "tmp" / "rwlock"
    table = {"read": {}, "write": {"data": {"pid": 12345, "cmd": "dvc repro"}}}
    rwlock.write_text(json.dumps(table), encoding="utf-8")
    with repo_lock(repo, owner="test", wait_s=1, on_wait=told.append):
        pass
    assert json.loads(rwlock.read_text(encoding="utf-8")) == table
    assert not told and not list(rwlock.parent.glob("rwlock.unreadable-*"))
