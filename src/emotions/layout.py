"""Every path the pipeline reads or writes, and every file name in them: one owner.

dvc.yaml declares the same tree (its `outs:`); everything in Python asks this module, so a
stage, a flow and the service can never disagree on where a run's model or metrics live.
Paths are relative to the repository root unless a ``root`` is given.

    artifacts/<dataset>/manifest.parquet, quarantine.csv, annotation_stats.json   ingest
    artifacts/<dataset>/validation/                                               validate
    artifacts/<dataset>/variants/<variant>/split.parquet                          variants
    artifacts/<dataset>/cache/                                                    preprocess
    artifacts/models/<dataset>/<variant>/  best.pt last.pt model.json dvclive/    train
    artifacts/calibration/<dataset>/<variant>/temperature.json                    calibrate
    artifacts/eval/<dataset>/<variant>/                                           evaluate
    artifacts/ablation/                                                           ablate
    artifacts/bento.txt                                                           package
    artifacts/bento.tar.gz                                                        package
    artifacts/params.checked                                                      check_params
    metrics/<dataset>/<variant>.json (headline: dvc.yaml's only `metrics:`)       evaluate
    metrics/<dataset>/<variant>/detail.json, metrics/<dataset>/<variant>/train.json
    plots/<dataset>/<variant>/, plots/train/<dataset>/<variant>/, plots/curves/<dataset>/<variant>.png
    reports/results.md, reports/ablation.md
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ARTIFACTS = Path("artifacts")
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")

# The trained-model folder's files (emotions.model_folder owns what they mean).
BEST = "best.pt"
LAST = "last.pt"
META = "model.json"
TRAIN_SUMMARY = "train_summary.json"
TEMPERATURE = "temperature.json"
LIVE = "dvclive"
# Inside DVCLive's folder: its curves and its last-step summary (DVCLive's own layout).
LIVE_CURVES = PLOTS / "metrics"
LIVE_SUMMARY = "metrics.json"

# Ingest's outputs and the variants' split file.
MANIFEST = "manifest.parquet"
QUARANTINE = "quarantine.csv"
ANNOTATION_STATS = "annotation_stats.json"
SPLIT = "split.parquet"
# Beside a headline metrics file `<name>.json`: its full record `<name>/detail.json`.
DETAIL = "detail.json"


def detail_of(headline: Path) -> Path:
    """The full metrics record that goes with the headline file ``headline`` (evaluate writes
    both; only the headline is a DVC `metrics:` file, so `dvc metrics show` stays narrow)."""
    return headline.with_suffix("") / DETAIL


@dataclass(frozen=True)
class Layout:
    """The tree under one repository root (``Layout()`` is the working directory)."""

    root: Path = Path(".")

    # -- per dataset ---------------------------------------------------------------------
    def dataset_dir(self, dataset: str) -> Path:
        return self.root / ARTIFACTS / dataset

    def manifest(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / MANIFEST

    def quarantine(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / QUARANTINE

    def annotation_stats(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / ANNOTATION_STATS

    def validation_dir(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "validation"

    def variants_dir(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "variants"

    def split(self, dataset: str, variant: str) -> Path:
        return self.variants_dir(dataset) / variant / SPLIT

    def cache(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "cache"

    # -- per run (dataset × variant) ------------------------------------------------------
    def model_dir(self, dataset: str, variant: str) -> Path:
        return self.root / ARTIFACTS / "models" / dataset / variant

    def calibration(self, dataset: str, variant: str) -> Path:
        return self.root / ARTIFACTS / "calibration" / dataset / variant / TEMPERATURE

    def eval_dir(self, dataset: str, variant: str) -> Path:
        return self.root / ARTIFACTS / "eval" / dataset / variant

    def metrics(self, dataset: str, variant: str) -> Path:
        """The run's headline test scores (`dvc metrics show`, `dvc exp show` columns)."""
        return self.root / METRICS / dataset / f"{variant}.json"

    def metrics_detail(self, dataset: str, variant: str) -> Path:
        """Everything evaluate measured (per class, calibration, agreement, confusion)."""
        return detail_of(self.metrics(dataset, variant))

    def train_summary(self, dataset: str, variant: str) -> Path:
        """DVCLive's last-epoch summary, copied into git (`dvc exp show` columns)."""
        return self.root / METRICS / dataset / variant / "train.json"

    def plots_dir(self, dataset: str, variant: str) -> Path:
        return self.root / PLOTS / dataset / variant

    def train_curves(self, dataset: str, variant: str) -> Path:
        """DVCLive's curves, copied into git (the data behind :meth:`curves_png`)."""
        return self.root / PLOTS / "train" / dataset / variant

    @property
    def curves_dir(self) -> Path:
        """Static renders of the training curves (dvc.yaml's top-level `plots:`)."""
        return self.root / PLOTS / "curves"

    def curves_png(self, dataset: str, variant: str) -> Path:
        return self.curves_dir / dataset / f"{variant}.png"

    def run_paths(self, dataset: str, variant: str) -> RunPaths:
        return RunPaths(
            cache=self.cache(dataset),
            split=self.split(dataset, variant),
            model_dir=self.model_dir(dataset, variant),
        )

    # -- whole project ----------------------------------------------------------------------
    @property
    def metrics_root(self) -> Path:
        return self.root / METRICS

    @property
    def ablation_dir(self) -> Path:
        return self.root / ARTIFACTS / "ablation"

    def ablation_metrics(self, dataset: str) -> Path:
        return self.root / METRICS / dataset / "ablation.json"

    def ablation_cells(self, dataset: str) -> Path:
        return self.root / METRICS / dataset / "ablation_cells.json"

    @property
    def ablation_report(self) -> Path:
        return self.root / REPORTS / "ablation.md"

    @property
    def results_report(self) -> Path:
        return self.root / REPORTS / "results.md"

    @property
    def params_check(self) -> Path:
        """The `check_params` stage's constant output (every stage runs after it)."""
        return self.root / ARTIFACTS / "params.checked"

    @property
    def bento_tag(self) -> Path:
        return self.root / ARTIFACTS / "bento.txt"

    @property
    def bento_archive(self) -> Path:
        """The Bento named by :attr:`bento_tag`, exported (`bentoml import` restores it)."""
        return self.root / ARTIFACTS / "bento.tar.gz"

    @property
    def serve_dir(self) -> Path:
        return self.root / ARTIFACTS / "serve"

    @property
    def monitor_dir(self) -> Path:
        return self.root / ARTIFACTS / "monitor"

    @property
    def queue_dir(self) -> Path:
        return self.root / ARTIFACTS / "queue"


@dataclass(frozen=True)
class RunPaths:
    """Where one run reads its data and writes its model."""

    cache: Path
    split: Path
    model_dir: Path

    @property
    def manifest(self) -> Path:
        """The dataset's manifest: the cache's sibling, ``artifacts/<dataset>/``."""
        return self.cache.parent / MANIFEST

    @classmethod
    def for_run(cls, params: object, run: str, root: Path = Path(".")) -> RunPaths:
        """The run ``run`` of ``params`` (an :class:`emotions.config.Params`)."""
        spec = params.run(run)  # type: ignore[attr-defined]
        return Layout(root).run_paths(spec.dataset, spec.variant)
