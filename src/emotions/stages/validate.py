"""Check the manifest with a Great Expectations suite before anything trains on it.

Ingest can only report what it probed; whether the corpus is *usable* is a separate question
(labels in the taxonomy, unique content, sane durations, enough clips per class to stratify).
Answering it with GX gives a declarative suite, a machine-readable result and browsable Data
Docs for free. Each expectation carries a severity in its ``meta``: a failed ``critical`` one
stops the DAG, a failed ``warning`` one is reported and the run goes on.

Duration, frame rate, frame count and frame size are checked against ingest's bounds
(``ingest.duration_s``, ``fps``, ``min_frames``, ``min_side``, ``max_side``), the very limits
ingest quarantines by; so these critical expectations pass whenever ingest did its job, and a
failure means the manifest did not come from this ingest with these params. They tolerate no
outlier: there is none left to tolerate. GX's ``mostly`` is used where a share of outliers is
normal: clips with a skipped broken audio packet (kept by ingest) may be up to
``validate.max_bad_audio_share`` of the corpus before a warning.

The GX context is ephemeral (in memory) with one Data Docs site pointed at ``out_dir``, so a run
leaves nothing in the working directory (no ``gx/`` folder) and needs no network.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from emotions.atomic import atomic_write_text
from emotions.config import IngestConfig, Params, ValidateConfig
from emotions.corpus.manifest import MANIFEST_COLUMNS
from emotions.errors import StageError
from emotions.layout import Layout

Severity = Literal["critical", "warning"]

SUITE_NAME = "manifest_suite"
RESULT_FILE = "result.json"
DOCS_DIR = "data_docs"

# The manifest contract is ingest's; the suite checks exactly those columns.
REQUIRED_COLUMNS: tuple[str, ...] = MANIFEST_COLUMNS
POLARITIES: tuple[str, ...] = ("positive", "negative", "neutral")


@dataclass(frozen=True)
class ValidationOutcome:
    """What the stage decided, in a form the CLI can print and a test can assert on."""

    success: bool  # False iff a critical expectation failed
    summary: str  # a headline, then one line per failed expectation
    results: list[dict[str, Any]] = field(default_factory=list)
    result_path: Path | None = None
    docs_index: Path | None = None


@dataclass(frozen=True)
class _Check:
    """One expectation plus what a reader needs to understand its failure."""

    expectation: Any  # a great_expectations Expectation
    severity: Severity
    column: str | None
    what: str  # noun phrase: "values outside the taxonomy", "share of clips with audio"
    expected: str


def _checks(
    manifest: pd.DataFrame,
    taxonomy: dict[str, str],
    config: ValidateConfig,
    bounds: IngestConfig,
) -> list[_Check]:
    """The suite for this manifest.

    Column expectations are only added for columns that exist: a missing column is already a
    critical failure of the column-set expectation, and an expectation on it would only repeat
    that as an exception. Per-class counts are added for the classes present; a taxonomy class
    absent altogether is a separate warning (a dataset may legitimately lack one).
    """
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    present = set(manifest.columns)
    checks: list[_Check] = []

    def add(
        expectation: Any, severity: Severity, column: str | None, what: str, expected: str
    ) -> None:
        needs = getattr(expectation, "column", None) or column
        if needs is None or needs in present:
            checks.append(_Check(expectation, severity, column, what, expected))

    classes = sorted(taxonomy)
    lo_d, hi_d = bounds.duration_s
    lo_f, hi_f = bounds.fps

    add(
        gxe.ExpectTableColumnsToMatchSet(column_set=list(REQUIRED_COLUMNS), exact_match=False),
        "critical",
        None,
        "required columns missing",
        "all of " + ", ".join(REQUIRED_COLUMNS),
    )
    add(gxe.ExpectTableRowCountToBeBetween(min_value=1), "critical", None, "rows", "≥ 1")
    for column in ("clip_id", "path", "label", "polarity", "sha256", "duration_s", "fps"):
        add(
            gxe.ExpectColumnValuesToNotBeNull(column=column),
            "critical",
            column,
            "values missing",
            "no nulls",
        )
    for column in ("clip_id", "sha256"):
        add(
            gxe.ExpectColumnValuesToBeUnique(column=column),
            "critical",
            column,
            "duplicated values",
            "unique",
        )
    add(
        gxe.ExpectColumnValuesToMatchRegex(column="sha256", regex=r"^[0-9a-fA-F]{64}$"),
        "critical",
        "sha256",
        "values that are not 64 hex digits",
        "64 hex digits",
    )
    add(
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=classes),
        "critical",
        "label",
        "values outside the taxonomy",
        "one of " + ", ".join(classes),
    )
    add(
        gxe.ExpectColumnValuesToBeInSet(column="polarity", value_set=list(POLARITIES)),
        "critical",
        "polarity",
        "values that are not a polarity",
        "one of " + ", ".join(POLARITIES),
    )
    if {"label", "polarity"} <= present:
        add(
            gxe.ExpectColumnPairValuesToBeInSet(
                column_A="label",
                column_B="polarity",
                value_pairs_set=[(name, taxonomy[name]) for name in classes],
                # No row_condition limiting this to known labels: GX 1.24 miscounts column-pair
                # expectations under a row condition and raises. An unknown label therefore
                # shows up here too, which is honest: it has no polarity to agree with.
            ),
            "critical",
            "polarity",
            "(label, polarity) pairs not in the taxonomy",
            "the taxonomy's polarity for each label",
        )
    add(
        gxe.ExpectColumnValuesToBeBetween(column="duration_s", min_value=lo_d, max_value=hi_d),
        "critical",
        "duration_s",
        "durations out of range",
        f"{lo_d:g}..{hi_d:g} s (ingest.duration_s)",
    )
    add(
        gxe.ExpectColumnValuesToBeBetween(column="fps", min_value=lo_f, max_value=hi_f),
        "critical",
        "fps",
        "frame rates out of range",
        f"{lo_f:g}..{hi_f:g} (ingest.fps)",
    )
    for column in ("width", "height"):
        add(
            gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=bounds.min_side, max_value=bounds.max_side
            ),
            "critical",
            column,
            "sizes out of range",
            f"{bounds.min_side}..{bounds.max_side} px (ingest.min_side, ingest.max_side)",
        )
    add(
        gxe.ExpectColumnValuesToBeBetween(column="n_frames", min_value=bounds.min_frames),
        "critical",
        "n_frames",
        "frame counts below the minimum",
        f"≥ {bounds.min_frames} (ingest.min_frames)",
    )
    add(
        gxe.ExpectColumnValuesToBeBetween(
            column="audio_bad_packets", max_value=0, mostly=1.0 - config.max_bad_audio_share
        ),
        "warning",
        "audio_bad_packets",
        "clips with a broken audio packet",
        f"at most {config.max_bad_audio_share:.0%} of clips (validate.max_bad_audio_share)",
    )
    add(
        gxe.ExpectColumnValuesToBeBetween(column="agreement", min_value=0.0, max_value=1.0),
        "critical",
        "agreement",
        "agreements outside [0, 1]",
        "0..1",
    )
    add(
        gxe.ExpectColumnMeanToBeBetween(column="has_audio", min_value=config.min_audio_share),
        "warning",
        "has_audio",
        "share of clips with audio",
        f"≥ {config.min_audio_share:g}",
    )
    if {"has_audio", "audio_sample_rate"} <= present:
        add(
            gxe.ExpectColumnValuesToBeBetween(
                column="audio_sample_rate",
                min_value=0,
                strict_min=True,
                row_condition=Column("has_audio") == True,  # noqa: E712 (builds a GX condition)
            ),
            "warning",
            "audio_sample_rate",
            "clips with audio but no sample rate",
            "> 0 where has_audio",
        )
    if "visual_hash" in present:
        add(
            gxe.ExpectColumnValuesToMatchRegex(column="visual_hash", regex=r"^[0-9a-fA-F]{16}$"),
            "warning",
            "visual_hash",
            "values that are not 16 hex digits",
            "16 hex digits",
        )
    if "official_split" in present:
        # Null (no split list names the clip) is allowed: GX's value-set check skips nulls.
        add(
            gxe.ExpectColumnValuesToBeInSet(column="official_split", value_set=["train", "test"]),
            "critical",
            "official_split",
            "values that are not an official split",
            "train, test or null",
        )
    if "label" in present:
        add(
            gxe.ExpectColumnDistinctValuesToContainSet(column="label", value_set=classes),
            "warning",
            "label",
            "taxonomy classes absent",
            "every class of the taxonomy present",
        )
        counts = manifest["label"].value_counts()
        for name in classes:
            if counts.get(name, 0) == 0:
                continue
            add(
                gxe.ExpectTableRowCountToBeBetween(
                    min_value=config.min_clips_per_class, row_condition=Column("label") == name
                ),
                "critical",
                "label",
                f"clips of class {name!r}",
                f"≥ {config.min_clips_per_class} (enough to stratify)",
            )
    return checks


def _example_text(values: Iterable[Any], limit: int = 3) -> str:
    seen: list[str] = []
    for value in values:
        text = repr(tuple(value)) if isinstance(value, list) else repr(value)
        if text not in seen:
            seen.append(text)
        if len(seen) == limit:
            break
    return ", ".join(seen)


def _plain(item: Any) -> Any:
    if hasattr(item, "tolist"):  # numpy scalars and arrays
        return item.tolist()
    if isinstance(item, set | frozenset):
        return sorted(item, key=str)
    return str(item)


def _jsonable(value: Any) -> Any:
    """Observed values can be numpy scalars or sets; result.json must not choke on them."""
    return json.loads(json.dumps(value, default=_plain))


def _exception_message(info: Any) -> str | None:
    """First line of the error GX caught, if any.

    GX reports it either flat (``{"raised_exception": True, ...}``) or, when a metric failed
    (e.g. text in a numeric column), keyed by metric id: ``{metric_id: {...}}``.
    """
    if not isinstance(info, dict):
        return None
    entries = [info, *(value for value in info.values() if isinstance(value, dict))]
    for entry in entries:
        if entry.get("raised_exception"):
            text = str(entry.get("exception_message") or "unknown error").strip()
            return text.splitlines()[0] if text else "unknown error"
    return None


def _describe(check: _Check, result: Any) -> tuple[dict[str, Any], str]:
    """Our row for one GX result, and its summary line (empty when it passed)."""
    details = result.result or {}
    error = _exception_message(result.exception_info)
    raised = error is not None
    row: dict[str, Any] = {
        "expectation": result.expectation_config.type,
        "column": check.column,
        "severity": check.severity,
        "success": bool(result.success) and not raised,
        "what": check.what,
        "expected": check.expected,
    }
    where = check.column or "table"
    if error is not None:
        row["observed"] = f"error: {error}"
        line = f"could not be checked ({error})"
    elif "unexpected_count" in details:
        count = int(details["unexpected_count"])
        examples = [
            item for item in details.get("partial_unexpected_list") or [] if item is not None
        ]
        row["observed"] = count
        row["examples"] = _jsonable(examples[:5])
        line = f"{count} {check.what}"
        if examples:
            line += f" (e.g. {_example_text(examples)})"
        line += f"; expected {check.expected}"
    elif "mismatched" in (details.get("details") or {}):
        missing = (details["details"]["mismatched"] or {}).get("missing") or []
        row["observed"] = _jsonable(sorted(missing))
        line = f"{check.what}: {', '.join(map(str, sorted(missing)))}"
    elif "partial_missing_list" in details:
        missing = sorted(map(str, details["partial_missing_list"] or []))
        row["observed"] = missing
        line = f"{check.what}: {', '.join(missing)}"
    else:
        observed = _jsonable(details.get("observed_value"))
        row["observed"] = observed
        shown = f"{observed:.3g}" if isinstance(observed, float) else str(observed)
        line = f"{check.what}: observed {shown}, expected {check.expected}"
    text = "" if row["success"] else f"[{check.severity}] {where}: {line}"
    return row, text


def _swap_in(staging: Path, target: Path) -> None:
    """Replace the ``target`` folder with ``staging`` so readers never see half a site."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _context(docs_dir: Path) -> Any:
    """An in-memory GX context whose only Data Docs site is ``docs_dir``; no analytics."""
    from great_expectations.data_context import get_context
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={
            "local_site": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    # GX requires an absolute base directory for an in-memory context.
                    "base_directory": str(Path(docs_dir).resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return get_context(project_config=config, mode="ephemeral")


def validate_manifest(
    manifest: pd.DataFrame,
    out_dir: Path,
    *,
    taxonomy: dict[str, str],
    config: ValidateConfig,
    bounds: IngestConfig | None = None,
) -> ValidationOutcome:
    """Run the manifest suite; write ``result.json`` and the Data Docs site under ``out_dir``.

    ``bounds``: the ingest params whose clip bounds the manifest must keep to (params.yaml's
    ``ingest``; default: its defaults).

    Returns the outcome instead of raising on failure: the caller (CLI / DAG) decides to stop,
    and still has the summary and the Data Docs to show why.
    """
    # GX 1.24 ships no analytics client at all; other 1.x releases read this variable (and the
    # context's analytics_enabled=False below), so the stage stays offline on those too.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{DOCS_DIR}-"))
    staging.chmod(0o755)  # mkdtemp makes it private; the site is meant to be read
    try:
        context = _context(staging)
        checks = _checks(manifest, taxonomy, config, bounds or IngestConfig())
        suite = gx.ExpectationSuite(name=SUITE_NAME)
        for index, check in enumerate(checks):
            check.expectation.meta = {
                "check": index,
                "severity": check.severity,
                "column": check.column,
                "what": check.what,
                "expected": check.expected,
            }
            # Data Docs show the description instead of GX's generic prose, which would
            # otherwise drop e.g. which class a row count is about.
            check.expectation.description = (
                f"[{check.severity}] {check.column or 'table'}: {check.what}; "
                f"expected {check.expected}"
            )
            if hasattr(check.expectation, "severity"):  # native field since GX 1.x minor
                check.expectation.severity = check.severity
            suite.add_expectation(check.expectation)
        suite = context.suites.add(suite)
        asset = context.data_sources.add_pandas("manifest").add_dataframe_asset("manifest")
        batch = asset.add_batch_definition_whole_dataframe("whole manifest")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name="manifest_validation", data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name="manifest_checkpoint",
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
                result_format={"result_format": "SUMMARY"},
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": manifest})
        (identifier, suite_result), *_ = run.run_results.items()
        page = context.get_docs_sites_urls(resource_identifier=identifier, only_if_exists=False)
        _swap_in(staging, out_dir / DOCS_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    # Match results to checks through the index kept in meta, not through result order.
    rows: list[dict[str, Any]] = []
    lines: list[str] = []
    for result in sorted(
        suite_result.results, key=lambda item: item.expectation_config.meta["check"]
    ):
        row, line = _describe(checks[result.expectation_config.meta["check"]], result)
        rows.append(row)
        if line:
            lines.append(line)
    critical = sum(1 for row in rows if not row["success"] and row["severity"] == "critical")
    warnings = sum(1 for row in rows if not row["success"] and row["severity"] == "warning")
    success = critical == 0
    headline = (
        f"manifest {'passed' if success else 'FAILED'}: {len(manifest)} clips, "
        f"{len(rows) - critical - warnings}/{len(rows)} expectations met, "
        f"{critical} critical and {warnings} warning failure(s)"
    )
    summary = "\n".join([headline, *lines])

    docs_index = out_dir / DOCS_DIR / "index.html"
    page_url = page[0]["site_url"] if page else None
    page_rel = None
    if page_url and page_url.startswith("file://"):
        page_rel = os.path.relpath(page_url.removeprefix("file://"), staging)
    result_path = out_dir / RESULT_FILE
    document = {
        "success": success,
        "summary": summary,
        "n_clips": len(manifest),
        "suite": SUITE_NAME,
        "great_expectations_version": gx.__version__,
        "data_docs_index": f"{DOCS_DIR}/index.html",
        "data_docs_validation_page": f"{DOCS_DIR}/{page_rel}" if page_rel else None,
        "results": rows,
        "gx_result": suite_result.to_json_dict(),
    }
    atomic_write_text(result_path, json.dumps(_jsonable(document), indent=2, ensure_ascii=False))
    return ValidationOutcome(
        success=success,
        summary=summary,
        results=rows,
        result_path=result_path,
        docs_index=docs_index,
    )


def main(
    params: Params, *, dataset: str, manifest: Path | None = None, out: Path | None = None
) -> None:
    """`emotions validate`: the suite over the dataset's manifest; StageError when it fails."""
    params.dataset(dataset)  # an unknown name is a ConfigError naming the known ones
    manifest = manifest or Layout().manifest(dataset)
    if not manifest.is_file():
        raise StageError(f"{manifest}: no manifest (run `emotions ingest` first)")
    out = out or Layout().validation_dir(dataset)
    outcome = validate_manifest(
        pd.read_parquet(manifest),
        out,
        taxonomy=params.taxonomy_for(dataset),
        config=params.validate_,
        bounds=params.ingest,
    )
    print(outcome.summary)
    if not outcome.success:
        raise StageError(f"validation of {manifest} failed (details in {out}/result.json)")
