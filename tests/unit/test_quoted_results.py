"""The results README.md and docs/*.md quote are the committed ones, so the two cannot drift.

Each quote is registered below with the text around it and the committed figures it shows;
the test renders the text from the committed files and finds it in the document. A second
test sweeps the documents for three-decimal numbers, the precision reports/results.md uses:
each must belong to a registered quote or be listed as not a result, so a new quote cannot
slip in unchecked. After a run that changes a figure, this test names the sentence to update.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from emotions.layout import Layout

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Fields of a run's metrics file that reports/results.md does not show (calibration).
CALIBRATION_FIELDS = ("temperature", "ece_uncalibrated", "nll", "nll_uncalibrated")


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _number(cell: str) -> float | str:
    try:
        return float(cell)
    except ValueError:
        return cell


def _tables(markdown: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every pipe table of ``markdown``: its header cells and its rows' cells."""
    tables, lines = [], markdown.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and lines[i + 1].startswith("|---"):
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip("|").split("|")])
            tables.append(([cell.strip() for cell in line.strip("|").split("|")], rows))
    return tables


def committed_figures(root: Path = ROOT) -> dict[str, SimpleNamespace]:
    """The committed figures a document may quote, by row; the one place that names their files.

    ``<dataset>_<variant>``: the results table of reports/results.md plus the calibration
    fields of that run's metrics file; ``ablation_<modality>_<fusion>_<loss>``: the ablation
    table of reports/results.md. Columns are named as in the table (``accuracy``, ``uar``,
    ``ece``, ``polarity_acc`` …)."""
    layout = Layout(root)
    figures: dict[str, SimpleNamespace] = {}
    for header, rows in _tables(layout.results_report.read_text(encoding="utf-8")):
        columns = [_key(name) for name in header]
        if columns[:3] == ["dataset", "variant", "method"]:
            for cells in rows:
                row = dict(zip(columns, map(_number, cells), strict=True))
                # The detail file holds them (the headline file, before the pipeline's rerun).
                detail = layout.metrics_detail(cells[0], cells[1])
                source = detail if detail.is_file() else layout.metrics(cells[0], cells[1])
                metrics = json.loads(source.read_text())
                row |= {name: metrics[name] for name in CALIBRATION_FIELDS}
                figures[_key(f"{cells[0]}_{cells[1]}")] = SimpleNamespace(**row)
        elif columns[:3] == ["modality", "fusion", "loss"]:
            for cells in rows:
                row = dict(zip(columns, map(_number, cells), strict=True))
                figures[_key("ablation_" + "_".join(cells[:3]))] = SimpleNamespace(**row)
    return figures


@dataclass(frozen=True)
class Quote:
    """Text of ``document`` that quotes committed figures (``str.format`` fields)."""

    document: str
    template: str


QUOTES = [
    Quote(
        "README.md",
        "test accuracy {emotions_full.accuracy:.3f} on `full` and "
        "{emotions_test.accuracy:.3f} on the test-oriented variant; in the ablation, video only "
        "{ablation_video_lgfm_soft.accuracy:.3f} and audio only "
        "{ablation_audio_lgfm_soft.accuracy:.3f}",
    ),
    Quote(
        "docs/model.md",
        "fitted T = {emotions_full.temperature:.3f} on validation: test ECE "
        "{emotions_full.ece_uncalibrated:.3f} → {emotions_full.ece:.3f}, test NLL "
        "{emotions_full.nll_uncalibrated:.3f} → {emotions_full.nll:.3f}",
    ),
]

# Three-decimal numbers that are not results: the document, the number, why.
NOT_RESULTS = {
    ("README.md", "0.0005"): "a learning rate in an example command",
    ("docs/pipeline.md", "0.0005"): "a learning rate in an example command",
    ("docs/DESIGN.md", "0.999"): "AdamW's beta, a setting",
    ("docs/model.md", "0.999"): "AdamW's beta, a setting",
    ("docs/serving.md", "0.000232"): "an `emotions predict` answer (the command is beside it)",
    ("docs/serving.md", "0.997732"): "an `emotions predict` answer (the command is beside it)",
    ("docs/serving.md", "0.0391"): "an `emotions predict` answer (the command is beside it)",
    ("docs/serving.md", "0.9609"): "an `emotions predict` answer (the command is beside it)",
    ("docs/serving.md", "0.005"): "the service's CUDA tolerance, a setting",
    ("docs/serving.md", "0.0024"): "a benchmark measurement (benchmarks/README.md)",
}


def flat(path: Path) -> str:
    """The document with its line breaks and runs of spaces as single spaces."""
    return " ".join(path.read_text(encoding="utf-8").split())


def name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.fixture(scope="module")
def figures() -> dict[str, SimpleNamespace]:
    return committed_figures()


def test_the_committed_files_give_the_figures_the_quotes_name(figures):
    assert {"emotions_full", "emotions_test", "ablation_video_lgfm_soft"} <= set(figures)
    full = figures["emotions_full"]
    assert 0.0 <= full.accuracy <= 1.0 and full.temperature > 0.0


@pytest.mark.parametrize("quote", QUOTES, ids=lambda q: q.document)
def test_every_quoted_result_is_the_committed_one(figures, quote):
    expected = quote.template.format_map(figures)
    assert expected in flat(ROOT / quote.document), (
        f"{quote.document} should say, as the committed reports/ and metrics/ do: {expected}"
    )


def test_every_three_decimal_number_in_the_docs_is_a_checked_quote_or_no_result(figures):
    quoted: dict[str, set[str]] = {}
    for quote in QUOTES:
        numbers = re.findall(r"\d+\.\d+", quote.template.format_map(figures))
        quoted.setdefault(quote.document, set()).update(numbers)
    unchecked = []
    for path in DOCUMENTS:
        for number in re.findall(r"(?<![\d.])\d\.\d{3,}(?![\d.])", flat(path)):
            if number not in quoted.get(name(path), set()) and (name(path), number) not in (
                NOT_RESULTS
            ):
                unchecked.append(f"{name(path)}: {number}")
    assert not unchecked, "register these in QUOTES (or NOT_RESULTS): " + ", ".join(unchecked)
