"""`emotions predict` and the Predictor: the JSON-lines contract on real-world files, and one
preprocessing path shared with training and evaluation.

The model is the session's small model (tests/support/smallcorpus.py); the files come from
tests/support/realworld.py: several codecs and containers, no audio, a corrupt audio packet, and junk.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from realworld import HOSTILE, RealWorldTree
from smallcorpus import RUN, SmallCorpus, run_python
from torch.utils.data import DataLoader

from emotions.model_folder import load as load_trained_model
from emotions.serve.predictor import Predictor
from emotions.training.dataset import build_dataset
from emotions.training.predict import predict_split
from emotions.training.runtime import resolve_runtime

CONTRACT = {"path", "label", "polarity", "probabilities", "timeline", "modality_share"}
WINDOW_KEYS = {"start_s", "end_s", "video_s", "audio_s", "label", "probabilities"}
# The formats a phone or a platform hands us; each must come through the CLI.
FORMATS = [
    "Tension/h264_aac_stereo.mp4",
    "Excitation/hevc_mp3_mono.mkv",
    "Fear/mpeg4_ac3_51.mp4",
    "Sadness/vp9_opus.webm",
    "Fear/hevc_120fps.mp4",
    "Excitation/rotated_90.mp4",
    "Neutral/silent_track.mp4",
    "Relaxation/no_audio.mp4",
    "Tension/corrupt_audio_packet.mp4",
    "Tension/紧张_clip.mp4",
]
BROKEN = ["Neutral/random_bytes.mp4", "Sadness/truncated.mp4", "Relaxation/readme.txt"]


REPO = Path(__file__).resolve().parents[2]


def predict(model_dir: Path, files: list[Path], cwd: Path, *options: str):
    return run_python(
        ["-m", "emotions", *options, "predict", "--model", str(model_dir), *map(str, files)], cwd
    )


def test_predict_answers_every_file_in_order_with_the_contract(
    model_dir: Path, tree: RealWorldTree, tmp_path
):
    good = [rel for rel in FORMATS if rel in tree.kept]
    assert len(good) >= 6, f"too few encoders here: {tree.skipped}"
    # Broken files in between good ones: each gets its own error line, the rest still answer.
    order = [good[0], BROKEN[0], *good[1:4], BROKEN[1], *good[4:], BROKEN[2]]
    files = [tree.root / rel for rel in order]
    result = predict(model_dir, files, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(path) for path in files]

    meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    classes, polarity = meta["classes"], dict(zip(meta["classes"], meta["polarity"], strict=True))
    for rel, answer in zip(order, lines, strict=True):
        if rel in BROKEN:
            assert set(answer) == {"path", "error"}, answer
            assert Path(rel).name in answer["error"]
            continue
        kept = tree.kept[rel]
        assert set(answer) == CONTRACT, rel
        probs = answer["probabilities"]
        assert list(probs) == classes
        assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-4)
        assert answer["label"] == max(probs, key=probs.get)
        assert answer["polarity"] == polarity[answer["label"]]

        timeline = answer["timeline"]
        assert len(timeline) == meta["model"]["windows"]
        assert timeline[0]["start_s"] == 0.0
        for before, after in itertools.pairwise(timeline):
            assert before["end_s"] == after["start_s"]  # no gap, no overlap
        assert abs(timeline[-1]["end_s"] - kept.duration_s) < 0.1, rel
        for window in timeline:
            assert set(window) == WINDOW_KEYS
            assert window["start_s"] < window["end_s"]
            assert math.isclose(sum(window["probabilities"].values()), 1.0, abs_tol=1e-4)
            assert window["label"] == max(window["probabilities"], key=window["probabilities"].get)

        share = answer["modality_share"]
        assert set(share) == {"audio", "visual"}
        assert math.isclose(share["audio"] + share["visual"], 1.0, abs_tol=1e-3)
        assert 0.0 <= share["audio"] <= 1.0
        if not kept.has_audio:
            assert share == {"audio": 0.0, "visual": 1.0}, rel
    # A clip with one broken audio packet still has audio that moves the prediction.
    corrupt = lines[order.index("Tension/corrupt_audio_packet.mp4")]
    assert corrupt["modality_share"]["audio"] > 0.0


def test_predict_exits_non_zero_when_every_file_fails(
    model_dir: Path, tree: RealWorldTree, tmp_path
):
    files = [tree.root / rel for rel in BROKEN] + [tmp_path / "missing.mp4"]
    result = predict(model_dir, files, tmp_path)
    assert result.returncode != 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [set(line) for line in lines] == [{"path", "error"}] * len(files)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"emotions predict: no prediction: all {len(files)} file(s) failed"
    )


def test_predict_with_a_folder_that_is_not_a_model(tree: RealWorldTree, tmp_path):
    not_a_model = tmp_path / "empty-model"
    not_a_model.mkdir()
    result = predict(not_a_model, [tree.root / FORMATS[0]], tmp_path)
    assert result.returncode != 0
    assert result.stdout == ""
    message = result.stderr.strip().splitlines()
    assert len(message) == 1, result.stderr
    assert message[0].startswith("emotions predict: ")
    assert "not a trained model folder" in message[0]


def test_predictor_matches_the_evaluate_path_on_cached_clips(model_dir: Path, corpus: SmallCorpus):
    """Decoding a file for serving gives exactly the cached sample evaluation reads."""
    params, paths = corpus.params(), corpus.paths(model_dir)
    dataset = build_dataset(params, RUN, paths, "test", train=False)
    model, _ = load_trained_model(model_dir)
    evaluated = predict_split(
        model, DataLoader(dataset, batch_size=8), resolve_runtime("cpu", "fp32")
    )
    expected = torch.softmax(torch.as_tensor(evaluated["logits"]), dim=1)

    where = pd.read_parquet(paths.cache / "index.parquet").set_index("clip_id")["path"]
    predictor = Predictor(model_dir)
    clips = [predictor.decode(corpus.root / where[clip_id]) for clip_id in dataset.clip_ids]
    batch = predictor.tensors(clips)
    for i in range(len(dataset)):
        sample = dataset[i]
        assert torch.equal(batch["video"][i], sample["video"])
        assert torch.equal(batch["audio"][i], sample["audio"])
        assert bool(batch["has_audio"][i]) == bool(sample["has_audio"])
    served = predictor.predict_clips(clips)
    got = torch.tensor([[r["probabilities"][c] for c in predictor.classes] for r in served])
    # Same inputs, same weights: only the 6-decimal rounding of the JSON remains.
    torch.testing.assert_close(got, expected.float(), atol=2e-6, rtol=0)


@pytest.fixture(scope="module")
def calibrated(corpus: SmallCorpus, model_dir: Path, tmp_path_factory):
    from calibrated import calibrate_and_evaluate

    return calibrate_and_evaluate(corpus, model_dir, tmp_path_factory.mktemp("calibrated"))


def _test_clip_files(corpus: SmallCorpus, model_dir: Path, clip_ids) -> list[Path]:
    paths = corpus.paths(model_dir)
    where = pd.read_parquet(paths.cache / "index.parquet").set_index("clip_id")["path"]
    return [corpus.root / where[clip_id] for clip_id in clip_ids]


def test_predict_returns_the_calibrated_probabilities_evaluate_reports(
    calibrated, corpus: SmallCorpus, model_dir: Path, tmp_path
):
    """`emotions predict --calibration` on the test clips' files answers evaluate's
    calibrated test probabilities (predictions.parquet), not the raw softmax."""
    evaluated = pd.read_parquet(calibrated.predictions)
    files = _test_clip_files(corpus, model_dir, evaluated["clip_id"])
    argv = ["-m", "emotions", "predict", "--model", str(model_dir)]
    result = run_python(
        [*argv, "--calibration", str(calibrated.temperature_file), *map(str, files)], tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    classes = calibrated.metrics["confusion_matrix"]["classes"]
    got = np.array([[a["probabilities"][c] for c in classes] for a in answers])
    want = evaluated[[f"p_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    raw = Predictor(model_dir, calibration=None)
    assert raw.temperature == 1.0 and raw.calibration_source is None  # nothing found here
    uncalibrated = [r["probabilities"] for r in raw.predict_files(files)]
    raw_max = max(max(p.values()) for p in uncalibrated)
    assert abs(raw_max - got.max()) > 1e-3  # the temperature really changed the answers


def test_predictor_finds_the_temperature_in_its_model_folder_and_checks_the_checkpoint(
    calibrated, model_dir: Path, tmp_path
):
    import shutil

    from emotions.layout import TEMPERATURE as TEMPERATURE_FILE
    from emotions.model_folder import CalibrationError

    packaged = tmp_path / "packaged"  # as `emotions package` lays out a BentoML model
    packaged.mkdir()
    for name in ("model.json", "best.pt"):
        shutil.copyfile(model_dir / name, packaged / name)
    shutil.copyfile(calibrated.temperature_file, packaged / TEMPERATURE_FILE)
    predictor = Predictor(packaged)
    assert predictor.temperature == calibrated.record["temperature"]
    assert predictor.calibration_source == str(packaged / TEMPERATURE_FILE)

    # Other weights: an explicit file is refused, a discovered one is not applied.
    other = tmp_path / "other"
    shutil.copytree(packaged, other)
    checkpoint = torch.load(other / "best.pt", weights_only=True)
    first = next(iter(checkpoint["model"]))
    checkpoint["model"][first] = checkpoint["model"][first] + 1.0
    torch.save(checkpoint, other / "best.pt")
    with pytest.raises(CalibrationError, match="another checkpoint"):
        Predictor(other, calibration=calibrated.temperature_file)
    assert Predictor(other).temperature == 1.0
    refused = run_python(
        ["-m", "emotions", "predict", "--model", str(other), "--calibration",
         str(calibrated.temperature_file), "clip.mp4"],
        tmp_path,
    )  # fmt: skip
    assert refused.returncode != 0 and refused.stdout == ""
    assert refused.stderr.strip().splitlines()[-1].startswith("emotions predict: ")
    assert "another checkpoint" in refused.stderr


def test_predict_refuses_what_ingest_and_the_service_refuse(
    model_dir: Path, tree: RealWorldTree, tmp_path: Path
):
    """One rule set for what a clip is: a still image, an audio-only file, a 16000² header or
    text named .mp4 gets the probe's reason (the service's 415/422 detail, ingest's quarantine
    reason), never a prediction."""
    from emotions.config import load_params
    from emotions.media.clipcheck import ClipBounds
    from emotions.media.probe import screen_file

    text = tmp_path / "notes.mp4"
    text.write_text("not a video, whatever the name says\n", encoding="utf-8")
    files = [tree.root / rel for rel, *_ in HOSTILE] + [text]
    result = predict(model_dir, files, tmp_path, "--params", str(REPO / "params.yaml"))
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [set(line) for line in lines] == [{"path", "error"}] * len(files), result.stdout
    for line, (rel, _, _, reason) in zip(lines, HOSTILE, strict=False):
        assert line["error"].startswith(f"{Path(rel).name}: {reason}"), (rel, line)
    bounds = ClipBounds.of(load_params(REPO / "params.yaml").ingest)
    refusal = screen_file(text, bounds)
    assert refusal is not None and lines[-1]["error"] == f"{text.name}: {refusal.reason}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_predict_on_cuda_without_cuda_is_one_clear_line(model_dir: Path, tmp_path: Path):
    result = run_python(
        ["-m", "emotions", "predict", "--device", "cuda", "--model", str(model_dir), "x.mp4"],
        tmp_path,
    )
    assert result.returncode == 2 and result.stdout == ""
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and "Traceback" not in result.stderr, result.stderr
    assert message[0].startswith("emotions predict: ") and "no CUDA device" in message[0]


def test_predictor_puts_the_model_and_every_input_on_its_device(
    model_dir: Path, tree: RealWorldTree
):
    """Device placement without a GPU: on the meta device every parameter, buffer and input
    tensor the predictor makes must be on meta; one left on the CPU would break CUDA."""
    cpu = Predictor(model_dir, device="cpu")
    clip = cpu.decode(tree.root / FORMATS[0])
    meta = Predictor(model_dir, device="meta", precision="fp32")
    assert {p.device.type for p in meta.model.parameters()} == {"meta"}
    assert {b.device.type for b in meta.model.buffers()} <= {"meta"}
    batch = meta.tensors([clip, clip])
    assert {name: t.device.type for name, t in batch.items()} == dict.fromkeys(batch, "meta")
    with torch.inference_mode(), meta.placement.autocast():
        outputs = meta.model.forward_masked([None], **batch)
    assert outputs[0]["logits"].device.type == "meta"
    assert outputs[0]["logits"].shape == (2, len(meta.classes))


def test_inference_precision_defaults_follow_the_device() -> None:
    from emotions.serve.device import DeviceError, resolve_placement

    assert resolve_placement("cpu", "auto").bf16 is False
    assert resolve_placement("cpu", "bf16").bf16 is True
    assert resolve_placement("meta", "fp32").device.type == "meta"
    auto = resolve_placement("auto", "auto")
    assert auto.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="precision"):
        resolve_placement("cpu", "fp16")
