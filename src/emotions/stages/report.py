"""The `report` stage: the paper-style results tables from the metrics and annotation files.

The model's numbers come only from `metrics/` (each run's detail file beside the headline
file `dvc metrics show` reads), so the tables can never disagree with the tracked numbers; the annotation section comes from each
dataset's `artifacts/<dataset>/annotation_stats.json` (written by ingest). Columns are the
ones the video-emotion literature reports: top-1 accuracy, UAR, WAR, weighted and macro F1,
per-class accuracy, plus polarity accuracy and calibration.

A value a file does not carry (an older metrics file, an empty group, an undefined kappa)
prints as "–" rather than failing the stage.

The stage also renders each run's training curves (DVCLive's `.tsv` files in `plots/train/`) as
one PNG per run in `plots/curves/`, the top-level `plots:` of dvc.yaml: images need no
JavaScript, so the HTML of `dvc plots show` works offline (dvc-render's vega pages load vega
from a CDN, and no installed package ships it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emotions.atomic import atomic_write, atomic_write_text
from emotions.config import Params
from emotions.layout import ANNOTATION_STATS, ARTIFACTS, Layout, detail_of

MISSING = "–"
# (metrics key, column title) of the main table.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("uar", "UAR"),
    ("war", "WAR"),
    ("weighted_f1", "weighted F1"),
    ("macro_f1", "macro F1"),
    ("polarity_accuracy", "polarity acc."),
    ("ece", "ECE"),
    ("n_test", "n test"),
)
ABLATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("uar", "UAR"),
    ("weighted_f1", "weighted F1"),
    ("macro_f1", "macro F1"),
    ("polarity_accuracy", "polarity acc."),
)


def fmt(value: Any) -> str:
    """Three decimals for ratios, integers as they are, "–" for what is not there."""
    if value is None or isinstance(value, bool):
        return MISSING
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return MISSING if value != value else f"{value:.3f}"  # NaN
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _read_json(path: Path) -> Any | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def results_table(
    params: Params, metrics_dir: Path | None = None, artifacts_dir: Path | None = None
) -> str:
    """The whole of `reports/results.md` (metrics and artifacts under the repository by
    default; a test points both elsewhere)."""
    layout = Layout()
    metrics_dir = metrics_dir or layout.metrics_root
    artifacts_dir = artifacts_dir or layout.root / ARTIFACTS
    runs: list[tuple[str, str, dict[str, Any] | None, Path]] = []
    for run in params.runs.values():
        path = metrics_dir / run.dataset / f"{run.variant}.json"
        detail = _read_json(detail_of(path))
        runs.append((run.dataset, run.variant, detail or _read_json(path), path))

    main_rows = []
    for dataset, variant, metrics, path in runs:
        method = f"AV-CANet ({params.model.fusion})"
        if metrics is None:
            main_rows.append([dataset, variant, method, f"(missing: {path})"] + [""] * 7)
            continue
        main_rows.append([dataset, variant, method] + [fmt(metrics.get(k)) for k, _ in COLUMNS])
    lines = [
        "# Results (test split of each dataset variant)",
        "",
        "WAR (weighted average recall) is top-1 accuracy; UAR is the mean recall over the classes",
        "in the test split; macro F1 averages every class of the taxonomy.",
        "",
        *_table(["dataset", "variant", "method", *(t for _, t in COLUMNS)], main_rows, 3),
    ]
    for dataset, variant, metrics, _ in runs:
        if metrics and metrics.get("per_class"):
            lines += ["", f"## Per class: {dataset} / {variant}", ""]
            lines += _per_class_lines(metrics)
    lines += _protocol_lines(runs)
    lines += _agreement_lines(runs)
    for dataset in params.datasets:
        lines += _annotation_lines(dataset, artifacts_dir / dataset / ANNOTATION_STATS)
    for dataset in params.datasets:
        rows = _read_json(metrics_dir / dataset / "ablation.json")
        if rows is None:
            continue
        body = [
            [str(r.get("modality")), str(r.get("fusion")), str(r.get("loss"))]
            + [fmt(r.get(k)) for k, _ in ABLATION_COLUMNS]
            for r in rows
        ]
        header = ["modality", "fusion", "loss", *(t for _, t in ABLATION_COLUMNS)]
        lines += ["", f"## Ablation on {dataset}", "", *_table(header, body, 3)]
    return "\n".join(lines) + "\n"


def _per_class_lines(metrics: Mapping[str, Any]) -> list[str]:
    """Per-class accuracy (= recall), precision, F1, support, then the confusion matrix."""
    per_class: dict[str, Any] = metrics["per_class"]
    # The file is key-sorted; the confusion matrix keeps the taxonomy's order.
    order = list((metrics.get("confusion_matrix") or {}).get("classes", []))
    order = [c for c in order if c in per_class] + [c for c in per_class if c not in order]
    rows = []
    for name in order:
        scores = per_class[name]
        support = scores.get("support")
        rows.append(
            [
                name,
                fmt(int(support) if isinstance(support, float) else support),
                fmt(scores.get("accuracy", scores.get("recall"))),
                fmt(scores.get("precision")),
                fmt(scores.get("f1")),
            ]
        )
    header = ["class", "support", "accuracy (= recall)", "precision", "F1"]
    lines = _table(header, rows, 1)
    confusion = metrics.get("confusion_matrix")
    if confusion:
        classes = confusion["classes"]
        lines += ["", "Confusion matrix (rows true, columns predicted):", ""]
        body = [
            [name, *(str(c) for c in counts)]
            for name, counts in zip(classes, confusion["counts"], strict=True)
        ]
        lines += _table(["true \\ predicted", *classes], body, 1)
    return lines


def _protocol_lines(runs: Sequence[tuple[str, str, dict[str, Any] | None, Path]]) -> list[str]:
    """The val-selected test score beside the authors' protocol score, where a run has both."""
    rows = []
    for dataset, variant, metrics, _ in runs:
        ours, theirs = (metrics or {}).get("val_selected"), (metrics or {}).get("authors_protocol")
        if not ours or not theirs:
            continue
        rows.append(
            [
                dataset,
                variant,
                fmt(ours.get("accuracy")),
                fmt(ours.get("weighted_f1")),
                fmt(ours.get("epoch")),
                fmt(theirs.get("accuracy")),
                fmt(theirs.get("weighted_f1")),
                fmt(theirs.get("epoch")),
            ]
        )
    if not rows:
        return []
    header = [
        "dataset",
        "variant",
        "val-selected test accuracy",
        "val-selected test weighted F1",
        "epoch (val)",
        "authors' protocol accuracy",
        "authors' protocol weighted F1",
        "epoch (test)",
    ]
    return [
        "",
        "## Val-selected test score and the authors' protocol score",
        "",
        "Val-selected: the checkpoint validation chose, scored once on the test split (centre",
        "views): the estimate to trust. Authors' protocol: the test split scored after every",
        "epoch on random views and the best epoch kept, as the authors' main_final_delay.py",
        "reports it: the number to compare with the paper's tables, biased upwards by choosing",
        "on test.",
        "",
        *_table(header, rows, 2),
    ]


def _agreement_lines(runs: Sequence[tuple[str, str, dict[str, Any] | None, Path]]) -> list[str]:
    rows = []
    for dataset, variant, metrics, _ in runs:
        groups = (metrics or {}).get("by_agreement")
        if not groups:
            continue
        high, low = groups["high"], groups["low"]
        rows.append(
            [
                dataset,
                variant,
                f"≥ {groups['threshold']:g}",
                fmt(high["accuracy"]),
                str(high["n"]),
                fmt(low["accuracy"]),
                str(low["n"]),
                str(groups["n_without_votes"]),
            ]
        )
    if not rows:
        return []
    header = [
        "dataset",
        "variant",
        "high agreement",
        "accuracy (high)",
        "n (high)",
        "accuracy (low)",
        "n (low)",
        "n without votes",
    ]
    return [
        "",
        "## Accuracy on high- and low-agreement test clips",
        "",
        "Agreement is the share of the deciding stage's annotators who chose the label; clips",
        "whose label came without votes are in neither group.",
        "",
        *_table(header, rows, 2),
    ]


def _annotation_lines(dataset: str, path: Path) -> list[str]:
    """Agreement and Fleiss' kappa per stage and per class, from annotation_stats.json."""
    lines = ["", f"## Annotations: {dataset}", ""]
    stats = _read_json(path)
    if stats is None:
        return [*lines, f"(missing: {path})"]
    if not stats.get("n_annotated_clips"):
        return [
            *lines,
            f"No annotator votes ({stats.get('n_clips', 0)} clips, single-label source).",
        ]
    stages: dict[str, Any] = stats.get("per_stage", {})
    lines += [
        f"{stats['n_annotated_clips']} of {stats['n_clips']} clips have votes; "
        f"{stats.get('clips_sent_to_stage2', 0)} went to a later stage.",
        "",
    ]
    stage_rows = []
    for stage, summary in stages.items():
        kappa = summary["fleiss_kappa"]
        stage_rows.append(
            [
                stage,
                str(summary["n_clips"]),
                str(summary["n_votes"]),
                fmt(summary["mean_agreement"]),
                fmt(kappa["kappa"]),
                str(kappa["n_clips"]),
                fmt(kappa["raters_per_clip"]),
            ]
        )
    header = [
        "stage",
        "clips",
        "votes",
        "mean agreement",
        "Fleiss' κ",
        "clips in κ",
        "raters per clip",
    ]
    lines += _table(header, stage_rows, 1)
    distribution: dict[str, int] = stats.get("label_distribution", {})
    agreement: dict[str, float] = stats.get("mean_agreement_per_class", {})
    class_rows = []
    for name in distribution:
        row = [name, str(distribution[name]), fmt(agreement.get(name))]
        for summary in stages.values():
            row.append(fmt(summary.get("mean_agreement_per_class", {}).get(name)))
            row.append(fmt(summary["fleiss_kappa"].get("per_class", {}).get(name)))
        class_rows.append(row)
    header = ["class", "clips", "mean agreement"]
    for stage in stages:
        header += [f"agreement stage {stage}", f"κ stage {stage}"]
    lines += [
        "",
        "Per class: mean agreement of the deciding stage; per stage, the share of that stage's",
        "votes that named the class (its clips only) and Fleiss' per-category kappa.",
        "",
        *_table(header, class_rows, 1),
    ]
    return lines


def write_report(params: Params, out: Path | None = None) -> Path:
    return atomic_write_text(out or Layout().results_report, results_table(params))


def read_curves(folder: Path) -> dict[str, list[tuple[float, float]]]:
    """DVCLive's curves under ``folder``: metric name → (step, value) points."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for path in sorted(folder.rglob("*.tsv")):
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) < 2:
            continue
        header = lines[0].split("\t")
        if "step" not in header or path.stem not in header:
            continue
        x, y = header.index("step"), header.index(path.stem)
        points = [
            (float(row[x]), float(row[y])) for row in (line.split("\t") for line in lines[1:])
        ]
        curves[path.relative_to(folder).with_suffix("").as_posix()] = points
    return curves


def render_curves(curves: dict[str, list[tuple[float, float]]], out: Path, title: str) -> Path:
    """One PNG, one panel per metric against the step (what `dvc plots show` embeds)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(curves)
    columns = min(4, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for axis in axes.flat[len(names) :]:
        axis.set_visible(False)
    for axis, name in zip(axes.flat, names, strict=False):
        steps, values = zip(*curves[name], strict=True)
        axis.plot(steps, values, marker="." if len(steps) < 30 else None)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))
    plt.close(figure)
    return out


def write_curves(params: Params, layout: Layout | None = None) -> list[Path]:
    """Every run's training curves as one PNG (runs without curves yet are skipped)."""
    layout = layout or Layout()
    written = []
    for name, run in params.runs.items():
        curves = read_curves(layout.train_curves(run.dataset, run.variant))
        if curves:
            out = layout.curves_png(run.dataset, run.variant)
            written.append(render_curves(curves, out, f"{name}: training curves"))
    return written


def main(params: Params) -> None:
    """`emotions report`: the results table and the training curves' images."""
    curves = write_curves(params)
    print(f"report: {write_report(params)}; {len(curves)} training-curve image(s)")
