"""VAANet-style looped MFCCs: the audio input the authors' audio layers' shapes fit (inferred).

Why this exists: the authors' AV-CANet loader (``datasets/ve8.py``) is not published, but their
audio branch (XuecWu/eMotions, AV-CANet/models/audio_net.py: a (7, 1) stem with stride (2, 1),
``AvgPool2d([8, 2])``) fits 16 segments of 256 rows × 32 bins, which is what VAANet's loader
gives (Zhao et al., AAAI 2020; its ``datasets/ve8.py``: ``preprocess_audio`` takes 32 MFCCs of
the clip's audio at 44.1 kHz with librosa's defaults, ``VE8Dataset.__getitem__`` tiles them
along time and keeps the first 4096 rows). That the authors fed this is inferred, not stated.

What follows from it: one row is 512 samples at 44.1 kHz, so a segment of 256 rows is 2.97 s of
audio and the 4096 rows are 47.6 s, the clip's sound looped from its start. The segments are
therefore not aligned with the video's snippets (ours, the cache's log-mel, are).

``preprocess.audio.features: looped_mfcc`` stores them in the cache (emotions.media.decode).
The transform is torchaudio's ``MFCC`` set to librosa's defaults (2048-point FFT, hop 512,
128 Slaney mel bands with Slaney area norm, power to dB with an 80 dB floor, orthonormal DCT-II).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

SAMPLE_RATE = 44100  # ve8.py preprocess_audio: librosa.load(..., sr=44100)
N_MFCC = 32  # ve8.py preprocess_audio: n_mfcc=32
ROWS = 4096  # ve8.py VE8Dataset.__getitem__: timeseries_length = 4096
N_FFT = 2048  # librosa.feature.mfcc's defaults from here on
HOP = 512
N_MELS = 128


@functools.lru_cache(maxsize=4)
def _transform(sample_rate: int, n_mfcc: int):
    import torchaudio.transforms as transforms

    return transforms.MFCC(
        sample_rate=sample_rate,
        n_mfcc=n_mfcc,
        dct_type=2,
        norm="ortho",
        log_mels=False,  # power to dB (librosa's power_to_db), not a natural log
        melkwargs={
            "n_fft": N_FFT,
            "hop_length": HOP,
            "n_mels": N_MELS,
            "mel_scale": "slaney",
            "norm": "slaney",
            "center": True,
        },
    )


def mfcc(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, n_mfcc: int = N_MFCC) -> np.ndarray:
    """(samples,) mono float → (frames, n_mfcc) float32, one row per hop of 512 samples."""
    with torch.no_grad():
        out = _transform(sample_rate, n_mfcc)(torch.as_tensor(wave, dtype=torch.float32))
    return out.T.contiguous().numpy()


def loop_rows(features: np.ndarray, rows: int = ROWS) -> np.ndarray:
    """(frames, bins) → (rows, bins): the frames repeated from the start until ``rows`` are
    filled, then cut (VE8Dataset's ``np.tile`` by ``rows // frames + 1``)."""
    if len(features) == 0:
        raise ValueError("no MFCC frames to loop (empty audio)")
    reps = rows // len(features) + 1
    return np.tile(features, (reps, 1))[:rows]


def looped_mfcc(
    wave: np.ndarray, sample_rate: int = SAMPLE_RATE, rows: int = ROWS, n_mfcc: int = N_MFCC
) -> np.ndarray:
    """(samples,) mono at ``sample_rate`` → (rows, n_mfcc) float32: the clip's MFCCs looped."""
    return loop_rows(mfcc(wave, sample_rate, n_mfcc), rows)


def segment_seconds(rows: int = ROWS, segments: int = 16, sample_rate: int = SAMPLE_RATE) -> float:
    """Seconds of audio one of ``segments`` equal slices of ``rows`` covers (256 rows: 2.97 s)."""
    return rows / segments * HOP / sample_rate
