"""The `ablate` stage: retrain one run with parts of AV-CANet switched off.

Every cell is a real training + evaluation with the same data, seeds and epoch budget as the
others, through the very functions the `train` and `evaluate` stages use; only the modality,
the fusion and the loss differ. The recipe is the ablation's own (`ablate.epochs`,
`ablate.seed`, `ablate.train`; :meth:`emotions.config.AblateConfig.train_config`), so a
`train.*` experiment retrains the runs without rerunning every cell. With `ablate.seeds: N` each cell is trained with N seeds and
its row holds the mean (the contract's keys) plus the standard deviation (`<metric>_std`). Rows
go to `metrics/<dataset>/ablation.json` (the contract: a list, which the report and the Prefect
tables read), the same rows keyed by cell (`{"both/lgfm/soft": {...}}`) to
`metrics/<dataset>/ablation_cells.json` (`dvc metrics show metrics/<dataset>/ablation_cells.json`;
neither is a DVC `metrics:` file, so the default `dvc metrics show` / `dvc exp show` stay narrow),
and a readable table to `reports/ablation.md`.
"""

from __future__ import annotations

import itertools
import statistics
import typing
from pathlib import Path
from typing import Any

from emotions.atomic import atomic_write_json, atomic_write_text
from emotions.config import AblationCell, AblationLoss, Params, RunConfig
from emotions.layout import PLOTS, Layout, RunPaths
from emotions.models.settings import Fusion
from emotions.stages.evaluate import evaluate_run
from emotions.training.trainer import train_run

ABLATION_RUN = "ablation"
METRICS = ("accuracy", "uar", "weighted_f1", "macro_f1", "polarity_accuracy")


def cells_of(params: Params) -> list[AblationCell]:
    if not params.ablate.full_matrix:
        return list(params.ablate.cells)
    return [
        AblationCell(modality=m, fusion=f, loss=loss)
        for m, f, loss in itertools.product(
            ("both", "video", "audio"), typing.get_args(Fusion), typing.get_args(AblationLoss)
        )
    ]


def cell_name(cell: AblationCell) -> str:
    return f"{cell.modality}-{cell.fusion}-{cell.loss}"


def params_for_cell(params: Params, cell: AblationCell, seed_offset: int = 0) -> Params:
    """The run's params with the cell's switches, the ablation's recipe and seed (plus the
    seed's offset) applied.

    ``ce`` is the soft form with both EP-CE weights 0, which is exactly cross-entropy.
    """
    model = params.model.model_copy(update={"modality": cell.modality, "fusion": cell.fusion})
    if cell.loss == "ce":
        loss = params.loss.model_copy(update={"form": "soft", "w_pol": 0.0, "w_opp": 0.0})
    else:
        loss = params.loss.model_copy(update={"form": cell.loss})
    train = params.ablate.train_config(params.train)
    runs = {
        **params.runs,
        ABLATION_RUN: RunConfig(dataset=params.ablate.dataset, variant=params.ablate.variant),
    }
    return params.model_copy(
        update={
            "model": model,
            "loss": loss,
            "train": train,
            "runs": runs,
            "seed": params.ablate.seed + seed_offset,
        }
    )


def summarise(cell: AblationCell, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One row: the cell, each metric's mean over seeds and its sample std (0 for one seed).

    Flat scalars only, so every consumer of the rows (report, Prefect table) reads them as
    before; each seed's own metrics stay in its cell folder.
    """
    row: dict[str, Any] = {"modality": cell.modality, "fusion": cell.fusion, "loss": cell.loss}
    for key in METRICS:
        values = [float(metrics[key]) for metrics in per_seed]
        row[key] = statistics.fmean(values)
        row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    row["seeds"] = len(per_seed)
    return row


def ablate(
    params: Params, *, root: Path = Path("."), progress: bool = True
) -> list[dict[str, Any]]:
    """Train and evaluate every cell under ``root`` (the repository); rows as in the report."""
    run = ABLATION_RUN
    spec = RunConfig(dataset=params.ablate.dataset, variant=params.ablate.variant)
    layout = Layout(root)
    base = layout.run_paths(spec.dataset, spec.variant)
    work = layout.ablation_dir / spec.dataset / spec.variant
    seeds = params.ablate.seeds
    rows: list[dict[str, Any]] = []
    for cell in cells_of(params):
        name = cell_name(cell)
        per_seed = []
        for offset in range(seeds):
            cell_params = params_for_cell(params, cell, offset)
            out = work / name if seeds == 1 else work / name / f"seed{cell_params.seed}"
            paths = RunPaths(cache=base.cache, split=base.split, model_dir=out / "model")
            train_run(cell_params, run, paths=paths, resume=True, progress=progress)
            per_seed.append(
                evaluate_run(
                    cell_params,
                    run,
                    paths=paths,
                    metrics_path=out / "metrics.json",
                    plots_dir=out / PLOTS,
                    eval_dir=out / "eval",
                )
            )
        row = summarise(cell, per_seed)
        rows.append(row)
        print(
            f"ablate {name}: accuracy={row['accuracy']:.3f}±{row['accuracy_std']:.3f} "
            f"uar={row['uar']:.3f} "
            f"weighted_f1={row['weighted_f1']:.3f}±{row['weighted_f1_std']:.3f} ({seeds} seed(s))"
        )
    atomic_write_json(rows, layout.ablation_metrics(spec.dataset))
    atomic_write_json(cells_by_key(rows), layout.ablation_cells(spec.dataset))
    write_ablation_report(rows, layout.ablation_report, run=run, variant=spec.variant)
    return rows


def cell_key(row: dict[str, Any]) -> str:
    """`modality/fusion/loss`, the cell's key in `ablation_cells.json`."""
    return f"{row['modality']}/{row['fusion']}/{row['loss']}"


def cells_by_key(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows keyed by cell, metrics only: the shape `dvc metrics show FILE` reads (it skips
    a list), beside the contract's list in `ablation.json`."""
    switches = ("modality", "fusion", "loss")
    return {
        cell_key(row): {key: value for key, value in row.items() if key not in switches}
        for row in rows
    }


def _cell_value(row: dict[str, Any], key: str) -> str:
    if row.get("seeds", 1) > 1:
        return f"{row[key]:.3f} ± {row[f'{key}_std']:.3f}"
    return f"{row[key]:.3f}"


def write_ablation_report(
    rows: list[dict[str, Any]], path: Path, *, run: str, variant: str
) -> None:
    seeds = max((row.get("seeds", 1) for row in rows), default=1)
    note = (
        f"Each cell: mean ± sample std over {seeds} seeds."
        if seeds > 1
        else "One seed per cell: differences of a few points on a small test split are within "
        "seed noise; set `ablate.seeds` > 1 for mean ± std."
    )
    lines = [
        f"# Ablation — run `{run}` (variant `{variant}`, test split)",
        "",
        note,
        "",
        "| modality | fusion | loss | accuracy | UAR | weighted F1 | macro F1 | polarity acc. |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        values = " | ".join(_cell_value(row, key) for key in METRICS)
        lines.append(f"| {row['modality']} | {row['fusion']} | {row['loss']} | {values} |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(params: Params) -> None:
    """`emotions ablate`: every cell, then where the table went."""
    rows = ablate(params)
    print(f"ablate: {len(rows)} cells -> {Layout().ablation_report}")
