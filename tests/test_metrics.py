"""ddp.metrics: confusion-matrix based scores against hand computations and scikit-learn,
streaming accumulators, merging (the cross-rank reduction) and MeanMetric."""
import math
import warnings

import numpy as np
import pytest

import ddp
from ddp import metrics as M

# A small case computed by hand. targets / preds over 3 classes:
#   targets: 0 0 0 1 1 2 2 2 2
#   preds:   0 1 0 1 2 2 2 0 1
# confusion (rows = true): [[2,1,0],[0,1,1],[1,1,2]]
T = [0, 0, 0, 1, 1, 2, 2, 2, 2]
P = [0, 1, 0, 1, 2, 2, 2, 0, 1]
CM = np.array([[2, 1, 0], [0, 1, 1], [1, 1, 2]])
# tp = [2,1,2]; predicted = [3,3,3]; support = [3,2,4]
PREC = np.array([2 / 3, 1 / 3, 2 / 3])
REC = np.array([2 / 3, 1 / 2, 2 / 4])
F1 = np.array([2 * 2 / (3 + 3), 2 * 1 / (3 + 2), 2 * 2 / (3 + 4)])


def test_hand_computed_case():
    assert np.array_equal(M.confusion_matrix(P, T, 3), CM)
    assert M.confusion_matrix(P, T).dtype == np.int64
    np.testing.assert_allclose(M.precision(P, T, average=None), PREC)
    np.testing.assert_allclose(M.recall(P, T, average=None), REC)
    np.testing.assert_allclose(M.f1_score(P, T, average=None), F1)
    assert M.accuracy(P, T) == pytest.approx(5 / 9)
    assert M.precision(P, T) == pytest.approx(PREC.mean())
    assert M.recall(P, T, average="weighted") == pytest.approx((REC * [3, 2, 4]).sum() / 9)
    assert M.f1_score(P, T, average="weighted") == pytest.approx((F1 * [3, 2, 4]).sum() / 9)
    for fn in (M.precision, M.recall, M.f1_score):
        assert fn(P, T, average="micro") == pytest.approx(5 / 9)
    assert M.accuracy(P, T, average="macro") == pytest.approx(REC.mean())
    assert M.accuracy(P, T, average=None) == pytest.approx(REC)
    assert M.precision(P, T, average="binary", pos_label=1) == pytest.approx(1 / 3)
    assert M.recall(P, T, average="binary", pos_label=2) == pytest.approx(0.5)


def test_binary_by_hand():
    t = [1, 1, 1, 0, 0, 0, 0]
    p = [1, 0, 1, 1, 0, 0, 0]
    # tp=2 fp=1 fn=1 tn=3
    assert np.array_equal(M.confusion_matrix(p, t, 2), [[3, 1], [1, 2]])
    assert M.precision(p, t, num_classes=2, average="binary") == pytest.approx(2 / 3)
    assert M.recall(p, t, num_classes=2, average="binary") == pytest.approx(2 / 3)
    assert M.f1_score(p, t, num_classes=2, average="binary") == pytest.approx(2 / 3)
    assert M.precision(p, t, num_classes=2, average="binary", pos_label=0) == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="pos_label"):
        M.precision(p, t, num_classes=2, average="binary", pos_label=2)


def test_score_from_counts_is_the_shared_formula():
    np.testing.assert_allclose(M.score_from_counts(CM, "precision", None), PREC)
    np.testing.assert_allclose(M.score_from_counts(CM, "recall", None), REC)
    np.testing.assert_allclose(M.score_from_counts(CM, "f1", None), F1)
    assert M.score_from_counts(CM, "accuracy", "micro") == pytest.approx(5 / 9)
    with pytest.raises(ValueError, match="metric"):
        M.score_from_counts(CM, "auc")
    with pytest.raises(ValueError, match="average"):
        M.score_from_counts(CM, "f1", "samples")


def test_zero_division_without_warnings():
    # class 2 never predicted and never true; class 1 true but never predicted
    t = [0, 0, 1]
    p = [0, 0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prec = M.precision(p, t, num_classes=3, average=None)
        np.testing.assert_allclose(prec, [2 / 3, 0.0, 0.0])
        np.testing.assert_allclose(M.precision(p, t, 3, average=None, zero_division=1.0),
                                   [2 / 3, 1.0, 1.0])
        nan = M.precision(p, t, 3, average=None, zero_division=np.nan)
        assert nan[0] == pytest.approx(2 / 3) and np.isnan(nan[1]) and np.isnan(nan[2])
        # macro averages the classes that occur (0 and 1), like scikit-learn
        assert M.precision(p, t, 3) == pytest.approx((2 / 3 + 0) / 2)
        assert M.precision(p, t, 3, zero_division=1.0) == pytest.approx((2 / 3 + 1) / 2)
        assert M.precision(p, t, 3, zero_division=np.nan) == pytest.approx(2 / 3)
        assert M.f1_score(p, t, 3, average=None)[2] == 0.0
        assert M.precision(p, t, 3, zero_division="warn") == pytest.approx(1 / 3)
        empty = M.ConfusionMatrix(3)
        for metric in ("precision", "recall", "f1", "accuracy"):
            for avg in ("macro", "micro", "weighted"):
                assert M.score_from_counts(empty.counts, metric, avg) == 0.0
                assert M.score_from_counts(empty.counts, metric, avg, zero_division=1.0) == 1.0


def test_inputs_tensors_numpy_logits_probabilities():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((50, 4)).astype(np.float32)
    targets = rng.integers(0, 4, 50)
    pred_idx = logits.argmax(1)
    ref = M.confusion_matrix(pred_idx, targets, 4)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for preds in (logits, probs, ddp.tensor(logits), ddp.tensor(logits, requires_grad=True),
                  ddp.tensor(pred_idx), pred_idx.tolist(), pred_idx.astype(np.float32)):
        for tg in (targets, ddp.tensor(targets), targets.tolist(), ddp.tensor(targets).int()):
            assert np.array_equal(M.confusion_matrix(preds, tg, 4), ref)
    assert M.confusion_matrix(logits, targets).shape == (4, 4)  # num_classes from the scores
    # segmentation-shaped scores: (N, C, H, W) with (N, H, W) targets
    seg = rng.standard_normal((2, 3, 4, 5))
    seg_t = rng.integers(0, 3, (2, 4, 5))
    assert np.array_equal(M.confusion_matrix(seg, seg_t, 3),
                          M.confusion_matrix(seg.argmax(1).ravel(), seg_t.ravel(), 3))
    assert M.confusion_matrix(ddp.tensor([True, False]), ddp.tensor([True, True]), 2).tolist() \
        == [[0, 0], [1, 1]]


def test_bad_inputs():
    with pytest.raises(ValueError, match="outside"):
        M.confusion_matrix([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="outside"):
        M.confusion_matrix([0, 1], [0, -1], num_classes=3)
    with pytest.raises(ValueError, match="integers"):
        M.confusion_matrix(np.array([0.2, 0.9]), [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="do not fit"):
        M.confusion_matrix(np.zeros((2, 3, 4)), [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        M.ConfusionMatrix(0)
    with pytest.raises(ValueError, match="average"):
        M.F1Score(3, average="samples")


def test_ignore_index():
    t = [0, 255, 1, 255]
    p = [0, 1, 0, 2]
    assert M.confusion_matrix(p, t, 3, ignore_index=255).tolist() == [[1, 0, 0], [1, 0, 0],
                                                                      [0, 0, 0]]
    acc = M.Accuracy(3, ignore_index=255)
    acc.update(p, t)
    assert acc.compute() == 0.5


# --------------------------------------------------------------------------- accumulators

def test_streaming_equals_one_shot_and_merge_equals_concatenation():
    rng = np.random.default_rng(1)
    c = 5
    t = rng.integers(0, c, 400)
    p = np.where(rng.random(400) < 0.6, t, rng.integers(0, c, 400))
    full = M.ConfusionMatrix(c)
    full.update(p, t)
    a, b = M.ConfusionMatrix(c), M.ConfusionMatrix(c)
    for i in range(0, 250, 50):
        a.update(ddp.tensor(p[i:i + 50]), ddp.tensor(t[i:i + 50]))
    b.update(p[250:], t[250:])
    summed = a + b
    assert np.array_equal(summed.counts, full.counts)
    assert np.array_equal(a.counts + b.counts, full.counts)   # `+` did not change a
    a.merge(b)
    assert np.array_equal(a.counts, full.counts)
    c1 = M.ConfusionMatrix(c)
    c1 += b
    assert np.array_equal(c1.counts, b.counts)
    with pytest.raises(ValueError, match="merge"):
        a.merge(M.ConfusionMatrix(c + 1))
    for cls, fn in ((M.Accuracy, M.accuracy), (M.Precision, M.precision),
                    (M.Recall, M.recall), (M.F1Score, M.f1_score)):
        for avg in ("macro", "weighted", "micro", None):
            m1, m2 = cls(c, average=avg), cls(c, average=avg)
            m1.update(p[:123], t[:123])
            m2.update(p[123:], t[123:])
            merged = m1 + m2
            assert type(merged) is cls and merged.average == avg
            np.testing.assert_allclose(merged.compute(), fn(p, t, c, average=avg))
            m1.reset()
            assert m1.counts.sum() == 0


def test_sync_simulates_an_all_reduce_across_ranks():
    rng = np.random.default_rng(2)
    t = rng.integers(0, 3, 90)
    p = rng.integers(0, 3, 90)
    ranks = [M.F1Score(3) for _ in range(3)]
    means = [M.MeanMetric() for _ in range(3)]
    for r, (m, mm) in enumerate(zip(ranks, means)):
        m.update(p[r::3], t[r::3])
        mm.update(ddp.tensor(float(r)), weight=len(t[r::3]))
    total = sum(m.counts for m in ranks)
    total_state = sum(mm.state for mm in means)
    for m in ranks:
        m.sync(lambda a: total.copy())
    for mm in means:
        mm.sync(lambda a: total_state.copy())
    expected = M.f1_score(p, t, 3)
    assert all(m.compute() == pytest.approx(expected) for m in ranks)
    assert all(mm.compute() == pytest.approx(1.0) for mm in means)


def test_state_dict_roundtrip_through_ddp_save(tmp_path):
    m = M.Precision(3)
    m.update(P, T)
    mean = M.MeanMetric()
    mean.update([1.0, 2.0, 3.0])
    ddp.save({"p": m.state_dict(), "m": mean.state_dict()}, tmp_path / "metrics.pt")
    loaded = ddp.load(tmp_path / "metrics.pt")
    m2, mean2 = M.Precision(3), M.MeanMetric()
    m2.load_state_dict(loaded["p"])
    mean2.load_state_dict(loaded["m"])
    assert m2.compute() == m.compute() and mean2.compute() == 2.0


def test_mean_metric():
    m = M.MeanMetric()
    assert math.isnan(m.compute())
    m.update(ddp.tensor(2.0), weight=3)
    m.update(4.0)
    assert m.compute() == pytest.approx(2.5)
    assert (m.sum, m.count) == (10.0, 4.0)
    m.update(np.array([1.0, 3.0]), weight=np.array([1.0, 0.0]))
    assert (m.sum, m.count) == (11.0, 5.0)
    m.update(ddp.tensor([[1.0, 1.0]], requires_grad=True))
    assert (m.sum, m.count) == (13.0, 7.0)
    other = M.MeanMetric()
    other.update(20.0, 3)
    both = m + other
    assert both.compute() == pytest.approx((13 + 60) / 10)
    assert m.count == 7.0
    m += other
    assert m.compute() == both.compute()
    m.reset()
    assert m.count == 0 and math.isnan(m.compute())
    assert "MeanMetric" in repr(both)


# --------------------------------------------------------------------------- scikit-learn

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("zero_division", [0.0, 1.0, np.nan])
def test_against_sklearn_random_labels(seed, zero_division):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    c = [2, 3, 5, 7][seed]
    n = int(rng.integers(1, 200))
    t = rng.integers(0, c, n)
    p = np.where(rng.random(n) < 0.5, t, rng.integers(0, c, n))
    if seed == 3:  # some classes absent from the targets, some from the predictions, one never
        t = rng.integers(0, 4, n)
        p = rng.integers(2, 6, n)
    labels = list(range(c))
    assert np.array_equal(M.confusion_matrix(p, t, c),
                          sk.confusion_matrix(t, p, labels=labels))
    assert M.accuracy(p, t, c) == pytest.approx(sk.accuracy_score(t, p))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's own zero-division warnings
        for ours, theirs in ((M.precision, sk.precision_score), (M.recall, sk.recall_score),
                             (M.f1_score, sk.f1_score)):
            for avg in ("macro", "weighted", "micro"):
                np.testing.assert_allclose(
                    ours(p, t, c, average=avg, zero_division=zero_division),
                    theirs(t, p, average=avg, zero_division=zero_division),
                    rtol=1e-12, err_msg=f"{ours.__name__} {avg}")
            np.testing.assert_allclose(
                ours(p, t, c, average=None, zero_division=zero_division),
                theirs(t, p, labels=labels, average=None, zero_division=zero_division),
                rtol=1e-12, err_msg=f"{ours.__name__} None")
            if c == 2:
                for pos in (0, 1):
                    np.testing.assert_allclose(
                        ours(p, t, c, average="binary", pos_label=pos,
                             zero_division=zero_division),
                        theirs(t, p, average="binary", pos_label=pos,
                               zero_division=zero_division), rtol=1e-12)
        np.testing.assert_allclose(M.accuracy(p, t, c, average="macro"),
                                   sk.recall_score(t, p, average="macro", zero_division=0))
        if set(p) <= set(t):
            np.testing.assert_allclose(M.accuracy(p, t, c, average="macro"),
                                       sk.balanced_accuracy_score(t, p))
    # the streaming classes give the same numbers
    f1 = M.F1Score(c, average="weighted", zero_division=zero_division)
    for i in range(0, n, 17):
        f1.update(p[i:i + 17], t[i:i + 17])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(f1.compute(), sk.f1_score(t, p, average="weighted",
                                                             zero_division=zero_division))


@pytest.mark.gpu
def test_cuda_inputs():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((64, 5)).astype(np.float32)
    t = rng.integers(0, 5, 64)
    ref = M.confusion_matrix(logits, t, 5)
    got = M.confusion_matrix(ddp.tensor(logits).cuda(), ddp.tensor(t).cuda(), 5)
    assert isinstance(got, np.ndarray) and np.array_equal(got, ref)
    mixed = M.confusion_matrix(ddp.tensor(logits).cuda(), t, 5)
    assert np.array_equal(mixed, ref)
    m = M.MeanMetric()
    m.update(ddp.tensor([1.0, 3.0]).cuda())
    assert m.compute() == 2.0
