"""The exception types of expected failures that the user can fix.

Raised by a stage's entry point (a missing input, a failed critical expectation, no usable
clip); the command line prints its message as one line on stderr and exits 2, the code the
Prefect flows read as "deterministic, do not retry". Anything else keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class StageError(RuntimeError):
    """A stage cannot go on; the message is what the user reads."""


class MissingInputError(StageError, FileNotFoundError):
    """A stage ran before the stage that makes its input (still a FileNotFoundError for
    callers that test for one)."""


def require_input(path: str | Path, made_by: str) -> Path:
    """``path`` if it exists, else :class:`MissingInputError` naming the stage that makes it."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: not found (run `{made_by}` first)")
    return path


def one_line(message: str) -> str:
    """A (possibly multi-line) message as one line: what `emotions <stage>` prints on stderr."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
