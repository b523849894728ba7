"""Classification metrics from accumulated counts: confusion matrix, accuracy, precision, recall,
F1, and a running mean (e.g. of the loss).

Every metric keeps only additive state: :class:`ConfusionMatrix` (and the :class:`Accuracy`,
:class:`Precision`, :class:`Recall` and :class:`F1Score` built on it) an int64
``num_classes x num_classes`` array of counts (rows = true class, columns = predicted class), and
:class:`MeanMetric` a float64 array ``[weighted sum, total weight]``. Scores are computed from
those counts by one function, :func:`score_from_counts`, which the functional forms
(:func:`accuracy`, :func:`precision`, ...) call as well, and which follows scikit-learn's
definitions (``zero_division`` gives the value of 0/0, 0.0 by default, without warnings).

Reducing across ranks: because the state is additive, the metric over the whole data set is the
metric of the summed states. Each rank updates its metric on its shard, then all-reduces (SUM)
the state array before ``compute()``; :meth:`sync` takes that reduction as a function::

    from mpi4py import MPI
    metric.sync(lambda a: MPI.COMM_WORLD.allreduce(a, op=MPI.SUM))
    value = metric.compute()          # the same on every rank

(``cm.counts`` / ``mean.state`` can equally be reduced in place with ``comm.Allreduce``.) Within
one process, ``merge`` / ``+`` combine two accumulators the same way.

Example:
    >>> acc = Accuracy(num_classes=3)
    >>> acc.update(ddp.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]]), ddp.tensor([1, 2]))
    >>> acc.compute()
    0.5
"""
from __future__ import annotations

import numpy as np

from . import backend

__all__ = ["ConfusionMatrix", "Accuracy", "Precision", "Recall", "F1Score", "MeanMetric",
           "confusion_matrix", "accuracy", "precision", "recall", "f1_score",
           "score_from_counts"]

_AVERAGES = ("micro", "macro", "weighted", "binary", None)
_METRICS = ("accuracy", "precision", "recall", "f1")


# --------------------------------------------------------------------------- inputs

def _array(x):
    """The NumPy or CuPy array behind a ddp tensor, NumPy array, list or number."""
    from .tensor import Tensor
    if isinstance(x, Tensor):
        return x._data
    if backend.is_cuda_array(x):
        return x
    return np.asarray(x)


def _labels(preds, targets):
    """Class indices ``(pred, target)`` as flat int64 arrays on the inputs' array module.

    ``preds`` may be class indices (same shape as ``targets``) or scores (logits or
    probabilities) with the classes in dimension 1, reduced by argmax.
    """
    p, t = _array(preds), _array(targets)
    xp = backend.get_array_module(p, t)
    if xp is not np:  # mixed inputs: bring both to the GPU array module
        p, t = xp.asarray(p), xp.asarray(t)
    if p.ndim == t.ndim + 1:
        p = p.argmax(axis=1)
    elif p.shape != t.shape:
        raise ValueError(f"preds of shape {tuple(p.shape)} do not fit targets of shape "
                         f"{tuple(t.shape)}: pass class indices of the targets' shape or scores "
                         f"of shape (N, C, ...)")
    for name, a in (("preds", p), ("targets", t)):
        if a.dtype.kind not in "iub":
            if a.size and not bool((a == xp.round(a)).all()):
                raise ValueError(f"{name} must be class indices (integers); got non-integral "
                                 f"{a.dtype} values. Pass scores as (N, C) to take the argmax; "
                                 f"for binary probabilities pass (p > 0.5).")
    return p.reshape(-1).astype(np.int64), t.reshape(-1).astype(np.int64)


def _infer_num_classes(preds, targets):
    p, t = _array(preds), _array(targets)
    if p.ndim == t.ndim + 1:
        return int(p.shape[1])
    hi = max(int(p.max()) if p.size else -1, int(t.max()) if t.size else -1)
    return max(hi + 1, 1)


# --------------------------------------------------------------------------- the one formula

def _divide(num, den, zero_division):
    """num / den elementwise, with ``zero_division`` where den == 0."""
    zd = 0.0 if zero_division == "warn" else float(zero_division)
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.full(np.broadcast(num, den).shape, zd)
    np.divide(num, den, out=out, where=den != 0)
    return out


def score_from_counts(counts, metric="f1", average="macro", zero_division=0.0, pos_label=1):
    """Accuracy, precision, recall or F1 from a confusion matrix of counts (rows = true class).

    Definitions follow scikit-learn: per class ``precision = tp / (tp + fp)``,
    ``recall = tp / (tp + fn)``, ``f1 = 2 tp / (2 tp + fp + fn)``, each ``zero_division`` when the
    denominator is 0. ``average``:

    * ``'macro'``: unweighted mean over the classes that occur in the targets or predictions
      (scikit-learn's default label set); NaN scores (``zero_division=nan``) are skipped;
    * ``'weighted'``: mean weighted by each class's number of true samples;
    * ``'micro'``: from the summed counts (equals plain accuracy for single-label data);
    * ``'binary'``: the score of class ``pos_label``;
    * ``None``: a float64 array with one score per class.

    ``metric='accuracy'`` is ``trace / total`` for ``'micro'`` (and ``'weighted'``), and the
    per-class recall otherwise (``'macro'`` = balanced accuracy over the occurring classes).

    Example:
        >>> cm = np.array([[2, 1], [0, 3]])     # 2 true 0s predicted 0, 1 predicted 1, ...
        >>> score_from_counts(cm, "precision", average=None)
        array([1.  , 0.75])
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {_AVERAGES}, got {average!r}")
    cm = np.asarray(counts, dtype=np.int64)
    tp = np.diag(cm).astype(np.float64)
    true = cm.sum(axis=1).astype(np.float64)    # support: tp + fn
    pred = cm.sum(axis=0).astype(np.float64)    # tp + fp
    if metric == "accuracy":
        if average in ("micro", "weighted"):
            return float(_divide(tp.sum(), true.sum(), zero_division))
        metric = "recall"
    if average == "micro":
        tp, true, pred = tp.sum(), true.sum(), pred.sum()
    if metric == "precision":
        scores = _divide(tp, pred, zero_division)
    elif metric == "recall":
        scores = _divide(tp, true, zero_division)
    else:
        scores = _divide(2 * tp, true + pred, zero_division)
    if average == "micro":
        return float(scores)
    if average is None:
        return scores
    if average == "binary":
        if not 0 <= pos_label < len(scores):
            raise ValueError(f"pos_label={pos_label} is not a class index (num_classes="
                             f"{len(scores)})")
        return float(scores[pos_label])
    if average == "weighted":
        if true.sum() == 0:
            return float(_divide(0, 0, zero_division))
        keep = ~np.isnan(scores)
        return float(np.average(scores[keep], weights=true[keep])) if true[keep].sum() \
            else float("nan")
    present = (true + pred) > 0
    scores = scores[present & ~np.isnan(scores)]
    if not present.any():
        return float(_divide(0, 0, zero_division))
    return float(scores.mean()) if scores.size else float("nan")


# --------------------------------------------------------------------------- accumulators

class ConfusionMatrix:
    """Accumulates a ``num_classes x num_classes`` int64 confusion matrix (rows = true class).

    ``update(preds, targets)`` takes class indices, or scores (logits / probabilities) with the
    classes in dimension 1, as ddp tensors (CPU or CUDA), NumPy arrays or lists. Targets equal
    to ``ignore_index`` are skipped. ``counts`` is the state to all-reduce across ranks.

    Example:
        >>> cm = ConfusionMatrix(2)
        >>> cm.update([0, 1, 1], [0, 1, 0])
        >>> cm.counts
        array([[1, 1],
               [0, 1]])
    """

    def __init__(self, num_classes, ignore_index=None):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.counts = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, preds, targets):
        """Add a batch of predictions and targets to the counts."""
        p, t = _labels(preds, targets)
        xp = backend.get_array_module(p, t)
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            p, t = p[keep], t[keep]
        c = self.num_classes
        for name, a in (("preds", p), ("targets", t)):
            if a.size and (int(a.min()) < 0 or int(a.max()) >= c):
                raise ValueError(f"{name} hold class indices outside [0, {c}): "
                                 f"min {int(a.min())}, max {int(a.max())}")
        binned = xp.bincount(t * c + p, minlength=c * c).reshape(c, c)
        self.counts += backend.to_host(binned)

    def reset(self):
        """Zero the counts."""
        self.counts[...] = 0

    def compute(self):
        """A copy of the counts."""
        return self.counts.copy()

    def merge(self, other):
        """Add another accumulator's counts to this one (in place); returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge confusion matrices of {self.num_classes} and "
                             f"{other.num_classes} classes")
        self.counts += other.counts
        return self

    def __add__(self, other):
        out = self.__class__.__new__(self.__class__)
        out.__dict__.update(self.__dict__)
        out.counts = self.counts.copy()
        return out.merge(other)

    __iadd__ = merge

    def sync(self, all_reduce_sum):
        """Replace the counts by ``all_reduce_sum(counts)`` (e.g. an MPI allreduce with SUM)."""
        self.counts = np.asarray(all_reduce_sum(self.counts), dtype=np.int64).reshape(
            self.num_classes, self.num_classes)
        return self

    def state_dict(self):
        return {"counts": self.counts.copy()}

    def load_state_dict(self, state):
        self.counts = np.array(state["counts"], dtype=np.int64)

    def __repr__(self):
        return f"{type(self).__name__}(num_classes={self.num_classes}, total={int(self.counts.sum())})"


class _ScoreMetric(ConfusionMatrix):
    """A streaming score computed by :func:`score_from_counts` from confusion-matrix counts."""
    _metric = "f1"
    _default_average = "macro"

    def __init__(self, num_classes, average="__default__", zero_division=0.0, pos_label=1,
                 ignore_index=None):
        super().__init__(num_classes, ignore_index)
        self.average = self._default_average if average == "__default__" else average
        if self.average not in _AVERAGES:
            raise ValueError(f"average must be one of {_AVERAGES}, got {self.average!r}")
        self.zero_division = zero_division
        self.pos_label = pos_label

    def compute(self):
        """The score over everything seen since the last reset (float, or array if average=None)."""
        return score_from_counts(self.counts, self._metric, self.average, self.zero_division,
                                 self.pos_label)


class Accuracy(_ScoreMetric):
    """Streaming accuracy (``average='micro'``: correct / total; ``'macro'``: balanced accuracy).

    Example:
        >>> acc = Accuracy(3); acc.update([0, 1, 2, 2], [0, 1, 1, 2]); acc.compute()
        0.75
    """
    _metric = "accuracy"
    _default_average = "micro"


class Precision(_ScoreMetric):
    """Streaming precision (``average='macro'`` by default).

    Example:
        >>> p = Precision(2, average="binary"); p.update([1, 1, 0], [1, 0, 0]); p.compute()
        0.5
    """
    _metric = "precision"


class Recall(_ScoreMetric):
    """Streaming recall (``average='macro'`` by default).

    Example:
        >>> r = Recall(2, average=None); r.update([1, 1, 0], [1, 0, 0]); r.compute()
        array([0.5, 1. ])
    """
    _metric = "recall"


class F1Score(_ScoreMetric):
    """Streaming F1 score (``average='macro'`` by default).

    Example:
        >>> f = F1Score(2, average="micro"); f.update([1, 1, 0], [1, 0, 0]); round(f.compute(), 4)
        0.6667
    """
    _metric = "f1"


class MeanMetric:
    """Running weighted mean (e.g. of the loss); the state is ``[sum, count]`` (float64).

    ``update(value, weight=1.0)`` adds ``sum(value * weight)`` and ``sum(weight)`` (``weight``
    broadcast to ``value``'s shape), so ``update(loss, batch_size)`` gives the per-sample mean.

    Example:
        >>> m = MeanMetric(); m.update(ddp.tensor(2.0), 3); m.update(4.0); m.compute()
        2.5
    """

    def __init__(self):
        self.state = np.zeros(2, dtype=np.float64)

    @property
    def sum(self):
        return float(self.state[0])

    @property
    def count(self):
        return float(self.state[1])

    def update(self, value, weight=1.0):
        """Add ``value`` (a number, tensor or array) with ``weight``."""
        v = _array(value)
        v = backend.to_host(v)
        v = np.asarray(v, dtype=np.float64)
        w = _array(weight)
        w = backend.to_host(w)
        w = np.broadcast_to(np.asarray(w, dtype=np.float64), v.shape)
        self.state += (float((v * w).sum()), float(w.sum()))

    def reset(self):
        self.state[:] = 0.0

    def compute(self):
        """``sum / count`` (NaN before any update)."""
        return self.sum / self.count if self.count else float("nan")

    def merge(self, other):
        self.state += other.state
        return self

    def __add__(self, other):
        out = MeanMetric()
        out.state = self.state + other.state
        return out

    __iadd__ = merge

    def sync(self, all_reduce_sum):
        """Replace the state by ``all_reduce_sum(state)`` (e.g. an MPI allreduce with SUM)."""
        self.state = np.asarray(all_reduce_sum(self.state), dtype=np.float64).reshape(2)
        return self

    def state_dict(self):
        return {"state": self.state.copy()}

    def load_state_dict(self, state):
        self.state = np.array(state["state"], dtype=np.float64)

    def __repr__(self):
        return f"MeanMetric(mean={self.compute()}, count={self.count})"


# --------------------------------------------------------------------------- functional forms

def confusion_matrix(preds, targets, num_classes=None, ignore_index=None):
    """The int64 confusion matrix (rows = true class) of class indices or (N, C) scores.

    Example:
        >>> confusion_matrix([0, 1, 1], [0, 1, 0], num_classes=2)
        array([[1, 1],
               [0, 1]])
    """
    n = _infer_num_classes(preds, targets) if num_classes is None else num_classes
    cm = ConfusionMatrix(n, ignore_index)
    cm.update(preds, targets)
    return cm.counts


def _functional(metric, preds, targets, num_classes, average, zero_division, pos_label,
                ignore_index):
    counts = confusion_matrix(preds, targets, num_classes, ignore_index)
    return score_from_counts(counts, metric, average, zero_division, pos_label)


def accuracy(preds, targets, num_classes=None, average="micro", zero_division=0.0,
             ignore_index=None):
    """Fraction of correct predictions (``average='micro'``); see :func:`score_from_counts`.

    Example:
        >>> accuracy(ddp.tensor([[2.0, 1.0], [0.0, 3.0]]), ddp.tensor([0, 0]))
        0.5
    """
    return _functional("accuracy", preds, targets, num_classes, average, zero_division, 1,
                       ignore_index)


def precision(preds, targets, num_classes=None, average="macro", zero_division=0.0, pos_label=1,
              ignore_index=None):
    """Precision, ``tp / (tp + fp)``, averaged as in :func:`score_from_counts`.

    Example:
        >>> precision([1, 1, 0, 0], [1, 0, 0, 0], average="binary")
        0.5
    """
    return _functional("precision", preds, targets, num_classes, average, zero_division,
                       pos_label, ignore_index)


def recall(preds, targets, num_classes=None, average="macro", zero_division=0.0, pos_label=1,
           ignore_index=None):
    """Recall, ``tp / (tp + fn)``, averaged as in :func:`score_from_counts`.

    Example:
        >>> recall([1, 0, 0, 0], [1, 1, 0, 0], average="binary")
        0.5
    """
    return _functional("recall", preds, targets, num_classes, average, zero_division,
                       pos_label, ignore_index)


def f1_score(preds, targets, num_classes=None, average="macro", zero_division=0.0, pos_label=1,
             ignore_index=None):
    """F1, ``2 tp / (2 tp + fp + fn)``, averaged as in :func:`score_from_counts`.

    Example:
        >>> f1_score([1, 1, 0, 0], [1, 0, 0, 0], average="binary")
        0.6666666666666666
    """
    return _functional("f1", preds, targets, num_classes, average, zero_division, pos_label,
                       ignore_index)
