"""Scheduled retraining with a champion/challenger gate.

`retrain(repo, refresh, margin)`:
1. refresh the data: `refresh="pull"` runs `dvc update` for every import and `dvc pull` for the
   other `.dvc` data sources (skipped with a note when no DVC remote is configured); a source
   whose folder holds new data in the workspace (a pulled annotation stage, `emotions queue
   pull --into data`) is first `dvc commit`ted, so the retrain trains on it;
   `refresh="none"` trains on the workspace as it is;
2. run the pipeline into a DVC experiment: `dvc exp run --name retrain-<UTC time>` in the
   workspace. DVC reruns only what the refresh (or a code or params change) invalidated, resumes
   `persist: true` outputs (training checkpoints), records params, dvc.lock and outputs as an
   experiment commit (`dvc exp show` lists it) and leaves its results in the workspace;
3. read the challenger's test metrics for `flow.promote_run` from the workspace. They are read
   from the files `dvc exp run` left in the workspace (the same ones the experiment commit
   carries: `metrics/` is git-tracked, so `dvc exp show` lists them too);
4. compare with the champion (the model artifact's version in GTO stage `prod`, flows/registry.py)
   on `flow.promote_metric` *on the same test split*: each measurement carries a fingerprint of
   its test split (clip ids and labels); when a refresh changed the split, the champion's model
   is re-scored on the current split first (flows/rescore.py) instead of comparing numbers from
   two different test sets;
5. promote only when the challenger is better by at least the margin (`margin`, default
   `flow.promote_margin`; strictly better when the margin is 0): `dvc exp apply` the experiment,
   run the packaging hook (the `package` stage or `emotions package`, skipped with a note while
   neither exists), then register the experiment commit as the artifact's next GTO version and
   assign it `prod` (git tags `<artifact>@vX.Y.Z`, `<artifact>#prod#N`; the reason is the
   assignment's message). Either way one line goes to `registry/decisions.jsonl` with both
   metric sets and the reason, and the run publishes a `retrain-decision` markdown artifact. A
   round that yields no challenger (the experiment failed) appends a `failed` line naming the
   error, keeps the champion and fails the run.

When the challenger loses, the champion (and whatever was packaged from it) stays; the
workspace keeps the challenger's results, as after any `dvc exp run`, and the champion's state
is one `dvc exp apply <champion rev>` away (`gto show <artifact>` names its commit).

`serve_retrain()` / `python -m flows.retrain --serve` serves the flow alone as a deployment on
the cron in `flow.retrain_cron`; `make schedule` (flows/deployments.py) serves it with its
drift trigger, beside the pipeline and monitor deployments. Schedules fire only against a Prefect server (`prefect server
start`, then `PREFECT_API_URL=http://127.0.0.1:4200/api`); on the ephemeral API the deployment
is registered but nothing triggers it.
"""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from
# these annotations when a deployment runs it, and string annotations (`Literal[...]`) fail there.
import argparse
import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from dvc.exceptions import DvcException
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed, State

from emotions.config import ConfigError, FlowConfig, Params, load_params
from emotions.layout import Layout
from flows.dvc_graph import data_sources, load_graph
from flows.dvc_run import StageFailedError, dvc, end_children_on_signals, failure, stream
from flows.lock import RepoBusyError, repo_lock, repo_slot
from flows.pipeline import current_attempt, flow_config, retry_transient
from flows.registry import (
    RegistryError,
    append_decision,
    decisions_path,
    model_artifact,
    promote,
    read_champion,
)
from flows.rescore import model_dir_of

RESCORE = Path(__file__).with_name("rescore.py")
DEPLOYMENT = "retrain-emotions"


class RetrainError(RuntimeError):
    """A retrain step failed in a way the user has to look at."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise RetrainError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def experiment_rev(repo: Path, name: str) -> str:
    """The commit of the named experiment (`refs/exps/<baseline>/<name>`)."""
    refs = _git(repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps")
    for line in refs.splitlines():
        rev, ref = line.split(" ", 1)
        if ref.endswith(f"/{name}") and not ref.startswith(("refs/exps/exec/", "refs/exps/apply/")):
            return rev
    raise RetrainError(f"experiment '{name}' has no ref under refs/exps (did `dvc exp run` fail?)")


def split_fingerprint(split_file: Path) -> str:
    """Which clips, with which labels, make up the test split: equal fingerprints mean metrics
    measured on the same test set."""
    import pandas as pd

    split = pd.read_parquet(split_file, columns=["clip_id", "label", "split"])
    test = split[split["split"] == "test"].sort_values("clip_id")
    digest = hashlib.sha256()
    for clip_id, label in zip(test["clip_id"], test["label"], strict=True):
        digest.update(f"{clip_id}\t{label}\n".encode())
    return digest.hexdigest()[:16]


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def measure(repo: Path, params: Params, run: str) -> dict[str, Any]:
    """The workspace's test metrics of `run` and the fingerprint of its test split."""
    spec = params.run(run)
    metrics_file = Layout(repo).metrics(spec.dataset, spec.variant)
    split_file = Layout(repo).split(spec.dataset, spec.variant)
    for path in (metrics_file, split_file):
        if not path.is_file():
            raise RetrainError(f"{path} is missing after the experiment; did evaluate@{run} run?")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    return {"run": run, "metrics": _scalars(metrics), "test_split": split_fingerprint(split_file)}


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    metric: str
    margin: float
    challenger_score: float
    champion_score: float | None
    delta: float | None
    # recorded: the champion's own metrics (same split) | rescored: re-measured on this split
    basis: str | None


def decide(
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    *,
    metric: str,
    margin: float,
    rescored: dict[str, Any] | None = None,
) -> Decision:
    """Promote when the challenger beats the champion on `metric`, on the same test split, by
    at least `margin` (and strictly, so a tie never replaces the champion)."""
    if metric not in challenger["metrics"]:
        raise RetrainError(f"the challenger's metrics have no '{metric}'")
    score = float(challenger["metrics"][metric])

    def verdict(promote: bool, reason: str, base=None, delta=None, basis=None) -> Decision:
        return Decision(promote, reason, metric, margin, score, base, delta, basis)

    if champion is None:
        return verdict(True, "no champion yet: the first challenger becomes the champion")
    if champion.get("test_split") == challenger["test_split"]:
        base, basis = champion["metrics"].get(metric), "recorded"
    elif rescored is not None and "error" not in rescored:
        base, basis = rescored.get(metric), "rescored"
    else:
        error = (rescored or {}).get("error", "no revision to re-score")
        return verdict(
            False,
            "the test split changed since the champion was measured and the champion could not "
            f"be re-scored on the current one ({error}); keeping it. To change the champion, "
            "`gto assign` another version `prod` or end this one's (`gto deprecate NAME VERSION "
            "prod`)",
        )
    if base is None:
        return verdict(False, f"the champion's metrics have no '{metric}'; keeping it")
    base = float(base)
    delta = score - base
    where = "on the same test split" if basis == "recorded" else "re-scored on the current split"
    comparison = f"{metric} {score:.4f} vs champion {base:.4f} ({where}): {delta:+.4f}"
    # Metrics of small test sets are ratios: 0.6 - 0.5 must count as a win by 0.1.
    if delta > 0 and delta >= margin - 1e-9:
        return verdict(True, f"{comparison}, at least the margin {margin}", base, delta, basis)
    return verdict(False, f"{comparison}, short of the margin {margin}", base, delta, basis)


def workspace_modified(root: Path, path: str, timeout_s: float) -> bool:
    """Whether the outputs of the `.dvc` file `path` differ in the workspace from what it
    records (`dvc status`: "modified"; a missing output is restored by the pull instead)."""
    result = stream(dvc("status", "--json", path), root, timeout_s=timeout_s)
    if result.returncode != 0:
        raise failure(f"dvc status {path}", result)
    lines = [line for line in result.tail if line.startswith("{")]
    status = json.loads(lines[-1]) if lines else {}
    return any(
        "modified" in change.get("changed outs", {}).values()
        for changes in status.values()
        for change in changes
        if isinstance(change, dict)
    )


@task(name="refresh-data", task_run_name="refresh-data", cache_policy=NO_CACHE)
def refresh_data(repo: str, mode: str) -> str:
    """Bring the data sources up to date before training (see the module docstring)."""
    logger = get_run_logger()
    root = Path(repo)
    limit = flow_config(root).stage_timeout_s
    if mode == "none":
        return "refresh=none: the workspace data as it is"
    sources = data_sources(root)
    notes: list[str] = []
    for path, is_import in sources:
        if is_import:
            result = stream(dvc("update", path), root, logger.info, timeout_s=limit)
            if result.returncode != 0:
                raise failure(f"dvc update {path}", result)
            notes.append(f"updated {path}")
    plain = [path for path, is_import in sources if not is_import]
    for path in plain:
        if workspace_modified(root, path, limit):
            # New clips or a new annotation stage written into the tracked folder (e.g.
            # `emotions queue pull --into data`): the workspace is the newer data, so it is
            # committed to the .dvc file instead of being refused (and kept) by `dvc pull`.
            result = stream(dvc("commit", "--force", path), root, logger.info, timeout_s=limit)
            if result.returncode != 0:
                raise failure(f"dvc commit {path}", result)
            notes.append(f"committed workspace changes of {path} (dvc push to share them)")
    if plain:
        remotes = stream(dvc("remote", "list"), root, timeout_s=limit).tail
        if not remotes:
            notes.append(f"no DVC remote configured: {', '.join(plain)} used as in the workspace")
        else:
            result = stream(dvc("pull", *plain), root, logger.info, timeout_s=limit)
            if result.returncode != 0:
                raise failure(f"dvc pull {' '.join(plain)}", result)
            notes.append(f"pulled {', '.join(plain)}")
    note = "; ".join(notes) or "no .dvc data sources to refresh"
    logger.info("refresh: %s", note)
    return note


@task(
    name="dvc-exp-run",
    task_run_name="dvc-exp-run",
    cache_policy=NO_CACHE,
    retry_condition_fn=retry_transient,
)
def run_experiment(repo: str, name: str) -> dict[str, str]:
    """`dvc exp run --name NAME` in the workspace; a retry continues where the failed attempt
    stopped (finished stages are up to date) under a new name."""
    logger = get_run_logger()
    root = Path(repo)
    attempt = current_attempt()
    exp_name = name if attempt == 1 else f"{name}-{attempt}"
    limit = flow_config(root).experiment_timeout_s
    result = stream(dvc("exp", "run", "--name", exp_name), root, logger.info, timeout_s=limit)
    if result.returncode != 0:
        error = failure(f"dvc exp run {exp_name}", result, attempt)
        logger.error("%s (%s)", error, "transient, may retry" if error.transient else "hard")
        raise error
    return {
        "name": exp_name,
        "rev": experiment_rev(root, exp_name),
        "baseline": _git(root, "rev-parse", "HEAD"),
    }


@task(name="rescore-champion", task_run_name="rescore-champion", cache_policy=NO_CACHE)
def rescore_champion(repo: str, rev: str, run: str) -> dict[str, Any]:
    """The champion's metrics on the current test split, or `{"error": why}`."""
    logger = get_run_logger()
    root = Path(repo)
    out = root / ".dvc" / "tmp" / f"rescore-{rev[:12]}.json"
    args = [sys.executable, str(RESCORE), "--rev", rev, "--run", run, "--out", str(out)]
    result = stream(args, root, logger.info, timeout_s=flow_config(root).stage_timeout_s)
    try:
        if result.returncode != 0:
            return {"error": result.tail[-1] if result.tail else f"exit {result.returncode}"}
        return _scalars(json.loads(out.read_text(encoding="utf-8")))
    finally:
        out.unlink(missing_ok=True)


@task(name="dvc-exp-apply", task_run_name="dvc-exp-apply", cache_policy=NO_CACHE)
def apply_experiment(repo: str, name: str) -> None:
    logger = get_run_logger()
    limit = flow_config(Path(repo)).stage_timeout_s
    result = stream(dvc("exp", "apply", name), Path(repo), logger.info, timeout_s=limit)
    if result.returncode != 0:
        raise RetrainError(f"dvc exp apply {name} failed: {result.text}")


@task(name="package", task_run_name="package", cache_policy=NO_CACHE)
def package(repo: str) -> str:
    """The packaging hook: the `package` stage if dvc.yaml has one (the experiment already ran
    it, and `dvc exp apply` restored its outputs), else `emotions package` if the command
    exists, else a logged note that there is nothing to package with yet."""
    logger = get_run_logger()
    root = Path(repo)
    limit = flow_config(root).stage_timeout_s
    tag_file = Layout(root).bento_tag
    if any(node.group == "package" for node in load_graph(root)):
        note = "packaged by the experiment's `package` stage"
    elif stream(["emotions", "package", "--help"], root, timeout_s=limit).returncode == 0:
        result = stream(["emotions", "package"], root, logger.info, timeout_s=limit)
        if result.returncode != 0:
            raise RetrainError(f"emotions package failed: {result.text}")
        note = "packaged by `emotions package`"
    else:
        note = (
            "skipped: no packaging step yet (no `package` stage in dvc.yaml and no "
            "`emotions package` command)"
        )
        logger.warning("package %s", note)
        return note
    if tag_file.is_file():
        note += f" -> {tag_file.read_text(encoding='utf-8').strip()}"
    logger.info("%s", note)
    return note


def decision_markdown(record: dict[str, Any]) -> str:
    champion = record.get("champion") or {}
    challenger = record["challenger"]
    keys = sorted(set(challenger["metrics"]) | set(champion.get("metrics", {})))
    rescored = record.get("champion_rescored") or {}
    lines = [
        f"# Retrain: {record['decision']}",
        "",
        record["reason"],
        "",
        f"Challenger `{challenger['experiment']}` ({challenger['rev'][:10]}) vs champion "
        + (
            f"`{champion.get('version')}` ({champion.get('experiment') or champion['rev'][:10]})"
            if champion
            else "none"
        )
        + f"; run `{record['run']}`, metric `{record['metric']}`, margin {record['margin']}.",
        "",
        "| metric | challenger | champion (recorded) | champion (re-scored) |",
        "|---|---|---|---|",
    ]

    def cell(source: dict[str, Any], key: str) -> str:
        value = source.get(key)
        return (
            f"{value:.4f}" if isinstance(value, float) else str(value if value is not None else "")
        )

    for key in keys:
        lines.append(
            f"| {key} | {cell(challenger['metrics'], key)} | "
            f"{cell(champion.get('metrics', {}), key)} | {cell(rescored, key)} |"
        )
    if record.get("package"):
        lines += ["", f"Package: {record['package']}"]
    if record.get("registered"):
        tags = record["registered"]
        lines += ["", f"Registered with GTO: `{tags['version_tag']}`, `{tags['stage_tag']}`"]
    return "\n".join(lines) + "\n"


def _challenge(root: Path, run: str, refresh: str, config: FlowConfig) -> dict[str, Any]:
    """Refresh, train into an experiment and measure it: the challenger's record."""
    # Each step's commands are killed by `stream` at their timeout (Prefect's task timeout
    # cannot interrupt a worker thread, so none is set).
    refreshed = refresh_data(str(root), refresh)
    experiment = run_experiment.with_options(
        retries=config.retries,
        retry_delay_seconds=config.retry_delay_s,
    )(str(root), f"retrain-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    return {
        "experiment": experiment["name"],
        "rev": experiment["rev"],
        "baseline": experiment["baseline"],
        "measured_at": _now(),
        "refresh": refreshed,
        **measure(root, load_params(root / "params.yaml"), run),
    }


def _round(root: Path, run: str, refresh: str, margin: float, config: FlowConfig) -> dict[str, Any]:
    """One champion/challenger round under the repository lock; returns the decision record."""
    logger = get_run_logger()
    base = {"flow_run": flow_run.get_name(), "run": run, "metric": config.promote_metric}
    champion = None
    try:
        artifact = model_artifact(root, model_dir_of(load_params(root / "params.yaml"), run))
        champion = read_champion(root, artifact)
        challenger = _challenge(root, run, refresh, config)
    except (StageFailedError, RetrainError, RegistryError, DvcException) as error:
        # No challenger: the champion stays, and the audit trail says why.
        append_decision(
            root,
            {
                **base,
                "time": _now(),
                "decision": "failed",
                "reason": f"no challenger: {error}",
                "margin": margin,
                "champion": champion,
            },
        )
        raise
    rescored = None
    if champion is not None and champion.get("test_split") != challenger["test_split"]:
        logger.info("the test split changed since the champion was measured: re-scoring it")
        rescored = rescore_champion(str(root), champion["rev"], run)
    decision = decide(
        challenger, champion, metric=config.promote_metric, margin=margin, rescored=rescored
    )
    logger.info("%s: %s", "PROMOTE" if decision.promote else "KEEP champion", decision.reason)
    package_note = registered = None
    if decision.promote:
        apply_experiment(str(root), challenger["experiment"])
        package_note = package(str(root))
        measurement = {
            **challenger,
            "metric": config.promote_metric,
            "flow_run": flow_run.get_name(),
            "package": package_note,
        }
        registered = promote(root, artifact, challenger["rev"], measurement, decision.reason)
        logger.info("champion: %s %s", artifact, registered["version"])
    record = {
        **base,
        "time": _now(),
        "decision": "promoted" if decision.promote else "kept",
        "reason": decision.reason,
        "margin": decision.margin,
        "delta": decision.delta,
        "basis": decision.basis,
        "refresh": challenger["refresh"],
        "challenger": challenger,
        "champion": champion,
        "champion_rescored": rescored,
        "package": package_note,
        "registered": registered,
    }
    append_decision(root, record)
    return record


@flow(name="retrain", description="Refresh data, retrain into a DVC experiment, promote if better.")
def retrain(
    repo: str = ".",
    refresh: Literal["pull", "none"] = "pull",
    margin: float | None = None,
) -> dict[str, Any] | State:
    """One champion/challenger round; returns the decision record appended to
    registry/decisions.jsonl (a failed round appends a `failed` record and fails the run)."""
    logger = get_run_logger()
    root = Path(repo).resolve()
    params = load_params(root / "params.yaml")
    config = params.flow
    run = config.promote_run
    params.run(run)  # a clear ConfigError now rather than after training
    margin = config.promote_margin if margin is None else float(margin)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    owner = f"flow run '{flow_run.get_name() or 'retrain'}'"
    try:
        with (
            repo_slot(root, config.lock_wait_s),
            repo_lock(root, owner=owner, wait_s=config.lock_wait_s, on_wait=logger.warning),
        ):
            record = _round(root, run, refresh, margin, config)
    except (RepoBusyError, TimeoutError) as error:
        logger.error("%s", error)
        return Failed(message=str(error), data=error)
    create_markdown_artifact(
        markdown=decision_markdown(record),
        key="retrain-decision",
        description=f"{record['decision']}: {record['reason']}",
    )
    logger.info("decision recorded in %s", decisions_path(root))
    return record


def deployment_options(repo: str = ".") -> dict[str, Any]:
    """What `serve_retrain` passes to `retrain.serve` (the cron comes from params.yaml)."""
    root = Path(repo).resolve()
    config = load_params(root / "params.yaml").flow
    return {
        "name": DEPLOYMENT,
        "cron": config.retrain_cron,
        "parameters": {"repo": str(root), "refresh": "pull"},
        "description": f"Scheduled retraining of {root} ({config.retrain_cron})",
        "tags": ["emotions", "retrain"],
    }


def serve_retrain(repo: str = ".") -> None:
    """Serve the retrain flow as a deployment on its cron; blocks until interrupted."""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        print(
            "note: PREFECT_API_URL is not set, so this serves on a temporary local API and the "
            "schedule never fires. Start `prefect server start` elsewhere and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api",
            file=sys.stderr,
        )
    retrain.serve(**deployment_options(repo))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.retrain", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--repo", default=".", help="the DVC repository (default: .)")
    parser.add_argument("--refresh", choices=["pull", "none"], default="pull")
    parser.add_argument("--margin", type=float, default=None, help="default: flow.promote_margin")
    parser.add_argument("--serve", action="store_true", help="serve on flow.retrain_cron")
    args = parser.parse_args(argv)
    if argv is None:  # a process of its own: a kill stops its Prefect server and stages too
        end_children_on_signals()
    try:
        if args.serve:
            serve_retrain(args.repo)
            return 0
        record = retrain(repo=args.repo, refresh=args.refresh, margin=args.margin)
    except (ConfigError, RegistryError, RetrainError, DvcException, RuntimeError) as error:
        print(f"retrain: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(f"{record['decision']}: {record['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
