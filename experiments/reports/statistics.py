"""Intervals shared by every report: over seeds and over test images.

One place for the intervals that the mini reproductions' tables print
(issue #14), so that every report states its claims the same way:

- over seeds: `seed_interval` (mean and Student-t 95% interval), and
  `combined_interval` (seed spread plus the test-set standard error, for a
  mean accuracy measured on one shared test set);
- over test images: `wilson_interval` (a binomial proportion) and
  `bootstrap_interval` (per-row bootstrap of any per-image statistic).

Paired tests and verdicts are in `experiments.reports.paired_tests`,
steps to a threshold on a smoothed curve in `experiments.reports.smoothing`.

Library features used: `scipy.stats.t` (t quantiles), `scipy.stats.norm`.
Considered and not used: `scipy.stats.bootstrap` (no hierarchical
resampling of seeds and images together, and its BCa default re-evaluates
the statistic per jackknife sample, slow on 10,000 images; the percentile
bootstraps here are a few NumPy lines with a seeded
`numpy.random.Generator`, so every table is reproducible bit for bit).
All functions are deterministic: resampling takes an explicit `seed`.
"""

import math

import numpy as np
from scipy import stats

from convnet_repro.experiments.reports._checks import check_level
from convnet_repro.experiments.reports._checks import finite_1d
from convnet_repro.experiments.reports._checks import per_image


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
    check_level(level)
    arr = finite_1d(values, "values")
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
    check_level(level)
    arr = finite_1d(accuracies, "accuracies")
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
    check_level(level)
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
    check_level(level)
    arr = per_image(values, "values")
    rng = np.random.default_rng(seed)
    reps = np.empty(n_resamples)
    for start in range(0, n_resamples, 200):  # bounded memory
        idx = rng.integers(
            0, arr.size, (min(200, n_resamples - start), arr.size)
        )
        reps[start : start + idx.shape[0]] = statistic(arr[idx], axis=-1)
    lo, hi = np.quantile(reps, [0.5 - level / 2, 0.5 + level / 2])
    return {"estimate": float(statistic(arr)), "lo": float(lo), "hi": float(hi)}
