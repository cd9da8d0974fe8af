"""Hand-checked tests for training.metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.metrics import binary_metrics, format_metrics, multilabel_metrics

BINARY_KEYS = {
    "accuracy", "f1", "mcc", "precision", "recall", "auroc",
    "specificity", "tpr", "fpr", "n", "n_positive", "threshold",
}


def test_binary_balanced_confusion():
    # y = [1, 1, 0, 0], p = [0.9, 0.4, 0.6, 0.1] -> pred = [1, 0, 1, 0]
    # TP=1 FN=1 FP=1 TN=1
    # accuracy = 2/4 = .5; precision = 1/2; recall = tpr = 1/2; f1 = .5
    # specificity = TN/(TN+FP) = .5; fpr = FP/(FP+TN) = .5
    # mcc = (1*1 - 1*1) / sqrt(2*2*2*2) = 0
    # AUROC: pairs (pos, neg): (.9,.6) ok (.9,.1) ok (.4,.6) bad (.4,.1) ok -> 3/4
    m = binary_metrics([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1])
    assert set(m) == BINARY_KEYS
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["tpr"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)
    assert m["specificity"] == pytest.approx(0.5)
    assert m["fpr"] == pytest.approx(0.5)
    assert m["mcc"] == pytest.approx(0.0)
    assert m["auroc"] == pytest.approx(0.75)
    assert m["n"] == 4 and m["n_positive"] == 2
    assert m["threshold"] == 0.5


def test_binary_asymmetric_confusion():
    # y = [1, 1, 1, 0, 0], p = [.8, .7, .2, .6, .1] -> pred = [1, 1, 0, 1, 0]
    # TP=2 FN=1 FP=1 TN=1
    # accuracy = 3/5; precision = 2/3; recall = 2/3; f1 = 2/3
    # specificity = 1/2; fpr = 1/2
    # mcc = (2*1 - 1*1) / sqrt((2+1)(2+1)(1+1)(1+1)) = 1/6
    # AUROC: .8 beats {.6,.1} (2), .7 beats both (2), .2 beats .1 only (1) -> 5/6
    m = binary_metrics([1, 1, 1, 0, 0], [0.8, 0.7, 0.2, 0.6, 0.1])
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(0.5)
    assert m["fpr"] == pytest.approx(0.5)
    assert m["mcc"] == pytest.approx(1 / 6)
    assert m["auroc"] == pytest.approx(5 / 6)
    assert m["n"] == 5 and m["n_positive"] == 3


def test_binary_threshold_is_inclusive():
    # threshold .7: p >= .7 -> pred = [1, 1, 0, 0, 0]; TP=2 FN=1 FP=0 TN=2
    # accuracy = 4/5; precision = 1; recall = 2/3; specificity = 1; fpr = 0
    # AUROC does not depend on the threshold: 5/6
    m = binary_metrics([1, 1, 1, 0, 0], [0.8, 0.7, 0.2, 0.6, 0.1], threshold=0.7)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1.0)
    assert m["fpr"] == pytest.approx(0.0)
    assert m["auroc"] == pytest.approx(5 / 6)
    assert m["threshold"] == 0.7


def test_binary_perfect_classifier():
    m = binary_metrics(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.2, 0.8]))
    for key in ("accuracy", "f1", "mcc", "precision", "recall", "auroc", "specificity", "tpr"):
        assert m[key] == pytest.approx(1.0), key
    assert m["fpr"] == pytest.approx(0.0)


def test_binary_single_class_auroc_is_none():
    # y = [0, 0, 0], p = [.2, .7, .1] -> pred = [0, 1, 0]; TN=2 FP=1 TP=FN=0
    # precision = recall = 0 (zero division -> 0); specificity = 2/3; fpr = 1/3
    m = binary_metrics([0, 0, 0], [0.2, 0.7, 0.1])
    assert m["auroc"] is None
    assert m["precision"] == 0.0
    assert m["recall"] == 0.0 and m["tpr"] == 0.0
    assert m["f1"] == 0.0
    assert m["mcc"] == 0.0
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(1 / 3)
    assert m["n_positive"] == 0
    assert json.loads(json.dumps(m))["auroc"] is None


def test_binary_values_are_plain_python():
    m = binary_metrics(np.array([1, 0, 1]), np.array([0.6, 0.3, 0.2], dtype=np.float32))
    json.dumps(m)
    for key, value in m.items():
        assert type(value) in (int, float, type(None)), key
    assert type(m["n"]) is int and type(m["n_positive"]) is int


# Labels a, b, c; c has no positive.
#            a  b  c          a    b    c
Y_ML = [[1, 0, 0],  # row0  .9  .75  .1   pred 1 1 0 -> b wrong
        [0, 1, 0],  # row1  .3  .8   .6   pred 0 1 1 -> c wrong
        [1, 1, 0],  # row2  .4  .7   .2   pred 0 1 0 -> a wrong
        [0, 0, 0]]  # row3  .2  .4   .3   pred 0 0 0 -> exact
S_ML = [[0.9, 0.75, 0.1],
        [0.3, 0.8, 0.6],
        [0.4, 0.7, 0.2],
        [0.2, 0.4, 0.3]]


def test_multilabel_hand_checked():
    m = multilabel_metrics(Y_ML, S_ML, ["a", "b", "c"])
    # 3 wrong decisions out of 12 -> hamming loss 1/4; only row3 exact -> 1/4
    assert m["hamming_loss"] == pytest.approx(0.25)
    assert m["subset_accuracy"] == pytest.approx(0.25)
    a, b, c = m["per_label"]["a"], m["per_label"]["b"], m["per_label"]["c"]
    # a: pos {.9,.4} vs neg {.3,.2}: all 4 pairs right -> 1.0
    #    pred [1,0,0,0] vs [1,0,1,0]: acc 3/4; TP=1 FP=0 FN=1 -> f1 = 2/(2+0+1) = 2/3
    assert a == {"auroc": pytest.approx(1.0), "n_positive": 2,
                 "accuracy": pytest.approx(0.75), "f1": pytest.approx(2 / 3)}
    # b: pos {.8,.7} vs neg {.75,.4}: (.7,.75) wrong, 3 right -> 3/4
    #    pred [1,1,1,0] vs [0,1,1,0]: acc 3/4; TP=2 FP=1 FN=0 -> f1 = 4/5
    assert b == {"auroc": pytest.approx(0.75), "n_positive": 2,
                 "accuracy": pytest.approx(0.75), "f1": pytest.approx(0.8)}
    # c: no positives -> auroc None; pred [0,1,0,0]: acc 3/4; f1 0
    assert c["auroc"] is None
    assert c["n_positive"] == 0
    assert c["accuracy"] == pytest.approx(0.75)
    assert c["f1"] == 0.0
    # macro over defined AUROCs only (c excluded): (1 + .75) / 2
    assert m["macro_auroc"] == pytest.approx(0.875)
    # micro: positives {.9,.8,.7,.4}, negatives {.75,.1,.3,.6,.2,.2,.4,.3}
    # .9 -> 8, .8 -> 8, .7 -> 7 (loses to .75), .4 -> 5 + tie .5 = 5.5
    # (8 + 8 + 7 + 5.5) / 32 = 28.5 / 32
    assert m["micro_auroc"] == pytest.approx(28.5 / 32)
    assert m["labels_without_positives"] == ["c"]
    assert m["labels_without_negatives"] == []
    assert m["n"] == 4
    assert m["threshold"] == 0.5
    json.dumps(m)


def test_multilabel_label_without_negatives_and_no_defined_auroc():
    # x is always positive, y never: no per-label AUROC defined.
    y = np.array([[1, 0], [1, 0], [1, 0]])
    s = np.array([[0.9, 0.1], [0.6, 0.2], [0.3, 0.7]])
    m = multilabel_metrics(y, s, ["x", "y"])
    assert m["per_label"]["x"]["auroc"] is None
    assert m["per_label"]["y"]["auroc"] is None
    assert m["macro_auroc"] is None
    assert m["labels_without_positives"] == ["y"]
    assert m["labels_without_negatives"] == ["x"]
    # flattened: positives {.9,.6,.3} vs negatives {.1,.2,.7}
    # .9 -> 3, .6 -> 2, .3 -> 2 -> 7/9
    assert m["micro_auroc"] == pytest.approx(7 / 9)
    # pred [[1,0],[1,0],[0,1]] -> row2 has 2 wrong: hamming 2/6, subset 2/3
    assert m["hamming_loss"] == pytest.approx(1 / 3)
    assert m["subset_accuracy"] == pytest.approx(2 / 3)
    json.dumps(m)


def test_multilabel_micro_auroc_undefined():
    m = multilabel_metrics([[0, 0], [0, 0]], [[0.1, 0.2], [0.3, 0.4]], ["a", "b"])
    assert m["micro_auroc"] is None and m["macro_auroc"] is None
    assert m["labels_without_positives"] == ["a", "b"]
    assert json.loads(json.dumps(m))["micro_auroc"] is None


def test_multilabel_shape_checks():
    with pytest.raises(ValueError):
        multilabel_metrics([[0, 1]], [[0.1, 0.2]], ["only_one"])
    with pytest.raises(ValueError):
        multilabel_metrics([[0, 1]], [[0.1, 0.2, 0.3]], ["a", "b"])


def test_format_metrics():
    text = format_metrics(binary_metrics([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1]))
    assert "accuracy=0.5000" in text and "auroc=0.7500" in text
    single = format_metrics(binary_metrics([0, 0], [0.1, 0.2]))
    assert "auroc=n/a" in single
    ml = format_metrics(multilabel_metrics(Y_ML, S_ML, ["a", "b", "c"]))
    assert "macro_auroc=0.8750" in ml
    assert "labels_without_positives: c" in ml
    assert len(ml.splitlines()) > 3
