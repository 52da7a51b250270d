"""The `report` stage: the paper-style results table from the metrics files.

Reads only `metrics/` (what `dvc metrics show` reads too), so the table can never disagree with
the tracked numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from emotions.atomic import atomic_write_text
from emotions.config import Params

COLUMNS = ("accuracy", "weighted_f1", "macro_f1", "polarity_accuracy", "ece", "n_test")


def results_table(params: Params, metrics_dir: Path = Path("metrics")) -> str:
    lines = [
        "# Results (test split of each dataset variant)",
        "",
        "| dataset | variant | method | accuracy | weighted F1 | macro F1 | polarity acc. | ECE | n test |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in params.runs.values():
        path = metrics_dir / run.dataset / f"{run.variant}.json"
        if not path.is_file():
            lines.append(f"| {run.dataset} | {run.variant} | AV-CANet | (missing: {path}) |||||")
            continue
        metrics = json.loads(path.read_text(encoding="utf-8"))
        cells = " | ".join(
            f"{metrics[key]:.3f}" if key != "n_test" else str(metrics[key]) for key in COLUMNS
        )
        lines.append(
            f"| {run.dataset} | {run.variant} | AV-CANet ({params.model.fusion}) | {cells} |"
        )
    for dataset in params.datasets:
        path = metrics_dir / dataset / "ablation.json"
        if not path.is_file():
            continue
        lines += [
            "",
            f"## Ablation on {dataset}",
            "",
            "| modality | fusion | loss | accuracy | weighted F1 | macro F1 |",
            "|---|---|---|---:|---:|---:|",
        ]
        for row in json.loads(path.read_text(encoding="utf-8")):
            lines.append(
                f"| {row['modality']} | {row['fusion']} | {row['loss']} | {row['accuracy']:.3f} | "
                f"{row['weighted_f1']:.3f} | {row['macro_f1']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def write_report(params: Params, out: Path = Path("reports") / "results.md") -> Path:
    return atomic_write_text(out, results_table(params))
