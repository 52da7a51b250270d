"""EP-CE: cross-entropy with an emotion-polarity term and an opposite-polarity penalty.

Confusing Excitation with Relaxation is a smaller error than confusing Excitation with Sadness;
plain CE treats both alike. EP-CE adds, per sample with true class y of polarity P(y):

    loss = CE(logits, y)
         + w_pol · −log p(P(y))              polarity CE, p(P) = Σ softmax over P's classes
         + w_opp · Σ_k W[P(y), P(k)] · p(k)  probability mass on the opposite polarity

with W[positive, negative] = W[negative, positive] = 1 (a neutral class is never penalised for
a positive or negative truth), W[neutral, positive] = W[neutral, negative] = neutral_opp_weight
(for a neutral truth, any committed polarity is partly wrong), and 0 elsewhere. Each term is
averaged over the batch. The penalty lies in [0, 1]; polarity CE ≥ 0. A polarity without
classes in the taxonomy is left out of the polarity CE. With w_pol = w_opp = 0 the loss is
exactly ``F.cross_entropy``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emotions.models.settings import LossSettings

POLARITIES = ("positive", "negative", "neutral")


def _polarity_ids(polarity_of: Sequence[str]) -> Tensor:
    unknown = sorted({p for p in polarity_of if p not in POLARITIES})
    if unknown:
        raise ValueError(f"unknown polarity {unknown}; expected one of {', '.join(POLARITIES)}")
    if len(polarity_of) < 2:
        raise ValueError(f"need at least two classes, got {len(polarity_of)}")
    return torch.tensor([POLARITIES.index(p) for p in polarity_of], dtype=torch.long)


class EPCELoss(nn.Module):
    """Emotion-polarity cross-entropy over K classes whose polarities are ``polarity_of``."""

    def __init__(self, polarity_of: Sequence[str], settings: LossSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or LossSettings()
        class_polarity = _polarity_ids(polarity_of)
        self.num_classes = len(polarity_of)
        # Polarities that have classes, in POLARITIES order; the polarity CE runs over these.
        used = sorted(set(class_polarity.tolist()))
        groups = torch.zeros(len(used), self.num_classes, dtype=torch.bool)
        for row, polarity in enumerate(used):
            groups[row] = class_polarity == polarity
        index_of = torch.full((len(POLARITIES),), -1, dtype=torch.long)
        index_of[torch.tensor(used)] = torch.arange(len(used))
        # Penalty weight of predicting class k when the truth is class y: W[P(y), P(k)].
        w = torch.zeros(len(POLARITIES), len(POLARITIES))
        pos, neg, neu = (POLARITIES.index(p) for p in ("positive", "negative", "neutral"))
        w[pos, neg] = w[neg, pos] = 1.0
        w[neu, pos] = w[neu, neg] = self.settings.neutral_opp_weight
        penalty = w[class_polarity][:, class_polarity]  # K × K
        self.register_buffer("groups", groups, persistent=False)
        self.register_buffer("target_group", index_of[class_polarity], persistent=False)
        self.register_buffer("penalty", penalty, persistent=False)

    def terms(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """The three terms (batch means) and their weighted sum under "loss", for logging."""
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must be (B, {self.num_classes}), got {tuple(logits.shape)}")
        ce = F.cross_entropy(logits, target)
        polarity = self.polarity_ce(logits, target)
        opposite = self.opposite_mass(logits, target)
        loss = ce
        # Zero-weight terms are skipped, not multiplied by 0, so CE is reproduced bit for bit.
        if self.settings.w_pol:
            loss = loss + self.settings.w_pol * polarity
        if self.settings.w_opp:
            loss = loss + self.settings.w_opp * opposite
        return {"loss": loss, "ce": ce, "polarity": polarity, "opposite": opposite}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.terms(logits, target)["loss"]

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        """The loss of each sample (B,), whose mean is ``forward``'s value: for a masked mean
        (the audio head's term skips clips without audio)."""
        loss = F.cross_entropy(logits, target, reduction="none")
        if self.settings.w_pol:
            masked = logits.unsqueeze(1).masked_fill(~self.groups, float("-inf"))
            group_log_prob = torch.logsumexp(masked, dim=2) - torch.logsumexp(
                logits, dim=1, keepdim=True
            )
            polarity = -group_log_prob.gather(1, self.target_group[target].unsqueeze(1))
            loss = loss + self.settings.w_pol * polarity.squeeze(1)
        if self.settings.w_opp:
            probs = torch.softmax(logits, dim=1)
            opposite = (probs * self.penalty[target].to(probs.dtype)).sum(dim=1)
            loss = loss + self.settings.w_opp * opposite
        return loss

    def polarity_ce(self, logits: Tensor, target: Tensor) -> Tensor:
        """−log of the summed probability of the true polarity's classes (batch mean).

        log p(P) = logsumexp(logits of P's classes) − logsumexp(all logits): stable for large
        logits, unlike summing softmax probabilities and taking the log.
        """
        masked = logits.unsqueeze(1).masked_fill(~self.groups, float("-inf"))  # B G K
        group_log_prob = torch.logsumexp(masked, dim=2) - torch.logsumexp(
            logits, dim=1, keepdim=True
        )
        return F.nll_loss(group_log_prob, self.target_group[target])

    def opposite_mass(self, logits: Tensor, target: Tensor) -> Tensor:
        """Probability mass on classes of the opposite polarity to the truth (batch mean)."""
        probs = torch.softmax(logits, dim=1)
        return (probs * self.penalty[target].to(probs.dtype)).sum(dim=1).mean()


def polarity_accuracy(logits: Tensor, target: Tensor, polarity_of: Sequence[str]) -> float:
    """Share of samples whose predicted class has the polarity of the true class."""
    class_polarity = _polarity_ids(polarity_of).to(logits.device)
    if target.numel() == 0:
        raise ValueError("polarity_accuracy of an empty batch")
    predicted = class_polarity[logits.argmax(dim=1)]
    return float((predicted == class_polarity[target]).float().mean())


class ReweightedCELoss(nn.Module):
    """EP-CE as the authors compute it ("PCCE"): cross-entropy reweighted on polarity mistakes.

    Per sample with true class y and predicted class ŷ = argmax(logits):

        loss_i = CE_i · (1 + lambda[P(y)] · [P(ŷ) ≠ P(y)])

    averaged over the batch. The weight comes from the argmax, so it is a constant for the
    gradient (detached): the loss pushes harder on opposite-polarity mistakes but never
    through the weight itself. With every lambda 0 it is exactly ``F.cross_entropy``.
    """

    def __init__(self, polarity_of: Sequence[str], settings: LossSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or LossSettings(form="reweight")
        class_polarity = _polarity_ids(polarity_of)
        self.num_classes = len(polarity_of)
        lam = self.settings.lambda_
        by_polarity = torch.tensor([getattr(lam, p) for p in POLARITIES], dtype=torch.float32)
        self.register_buffer("class_polarity", class_polarity, persistent=False)
        self.register_buffer("class_lambda", by_polarity[class_polarity], persistent=False)

    def weights(self, logits: Tensor, target: Tensor) -> Tensor:
        """The detached per-sample weights 1 + lambda[P(y)] · [P(ŷ) ≠ P(y)]."""
        with torch.no_grad():
            wrong = self.class_polarity[logits.argmax(dim=1)] != self.class_polarity[target]
            lam = self.class_lambda[target].to(logits.dtype)
            return 1.0 + lam * wrong.to(logits.dtype)

    def terms(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must be (B, {self.num_classes}), got {tuple(logits.shape)}")
        per_sample = F.cross_entropy(logits, target, reduction="none")
        weights = self.weights(logits, target)
        return {"loss": (per_sample * weights).mean(), "ce": per_sample.mean()}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.terms(logits, target)["loss"]

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        """The reweighted CE of each sample (B,), whose mean is ``forward``'s value."""
        ce = F.cross_entropy(logits, target, reduction="none")
        return ce * self.weights(logits, target)


def build_criterion(polarity_of: Sequence[str], settings: LossSettings) -> nn.Module:
    """The fused-logits criterion ``settings.form`` names (soft: EPCELoss, reweight: PCCE)."""
    if settings.form == "reweight":
        return ReweightedCELoss(polarity_of, settings)
    return EPCELoss(polarity_of, settings)
