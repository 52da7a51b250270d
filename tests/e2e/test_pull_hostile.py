"""`emotions queue pull` against crafted Label Studio exports: nothing outside its root, nothing
half-done, every refusal one line and exit 2.

A real Label Studio never sends these exports, so a small fake server on loopback answers the
three calls a pull makes (project by title, the export, the users) with what each test sets;
the real client, the real command line and real files do the rest. Every refusal is checked to
leave the whole tree (document root, corpus, the folder outside) byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pandas as pd
import pytest
import yaml

from emotions.annotation.labelstudio.labeling_config import DATA_KEY, FROM_NAME, TO_NAME
from emotions.cli import main

REPO = Path(__file__).resolve().parents[2]
PROJECT = "emotions re-annotation (crafted)"
ANNOTATOR = "ann@example.org"


class FakeLabelStudio:
    """Loopback HTTP server answering a pull's calls; ``export`` is whatever a test sets."""

    def __init__(self) -> None:
        self.export: Any = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path.rstrip("/")
                if path == "/api/projects":
                    body: Any = {"results": [{"id": 7, "title": PROJECT}], "next": None}
                elif path == "/api/projects/7/export":
                    body = fake.export
                elif path == "/api/users":
                    body = [{"id": 1, "email": ANNOTATOR}]
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLabelStudio]:
    server = FakeLabelStudio()
    try:
        yield server
    finally:
        server.stop()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _queue(folder: Path, clips: dict[str, bytes]) -> list[dict[str, str]]:
    (folder / "videos").mkdir(parents=True)
    rows = []
    for content in clips.values():
        sha = _sha(content)
        (folder / "videos" / f"{sha[:16]}.mp4").write_bytes(content)
        rows.append({"clip_id": sha[:16], "path": f"videos/{sha[:16]}.mp4", "sha256": sha})
    pd.DataFrame(rows).to_csv(folder / "queue.csv", index=False)
    return rows


@pytest.fixture
def tree(tmp_path, fake, monkeypatch) -> dict[str, Any]:
    """Document root with two queue folders and a corpus; a folder outside it; params."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    first = _queue(root / "queue" / "20261201T100000Z", {"a": b"clip a", "b": b"clip b"})
    second = _queue(root / "queue" / "20261202T100000Z", {"c": b"clip c"})
    data = root / "data"
    (data / "videos").mkdir(parents=True)
    (data / "videos" / "old.mp4").write_bytes(b"an earlier clip")
    pd.DataFrame([{"clip_id": "old", "stage": "1", "annotator": "x", "label": "Joy"}]).to_csv(
        data / "annotations.csv", index=False
    )
    (outside / "q").mkdir(parents=True)
    (outside / "secret.mp4").write_bytes(b"not the corpus's")
    _queue(outside / "q2", {"d": b"clip d"})
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["datasets"]["emotions"]["root"] = str(data)
    raw["annotate"].update(url=fake.url, project=PROJECT, document_root=str(root))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw), encoding="utf-8")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "crafted-token")
    classes = list(raw["taxonomies"][raw["datasets"]["emotions"]["taxonomy"]])
    return {
        "root": root,
        "outside": outside,
        "data": data,
        "first": (root / "queue" / "20261201T100000Z", first),
        "second": (root / "queue" / "20261202T100000Z", second),
        "params": params,
        "classes": classes,
        "base": tmp_path,
    }


def task(
    tree: dict[str, Any], folder: Path, row: dict[str, str], *, task_id: int = 1, **data: Any
) -> dict[str, Any]:
    """A finished task as `emotions queue push` makes it, one vote; ``data`` overrides fields."""
    root = tree["root"]
    fields = {
        DATA_KEY: "/data/local-files/?d="
        + quote((folder / row["path"]).relative_to(root).as_posix()),
        "clip_id": row["clip_id"],
        "sha256": row["sha256"],
        "stage": 3,
        "queue": folder.relative_to(root).as_posix(),
    }
    fields.update(data)
    vote = {"type": "choices", "from_name": FROM_NAME, "to_name": TO_NAME}
    vote["value"] = {"choices": [tree["classes"][0]]}
    return {"id": task_id, "data": fields, "annotations": [{"completed_by": 1, "result": [vote]}]}


def snapshot(base: Path) -> dict[str, bytes | str]:
    """Every entry under ``base``: a file's bytes, a folder, a link's target."""
    found: dict[str, bytes | str] = {}
    for path in sorted(base.rglob("*")):
        key = path.relative_to(base).as_posix()
        if path.is_symlink():
            found[key] = f"link -> {path.readlink()}"
        elif path.is_dir():
            found[key] = "folder"
        else:
            found[key] = path.read_bytes()
    return found


def pull(tree: dict[str, Any], capsys, *args: str) -> tuple[int, str, str]:
    code = main(["--params", str(tree["params"]), "queue", "pull", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def refused(tree, fake, capsys, export: Any, expected: str, *args: str) -> None:
    """The pull of ``export`` exits 2 with one line naming ``expected`` and writes nothing."""
    fake.export = export
    before = snapshot(tree["base"])
    code, _, err = pull(tree, capsys, *args)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err
    assert snapshot(tree["base"]) == before, "a refused pull wrote something"


def test_an_honest_export_pulls_into_queue_folders_and_into_a_corpus(tree, fake, capsys):
    (first, rows), (second, more) = tree["first"], tree["second"]
    fake.export = [
        task(tree, first, rows[0], task_id=1),
        task(tree, first, rows[1], task_id=2),
        task(tree, second, more[0], task_id=3),
    ]
    code, out, err = pull(tree, capsys)
    assert code == 0, err
    assert "3 vote(s) on 3 clip(s)" in out and "2 queue folder(s)" in out, out
    assert len(pd.read_csv(first / "annotations.csv")) == 2
    assert len(pd.read_csv(second / "annotations.csv")) == 1
    code, out, err = pull(tree, capsys, "--into", str(tree["data"]))
    assert code == 0, err
    assert "3 video(s) copied, 0 already there, 3 vote(s) added" in out, out
    votes = pd.read_csv(tree["data"] / "annotations.csv", dtype=str)
    assert set(votes["annotator"]) == {"x", ANNOTATOR}
    for row in [*rows, *more]:
        copied = tree["data"] / "videos" / f"{row['clip_id']}.mp4"
        assert _sha(copied.read_bytes()) == row["sha256"]
    assert not [p for p in tree["data"].rglob(".*")], "no staged file is left"


def test_paths_in_task_data_never_lead_out_of_their_root(tree, fake, capsys):
    (first, rows) = tree["first"]
    secret = tree["outside"] / "secret.mp4"
    escape = task(
        tree,
        first,
        rows[0],
        **{
            DATA_KEY: "/data/local-files/?d=../outside/secret.mp4",
            "sha256": _sha(secret.read_bytes()),
        },
    )
    refused(tree, fake, capsys, [escape], "leads out of", "--into", str(tree["data"]))
    absolute = task(tree, first, rows[0], **{DATA_KEY: f"/data/local-files/?d={secret}"})
    refused(tree, fake, capsys, [absolute], "leads out of", "--into", str(tree["data"]))
    # A link inside the document root to a file outside it is the same escape.
    (first / "videos" / "linked.mp4").symlink_to(secret)
    linked = task(
        tree, first, {**rows[0], "path": "videos/linked.mp4", "sha256": _sha(secret.read_bytes())}
    )
    refused(tree, fake, capsys, [linked], "symlink to", "--into", str(tree["data"]))
    (first / "videos" / "linked.mp4").unlink()
    # The clip id becomes a file name: it must be a plain one.
    pwned = task(tree, first, rows[0], clip_id="../../pwned")
    refused(tree, fake, capsys, [pwned], "'../../pwned' is not a plain file name")
    refused(tree, fake, capsys, [pwned], "is not a plain file name", "--into", str(tree["data"]))
    assert not list(tree["base"].rglob("pwned*"))
    # The queue folder receives annotations.csv: below the document root, and a queue folder.
    out_queue = task(tree, first, rows[0], queue="../outside/q2")
    refused(tree, fake, capsys, [out_queue], "leads out of")
    not_a_queue = task(tree, first, rows[0], queue="data/videos")
    refused(tree, fake, capsys, [not_a_queue], "is not a queue folder")
    second = tree["second"][0].relative_to(tree["root"]).as_posix()
    elsewhere = task(tree, first, rows[0], queue=second)
    refused(tree, fake, capsys, [elsewhere], "is not in its queue folder")
    assert not (tree["outside"] / "q2" / "annotations.csv").exists()


def test_the_content_must_be_what_the_task_says(tree, fake, capsys):
    (first, rows) = tree["first"]
    other = task(tree, first, rows[0], sha256=rows[1]["sha256"])
    refused(tree, fake, capsys, [other], "the task says", "--into", str(tree["data"]))
    for bad in ({"sha256": None}, {"sha256": "ABC"}):
        refused(tree, fake, capsys, [task(tree, first, rows[0], **bad)], "no sha256")
    missing = task(tree, first, rows[0])
    del missing["data"]["sha256"]
    refused(tree, fake, capsys, [missing], "no sha256")
    # One clip id on two tasks of other content: whose votes would they be?
    twice = [
        task(tree, first, rows[0]),
        task(tree, first, {**rows[1], "clip_id": rows[0]["clip_id"]}),
    ]
    refused(tree, fake, capsys, twice, "names two tasks", "--into", str(tree["data"]))


@pytest.mark.parametrize(
    ("export", "expected"),
    [
        ({"detail": "not an export"}, "export is dict, not a list of tasks"),
        (None, "export is NoneType, not a list of tasks"),
        (["a task?"], "export item 0 is str, not a task object"),
        ([{"id": 4, "data": ["x"]}], "task 4: 'data' is not an object"),
        ([{"id": 5, "data": {}, "annotations": {"a": 1}}], "task 5: 'annotations' is not"),
        ([{"id": 6, "data": {}, "annotations": [{"result": "Joy"}]}], "task 6: an annotation's"),
        (
            [{"id": 8, "data": {}, "annotations": [{"result": [{"value": ["Joy"]}]}]}],
            "task 8: an annotation's",
        ),
    ],
)
def test_an_export_of_the_wrong_shape_is_one_clear_line(tree, fake, capsys, export, expected):
    refused(tree, fake, capsys, export, expected)


def test_a_stage_that_is_not_a_number_is_refused(tree, fake, capsys):
    (first, rows) = tree["first"]
    for stage in ("2; drop", "²", True, 1.5, "9" * 400):
        refused(tree, fake, capsys, [task(tree, first, rows[0], stage=stage)], "not a whole number")


def test_a_pull_failing_part_way_leaves_every_corpus_as_it_was(tree, fake, capsys):
    (first, rows), (second, more) = tree["first"], tree["second"]
    fake.export = [task(tree, first, rows[0], task_id=1), task(tree, second, more[0], task_id=2)]
    # The second queue folder cannot take its annotations.csv (a folder is in the way): the
    # first folder's votes were already in place when that fails.
    (second / "annotations.csv").mkdir()
    before = snapshot(tree["base"])
    with pytest.raises(IsADirectoryError):
        pull(tree, capsys)
    assert snapshot(tree["base"]) == before, "the first folder's votes were not taken back"
    # Into a corpus: the videos are linked in before annotations.csv fails; they go again.
    (tree["data"] / "annotations.csv").unlink()
    (tree["data"] / "annotations.csv").mkdir()
    before = snapshot(tree["base"])
    with pytest.raises(IsADirectoryError):
        pull(tree, capsys, "--into", str(tree["data"]))
    assert snapshot(tree["base"]) == before, "copied videos were left without their votes"


KILLED_PULL = """
import os, signal, sys
real_link, seen = os.link, [0]
def link(src, dst, *args, **kwargs):
    seen[0] += 1
    if seen[0] == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_link(src, dst, *args, **kwargs)
os.link = link
from emotions.cli import main
sys.exit(main(["--params", sys.argv[1], "queue", "pull", *sys.argv[3:]]))
"""


def test_a_killed_pull_is_finished_by_the_next_one(tree, fake, capsys):
    """Killed while staging, nothing visible changed; killed while placing, the next pull of
    the export completes it; either way no staged file outlives the next pull."""
    (first, rows), (second, more) = tree["first"], tree["second"]
    fake.export = [task(tree, first, r, task_id=i) for i, r in enumerate(rows)] + [
        task(tree, second, more[0], task_id=9)
    ]
    into = ["--into", str(tree["data"])]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        "LABEL_STUDIO_API_KEY": "crafted-token",
    }

    def visible() -> dict[str, bytes | str]:
        return {k: v for k, v in snapshot(tree["base"]).items() if "/." not in f"/{k}"}

    before = visible()
    argv = [sys.executable, "-c", KILLED_PULL, str(tree["params"])]
    assert subprocess.run([*argv, "1", *into], env=env).returncode == -9
    assert visible() == before, "a pull killed before placing anything changed the corpus"
    assert list((tree["data"] / "videos").glob(".*")), "its staged copies are left"
    assert subprocess.run([*argv, "2", *into], env=env).returncode == -9
    code, out, err = pull(tree, capsys, *into)
    assert code == 0, err
    assert "3 vote(s) added" in out, out
    votes = pd.read_csv(tree["data"] / "annotations.csv", dtype=str)
    videos = {p.stem for p in (tree["data"] / "videos").iterdir()}
    assert set(votes["clip_id"]) == videos == {"old", *(r["clip_id"] for r in [*rows, *more])}
    assert not [p for p in tree["data"].rglob(".*")], "no staged file outlives the next pull"
