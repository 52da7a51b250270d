"""A tiny but real training set, built once per test session, for the train and predict tests.

Training tests need what `dvc repro` would have produced before `train`: a manifest, a split
and a decode-once cache. Building them costs seconds (encoding, probing and decoding real
clips), so this module builds them once through the real stage functions
(`synthesize` → `ingest` → `make_variants`/`write_variants` → `preprocess`) and every test
reuses the result. Tests that run the real CLI get a fresh working directory whose
``artifacts/emotions`` is a symlink to the shared data, so each run writes its own
``artifacts/models/...`` and no test sees another's checkpoints.

The cache is read-only for tests: nothing here or in the tests writes under ``shared/``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from emotions.config import Params, parse_params
from emotions.stages.ingest import ingest
from emotions.stages.preprocess import preprocess
from emotions.stages.variants import make_variants, write_variants
from emotions.synth.corpus import synthesize
from emotions.training.trainer import RunPaths, train_run

REPO = Path(__file__).resolve().parents[2]
DATASET = "emotions"
RUN = "small"
CLIPS_PER_CLASS = 5
# Small and fast enough that an epoch on the 2-core CI machine takes about a second, but the
# same architecture and preprocessing as params.yaml (only the corpus and the epochs shrink).
TRAIN_OVERRIDES: dict[str, Any] = {
    "epochs": 3,
    "batch_size": 8,
    "warmup_epochs": 1,
    "patience": 10,
    "num_workers": 0,
    "device": "cpu",
    "precision": "fp32",
    "threads": 1,
}


@dataclass(frozen=True)
class SmallCorpus:
    """The shared data: ``base`` holds ``data/`` (the corpus) and ``artifacts/emotions``."""

    base: Path
    raw: dict[str, Any]  # params.yaml as a mapping, with the small-corpus overrides

    @property
    def root(self) -> Path:
        return self.base / "data"

    @property
    def artifacts(self) -> Path:
        return self.base / "artifacts"

    def params(
        self, sections: Mapping[str, Mapping[str, Any]] | None = None, **train: Any
    ) -> Params:
        """The validated params with ``train:`` overrides (e.g. ``epochs=1``) and, in
        ``sections``, overrides of other sections (e.g. ``{"model": {"dim": 64}}``)."""
        return parse_params(self.raw_with(sections, **train), "small corpus params")

    def raw_with(
        self, sections: Mapping[str, Mapping[str, Any]] | None = None, **train: Any
    ) -> dict[str, Any]:
        raw = copy.deepcopy(self.raw)
        for name, values in {**(sections or {}), "train": train}.items():
            raw[name].update(values)
        return raw

    def paths(self, model_dir: Path) -> RunPaths:
        """The shared cache and split, with the model written to ``model_dir``."""
        spec = RunPaths.for_run(self.params(), RUN, root=self.base)
        return RunPaths(cache=spec.cache, split=spec.split, model_dir=model_dir)

    def workdir(self, where: Path, **train: Any) -> Path:
        """A folder to run ``emotions`` in: ``params.yaml`` plus ``artifacts/emotions`` linked
        to the shared data, so the CLI's relative ``artifacts/`` paths resolve there."""
        where.mkdir(parents=True, exist_ok=True)
        (where / "artifacts").mkdir(exist_ok=True)
        link = where / "artifacts" / DATASET
        if not link.exists():
            os.symlink(self.artifacts / DATASET, link, target_is_directory=True)
        text = yaml.safe_dump(self.raw_with(**train), sort_keys=False)
        (where / "params.yaml").write_text(text, encoding="utf-8")
        return where

    @staticmethod
    def model_dir(workdir: Path) -> Path:
        """Where ``emotions train --run small`` run in ``workdir`` writes its model."""
        return workdir / "artifacts" / "models" / DATASET / "full"


def small_raw_params() -> dict[str, Any]:
    """params.yaml with a small corpus, one run (``small`` = emotions/full) and tiny training."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["datasets"] = {
        DATASET: {
            "layout": "emotions",
            "root": "data",
            "taxonomy": "emotions6",
            "variants": ["full"],
        }
    }
    raw["runs"] = {RUN: {"dataset": DATASET, "variant": "full"}}
    raw["ablate"].update(dataset=DATASET, variant="full")
    raw["synth"].update(clips_per_class=CLIPS_PER_CLASS, duration_s=[1.2, 1.8])
    # 5 clips per class: val and test get one each, three stay for training.
    raw["variants"]["full"] = {"val": 0.2, "test": 0.2}
    raw["ingest"]["workers"] = raw["preprocess"]["workers"] = 2
    raw["train"].update(TRAIN_OVERRIDES)
    return raw


def build_small_corpus(base: Path) -> SmallCorpus:
    """Run the data stages into ``base`` (synth, ingest, variants, preprocess)."""
    raw = small_raw_params()
    params = parse_params(raw, "small corpus params")
    dataset = params.dataset(DATASET)
    taxonomy = params.taxonomy_for(DATASET)
    root = base / "data"
    synthesize(
        root,
        taxonomy=taxonomy,
        config=params.synth,
        clips_per_class=CLIPS_PER_CLASS,
        seed=params.synth.seed,
        layout="emotions",
        second_stage_below=params.ingest.second_stage_below,
        progress=False,
    )
    out = base / "artifacts" / DATASET
    result = ingest(
        root,
        out,
        layout="emotions",
        taxonomy=taxonomy,
        config=params.ingest,
        aliases=params.label_aliases_for(DATASET),
        progress=False,
    )
    variants = make_variants(
        result.manifest, list(dataset.variants), config=params.variants, seed=params.seed
    )
    write_variants(variants, out / "variants")
    preprocess(root, out / "variants", out / "cache", config=params.preprocess, progress=False)
    return SmallCorpus(base=base, raw=raw)


_BUILT: dict[str, Any] = {}


def shared_corpus(tmp_path_factory) -> SmallCorpus:
    """The session's corpus, built on first use (test modules call this from their fixtures,
    and a module-level memo keeps it to one build even when several modules ask)."""
    if "corpus" not in _BUILT:
        _BUILT["corpus"] = build_small_corpus(tmp_path_factory.mktemp("small-corpus"))
    return _BUILT["corpus"]


def shared_model(tmp_path_factory) -> Path:
    """A model folder trained (2 epochs) on the shared corpus: model.json, best.pt, last.pt."""
    if "model" not in _BUILT:
        corpus = shared_corpus(tmp_path_factory)
        model_dir = tmp_path_factory.mktemp("small-model")
        with keep_torch_threads():
            train_run(corpus.params(epochs=2), RUN, paths=corpus.paths(model_dir), progress=False)
        _BUILT["model"] = model_dir
    return _BUILT["model"]


@contextlib.contextmanager
def keep_torch_threads() -> Iterator[None]:
    """``train.threads`` sets torch's process-wide thread count: put it back for later tests."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_python(
    args: Sequence[str], cwd: Path, *, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python ARGS`` (the venv's) in ``cwd``, unbuffered, with the venv's bin on PATH."""
    return run_command([sys.executable, *args], cwd, timeout=timeout)


def run_command(
    args: Sequence[str], cwd: Path, *, timeout: float = 300
) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.run(
        list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
