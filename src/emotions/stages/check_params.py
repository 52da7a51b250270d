"""The `check_params` stage: params.yaml is valid before DVC touches any output.

`dvc repro` deletes a stage's outputs before it runs the stage's command, so a typo that only
the stage's own command would notice costs the outputs (a preprocessing cache, a trained model).
This stage runs first (every other stage depends on its output through `ingest`): ``emotions``
validates params.yaml on start (:func:`emotions.config.load_params`; a bad key ends the run with
one line naming it, exit 2) and, if it is valid, writes a constant file. The same bytes every
time, so a valid change of params.yaml reruns this stage and invalidates nothing after it.
"""

from __future__ import annotations

from pathlib import Path

from emotions.atomic import atomic_write_text
from emotions.config import Params
from emotions.layout import Layout

CHECKED = "params.yaml is valid\n"


def main(params: Params, *, out: Path | None = None) -> None:
    """`emotions check_params`: ``params`` arrived validated; record that, always the same."""
    path = atomic_write_text(out or Layout().params_check, CHECKED)
    print(f"check_params: {len(Params.model_fields)} sections valid -> {path}")
