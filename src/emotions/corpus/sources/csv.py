"""The ``csv`` layout: ``root/manifest.csv`` lists the clips.

Columns ``path,label`` and optionally ``platform``; paths are relative to the root (an absolute
path is accepted only when it lies under the root: the ingest stage checks every path). This is
the escape hatch for any tree the other layouts do not describe.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from emotions.corpus.sources import Candidate, Record, Reject, Source

MANIFEST = "manifest.csv"


class CsvSource(Source):
    name = "csv"

    def scan(self, root: Path) -> Iterator[Record]:
        manifest = root / MANIFEST
        if not manifest.is_file():
            yield Reject(
                MANIFEST, f"missing file (the csv layout reads root/{MANIFEST}: path,label)"
            )
            return
        try:
            frame = pd.read_csv(manifest, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            yield Reject(MANIFEST, f"unreadable: {error}")
            return
        frame.columns = [str(c).strip().lower() for c in frame.columns]
        missing = [c for c in ("path", "label") if c not in frame.columns]
        if missing:
            yield Reject(MANIFEST, f"unreadable: {MANIFEST} lacks column(s) {', '.join(missing)}")
            return
        has_platform = "platform" in frame.columns
        for row in frame.itertuples(index=False):
            path = str(row.path).strip()
            if not path:
                continue
            platform = str(row.platform).strip() if has_platform else ""
            yield Candidate(path, label=str(row.label).strip(), platform=platform or None)
