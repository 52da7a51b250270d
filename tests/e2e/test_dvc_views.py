"""DVC the way its users work: metrics, plots and experiments read through DVC's own commands.

A scratch git + DVC repository (tests/support/flowrepo.py: our dvc.yaml, code, .gitignore and a small
generated corpus, one run, one epoch, one ablation cell) runs `dvc repro`, commits what git
tracks (dvc.lock, metrics/, plots/, reports/), then runs `dvc exp run -S train.lr=...`; the
tests read the results back through `dvc metrics show`, `dvc plots show` and `dvc exp show`,
check what the experiment reran, that `dvc checkout` puts back the workspace's Bento tag, and
that a params typo under `dvc repro` stops before any output is deleted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flowrepo import real_repo, run

from emotions.stages.evaluate import HEADLINE_KEYS
from flows.commit_results import commit_results

LR = 0.0005
HEADLINE = "metrics/emotions/full.json"
# The README's `dvc exp show` (its options): changed columns only, dependency hashes dropped.
README_EXP_SHOW = ["--only-changed", "--drop", r".*/|data$|metrics$|.*\.yaml$"]


def test_the_readme_shows_the_exp_show_command_tested_here():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    only, drop, pattern = README_EXP_SHOW
    assert f"dvc exp show {only} {drop} '{pattern}'" in readme


def _find(tree: Any, predicate) -> list[dict[str, Any]]:
    """Every dict in `tree` (nested lists/dicts) that satisfies `predicate`."""
    found = []
    if isinstance(tree, dict):
        if predicate(tree):
            found.append(tree)
        for value in tree.values():
            found += _find(value, predicate)
    elif isinstance(tree, list):
        for value in tree:
            found += _find(value, predicate)
    return found


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Iterator[Path]:
    where = tmp_path_factory.mktemp("views")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BENTOML_HOME", str(where / "bentoml"))  # the package stage's store
        repo = real_repo(where / "repo")
        run(["dvc", "repro"], repo, timeout=900)
        commit_results(repo, "baseline run")  # what `make demo` commits: the outputs git tracks
        yield repo


@pytest.fixture(scope="module")
def experiment(repo: Path) -> str:
    """`dvc exp run -S train.lr=...` of the whole DAG: its output (what ran)."""
    result = run(["dvc", "exp", "run", "-S", f"train.lr={LR}", "-n", "lr-small"], repo, timeout=900)
    return result.stdout


def _served_model_tag(repo: Path) -> str:
    """The BentoML model tag of the workspace's model folder (content-addressed: storing it
    again is a no-op that returns the tag)."""
    code = (
        "from pathlib import Path; from emotions.serve.model_store import store_run_model; "
        "print(store_run_model(Path('artifacts/models/emotions/full')))"
    )
    return run(["python", "-c", code], repo).stdout.strip().splitlines()[-1]


def _bento_model(repo: Path, bento: str) -> str:
    shown = json.loads(run(["bentoml", "get", bento, "-o", "json"], repo).stdout)
    entries = list(shown.get("models") or [])
    for service in shown.get("services") or []:
        entries += service.get("models") or []
    (tag,) = {entry["tag"] for entry in entries}
    return tag


@pytest.mark.slow
def test_git_tracks_the_lock_metrics_plots_and_reports(repo: Path):
    tracked = set(run(["git", "ls-files"], repo).stdout.splitlines())
    assert "dvc.lock" in tracked
    assert {
        HEADLINE,
        "metrics/emotions/full/detail.json",
        "metrics/emotions/full/train.json",
        "metrics/emotions/ablation.json",
        "metrics/emotions/ablation_cells.json",
        "plots/emotions/full/confusion.csv",
        "plots/emotions/full/confusion.png",
        "plots/curves/emotions/full.png",
        "plots/train/emotions/full/val_weighted_f1.tsv",
        "reports/results.md",
    } <= tracked
    assert not any(path.startswith("artifacts/") for path in tracked)
    assert run(["git", "status", "--porcelain"], repo).stdout == ""


@pytest.mark.slow
def test_metrics_show_is_one_narrow_headline_per_run_and_the_detail_a_target_away(repo: Path):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    files = _find(shown, lambda d: HEADLINE in d)[0]
    assert set(files) == {HEADLINE}  # the only `metrics:` file of the one run
    assert set(files[HEADLINE]["data"]) == set(HEADLINE_KEYS)
    table = run(["dvc", "metrics", "show"], repo).stdout
    assert max(len(line) for line in table.splitlines()) < 150, table
    # The detail, as the README shows it.
    rows = json.loads((repo / "metrics/emotions/ablation.json").read_text(encoding="utf-8"))
    cells = json.loads(
        run(
            ["dvc", "metrics", "show", "--json", "metrics/emotions/ablation_cells.json"], repo
        ).stdout
    )
    cells = _find(cells, lambda d: "metrics/emotions/ablation_cells.json" in d)[0]
    cells = cells["metrics/emotions/ablation_cells.json"]["data"]
    assert list(cells) == ["video/lgfm/soft"]
    assert cells["video/lgfm/soft"]["accuracy"] == rows[0]["accuracy"]
    detail = run(["dvc", "metrics", "show", "metrics/emotions/full/detail.json"], repo).stdout
    assert "per_class." in detail and "by_agreement.high.n" in detail


@pytest.mark.slow
def test_plots_show_embeds_images_only_so_the_page_works_offline(repo: Path):
    shown = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)["data"]
    assert set(shown) == {"plots/curves/emotions/full.png", "plots/emotions/full/confusion.png"}
    assert {entry["type"] for entries in shown.values() for entry in entries} == {"image"}
    run(["dvc", "plots", "show", "-o", "dvc_plots"], repo)
    html = (repo / "dvc_plots" / "index.html").read_text(encoding="utf-8")
    assert "<script" not in html and "cdn." not in html and "http" not in html
    images = list((repo / "dvc_plots" / "static").glob("*.png"))
    assert len(images) == 2 and all(image.name in html for image in images)


@pytest.mark.slow
def test_a_train_experiment_reruns_the_run_and_not_the_ablation(repo: Path, experiment: str):
    for stage in ("train@emotions-full", "evaluate@emotions-full", "package"):
        assert f"Running stage '{stage}'" in experiment, experiment
    # check_params reran (params.yaml changed) and wrote the same bytes: nothing after it did.
    for stage in ("ablate", "ingest@emotions", "preprocess@emotions"):
        assert f"Running stage '{stage}'" not in experiment, experiment
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    exp = _find(shown, lambda d: d.get("name") == "lr-small" and "data" in d)[0]["data"]
    assert exp["params"]["params.yaml"]["data"]["train"]["lr"] == LR
    evaluated = json.loads((repo / HEADLINE).read_text(encoding="utf-8"))
    assert exp["metrics"] == {HEADLINE: {"data": evaluated}}
    # The README's view: the changed param and the headline scores, nothing else.
    shown_csv = run(["dvc", "exp", "show", "--csv", *README_EXP_SHOW], repo).stdout
    columns = shown_csv.splitlines()[0].split(",")
    assert "train.lr" in columns, columns
    assert set(columns) <= {"Experiment", "rev", "typ", "Created", "train.lr", *HEADLINE_KEYS}
    # The baseline commit's row is there too: what `dvc exp diff` compares.
    baseline = _find(shown, lambda d: d.get("rev") == "workspace" and "data" in d)
    assert baseline and "metrics" in baseline[0]["data"]


@pytest.mark.slow
def test_checkout_after_an_experiment_restores_the_bento_of_the_workspace_model(
    repo: Path, experiment: str
):
    tag_file = repo / "artifacts" / "bento.txt"
    experiment_bento = tag_file.read_text(encoding="utf-8").strip()
    assert _bento_model(repo, experiment_bento) == _served_model_tag(repo)
    run(["git", "checkout", "--", "."], repo)
    run(["dvc", "checkout"], repo)
    status = run(["dvc", "status", "--json"], repo).stdout
    assert json.loads(status) == {}, status
    bento = tag_file.read_text(encoding="utf-8").strip()
    assert bento != experiment_bento
    assert _bento_model(repo, bento) == _served_model_tag(repo)  # the workspace's model


@pytest.mark.slow
def test_a_params_typo_stops_dvc_repro_before_any_output_is_deleted(repo: Path, experiment: str):
    run(["git", "checkout", "--", "."], repo)
    run(["dvc", "checkout"], repo)
    params = repo / "params.yaml"
    original = params.read_text(encoding="utf-8")
    before = sorted(p.relative_to(repo).as_posix() for p in (repo / "artifacts").rglob("*"))
    params.write_text(original.replace("\ntrain:\n", "\ntrain:\n  lrr: 0.1\n", 1), encoding="utf-8")
    try:
        failed = run(["dvc", "repro"], repo, check=False, timeout=900)
        assert failed.returncode != 0
        output = failed.stdout + failed.stderr
        assert "Running stage 'check_params'" in output
        assert "Running stage 'ingest@emotions'" not in output
        assert "emotions check_params: params.yaml" in output
        (named,) = [line for line in output.splitlines() if "train.lrr" in line]
        assert "unknown key" in named, named
        assert "Traceback" not in output
        after = sorted(p.relative_to(repo).as_posix() for p in (repo / "artifacts").rglob("*"))
        assert after == before  # the cache, the models, the Bento tag: all still there
        assert (repo / "artifacts/emotions/cache").is_dir()
    finally:
        # Fixed with a harmless edit: the check reruns alone, its constant output invalidates
        # nothing after it.
        params.write_text(original + "# checked again\n", encoding="utf-8")
    again = run(["dvc", "repro"], repo, timeout=900).stdout
    assert "Running stage 'check_params'" in again
    assert again.count("Running stage") == 1, again
    run(["git", "checkout", "--", "."], repo)
