"""Drift monitoring: the prediction log against the served run's validation clips (Evidently).

`reference` builds both tables with one code path; `drift` runs the Evidently report.
"""
