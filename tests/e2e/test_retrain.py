"""The retrain flow on real Prefect (a test server), real DVC experiments, real GTO and real stages.

A scratch repository with a small corpus and a local DVC remote goes through champion/challenger
rounds: the first challenger is promoted (no champion yet: GTO registers its experiment commit
and assigns it `prod`), an equal one is not (short of the margin; no new tag), one facing a
weaker planted champion is, and one whose champion was measured on another test split is
compared only after the champion is re-scored on the current split. Champions are planted the
way a user would promote by hand: a GTO version on a commit of the champion's tree.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `flows` lives at the repository root, beside src/
    sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_HOME", str(REPO / ".prefect"))

from flowrepo import py, real_repo, run, toy_repo  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from flows.dvc_graph import load_graph  # noqa: E402
from flows.dvc_run import StageFailedError  # noqa: E402
from flows.registry import RegistryError, promote, read_champion, read_decisions  # noqa: E402
from flows.retrain import decide, deployment_options, experiment_rev, retrain  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def harness(tmp_path_factory):
    env = pytest.MonkeyPatch()
    env.setenv("BENTOML_HOME", str(tmp_path_factory.mktemp("bentoml")))  # the package stage
    with prefect_test_harness(server_startup_timeout=None):
        yield
    env.undo()


@pytest.fixture(scope="module")
def promoted(tmp_path_factory) -> tuple[Path, dict]:
    """A repository after its first retrain: the whole DAG ran inside `dvc exp run`."""
    repo = real_repo(tmp_path_factory.mktemp("retrain") / "repo", remote=True)
    return repo, retrain(repo=str(repo), refresh="pull")


ARTIFACT = "emotions-model"  # dvc.yaml's `artifacts:` entry at the model folder of emotions-full


def _workspace_metrics(repo: Path) -> dict:
    return json.loads((repo / "metrics/emotions/full.json").read_text(encoding="utf-8"))


def _tags(repo: Path) -> set[str]:
    return set(run(["git", "tag", "--list"], repo).stdout.split())


def _plant(repo: Path, champion: dict, **changes) -> dict:
    """Promote by hand a commit holding the champion's tree (the same model), with `changes`
    to its recorded measurement; returns the planted champion as the flow reads it."""
    tree = f"{champion['rev']}^{{tree}}"
    ident = ["-c", "user.name=t", "-c", "user.email=t@t"]
    rev = run(["git", *ident, "commit-tree", tree, "-p", champion["rev"], "-m", "planted"], repo)
    measurement = {
        k: v for k, v in champion.items() if k not in ("rev", "version", "tag", "assigned")
    }
    promote(repo, ARTIFACT, rev.stdout.strip(), {**measurement, **changes}, "planted by the test")
    return read_champion(repo, ARTIFACT)


@pytest.mark.slow
def test_the_first_challenger_is_promoted_an_equal_one_is_not_a_better_one_is(promoted):
    repo, first = promoted
    assert first["decision"] == "promoted"
    assert first["reason"].startswith("no champion yet")
    assert first["refresh"] == "pulled data.dvc"
    if any(node.group == "package" for node in load_graph(repo)):  # the Bento was built
        tag = (repo / "artifacts/bento.txt").read_text(encoding="utf-8").strip()
        assert first["package"] == f"packaged by the experiment's `package` stage -> {tag}"
    else:
        assert first["package"].startswith("skipped: no packaging step yet")
    champion = read_champion(repo, ARTIFACT)
    name = first["challenger"]["experiment"]
    assert champion["experiment"] == name and name.startswith("retrain-")
    assert champion["rev"] == experiment_rev(repo, name)
    assert name in run(["dvc", "exp", "list", "--name-only"], repo).stdout
    score = _workspace_metrics(repo)["weighted_f1"]
    assert champion["metrics"]["weighted_f1"] == score
    assert champion["run"] == "emotions-full" and len(champion["test_split"]) == 16
    assert "up to date" in run(["dvc", "status"], repo).stdout
    # GTO holds it: two annotated tags on the experiment commit, the reason in the assignment.
    assert _tags(repo) == {f"{ARTIFACT}@v0.0.1", f"{ARTIFACT}#prod#1"}
    assert first["registered"]["version"] == champion["version"] == "v0.0.1"
    assert champion["assigned"] == first["reason"]
    (shown,) = json.loads(run(["gto", "show", ARTIFACT, "--json"], repo).stdout)
    assert shown["commit_hexsha"] == champion["rev"]
    assert [stage["stage"] for stage in shown["stages"]] == ["prod"]
    # ... and DVC fetches the champion's model through it (the model folder at that commit).
    out = repo.parent / "prod-model"
    run(["dvc", "artifacts", "get", ".", ARTIFACT, "--stage", "prod", "-o", str(out)], repo)
    workspace_model = repo / "artifacts/models/emotions/full/model.json"
    assert (out / "model.json").read_bytes() == workspace_model.read_bytes()

    # Nothing changed: the challenger ties the champion, short of the 0.01 margin.
    second = retrain(repo=str(repo), refresh="none")
    assert second["decision"] == "kept"
    assert second["basis"] == "recorded" and second["delta"] == 0.0
    assert "short of the margin 0.01" in second["reason"]
    assert second["registered"] is None and len(_tags(repo)) == 2
    assert read_champion(repo, ARTIFACT) == champion
    decisions = read_decisions(repo)
    assert [d["decision"] for d in decisions] == ["promoted", "kept"]
    assert decisions[1]["champion"]["metrics"]["weighted_f1"] == score  # both metric sets
    assert decisions[1]["challenger"]["metrics"]["weighted_f1"] == score
    assert decisions[1]["challenger"]["experiment"] != name

    # A weaker champion on the same split loses to a challenger that beats it by the margin.
    weak = _plant(
        repo,
        champion,
        experiment="planted",
        metrics={**champion["metrics"], "weighted_f1": score - 0.2},
    )
    assert weak["version"] == "v0.0.2" and weak["experiment"] == "planted"
    third = retrain(repo=str(repo), refresh="none", margin=0.1)
    assert third["decision"] == "promoted", third["reason"]
    assert "at least the margin 0.1" in third["reason"]
    assert third["delta"] == pytest.approx(0.2)
    assert third["champion"]["version"] == "v0.0.2"
    champion = read_champion(repo, ARTIFACT)
    assert champion["experiment"] == third["challenger"]["experiment"] != "planted"
    assert champion["version"] == "v0.0.3" and champion["rev"] == third["challenger"]["rev"]
    assert [d["decision"] for d in read_decisions(repo)] == ["promoted", "kept", "promoted"]
    history = json.loads(run(["gto", "history", ARTIFACT, "--json"], repo).stdout)
    assert sum(event["event"] == "assignment" for event in history) == 3


@pytest.mark.slow
def test_a_champion_from_another_test_split_is_rescored_before_comparing(promoted):
    repo, _ = promoted
    # The recorded numbers say the champion is hopeless, but they come from another test set:
    # re-scored on the current split, the champion's model (the very model the workspace holds)
    # ties the challenger, so it is kept.
    champion = read_champion(repo, ARTIFACT)
    stale = _plant(
        repo,
        champion,
        test_split="0000000000000000",
        metrics={**champion["metrics"], "weighted_f1": 0.0},
    )
    record = retrain(repo=str(repo), refresh="none")
    assert record["basis"] == "rescored"
    rescored = record["champion_rescored"]
    assert rescored["weighted_f1"] == pytest.approx(_workspace_metrics(repo)["weighted_f1"])
    assert record["decision"] == "kept"
    assert "re-scored on the current split" in record["reason"]
    assert read_champion(repo, ARTIFACT) == stale


def _challenger(score: float, split: str = "s1") -> dict:
    return {"metrics": {"weighted_f1": score}, "test_split": split}


def test_the_gate_needs_a_strict_win_by_the_margin_on_a_comparable_split():
    champion = {"metrics": {"weighted_f1": 0.5}, "test_split": "s1"}
    assert decide(_challenger(0.5), None, metric="weighted_f1", margin=0.1).promote
    assert not decide(_challenger(0.5), champion, metric="weighted_f1", margin=0.0).promote
    assert decide(_challenger(0.51), champion, metric="weighted_f1", margin=0.0).promote
    close = decide(_challenger(0.55), champion, metric="weighted_f1", margin=0.1)
    assert not close.promote and close.delta == pytest.approx(0.05)
    assert decide(_challenger(0.6), champion, metric="weighted_f1", margin=0.1).promote
    moved = _challenger(0.9, split="s2")
    lost = decide(moved, champion, metric="weighted_f1", margin=0.0, rescored={"error": "gone"})
    assert not lost.promote and "could not be re-scored" in lost.reason and "gone" in lost.reason
    fair = decide(moved, champion, metric="weighted_f1", margin=0.0, rescored={"weighted_f1": 0.95})
    assert not fair.promote and fair.basis == "rescored"


def test_the_deployment_takes_its_schedule_from_params(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text(encoding="utf-8"))
    options = deployment_options(str(tmp_path))
    assert options["cron"] == "0 3 * * 1"
    assert options["parameters"] == {"repo": str(tmp_path.resolve()), "refresh": "pull"}
    deployment = retrain.to_deployment(**options)
    assert deployment.name == "retrain-emotions"
    assert [schedule.schedule.cron for schedule in deployment.schedules] == ["0 3 * * 1"]


def test_a_failed_challenger_is_recorded_and_the_champion_kept(tmp_path):
    failing = py(
        "import sys; print('emotions train - the split is empty', file=sys.stderr); sys.exit(2)"
    )
    model = "artifacts/models/emotions/full"
    repo = toy_repo(
        tmp_path / "toy",
        {"train": {"cmd": failing, "outs": [model]}},
        artifacts={ARTIFACT: {"path": model, "type": "model"}},
    )
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    promote(repo, ARTIFACT, head, {"experiment": "old", "metrics": {"weighted_f1": 0.5}}, "old")
    champion = read_champion(repo, ARTIFACT)
    assert champion["rev"] == head and champion["version"] == "v0.0.1"
    with pytest.raises(
        StageFailedError, match="exited with 2: emotions train - the split is empty"
    ):
        retrain(repo=str(repo), refresh="pull")
    [record] = read_decisions(repo)
    assert record["decision"] == "failed"
    assert record["reason"].startswith("no challenger: stage dvc exp run retrain-")
    assert record["champion"] == champion == read_champion(repo, ARTIFACT)


def test_a_round_without_the_model_artifact_in_dvc_yaml_fails_before_training(tmp_path):
    repo = toy_repo(tmp_path / "toy", {"train": {"cmd": py("open('t.txt','w')"), "outs": ["t"]}})
    with pytest.raises(RegistryError, match="declares no artifact with path"):
        retrain(repo=str(repo), refresh="none")
    [record] = read_decisions(repo)
    assert record["decision"] == "failed" and "artifacts/models/emotions/full" in record["reason"]
    assert not (repo / "t.txt").exists()


def test_a_promotion_round_trips_through_gto_tags_without_a_git_identity(tmp_path, monkeypatch):
    config = tmp_path / "gitconfig"  # a fresh CI runner: git knows no user
    config.write_text("[user]\n\tuseConfigOnly = true\n", encoding="utf-8")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    model = "artifacts/models/emotions/full"
    repo = toy_repo(
        tmp_path / "toy",
        {"train": {"cmd": py("pass"), "outs": [model]}},
        artifacts={ARTIFACT: {"path": model, "type": "model"}},
    )
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    measurement = {"experiment": "x", "metric": "weighted_f1", "metrics": {"weighted_f1": 0.625}}
    tags = promote(repo, ARTIFACT, head, measurement, "first one")
    assert tags == {
        "artifact": ARTIFACT,
        "version": "v0.0.1",
        "version_tag": f"{ARTIFACT}@v0.0.1",
        "stage_tag": f"{ARTIFACT}#prod#1",
    }
    taggers = run(["git", "for-each-ref", "--format=%(taggername)", "refs/tags"], repo).stdout
    assert set(taggers.split()) == {"emotions-retrain"}
    subject = run(["git", "tag", "-n1", tags["version_tag"]], repo).stdout
    assert "x: run None, weighted_f1 0.6250" in subject  # a one-line summary for `git tag -n`
    champion = read_champion(repo, ARTIFACT)
    assert champion == {
        **measurement,
        "rev": head,
        "version": "v0.0.1",
        "tag": tags["version_tag"],
        "assigned": "first one",
    }


def test_refresh_commits_new_data_in_the_workspace_instead_of_failing_the_pull(tmp_path):
    """A pulled annotation stage written into data/ (`emotions queue pull --into data`) is what
    the next retrain trains on: refresh commits it to data.dvc, where `dvc pull` alone would
    refuse to overwrite it and fail the round."""
    from prefect import flow

    from flows.retrain import refresh_data

    repo = toy_repo(tmp_path / "toy", {})
    (repo / "data").mkdir()
    (repo / "data" / "annotations.csv").write_text("clip_id,stage,annotator,label\n")
    run(["dvc", "add", "-q", "data"], repo)
    run(["dvc", "remote", "add", "-q", "-d", "local", str(tmp_path / "remote")], repo)
    run(["dvc", "push", "-q"], repo)
    before = (repo / "data.dvc").read_text()
    with (repo / "data" / "annotations.csv").open("a") as votes:
        votes.write("c000001,3,annotator@example.com,Fear\n")

    note = flow(name="refresh-only")(lambda: refresh_data(str(repo), "pull"))()
    assert "committed workspace changes of data.dvc" in note and "pulled data.dvc" in note
    assert (repo / "data.dvc").read_text() != before
    assert "annotator@example.com" in (repo / "data" / "annotations.csv").read_text()
    assert run(["dvc", "status", "--json", "data.dvc"], repo).stdout.strip() == "{}"
