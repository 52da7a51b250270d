"""The decode budget (ingest.max_decode_pixels) on real h264 files: a clip of huge frames behind
one keyframe is refused before it is decoded, by decode_clip and by the service's decoder
pool, while good clips decoded meanwhile are answered (issue 21, row 1)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from emotions.config import AudioFeatures, IngestConfig, PreprocessConfig
from emotions.media.clipcheck import (
    REASON_PREFIXES,
    ClipBounds,
    check_decode_cost,
    frames_to_decode,
)
from emotions.media.decode import DecodedClip, DecodeTooCostly, decode_clip, decode_limit
from emotions.media.encode import write_blank_clip
from emotions.media.probe import ProbeTask, probe_file
from emotions.serve.decoding import DecodeFailed, DecoderPool
from emotions.serve.limits import CLIP_OUT_OF_BOUNDS
from emotions.stages.preprocess import decode_for_cache

SIDE = 1024
N_FRAMES = 120  # 4 s at 30 fps: inside every ingest bound
# 1024² × 47 frames: the four sampled frames fit when a keyframe is near each, not when every
# one must be reached from the first frame.
BUDGET = 50_000_000
CONFIG = PreprocessConfig(
    num_frames=4, resize=32, crop=24, audio=AudioFeatures(n_mels=32, target_frames=400)
)
BOUNDS = ClipBounds.of(IngestConfig(max_decode_pixels=BUDGET))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("budget")
    return {
        # the attack's shape: one keyframe, then frames whose sampled ones lie far behind it
        "attack": write_blank_clip(base / "attack.mp4", SIDE, N_FRAMES),
        # the same frames with a keyframe every 10: each sampled frame is a short seek away
        "keyed": write_blank_clip(base / "keyed.mp4", SIDE, N_FRAMES, gop=10),
        "good": write_blank_clip(base / "good.mp4", 64, 30, gop=10),
    }


def test_frames_to_decode_counts_from_the_keyframe_before_each_target():
    assert frames_to_decode([0], [10, 20]) == 21  # one run from the only keyframe
    assert frames_to_decode([0, 10, 20], [5, 15, 25]) == 18  # three seeks of 6 frames
    # unsorted and repeated targets are read in order; 25 continues from 15 (same keyframe)
    assert frames_to_decode([0, 10], [25, 5, 5, 15]) == 6 + 6 + 10
    assert frames_to_decode([3], [1]) == 2  # before the first keyframe: from frame 0
    assert frames_to_decode(range(100), range(0, 100, 10)) == 10  # all keyframes: targets only


def test_check_decode_cost_names_the_bound():
    assert check_decode_cost(100, 100, 10, 100_000) is None
    assert check_decode_cost(100, 100, 10, None) is None
    refusal = check_decode_cost(4096, 4096, 3600, 2_000_000_000)
    assert refusal is not None and refusal.kind == "out_of_bounds"
    assert refusal.reason == (
        "too costly to decode: 3600 frames of 4096×4096 px to reach the sampled ones, "
        "60.4 Gpx over 2 Gpx (ingest.max_decode_pixels)"
    )
    assert refusal.reason.startswith(REASON_PREFIXES)


def test_the_bound_is_one_param_carried_by_the_clip_bounds():
    assert BOUNDS.max_decode_pixels == BUDGET
    assert decode_limit(BOUNDS) == BUDGET
    assert decode_limit(None) == IngestConfig().max_decode_pixels


def test_one_keyframe_clip_is_refused_before_decoding(files):
    with pytest.raises(DecodeTooCostly) as refused:
        decode_clip(files["attack"], CONFIG, max_decode_pixels=BUDGET)
    # sampled frames 15, 45, 75 and 105, all reached from frame 0
    assert str(refused.value) == (
        "attack.mp4: too costly to decode: 106 frames of 1024×1024 px to reach the sampled "
        "ones, 0.111 Gpx over 0.05 Gpx (ingest.max_decode_pixels)"
    )


def test_the_same_frames_near_keyframes_fit_and_no_limit_decodes_the_attack(files):
    keyed = decode_clip(files["keyed"], CONFIG, max_decode_pixels=BUDGET)
    unbounded = decode_clip(files["attack"], CONFIG, max_decode_pixels=None)
    for clip in (keyed, unbounded):
        assert clip.frames.shape == (4, 32, 32, 3)
        assert clip.frame_times_s.tolist() == pytest.approx([0.5, 1.5, 2.5, 3.5])


def test_keyframe_sampling_counts_the_keyframes_it_reads(files, tmp_path):
    keyframes = CONFIG.model_copy(update={"frame_sampling": "keyframe"})
    # one keyframe: one frame decoded, far within the budget
    assert decode_clip(files["attack"], keyframes, max_decode_pixels=BUDGET).frames.shape[0] == 4
    # every frame a keyframe: the keyframe path reads all of them up to the last centre
    intra = write_blank_clip(tmp_path / "intra.mp4", SIDE, N_FRAMES, gop=1)
    with pytest.raises(DecodeTooCostly, match="too costly to decode: 107 frames"):
        decode_clip(intra, keyframes, max_decode_pixels=BUDGET)


def test_preprocess_worker_job_keeps_the_same_budget(files):
    root = str(files["attack"].parent)
    with pytest.raises(DecodeTooCostly, match=r"attack\.mp4: too costly to decode: 106 frames"):
        decode_for_cache(("a", "attack.mp4"), root=root, config=CONFIG, max_decode_pixels=BUDGET)
    kept = decode_for_cache(("k", "keyed.mp4"), root=root, config=CONFIG, max_decode_pixels=BUDGET)
    assert kept.frames.shape == (4, 32, 32, 3)


def test_ingest_probe_keeps_its_seek_within_the_budget(files):
    result = probe_file(ProbeTask(str(files["attack"]), max_file_mb=512, bounds=BOUNDS))
    assert result.reason is None and result.info is not None
    assert (result.info.n_frames, result.info.width) == (N_FRAMES, SIDE)


def test_service_pool_refuses_attacks_and_answers_good_clips_meanwhile(files):
    pool = DecoderPool(CONFIG, workers=1, timeout_s=60, bounds=BOUNDS)
    try:
        pool.warm_up()

        async def burst():
            attacks = [pool.decode(files["attack"], "attack.mp4") for _ in range(4)]
            goods = [pool.decode(files["good"], f"good{i}.mp4") for i in range(2)]
            return await asyncio.gather(*attacks, *goods, return_exceptions=True)

        answers = asyncio.run(burst())
    finally:
        pool.close()
    for refused in answers[:4]:
        assert isinstance(refused, DecodeFailed)
        assert (refused.rejection.status, refused.rejection.error) == (422, CLIP_OUT_OF_BOUNDS)
        assert refused.rejection.detail.startswith("attack.mp4: too costly to decode: 106 frames")
    for answer in answers[4:]:
        assert isinstance(answer, DecodedClip) and answer.frames.shape == (4, 32, 32, 3)


@pytest.mark.parametrize("name", ["attack", "keyed", "good"])
def test_the_screening_reads_the_index_the_decoder_would(files, name: str):
    """The service demuxes an upload once: the screening's packet index is the one decode_clip
    reads itself (frame size, frame count, keyframes in display order), and decoding with it
    refuses and delivers exactly as without it."""
    import av

    from emotions.media.decode import _packet_index
    from emotions.media.probe import screen_and_index

    path = files[name]
    refusal, index = screen_and_index(path, None)
    assert refusal is None and index is not None
    with av.open(str(path)) as container:
        assert index == _packet_index(container, container.streams.video[0])
    assert index.n_frames > 0 and index.keyframes[0] == 0
    if name == "attack":
        with pytest.raises(DecodeTooCostly):
            decode_clip(path, CONFIG, max_decode_pixels=BUDGET, index=index)
        return
    given = decode_clip(path, CONFIG, max_decode_pixels=BUDGET, index=index)
    read = decode_clip(path, CONFIG, max_decode_pixels=BUDGET)
    assert (given.frames == read.frames).all() and given.duration_s == read.duration_s


def test_a_refused_upload_has_no_index(tmp_path):
    from emotions.media.probe import screen_and_index

    text = tmp_path / "notes.mp4"
    text.write_text("not a video", encoding="utf-8")
    refusal, index = screen_and_index(text, None)
    assert refusal is not None and index is None
