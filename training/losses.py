"""Loss functions for multi-label sequence classification.

The two-way multi-label loss is from

    T. Kobayashi, "Two-way Multi-Label Loss", CVPR 2023
    (official code: https://github.com/tk1980/TwowayMultiLabelLoss, ``TwoWayLoss``),

and is the loss iLoc-lncRNA-BERT trains with (Tp=4, Tn=1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_logsumexp(
    values: torch.Tensor, mask: torch.Tensor, dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``logsumexp`` of ``values`` over the entries selected by ``mask`` along ``dim``.

    Returns ``(lse, has_any)``. Where a slice selects nothing ``has_any`` is
    False and ``lse`` is a finite placeholder (the caller must discard it);
    computing it on finite inputs keeps gradients free of NaN, which a plain
    ``logsumexp`` over an all ``-inf`` slice would not.
    """
    has_any = mask.any(dim=dim)
    neg_inf = torch.full_like(values, float("-inf"))
    masked = torch.where(mask, values, neg_inf)
    safe = torch.where(has_any.unsqueeze(dim), masked, torch.zeros_like(values))
    return torch.logsumexp(safe, dim=dim), has_any


def _two_way_term(
    logits: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    dim: int,
    tp: float,
    tn: float,
) -> torch.Tensor:
    """One direction (``dim=1``: sample-wise, ``dim=0``: label-wise) of the loss.

    softplus(Tn * LSE_neg(x / Tn) + Tp * LSE_pos(-x / Tp)), averaged over the
    slices that contain a positive. Slices with a positive but no negative
    count in the mean with value 0 (the reference's softplus(-inf)).
    """
    plogit, has_pos = _masked_logsumexp(-logits / tp, positive, dim)
    nlogit, has_neg = _masked_logsumexp(logits / tn, negative, dim)
    term = F.softplus(nlogit * tn + plogit * tp)
    term = torch.where(has_pos & has_neg, term, torch.zeros_like(term))
    count = has_pos.sum().clamp(min=1).to(term.dtype)
    # With no valid slice this is a sum of zeros: 0, still attached to the graph.
    return term.sum() / count


def two_way_multilabel_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    tp: float = 4.0,
    tn: float = 1.0,
) -> torch.Tensor:
    """Two-way multi-label loss (Kobayashi, CVPR 2023, "Two-way Multi-Label Loss").

    For logits ``x`` and binary targets ``y`` of shape (N, L), with positives
    ``y > 0`` and negatives ``y == 0`` (other values are ignored, as in the
    official ``TwoWayLoss``)::

        term(S) = softplus( Tn * log sum_{j in S, neg} exp(x_j / Tn)
                          + Tp * log sum_{i in S, pos} exp(-x_i / Tp) )

        loss = mean_{labels l with a positive} term(column l)
             + mean_{samples n with a positive} term(row n)

    i.e. a smooth max over hard (negative - positive) logit margins, taken
    label-wise across the batch and sample-wise across labels. Rows/columns
    without a positive are excluded from their mean; those with positives but
    no negatives contribute 0 to it. A mean over nothing is 0 (differentiable),
    so an all-negative batch gives a zero loss rather than NaN.

    Args:
        logits: (N, L) raw scores.
        targets: (N, L) 0/1 targets (any dtype).
        tp: temperature of the positive logits (paper: 4).
        tn: temperature of the negative logits (paper: 1).

    Returns:
        Scalar loss tensor.
    """
    if logits.ndim != 2 or logits.shape != targets.shape:
        raise ValueError(
            f"expected matching (N, L) logits and targets, got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    positive = targets > 0
    negative = targets == 0
    label_wise = _two_way_term(logits, positive, negative, dim=0, tp=tp, tn=tn)
    sample_wise = _two_way_term(logits, positive, negative, dim=1, tp=tp, tn=tn)
    return label_wise + sample_wise
