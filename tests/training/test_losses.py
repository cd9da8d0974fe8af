"""Tests for training.losses.two_way_multilabel_loss against a loop-based
transcription of the official TwoWayLoss (github.com/tk1980/TwowayMultiLabelLoss)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import two_way_multilabel_loss


def _softplus(z: float) -> float:
    if z == -math.inf:
        return 0.0
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def _slice_term(xs: list[float], ys: list[float], tp: float, tn: float) -> float | None:
    """softplus(Tn*log sum_neg exp(x/Tn) + Tp*log sum_pos exp(-x/Tp));
    None when the slice has no positive (excluded from the mean)."""
    pos = [x for x, y in zip(xs, ys) if y > 0]
    neg = [x for x, y in zip(xs, ys) if y == 0]
    if not pos:
        return None
    if not neg:
        return 0.0  # reference: logsumexp over nothing = -inf -> softplus(-inf) = 0
    plogit = tp * math.log(sum(math.exp(-x / tp) for x in pos))
    nlogit = tn * math.log(sum(math.exp(x / tn) for x in neg))
    return _softplus(nlogit + plogit)


def _mean_or_zero(values: list[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else 0.0


def slow_two_way_loss(x: torch.Tensor, y: torch.Tensor, tp: float = 4.0, tn: float = 1.0) -> float:
    xl, yl = x.tolist(), y.tolist()
    n, num_labels = len(xl), len(xl[0])
    samples = [_slice_term(xl[i], yl[i], tp, tn) for i in range(n)]
    classes = [
        _slice_term([xl[i][j] for i in range(n)], [yl[i][j] for i in range(n)], tp, tn)
        for j in range(num_labels)
    ]
    return _mean_or_zero(classes) + _mean_or_zero(samples)


def official_two_way_loss(x: torch.Tensor, y: torch.Tensor, tp: float = 4.0, tn: float = 1.0) -> torch.Tensor:
    """The official TwoWayLoss.forward, verbatim (NaN on an empty mean)."""
    ninf = float("-inf")
    class_mask = (y > 0).any(dim=0)
    sample_mask = (y > 0).any(dim=1)
    pmask = y.masked_fill(y <= 0, ninf).masked_fill(y > 0, 0.0)
    plogit_class = torch.logsumexp(-x / tp + pmask, dim=0).mul(tp)[class_mask]
    plogit_sample = torch.logsumexp(-x / tp + pmask, dim=1).mul(tp)[sample_mask]
    nmask = y.masked_fill(y != 0, ninf).masked_fill(y == 0, 0.0)
    nlogit_class = torch.logsumexp(x / tn + nmask, dim=0).mul(tn)[class_mask]
    nlogit_sample = torch.logsumexp(x / tn + nmask, dim=1).mul(tn)[sample_mask]
    return (F.softplus(nlogit_class + plogit_class).mean()
            + F.softplus(nlogit_sample + plogit_sample).mean())


def _random_case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(3, 7, (1,), generator=g))
    num_labels = int(torch.randint(2, 6, (1,), generator=g))
    x = torch.randn(n, num_labels, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(n, num_labels, generator=g) < 0.35).to(torch.float64)
    y[0, :] = 0  # a sample without positives
    y[:, -1] = 0  # a label without positives
    y[1, 0] = 1  # ... but at least one positive somewhere
    return x, y


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("tp,tn", [(4.0, 1.0), (2.0, 0.5), (1.0, 1.0)])
def test_matches_slow_reference(seed: int, tp: float, tn: float):
    x, y = _random_case(seed)
    loss = two_way_multilabel_loss(x, y, tp=tp, tn=tn)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(slow_two_way_loss(x, y, tp, tn), rel=1e-9, abs=1e-12)
    assert loss.item() == pytest.approx(official_two_way_loss(x, y, tp, tn).item(), rel=1e-9)


def test_default_temperatures_are_tp4_tn1():
    x, y = _random_case(123)
    assert two_way_multilabel_loss(x, y).item() == pytest.approx(slow_two_way_loss(x, y, 4.0, 1.0))
    assert two_way_multilabel_loss(x, y).item() != pytest.approx(slow_two_way_loss(x, y, 1.0, 4.0))


def test_hand_computed_single_sample():
    # x = [2, 0], y = [1, 0], Tp = Tn = 1:
    # sample term: softplus(log e^0 + log e^-2) = log(1 + e^-2)
    # label 0 has no negative -> 0, label 1 has no positive -> excluded -> class mean 0
    x = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    loss = two_way_multilabel_loss(x, y, tp=1.0, tn=1.0)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-2.0)))


def test_all_negative_batch_is_zero_and_differentiable():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(4, 3, dtype=torch.float64)
    loss = two_way_multilabel_loss(x, y)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert (x.grad == 0).all()


def test_all_positive_sample_and_label_have_finite_gradients():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1, 1, 1],   # sample with no negative
                      [1, 0, 0],
                      [1, 0, 1],
                      [1, 0, 0]], dtype=torch.float64)  # label 0 has no negative
    loss = two_way_multilabel_loss(x, y)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(slow_two_way_loss(x.detach(), y))
    loss.backward()
    assert torch.isfinite(x.grad).all()
    # the all-positive row contributes nothing sample-wise, but still gets
    # label-wise gradient through labels 1 and 2.
    assert x.grad[0, 1] != 0


def test_all_positive_batch_is_zero():
    x = torch.randn(3, 2, requires_grad=True)
    loss = two_way_multilabel_loss(x, torch.ones(3, 2))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_float32_and_integer_targets():
    x, y = _random_case(7)
    loss32 = two_way_multilabel_loss(x.float(), y.long())
    assert loss32.dtype == torch.float32
    assert loss32.item() == pytest.approx(slow_two_way_loss(x, y), rel=1e-5)


def test_decreases_when_logits_move_toward_targets():
    x, y = _random_case(3)
    direction = 2 * y - 1  # raise positives, lower negatives
    before = two_way_multilabel_loss(x, y).item()
    after = two_way_multilabel_loss(x + 1.5 * direction, y).item()
    assert after < before

    logits = x.clone().requires_grad_(True)
    opt = torch.optim.SGD([logits], lr=0.5)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = two_way_multilabel_loss(logits, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        two_way_multilabel_loss(torch.zeros(2, 3), torch.zeros(3, 2))
