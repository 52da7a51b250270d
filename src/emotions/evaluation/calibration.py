"""Temperature scaling, fitted on the validation split only (the `calibrate` stage runs it).

Temperature scaling divides the clip logits by one scalar T before the softmax, so it never
changes which class wins, only how confident the model says it is. T is fitted on the
validation split (never test: test must stay an unbiased judge of the calibrated model) and
written to ``artifacts/calibration/<dataset>/<variant>/temperature.json``, beside, not into,
the train stage's model folder (a DVC output of its own). Everything that turns logits into
probabilities reads it: `evaluate`, :class:`emotions.serve.predictor.Predictor` (so `emotions
predict`, the service and the drift monitor's reference), and `emotions package`, which stores
it with the model in the BentoML model store.

Why the fit is guarded: on a small validation split that the model separates perfectly, NLL
keeps falling as T → 0, so an unbounded optimiser runs to its floor and the "calibrated" model
is near one-hot, worse calibrated on test than the raw one. The search is bounded
(``evaluate.calibration.bounds``), an optimum on a bound is rejected (the data did not decide),
too few validation clips are not fitted at all, and a T is kept only if it lowers validation
NLL; in every other case T = 1 and the file says why.

The file carries the SHA-256 of the checkpoint it was fitted for, so a temperature is never
applied to other weights (:func:`emotions.model_folder.read_calibration`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from emotions.config import CalibrationConfig

FITTED = "fitted"


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (nats per clip) of ``labels`` under softmax(logits / T)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 0.0
    log_p = log_softmax(logits / temperature, axis=1)
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, config: CalibrationConfig | None = None
) -> dict[str, Any]:
    """The validation fit: ``temperature`` (1.0 unless a fit is kept), ``status`` (``fitted``
    or why not), the optimum found, and validation NLL at T = 1 and at the kept T.

    The search is over log T within ``config.bounds`` (scipy's bounded Brent method: NLL is
    convex in 1/T, so one interior minimum exists whenever the data determine one).
    """
    config = config or CalibrationConfig()
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    result: dict[str, Any] = {
        "temperature": 1.0,
        "status": "",
        "optimum": None,
        "n_val": len(labels),
        "val_nll_raw": nll(logits, labels),
        "val_nll": nll(logits, labels),
        "bounds": list(config.bounds),
    }
    if len(labels) < config.min_clips:
        result["status"] = f"too few validation clips ({len(labels)} < {config.min_clips})"
        return result
    low, high = np.log(config.bounds[0]), np.log(config.bounds[1])
    found = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    optimum = float(np.exp(found.x))
    result["optimum"] = optimum
    # Within 1 % of a bound: NLL is still falling there, the split does not pin T down.
    if found.x - low < 0.01 or high - found.x < 0.01:
        result["status"] = f"optimum on the search bound ({optimum:.3g} in {config.bounds})"
        return result
    fitted_nll = float(found.fun)
    if result["val_nll_raw"] - fitted_nll < config.min_gain:
        result["status"] = "no validation NLL gain over T = 1"
        return result
    result.update(temperature=optimum, status=FITTED, val_nll=fitted_nll)
    return result
