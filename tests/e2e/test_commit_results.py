"""`make demo`'s last step (flows/commit_results.py) in a scratch git + DVC repository.

A real `dvc repro` of a one-stage pipeline writes a cached output (git-ignored by DVC), a
`cache: false` metrics file, a `cache: false` plots folder and `dvc.lock`; the step commits
exactly those git-tracked outputs, as a fallback identity where git has none, leaves the user's
own changes (staged, modified, untracked) as they were, commits nothing when nothing changed,
and gives `dvc metrics diff` its baseline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from flowrepo import commit, init, run

from flows.commit_results import commit_results, git_outputs, main

STAGE = (
    f"{sys.executable} -c \"import json,os,yaml; lr=yaml.safe_load(open('params.yaml'))['lr']; "
    "open('model.bin','w').write(str(lr)); os.makedirs('plots',exist_ok=True); "
    "open('plots/curve.tsv','w').write('step\\tloss\\n0\\t'+str(lr)+'\\n'); "
    "json.dump({'score':lr*2},open('metrics.json','w'))\""
)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # No git identity anywhere: the commit must fall back to emotions-demo.
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n\tuseConfigOnly = true\n", encoding="utf-8")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    repo = init(tmp_path / "repo")
    stage = {
        "cmd": STAGE,
        "params": ["lr"],
        "outs": ["model.bin", {"plots": {"cache": False}}],
        "metrics": [{"metrics.json": {"cache": False}}],
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": stage}}), encoding="utf-8")
    (repo / "params.yaml").write_text("lr: 0.25\n", encoding="utf-8")
    (repo / "README").write_text("v1\n", encoding="utf-8")
    (repo / "notes.txt").write_text("mine\n", encoding="utf-8")
    (repo / ".gitignore").write_text("/model.bin\n", encoding="utf-8")  # as /artifacts/ is ours
    commit(repo, "pipeline")
    run(["dvc", "repro", "-q"], repo)
    return repo


def _files_in(repo: Path, rev: str) -> set[str]:
    return set(run(["git", "show", "--name-only", "--format=", rev], repo).stdout.split())


def test_the_results_are_committed_alone_and_nothing_when_unchanged(repo: Path):
    # The user's own work in progress: a staged change, a modified file, an untracked file.
    (repo / "README").write_text("v2\n", encoding="utf-8")
    run(["git", "add", "README"], repo)
    (repo / "notes.txt").write_text("still mine\n", encoding="utf-8")
    (repo / "scratch.txt").write_text("untracked\n", encoding="utf-8")
    assert git_outputs(repo) == ["dvc.lock", "metrics.json", "plots"]  # model.bin: DVC's cache

    rev = commit_results(repo)
    assert rev == run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    assert _files_in(repo, rev) == {"dvc.lock", "metrics.json", "plots/curve.tsv"}
    author = run(["git", "log", "-1", "--format=%an <%ae>|%s"], repo).stdout.strip()
    assert author == "emotions-demo <demo@localhost>|make demo: results"
    # Only the user's changes are left, as they were: staged, modified, untracked.
    status = run(["git", "status", "--porcelain"], repo).stdout.splitlines()
    assert set(status) == {"M  README", " M notes.txt", "?? scratch.txt"}

    assert commit_results(repo) is None  # nothing changed since
    assert run(["git", "rev-parse", "HEAD"], repo).stdout.strip() == rev


def test_the_commit_is_the_baseline_of_dvc_metrics_diff(repo: Path):
    commit_results(repo)
    (repo / "params.yaml").write_text("lr: 0.5\n", encoding="utf-8")
    run(["dvc", "repro", "-q"], repo)
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], repo).stdout)
    assert diff["metrics.json"]["score"] == {"old": 0.5, "new": 1.0, "diff": 0.5}
    rev = commit_results(repo, "second run")
    # params.yaml is the user's change, not a result: it stays uncommitted.
    assert _files_in(repo, rev) == {"dvc.lock", "metrics.json", "plots/curve.tsv"}
    assert run(["git", "status", "--porcelain"], repo).stdout.splitlines() == [" M params.yaml"]
    assert json.loads(run(["dvc", "metrics", "diff", "--json"], repo).stdout) == {}


def test_outside_a_git_work_tree_nothing_is_committed(tmp_path: Path, capsys):
    assert main(["--repo", str(tmp_path)]) == 0
    assert "not a git work tree" in capsys.readouterr().err
