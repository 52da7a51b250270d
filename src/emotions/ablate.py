"""The `ablate` stage: retrain one run with parts of AV-CANet switched off.

Every cell is a real training + evaluation with the same data, seed and epoch budget as the
others, through the very functions the `train` and `evaluate` stages use; only the modality,
the fusion and the loss differ. Rows go to `metrics/<dataset>/ablation.json` (the contract) and a
readable table to `reports/ablation.md`.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from emotions.atomic import atomic_write_json, atomic_write_text
from emotions.config import AblationCell, Params, RunConfig
from emotions.evaluate import evaluate_run
from emotions.train import RunPaths, train_run

ABLATION_RUN = "ablation"


def cells_of(params: Params) -> list[AblationCell]:
    if not params.ablate.full_matrix:
        return list(params.ablate.cells)
    return [
        AblationCell(modality=m, fusion=f, loss=loss)
        for m, f, loss in itertools.product(
            ("both", "video", "audio"), ("concat", "local", "global", "lgfm"), ("ce", "epce")
        )
    ]


def cell_name(cell: AblationCell) -> str:
    return f"{cell.modality}-{cell.fusion}-{cell.loss}"


def params_for_cell(params: Params, cell: AblationCell) -> Params:
    """The run's params with the cell's switches applied."""
    model = params.model.model_copy(update={"modality": cell.modality, "fusion": cell.fusion})
    loss = (
        params.loss
        if cell.loss == "epce"
        else params.loss.model_copy(update={"w_pol": 0.0, "w_opp": 0.0})
    )
    train = params.train
    if params.ablate.epochs:
        train = train.model_copy(update={"epochs": params.ablate.epochs})
    runs = {
        **params.runs,
        ABLATION_RUN: RunConfig(dataset=params.ablate.dataset, variant=params.ablate.variant),
    }
    return params.model_copy(update={"model": model, "loss": loss, "train": train, "runs": runs})


def ablate(
    params: Params, *, artifacts: Path = Path("artifacts"), progress: bool = True
) -> list[dict[str, Any]]:
    run = ABLATION_RUN
    spec = RunConfig(dataset=params.ablate.dataset, variant=params.ablate.variant)
    base = RunPaths.for_run(params_for_cell(params, AblationCell()), run, artifacts)
    work = artifacts / "ablation" / spec.dataset / spec.variant
    rows: list[dict[str, Any]] = []
    for cell in cells_of(params):
        name = cell_name(cell)
        cell_params = params_for_cell(params, cell)
        paths = RunPaths(cache=base.cache, split=base.split, model_dir=work / name / "model")
        train_run(cell_params, run, paths=paths, resume=True, progress=progress)
        metrics = evaluate_run(
            cell_params,
            run,
            paths=paths,
            metrics_path=work / name / "metrics.json",
            plots_dir=work / name / "plots",
            eval_dir=work / name / "eval",
        )
        row = {
            "modality": cell.modality,
            "fusion": cell.fusion,
            "loss": cell.loss,
            **{
                key: metrics[key]
                for key in ("accuracy", "uar", "weighted_f1", "macro_f1", "polarity_accuracy")
            },
        }
        rows.append(row)
        print(
            f"ablate {name}: accuracy={row['accuracy']:.3f} uar={row['uar']:.3f} "
            f"weighted_f1={row['weighted_f1']:.3f}"
        )
    atomic_write_json(rows, Path("metrics") / spec.dataset / "ablation.json")
    write_ablation_report(rows, Path("reports") / "ablation.md", run=run, variant=spec.variant)
    return rows


def write_ablation_report(
    rows: list[dict[str, Any]], path: Path, *, run: str, variant: str
) -> None:
    lines = [
        f"# Ablation — run `{run}` (variant `{variant}`, test split)",
        "",
        "| modality | fusion | loss | accuracy | UAR | weighted F1 | macro F1 | polarity acc. |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['modality']} | {row['fusion']} | {row['loss']} | {row['accuracy']:.3f} | "
            f"{row['uar']:.3f} | {row['weighted_f1']:.3f} | {row['macro_f1']:.3f} | "
            f"{row['polarity_accuracy']:.3f} |"
        )
    atomic_write_text(path, "\n".join(lines) + "\n")
