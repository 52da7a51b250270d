"""EP-CE loss: identities with CE, bounds of its terms, numerical stability, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from emotions.models.losses import EPCELoss, polarity_accuracy
from emotions.models.settings import LossSettings

# emotions6 from params.yaml, in class order: Excitation, Fear, Neutral, Relaxation, Sadness, Tension.
EMOTIONS6 = ["positive", "negative", "neutral", "positive", "negative", "negative"]
POS, NEG, NEU = [0, 3], [1, 4, 5], [2]


def _batch(n: int = 16, k: int = 6, seed: int = 0, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=dtype) * 3
    target = torch.randint(0, k, (n,), generator=g)
    return logits, target


def test_zero_weights_is_exactly_cross_entropy() -> None:
    logits, target = _batch()
    loss = EPCELoss(EMOTIONS6, LossSettings(w_pol=0.0, w_opp=0.0))
    assert torch.equal(loss(logits, target), F.cross_entropy(logits, target))


def test_polarity_term_is_ce_over_summed_class_probabilities() -> None:
    logits, target = _batch()
    terms = EPCELoss(EMOTIONS6).terms(logits, target)
    probs = logits.softmax(dim=1)
    group_probs = torch.stack([probs[:, g].sum(1) for g in (POS, NEG, NEU)], dim=1)
    group_of = torch.tensor([0, 1, 2, 0, 1, 1])[target]
    expected = -group_probs.log().gather(1, group_of[:, None]).mean()
    assert terms["polarity"] >= 0
    torch.testing.assert_close(terms["polarity"], expected)


def test_opposite_mass_definition_and_bounds() -> None:
    settings = LossSettings(neutral_opp_weight=0.25)
    logits, target = _batch(n=64)
    terms = EPCELoss(EMOTIONS6, settings).terms(logits, target)
    probs = logits.softmax(dim=1)
    per_sample = []
    for p, y in zip(probs, target.tolist(), strict=True):
        if y in POS:
            per_sample.append(p[NEG].sum())  # the neutral class is not penalised
        elif y in NEG:
            per_sample.append(p[POS].sum())
        else:
            per_sample.append(0.25 * p[POS + NEG].sum())
    torch.testing.assert_close(terms["opposite"], torch.stack(per_sample).mean())
    assert 0.0 <= float(terms["opposite"]) <= 1.0
    total = terms["ce"] + settings.w_pol * terms["polarity"] + settings.w_opp * terms["opposite"]
    torch.testing.assert_close(terms["loss"], total)


def test_a_confident_opposite_mistake_costs_more_than_a_same_polarity_one() -> None:
    loss = EPCELoss(EMOTIONS6)
    target = torch.tensor([1])  # Fear (negative)
    same = torch.full((1, 6), -5.0).index_fill(1, torch.tensor([4]), 5.0)  # says Sadness
    opposite = torch.full((1, 6), -5.0).index_fill(1, torch.tensor([0]), 5.0)  # says Excitation
    assert torch.isclose(F.cross_entropy(same, target), F.cross_entropy(opposite, target))
    assert loss(opposite, target) > loss(same, target) + 1.0


def test_taxonomy_without_neutral_skips_that_polarity() -> None:
    polarity_of = ["positive", "negative", "negative", "positive"]
    logits, target = _batch(k=4)
    terms = EPCELoss(polarity_of).terms(logits, target)
    probs = logits.softmax(dim=1)
    p_true = torch.where(target % 3 == 0, probs[:, [0, 3]].sum(1), probs[:, [1, 2]].sum(1))
    torch.testing.assert_close(terms["polarity"], -p_true.log().mean())


def test_stable_for_huge_logits() -> None:
    logits = torch.tensor([[1e4, -1e4, 0.0, 3e3, -2e3, 1e3]])
    for y in range(6):
        value = EPCELoss(EMOTIONS6)(logits, torch.tensor([y]))
        assert torch.isfinite(value)


def test_gradcheck_float64() -> None:
    logits, target = _batch(n=5, dtype=torch.float64, seed=3)
    loss = EPCELoss(EMOTIONS6, LossSettings(w_pol=0.7, w_opp=1.3, neutral_opp_weight=0.4))
    assert torch.autograd.gradcheck(
        lambda x: loss(x, target), (logits.requires_grad_(),), eps=1e-6, atol=1e-6
    )


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown polarity"):
        EPCELoss(["positive", "happy"])
    with pytest.raises(ValueError, match=r"logits must be \(B, 6\)"):
        EPCELoss(EMOTIONS6)(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValidationError):
        LossSettings(w_pol=0.5, w_polarity=1.0)
    with pytest.raises(ValidationError):
        LossSettings(w_opp=-1.0)


def test_polarity_accuracy() -> None:
    logits = torch.eye(6)[[4, 3, 2, 1]]  # predicts Sadness, Relaxation, Neutral, Fear
    target = torch.tensor([1, 0, 1, 0])  # Fear, Excitation, Fear, Excitation
    # Sadness~Fear ✓, Relaxation~Excitation ✓, Neutral vs Fear ✗, Fear vs Excitation ✗
    assert polarity_accuracy(logits, target, EMOTIONS6) == pytest.approx(0.5)


# --- the authors' form (loss.form: reweight) and the summed objective -----------------------


def test_reweight_by_hand() -> None:
    from emotions.models.losses import ReweightedCELoss, build_criterion

    settings = LossSettings(
        form="reweight", **{"lambda": {"positive": 0.2, "neutral": 0.7, "negative": 0.5}}
    )
    loss = ReweightedCELoss(EMOTIONS6, settings)
    assert isinstance(build_criterion(EMOTIONS6, settings), ReweightedCELoss)
    assert isinstance(build_criterion(EMOTIONS6, LossSettings()), EPCELoss)
    # Four clips (emotions6 order: Excitation, Fear, Neutral, Relaxation, Sadness, Tension):
    # Fear→Excitation (negative truth, positive guess: ×1.5), Relaxation→Relaxation (×1),
    # Neutral→Tension (neutral truth, negative guess: ×1.7), Fear→Sadness (same polarity: ×1).
    logits = torch.tensor(
        [
            [2.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 3.0, 0.0, 0.0],
            [0.0, 0.0, 0.5, 0.0, 0.0, 1.0],
            [0.0, 0.5, 0.0, 0.0, 1.0, 0.0],
        ]
    )
    target = torch.tensor([1, 3, 2, 1])
    # CE_i = logsumexp(logits_i) − logits_i[y_i], written out.
    ce = [
        math.log(5 + math.e**2) - 0.0,
        math.log(5 + math.e**3) - 3.0,
        math.log(math.e + 4 + math.e**0.5) - 0.5,
        math.log(math.e**0.5 + math.e + 4) - 0.5,
    ]
    expected = (1.5 * ce[0] + ce[1] + 1.7 * ce[2] + ce[3]) / 4
    torch.testing.assert_close(loss.weights(logits, target), torch.tensor([1.5, 1.0, 1.7, 1.0]))
    assert float(loss(logits, target)) == pytest.approx(expected, rel=1e-6)


def test_reweight_weight_is_detached_and_zero_lambda_is_ce() -> None:
    from emotions.models.losses import ReweightedCELoss

    logits, target = _batch(n=32, seed=4)
    zero = LossSettings(form="reweight", **{"lambda": {"positive": 0, "neutral": 0, "negative": 0}})
    assert torch.equal(
        ReweightedCELoss(EMOTIONS6, zero)(logits, target), F.cross_entropy(logits, target)
    )
    # The gradient is that of CE scaled per sample by the constant weight.
    loss = ReweightedCELoss(EMOTIONS6, LossSettings(form="reweight"))
    x = logits.clone().requires_grad_()
    loss(x, target).backward()
    weights = loss.weights(logits, target)
    assert (weights > 1).any() and (weights == 1).any()
    y = logits.clone().requires_grad_()
    (F.cross_entropy(y, target, reduction="none") * weights).mean().backward()
    torch.testing.assert_close(x.grad, y.grad)


def test_objective_sums_fused_window_and_auxiliary_terms() -> None:
    from emotions.models.objective import objective

    g = torch.Generator().manual_seed(5)
    out = {
        "logits": torch.randn(4, 6, generator=g),
        "window_logits": torch.randn(4, 3, 6, generator=g),
        "audio_logits": torch.randn(4, 6, generator=g, requires_grad=True),
        "video_logits": torch.randn(4, 6, generator=g),
    }
    target = torch.tensor([0, 4, 5, 2])
    has_audio = torch.tensor([True, False, True, False])
    settings = LossSettings(window_weight=0.25, aux_audio=0.4, aux_video=0.6)
    criterion = EPCELoss(EMOTIONS6, settings)
    terms = objective(out, target, has_audio, criterion, settings)
    audio_ce = F.cross_entropy(out["audio_logits"][[0, 2]], target[[0, 2]])
    expected = (
        criterion(out["logits"], target)
        + 0.25 * criterion(out["window_logits"].flatten(0, 1), target.repeat_interleave(3))
        + 0.4 * audio_ce
        + 0.6 * F.cross_entropy(out["video_logits"], target)
    )
    torch.testing.assert_close(terms["aux_audio"], audio_ce)
    torch.testing.assert_close(terms["loss"], expected)
    # Clips without audio get no audio loss: no gradient reaches their audio logits.
    terms["loss"].backward()
    grad = out["audio_logits"].grad
    assert grad[[1, 3]].abs().max() == 0 and grad[[0, 2]].abs().max() > 0
    # No clip with audio: the audio term is exactly 0, not NaN.
    none = objective(out, target, torch.zeros(4, dtype=torch.bool), criterion, settings)
    assert float(none["aux_audio"].detach()) == 0.0


def test_objective_without_extra_terms_is_the_fused_loss() -> None:
    from emotions.models.objective import objective

    logits, target = _batch(n=8)
    settings = LossSettings(window_weight=0.0, aux_audio=0.0, aux_video=0.0)
    criterion = EPCELoss(EMOTIONS6, settings)
    out = {"logits": logits, "window_logits": logits[:, None], "audio_logits": logits}
    terms = objective(out, target, torch.ones(8, dtype=torch.bool), criterion, settings)
    assert torch.equal(terms["loss"], criterion(logits, target))
    assert set(terms) == {"loss", "fused"}
