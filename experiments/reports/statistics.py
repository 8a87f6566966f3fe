"""Statistics shared by every report: intervals, paired tests, verdicts.

One place for the statistics that the mini reproductions' tables print
(issue #14), so that every report states its claims the same way:

- over seeds: `seed_interval` (mean and Student-t 95% interval), and
  `combined_interval` (seed spread plus the test-set standard error, for a
  mean accuracy measured on one shared test set);
- over test images: `wilson_interval` (a binomial proportion) and
  `bootstrap_interval` (per-row bootstrap of any per-image statistic);
- paired, same test images: `mcnemar` (exact, on per-image correctness),
  `paired_bootstrap` (difference of a metric, images resampled jointly) and
  `hierarchical_bootstrap` (difference of seed-mean accuracies: seeds
  resampled per group, images jointly);
- over independent seeds: `seed_difference` (Welch t-test);
- `verdict`: "holds" / "not significant" / "fails" for an ordering claim;
- `smooth` and `steps_to_threshold`: the first evaluation from which a
  smoothed curve stays at or above a threshold to the end.

Library features used: `scipy.stats.t` (t quantiles), `scipy.stats.binomtest`
(the exact McNemar test is a binomial test on the discordant pairs),
`scipy.stats.norm`. Considered and not used: `scipy.stats.bootstrap` (no
hierarchical resampling of seeds and images together, and its BCa default
re-evaluates the statistic per jackknife sample, slow on 10,000 images; the
percentile bootstraps here are a few NumPy lines with a seeded
`numpy.random.Generator`, so every table is reproducible bit for bit) and
`statsmodels` (not a dependency; its McNemar is the same binomial test).
All functions are deterministic: resampling takes an explicit `seed`.
"""

import math

import numpy as np
from scipy import stats

HOLDS = "holds"
NOT_SIGNIFICANT = "not significant"
FAILS = "fails"


def _check_level(level):
    if not 0.0 < level < 1.0:
        raise ValueError(
            f"`level` must be in (0, 1), e.g. 0.95. Received: level={level!r}"
        )


def _one_d(values, name, expected):
    """`values` as a float array; a ValueError unless non-empty and 1-D."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"`{name}` must {expected}. Received: shape={arr.shape}"
        )
    return arr


def _as_1d(values, name):
    arr = _one_d(values, name, "be a non-empty 1-D sequence of numbers")
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"`{name}` has NaN or infinite values; drop them first. "
            f"Received: {arr.tolist()[:10]}"
        )
    return arr


def seed_interval(values, level=0.95):
    """Mean over seeds and its Student-t interval.

    Args:
        values: one number per seed (at least one).
        level: confidence level.

    Returns:
        dict `mean`, `std` (sample, ddof=1; 0.0 for one seed), `n`, `lo`,
        `hi` (`mean -/+ t_{n-1} * std / sqrt(n)`; both `None` for one seed:
        no spread to estimate).

    Example:

    >>> r = seed_interval([1.0, 2.0, 3.0])
    >>> round(r["hi"] - r["mean"], 4)  # t_{2, 0.975} * 1 / sqrt(3)
    2.4841
    """
    _check_level(level)
    arr = _as_1d(values, "values")
    n = arr.size
    mean = float(arr.mean())
    if n == 1:
        return {"mean": mean, "std": 0.0, "n": 1, "lo": None, "hi": None}
    std = float(arr.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return {
        "mean": mean,
        "std": std,
        "n": n,
        "lo": mean - half,
        "hi": mean + half,
    }


def combined_interval(accuracies, num_images, level=0.95):
    """Seed-mean accuracy with an interval for seed spread and test-set SE.

    The seeds are scored on the same test images, so the test set's own
    sampling error is shared by every seed and does not average out over
    seeds. The half-width combines the two parts in quadrature:
    `sqrt((t_{n-1} * s / sqrt(n))^2 + (z * sqrt(p (1 - p) / N))^2)` with
    `s` the sample std over the `n` seeds, `p` their mean accuracy and `N`
    the number of test images (z = the normal quantile). This is slightly
    conservative: `s` already holds part of the per-model test noise.

    Args:
        accuracies: one accuracy in [0, 1] per seed.
        num_images: int, test images behind each accuracy.
        level: confidence level.

    Returns:
        dict `mean`, `std`, `n`, `lo`, `hi`, `seed_half`, `test_half`.
    """
    _check_level(level)
    arr = _as_1d(accuracies, "accuracies")
    if np.any((arr < 0) | (arr > 1)):
        raise ValueError(
            "`accuracies` must be proportions in [0, 1]. Received: "
            f"{arr.tolist()}"
        )
    if not isinstance(num_images, (int, np.integer)) or num_images <= 0:
        raise ValueError(
            "`num_images` must be a positive int (test images per accuracy). "
            f"Received: num_images={num_images!r}"
        )
    base = seed_interval(arr, level)
    p = base["mean"]
    seed_half = 0.0 if base["lo"] is None else p - base["lo"]
    z = float(stats.norm.ppf(0.5 + level / 2))
    test_half = z * math.sqrt(p * (1 - p) / num_images)
    half = math.hypot(seed_half, test_half)
    return {
        **base,
        "lo": p - half,
        "hi": p + half,
        "seed_half": seed_half,
        "test_half": test_half,
    }


def wilson_interval(successes, total, level=0.95):
    """Wilson score interval of a binomial proportion.

    Args:
        successes: int, e.g. correctly classified test images.
        total: int > 0, e.g. test images.
        level: confidence level.

    Returns:
        `(lo, hi)` floats in [0, 1].

    Example:

    >>> [round(x, 4) for x in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    """
    _check_level(level)
    if total <= 0 or not 0 <= successes <= total:
        raise ValueError(
            "Need 0 <= successes <= total and total > 0. Received: "
            f"successes={successes!r}, total={total!r}"
        )
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total**2)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _per_image(values, name):
    return _one_d(values, name, "hold one value per test image (non-empty 1-D)")


def bootstrap_interval(
    values, statistic=np.mean, n_resamples=2000, level=0.95, seed=0
):
    """Percentile bootstrap over rows (test images) of a statistic.

    Args:
        values: one value per test image (e.g. 1.0 correct, 0.0 wrong).
        statistic: maps an array `(..., n)` to `(...)` along the last axis
            (`np.mean` for accuracy).
        n_resamples: bootstrap replicates.
        level: confidence level.
        seed: seed of the resampling.

    Returns:
        dict `estimate`, `lo`, `hi`.
    """
    _check_level(level)
    arr = _per_image(values, "values")
    rng = np.random.default_rng(seed)
    reps = np.empty(n_resamples)
    for start in range(0, n_resamples, 200):  # bounded memory
        idx = rng.integers(
            0, arr.size, (min(200, n_resamples - start), arr.size)
        )
        reps[start : start + idx.shape[0]] = statistic(arr[idx], axis=-1)
    lo, hi = np.quantile(reps, [0.5 - level / 2, 0.5 + level / 2])
    return {"estimate": float(statistic(arr)), "lo": float(lo), "hi": float(hi)}


def mcnemar(correct_a, correct_b):
    """Exact McNemar test of two classifiers on the same test images.

    Only the discordant images count: `b` = A right and B wrong, `c` = A
    wrong and B right; under "same accuracy" `b ~ Binomial(b + c, 1/2)`.

    Args:
        correct_a, correct_b: booleans (or 0/1), one per test image, in the
            same image order.

    Returns:
        dict `b`, `c`, `p_value` (two-sided, exact; 1.0 if `b + c == 0`)
        and `difference` (accuracy of B minus accuracy of A).

    Example:

    >>> mcnemar([1, 1, 1, 0], [0, 0, 0, 0])["p_value"]  # b=3, c=0: 2/8
    0.25
    """
    a = _per_image(correct_a, "correct_a").astype(bool)
    b_ = _per_image(correct_b, "correct_b").astype(bool)
    if a.shape != b_.shape:
        raise ValueError(
            "McNemar needs the same test images for both classifiers. "
            f"Received: {a.size} and {b_.size} images"
        )
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return {"b": b, "c": c, "p_value": p, "difference": (c - b) / a.size}


def paired_bootstrap(
    values_a, values_b, statistic=np.mean, n_resamples=2000, level=0.95, seed=0
):
    """Bootstrap of `statistic(B) - statistic(A)` over shared test images.

    The same resampled images score both A and B (paired), so what the two
    share (the images' difficulty) cancels out of the difference.

    Args:
        values_a, values_b: one value per test image each, same order.
        statistic, n_resamples, level, seed: as `bootstrap_interval`.

    Returns:
        dict `difference`, `lo`, `hi`, `p_value` (two-sided bootstrap
        p-value: twice the smaller share of replicates on either side of 0,
        at least `1 / n_resamples`).
    """
    _check_level(level)
    a = _per_image(values_a, "values_a")
    b = _per_image(values_b, "values_b")
    if a.shape != b.shape:
        raise ValueError(
            "A paired bootstrap needs the same test images for A and B. "
            f"Received: {a.size} and {b.size} images"
        )
    rng = np.random.default_rng(seed)
    reps = np.empty(n_resamples)
    for start in range(0, n_resamples, 200):
        idx = rng.integers(0, a.size, (min(200, n_resamples - start), a.size))
        reps[start : start + idx.shape[0]] = statistic(
            b[idx], axis=-1
        ) - statistic(a[idx], axis=-1)
    return _difference_summary(float(statistic(b) - statistic(a)), reps, level)


def hierarchical_bootstrap(
    correct_a, correct_b, n_resamples=2000, level=0.95, seed=0
):
    """Difference of seed-mean accuracies, resampling seeds and images.

    Each replicate draws seeds with replacement within A and within B
    (independent trainings) and one set of test images shared by both
    (the same test set), so the interval holds both the seed spread and the
    test-set sampling error.

    Args:
        correct_a, correct_b: arrays `(seeds, images)` of 0/1 correctness;
            the seed counts may differ, the images must match.
        n_resamples, level, seed: as `bootstrap_interval`.

    Returns:
        dict `difference` (mean accuracy of B minus A), `lo`, `hi`,
        `p_value` (as `paired_bootstrap`).
    """
    _check_level(level)
    a = np.asarray(correct_a, dtype=float)
    b = np.asarray(correct_b, dtype=float)
    if (
        a.ndim != 2
        or b.ndim != 2
        or a.shape[1] != b.shape[1]
        or a.size == 0
        or b.size == 0
    ):
        raise ValueError(
            "Need two (seeds, images) arrays over the same test images. "
            f"Received: shapes {a.shape} and {b.shape}"
        )
    rng = np.random.default_rng(seed)
    n_img = a.shape[1]
    reps = np.empty(n_resamples)
    for r in range(n_resamples):
        img = rng.integers(0, n_img, n_img)
        sa = rng.integers(0, a.shape[0], a.shape[0])
        sb = rng.integers(0, b.shape[0], b.shape[0])
        reps[r] = b[sb][:, img].mean() - a[sa][:, img].mean()
    return _difference_summary(float(b.mean() - a.mean()), reps, level)


def _difference_summary(difference, reps, level):
    lo, hi = np.quantile(reps, [0.5 - level / 2, 0.5 + level / 2])
    n = reps.size
    tail = min(np.mean(reps <= 0), np.mean(reps >= 0))
    p = min(1.0, max(2 * tail, 1 / n))
    return {
        "difference": difference,
        "lo": float(lo),
        "hi": float(hi),
        "p_value": float(p),
    }


def seed_difference(values_a, values_b, level=0.95):
    """Welch t-test of `mean(B) - mean(A)` over independent seeds.

    For per-seed quantities without per-image pairing (steps to a
    threshold, a probe's drift); `scipy.stats.ttest_ind(equal_var=False)`.

    Args:
        values_a, values_b: one number per seed each (at least 2 each).
        level: confidence level of the interval.

    Returns:
        dict `difference`, `lo`, `hi`, `p_value` (two-sided).
    """
    _check_level(level)
    a = _as_1d(values_a, "values_a")
    b = _as_1d(values_b, "values_b")
    if a.size < 2 or b.size < 2:
        raise ValueError(
            "A Welch test needs at least 2 seeds per group. Received: "
            f"{a.size} and {b.size}"
        )
    diff = float(b.mean() - a.mean())
    if np.all(a == a[0]) and np.all(b == b[0]):  # no spread: t undefined
        p = 1.0 if diff == 0 else 0.0
        return {"difference": diff, "lo": diff, "hi": diff, "p_value": p}
    res = stats.ttest_ind(b, a, equal_var=False)
    ci = res.confidence_interval(level)
    return {
        "difference": diff,
        "lo": float(ci.low),
        "hi": float(ci.high),
        "p_value": float(res.pvalue),
    }


def verdict(difference, p_value=None, interval=None, direction=1, alpha=0.05):
    """Holds / not significant / fails for the claim `sign(diff) == direction`.

    Args:
        difference: measured `B - A` on the paper's metric.
        p_value: two-sided p-value of a paired test of "no difference".
        interval: `(lo, hi)` of the difference at level `1 - alpha` (give
            this or `p_value`; with both, both must agree to be significant).
        direction: +1 if the claim is "B > A", -1 if "B < A" (use -1 for an
            error metric where the claim is "B is better").
        alpha: significance level.

    Returns:
        "holds" (significant, in the claimed direction), "fails"
        (significant, opposite) or "not significant".

    Example:

    >>> verdict(0.004, p_value=0.01, direction=1)
    'holds'
    >>> verdict(0.004, interval=(-0.001, 0.009), direction=1)
    'not significant'
    """
    if direction not in (1, -1):
        raise ValueError(
            "`direction` must be +1 (B > A) or -1 (B < A). "
            f"Received: direction={direction!r}"
        )
    if p_value is None and interval is None:
        raise ValueError(
            "Give the paired test's `p_value` or `interval` (or both)."
        )
    significant = True
    if p_value is not None:
        significant &= p_value < alpha
    if interval is not None:
        lo, hi = interval
        significant &= lo > 0 or hi < 0
    if not significant or difference == 0:
        return NOT_SIGNIFICANT
    return HOLDS if np.sign(difference) == direction else FAILS


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
    arr = _as_1d(values, "values")
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
    values = _as_1d(values, "values")
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
