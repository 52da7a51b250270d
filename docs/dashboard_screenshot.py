"""Screenshot of the drift monitor's Evidently dashboard for the docs (docs/evidently-dashboard.png).

Starts `evidently ui` on a free loopback port over a monitor workspace, opens the project's page
"Dashboard" in headless Chromium (the DevTools capture of label_studio_screenshot.py) and saves
a PNG. A documentation tool, not a test: it needs Debian's `chromium`.

With ``--sample-runs`` it first makes three monitor runs into the workspace, so the picture has
something to show on a fresh `make demo`: the served run's test clips as they are, the same
clips darker and quieter (a drift), and again as they are with six refused requests. Each run
writes a prediction log the way the service does and checks it as `emotions monitor` does.

    python docs/dashboard_screenshot.py --workspace /tmp/ws --sample-runs \\
        --out docs/evidently-dashboard.png
    python docs/dashboard_screenshot.py      # the workspace of params.yaml (monitor.workspace)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import requests
from label_studio_screenshot import capture

from emotions.config import load_params
from emotions.layout import Layout
from emotions.media.decode import DecodedClip
from emotions.monitor.dashboard import PROJECT
from emotions.monitor.drift import check_log
from emotions.serve.limits import Rejection
from emotions.serve.prediction_log import PredictionLog, error_record, prediction_record
from emotions.serve.predictor import Predictor, summarise_input

REFUSED = 6  # refused requests in the third sample run


def darker_and_quieter(clip: DecodedClip) -> DecodedClip:
    """The clip at a fifth of its brightness and about e^-4 of its sound energy."""
    fbank = clip.fbank.copy()
    fbank[: clip.audio_frames] -= 4.0
    frames = (clip.frames.astype(np.float32) * 0.2).astype(np.uint8)
    return dataclasses.replace(clip, frames=frames, fbank=fbank)


def write_log(path: Path, predictor: Predictor, clips: list[DecodedClip], refused: int) -> Path:
    """A prediction log of ``clips`` (and ``refused`` too-large uploads), as the service logs."""
    log = PredictionLog(path)
    results, embeddings = predictor.predict_clips_with_embeddings(clips)
    for i, (clip, result, vector) in enumerate(zip(clips, results, embeddings, strict=True)):
        record = prediction_record(
            request_id=f"r{i}",
            filename=f"clip{i}.mp4",
            result=result,
            stats=summarise_input(clip),
            embedding=vector,
            model="sample",
            size_bytes=0,
            latency_ms=0.0,
            batch_size=len(clips),
        )
        log.append(record)
    for i in range(refused):
        rejection = Rejection(413, "too large", "the upload exceeds serve.max_upload_mb")
        log.append(error_record(request_id=f"x{i}", rejection=rejection, filename="big.mp4"))
    log.close()
    return path


def sample_runs(params_file: Path, workspace: Path) -> None:
    """Three monitor runs of the served run's test clips into ``workspace`` (see above)."""
    params = load_params(params_file)
    spec = params.run(params.serve.run)
    paths = Layout().run_paths(spec.dataset, spec.variant)
    manifest = pd.read_parquet(paths.manifest)
    split = pd.read_parquet(paths.split)
    test = manifest[manifest["clip_id"].isin(split.loc[split["split"] == "test", "clip_id"])]
    predictor = Predictor(paths.model_dir)
    root = Path(params.datasets[spec.dataset].root)
    clips = [predictor.decode(root / path) for path in test["path"]]
    where = Path(tempfile.mkdtemp(prefix="monitor-"))
    runs = [(clips, 0), ([darker_and_quieter(c) for c in clips], 0), (clips, REFUSED)]
    for i, (logged, refused) in enumerate(runs):
        summary = check_log(
            write_log(where / f"log{i}.jsonl", predictor, logged, refused),
            where / "monitor",
            model_dir=paths.model_dir,
            cache_dir=paths.cache,
            split_file=paths.split,
            split=params.monitor.reference_split,
            threshold=params.monitor.threshold,
            min_rows=min(params.monitor.min_rows, len(logged)),
            workspace=workspace,
        )
        print(f"run {i}: drift share {summary.drift_share}, drifted {summary.drifted}")


def main() -> None:
    from liveserver import start_evidently_ui

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--workspace", type=Path, help="default: monitor.workspace")
    parser.add_argument("--sample-runs", action="store_true", help="add three runs first")
    parser.add_argument("--out", type=Path, default=Path("docs/evidently-dashboard.png"))
    parser.add_argument("--wait-s", type=float, default=15.0, help="time the page gets to render")
    args = parser.parse_args()
    workspace = args.workspace or Path(load_params(args.params).monitor.workspace)
    if args.sample_runs:
        sample_runs(args.params, workspace)
    server = start_evidently_ui(workspace.resolve(), Path(tempfile.mkdtemp(prefix="evidently-")))
    try:
        (project,) = requests.get(f"{server.url}/api/projects/search/{PROJECT}", timeout=30).json()
        page = f"{server.url}/projects/{project['id']}"
        capture(page, {}, args.out, 1400, 2240, args.wait_s)
    finally:
        server.stop()
    print(f"{page} -> {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
    main()
