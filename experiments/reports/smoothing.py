"""Steps to a threshold on a smoothed learning curve.

`smooth` (centred moving average) and `steps_to_threshold`: the first
evaluation from which the smoothed curve stays at or above a threshold to
the end, so a single lucky evaluation, or a crossing that falls back, does
not count. Considered: `pandas.Series.rolling(center=True)`; at the ends it
gives NaN or (with `min_periods`) an asymmetric window, not the shrinking
symmetric window used here.
"""

import numpy as np

from convnet_repro.experiments.reports._checks import finite_1d


def smooth(values, window=3):
    """Centred moving average over `window` evaluations (odd).

    At the ends the window shrinks symmetrically (the first and last points
    are kept as they are), so the smoothed curve has no look-ahead beyond
    `window // 2` evaluations and the same length as the input.

    Example:

    >>> smooth([0.0, 3.0, 0.0, 3.0], window=3).tolist()
    [0.0, 1.0, 2.0, 3.0]
    """
    if not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(
            f"`window` must be an odd int >= 1. Received: window={window!r}"
        )
    arr = finite_1d(values, "values")
    out = np.empty_like(arr)
    half = window // 2
    for i in range(arr.size):
        k = min(half, i, arr.size - 1 - i)
        out[i] = arr[i - k : i + k + 1].mean()
    return out


def steps_to_threshold(steps, values, threshold, window=3):
    """First evaluation from which the smoothed curve stays >= `threshold`.

    The curve is smoothed by `smooth(values, window)` (centred moving
    average over `window` evaluations); the answer is the first step from
    which every later smoothed point is at or above `threshold`, so a
    single lucky evaluation, or a crossing that falls back, does not count.

    Args:
        steps: ascending training steps, one per evaluation.
        values: metric per evaluation (higher is better).
        threshold: float.
        window: odd int; 1 = no smoothing.

    Returns:
        The step (int), or `None` if the smoothed curve ends below.

    Example:

    >>> steps_to_threshold([1, 2, 3, 4, 5], [0, 9, 0, 9, 9], 5, window=1)
    4
    """
    steps = np.asarray(steps)
    values = finite_1d(values, "values")
    if steps.shape != values.shape:
        raise ValueError(
            "`steps` and `values` must have the same length. Received: "
            f"{steps.size} and {values.size}"
        )
    if np.any(np.diff(steps) <= 0):
        raise ValueError("`steps` must be strictly ascending.")
    tol = 1e-9 * max(1.0, abs(threshold))  # float round trip via the store
    above = smooth(values, window) >= threshold - tol
    if not above[-1]:
        return None
    below = np.flatnonzero(~above)
    first = 0 if below.size == 0 else int(below[-1]) + 1
    return int(steps[first])
