"""Scratch repositories for the flow tests: real git + DVC, real stages, tiny sizes.

`real_repo` holds our dvc.yaml, code and a small generated corpus (5 clips per class, one run,
one epoch, one ablation cell) so the whole DAG runs in about a minute on 2 cores (tests point
BENTOML_HOME at a temporary folder, so the `package` stage's Bento never reaches ~/bentoml); `toy_repo`
holds a dvc.yaml of a few `python -c` stages for the failure modes (a flaky stage, a hard
failure, slow independent stages) that would be slow or impossible to provoke in real stages.
Both are committed, so `dvc exp run` has a baseline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path, check: bool = True, timeout: float = 600):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


def small_params(**flow: Any) -> dict[str, Any]:
    """params.yaml shrunk to one dataset variant, one run, one epoch, one ablation cell."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["datasets"]["emotions"]["variants"] = ["full"]
    params["runs"] = {"emotions-full": {"dataset": "emotions", "variant": "full"}}
    params["synth"].update(clips_per_class=5, duration_s=[1.2, 1.8])
    params["variants"]["full"] = {"val": 0.2, "test": 0.2}
    params["validate"]["min_clips_per_class"] = 3
    params["train"].update(epochs=1, batch_size=8, device="cpu", precision="fp32", threads=1)
    params["ablate"].update(epochs=1, cells=[{"modality": "video"}])
    params["flow"].update(
        {"retries": 1, "retry_delay_s": 0, "concurrency": 2, "lock_wait_s": 0, **flow}
    )
    return params


def write_params(repo: Path, params: dict[str, Any]) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def init(repo: Path) -> Path:
    repo.mkdir(parents=True, exist_ok=True)
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    return repo


def real_repo(repo: Path, *, remote: bool = False, **flow: Any) -> Path:
    """Our code, dvc.yaml and a generated corpus tracked by `data.dvc` (pushed to a local DVC
    remote beside the repo when `remote`)."""
    init(repo)
    shutil.copytree(REPO / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    for name in ("bentofile.yaml", "pyproject.toml"):  # read by the `package` stage
        if (REPO / name).is_file():
            shutil.copy(REPO / name, repo / name)
    # Our .gitignore: artifacts/ stays out of git (metrics/, plots/, reports/ and dvc.lock are in).
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    write_params(repo, small_params(**flow))
    run(["emotions", "synth", "data", "--seed", "3"], repo)
    run(["dvc", "add", "-q", "data"], repo)
    if remote:
        run(["dvc", "remote", "add", "-q", "-d", "local", str(repo.parent / "dvc-remote")], repo)
        run(["dvc", "push", "-q"], repo)
    commit(repo, "corpus")
    return repo


def toy_repo(
    repo: Path,
    stages: dict[str, dict[str, Any]],
    artifacts: dict[str, dict[str, Any]] | None = None,
    **flow: Any,
) -> Path:
    """A repository whose dvc.yaml is `stages` (and `artifacts`, where given; params.yaml is
    ours, for the `flow:` section)."""
    init(repo)
    write_params(repo, small_params(**flow))
    declared = {"stages": stages, **({"artifacts": artifacts} if artifacts else {})}
    text = yaml.safe_dump(declared, sort_keys=False, width=1000)
    (repo / "dvc.yaml").write_text(text, encoding="utf-8")
    commit(repo, "toy pipeline")
    return repo


def py(code: str) -> str:
    """A stage command running `code` with this interpreter."""
    return f'{sys.executable} -c "{code}"'
