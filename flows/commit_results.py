"""Commit the outputs git tracks for DVC (`dvc.lock` and the `cache: false` outputs), nothing else.

`make demo` ends here, so a run leaves a clean `git status` and a commit that `dvc metrics diff`,
`dvc plots diff`, `dvc exp show` and `dvc exp diff` compare against. Which paths: asked of DVC,
not listed by hand: every `dvc.lock` beside a `dvc.yaml`, and every stage output with
`cache: false` (metrics/, plots/, reports/) that git does not ignore. The commit holds those paths only
(`git commit --only -- <paths>`): whatever else the user has changed or staged stays as it was.
Nothing changed, nothing committed. Where git knows no identity (a fresh CI runner), the commit
is made as `emotions-demo <demo@localhost>`. Hooks are skipped (`--no-verify`): these are
generated files, and a hook that formats or lints sources must not fail the demo at its end.

`python -m flows.commit_results [--repo .] [--message "make demo: results"]`; undo with
`git reset HEAD~1` (the files stay as they are, uncommitted).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

MESSAGE = "make demo: results"
FALLBACK_IDENTITY = ("-c", "user.name=emotions-demo", "-c", "user.email=demo@localhost")


class CommitError(RuntimeError):
    """git refused a step; the message says which and why."""


def _git(repo: Path, *args: str, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["git", *args], cwd=repo, input=stdin, capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise CommitError(f"git {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def git_outputs(repo: Path) -> list[str]:
    """The lock files and `cache: false` outputs of the repository's stages, relative to its
    root, that git does not ignore: what git, not DVC's cache, keeps of a run."""
    from dvc.dvcfile import LOCK_FILE
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    paths: set[str] = set()
    with Repo(str(repo)) as dvc_repo:
        root = Path(dvc_repo.root_dir)
        for stage in dvc_repo.index.stages:
            if isinstance(stage, PipelineStage):  # a dvc.yaml stage: its lock file beside it
                lock = Path(stage.path).with_name(LOCK_FILE)
                paths.add(Path(os.path.relpath(lock, root)).as_posix())
            paths.update(
                Path(os.path.relpath(out.fs_path, root)).as_posix()
                for out in stage.outs
                if not out.use_cache
            )
    ignored = _git(repo, "check-ignore", "--stdin", check=False, stdin="\n".join(sorted(paths)))
    return sorted(paths - set(ignored.splitlines()))


def _has_identity(repo: Path) -> bool:
    return all(
        subprocess.run(["git", "var", var], cwd=repo, capture_output=True).returncode == 0
        for var in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT")
    )


def commit_results(repo: Path, message: str = MESSAGE) -> str | None:
    """Commit the changed `git_outputs` alone; the new commit's hash, or None when nothing
    changed."""
    repo = repo.resolve()
    # Paths on disk, or deleted since git last saw them; a never-written one is left out.
    paths = [
        path
        for path in git_outputs(repo)
        if (repo / path).exists() or _git(repo, "ls-files", "--", path).strip()
    ]
    if not paths:
        return None
    _git(repo, "add", "--all", "--", *paths)
    staged = subprocess.run(
        ["git", "diff", "--cached", "--quiet", "--", *paths], cwd=repo, timeout=120
    )
    if staged.returncode == 0:
        return None
    identity = () if _has_identity(repo) else FALLBACK_IDENTITY
    _git(repo, *identity, "commit", "--quiet", "--no-verify", "-m", message, "--only", "--", *paths)
    return _git(repo, "rev-parse", "HEAD").strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.commit_results", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--repo", default=".", help="the git + DVC repository (default: .)")
    parser.add_argument("--message", default=MESSAGE, help=f"default: {MESSAGE!r}")
    args = parser.parse_args(argv)
    repo = Path(args.repo)
    if _git(repo, "rev-parse", "--is-inside-work-tree", check=False).strip() != "true":
        print(f"commit_results: {repo} is not a git work tree; nothing committed", file=sys.stderr)
        return 0
    try:
        rev = commit_results(repo, args.message)
    except CommitError as error:
        print(f"commit_results: {error}; the results stay uncommitted", file=sys.stderr)
        return 1
    if rev is None:
        print("results: unchanged since the last commit, nothing committed")
    else:
        print(f"results: committed as {rev[:10]} '{args.message}' (undo: git reset HEAD~1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
