"""The annotation loop through a real Label Studio: queue → push → two annotators → pull → ingest.

One Label Studio server per module (tests/support/labelstudio.py), a corpus of real synthesized clips
in the ``emotions`` layout, and a queue folder in the format `emotions queue` writes. Three
queued clips are already in the corpus (their earlier stages voted otherwise: the new stage
must decide), two are new served clips (one annotated, one left for later: only finished
tasks are pulled).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import av
import pandas as pd
import pytest
import requests
import yaml
from labelstudio import LS_BIN, MISSING, start_label_studio

from emotions.annotation.labelstudio.corpus import next_stage
from emotions.annotation.labelstudio.labeling_config import FROM_NAME, TO_NAME
from emotions.cli import main
from emotions.config import load_params, parse_params
from emotions.stages.ingest import ingest
from emotions.synth.corpus import synthesize

needs_label_studio = pytest.mark.skipif(not LS_BIN.is_file(), reason=MISSING)

REPO = Path(__file__).resolve().parents[2]
PROJECT = "emotions re-annotation (test)"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _small_params(tmp_path: Path, **annotate: str) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["datasets"]["emotions"]["root"] = str(tmp_path / "data")
    queue = annotate.pop("queue_dir", None)
    if queue is not None:  # the queue folder push reads is queue.out (one key for it)
        raw["queue"]["out"] = queue
    raw["annotate"].update(annotate)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _queue_with(tmp_path: Path, path: str) -> Path:
    queue = tmp_path / "queue"
    (queue / "videos").mkdir(parents=True)
    (queue / "videos" / "a.mp4").write_bytes(b"not decoded here")
    pd.DataFrame([{"clip_id": "a", "path": path, "sha256": "0" * 64}]).to_csv(
        queue / "queue.csv", index=False
    )
    return queue


def test_push_names_what_is_missing_before_touching_label_studio(tmp_path, monkeypatch, capsys):
    from liveserver import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    queue = str(_queue_with(tmp_path, "videos/a.mp4"))
    params = _small_params(tmp_path, url=url, queue_dir=queue, document_root="/nowhere")
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    assert main(["--params", str(params), "queue", "push"]) == 2
    assert "set LABEL_STUDIO_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "some-token")
    assert main(["--params", str(params), "queue", "push"]) == 2
    assert "is not below the Label Studio document root /nowhere" in capsys.readouterr().err
    params = _small_params(tmp_path, url=url, queue_dir=queue, document_root=str(tmp_path))
    assert main(["--params", str(params), "queue", "push"]) == 2
    assert f"no Label Studio at {url}" in capsys.readouterr().err
    # Without push/pull, `emotions queue` builds a queue from the prediction log (none here).
    assert main(["--params", str(params), "queue"]) == 0
    assert "no queue written" in capsys.readouterr().out


def test_a_queue_row_leading_out_of_the_queue_is_refused(tmp_path, monkeypatch, capsys):
    queue = _queue_with(tmp_path, "../../etc/passwd")
    params = _small_params(tmp_path, queue_dir=str(queue))
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "some-token")
    assert main(["--params", str(params), "queue", "push"]) == 2
    assert "leads out of the queue" in capsys.readouterr().err


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """Label Studio up, a corpus, a queue folder and params pointing at all three."""
    base = tmp_path_factory.mktemp("annotate")
    root = base / "root"  # Label Studio's LOCAL_FILES_DOCUMENT_ROOT, like the repo for make
    data = root / "data"
    params = load_params(REPO / "params.yaml")
    taxonomy = params.taxonomy_for("emotions")
    synthesize(
        data,
        taxonomy=taxonomy,
        config=params.synth,
        clips_per_class=1,
        seed=11,
        layout="emotions",
        second_stage_below=params.ingest.second_stage_below,
        progress=False,
    )
    videos = sorted((data / "videos").glob("*.mp4"))
    votes = pd.read_csv(data / "annotations.csv", dtype=str)
    # Two clips leave the corpus: they play the served clips nobody labelled yet.
    served = videos[:2]
    # Two runs of `emotions queue`, one folder each: three corpus clips, then the two served.
    queue = root / "artifacts" / "queue"
    rows = []
    for run, clips in (("20261201T100000Z", videos[2:5]), ("20261202T100000Z", served)):
        folder = queue / run
        (folder / "videos").mkdir(parents=True)
        run_rows = []
        for video in clips:
            sha = _sha(video)
            target = folder / "videos" / f"{sha[:16]}.mp4"
            shutil.copyfile(video, target)
            run_rows.append(
                {
                    "clip_id": sha[:16],
                    "path": f"videos/{target.name}",
                    "sha256": sha,
                    "reason": "low_confidence",
                    "score": "0.31",
                    "predicted_label": "Neutral",
                    "confidence": "0.31",
                    "request_id": f"req-{sha[:6]}",
                    "served_at": "2026-12-01T10:00:00Z",
                    "folder": folder,
                }
            )
        pd.DataFrame(run_rows).drop(columns="folder").to_csv(folder / "queue.csv", index=False)
        rows += run_rows
    for video in served:
        video.unlink()
    votes = votes[~votes["clip_id"].isin({v.stem for v in served})]
    votes.to_csv(data / "annotations.csv", index=False)

    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    ls = start_label_studio(base, root)
    raw["datasets"]["emotions"]["root"] = str(data)
    raw["annotate"].update(
        url=ls.url,
        project=PROJECT,
        document_root=str(root),
        page_size=2,  # pagination is exercised with five tasks
    )
    raw["queue"]["out"] = str(queue)
    params_file = base / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw), encoding="utf-8")
    print(f"label studio: init {ls.init_s:.1f} s, start {ls.start_s:.1f} s")
    try:
        yield {
            "ls": ls,
            "data": data,
            "queue": queue,
            "queued": rows,
            "params_file": params_file,
            "params": parse_params(raw),
            "earlier": votes,
            "stage": next_stage(data),
        }
    finally:
        ls.server.stop()


def _api(ls, token: str, method: str, path: str, **kwargs):
    response = requests.request(
        method, f"{ls.url}{path}", headers={"Authorization": f"Token {token}"}, timeout=60, **kwargs
    )
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
    return response.json() if response.content else None


def _cli(loop, monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", loop["ls"].admin.token)
    code = main(["--params", str(loop["params_file"]), "queue", *args])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def _tasks(loop) -> list[dict]:
    ls = loop["ls"]
    project = _api(ls, ls.admin.token, "GET", "/api/projects", params={"title": PROJECT})
    (found,) = [p for p in project["results"] if p["title"] == PROJECT]
    body = _api(ls, ls.admin.token, "GET", "/api/tasks", params={"project": found["id"]})
    return body["tasks"]


def _annotate(ls, token: str, task_id: int, label: str | None) -> None:
    result = [
        {
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]
    body = {"result": result} if label else {"result": [], "was_cancelled": True}
    _api(ls, token, "POST", f"/api/tasks/{task_id}/annotations", json={**body, "lead_time": 4.2})


@pytest.mark.slow
@needs_label_studio
def test_push_pull_ingest_through_label_studio(loop, monkeypatch, capsys, tmp_path):
    ls = loop["ls"]
    classes = list(loop["params"].taxonomy_for("emotions"))

    first = _cli(loop, monkeypatch, capsys, "push")
    assert "(created)" in first and "5 new task(s), 0 already there" in first
    again = _cli(loop, monkeypatch, capsys, "push")
    assert "(unchanged): 0 new task(s), 5 already there" in again, again
    tasks = _tasks(loop)
    assert len(tasks) == 5, "a second push must not duplicate tasks"
    by_sha = {t["data"]["sha256"]: t for t in tasks}
    assert {t["data"]["stage"] for t in tasks} == {loop["stage"]}

    # The labeling config offers the taxonomy over a video player, and the video is served
    # from the queue folder through the local-files storage (to both annotators).
    project = _api(ls, ls.admin.token, "GET", f"/api/projects/{tasks[0]['project']}")
    assert "<Video" in project["label_config"]
    assert 'frameRate="$fps"' in project["label_config"]
    some = loop["queued"][0]
    with av.open(str(some["folder"] / some["path"])) as container:
        rate = float(container.streams.video[0].average_rate)
    assert by_sha[some["sha256"]]["data"]["fps"] == pytest.approx(rate, abs=1e-3)
    assert all(f'<Choice value="{name}"/>' in project["label_config"] for name in classes)
    for who in (ls.admin, ls.second):
        served = requests.get(
            f"{ls.url}{by_sha[some['sha256']]['data']['video']}",
            headers={"Authorization": f"Token {who.token}"},
            timeout=60,
        )
        assert served.status_code == 200
        assert served.content == (some["folder"] / some["path"]).read_bytes()

    # Two annotators: the corpus clips get a label their earlier stages did not give them
    # (both agree); the first served clip gets one vote and one skip; the last stays open.
    earlier = loop["earlier"]
    wanted: dict[str, str] = {}
    for row in loop["queued"][:3]:
        stem = None
        for video in (loop["data"] / "videos").glob("*.mp4"):
            if _sha(video) == row["sha256"]:
                stem = video.stem
        counts = earlier.loc[earlier["clip_id"] == stem, "label"].value_counts()
        # The class its earlier stages voted for least: the new stage has to overturn them.
        wanted[row["sha256"]] = min(classes, key=lambda c: (counts.get(c, 0), c))
    new_clip, open_clip = loop["queued"][3], loop["queued"][4]
    wanted[new_clip["sha256"]] = classes[1]
    for sha, label in wanted.items():
        _annotate(ls, ls.admin.token, by_sha[sha]["id"], label)
        second = None if sha == new_clip["sha256"] else label
        _annotate(ls, ls.second.token, by_sha[sha]["id"], second)

    pulled = _cli(loop, monkeypatch, capsys, "pull", "--into", str(loop["data"]))
    assert "7 vote(s) on 4 clip(s)" in pulled, pulled
    assert "1 video(s) copied, 3 already there, 7 vote(s) added" in pulled, pulled
    csv_once = (loop["data"] / "annotations.csv").read_bytes()
    again = _cli(loop, monkeypatch, capsys, "pull", "--into", str(loop["data"]))
    assert "0 vote(s) added, 7 replaced" in again, again
    assert (loop["data"] / "annotations.csv").read_bytes() == csv_once, "pull is idempotent"

    # Without --into: each queue folder gets its clips' votes (an emotions-layout corpus).
    standalone = _cli(loop, monkeypatch, capsys, "pull")
    assert "-> 2 queue folder(s) (0 video(s) copied, 4 already there, 7 vote(s) added" in standalone
    first_run, second_run = (row["folder"] for row in (loop["queued"][0], loop["queued"][3]))
    assert len(pd.read_csv(first_run / "annotations.csv")) == 6
    assert len(pd.read_csv(second_run / "annotations.csv")) == 1

    votes = pd.read_csv(loop["data"] / "annotations.csv", dtype=str)
    stage_rows = votes[votes["stage"] == str(loop["stage"])]
    assert set(stage_rows["annotator"]) == {ls.admin.email, ls.second.email}
    assert len(stage_rows) == 7

    params = loop["params"]
    out = tmp_path / "artifacts"
    result = ingest(
        loop["data"],
        out,
        layout="emotions",
        taxonomy=params.taxonomy_for("emotions"),
        config=params.ingest,
        progress=False,
    )
    manifest = result.manifest.set_index("sha256")
    for sha, label in wanted.items():
        assert sha in manifest.index, "a pulled clip is in the manifest"
        assert manifest.loc[sha, "label"] == label, "the new stage decides"
        assert manifest.loc[sha, "deciding_stage"] == loop["stage"]
    assert open_clip["sha256"] not in manifest.index, "an unfinished task is not pulled"
    stats = json.loads((out / "annotation_stats.json").read_text(encoding="utf-8"))
    assert stats["votes_per_stage"][str(loop["stage"])] == 7
    assert stats["clips_per_stage"][str(loop["stage"])] == 4
    assert str(loop["stage"]) in stats["per_stage"]
