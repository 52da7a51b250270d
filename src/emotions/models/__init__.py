"""AV-CANet as tensor code: branches, Local-Global Fusion, EP-CE loss and their settings.

Models take tensors and return tensors; they never import the data, training, serving or
config modules (docs/DESIGN.md), so the same code serves training, evaluation and the service.
This package file imports nothing on purpose: `emotions.config` embeds `models.settings`, and
re-exporting the torch modules here would make every CLI start (and every spawned worker that
re-imports it) pay torch's import time.
"""
