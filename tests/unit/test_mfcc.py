"""The VAANet-style looped MFCCs (emotions.media.mfcc): their shape, the looping, and that the
authors' audio branch reads them as 16 segments whose last map is the 8 × 2 their pool takes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emotions.media import mfcc
from emotions.models.audio.authors_resnet import AuthorsResNetAudio
from emotions.models.settings import AudioSettings


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(round(seconds * mfcc.SAMPLE_RATE))).astype(np.float32)


def test_one_row_per_hop_and_4096_rows_of_32_after_looping() -> None:
    wave = _noise(1.0)
    features = mfcc.mfcc(wave)
    assert features.shape == (1 + len(wave) // mfcc.HOP, 32)  # centred frames
    looped = mfcc.looped_mfcc(wave)
    assert looped.shape == (4096, 32) and looped.dtype == np.float32
    assert np.isfinite(looped).all()
    # A segment of 256 rows is 2.97 s of audio, whatever the clip's length.
    assert mfcc.segment_seconds() == pytest.approx(2.972, abs=1e-3)


def test_a_short_clip_loops_from_its_start_and_a_long_one_is_cut() -> None:
    wave = _noise(1.0)
    features = mfcc.mfcc(wave)
    n = len(features)
    looped = mfcc.looped_mfcc(wave)
    for start in range(0, 4096, n):
        np.testing.assert_array_equal(looped[start : start + n], features[: 4096 - start])
    long_wave = _noise(50.0, seed=1)  # longer than 4096 hops (47.6 s): no loop, the start kept
    np.testing.assert_array_equal(mfcc.looped_mfcc(long_wave), mfcc.mfcc(long_wave)[:4096])
    with pytest.raises(ValueError, match="empty"):
        mfcc.loop_rows(np.zeros((0, 32), dtype=np.float32))


def test_the_authors_branch_ends_on_the_8_by_2_map_their_pool_takes() -> None:
    """audio_net.py's AvgPool2d([8, 2]) averages the whole last map only for 256 × 32 segments:
    the shape this inference rests on."""
    torch.manual_seed(0)
    branch = AuthorsResNetAudio(AudioSettings(arch="authors_resnet34", segments=16, embed=32))
    branch.eval()
    seen: list[tuple[int, ...]] = []
    branch.net.layer4.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    audio = torch.from_numpy(np.stack([mfcc.looped_mfcc(_noise(1.0, seed=s)) for s in (2, 3)]))
    with torch.no_grad():
        tokens, centres = branch(audio)
    assert tokens.shape == (2, 16, 32) and centres.shape == (16,)
    assert seen == [(2 * 16, 512, 8, 2)]


def test_the_cache_option_decodes_a_clip_into_looped_mfccs(tmp_path) -> None:
    """`preprocess.audio.features: looped_mfcc` through the decoder every stage uses: the
    4096 × 32 rows hold the clip's MFCCs from its start, looped, and all count as sound."""
    from realworld import make_clip

    from emotions.config import AudioFeatures, PreprocessConfig
    from emotions.media.decode import decode_clip

    clip = make_clip(tmp_path / "clip.mp4", seconds=1.0, sample_rate=44100)
    audio = AudioFeatures(features="looped_mfcc", sample_rate=44100, n_mels=32, target_frames=4096)
    decoded = decode_clip(clip, PreprocessConfig(num_frames=4, resize=32, crop=32, audio=audio))
    assert decoded.fbank.shape == (4096, 32) and decoded.audio_frames == 4096
    n = 1 + round(decoded.audio_s * mfcc.SAMPLE_RATE) // mfcc.HOP
    np.testing.assert_array_equal(decoded.fbank[n : 2 * n], decoded.fbank[:n])
    assert not np.array_equal(decoded.fbank[1 : n + 1], decoded.fbank[:n])  # the period is n
