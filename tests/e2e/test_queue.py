"""The re-annotation queue: the upload store, the rules, the queue folder, and the whole loop.

Fast tests build a prediction log with :func:`prediction_record` (the service's own line
writer) from made-up answers, so each rule has clips it must pick and clips it must leave; the
loop test serves real clips through a real server with ``serve.keep_uploads`` on, runs the
monitor flow on that drifted log, and reads the queue it wrote.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from emotions.annotation.queue import build_queue, labelled_hashes
from emotions.annotation.queue_format import (
    COLUMNS,
    REASONS,
    QueueFormatError,
    read_queue,
)
from emotions.annotation.rules import DriftSlice, candidate_table, select, total_variation
from emotions.config import QueueConfig
from emotions.serve.prediction_log import prediction_record
from emotions.serve.upload_store import UploadStore, file_sha256, key_path

CLASSES = ("Joy", "Sadness", "Anger")
MB = 1024 * 1024


def probs(top: float, label: str = "Joy") -> dict[str, float]:
    """A distribution over CLASSES with ``top`` on ``label``, the rest shared."""
    rest = (1.0 - top) / (len(CLASSES) - 1)
    return {c: (top if c == label else rest) for c in CLASSES}


def record(
    i: int,
    store: UploadStore,
    folder: Path,
    *,
    confidence: float = 0.9,
    audio: dict | None = None,
    video: dict | None = None,
    windows: list[dict] | None = None,
    brightness: float = 0.5,
) -> dict[str, Any]:
    """One answered request whose upload (random bytes: the queue never decodes) is kept."""
    upload = folder / f"clip{i}.mp4"
    upload.write_bytes(os.urandom(2000) + i.to_bytes(4, "big"))
    kept = store.put(upload, upload.name)
    assert kept is not None
    answer = probs(confidence)
    timeline = [{"probabilities": w} for w in (windows or [answer, answer])]
    return prediction_record(
        request_id=f"r{i}",
        filename=upload.name,
        result={
            "label": "Joy",
            "polarity": "positive",
            "probabilities": answer,
            "modality_share": {"audio": 0.5, "visual": 0.5},
            "timeline": timeline,
        },
        stats={"brightness": brightness, "motion": 0.1, "loudness": -5.0, "duration_s": 2.0},
        embedding=np.zeros(4),
        model="m",
        size_bytes=upload.stat().st_size,
        latency_ms=1.0,
        batch_size=1,
        views={"audio": audio or answer, "video": video or answer},
        stored=kept.key,
        sha256=kept.sha256,
    )


@pytest.fixture
def generated(tmp_path: Path) -> tuple[list[dict], Path]:
    """A log with two clips for each rule, eight ordinary ones, and one without a kept upload."""
    store = UploadStore(tmp_path / "store", quota_mb=10, retention_days=1)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    records = [
        record(0, store, uploads, confidence=0.35),
        record(1, store, uploads, confidence=0.4),
        record(2, store, uploads, audio=probs(0.9, "Sadness"), video=probs(0.9, "Anger")),
        record(3, store, uploads, audio=probs(0.7, "Sadness"), video=probs(0.8, "Joy")),
        record(4, store, uploads, windows=[probs(0.9), probs(0.9, "Anger")]),
        record(5, store, uploads, windows=[probs(0.9), probs(0.6, "Sadness"), probs(0.9)]),
        record(6, store, uploads, brightness=0.05),
        record(7, store, uploads, brightness=0.08),
        *(record(8 + i, store, uploads) for i in range(8)),
    ]
    records.append({**records[-1], "id": "gone", "stored": None, "sha256": None})
    return records, tmp_path / "store"


def config(**changes: Any) -> QueueConfig:
    base = {"max_clips": 20, "random_share": 0.05, "min_window_disagreement": 0.3}
    return QueueConfig.model_validate({**base, **changes})


def test_each_rule_picks_its_clips_and_only_those(generated):
    records, _ = generated
    candidates = candidate_table(records)
    assert len(candidates) == 16  # the record without a kept upload is no candidate
    # The log moved darker than the reference (median 0.5 < 0.6): the slice is the dark tail.
    reference = pd.DataFrame({"brightness": np.linspace(0.45, 0.75, 20)})
    drift = DriftSlice(["brightness", "label"], reference, candidates)
    expected = {
        "low_confidence": {"r0", "r1"},
        "modality_disagreement": {"r2", "r3"},
        "window_disagreement": {"r4", "r5"},
        "drifted_slice": {"r6", "r7"},
    }
    picked = select(candidates, config(random_share=0.0), drift)
    assert picked.groupby("reason")["request_id"].apply(set).to_dict() == expected
    # Rules take turns, each its best first; scores are the rules' own measures.
    assert list(picked["reason"][:4]) == list(expected)
    score = picked.set_index("request_id")["score"]
    assert score["r0"] == pytest.approx(0.65) and score["r1"] == pytest.approx(0.6)
    tv = total_variation(probs(0.9, "Sadness"), probs(0.9, "Anger"))
    assert score["r2"] == pytest.approx(tv) and tv > score["r3"]
    low, high = reference["brightness"].quantile([0.1, 0.9])
    assert score["r6"] == pytest.approx((low - 0.05) / (high - low))

    # With a control share: one clip drawn first, from all candidates, the same for the seed.
    with_control = select(candidates, config(), drift)
    control = set(with_control.loc[with_control["reason"] == "random_control", "request_id"])
    assert len(control) == 1  # round(20 * 0.05)
    rest = with_control[with_control["reason"] != "random_control"]
    assert set(rest["request_id"]) == set().union(*expected.values()) - control
    again = select(candidates, config(), None)  # no drift result: no drifted_slice
    assert "drifted_slice" not in set(again["reason"])
    assert set(again.loc[again["reason"] == "random_control", "request_id"]) == control
    other_seed = [
        set(select(candidates, config(seed=seed))["request_id"].head(1)) for seed in range(1, 6)
    ]
    assert any(draw != control for draw in other_seed)


def test_the_cap_holds_and_rules_share_it(generated):
    records, _ = generated
    picked = select(candidate_table(records), config(max_clips=5, random_share=0.0))
    assert list(picked["reason"]) == [
        "low_confidence",
        "modality_disagreement",
        "window_disagreement",
        "low_confidence",
        "modality_disagreement",
    ]
    assert list(picked["request_id"]) == ["r0", "r2", "r4", "r1", "r3"]


def test_the_queue_folder_is_the_documented_format_and_never_repeats(generated, tmp_path):
    records, store = generated
    out = tmp_path / "queues"
    labelled = {records[0]["sha256"]}  # r0 is already in a manifest
    first = build_queue(records, store, config(), labelled=labelled, out_root=out)
    assert first.queue_dir and first.already_labelled == 1
    queue = read_queue(first.queue_dir)
    assert tuple(pd.read_csv(Path(first.queue_dir) / "queue.csv").columns) == COLUMNS
    assert set(queue["reason"]) <= set(REASONS) and "r0" not in set(queue["request_id"])
    assert len(queue) == first.clips == sum(first.reasons.values())
    for row in queue.itertuples(index=False):
        video = Path(first.queue_dir) / row.path
        assert row.path == f"videos/{row.clip_id}.mp4" and row.clip_id == row.sha256[:16]
        assert file_sha256(video) == row.sha256  # the upload, byte for byte
        source = next(r for r in records if r["id"] == row.request_id)
        assert row.served_at == source["time"] and row.predicted_label == "Joy"
        assert row.confidence == pytest.approx(max(source["probabilities"].values()))

    # A second run treats the first queue's clips as taken: only what is left qualifies.
    taken = labelled_hashes([], out) | labelled
    assert taken >= set(queue["sha256"])
    second = build_queue(records, store, config(), labelled=taken, out_root=out)
    if second.queue_dir is not None:
        assert not set(read_queue(second.queue_dir)["sha256"]) & taken
    assert second.already_labelled == len(queue) + 1

    # An evicted upload is skipped, not a failure.
    for path in store.rglob("*.mp4"):
        path.unlink()
    empty = build_queue(records, store, config(), labelled=set(), out_root=tmp_path / "q2")
    assert empty.queue_dir is None and empty.missing_files == 16
    assert not (tmp_path / "q2").exists() or not list((tmp_path / "q2").iterdir())


def test_a_log_without_kept_uploads_queues_nothing(tmp_path):
    """keep_uploads off (no ``stored``), or no log at all: no folder, no error."""
    served = {"id": "r", "status": "ok", "label": "Joy", "probabilities": probs(0.3)}
    for records in ([], [served, {"id": "x", "status": "error"}]):
        result = build_queue(records, tmp_path, config(), labelled=set(), out_root=tmp_path / "q")
        assert result.queue_dir is None and result.clips == result.candidates == 0
    assert not (tmp_path / "q").exists()


def test_a_log_line_naming_a_file_outside_the_store_is_not_queued(tmp_path):
    """``stored`` comes from the log: a key leading out of the store is no kept upload."""
    store = UploadStore(tmp_path / "store", quota_mb=10, retention_days=1)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    honest = record(0, store, uploads, confidence=0.35)
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"not an upload")
    crafted = [
        {**honest, "id": f"evil{i}", "stored": key, "sha256": f"{i:x}" * 64}
        for i, key in enumerate((str(secret), "../secret.mp4", "../../secret.mp4"), start=1)
    ]
    result = build_queue(
        [honest, *crafted], store.root, config(), labelled=set(), out_root=tmp_path / "q"
    )
    assert result.clips == 1 and result.missing_files == 3
    queued = [p.read_bytes() for p in Path(result.queue_dir).rglob("*.mp4")]
    assert b"not an upload" not in queued and len(queued) == 1


def test_read_queue_refuses_a_broken_folder(tmp_path):
    with pytest.raises(QueueFormatError, match=r"no queue\.csv"):
        read_queue(tmp_path)
    (tmp_path / "queue.csv").write_text(
        ",".join(COLUMNS) + "\n" + "a,videos/a.mp4,ff,guess,1,Joy,0.5,r,t\n"
    )
    with pytest.raises(QueueFormatError, match="unknown reason"):
        read_queue(tmp_path)
    (tmp_path.parent / "elsewhere.mp4").write_bytes(b"x")
    (tmp_path / "queue.csv").write_text(
        ",".join(COLUMNS) + "\n" + "a,../elsewhere.mp4,ff,random_control,1,Joy,0.5,r,t\n"
    )
    with pytest.raises(QueueFormatError, match="leads out of the queue folder"):
        read_queue(tmp_path)


def test_the_store_is_content_addressed_bounded_and_logs_evictions(tmp_path, caplog):
    store = UploadStore(tmp_path / "store", quota_mb=1.0, retention_days=1)
    files = []
    for i in range(4):
        path = tmp_path / f"u{i}.MP4"
        path.write_bytes(os.urandom(400_000))
        files.append(path)
    first = store.put(files[0], "u0.MP4")
    assert first and first.new and first.key == f"{file_sha256(files[0])}.mp4"
    assert key_path(store.root, first.key) == store.root / first.key[:2] / first.key
    repeat = store.put(files[0], "again.MP4")
    assert repeat and not repeat.new and repeat.key == first.key
    assert store.total_bytes() == 400_000  # a repeat costs nothing
    # Make u0 the oldest, then fill past the 1 MiB quota: it goes first, and that is logged.
    old = time.time() - 3600
    os.utime(key_path(store.root, first.key), (old, old))
    with caplog.at_level(logging.INFO, logger="emotions.serve.uploads"):
        kept = [store.put(path, path.name) for path in files[1:]]
    assert all(k is not None and k.new for k in kept)
    # 4 x 400 kB against 1 MiB: the two oldest went, in age order, each logged.
    evicted = [r.getMessage().split()[2] for r in caplog.records if "evicted" in r.getMessage()]
    assert evicted == [first.key, kept[0].key]
    assert "store over quota" in caplog.text
    assert not key_path(store.root, first.key).exists()
    assert store.total_bytes() == 800_000
    # Expired files go even under quota; a file larger than the quota is not kept at all.
    roomy = UploadStore(store.root, quota_mb=100, retention_days=1)
    stale = key_path(store.root, kept[-1].key)
    os.utime(stale, (old - 2 * 86400, old - 2 * 86400))
    fresh = tmp_path / "fresh.mp4"
    fresh.write_bytes(os.urandom(1000))
    assert roomy.put(fresh, fresh.name) is not None and not stale.exists()
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (MB + 1))
    assert store.put(big, big.name) is None
    assert store.put(tmp_path / "vanished.mp4", "vanished.mp4") is None  # logged, no raise


# --- The loop: a real server keeps uploads, the monitor flow finds drift and queues clips ------


def darker_and_quieter(source: Path, target: Path) -> Path:
    """The clip re-encoded at a fifth of the brightness and a twentieth of the amplitude."""
    import av

    from emotions.media.encode import write_clip

    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        fps = round(float(stream.average_rate))
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(source)) as container:
        rate = container.streams.audio[0].rate
        sound = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    dark = (frames.astype(np.float32) * 0.2).astype(np.uint8)
    return write_clip(target, dark, fps, np.clip(sound * 0.05, -1, 1), rate)


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):
        yield


@pytest.mark.slow
def test_served_clips_with_keep_uploads_become_a_queue_after_the_monitor_flow(
    harness, tmp_path, corpus, model_dir, monkeypatch, capsys
):
    import json

    import requests
    import yaml
    from liveserver import bento_env, free_port, start_server
    from smallcorpus import RUN

    from emotions.cli import main
    from flows.monitor import WOULD_RETRAIN, monitor

    repo = corpus.workdir(tmp_path / "repo")
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["serve"].update(keep_uploads=True, decode_workers=1, torch_threads=1)
    raw["monitor"].update(reference_split="train", min_rows=10, threshold=0.3)
    raw["queue"].update(max_clips=8, random_share=0.125)
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    originals = sorted((corpus.root / "videos").glob("*.mp4"))
    dark = [darker_and_quieter(p, tmp_path / "dark" / p.name) for p in originals[:12]]
    labelled = originals[12:16]  # in the corpus, so in the manifest: never queued
    uploads = [*dark, *labelled, dark[0]]  # and one repeat

    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "emotions",
        "serve",
        "--model",
        str(model_dir),
        "--port",
        str(port),
    ]
    server = start_server(
        argv, port=port, cwd=repo, env=bento_env(repo / "bentoml-home"), output=tmp_path / "out"
    )
    try:
        for path in uploads:
            with path.open("rb") as handle:
                answer = requests.post(
                    f"{server.url}/predict", files={"video": handle}, timeout=120
                )
            assert answer.status_code == 200, answer.text
            # Nothing else about serving changes: the answer is the `emotions predict` contract.
            assert set(answer.json()) == {
                "path", "label", "polarity", "probabilities", "timeline", "modality_share"
            }  # fmt: skip
    finally:
        server.stop()

    lines = [json.loads(line) for line in (repo / raw["serve"]["log_path"]).open()]
    assert [line["status"] for line in lines] == ["ok"] * len(uploads)
    for path, line in zip(uploads, lines, strict=True):
        assert line["sha256"] == file_sha256(path) and line["stored"] == f"{line['sha256']}.mp4"
        views = line["modality_probabilities"]
        assert set(views) == {"audio", "video"}
        assert sum(views["video"].values()) == pytest.approx(1.0, abs=1e-4)
        assert len(line["window_probabilities"]) >= 2
    store = repo / raw["serve"]["upload_store"]
    assert len(list(store.rglob("*.mp4"))) == 16  # 17 answered, the repeat stored once
    assert lines[-1]["stored"] == lines[0]["stored"]

    result = monitor(repo=str(repo), model=str(model_dir), run=RUN, on_drift="report")
    assert result["decision"] == WOULD_RETRAIN and "brightness" in result["drifted_checks"]
    summary = json.loads((repo / "artifacts/monitor/summary.json").read_text())
    assert summary["queue"] == result["queue"] and result["queue"]["queue_dir"]
    queue_dir = Path(result["queue"]["queue_dir"])
    assert queue_dir.parent == repo / "artifacts" / "queue"
    queue = read_queue(queue_dir)

    assert 2 <= len(queue) <= 8 and set(queue["reason"]) <= set(REASONS)
    assert (queue["reason"] == "random_control").sum() == 1
    assert "drifted_slice" in set(queue["reason"])
    assert not set(queue["sha256"]) & {file_sha256(p) for p in labelled}
    reference = pd.read_parquet(repo / "artifacts/monitor/reference.parquet")
    dark_tail = reference["brightness"].quantile(0.1)
    by_id = {line["id"]: line for line in lines}
    cfg = QueueConfig.model_validate(raw["queue"])
    for row in queue.itertuples(index=False):
        line = by_id[row.request_id]
        assert file_sha256(queue_dir / row.path) == row.sha256 == line["sha256"]
        confidence = max(line["probabilities"].values())
        assert row.confidence == pytest.approx(confidence) and row.predicted_label == line["label"]
        if row.reason == "low_confidence":
            assert confidence < cfg.max_confidence
            assert row.score == pytest.approx(1 - confidence, abs=1e-6)
        elif row.reason == "modality_disagreement":
            views = line["modality_probabilities"]
            tv = total_variation(views["audio"], views["video"])
            assert tv >= cfg.min_modality_disagreement and row.score == pytest.approx(tv)
        elif row.reason == "window_disagreement":
            windows = line["window_probabilities"]
            tv = max(total_variation(a, b) for a, b in combinations(windows, 2))
            assert tv >= cfg.min_window_disagreement and row.score == pytest.approx(tv)
        elif row.reason == "drifted_slice":
            assert line["input"]["brightness"] < dark_tail and row.score > 0
        else:
            assert 0 <= row.score < 1

    # `emotions queue` again: what the first queue took is not queued twice.
    monkeypatch.chdir(repo)
    assert main(["queue"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("queue: ")
    later = sorted(p for p in (repo / "artifacts/queue").iterdir() if p != queue_dir)
    for folder in later:
        assert not set(read_queue(folder)["sha256"]) & set(queue["sha256"])
    assert f"{len(queue) + 4} already labelled or queued" in printed
