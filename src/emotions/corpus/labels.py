"""How a label is compared with a class name, in one place.

Both the params schema (are a taxonomy's aliases aimed at its classes?) and ingest (which class
does this folder, list entry or vote name?) must apply the same rule, or an alias that validates
would fail to match at ingest; this module has no dependencies so the schema can use it.
"""

from __future__ import annotations

import re
import unicodedata


def normalise_label(raw: object) -> str:
    """Case-, width- and separator-insensitive form of a label: "Happy_Face " → "happy face"."""
    text = unicodedata.normalize("NFKC", str(raw)).strip().casefold()
    return re.sub(r"[\s_\-]+", " ", text)
