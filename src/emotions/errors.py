"""The one exception type for an expected failure that the user can fix.

Raised by a stage's entry point (a missing input, a failed critical expectation, no usable
clip); the command line prints its message as one line on stderr and exits 2, the code the
Prefect flows read as "deterministic, do not retry". Anything else keeps its traceback.
"""

from __future__ import annotations


class StageError(RuntimeError):
    """A stage cannot go on; the message is what the user reads."""
