"""Paired tests and verdicts: is one model really better than another?

- paired, same test images: `mcnemar` (exact, on per-image correctness),
  `paired_bootstrap` (difference of a metric, images resampled jointly) and
  `hierarchical_bootstrap` (difference of seed-mean accuracies: seeds
  resampled per group, images jointly);
- over independent seeds: `seed_difference` (Welch t-test);
- `verdict`: "holds" / "not significant" / "fails" for an ordering claim.

Library features used: `scipy.stats.binomtest` (the exact McNemar test is a
binomial test on the discordant pairs) and `scipy.stats.ttest_ind`.
Considered and not used: `scipy.stats.bootstrap` (no hierarchical
resampling of seeds and images together; see `statistics`) and
`statsmodels` (not a dependency; its McNemar is the same binomial test).
Resampling takes an explicit `seed`, so every table is reproducible.
"""

import numpy as np
from scipy import stats

from convnet_repro.experiments.reports._checks import check_level
from convnet_repro.experiments.reports._checks import finite_1d
from convnet_repro.experiments.reports._checks import per_image

HOLDS = "holds"

NOT_SIGNIFICANT = "not significant"

FAILS = "fails"


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
    a = per_image(correct_a, "correct_a").astype(bool)
    b_ = per_image(correct_b, "correct_b").astype(bool)
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
    check_level(level)
    a = per_image(values_a, "values_a")
    b = per_image(values_b, "values_b")
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
    check_level(level)
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
    check_level(level)
    a = finite_1d(values_a, "values_a")
    b = finite_1d(values_b, "values_b")
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
