"""Paths from data stay under their root (emotions.corpus.confine), frame folders included,
and ingest's three outputs are published as one generation.

The trees are real: JPEG pictures (PIL), a PCM .wav beside them, symlinks that lead out of
the root at every depth the frames layout reads (a picture, ``n_frames``, the sound, the sound's
class folder). The kills are real too: ingest runs in a child process that SIGKILLs itself at
a chosen rename into its output folder, and the folder is read afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from emotions.config import IngestConfig
from emotions.corpus.confine import OutsideRootError, child, escape_reason, is_under, under
from emotions.corpus.sources import SourceOptions
from emotions.layout import ANNOTATION_STATS, MANIFEST, QUARANTINE
from emotions.media.framefolder import FrameFolderError, audio_for, frame_files
from emotions.stages.ingest import ingest

REPO = Path(__file__).resolve().parents[2]
TAXONOMY = {"Joy": "positive", "Fear": "negative"}
CONFIG = IngestConfig(workers=1, timeout_s=60.0)
N_PICTURES = 16


def test_escapes_are_named_and_insiders_resolved(tmp_path):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "clip.mp4").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"secret")
    (root / "a" / "out").symlink_to(outside)  # a folder link, one level down
    (root / "a" / "b" / "in.mp4").symlink_to(root / "a" / "b" / "clip.mp4")
    (root / "loop").symlink_to(root / "loop")

    assert escape_reason(root, "a/b/clip.mp4") is None
    assert under(root, "a/b/in.mp4") == (root / "a" / "b" / "clip.mp4").resolve()
    assert under(root, str(root / "a" / "b" / "clip.mp4")) == (root / "a/b/clip.mp4").resolve()
    assert escape_reason(root, "../outside/secret.mp4") == "outside root ('..' leads out)"
    assert escape_reason(root, "a/../../x") == "outside root ('..' leads out)"
    assert escape_reason(root, "/etc/passwd") == "outside root (absolute path)"
    linked = escape_reason(root, "a/out/secret.mp4", what="frame 1.jpg")
    assert linked == f"outside root (frame 1.jpg: symlink to {(outside / 'secret.mp4').resolve()})"
    assert escape_reason(root, "loop").startswith("outside root (unresolvable")
    assert escape_reason(root, "a\x00b").startswith("outside root (not a path")
    assert not is_under(root, "a/out")
    with pytest.raises(OutsideRootError, match="leads out of"):
        under(root, "a/out/secret.mp4", what="video")
    # A name from data must be one plain entry of its folder.
    assert child(root / "a" / "b", "clip.mp4") == (root / "a" / "b" / "clip.mp4").resolve()
    for name in ("../../pwned", "..", ".", "", "a/b", "a\\b", ".hidden", "x\x00y"):
        with pytest.raises(OutsideRootError):
            child(root, name, what="clip_id")


# ------------------------------------------------------------------------------ frame folders


def _pictures(folder: Path, seed: int, count: int = N_PICTURES) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(1, count + 1):
        picture = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(picture).save(folder / f"{index:06d}.jpg", quality=90)


def _wav(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(16000) / 16000
    samples = (0.3 * np.sin(2 * np.pi * (220 + 30 * seed) * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(samples.tobytes())


@pytest.fixture
def frames_root(tmp_path) -> tuple[Path, Path]:
    """A frames tree with one honest clip and one escape per file the layout reads."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    _pictures(root / "imgs/Joy/honest", 1)
    _wav(root / "mp3/Joy/honest.wav", 1)
    # Pictures and a sound outside the root, that links point at.
    _pictures(outside / "pictures", 2)
    _wav(outside / "sound.wav", 2)
    _wav(outside / "Fear/by_folder.wav", 3)
    (outside / "n_frames").write_text(f"{N_PICTURES}\n", encoding="utf-8")

    linked_frame = root / "imgs/Joy/linked_frame"
    _pictures(linked_frame, 4)
    (linked_frame / "000007.jpg").unlink()
    (linked_frame / "000007.jpg").symlink_to(outside / "pictures" / "000007.jpg")

    _pictures(root / "imgs/Joy/linked_audio", 5)
    (root / "mp3/Joy/linked_audio.wav").symlink_to(outside / "sound.wav")

    counted = root / "imgs/Joy/linked_count"
    _pictures(counted, 6)
    (counted / "n_frames").symlink_to(outside / "n_frames")

    # The sound's class folder itself is a link out (a link one level above the file).
    _pictures(root / "imgs/Fear/by_folder", 7)
    (root / "mp3/Fear").symlink_to(outside / "Fear", target_is_directory=True)
    return root, outside


def test_frame_files_and_audio_linked_out_of_the_root_are_quarantined(frames_root, tmp_path):
    root, outside = frames_root
    result = ingest(
        root,
        tmp_path / "out",
        layout="frames",
        taxonomy=TAXONOMY,
        config=CONFIG,
        progress=False,
        options=SourceOptions(fps=30.0),
    )
    manifest = result.manifest.set_index("path")
    assert list(manifest.index) == ["imgs/Joy/honest"]
    assert bool(manifest.loc["imgs/Joy/honest", "has_audio"])
    reasons = dict(result.quarantine.itertuples(index=False))
    real = outside.resolve()
    assert reasons == {
        "imgs/Joy/linked_frame": (
            f"outside root (frame 000007.jpg: symlink to {real / 'pictures/000007.jpg'})"
        ),
        "imgs/Joy/linked_audio": (
            f"outside root (audio mp3/Joy/linked_audio.wav: symlink to {real / 'sound.wav'})"
        ),
        "imgs/Joy/linked_count": f"outside root (n_frames: symlink to {real / 'n_frames'})",
        "imgs/Fear/by_folder": (
            f"outside root (audio mp3/Fear/by_folder.wav: symlink to {real / 'Fear/by_folder.wav'})"
        ),
    }
    assert result.stats["quarantine_reasons"] == {"outside root": 4}
    # The readers the decoder shares refuse the same files.
    with pytest.raises(FrameFolderError, match="outside root"):
        frame_files(root / "imgs/Joy/linked_frame")
    with pytest.raises(FrameFolderError, match="outside root"):
        audio_for(root / "imgs/Joy/linked_audio")


# ------------------------------------------------------------------------- one generation

KILLER = """
import os, signal, sys
from pathlib import Path
out = Path(sys.argv[2]).resolve()
kill_at = int(sys.argv[3])
real_replace, seen = os.replace, [0]
def replace(src, dst, *args, **kwargs):
    if Path(dst).resolve().parent == out:
        seen[0] += 1
        if seen[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
from emotions.config import IngestConfig
from emotions.corpus.sources import SourceOptions
from emotions.stages.ingest import ingest
ingest(Path(sys.argv[1]), out, layout="frames", taxonomy={"Joy": "positive", "Fear": "negative"},
       config=IngestConfig(workers=1), progress=False, options=SourceOptions(fps=30.0))
"""


def _outputs(out: Path) -> dict[str, bytes | None]:
    return {
        name: (out / name).read_bytes() if (out / name).exists() else None
        for name in (MANIFEST, QUARANTINE, ANNOTATION_STATS)
    }


def test_a_kill_between_outputs_never_leaves_a_mixed_generation(frames_root, tmp_path):
    root, _ = frames_root
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    argv = [sys.executable, "-c", KILLER, str(root), str(out)]
    subprocess.run([*argv, "0"], check=True, env=env)  # 0: never killed
    previous = _outputs(out)
    assert all(previous.values())
    (root / "imgs/Joy/linked_count/n_frames").unlink()  # the next run keeps one more clip
    for kill_at in (1, 2, 3):  # before the quarantine, the stats, the manifest is renamed in
        done = subprocess.run([*argv, str(kill_at)], env=env)
        assert done.returncode == -9
        now = _outputs(out)
        # The manifest is the commit mark: gone as soon as the new set starts to land.
        assert now[MANIFEST] is None, kill_at
        assert [p.name for p in out.glob(".*.tmp")], "the killed run's staged files are left"
    subprocess.run([*argv, "0"], check=True, env=env)
    final = _outputs(out)
    assert not list(out.glob(".*.tmp")), "a later run removes a killed run's temporaries"
    manifest = pd.read_parquet(out / MANIFEST)
    quarantine = pd.read_csv(out / QUARANTINE)
    stats = json.loads(final[ANNOTATION_STATS])
    assert sorted(manifest["path"]) == ["imgs/Joy/honest", "imgs/Joy/linked_count"]
    assert len(quarantine) == stats["n_quarantined"] == 3
    assert stats["n_clips"] == len(manifest)


# -------------------------------------------------------------------------------- split lists


def test_split_lists_linked_out_of_their_folder_are_reported_not_read(tmp_path):
    from emotions.corpus.sources import Candidate, Reject, get_source

    root, outside = tmp_path / "release", tmp_path / "outside"
    (root / "Joy").mkdir(parents=True)
    (root / "Joy" / "a.mp4").write_bytes(b"x")
    (root / "splits").mkdir()
    outside.mkdir()
    (outside / "trainlist01.txt").write_text("Joy/a.mp4\n", encoding="utf-8")
    (outside / "classInd.txt").write_text("1 Joy\n", encoding="utf-8")
    (root / "splits" / "testlist01.txt").write_text("Joy/a.mp4\n", encoding="utf-8")
    (root / "splits" / "trainlist01.txt").symlink_to(outside / "trainlist01.txt")
    (root / "splits" / "classInd.txt").symlink_to(outside / "classInd.txt")
    records = list(get_source("release", classes=TAXONOMY).scan(root))
    (clip,) = [r for r in records if isinstance(r, Candidate)]
    assert clip.official_split == "test", "only the list inside the folder was read"
    real = outside.resolve()
    rejects = {r.path: r.reason for r in records if isinstance(r, Reject)}
    assert rejects == {
        "splits/trainlist01.txt": (
            f"outside root (split list trainlist01.txt: symlink to {real / 'trainlist01.txt'})"
        ),
        "splits/classInd.txt": (
            f"outside root (split list classInd.txt: symlink to {real / 'classInd.txt'})"
        ),
    }
    # The default split folder is part of the root: linked out, it is not read at all.
    (root / "splits" / "trainlist01.txt").unlink()
    (root / "splits" / "classInd.txt").unlink()
    (root / "splits" / "testlist01.txt").rename(outside / "testlist01.txt")
    (root / "splits").rmdir()
    (root / "splits").symlink_to(outside, target_is_directory=True)
    records = list(get_source("release", classes=TAXONOMY).scan(root))
    (clip,) = [r for r in records if isinstance(r, Candidate)]
    assert clip.official_split is None
    rejects = {r.path: r.reason for r in records if isinstance(r, Reject)}
    assert rejects == {"splits": f"outside root (split folder: symlink to {real})"}
