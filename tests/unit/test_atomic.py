"""Atomic writes: the old file or the new one, never half of one, and durable once written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emotions.atomic import atomic_write, atomic_write_json, atomic_write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "out" / "a.txt", "old\n")

    def broken(tmp: Path) -> None:
        tmp.write_text("half", encoding="utf-8")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, broken)
    assert target.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_the_file_and_its_folder_are_synced_before_and_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename can reach the disk before the data: the temporary is fsynced before it, the
    folder (the rename itself) after it."""
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    target = atomic_write_json({"b": 1, "a": 2}, tmp_path / "m.json")
    assert target.read_text(encoding="utf-8") == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert len(synced) == 2
    assert Path(synced[0]).name.startswith(".m.json.") and synced[0].endswith(".tmp")
    assert Path(synced[1]) == tmp_path
