"""Predict emotions for arbitrary video files with a trained model folder.

The one code path from an uploaded file to a prediction, shared by `emotions predict` and the
BentoML service: `decode_clip` (the function that filled the training cache) and `make_sample`
(the loader's eval transform), so a served model sees exactly what it was trained on.

Clip probabilities are calibrated: the clip logits are divided by the run's temperature
(:mod:`emotions.model_folder`, fitted on validation by the `calibrate` stage) before the softmax, exactly as `evaluate`
does, so every consumer (CLI, service, drift reference) gets the probabilities the metrics
describe. The per-window timeline comes from a head of its own that was not calibrated, and
stays a raw softmax.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotions import model_folder
from emotions.cache.format import FBANK_DTYPE
from emotions.config import PreprocessConfig
from emotions.media.clipcheck import ClipBounds, PacketIndex
from emotions.media.decode import DecodedClip, DecodeError, decode_clip, decode_limit
from emotions.media.probe import screen_and_index
from emotions.media.snippets import SnippetLayout
from emotions.serve.device import resolve_placement
from emotions.training.transforms import make_sample


class Predictor:
    """A trained AV-CANet with its preprocessing and calibration, ready for files."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "cpu",
        precision: str = "auto",
        threads: int = 1,
        calibration: str | Path | None = None,
        bounds: ClipBounds | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.model, self.meta = model_folder.load(self.model_dir)
        self.classes: list[str] = self.meta["classes"]
        self.polarity: list[str] = self.meta["polarity"]
        trained = PreprocessConfig.model_validate(self.meta["preprocess"])
        # The cache's layout (J positions per segment); an upload is decoded for its centre
        # view alone, the evaluation's view: the middle of J odd positions is the segment
        # centre, so one position decodes exactly those frames at 1/J of the cost.
        self.layout = SnippetLayout.of(trained)
        self.preprocess = trained.model_copy(update={"positions": 1})
        # Files are screened as ingest and the service screen them (one rule set for what is
        # a clip): a still image, an audio file or text named .mp4 is refused, not decoded.
        self.bounds = bounds
        self.placement = resolve_placement(device, precision)
        self.device = self.placement.device
        self.model.to(self.device).eval()
        self.modalities = self.model.modalities
        self.threads = threads
        self.temperature, self.calibration_source = model_folder.find_temperature(
            self.model_dir, self.meta, calibration
        )

    def decode(self, path: str | Path, index: PacketIndex | None = None) -> DecodedClip:
        """``index``: the packet index the screening read, so the cost check reuses it."""
        return decode_clip(
            path,
            self.preprocess,
            threads=self.threads,
            max_decode_pixels=decode_limit(self.bounds),
            index=index,
        )

    def centre_view(self, frames: np.ndarray) -> np.ndarray:
        """The evaluation view (T frames) of a clip's frames: cached (J·T) or decoded (T)."""
        return self.layout.select(frames, self.layout.fixed(self.layout.centre))

    def tensors(self, clips: Sequence[DecodedClip]) -> dict[str, torch.Tensor]:
        videos, audios = [], []
        for clip in clips:
            # The cache stores log-mel as FBANK_DTYPE (float16): round the same way, so the
            # model gets the very values it was trained and evaluated on, not a float32
            # version that differs by up to ~1e-3 after normalisation.
            video, audio = make_sample(
                self.centre_view(clip.frames),
                clip.fbank.astype(FBANK_DTYPE),
                clip.audio_frames,
                crop=self.preprocess.crop,
                rng=None,
                mean=self.meta["fbank_mean"],
                std=self.meta["fbank_std"],
                # A model folder written before the setting existed trained with ours.
                spatial=self.meta.get("spatial", "ours"),
            )
            videos.append(video)
            audios.append(audio)
        return {
            "video": torch.stack(videos).to(self.device),
            "audio": torch.stack(audios).to(self.device),
            "has_audio": torch.tensor([c.has_audio for c in clips], device=self.device),
            "audio_frames": torch.tensor(
                [c.audio_frames for c in clips], dtype=torch.int64, device=self.device
            ),
        }

    def predict_clips(self, clips: Sequence[DecodedClip]) -> list[dict[str, Any]]:
        """Predictions for decoded clips, batched through the model in one forward pass."""
        return self.predict_clips_with_embeddings(clips)[0]

    def predict_clips_with_embeddings(
        self, clips: Sequence[DecodedClip]
    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """:meth:`predict_clips` plus each clip's embedding (B, D) from the same forward pass,
        which the service logs so the drift monitor can compare it with the validation set."""
        results, embeddings, _ = self.predict_clips_with_views(clips)
        return results, embeddings

    @torch.inference_mode()
    def predict_clips_with_views(
        self, clips: Sequence[DecodedClip]
    ) -> tuple[list[dict[str, Any]], np.ndarray, list[dict[str, dict[str, float] | None]]]:
        """:meth:`predict_clips_with_embeddings` plus each clip's single-modality views: the
        probabilities of the model's auxiliary audio-only and video-only heads, ``{"audio":
        {class: p} | None, "video": {class: p}}`` (audio None for a clip without sound; ``{}``
        for a one-modality model). The service logs them so the re-annotation queue can find
        clips whose sound and picture disagree. Like the timeline, they are a raw softmax: the
        temperature was fitted for the fused head only."""
        if not clips:
            return [], np.zeros((0, 0), dtype=np.float32), []
        batch = self.tensors(clips)
        # One backbone pass for the full prediction and both masked ones (modality share).
        masks = [None, *self.modalities] if len(self.modalities) == 2 else [None]
        with self.placement.autocast():
            passes = self.model.forward_masked(masks, **batch)
        outputs = dict(zip(masks, passes, strict=True))
        full = outputs[None]
        embeddings = full["embedding"].float().cpu().numpy()
        aux = {
            m: torch.softmax(full[f"{m}_logits"].float(), dim=1)
            for m in self.modalities
            if f"{m}_logits" in full
        }
        views: list[dict[str, dict[str, float] | None]] = [
            {
                m: None if m == "audio" and not clip.has_audio else self._as_dict(p[i])
                for m, p in aux.items()
            }
            for i, clip in enumerate(clips)
        ]
        probs = torch.softmax(full["logits"].float() / self.temperature, dim=1)
        windows = torch.softmax(full["window_logits"].float(), dim=2)
        masked = {
            m: torch.softmax(out["logits"].float() / self.temperature, dim=1)
            for m, out in outputs.items()
            if m is not None
        }
        results = []
        for i, clip in enumerate(clips):
            results.append(
                self._describe(clip, probs[i], windows[i], {m: p[i] for m, p in masked.items()})
            )
        return results, embeddings, views

    def _describe(self, clip: DecodedClip, probs, windows, masked) -> dict[str, Any]:
        best = int(probs.argmax())
        count = windows.shape[0]
        timeline = []
        for w, (video_s, audio_s) in enumerate(window_sources(clip, count)):
            window_best = int(windows[w].argmax())
            timeline.append(
                {
                    "start_s": video_s[0],
                    "end_s": video_s[1],
                    "video_s": video_s,
                    "audio_s": audio_s,
                    "label": self.classes[window_best],
                    "probabilities": self._as_dict(windows[w]),
                }
            )
        return {
            "label": self.classes[best],
            "polarity": self.polarity[best],
            "probabilities": self._as_dict(probs),
            "timeline": timeline,
            "modality_share": self._modality_share(clip, probs, masked),
        }

    def _modality_share(self, clip: DecodedClip, probs, masked) -> dict[str, float]:
        """How much each modality moves the prediction: the total-variation distance between
        the full prediction and the one with that modality masked, normalised to sum to 1."""
        if len(self.modalities) == 1:
            only = "visual" if self.modalities[0] == "video" else "audio"
            return {"audio": float(only == "audio"), "visual": float(only == "visual")}
        if not clip.has_audio:
            return {"audio": 0.0, "visual": 1.0}
        audio = 0.5 * float((probs - masked["audio"]).abs().sum())
        visual = 0.5 * float((probs - masked["video"]).abs().sum())
        total = audio + visual
        if total <= 1e-12:
            return {"audio": 0.5, "visual": 0.5}
        return {"audio": round(audio / total, 4), "visual": round(visual / total, 4)}

    def _as_dict(self, probs: torch.Tensor) -> dict[str, float]:
        return {name: round(float(p), 6) for name, p in zip(self.classes, probs, strict=True)}

    def predict_files(self, paths: Iterable[str | Path], batch_size: int = 8) -> Iterator[dict]:
        """One result per path, in order: the contract dict, or {"path", "error"}."""
        pending: list[tuple[str, DecodedClip]] = []
        for path in paths:
            refusal, index = screen_and_index(path, self.bounds)
            if refusal is not None:
                yield from self._flush(pending)
                pending = []
                # Worded as the service's refusal detail: "<file name>: <the probe's reason>".
                yield {"path": str(path), "error": f"{Path(path).name}: {refusal.reason}"}
                continue
            try:
                pending.append((str(path), self.decode(path, index)))
            except (DecodeError, OSError) as error:
                yield from self._flush(pending)
                pending = []
                yield {"path": str(path), "error": str(error)}
                continue
            if len(pending) >= batch_size:
                yield from self._flush(pending)
                pending = []
        yield from self._flush(pending)

    def _flush(self, pending: list[tuple[str, DecodedClip]]) -> Iterator[dict]:
        if not pending:
            return
        results = self.predict_clips([clip for _, clip in pending])
        for (path, _), result in zip(pending, results, strict=True):
            yield {"path": path, **result}


def window_sources(clip: DecodedClip, windows: int) -> list[tuple[list[float], list[float] | None]]:
    """Seconds of source media each of ``windows`` equal timeline windows used:
    ([a, b] of picture, [a, b] of sound or None).

    Both tensors span the clip on one time base (emotions.media.decode): window w holds the
    frames and fbank rows of seconds [w, w + 1) × span / windows: its picture is the run of
    frames sampled there (emotions.media.snippets; the centre run, as evaluated), its sound that
    whole span pooled, cut at the end of the audio (``audio_frames`` rows of
    ``target_frames``); None where the clip has no audio or the window lies wholly past the
    sound's end.
    """
    span = float(clip.span_s)
    rows = clip.fbank.shape[0]
    sound_end = span * clip.audio_frames / rows if rows else 0.0
    out: list[tuple[list[float], list[float] | None]] = []
    for w in range(windows):
        start, end = span * w / windows, span * (w + 1) / windows
        video = [round(start, 3), round(end, 3)]
        audio = None
        if clip.has_audio and start < sound_end:
            audio = [round(start, 3), round(min(end, sound_end), 3)]
        out.append((video, audio))
    return out


def summarise_input(clip: DecodedClip) -> dict[str, float]:
    """Input statistics the drift monitor tracks (brightness, motion, loudness, duration)."""
    return input_statistics(
        clip.frames, clip.fbank, clip.audio_frames, clip.duration_s, clip.has_audio
    )


def input_statistics(
    frames: np.ndarray, fbank: np.ndarray, audio_frames: int, duration_s: float, has_audio: bool
) -> dict[str, float]:
    """:func:`summarise_input` on bare arrays, so the monitor's reference table (built from the
    decode-once cache) measures the validation clips exactly as the service measures uploads."""
    frames = np.asarray(frames).astype(np.float32)
    motion = float(np.abs(np.diff(frames, axis=0)).mean()) if len(frames) > 1 else 0.0
    valid = np.asarray(fbank)[:audio_frames]
    return {
        "brightness": float(frames.mean() / 255.0),
        "motion": motion / 255.0,
        "loudness": float(valid.mean()) if audio_frames else float("nan"),
        "duration_s": float(duration_s),
        "has_audio": float(has_audio),
    }
