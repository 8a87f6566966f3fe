"""Scores from logits: view-averaged softmax and running top-k counts.

Everything here works on one batch of images at a time, so what evaluation
keeps does not grow with the data set: a batch's views are softmaxed and
averaged as they are produced (`view_average`), and `TopKCounter` keeps only
hit counts. Errors are in percent, as the papers report them.

The counting is `keras.metrics.SparseTopKCategoricalAccuracy` (a running
mean; `in_top_k` counts a label tied with the k-th score as a hit); the
softmax is NumPy because the probabilities are averaged over views and
models before any metric sees them.
"""

import keras
import numpy as np

TOP_K = (1, 5)


def softmax(logits, axis=-1):
    """Numerically stable softmax (float32 unless given float64)."""
    logits = np.asarray(logits)
    if logits.dtype != np.float64:
        logits = logits.astype(np.float32, copy=False)
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def view_average(logits):
    """Softmax over classes, then the mean over views.

    Args:
        logits: `(views, N, classes)` (or any leading axes before
            `(N, classes)`), e.g. one batch of images.

    Returns:
        `(N, classes)` mean of the softmax outputs with equal weights
        (Krizhevsky et al. 2012, Sec. 4.1: "averaging the predictions").
    """
    probs = softmax(logits)
    return probs.reshape((-1,) + probs.shape[-2:]).mean(axis=0)


# Softmax averaging over models is the same operation (equal weights).
average_probabilities = view_average


def top_k_error(probs, labels, k):
    """Fraction in [0, 1] of images whose label is not in the top `k`.

    A label counts as within the top `k` when fewer than `k` classes score
    strictly higher (ties favour the label).

    Args:
        probs: `(N, classes)` scores.
        labels: `(N,)` integer labels.
        k: int >= 1.

    Returns:
        float in [0, 1].
    """
    counter = TopKCounter(ks=(k,))
    counter.update(probs, labels)
    return counter.result()[f"top{k}_error"] / 100.0


def checked_batch(probs, labels):
    """`(float32 probs (N, classes), int32 labels (N,))`, or a clear error."""
    probs = np.asarray(probs, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int32)
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            "Expected probs (N, classes) and labels (N,). Received: "
            f"probs.shape={probs.shape}, labels.shape={labels.shape}"
        )
    return probs, labels


def top_k_hits(probs, labels, ks=TOP_K):
    """Per image and `k`: 1 if the label is among the top `k`, else 0.

    The same `keras.ops.in_top_k` that `TopKCounter`'s metric counts with
    (a label tied with the k-th score is a hit), so the mean of a column
    is exactly the row's error that the counter gives for the same scores.
    Stored beside the probabilities (`store.PredictionWriter`): the paired
    tests must not re-rank float16-rounded probabilities, whose rounding
    makes ties that the full-precision scores did not have.

    Args:
        probs: `(N, classes)` scores.
        labels: `(N,)` integer labels.
        ks: the `k`s, one column each.

    Returns:
        `(N, len(ks))` int8.

    Example:
    >>> top_k_hits(np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]),
    ...            np.array([2, 1]), ks=(1, 2)).tolist()
    [[0, 1], [0, 0]]
    """
    probs, labels = checked_batch(probs, labels)
    columns = [
        keras.ops.convert_to_numpy(keras.ops.in_top_k(labels, probs, k))
        for k in ks
    ]
    return np.stack(columns, axis=1).astype(np.int8).reshape(-1, len(ks))


class TopKCounter:
    """Running top-k error over batches of per-image probabilities.

    Keeps only counts, so scoring 50,000 images costs no more memory than
    scoring 50.

    Args:
        ks: the `k`s to count (default top-1 and top-5).

    Example:
    >>> c = TopKCounter()
    >>> c.update(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]))
    >>> c.result()["top1_error"]
    50.0
    """

    def __init__(self, ks=TOP_K):
        self.ks = tuple(ks)
        self.metrics = {
            k: keras.metrics.SparseTopKCategoricalAccuracy(k=k) for k in ks
        }
        self.count = 0

    def update(self, probs, labels):
        """Adds one batch: `probs (B, classes)`, `labels (B,)`."""
        probs, labels = checked_batch(probs, labels)
        for metric in self.metrics.values():
            metric.update_state(labels, probs)
        self.count += len(labels)

    def result(self):
        """`{"top<k>_error": percent, ..., "num_images": N}`.

        From the metric's hit and image counts (exact in float32 up to 2**24
        images) divided in float64, so 33 misses in 50 give exactly 66.0.
        """
        if self.count == 0:
            raise ValueError(
                "No images were scored; check the data config and "
                "--max-images. Received: num_images=0"
            )
        out = {
            f"top{k}_error": 100.0
            * (float(m.count) - float(m.total))
            / float(m.count)
            for k, m in self.metrics.items()
        }
        out["num_images"] = self.count
        return out
