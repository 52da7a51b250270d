"""The two tables the drift monitor compares, with the same columns.

*Current*: the service's prediction log (:mod:`emotions.serve.prediction_log`), one row per
answered request. *Reference*: one split (validation by default) of the served run, measured
from the decode-once cache with the same statistics function (:func:`input_statistics`) and
predicted by the same :class:`~emotions.serve.predictor.Predictor` the service runs. Both sides thus
come out of one code path; any difference between them is the data's, not the code's.

Columns: the input statistics (:data:`INPUT_COLUMNS`), ``has_audio``, ``label`` (the predicted
class), ``confidence`` (its probability), ``p_<class>`` and ``emb_0 .. emb_<D-1>``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emotions import model_folder
from emotions.atomic import atomic_write, atomic_write_json
from emotions.cache.format import INDEX

INPUT_COLUMNS = ("brightness", "motion", "loudness", "duration_s")
EMBEDDING_PREFIX = "emb_"


class MonitorDataError(ValueError):
    """The log or the reference cannot be turned into a table to compare."""


def embedding_columns(table: pd.DataFrame) -> list[str]:
    """The ``emb_<i>`` columns, in index order."""
    names = [c for c in table.columns if str(c).startswith(EMBEDDING_PREFIX)]
    return sorted(names, key=lambda c: int(str(c)[len(EMBEDDING_PREFIX) :]))


def _row(
    stats: Mapping[str, Any], label: str, probabilities: Mapping[str, float], vector: Sequence
) -> dict[str, Any]:
    row: dict[str, Any] = {
        name: np.nan if stats.get(name) is None else float(stats[name]) for name in INPUT_COLUMNS
    }
    row["has_audio"] = float(stats.get("has_audio") or 0.0)
    row["label"] = str(label)
    row["confidence"] = float(max(probabilities.values())) if probabilities else np.nan
    for name, p in probabilities.items():
        row[f"p_{name}"] = float(p)
    for i, value in enumerate(vector):
        row[f"{EMBEDDING_PREFIX}{i}"] = float(value)
    return row


def records_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The answered requests (``status == "ok"``) of a prediction log as a table; refusals and
    lines from an older log format without an embedding vector are left out.

    Built column-wise (the embeddings as one float matrix), not as one dict per row: a 100k-row
    log with 128-wide embeddings would otherwise cost millions of dict entries and minutes."""
    columns: dict[str, list[Any]] = {name: [] for name in (*INPUT_COLUMNS, "has_audio")}
    labels: list[str] = []
    confidence: list[float] = []
    probabilities: list[Mapping[str, float]] = []
    vectors: list[Sequence[float]] = []
    for record in records:
        if record.get("status") != "ok" or "label" not in record:
            continue
        stats = record.get("input") or {}
        for name in INPUT_COLUMNS:
            value = stats.get(name)
            columns[name].append(np.nan if value is None else float(value))
        columns["has_audio"].append(float(stats.get("has_audio") or 0.0))
        labels.append(str(record["label"]))
        probs = record.get("probabilities") or {}
        confidence.append(float(max(probs.values())) if probs else np.nan)
        probabilities.append(probs)
        vectors.append((record.get("embedding") or {}).get("vector") or [])
    if not labels:
        return pd.DataFrame()
    sizes = np.fromiter((len(v) for v in vectors), dtype=np.int64, count=len(vectors))
    keep = sizes == sizes.max()  # one embedding size only
    table = pd.DataFrame(columns)
    table["label"] = labels
    table["confidence"] = confidence
    probs_table = pd.DataFrame.from_records(probabilities).astype(float)
    probs_table.columns = [f"p_{name}" for name in probs_table.columns]
    dim = int(sizes.max())
    matrix = np.asarray([v for v, k in zip(vectors, keep, strict=True) if k], dtype=np.float64)
    embeddings = pd.DataFrame(
        matrix.reshape(-1, dim), columns=[f"{EMBEDDING_PREFIX}{i}" for i in range(dim)]
    )
    parts = [table[keep].reset_index(drop=True), probs_table[keep].reset_index(drop=True)]
    return pd.concat([*parts, embeddings], axis=1)


def log_table(path: str | Path) -> pd.DataFrame:
    """:func:`records_table` of the log file at ``path`` (empty when there is no such file)."""
    from emotions.serve.prediction_log import read_prediction_log

    return records_table(read_prediction_log(path))


def build_reference(
    model_dir: str | Path,
    cache_dir: str | Path,
    split_file: str | Path,
    split: str = "val",
    *,
    batch_size: int = 8,
    device: str = "cpu",
    precision: str = "auto",
) -> pd.DataFrame:
    """The reference table: every cached clip of ``split`` measured and predicted as the
    service would (the cache holds what :func:`decode_clip` made of the file, which is what an
    upload of that file turns into)."""
    from emotions.cache.format import FBANK, INDEX, require_complete
    from emotions.cache.shards import CachedFrames
    from emotions.media.decode import DecodedClip
    from emotions.serve.predictor import Predictor, input_statistics

    cache = require_complete(cache_dir)
    chosen = pd.read_parquet(split_file, columns=["clip_id", "split"])
    chosen = chosen[chosen["split"] == split]
    index = pd.read_parquet(cache / INDEX, columns=["clip_id", "row", "audio_frames", "duration_s"])
    merged = chosen.astype({"clip_id": str}).merge(index.astype({"clip_id": str}), on="clip_id")
    if merged.empty:
        raise MonitorDataError(f"{split_file}: no cached clips in split '{split}' under {cache}")
    frames = CachedFrames(cache)  # raw or jpeg cache
    fbank = np.load(cache / FBANK, mmap_mode="r")
    predictor = Predictor(model_dir, device=device, precision=precision)
    layout = predictor.layout
    centre = layout.frame_rows(layout.fixed(layout.centre)).tolist()
    rows: list[dict[str, Any]] = []
    records = merged.to_dict("records")
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        clips = []
        for item in batch:
            row, valid = int(item["row"]), int(item["audio_frames"])
            clip_frames = frames.view(row, centre)  # the view the service decodes
            clips.append(
                DecodedClip(
                    frames=clip_frames,
                    fbank=np.asarray(fbank[row], dtype=np.float32),
                    audio_frames=valid,
                    has_audio=valid > 0,
                    duration_s=float(item["duration_s"]),
                    frame_times_s=np.zeros(len(clip_frames)),
                )
            )
        results, embeddings = predictor.predict_clips_with_embeddings(clips)
        for item, clip, result, vector in zip(batch, clips, results, embeddings, strict=True):
            stats = input_statistics(
                clip.frames, clip.fbank, clip.audio_frames, clip.duration_s, clip.has_audio
            )
            # The log keeps embeddings to 4 decimals; so does the reference.
            rounded = [round(float(v), 4) for v in vector]
            rows.append(
                {
                    "clip_id": item["clip_id"],
                    **_row(stats, result["label"], result["probabilities"], rounded),
                }
            )
    return pd.DataFrame(rows)


def reference_key(
    model_dir: str | Path, cache_dir: str | Path, split_file: str | Path, split: str
) -> str:
    """What a reference was built from: the weights, the cache index and the split."""
    digest = hashlib.sha256(split.encode())
    for path in (model_folder.weights(model_dir), Path(cache_dir) / INDEX, Path(split_file)):
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()[:16]


def load_or_build_reference(
    out_dir: str | Path,
    model_dir: str | Path,
    cache_dir: str | Path,
    split_file: str | Path,
    split: str = "val",
    *,
    device: str = "cpu",
    precision: str = "auto",
) -> pd.DataFrame:
    """The reference, reused from ``out_dir/reference.parquet`` while the model, cache and split
    it was built from are unchanged (``reference.json`` records their fingerprint), else rebuilt."""
    out = Path(out_dir)
    table_path, key_path = out / "reference.parquet", out / "reference.json"
    key = reference_key(model_dir, cache_dir, split_file, split)
    if table_path.is_file() and key_path.is_file():
        stored = json.loads(key_path.read_text(encoding="utf-8"))
        if stored.get("key") == key:
            return pd.read_parquet(table_path)
    table = build_reference(
        model_dir, cache_dir, split_file, split, device=device, precision=precision
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(table_path, lambda tmp: table.to_parquet(tmp, index=False))
    meta = {"key": key, "model_dir": str(model_dir), "split": split, "rows": len(table)}
    atomic_write_json(meta, key_path)
    return table
