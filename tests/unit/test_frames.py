"""Pre-extracted copies (layout ``frames``): the release tree's clips as JPEG folders + audio.

The frames are the videos' own decoded pictures saved as JPEGs (PIL, quality 95, 4:2:0 like an
``ffmpeg -i clip %06d.jpg`` extraction), the sound the same tone as .mp3 or .wav, one clip
without audio, the same split lists, plus an empty frame folder and two folders of broken
pictures. Ingest and preprocess run for real on both trees, and the cached frames of each clip
must equal the video path's within JPEG error.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from releasetree import FPS, RELEASED, build_frames_tree, build_release_tree

from emotions.config import IngestConfig, OfficialVariantConfig, PreprocessConfig, VariantsConfig
from emotions.corpus.sources import SourceOptions
from emotions.media.decode import DecodeError, decode_clip
from emotions.media.probe import ProbeTask, hamming, probe_file
from emotions.stages.ingest import ingest
from emotions.stages.preprocess import FRAMES, INDEX, preprocess
from emotions.stages.variants import make_variants, write_variants

CONFIG = IngestConfig(workers=2, timeout_s=60.0)
VARIANTS = VariantsConfig(official=OfficialVariantConfig(val=0.34))
# The params.yaml sizes with fewer frames. At resize 72 the video path reads frames at native
# size (decord 0.6.0 cannot scale to width 72) and scales them with _resize_rgb, which is what
# the frame-folder path does with its pictures, so what is left is the JPEG error.
PREPROCESS = PreprocessConfig(num_frames=6, resize=72, crop=64, workers=2)
# Mean absolute difference per clip on uint8 frames. These 64-px clips are 8×8 blocks of
# random colours, the worst case for 4:2:0 JPEG; measured: at most 1.9 (resize 48/72).
JPEG_TOLERANCE = 3.0


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("frames")
    release = build_release_tree(base / "release")
    frames = build_frames_tree(release, base / "frames")
    return base, release, frames


@pytest.fixture(scope="module")
def ingested(trees):
    base, release, frames = trees
    options = SourceOptions(fps=FPS)
    results = {}
    for name, root, layout in (
        ("release", release.root, "release"),
        ("frames", frames.root, "frames"),
    ):
        results[name] = ingest(
            root,
            base / f"out-{name}",
            layout=layout,
            taxonomy=RELEASED,
            config=CONFIG,
            progress=False,
            options=options if layout == "frames" else None,
        )
    return results


def test_frames_tree_ingests_like_the_release(trees, ingested):
    _, release, frames = trees
    video = ingested["release"].manifest.set_index("path")
    folders = ingested["frames"].manifest.set_index("path")
    assert set(folders.index) == set(frames.folders)
    for folder, rel in frames.folders.items():
        row, twin = folders.loc[folder], video.loc[rel]
        for column in ("label", "polarity", "official_split", "n_frames", "width", "height"):
            assert row[column] is twin[column] or row[column] == twin[column], (folder, column)
        assert row["fps"] == FPS and row["duration_s"] == pytest.approx(
            twin["duration_s"], abs=0.07
        )
        assert bool(row["has_audio"]) == (folder != frames.without_audio), folder
        assert row["video_codec"] == "mjpeg" and len(row["sha256"]) == 64
        # The same pictures: the near-duplicate hash sees the copy as the video's twin.
        assert hamming(row["visual_hash"], twin["visual_hash"]) <= 6, folder
    no_audio = folders.loc[frames.without_audio]
    assert pd.isna(no_audio["audio_sample_rate"]) and no_audio["audio_codec"] is pd.NA
    assert folders.loc[folders["has_audio"], "audio_sample_rate"].eq(16000).all()
    section = ingested["frames"].stats["official_split"]
    assert {m["path"] for m in section["listed_missing"]} == set(release.missing)
    assert section["kept"] == {"train": 18, "test": 6, "unlisted": 1}


def test_bad_frame_folders_are_quarantined_with_reasons(trees, ingested):
    _, release, frames = trees
    reasons = dict(
        zip(
            ingested["frames"].quarantine["path"],
            ingested["frames"].quarantine["reason"],
            strict=True,
        )
    )
    assert set(reasons) == set(frames.quarantined) | set(release.missing)
    for path, prefix in frames.quarantined.items():
        assert reasons[path].startswith(prefix), (path, reasons[path])
    assert "3 of 3 frames are not pictures" in reasons["imgs/Neutral/neu_noise"]
    assert "frame 000001.jpg" in reasons["imgs/Neutral/neu_garbled"]
    with pytest.raises(DecodeError, match="empty frame folder"):
        decode_clip(frames.root / "imgs/Fear/fea_empty", PREPROCESS)


def _cache(root: Path, manifest: pd.DataFrame, work: Path, fps: float) -> dict[str, np.ndarray]:
    split = make_variants(manifest, ["official", "full"], config=VARIANTS, seed=5)
    write_variants(split, work / "variants")
    out = work / "cache"
    result = preprocess(
        root, work / "variants", out, config=PREPROCESS, progress=False, frames_fps=fps
    )
    assert result.failed == 0
    index = pd.read_parquet(out / INDEX)
    frames = np.load(out / FRAMES, mmap_mode="r")
    return {row.path: np.asarray(frames[row.row]) for row in index.itertuples()}, index


@pytest.mark.slow
def test_cached_frames_match_the_video_path(trees, ingested):
    base, release, frames = trees
    video, _ = _cache(release.root, ingested["release"].manifest, base / "p-release", FPS)
    pictures, index = _cache(frames.root, ingested["frames"].manifest, base / "p-frames", FPS)
    assert len(pictures) == len(video) == 25
    worst = 0.0
    for folder, rel in frames.folders.items():
        a, b = video[rel].astype(np.int16), pictures[folder].astype(np.int16)
        assert a.shape == b.shape == (6, 72, 72, 3)
        error = float(np.abs(a - b).mean())
        worst = max(worst, error)
        assert error < JPEG_TOLERANCE, (folder, error)
    print(f"worst per-clip mean abs difference: {worst:.2f}")
    by_path = index.set_index("path")
    assert not by_path.loc[frames.without_audio, "has_audio"]
    assert by_path.drop(frames.without_audio)["audio_frames"].gt(0).all()
    # Different pictures really do differ by far more than the tolerance.
    first, second = sorted(frames.folders)[:2]
    assert np.abs(pictures[first].astype(np.int16) - pictures[second]).mean() > 10


def test_decoded_frame_folder_follows_the_video_timing(trees):
    _, release, frames = trees
    folder = next(f for f in frames.folders if f != frames.without_audio)
    from_video = decode_clip(release.root / frames.folders[folder], PREPROCESS)
    from_folder = decode_clip(frames.root / folder, PREPROCESS, fps=FPS)
    np.testing.assert_allclose(from_folder.frame_times_s, from_video.frame_times_s, atol=1e-3)
    assert from_folder.duration_s == pytest.approx(from_video.duration_s, abs=0.07)
    assert from_folder.has_audio and from_folder.audio_frames > 0
    default = decode_clip(frames.root / folder, PREPROCESS)  # 30 fps unless told otherwise
    assert default.duration_s == pytest.approx(15 / 30)


def test_frame_rate_from_the_audio_and_a_stable_content_hash(trees, tmp_path):
    _, _, frames = trees
    folder = next(f for f in frames.folders if f != frames.without_audio)
    source = frames.root / folder
    by_audio = probe_file(ProbeTask(str(source), 512.0, frames=True, fps="audio")).info
    assert by_audio.fps == pytest.approx(FPS, rel=0.1)  # 15 pictures over ~1 s of sound
    silent = probe_file(
        ProbeTask(str(frames.root / frames.without_audio), 512.0, frames=True, fps="audio")
    ).info
    assert silent.fps == 30.0 and not silent.has_audio
    # Renaming the folder and its pictures keeps the id; changing one picture does not.
    copy = tmp_path / "imgs" / "Other" / "renamed"
    copy.mkdir(parents=True)
    for number, picture in enumerate(sorted(source.glob("*.jpg"))):
        shutil.copyfile(picture, copy / f"frame_{number:04d}.jpg")
    audio = next((frames.root / "mp3" / Path(folder).parent.name).glob(Path(folder).name + ".*"))
    (tmp_path / "mp3" / "Other").mkdir(parents=True)
    shutil.copyfile(audio, tmp_path / "mp3" / "Other" / f"renamed{audio.suffix}")
    again = probe_file(ProbeTask(str(copy), 512.0, frames=True, fps="audio")).info
    assert again.sha256 == by_audio.sha256
    last = sorted(copy.glob("*.jpg"))[-1]
    shutil.copyfile(sorted(copy.glob("*.jpg"))[0], last)
    changed = probe_file(ProbeTask(str(copy), 512.0, frames=True, fps="audio")).info
    assert changed.sha256 != by_audio.sha256
    # n_frames promising more pictures than the folder holds: frames were lost.
    (copy / "n_frames").write_text("40\n", encoding="utf-8")
    reason = probe_file(ProbeTask(str(copy), 512.0, frames=True)).reason
    assert reason == "truncated: 15 of 40 frames (n_frames) present"


def test_frames_layout_reports_what_is_not_a_clip(tmp_path):
    from emotions.corpus.sources import Candidate, Reject, get_source

    assert [(r.path, r.reason[:12]) for r in get_source("frames").scan(tmp_path)] == [
        ("imgs", "missing file")
    ]
    (tmp_path / "imgs/Fear/clip_a").mkdir(parents=True)
    (tmp_path / "imgs/Fear/stray.jpg").write_bytes(b"\xff\xd8\xff")
    (tmp_path / "imgs/README.txt").write_text("class folders below", encoding="utf-8")
    (tmp_path / "mp3/Fear").mkdir(parents=True)
    (tmp_path / "mp3/Fear/clip_a.mp3").write_bytes(b"x")
    (tmp_path / "mp3/Fear/clip_b.wav").write_bytes(b"x")
    records = list(get_source("frames").scan(tmp_path))
    assert [(r.path, r.frames) for r in records if isinstance(r, Candidate)] == [
        ("imgs/Fear/clip_a", True)
    ]
    rejects = {r.path: r.reason for r in records if isinstance(r, Reject)}
    assert rejects == {
        "imgs/Fear/stray.jpg": "not a video: a file where a frame folder is expected",
        "mp3/Fear/clip_b.wav": "missing file (audio without its frame folder imgs/Fear/clip_b)",
    }
