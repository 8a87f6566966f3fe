"""Per-row intervals and paired verdicts of the ImageNet table."""

import numpy as np
import pytest
from scipy import stats as sps

from convnet_repro.experiments.reports import imagenet_output
from convnet_repro.experiments.reports import imagenet_rows
from convnet_repro.experiments.reports import imagenet_stats
from convnet_repro.experiments.reports import statistics as st


def _probs(labels, wrong, classes, top5_wrong=()):
    """Probabilities whose top-1 is wrong on `wrong` (label 2nd), and whose
    top-5 misses the label on `top5_wrong` (label last)."""
    n = len(labels)
    p = np.tile(np.linspace(1.0, 0.1, classes), (n, 1)).astype(np.float32)
    order = np.zeros((n, classes), dtype=int)
    for i, y in enumerate(labels):
        others = [c for c in range(classes) if c != y]
        if i in top5_wrong:
            ranking = others + [y]
        elif i in wrong:
            ranking = others[:1] + [y] + others[1:]
        else:
            ranking = [y] + others
        order[i] = ranking
    out = np.empty_like(p)
    np.put_along_axis(out, order, p, axis=1)
    return out


def test_hits_by_hand():
    p = _probs([0, 1, 2], wrong={1}, classes=10, top5_wrong={2})
    loaded = imagenet_stats.from_probabilities(p, [0, 1, 2])
    assert loaded["hits"].tolist() == [[1, 1], [0, 1], [0, 0]]
    assert loaded["classes"] == 10
    with pytest.raises(ValueError, match=r"labels \(N,\)"):
        imagenet_stats.from_probabilities(p, [0, 1])


def _row(run_id, top1=0.0, top5=0.0):
    """A single AlexNet model's centre-crop row on 400 images, named after
    its evaluation run; the other fields keep `Row`'s defaults."""
    # family, row, protocol, num_models, num_views, num_images, top1, top5
    return imagenet_rows.Row(
        "AlexNet", run_id, "center", 1, 1, 400, top1, top5, run_id=run_id
    )


def _loader(classes=20, n=400):
    labels = np.arange(n) % classes
    runs = {
        "few": _probs(labels, wrong=set(range(0, 120)), classes=classes),
        # 40 fewer errors, on the same images, never a new one: holds.
        "many": _probs(labels, wrong=set(range(40, 120)), classes=classes),
        # 2 fewer and 2 new errors: no difference.
        "same": _probs(labels, wrong=set(range(2, 122)), classes=classes),
    }
    return lambda rid: (
        imagenet_stats.from_probabilities(runs[rid], labels)
        if rid in runs
        else None
    )


def _check(better, worse, metric="top1_error"):
    return {
        "claim": "multi-crop < fewer crops",
        "metric": metric,
        "better_run_id": better,
        "worse_run_id": worse,
    }


def test_judge_verdicts_from_paired_tests():
    corr = imagenet_stats.Correctness(_loader())
    held = imagenet_stats.judge(_check("many", "few"), corr)
    assert held["verdict"] == "holds"
    assert held["difference"] == pytest.approx(-10.0)  # 40 of 400 images
    assert held["p_mcnemar"] == pytest.approx(sps.binomtest(0, 40).pvalue)
    fails = imagenet_stats.judge(_check("few", "many"), corr)
    assert fails["verdict"] == "fails"
    same = imagenet_stats.judge(_check("same", "few"), corr)
    assert same["verdict"] == "not significant"
    gone = imagenet_stats.judge(_check("many", "nothing"), corr)
    assert gone["verdict"] == "not judged (no stored predictions)"


def test_top5_of_ten_classes_is_never_judged():
    corr = imagenet_stats.Correctness(_loader(classes=10))
    c = imagenet_stats.judge(_check("many", "few", "top5_error"), corr)
    assert c["verdict"].startswith("weak") and "difference" not in c
    # Top-1 of the same runs is judged.
    c = imagenet_stats.judge(_check("many", "few"), corr)
    assert c["verdict"] == "holds"


def test_row_interval_is_the_bootstrap_of_its_errors():
    corr = imagenet_stats.Correctness(_loader())
    ci = imagenet_stats.row_intervals(_row("few"), corr)
    errors = np.r_[np.ones(120), np.zeros(280)]
    want = st.bootstrap_interval(errors, n_resamples=2000, seed=0)
    assert ci["top1_error"] == pytest.approx(
        (100 * want["lo"], 100 * want["hi"])
    )
    lo, hi = st.wilson_interval(120, 400)
    assert ci["top1_error"][0] == pytest.approx(100 * lo, abs=1.0)
    assert imagenet_stats.row_intervals(_row("nothing"), corr) == {}


def test_markdown_prints_intervals_and_verdicts():
    corr = imagenet_stats.Correctness(_loader())
    rows = [_row("few", 30.0), _row("many", 20.0)]
    check = imagenet_stats.judge(
        {
            **_check("many", "few"),
            "better": "many",
            "worse": "few",
            "better_error": 20.0,
            "worse_error": 30.0,
            "holds": True,
        },
        corr,
    )
    intervals = {r.run_id: imagenet_stats.row_intervals(r, corr) for r in rows}
    md = imagenet_output.format_markdown(rows, [check], intervals=intervals)
    lo, hi = intervals["few"]["top1_error"]
    assert f"30.00 [{lo:.1f}, {hi:.1f}]" in md
    assert "paired tests: holds 1" in md
    assert "  - holds (top-1): many 20.00 vs few 30.00; difference -10.00" in md


def test_member_summary_is_the_seed_interval_with_range():
    got = imagenet_stats.member_summary([40.0, 44.0, 46.0, 50.0, 45.0], 5)
    half = sps.t.ppf(0.975, 4) * np.std([40, 44, 46, 50, 45], ddof=1)
    assert got["mean"] == pytest.approx(45.0)
    assert got["hi"] - got["mean"] == pytest.approx(half / np.sqrt(5))
    assert (got["min"], got["max"], got["n"], got["of"]) == (40.0, 50.0, 5, 5)
    assert imagenet_stats.member_summary([], 5) is None


def test_top5_check_is_weak_at_mini_scale_without_predictions():
    corr = imagenet_stats.Correctness(lambda run_id: None)
    c = imagenet_stats.judge(_check("a", "b", "top5_error"), corr)
    assert c["verdict"] == "not judged (no stored predictions)"
    assert not c.get("weak")
    c = imagenet_stats.judge(
        _check("a", "b", "top5_error"), corr, weak_top5=True
    )
    assert c["weak"] and c["verdict"].startswith("weak")
    c = imagenet_stats.judge(_check("a", "b"), corr, weak_top5=True)
    assert "weak" not in c  # top-1 is never weak
