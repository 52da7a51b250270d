"""TSN snippet sampling (issue 12, part 2): S segments × L consecutive frames, J cached
positions per segment, a random position per segment and epoch in training, the centre view
in evaluation, and `evaluate.views` averaging evenly shifted views.

Clips are real files written with the project's encoder; frame i is grey at 8·i, so a decoded
frame says which one it was.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from torch.utils.data import DataLoader

from emotions.config import AudioFeatures, PreprocessConfig, load_params
from emotions.media.decode import decode_clip, segment_indices
from emotions.media.encode import write_clip
from emotions.media.snippets import SnippetLayout
from emotions.media.workers import Outcome
from emotions.stages.preprocess import write_cache
from emotions.training.dataset import CachedClipDataset

FPS = 10
N_FRAMES = 30  # 3 s
AUDIO = AudioFeatures(n_mels=32, target_frames=120)
# 4 snippets × 2 consecutive frames, 3 cached positions per segment.
TSN = PreprocessConfig(num_frames=8, snippet_frames=2, positions=3, resize=32, crop=32, audio=AUDIO)
CENTRE_ONLY = TSN.model_copy(update={"positions": 1})
CLASSES = ["Fear", "Sadness"]


def grey_ramp(n: int = N_FRAMES) -> np.ndarray:
    frames = np.repeat((np.arange(n, dtype=np.uint8) * 8)[:, None, None, None], 3, axis=3)
    return np.ascontiguousarray(np.broadcast_to(frames, (n, 40, 40, 3)))


def frame_numbers(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Which source frame each decoded frame is (its grey level / 8), from either layout."""
    array = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    axes = (1, 2, 3)
    return np.rint(array.astype(np.float64).mean(axis=axes) / 8).astype(int)


# --------------------------------------------------------------------------- the layout


def test_one_frame_one_position_is_plain_segment_sampling():
    for n, s in [(100, 4), (2, 4), (7, 7), (31, 8)]:
        assert SnippetLayout(s, 1).indices(n).reshape(-1).tolist() == segment_indices(n, s).tolist()
    assert segment_indices(100, 4).tolist() == [12, 37, 62, 87]


def test_runs_are_consecutive_inside_their_segment_and_the_middle_one_is_centred():
    layout = SnippetLayout(segments=16, length=8, positions=3)
    n = 480  # a 16 s clip at 30 fps: segments of 30 frames
    idx = layout.indices(n)
    assert idx.shape == (3, 16, 8)
    assert (np.diff(idx, axis=2) == 1).all()  # consecutive frames
    segment = np.arange(16) * 30
    assert (idx.min(axis=2) >= segment).all() and (idx.max(axis=2) < segment + 30).all()
    # The middle candidate is centred on the segment, and is what one position gives.
    centres = idx[1].mean(axis=1)
    assert np.allclose(centres, segment + 15, atol=1.0)
    assert np.array_equal(idx[1], SnippetLayout(16, 8, 1).indices(n)[0])
    # The others lie before and after it: the jitter training draws from.
    assert (idx[0, :, 0] < idx[1, :, 0]).all() and (idx[2, :, 0] > idx[1, :, 0]).all()


def test_short_clips_stay_inside_or_loop():
    shifted = SnippetLayout(16, 8, 3).indices(20)
    assert shifted.min() >= 0 and shifted.max() <= 19
    assert (np.diff(shifted, axis=2) == 1).all()
    looped = SnippetLayout(2, 8, 1).indices(3)
    assert looped[0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


def test_views_and_selection():
    layout = SnippetLayout(4, 2, 5)
    assert layout.view_positions(1) == [2] and layout.centre == 2
    assert layout.view_positions(5) == [0, 1, 2, 3, 4]
    assert layout.view_positions(2) == [1, 3]
    with pytest.raises(ValueError, match="views"):
        layout.view_positions(6)
    cached = np.arange(layout.cached_frames)
    choice = np.array([0, 4, 2, 1])
    assert layout.select(cached, choice).tolist() == [0, 1, 34, 35, 20, 21, 14, 15]
    assert layout.select(cached[:8], choice).tolist() == list(range(8))  # one view already
    with pytest.raises(ValueError, match="fit neither"):
        layout.select(cached[:9], choice)
    with pytest.raises(ValueError, match="odd"):
        SnippetLayout(4, 2, 2)


def test_config_refuses_layouts_that_do_not_fit(tmp_path):
    with pytest.raises(ValidationError, match="multiple of"):
        PreprocessConfig(num_frames=12, snippet_frames=8)
    with pytest.raises(ValidationError, match="odd"):
        PreprocessConfig(num_frames=8, positions=2)
    with pytest.raises(ValidationError, match="keyframe"):
        PreprocessConfig(num_frames=8, snippet_frames=2, frame_sampling="keyframe")
    params = tmp_path / "params.yaml"
    with open("params.yaml", encoding="utf-8") as handle:
        text = handle.read()
    params.write_text(text.replace("  views: 1 ", "  views: 3 "), encoding="utf-8")
    with pytest.raises(Exception, match=r"evaluate\.views"):
        load_params(params)


# --------------------------------------------------------------------------- decoding


@pytest.fixture(scope="module")
def ramp_clip(tmp_path_factory):
    base = tmp_path_factory.mktemp("snippets")
    t = np.arange(3 * 16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t))[None]
    return write_clip(base / "ramp.mp4", grey_ramp(), FPS, audio, 16000)


def test_decode_holds_every_position_and_the_centre_equals_a_one_position_decode(ramp_clip):
    clip = decode_clip(ramp_clip, TSN)
    layout = SnippetLayout.of(TSN)
    assert clip.frames.shape == (24, 32, 32, 3)
    expected = layout.indices(N_FRAMES).reshape(-1)
    assert frame_numbers(clip.frames).tolist() == expected.tolist()
    np.testing.assert_allclose(clip.frame_times_s, expected / FPS, atol=1e-3)
    centre = decode_clip(ramp_clip, CENTRE_ONLY)  # what the service decodes
    assert centre.frames.shape == (8, 32, 32, 3)
    assert np.array_equal(layout.select(clip.frames, layout.fixed(layout.centre)), centre.frames)


# --------------------------------------------------------------------------- cache + loader


@pytest.fixture(scope="module", params=["raw", "jpeg"])
def tsn_cache(request, tmp_path_factory, ramp_clip):
    return build_cache(tmp_path_factory.mktemp(f"tsn-{request.param}"), request.param, ramp_clip)


@pytest.fixture(scope="module")
def jpeg_tsn_cache(tmp_path_factory, ramp_clip):
    return build_cache(tmp_path_factory.mktemp("tsn-deferred"), "jpeg", ramp_clip)


def build_cache(base, cache_format: str, ramp_clip):
    """Two rows of the ramp clip (train, test) cached through the real writer."""
    config = TSN.model_copy(update={"cache_format": cache_format})
    split = pd.DataFrame(
        [
            ("a", ramp_clip.name, "Fear", "negative", 1.0, "train"),
            ("b", ramp_clip.name, "Sadness", "negative", 1.0, "test"),
        ],
        columns=["clip_id", "path", "label", "polarity", "agreement", "split"],
    )
    split_file = base / "split.parquet"
    split.to_parquet(split_file, index=False)
    decoded = decode_clip(ramp_clip, config)
    outcomes = (Outcome((r.clip_id, r.path), value=decoded) for r in split.itertuples())
    meta = {"config": config.model_dump(mode="json")}
    write_cache(base / "cache", outcomes, clips=split, train_ids={"a"}, config=config, meta=meta)
    return base / "cache", split_file


def test_training_draws_a_position_per_segment_and_epoch(tsn_cache):
    cache_dir, split_file = tsn_cache
    dataset = CachedClipDataset(
        cache_dir, split_file, "train", crop=32, train=True, classes=CLASSES, seed=3
    )
    layout = SnippetLayout.of(TSN)
    candidates = layout.indices(N_FRAMES)  # J S L
    seen = set()
    for epoch in range(12):
        video = dataset[(epoch, 0)]["video"]
        assert video.shape == (8, 3, 32, 32)
        numbers = frame_numbers(video.permute(0, 2, 3, 1)).reshape(4, 2)
        for k in range(4):  # each snippet is one of its segment's cached runs
            assert any(numbers[k].tolist() == candidates[j, k].tolist() for j in range(3))
        seen.add(tuple(numbers[:, 0]))
        again = dataset[(epoch, 0)]["video"]
        assert torch.equal(video, again)  # a function of (seed, epoch, index)
    assert len(seen) > 3  # the positions move from epoch to epoch


def test_evaluation_takes_the_centre_or_the_view_it_is_given(tsn_cache, ramp_clip):
    cache_dir, split_file = tsn_cache
    dataset = CachedClipDataset(cache_dir, split_file, "test", crop=32, train=False)
    layout = SnippetLayout.of(TSN)
    centre = frame_numbers(dataset[0]["video"].permute(0, 2, 3, 1))
    assert centre.tolist() == layout.indices(N_FRAMES)[1].reshape(-1).tolist()
    served = decode_clip(ramp_clip, CENTRE_ONLY).frames
    assert torch.equal(dataset[0]["video"], torch.from_numpy(served).permute(0, 3, 1, 2))
    dataset.view = 0
    early = frame_numbers(dataset[0]["video"].permute(0, 2, 3, 1))
    assert early.tolist() == layout.indices(N_FRAMES)[0].reshape(-1).tolist()


def test_deferred_jpeg_samples_carry_one_view(jpeg_tsn_cache):
    from emotions.training.transforms import decode_deferred

    cache_dir, split_file = jpeg_tsn_cache

    kwargs = {"crop": 32, "train": True, "classes": CLASSES, "seed": 3}
    eager = CachedClipDataset(cache_dir, split_file, "train", **kwargs)
    lazy = CachedClipDataset(cache_dir, split_file, "train", defer_decode=True, **kwargs)
    sample = lazy[(4, 0)]
    assert len(sample["jpeg_bytes"]) == 8
    batch = lazy.collate_fn([sample])
    decoded = decode_deferred(batch, torch.device("cpu"))[0]
    assert torch.equal(decoded, eager[(4, 0)]["video"])


def test_predict_views_averages_the_shifted_views(tsn_cache):
    from emotions.models.avcanet import AVCANet
    from emotions.models.settings import ModelSettings
    from emotions.training.predict import predict_views
    from emotions.training.runtime import resolve_runtime
    from emotions.training.trainer import predict_split

    cache_dir, split_file = tsn_cache
    settings = ModelSettings.model_validate(
        {"audio": {"frames": AUDIO.target_frames, "mel_bins": AUDIO.n_mels}, "windows": 4}
    )
    torch.manual_seed(0)
    model = AVCANet(settings, num_classes=2).eval()
    runtime = resolve_runtime("cpu", "fp32")
    dataset = CachedClipDataset(cache_dir, split_file, "test", crop=32, train=False)
    one = predict_views(model, dataset, 1, runtime, batch_size=2)
    three = predict_views(model, dataset, 3, runtime, batch_size=2)
    singles = []
    for position in range(3):
        dataset.view = position
        loader = DataLoader(dataset, batch_size=2)
        singles.append(predict_split(model, loader, runtime)["logits"])
    dataset.view = None
    np.testing.assert_allclose(one["logits"], singles[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(three["logits"], np.mean(singles, axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(singles[0], singles[2])  # the views differ, so averaging matters
    assert dataset.view is None
