"""The BentoML service over real HTTP: contract, limits, prediction log, concurrency.

One real server for the module (`emotions serve`, which becomes `bentoml serve
emotions.serve.service:EmotionService`) on a free loopback port, serving the session's small
model (tests/support/smallcorpus.py) with a small upload limit from its own params.yaml. Answers are
compared with :class:`emotions.serve.predictor.Predictor` on the same files, the code path of
`emotions predict`.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import socket
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from liveserver import LiveServer, bento_env, free_port, start_server
from realworld import HOSTILE, RealWorldTree
from smallcorpus import REPO, SmallCorpus, run_python

from emotions.config import ConfigError
from emotions.serve.batcher import MicroBatcher
from emotions.serve.prediction_log import PredictionLog, read_prediction_log
from emotions.serve.predictor import Predictor, summarise_input
from emotions.serve.settings import ModelSource, load_settings, resolve_model
from emotions.serve.upload import clean_filename, stored_name

CONTRACT = {"path", "label", "polarity", "probabilities", "timeline", "modality_share"}
ERROR_BODY = {"error", "detail"}
INPUT_STATS = {"brightness", "motion", "loudness", "duration_s", "has_audio"}
MAX_UPLOAD_MB = 0.25
BODY_TIMEOUT_S = 5.0
# Phone-like formats (tests/support/realworld.py); those whose encoder is missing here are skipped.
REAL_WORLD = [
    "Tension/h264_aac_stereo.mp4",
    "Excitation/hevc_mp3_mono.mkv",
    "Sadness/vp9_opus.webm",
    "Fear/mpeg4_ac3_51.mp4",
    "Excitation/rotated_90.mp4",
    "Relaxation/no_audio.mp4",
    "Tension/corrupt_audio_packet.mp4",
    "Tension/紧张_clip.mp4",
]


@pytest.fixture(scope="module")
def calibrated(corpus: SmallCorpus, model_dir: Path, tmp_path_factory):
    """The run calibrated on validation and evaluated with it (calibrate + evaluate stages)."""
    from calibrated import calibrate_and_evaluate

    return calibrate_and_evaluate(corpus, model_dir, tmp_path_factory.mktemp("calibrated"))


@pytest.fixture(scope="module")
def predictor(model_dir: Path, calibrated) -> Predictor:
    return Predictor(model_dir, calibration=calibrated.temperature_file)


@pytest.fixture(scope="module")
def synth_clips(corpus: SmallCorpus) -> list[Path]:
    return sorted((corpus.root / "videos").glob("*.mp4"))


@pytest.fixture(scope="module")
def real_clips(tree: RealWorldTree) -> list[Path]:
    clips = [tree.root / rel for rel in REAL_WORLD if rel in tree.kept]
    assert len(clips) >= 5, f"too few encoders here: {tree.skipped}"
    return clips


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The server's working directory, with params.yaml whose serve: section the test sets."""
    where = tmp_path_factory.mktemp("serve")
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["serve"].update(
        max_upload_mb=MAX_UPLOAD_MB,
        # Long enough that 8 concurrent requests surely share a batch; a lone request never
        # waits for it (the batcher holds a batch open only while others are decoding).
        max_latency_ms=500,
        batch_size=8,
        decode_workers=2,
        torch_threads=1,
        # A stalled upload is answered 408 this long after its request started.
        body_timeout_s=BODY_TIMEOUT_S,
    )
    (where / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return where


@pytest.fixture(scope="module")
def server(model_dir: Path, workdir: Path, predictor: Predictor, calibrated):
    port = free_port()
    argv = [
        sys.executable, "-m", "emotions", "--params", "params.yaml", "serve",
        "--model", str(model_dir), "--port", str(port), "--log", "log/predictions.jsonl",
        "--calibration", str(calibrated.temperature_file),
    ]  # fmt: skip
    env = bento_env(workdir / "bentoml-home")
    live = start_server(argv, port=port, cwd=workdir, env=env, output=workdir / "server.out")
    yield live
    live.stop()


@pytest.fixture(scope="module")
def log_path(workdir: Path) -> Path:
    return workdir / "log" / "predictions.jsonl"


def post(server: LiveServer, path: Path | None, *, name: str | None = None, type_=None):
    """POST one file as the multipart field ``video`` (None: no file at all)."""
    if path is None:
        return requests.post(f"{server.url}/predict", timeout=120)
    with path.open("rb") as handle:
        part = (name or path.name, handle) if type_ is None else (name or path.name, handle, type_)
        return requests.post(f"{server.url}/predict", files={"video": part}, timeout=120)


def log_lines(path: Path) -> list[dict[str, Any]]:
    return list(read_prediction_log(path))


def assert_same_prediction(served: dict, expected: dict, filename: str) -> None:
    """The served JSON is `emotions predict`'s for the file, with ``path`` = the upload name."""
    assert set(served) == CONTRACT, served
    assert served["path"] == filename
    probs, want = served["probabilities"], expected["probabilities"]
    assert list(probs) == list(want)
    for name in want:
        assert math.isclose(probs[name], want[name], abs_tol=1e-5), (filename, name)
    ranked = sorted(want.values(), reverse=True)
    if ranked[0] - ranked[1] > 1e-4:  # no near-tie that float noise could flip
        assert served["label"] == expected["label"]
    assert served["polarity"] == expected["polarity"] or served["label"] != expected["label"]
    assert len(served["timeline"]) == len(expected["timeline"])
    for got, ref in zip(served["timeline"], expected["timeline"], strict=True):
        assert (got["start_s"], got["end_s"]) == (ref["start_s"], ref["end_s"])
        for name in ref["probabilities"]:
            assert math.isclose(
                got["probabilities"][name], ref["probabilities"][name], abs_tol=1e-5
            )
    for key in ("audio", "visual"):
        assert math.isclose(
            served["modality_share"][key], expected["modality_share"][key], abs_tol=2e-3
        )


def test_uploads_answer_exactly_what_predict_answers(
    server: LiveServer, predictor: Predictor, synth_clips, real_clips, tree: RealWorldTree
):
    files = synth_clips[:3] + real_clips
    limit = MAX_UPLOAD_MB * 1024 * 1024
    assert all(f.stat().st_size < limit for f in files)  # these must not hit the size limit
    expected = list(predictor.predict_files(files))
    assert all("error" not in e for e in expected)
    for path, want in zip(files, expected, strict=True):
        response = post(server, path)
        assert response.status_code == 200, (path.name, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert_same_prediction(response.json(), want, path.name)
    no_audio = post(server, tree.root / "Relaxation/no_audio.mp4").json()
    assert no_audio["modality_share"] == {"audio": 0.0, "visual": 1.0}


def test_served_probabilities_are_the_calibrated_evaluate_probabilities(
    server: LiveServer, calibrated, corpus: SmallCorpus, model_dir: Path
):
    """The test clips' files, uploaded, answer what `evaluate` wrote for them after the
    temperature (fitted on validation) was applied, within 1e-5."""
    evaluated = pd.read_parquet(calibrated.predictions)
    assert calibrated.record["status"] == "fitted" and calibrated.record["temperature"] != 1.0
    where = pd.read_parquet(corpus.paths(model_dir).cache / "index.parquet")
    where = where.set_index("clip_id")["path"]
    classes = calibrated.metrics["confusion_matrix"]["classes"]
    for row in evaluated.itertuples(index=False):
        response = post(server, corpus.root / where[row.clip_id])
        assert response.status_code == 200, response.text
        probs = response.json()["probabilities"]
        for name in classes:
            assert math.isclose(probs[name], getattr(row, f"p_{name}"), abs_tol=1e-5), name
    info = requests.get(f"{server.url}/model", timeout=10).json()
    assert info["calibration"] == {
        "temperature": calibrated.record["temperature"],
        "source": calibrated.temperature_file.name,  # no server path (serve.show_paths off)
    }


def test_model_and_health_endpoints(server: LiveServer, model_dir: Path):
    for probe in ("healthz", "livez", "readyz"):
        assert requests.get(f"{server.url}/{probe}", timeout=10).status_code == 200
    info = requests.get(f"{server.url}/model", timeout=10).json()
    meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    assert info["classes"] == meta["classes"]
    assert info["polarity"] == dict(zip(meta["classes"], meta["polarity"], strict=True))
    assert info["run"] == meta["run"]
    assert info["source"] == {"origin": "env", "path": model_dir.name, "tag": None}
    assert "/" not in json.dumps(
        {k: info[k] for k in ("source", "calibration", "prediction_log")}
    ).replace("application/octet-stream", "")
    assert info["modalities"] == ["video", "audio"]
    assert info["limits"]["max_upload_mb"] == MAX_UPLOAD_MB
    assert len(info["checkpoint_sha256"]) == 64
    # The sizes the workdir's params set, reported as configured (auto: tests/unit/test_sizing).
    sizes = ("batch_size", "max_latency_ms", "decode_workers")
    assert info["batching"] == {
        "batcher": "micro",
        "batch_size": 8,
        "max_latency_ms": 500.0,
        "decode_workers": 2,
        "sizing": dict.fromkeys(sizes, "configured"),
        "forward_ms_per_clip": {},
    }
    assert "sizing: batch_size 8 (configured)" in server.output.read_text(encoding="utf-8")


def chunked_multipart(filename: str, size: int):
    """A multipart body streamed in chunks, with no Content-Length."""
    boundary = "emotions-test-boundary"

    def body():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="video"; '
            f'filename="{filename}"\r\nContent-Type: video/mp4\r\n\r\n'
        ).encode()
        chunk = b"\0" * 65536
        for _ in range(size // len(chunk) + 1):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    return body(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_refusals_are_4xx_with_error_and_detail(
    server: LiveServer, tree: RealWorldTree, synth_clips, log_path: Path, tmp_path: Path
):
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(int(MAX_UPLOAD_MB * 1024 * 1024) + 100_000))
    notes = tmp_path / "notes.txt"
    notes.write_text("shot list\n1. smile\n", encoding="utf-8")
    before = len(log_lines(log_path))

    cases = [
        (post(server, big), 413, "payload_too_large", None),
        (post(server, notes, type_="text/plain"), 415, "unsupported_media_type", "notes.txt"),
        # A video extension does not help a part that says it is text.
        (post(server, notes, name="notes.mp4", type_="text/plain"), 415, None, "notes.mp4"),
        (post(server, tree.root / "Neutral/random_bytes.mp4"), 422, "undecodable_video", None),
        (post(server, tree.root / "Sadness/truncated.mp4"), 422, "undecodable_video", None),
        (post(server, None), 400, "missing_video", None),
        (
            requests.post(f"{server.url}/predict", files={"clip": ("a.mp4", b"x")}, timeout=60),
            400,
            "missing_video",
            None,
        ),
    ]
    data, headers = chunked_multipart("endless.mp4", 2 * int(MAX_UPLOAD_MB * 1024 * 1024))
    streamed = requests.post(f"{server.url}/predict", data=data, headers=headers, timeout=60)
    cases.append((streamed, 413, "payload_too_large", None))

    for response, status, code, name in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == ERROR_BODY, body
        assert body["error"] == (code or body["error"])
        assert isinstance(body["detail"], str) and body["detail"]
        if name is not None:
            assert name in body["detail"]
    undecodable = cases[3][0].json()["detail"]
    assert undecodable.startswith("random_bytes.mp4:")
    assert "bentoml-request" not in undecodable and "upload-" not in undecodable

    # The server is still fine after refusing, on a fresh and on a kept-alive connection.
    with requests.Session() as session:
        session.post(f"{server.url}/predict", files={"video": ("big.mp4", big.read_bytes())})
        with synth_clips[0].open("rb") as handle:
            ok = session.post(f"{server.url}/predict", files={"video": handle}, timeout=60)
    assert ok.status_code == 200

    lines = log_lines(log_path)[before:]
    errors = [line for line in lines if line["status"] == "error"]
    assert [e["http_status"] for e in errors] == [s for _, s, _, _ in cases] + [413]
    assert all(e["error"] and e["detail"] for e in errors)
    assert errors[1]["filename"] == "notes.txt"


def test_every_request_is_one_log_line_with_inputs_and_embedding(
    server: LiveServer, predictor: Predictor, real_clips, log_path: Path
):
    before = len(log_lines(log_path))
    files = real_clips[:4]
    answers = [post(server, path).json() for path in files]
    lines = log_lines(log_path)[before:]
    assert len(lines) == len(files)
    assert len({line["id"] for line in lines}) == len(lines)
    for path, answer, line in zip(files, answers, lines, strict=True):
        assert line["status"] == "ok"
        assert line["filename"] == path.name
        assert line["time"].endswith("Z")
        datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
        assert line["label"] == answer["label"]
        assert line["probabilities"] == answer["probabilities"]
        assert set(line["input"]) == INPUT_STATS
        assert line["size_bytes"] == path.stat().st_size
        assert line["latency_ms"] > 0 and line["batch_size"] >= 1

        clip = predictor.decode(path)
        stats = {k: (None if math.isnan(v) else v) for k, v in summarise_input(clip).items()}
        assert line["input"] == pytest.approx(stats, nan_ok=True)
        _, embeddings = predictor.predict_clips_with_embeddings([clip])
        summary = line["embedding"]
        assert summary["dim"] == embeddings.shape[1] == len(summary["vector"])
        np.testing.assert_allclose(summary["vector"], embeddings[0], atol=2e-4)
        assert math.isclose(summary["norm"], float(np.linalg.norm(embeddings[0])), rel_tol=1e-4)
        assert math.isclose(summary["mean"], float(embeddings[0].mean()), abs_tol=1e-5)
        assert math.isclose(summary["std"], float(embeddings[0].std()), abs_tol=1e-5)


def test_concurrent_requests_all_answer_correctly_and_share_batches(
    server: LiveServer, predictor: Predictor, synth_clips, log_path: Path
):
    files = synth_clips[:8]
    expected = {path.name: e for path, e in zip(files, predictor.predict_files(files), strict=True)}
    before = len(log_lines(log_path))
    with ThreadPoolExecutor(max_workers=len(files)) as pool:
        responses = list(pool.map(lambda path: (path, post(server, path)), files))
    for path, response in responses:
        assert response.status_code == 200, response.text
        assert_same_prediction(response.json(), expected[path.name], path.name)
    lines = log_lines(log_path)[before:]
    assert sorted(line["filename"] for line in lines) == sorted(path.name for path in files)
    assert max(line["batch_size"] for line in lines) >= 2, [line["batch_size"] for line in lines]


def _append_many(path: str, worker: int, count: int) -> None:
    log = PredictionLog(path)
    for i in range(count):
        # Longer than PIPE_BUF (4096): atomicity must not rely on the pipe guarantee.
        log.append({"worker": worker, "i": i, "payload": f"{worker}-{i}-" + "x" * 6000})
    log.close()


def test_prediction_log_lines_never_interleave_across_processes(tmp_path: Path):
    path = tmp_path / "log" / "predictions.jsonl"
    workers, count = 4, 250
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_append_many, [str(path)] * workers, range(workers), [count] * workers))
    raw = path.read_text(encoding="utf-8").splitlines()
    assert len(raw) == workers * count
    records = [json.loads(line) for line in raw]  # every line is one whole record
    assert all(r["payload"] == f"{r['worker']}-{r['i']}-" + "x" * 6000 for r in records)
    for worker in range(workers):
        assert [r["i"] for r in records if r["worker"] == worker] == list(range(count))


def test_serve_refuses_a_folder_that_is_not_a_model(tmp_path: Path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (tmp_path / "params.yaml").write_text(
        (REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    result = run_python(["-m", "emotions", "serve", "--model", str(empty)], tmp_path, timeout=60)
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and message[0].startswith("emotions serve: ")
    assert "not a trained model folder" in message[0]


def test_batcher_holds_a_batch_only_for_announced_requests():
    """A lone request never waits for max_latency; announced ones share one forward pass;
    a failing forward fails exactly its own batch and the batcher keeps serving."""
    import asyncio
    import time

    calls: list[list[int]] = []

    def run_batch(items: list[int]) -> list[int]:
        calls.append(list(items))
        if -1 in items:
            raise ValueError("bad batch")
        return [item * 10 for item in items]

    batcher = MicroBatcher(run_batch, max_batch_size=4, max_latency_s=5.0)

    async def announced(item: int, delay: float) -> tuple[int, int]:
        with batcher.expect() as expected:
            await asyncio.sleep(delay)  # "decoding"
            return await expected.submit(item)

    async def scenario() -> None:
        started = time.monotonic()
        assert await batcher.submit(7) == (70, 1)
        with batcher.expect():
            pass  # announced, then gave up (a refused upload): must not hold anything open
        assert await announced(8, 0.0) == (80, 1)
        assert time.monotonic() - started < 2.0  # far below max_latency (5 s)
        results = await asyncio.gather(*(announced(i, 0.05 * i) for i in range(1, 4)))
        assert results == [(10, 3), (20, 3), (30, 3)]
        with pytest.raises(ValueError, match="bad batch"):
            await batcher.submit(-1)
        assert await batcher.submit(5) == (50, 1)

    try:
        asyncio.run(scenario())
    finally:
        batcher.close()
    assert calls == [[7], [8], [1, 2, 3], [-1], [5]]


def test_settings_come_from_params_then_environment(tmp_path: Path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["serve"]["max_upload_mb"] = 3
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw), encoding="utf-8")
    settings = load_settings({"EMOTIONS_PARAMS": str(params)})
    assert settings.max_upload_bytes == 3 * 1024 * 1024
    assert settings.log_path == Path(raw["serve"]["log_path"])
    assert resolve_model(settings, {}).path == Path("artifacts/models/emotions/full")

    env = {
        "EMOTIONS_PARAMS": str(params),
        "EMOTIONS_MAX_UPLOAD_MB": "0.5",
        "EMOTIONS_PREDICTION_LOG": "~/logs/p.jsonl",
        "EMOTIONS_MODEL_DIR": str(tmp_path),
    }
    settings = load_settings(env)
    assert settings.max_upload_bytes == 512 * 1024
    assert settings.log_path == Path.home() / "logs" / "p.jsonl"
    assert resolve_model(settings, env) == ModelSource(tmp_path, "env")
    with pytest.raises(ConfigError, match="EMOTIONS_MAX_UPLOAD_MB"):
        load_settings({**env, "EMOTIONS_MAX_UPLOAD_MB": "lots"})
    bare = load_settings({"EMOTIONS_PARAMS": str(tmp_path / "absent.yaml")})
    with pytest.raises(ConfigError, match="EMOTIONS_MODEL_DIR"):
        resolve_model(bare, {})


# --------------------------------------------------------------------------------------------
# Hostile uploads (issue #10): refused by ingest's own probe checks before any decoding, and
# the server keeps answering good clips.


def test_hostile_files_are_refused_from_the_probe(
    server: LiveServer, tree: RealWorldTree, synth_clips, log_path: Path
):
    """Each detail is the probe's own quarantine reason (decode_clip words its errors
    differently), so the refusal came from the header/packet screen, before decoding."""
    before = len(log_lines(log_path))
    for rel, status, code, reason in HOSTILE:
        path = tree.root / rel
        response = post(server, path, type_="video/mp4")
        assert response.status_code == status, (rel, response.text)
        body = response.json()
        assert body["error"] == code, (rel, body)
        assert body["detail"].startswith(f"{path.name}: {reason}"), (rel, body)
    errors = log_lines(log_path)[before:]
    assert [e["http_status"] for e in errors] == [status for _, status, _, _ in HOSTILE]
    assert post(server, synth_clips[0]).status_code == 200


def _multipart(filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart body written by hand: clients escape control characters, attackers don't."""
    boundary = "hostile-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="{filename}"'
        "\r\nContent-Type: video/mp4\r\n\r\n"
    )
    body = head.encode("utf-8") + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_a_hostile_filename_is_sanitised_never_a_path(
    server: LiveServer, synth_clips, log_path: Path, workdir: Path, tmp_path: Path
):
    evil = "../../escaped/\x1b[31mred\x07\u202egpj\t.mp4"
    body, content_type = _multipart(evil, synth_clips[1].read_bytes())
    before = len(log_lines(log_path))
    response = requests.post(
        f"{server.url}/predict", data=body, headers={"Content-Type": content_type}, timeout=120
    )
    assert response.status_code == 200, response.text
    name = response.json()["path"]
    assert name == "_[31mred__gpj_.mp4"  # base name only; ESC, BEL, RLO and TAB became _
    (line,) = log_lines(log_path)[before:]
    assert line["filename"] == name and line["status"] == "ok"
    assert not (workdir / "escaped").exists() and not (workdir.parent / "escaped").exists()


def test_a_stalled_upload_times_out_while_good_clips_are_answered(
    server: LiveServer, synth_clips, log_path: Path
):
    """Slowloris: headers and part of the body, then a byte now and then. The server answers
    408 and closes within serve.body_timeout_s (plus slack); meanwhile, and afterwards, a good
    clip is answered."""
    host, port = server.url.removeprefix("http://").split(":")
    body, content_type = _multipart("slow.mp4", synth_clips[2].read_bytes())
    request = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body[:1000]
    answered: dict[str, float | int] = {}

    def good_upload_meanwhile() -> None:
        time.sleep(1.0)
        response = post(server, synth_clips[3])
        answered.update(status=response.status_code, at=time.monotonic())

    helper = threading.Thread(target=good_upload_meanwhile)
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(request)
        helper.start()
        sock.settimeout(0.5)
        reply = b""
        sent = 1000
        while time.monotonic() - started < BODY_TIMEOUT_S + 30:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if sent < len(body) - 1:  # trickle one byte per half second, never finish
                    sock.sendall(body[sent : sent + 1])
                    sent += 1
                continue
            if not chunk:
                break  # the server closed the connection
            reply += chunk
        elapsed = time.monotonic() - started
    helper.join(timeout=120)
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), reply[:300]
    assert b'"request_timeout"' in rest
    assert BODY_TIMEOUT_S - 0.5 <= elapsed < BODY_TIMEOUT_S + 15, elapsed
    assert answered.get("status") == 200 and answered["at"] < started + elapsed
    assert post(server, synth_clips[4]).status_code == 200
    refused = [e for e in log_lines(log_path) if e.get("http_status") == 408]
    assert refused and refused[-1]["error"] == "request_timeout"


def test_upload_names_are_shown_sanitised_and_stored_fixed():
    cases = [
        ("C:\\Users\\me\\clip.MP4", "clip.MP4", "video.mp4"),
        ("../../", "upload", "video"),
        ("a/b/\r\nX-Forged: 1.mp4", "__X-Forged: 1.mp4", "video.mp4"),
        ("clip\u202e4pm.exe", "clip_4pm.exe", "video.exe"),
        ("愤怒 clip.webm", "愤怒 clip.webm", "video.webm"),
        ("clip.m p4", "clip.m p4", "video"),
    ]
    for raw, shown, stored in cases:
        assert clean_filename(raw) == shown, raw
        assert stored_name(clean_filename(raw)) == stored, raw


@pytest.mark.parametrize(("device", "resources"), [("cuda", {"gpu": 1}), ("auto", None)])
def test_the_service_asks_for_a_gpu_only_when_serve_device_is_cuda(
    tmp_path: Path, device: str, resources: dict | None
):
    """BentoML's `resources` is what `bentoml build` records and a platform schedules on:
    cuda asks for one GPU per worker; auto takes a GPU where torch sees one and asks for none."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["serve"]["device"] = device
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw), encoding="utf-8")
    # Imported in a child, in a folder whose params.yaml is this one and that holds no model
    # (the service then resolves its model only when it starts, not at import).
    script = (
        "import json, emotions.serve.service as s;"
        " print(json.dumps(s.EmotionService.config.get('resources')))"
    )
    result = run_python(["-c", script], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == resources
