"""A full disk is one line naming the device, and leaves nothing that looks complete.

Where the machine lets a test mount a small tmpfs (root, or CAP_SYS_ADMIN), the writers run
against a real full filesystem: the cache (whose memory maps used to die with a bus error),
a checkpoint (torch's ``unexpected pos``) and a stage's small outputs (Errno 28 in a
traceback). Elsewhere those skip, and the free-space check is fed a threshold instead.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from emotions.cache.format import COMPLETE
from emotions.cli import main
from emotions.config import load_params
from emotions.diskspace import NoSpaceError, disk_full_errors, free_bytes, require_space
from emotions.media.decode import DecodedClip
from emotions.media.snippets import SnippetLayout
from emotions.media.workers import Outcome
from emotions.stages.preprocess import write_cache
from emotions.training.checkpoints import atomic_torch_save

REPO = Path(__file__).resolve().parents[2]
MB = 2**20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs, mounted for the test (skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _clips(n: int, config, rng: np.random.Generator) -> tuple[pd.DataFrame, list[Outcome]]:
    """``n`` decoded clips of noise (incompressible: JPEG cannot make them small)."""
    t, r, a = SnippetLayout.of(config).cached_frames, config.resize, config.audio
    clips = pd.DataFrame(
        {
            "clip_id": [f"c{i:03d}" for i in range(n)],
            "path": [f"c{i:03d}.mp4" for i in range(n)],
            "label": ["Fear"] * n,
        }
    )
    outcomes = [
        Outcome(
            item=(row.clip_id, row.path),
            value=DecodedClip(
                frames=rng.integers(0, 256, (t, r, r, 3), dtype=np.uint8),
                fbank=rng.standard_normal((a.target_frames, a.n_mels)).astype(np.float32),
                audio_frames=a.target_frames,
                has_audio=True,
                duration_s=2.0,
                frame_times_s=np.linspace(0, 2, t),
            ),
        )
        for row in clips.itertuples(index=False)
    ]
    return clips, outcomes


def _write_cache(out: Path, n: int, **preprocess) -> None:
    config = load_params(REPO / "params.yaml").preprocess.model_copy(update=preprocess)
    clips, outcomes = _clips(n, config, np.random.default_rng(0))
    write_cache(
        out, iter(outcomes), clips=clips, train_ids=set(clips["clip_id"]), config=config, meta={}
    )


def _assert_one_line(error: BaseException, disk: Path) -> None:
    message = str(error)
    assert "\n" not in message and message.startswith("No space left on tmpfs at "), message
    assert str(disk) in message and " GB (writing " in message


def test_a_cache_too_big_for_the_disk_is_refused_before_writing(small_disk: Path) -> None:
    out = small_disk / "cache"
    with pytest.raises(NoSpaceError, match="need ≈ ") as refused:
        _write_cache(out, 40)  # ~9 MB of raw frames and fbank for a 4 MB disk
    _assert_one_line(refused.value, small_disk)
    assert list(small_disk.iterdir()) == [], "nothing may be left behind"


def test_a_disk_filling_up_while_the_cache_is_written_leaves_nothing(small_disk: Path) -> None:
    # jpeg: only the fbank's size is known up front (~3 MB, it fits); the shards overflow.
    out = small_disk / "cache"
    with pytest.raises(NoSpaceError) as full:
        _write_cache(out, 30, cache_format="jpeg")
    _assert_one_line(full.value, small_disk)
    assert not (out / COMPLETE).exists()
    assert list(small_disk.iterdir()) == [], "nothing may be left behind"


def test_a_checkpoint_for_a_full_disk_is_one_line_and_leaves_no_temporary(
    small_disk: Path,
) -> None:
    state = {"model": {"weight": torch.zeros(2 * MB)}}  # 8 MB of float32
    with pytest.raises(NoSpaceError, match=r"need ≈ 0\.00") as refused:
        atomic_torch_save(state, small_disk / "last.pt")
    _assert_one_line(refused.value, small_disk)
    # Past the up-front check (a size nobody knew): torch's own failure is said the same way.
    with pytest.raises(NoSpaceError) as full, disk_full_errors(small_disk / "x.pt"):
        torch.save(state, small_disk / "x.pt")
    _assert_one_line(full.value, small_disk)
    assert isinstance(full.value.__cause__, RuntimeError)
    (small_disk / "x.pt").unlink()
    assert list(small_disk.iterdir()) == []


def test_a_stage_on_a_full_disk_says_so_in_one_line(
    small_disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filler = small_disk / "filler"
    with open(filler, "wb") as handle:
        handle.write(b"\0" * free_bytes(small_disk))
    (tmp_path / "corpus").mkdir()
    argv = ["--params", str(REPO / "params.yaml"), "ingest", "--layout", "folder"]
    argv += ["--root", str(tmp_path / "corpus"), "--out", str(small_disk / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("emotions ingest: No space left on tmpfs"), err


def test_the_free_space_check_names_need_and_have(tmp_path: Path) -> None:
    """Runs everywhere: the check fed a threshold instead of a full disk."""
    require_space(tmp_path, 10**8, free=10**9)
    with pytest.raises(NoSpaceError) as refused:
        require_space(tmp_path, 10**9, free=10**8)
    message = str(refused.value)
    assert message.startswith("No space left on ") and "need ≈ 1 GB, have 0.1 GB" in message
    assert str(tmp_path) in message
