"""experiments.reports.statistics against hand-computed and scipy values."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from convnet_repro.experiments.reports import paired_tests as pt
from convnet_repro.experiments.reports import smoothing
from convnet_repro.experiments.reports import statistics as st


def test_seed_interval_matches_the_t_formula():
    values = [0.97, 0.975, 0.972, 0.978, 0.971]
    r = st.seed_interval(values)
    mean, s = np.mean(values), np.std(values, ddof=1)
    half = sps.t.ppf(0.975, 4) * s / math.sqrt(5)
    assert r["mean"] == pytest.approx(mean)
    assert (r["lo"], r["hi"]) == pytest.approx((mean - half, mean + half))
    # scipy's own t interval agrees.
    lo, hi = sps.t.interval(0.95, 4, loc=mean, scale=sps.sem(values))
    assert (r["lo"], r["hi"]) == pytest.approx((lo, hi))


def test_seed_interval_of_one_seed_has_no_interval():
    assert st.seed_interval([0.5]) == {
        "mean": 0.5,
        "std": 0.0,
        "n": 1,
        "lo": None,
        "hi": None,
    }


def test_combined_interval_adds_the_test_set_error_in_quadrature():
    accs = [0.97, 0.98]  # mean 0.975, s = 0.00707
    r = st.combined_interval(accs, num_images=10_000)
    seed_half = 12.7062 * 0.0070711 / math.sqrt(2)  # t_{1, 0.975} = 12.706
    test_half = 1.95996 * math.sqrt(0.975 * 0.025 / 10_000)
    assert r["seed_half"] == pytest.approx(seed_half, rel=1e-4)
    assert r["test_half"] == pytest.approx(test_half, rel=1e-4)
    assert r["hi"] - r["mean"] == pytest.approx(
        math.hypot(seed_half, test_half), rel=1e-4
    )
    # Identical seeds: only the test-set error is left (not zero width).
    same = st.combined_interval([0.975] * 5, num_images=10_000)
    assert same["hi"] - same["mean"] == pytest.approx(test_half, rel=1e-4)


def test_wilson_interval_by_hand_and_at_the_edges():
    # p = 0.8, n = 10, z = 1.96: centre 0.71675, half 0.22658.
    lo, hi = st.wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((0.49016, 0.94331), abs=1e-4)
    lo, hi = st.wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.16113, abs=1e-4)
    with pytest.raises(ValueError, match="successes <= total"):
        st.wilson_interval(11, 10)


def test_mcnemar_on_a_hand_table():
    # 2x2 table: both right 5, A only 6 (b), B only 1 (c), both wrong 3.
    a = [1] * 5 + [1] * 6 + [0] * 1 + [0] * 3
    b = [1] * 5 + [0] * 6 + [1] * 1 + [0] * 3
    r = pt.mcnemar(a, b)
    assert (r["b"], r["c"]) == (6, 1)
    # Exact two-sided: 2 * P(X <= 1), X ~ Bin(7, 1/2) = 2 * 8 / 128.
    assert r["p_value"] == pytest.approx(16 / 128)
    assert r["p_value"] == pytest.approx(sps.binomtest(6, 7, 0.5).pvalue)
    assert r["difference"] == pytest.approx((1 - 6) / 15)
    assert pt.mcnemar([1, 0], [1, 0])["p_value"] == 1.0
    with pytest.raises(ValueError, match="same test images"):
        pt.mcnemar([1, 0], [1, 0, 1])


def test_bootstrap_interval_is_seeded_and_near_the_wilson_interval():
    rng = np.random.default_rng(1)
    correct = (rng.random(5000) < 0.9).astype(float)
    r1 = st.bootstrap_interval(correct, n_resamples=1000, seed=3)
    r2 = st.bootstrap_interval(correct, n_resamples=1000, seed=3)
    assert r1 == r2
    lo, hi = st.wilson_interval(int(correct.sum()), correct.size)
    assert r1["lo"] == pytest.approx(lo, abs=0.003)
    assert r1["hi"] == pytest.approx(hi, abs=0.003)


def test_paired_bootstrap_is_tighter_than_unpaired_for_correlated_models():
    rng = np.random.default_rng(0)
    hard = rng.random(4000) < 0.2  # both models fail the hard images
    a = (~hard & (rng.random(4000) < 0.97)).astype(float)
    b = a.copy()
    flip = np.flatnonzero(a == 0)[:40]  # B fixes 40 of A's errors
    b[flip] = 1.0
    r = pt.paired_bootstrap(a, b, n_resamples=1000, seed=0)
    assert r["difference"] == pytest.approx(40 / 4000)
    assert r["lo"] > 0  # B never worse on a resample: always >= 0
    assert pt.verdict(r["difference"], interval=(r["lo"], r["hi"])) == "holds"
    # Unpaired, the 1-point gain drowns in each model's own test noise.
    ia = st.bootstrap_interval(a, n_resamples=1000, seed=0)
    assert ia["hi"] - ia["lo"] > 3 * (r["hi"] - r["lo"])


def test_hierarchical_bootstrap_widens_with_seed_spread():
    rng = np.random.default_rng(0)
    base = (rng.random((1, 3000)) < 0.95).astype(float)
    a = np.repeat(base, 3, axis=0)
    b = a.copy()
    b[:, :30] = 1.0  # same +gain for every seed of B
    tight = pt.hierarchical_bootstrap(a, b, n_resamples=300, seed=0)
    noisy_b = b.copy()
    noisy_b[0, 100:400] = 0.0  # one bad seed of B: seed spread
    wide = pt.hierarchical_bootstrap(a, noisy_b, n_resamples=300, seed=0)
    assert tight["difference"] == pytest.approx(b.mean() - a.mean())
    assert wide["hi"] - wide["lo"] > 3 * (tight["hi"] - tight["lo"])
    with pytest.raises(ValueError, match="same test images"):
        pt.hierarchical_bootstrap(a, b[:, :10])


@pytest.mark.parametrize(
    "diff, p, direction, expected",
    [
        (0.01, 0.001, 1, "holds"),
        (0.01, 0.001, -1, "fails"),
        (-0.01, 0.001, -1, "holds"),
        (0.01, 0.2, 1, "not significant"),
        (0.0, 0.001, 1, "not significant"),
    ],
)
def test_verdict(diff, p, direction, expected):
    assert pt.verdict(diff, p_value=p, direction=direction) == expected


def test_verdict_needs_a_test_and_agreement():
    with pytest.raises(ValueError, match="p_value"):
        pt.verdict(0.1)
    # Significant p but an interval over 0: not significant.
    assert (
        pt.verdict(0.1, p_value=0.01, interval=(-0.01, 0.2))
        == "not significant"
    )
    assert pt.verdict(-0.1, interval=(-0.2, -0.01)) == "fails"


def test_smooth_is_a_centred_moving_average_with_shrinking_ends():
    out = smoothing.smooth([1.0, 2.0, 6.0, 2.0, 1.0], window=3)
    assert out.tolist() == pytest.approx([1.0, 3.0, 10 / 3, 3.0, 1.0])
    out5 = smoothing.smooth([0, 0, 5, 0, 0, 10], window=5)
    assert out5.tolist() == pytest.approx([0, 5 / 3, 1, 3, 10 / 3, 10])
    with pytest.raises(ValueError, match="odd"):
        smoothing.smooth([1, 2], window=2)


def test_steps_to_threshold_needs_the_curve_to_stay_above():
    steps = [500, 1000, 1500, 2000, 2500, 3000]
    # Crosses at 1000, drops back at 1500, stays from 2000.
    values = [0.90, 0.97, 0.95, 0.97, 0.98, 0.98]
    assert smoothing.steps_to_threshold(steps, values, 0.97, window=1) == 2000
    # Smoothed (k=3): [0.90, 0.94, 0.963, 0.967, 0.977, 0.98] -> 2500.
    assert smoothing.steps_to_threshold(steps, values, 0.97, window=3) == 2500
    # A single lucky last-but-one point followed by a drop: never reached.
    assert (
        smoothing.steps_to_threshold(steps, values[:-1] + [0.9], 0.97) is None
    )
    assert smoothing.steps_to_threshold(steps, [1.0] * 6, 0.5) == 500
    with pytest.raises(ValueError, match="ascending"):
        smoothing.steps_to_threshold([2, 1], [0, 1], 0.5)


def test_seed_difference_is_welch_by_hand():
    a, b = [10.0, 12.0, 14.0], [5.0, 6.0, 7.0, 8.0]
    r = pt.seed_difference(a, b)
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 4
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)  # Welch-Satterthwaite
    diff = 6.5 - 12.0
    assert r["difference"] == pytest.approx(diff)
    assert r["p_value"] == pytest.approx(2 * sps.t.sf(abs(diff) / se, df))
    half = sps.t.ppf(0.975, df) * se
    assert (r["lo"], r["hi"]) == pytest.approx((diff - half, diff + half))
    assert pt.verdict(diff, interval=(r["lo"], r["hi"]), direction=-1) == (
        "holds"
    )
    with pytest.raises(ValueError, match="at least 2 seeds"):
        pt.seed_difference([1.0], [2.0, 3.0])
