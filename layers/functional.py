"""Convolution as a pure function (DL book Sec. 9.1 and 9.2).

Eq. 9.1-9.3 (1-D, continuous then discrete):

    s(t) = (x * w)(t) = sum_a x(a) w(t - a)

Eq. 9.4-9.5 (2-D), commutative form eq. 9.5:

    S(i, j) = (I * K)(i, j) = sum_{m, n} I(i - m, j - n) K(m, n)

Eq. 9.6, cross-correlation (what deep-learning libraries call convolution,
no kernel flipping):

    S(i, j) = (I star K)(i, j) = sum_{m, n} I(i + m, j + n) K(m, n)

Modes follow `numpy.convolve` / `scipy.signal.convolve`: `"full"` (every
overlap, length n + k - 1), `"valid"` (full overlap only, length n - k + 1)
and `"same"` (length n, the centre of `"full"`: full[(k - 1) // 2 :][:n]).
All functions take numpy arrays or tensors and return a backend tensor
(`keras.ops.convert_to_numpy` gives numpy back); the arithmetic is float32
(or the input's float dtype) through `keras.ops.conv`.
"""

import numpy as np
from keras import ops

_MODES = ("full", "valid", "same")


def _prepare(x, kernel, fn_name):
    """Checks the rank (1 or 2, from `x`) and casts both to `x`'s float
    dtype. Returns `(x, kernel, rank)`."""
    rank = len(np.shape(x))
    if rank not in (1, 2):
        raise ValueError(
            f"{fn_name} supports 1-D and 2-D inputs. "
            f"Received: x.shape={np.shape(x)}"
        )
    x = ops.convert_to_tensor(x)
    kernel = ops.convert_to_tensor(kernel)
    if not str(x.dtype).startswith(("float", "bfloat")):
        x = ops.cast(x, "float32")
    kernel = ops.cast(kernel, x.dtype)
    if len(x.shape) != rank or len(kernel.shape) != rank:
        raise ValueError(
            f"{fn_name} expects a {rank}-D input and a {rank}-D kernel. "
            f"Received: x.shape={tuple(x.shape)}, "
            f"kernel.shape={tuple(kernel.shape)}"
        )
    return x, kernel, rank


def _correlate(x, kernel, mode, rank, fn_name):
    """Cross-correlation of one `rank`-D signal with one `rank`-D kernel."""
    if mode not in _MODES:
        raise ValueError(
            f"{fn_name}: `mode` must be one of {_MODES}. "
            f"Received: mode={mode!r}"
        )
    ks = tuple(kernel.shape)
    ns = tuple(x.shape)
    if mode == "valid" and any(k > n for k, n in zip(ks, ns)):
        raise ValueError(
            f"{fn_name}(mode='valid') needs a kernel no larger than the "
            f"input; use mode='full' or 'same'. Received: x.shape={ns}, "
            f"kernel.shape={ks}"
        )
    if mode == "full":
        pads = [(k - 1, k - 1) for k in ks]
    elif mode == "same":
        pads = [(k // 2, (k - 1) // 2) for k in ks]
    else:
        pads = [(0, 0)] * rank
    x = ops.pad(x, pads)
    # keras.ops.conv is a cross-correlation: batch and channel axes of 1.
    y = ops.conv(x[None, ..., None], kernel[..., None, None], padding="valid")
    return y[0, ..., 0]


def cross_correlate(x, kernel, mode="valid"):
    """Cross-correlation (DL book eq. 9.6): no kernel flipping.

    `out[i] = sum_m x[i + m] kernel[m]` in 1-D (with the `mode`'s offset);
    likewise over two axes in 2-D. The rank (1 or 2) is taken from `x`.

    Args:
        x: 1-D `(n,)` or 2-D `(h, w)` array or tensor.
        kernel: array or tensor of the same rank.
        mode: `"valid"` (default), `"same"` or `"full"`.

    Returns:
        A tensor; shape as in `numpy`/`scipy.signal.correlate`.

    Example:

    >>> np.asarray(cross_correlate([1.0, 2.0, 3.0], [0.0, 1.0], "full"))
    array([1., 2., 3., 0.], dtype=float32)
    """
    x, kernel, rank = _prepare(x, kernel, "cross_correlate")
    return _correlate(x, kernel, mode, rank, "cross_correlate")


def convolve(x, kernel, mode="valid"):
    """True convolution (DL book eq. 9.3 / 9.4): the kernel is flipped.

    `out[t] = sum_a x[a] kernel[t - a]`; in 2-D the kernel is flipped along
    both axes. Convolution is commutative and associative in `"full"` mode
    (eq. 9.5); cross-correlation is neither.

    Args:
        x: 1-D `(n,)` or 2-D `(h, w)` array or tensor.
        kernel: array or tensor of the same rank.
        mode: `"valid"` (default), `"same"` or `"full"`.

    Returns:
        A tensor; equal to `numpy.convolve` (1-D) or
        `scipy.signal.convolve2d` (2-D) with the same mode.

    Example:

    >>> np.asarray(convolve([1.0, 2.0, 3.0], [0.0, 1.0], "full"))
    array([0., 1., 2., 3.], dtype=float32)
    """
    x, kernel, rank = _prepare(x, kernel, "convolve")
    flipped = ops.flip(kernel, axis=tuple(range(rank)))
    if mode == "valid" and any(k > n for k, n in zip(kernel.shape, x.shape)):
        # Valid convolution is commutative, like numpy.convolve's swap.
        x, flipped = kernel, ops.flip(x, axis=tuple(range(rank)))
    return _correlate(x, flipped, mode, rank, "convolve")


def smooth_positions(positions, weights=None):
    """Smooths noisy position readings (DL book Sec. 9.1, eq. 9.3).

    The book's laser-tracked spaceship: `x(t)` is a noisy position reading
    and the estimate is the weighted average `s(t) = sum_a x(a) w(t - a)`,
    with `w(age) = 0` for negative ages (no future readings) and more weight
    on recent readings. This is `convolve(x, w, "full")[:len(x)]`. Readings
    before t = 0 count as 0, so the first `len(w) - 1` estimates are pulled
    towards 0 (a plain convolution, as in the book).

    Args:
        positions: 1-D array of readings `x(0), ..., x(T - 1)`.
        weights: 1-D array `w(0), w(1), ...` (age 0 = the current reading),
            a probability density (nonnegative, sums to 1). Defaults to
            `w(a) = 2^-(a + 1)` for a = 0..4, renormalized to sum to 1.

    Returns:
        A tensor `s(0), ..., s(T - 1)`.

    Example:

    >>> x = np.full(8, 3.0)
    >>> float(smooth_positions(x, [0.5, 0.5])[-1])
    3.0
    """
    if weights is None:
        weights = 0.5 ** np.arange(1, 6)
        weights = weights / weights.sum()
    w = np.asarray(weights, dtype="float64")
    if w.ndim != 1 or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
        raise ValueError(
            "smooth_positions: `weights` must be a 1-D probability density "
            "(nonnegative, summing to 1) for s(t) to be a weighted average. "
            f"Received: weights={weights!r}"
        )
    n = len(np.shape(positions))
    if n != 1:
        raise ValueError(
            "smooth_positions expects a 1-D array of readings. "
            f"Received: positions.shape={np.shape(positions)}"
        )
    length = np.shape(positions)[0]
    return convolve(positions, w.astype("float32"), "full")[:length]
