"""Trees in the shapes the real eMotions / VideoEmotion-8 / Ekman-6 circulate in.

``build_release_tree`` writes the authors' release layout (``<Class>/<video_id>.mp4`` plus
UCF101-style split lists) with the six released eMotions classes, one class folder spelled
``Sad`` as in the raw download, list entries with and without extensions and indices, two
listed clips whose files are missing and one file no list names. ``build_frames_tree`` turns
the same clips into the pre-extracted research copy: ``imgs/<Class>/<id>/000001.jpg …`` from
the decoded frames (PIL JPEGs) and ``mp3/<Class>/<id>.mp3`` (or .wav) from the same sound.
Both return what a correct ingest must make of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image
from realworld import make_clip, tone

# The released classes and the authors' polarity groups (docs/DESIGN.md, "What the eMotions
# release looks like").
RELEASED = {
    "Excitation": "positive",
    "Fear": "negative",
    "Neutral": "neutral",
    "Relaxation": "positive",
    "Sadness": "negative",
    "Tension": "negative",
}
FOLDER_OF = {name: ("Sad" if name == "Sadness" else name) for name in RELEASED}
CLIPS_PER_CLASS = 4  # three listed for train, one for test
SAMPLE_RATE = 16000
FPS = 15
JPEG_QUALITY = 95


@dataclass
class ReleaseTree:
    root: Path
    # "<folder>/<video_id>.mp4" → (class, official split or None, seed)
    clips: dict[str, tuple[str, str | None, int]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # list entry → split
    unlisted: str = ""


def build_release_tree(root: Path) -> ReleaseTree:
    """The release layout; see the module docstring."""
    tree = ReleaseTree(root)
    splits = root / "splits"
    splits.mkdir(parents=True)
    classes = list(RELEASED)
    (splits / "classInd.txt").write_text(
        "".join(f"{i} {name}\n" for i, name in enumerate(classes, start=1)), encoding="utf-8"
    )
    train_lines, test_lines = [], []
    seed = 10
    for number, name in enumerate(classes, start=1):
        folder = FOLDER_OF[name]
        for k in range(CLIPS_PER_CLASS):
            seed += 1
            video_id = f"{name[:3].lower()}_{k:02d}"
            rel = f"{folder}/{video_id}.mp4"
            make_clip(root / rel, seed=seed, fps=FPS, audio_channels=1, sample_rate=SAMPLE_RATE)
            split = "train" if k < CLIPS_PER_CLASS - 1 else "test"
            tree.clips[rel] = (name, split, seed)
            # Train lines carry the class index (and, every other one, the extension); test
            # lines are bare, as in UCF101's lists. The list spells the class "Sadness".
            if split == "train":
                entry = f"{name}/{video_id}.mp4" if k % 2 else f"{name}/{video_id}"
                train_lines.append(f"{entry} {number}")
            else:
                test_lines.append(f"{folder}/{video_id}")
    # Listed, but the files were lost in the download.
    train_lines.append("Fear/fea_lost.mp4 2")
    test_lines.append("Tension/ten_lost")
    tree.missing = {"Fear/fea_lost.mp4": "train", "Tension/ten_lost": "test"}
    # A file no list names.
    seed += 1
    tree.unlisted = "Tension/ten_extra.mp4"
    make_clip(root / tree.unlisted, seed=seed, fps=FPS, audio_channels=1, sample_rate=SAMPLE_RATE)
    tree.clips[tree.unlisted] = ("Tension", None, seed)
    (splits / "trainlist01.txt").write_text("\n".join(train_lines) + "\n", encoding="utf-8")
    (splits / "testlist01.txt").write_text("\r\n".join(test_lines) + "\r\n", encoding="utf-8")
    return tree


def decoded_frames(path: Path) -> list[np.ndarray]:
    """Every picture of a video, RGB, as a frame extractor (ffmpeg -i … %06d.jpg) sees them."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def write_audio(path: Path, wave: np.ndarray, sample_rate: int) -> Path:
    """Mono ``wave`` (1, N) float32 as .mp3 (libmp3lame) or .wav (16-bit PCM), by suffix."""
    codec = {".mp3": "libmp3lame", ".wav": "pcm_s16le"}[path.suffix]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=sample_rate)
        stream.layout = "mono"
        target = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=target, layout="mono", rate=sample_rate)
        size = stream.codec_context.frame_size or 1024
        for pos in range(0, wave.shape[1], size):
            chunk = np.ascontiguousarray(wave[:, pos : pos + size], dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, pos
            frame.time_base = Fraction(1, sample_rate)
            for out in resampler.resample(frame):
                container.mux(stream.encode(out))
        container.mux(stream.encode(None))
    return path


@dataclass
class FramesTree:
    root: Path
    # "imgs/<Class>/<id>" → the release clip it was made from ("<folder>/<id>.mp4")
    folders: dict[str, str] = field(default_factory=dict)
    without_audio: str = ""
    quarantined: dict[str, str] = field(default_factory=dict)  # path → reason prefix


def build_frames_tree(release: ReleaseTree, root: Path) -> FramesTree:
    """The same clips as frame folders + audio files, the same split lists, and junk."""
    tree = FramesTree(root)
    (root / "splits").mkdir(parents=True)
    for name in ("classInd.txt", "trainlist01.txt", "testlist01.txt"):
        (root / "splits" / name).write_bytes((release.root / "splits" / name).read_bytes())
    for number, (rel, (_name, _split, seed)) in enumerate(sorted(release.clips.items())):
        folder_name, file_name = rel.split("/")
        video_id = Path(file_name).stem
        folder = root / "imgs" / folder_name / video_id
        folder.mkdir(parents=True)
        pictures = decoded_frames(release.root / rel)
        for index, picture in enumerate(pictures, start=1):
            Image.fromarray(picture).save(folder / f"{index:06d}.jpg", quality=JPEG_QUALITY)
        (folder / "n_frames").write_text(f"{len(pictures)}\n", encoding="utf-8")
        tree.folders[f"imgs/{folder_name}/{video_id}"] = rel
        if number == 0:
            tree.without_audio = f"imgs/{folder_name}/{video_id}"
            continue
        suffix = ".mp3" if number % 2 else ".wav"
        wave = tone(1.0, SAMPLE_RATE, 1, seed)
        write_audio(root / "mp3" / folder_name / f"{video_id}{suffix}", wave, SAMPLE_RATE)
    # An empty frame folder (the extraction failed), and two of pictures that are not.
    empty = root / "imgs/Fear/fea_empty"
    empty.mkdir(parents=True)
    (empty / "n_frames").write_text("0\n", encoding="utf-8")
    rng = np.random.default_rng(5)
    noise = root / "imgs/Neutral/neu_noise"
    noise.mkdir(parents=True)
    garbled = root / "imgs/Neutral/neu_garbled"
    garbled.mkdir(parents=True)
    for index in range(1, 4):
        (noise / f"{index:06d}.jpg").write_bytes(rng.bytes(2000))
        (garbled / f"{index:06d}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(2000))
    tree.quarantined = {
        "imgs/Fear/fea_empty": "empty frame folder",
        "imgs/Neutral/neu_noise": "undecodable",
        "imgs/Neutral/neu_garbled": "undecodable",
    }
    return tree
