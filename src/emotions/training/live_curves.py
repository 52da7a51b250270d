"""DVCLive's logs of one run, published where DVC looks: `dvc plots show` and `dvc exp show`.

DVCLive logs into the model folder (`artifacts/models/<dataset>/<variant>/dvclive/`), which is a
cached, `persist: true` output: the logs resume with the checkpoints after a kill. That folder
lives in the DVC cache, not in git, so `dvc exp show`, `dvc metrics diff` and `dvc plots diff`
of a fresh clone (or of an experiment commit) could not read them. The `train` stage therefore
copies the small part users compare into git-tracked `cache: false` outputs:

- `plots/train/<dataset>/<variant>/**.tsv`: one curve per logged metric (`step` against the
  value), declared once under the top-level `plots:` of dvc.yaml;
- `metrics/<dataset>/<variant>/train.json`: DVCLive's summary (the last step's values), a
  `metrics:` output, so `dvc exp show` has training columns for `dvc exp run -S train.lr=...`.

DVCLive itself keeps `dvcyaml=None`: letting it rewrite our dvc.yaml from inside a stage would
change the pipeline file while DVC runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

from emotions.atomic import atomic_write_json, atomic_write_text
from emotions.layout import LIVE_CURVES, LIVE_SUMMARY


def publish_live_view(live_dir: Path, curves: Path, summary: Path) -> list[Path]:
    """Copy DVCLive's curves (`plots/metrics/**.tsv`) and summary (`metrics.json`); returns the
    written curve files. A missing log is an error: the stage declared these outputs."""
    source = live_dir / LIVE_CURVES
    summary_file = live_dir / LIVE_SUMMARY
    if not source.is_dir() or not summary_file.is_file():
        raise FileNotFoundError(
            f"no DVCLive logs under {live_dir} (expected {source} and metrics.json)"
        )
    written = []
    for tsv in sorted(source.rglob("*.tsv")):
        target = curves / tsv.relative_to(source)
        atomic_write_text(target, tsv.read_text(encoding="utf-8"))
        written.append(target)
    stale = {path for path in curves.rglob("*.tsv")} - set(written) if curves.is_dir() else set()
    for path in stale:  # a metric no longer logged (e.g. timing switched off) leaves no old curve
        path.unlink()
    atomic_write_json(json.loads(summary_file.read_text(encoding="utf-8")), summary)
    return written
