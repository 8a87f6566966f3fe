"""Table maths of the BN-Inception report (BN paper Fig. 3) on fabricated runs.

The expected values are computed with numpy straight from the definitions:
threshold = max accuracy of Inception; steps to threshold = first evaluated
step with accuracy >= threshold; speed-up = baseline steps / variant steps.
"""

import csv
import json

import numpy as np
import pytest
from scipy import stats as sps

from convnet_repro.experiments.reports import bn_inception
from convnet_repro.experiments.reports import bn_inception_curves
from convnet_repro.experiments.reports import bn_inception_output
from convnet_repro.experiments.reports import bn_inception_seeds

STEPS = np.arange(100, 2001, 100)


def _fake_curves(seed=0):
    """Noisy saturating curves: BN variants rise faster, sigmoid stays low."""
    rng = np.random.default_rng(seed)
    rates = {
        "inception": 1 / 900,
        "bn_baseline": 1 / 400,
        "bn_x5": 1 / 150,
        "bn_x30": 1 / 100,
        "bn_x5_sigmoid": 1 / 300,
    }
    curves = {
        name: 0.1 + 0.6 * (1 - np.exp(-rate * STEPS))
        for name, rate in rates.items()
    }
    curves["inception_sigmoid"] = np.full(STEPS.shape, 0.1)
    return {
        name: np.clip(c + rng.normal(0, 0.01, STEPS.shape), 0, 1)
        for name, c in curves.items()
    }


def _numpy_reference(curves, baseline="inception"):
    threshold = float(np.max(curves[baseline]))
    expected = {}
    for name, acc in curves.items():
        hit = np.nonzero(acc >= threshold)[0]
        steps = int(STEPS[hit[0]]) if hit.size else None
        expected[name] = {
            "max": float(np.max(acc)),
            "step_at_max": int(STEPS[np.argmax(acc)]),
            "steps": steps,
        }
    base = expected[baseline]["steps"]
    for value in expected.values():
        value["speedup"] = base / value["steps"] if value["steps"] else None
    return threshold, expected


def _histories(curves, shuffle_seed=None):
    histories = {
        name: list(zip(STEPS.tolist(), acc.tolist()))
        for name, acc in curves.items()
    }
    if shuffle_seed is not None:  # the tracking store gives no order promise
        rng = np.random.default_rng(shuffle_seed)
        for pairs in histories.values():
            rng.shuffle(pairs)
    return histories


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summarize_matches_numpy_reference(seed):
    curves = _fake_curves(seed)
    threshold, expected = _numpy_reference(curves)
    thr, results = bn_inception_curves.summarize(_histories(curves, seed))
    assert thr == pytest.approx(threshold)
    assert [r.name for r in results] == list(bn_inception_curves.VARIANT_LABELS)
    for r in results:
        ref = expected[r.name]
        assert r.max_accuracy == pytest.approx(ref["max"])
        assert r.step_at_max == ref["step_at_max"]
        assert r.steps_to_threshold == ref["steps"]
        if ref["speedup"] is None:
            assert r.speedup is None
        else:
            assert r.speedup == pytest.approx(ref["speedup"])
    by_name = {r.name: r for r in results}
    # The baseline reaches its own maximum exactly when it first attains it.
    assert by_name["inception"].steps_to_threshold == (
        by_name["inception"].step_at_max
    )
    assert by_name["inception"].speedup == pytest.approx(1.0)
    assert by_name["inception_sigmoid"].steps_to_threshold is None
    assert by_name["bn_x30"].speedup > by_name["bn_baseline"].speedup > 1


def test_summarize_hand_computed_case():
    histories = {
        "inception": [(300, 0.30), (100, 0.10), (200, 0.25), (400, 0.28)],
        "bn_x5": [(100, 0.31), (200, float("nan")), (300, 0.40)],
        "bn_baseline": [(100, 0.2), (200, 0.3)],
        "other": [],
    }
    thr, results = bn_inception_curves.summarize(histories)
    assert thr == 0.30
    got = {r.name: r for r in results}
    assert [r.name for r in results] == [
        "inception",
        "bn_baseline",
        "bn_x5",
        "other",
    ]
    assert got["inception"].steps_to_threshold == 300
    assert got["bn_baseline"].steps_to_threshold == 200
    assert got["bn_baseline"].speedup == pytest.approx(1.5)
    assert got["bn_x5"].steps_to_threshold == 100
    assert got["bn_x5"].speedup == pytest.approx(3.0)
    assert got["bn_x5"].steps == [100, 300]  # NaN evaluation dropped
    assert got["bn_x5"].max_accuracy == 0.40
    assert got["other"].max_accuracy is None
    assert got["other"].steps_to_threshold is None


def test_fixed_threshold_overrides_baseline_max():
    histories = {"inception": [(1, 0.5), (2, 0.6)], "bn_x5": [(1, 0.7)]}
    thr, results = bn_inception_curves.summarize(histories, threshold=0.55)
    assert thr == 0.55
    assert [r.steps_to_threshold for r in results] == [2, 1]


def test_missing_baseline_is_a_clear_error():
    with pytest.raises(ValueError, match="Received: variants=\\['bn_x5'\\]"):
        bn_inception_curves.summarize({"bn_x5": [(1, 0.5)]})
    thr, (result,) = bn_inception_curves.summarize(
        {"bn_x5": [(1, 0.5)]}, strict=False
    )
    assert thr is None and result.max_accuracy == 0.5
    assert result.steps_to_threshold is None and result.speedup is None


def test_steps_to_threshold_checks_lengths():
    assert (
        bn_inception_curves.steps_to_threshold([5, 6], [0.1, 0.2], 0.3) is None
    )
    with pytest.raises(ValueError, match="len\\(steps\\)=2"):
        bn_inception_curves.steps_to_threshold([1, 2], [0.1], 0.1)


PAPER = {
    "source": "BN paper Fig. 3",
    "threshold": 0.722,
    "variants": {
        "inception": {"steps_to_threshold": 31.0e6, "max_accuracy": 0.722},
        "bn_x30": {
            "steps_to_threshold": 2.7e6,
            "max_accuracy": 0.748,
            "note": "at 6·10^6 steps",
        },
    },
}


def test_markdown_has_paper_and_our_columns():
    thr, results = bn_inception_curves.summarize(
        {
            "inception": [(100, 0.2), (200, 0.4)],
            "bn_x30": [(100, 0.45), (200, 0.5)],
            "inception_sigmoid": [(100, 0.1), (200, 0.1)],
        }
    )
    md = bn_inception_output.format_markdown(thr, results, PAPER, title="t")
    lines = md.splitlines()
    assert lines[0] == "### t"
    assert "Paper: steps to 72.2%" in lines[2]
    assert "Ours: steps to 40.0%" in lines[2]
    assert (
        "| Inception | 31.0·10^6 | 72.2% | 200 | 1.0x | 40.0% (200) | 200 |"
        in lines
    )
    assert (
        "| BN-x30 | 2.7·10^6 | 74.8% (at 6·10^6 steps) | 100 | 2.0x "
        "| 50.0% (200) | 200 |" in lines
    )
    assert (
        "| Inception-Sigmoid | n/a | n/a | not reached | n/a | 10.0% (100) "
        "| 200 |" in lines
    )


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    mlflow.set_experiment("bn_inception_test")
    yield mlflow
    mlflow.set_tracking_uri(None)


def test_report_reads_child_runs_and_writes_outputs(mlflow_store, tmp_path):
    mlflow = mlflow_store
    curves = _fake_curves(3)
    threshold, expected = _numpy_reference(curves)
    with mlflow.start_run(run_name="bn_inception") as parent:
        for name, acc in curves.items():
            with mlflow.start_run(run_name=name, nested=True) as child:
                for step, value in zip(STEPS, acc):
                    mlflow.log_metric(
                        "val/top1_accuracy", value, step=int(step)
                    )
                mlflow.log_metric("val_loss", 1.0, step=100)  # ignored
            if name == "bn_x30":
                mlflow.MlflowClient().set_terminated(
                    child.info.run_id, "FAILED"
                )
    out_dir = tmp_path / "results"
    cfg = {"experiment_name": "bn_inception", "paper": PAPER}
    out = bn_inception.report(
        cfg,
        parent.info.run_id,
        results_dir=out_dir,
        fixed_thresholds=[0.3, 0.5],
        chance=0.1,
    )

    assert out["threshold"] == pytest.approx(threshold)
    rows = {row["variant"]: row for row in out["rows"]}
    assert set(rows) == set(curves)
    for name, ref in expected.items():
        assert rows[name]["steps_to_threshold"] == ref["steps"]
        assert rows[name]["max_accuracy"] == pytest.approx(ref["max"])
        assert rows[name]["final_step"] == int(STEPS[-1])
    assert rows["inception"]["paper_steps_to_threshold"] == 31.0e6

    names = {"table.md", "table.csv", "summary.json", "accuracy_vs_steps.png"}
    assert {p.name for p in out_dir.iterdir()} == names
    assert (out_dir / "accuracy_vs_steps.png").stat().st_size > 1000
    with (out_dir / "table.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["variant"] for r in csv_rows] == list(
        bn_inception_curves.VARIANT_LABELS
    )
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["curves"]["bn_x5"][0] == STEPS.tolist()
    table_md = (out_dir / "table.md").read_text()
    assert "bn_inception (cf. BN paper Fig. 3)" in table_md
    assert "Evaluations up to step 2,000, every 100 steps." in table_md
    assert (
        "Runs not finished: bn_x30 (FAILED; last evaluation at step 2,000)."
        in table_md
    )
    assert "Warning" not in table_md  # Inception learned (max ~0.65)
    # Fixed-accuracy table, numpy reference: first step from which the
    # centred 3-point moving average stays >= t.
    for t in (0.3, 0.5):
        for name, acc in curves.items():
            got = out["steps_to_fixed"][name][[0.3, 0.5].index(t)]
            assert got == _smoothed_stays(acc, t), (name, t)
    assert "| Model | Seeds | steps to 30.0% | steps to 50.0% |" in table_md
    assert summary["fixed_thresholds"] == [0.3, 0.5]
    artifacts = mlflow.MlflowClient().list_artifacts(
        parent.info.run_id, "report"
    )
    assert {pathlib_name(a.path) for a in artifacts} == names


def _smoothed_stays(acc, t):
    acc = np.asarray(acc)
    sm = np.concatenate(
        [acc[:1], (acc[:-2] + acc[1:-1] + acc[2:]) / 3, acc[-1:]]
    )
    if sm[-1] < t:
        return None
    below = np.nonzero(sm < t)[0]
    return int(STEPS[below[-1] + 1]) if below.size else int(STEPS[0])


def test_fixed_thresholds_need_the_smoothed_curve_to_stay_above():
    # One lucky evaluation (0.5 at step 300) then a fall back: the smoothed
    # rule answers 600, first crossing would say 300.
    acc = [0.1, 0.2, 0.5, 0.3, 0.35, 0.5, 0.55, 0.6]
    hist = {"inception": list(zip(range(100, 900, 100), acc))}
    _, results = bn_inception_curves.summarize(hist)
    assert bn_inception_curves.steps_to_fixed(results, [0.45]) == {
        "inception": [600]
    }
    assert _smoothed_stays_at(acc, 0.45) == 600


def _smoothed_stays_at(acc, t):
    sm = [acc[0]] + [
        sum(acc[i - 1 : i + 2]) / 3 for i in range(1, len(acc) - 1)
    ]
    sm.append(acc[-1])
    first = max(i for i, v in enumerate(sm) if v < t) + 1
    return 100 * (first + 1)


def test_several_seeds_give_a_mean_curve_and_seed_intervals():
    hist = {
        "inception": {
            "0": [(100, 0.2), (200, 0.4), (300, 0.6), (400, 0.6)],
            "1": [(100, 0.2), (200, 0.2), (300, 0.4), (400, 0.6)],
            "2": [(100, 0.2), (200, 0.6), (300, 0.6), (400, 0.7), (500, 0.8)],
        }
    }
    thr, (r,) = bn_inception_curves.summarize(hist)
    assert r.steps == [100, 200, 300, 400]  # steps every seed evaluated
    assert r.values == pytest.approx([0.2, 0.4, 1.6 / 3, 1.9 / 3])
    assert thr == pytest.approx(1.9 / 3)
    (cell,) = bn_inception_curves.steps_to_fixed_seeds([r], [0.5])["inception"]
    # Smoothed per seed: seed 0 -> 300, seed 1 -> 400, seed 2 -> 300
    # (its 0.6 at step 200 alone is not enough: smoothed 0.47).
    assert cell["per_seed"] == [300, 400, 300]
    mean, sem = 1000 / 3, sps.sem([300, 400, 300])
    lo, hi = sps.t.interval(0.95, 2, loc=mean, scale=sem)
    assert (cell["mean"], cell["lo"], cell["hi"]) == pytest.approx(
        (mean, lo, hi)
    )
    table = bn_inception_output.format_fixed_thresholds([r], [0.5])
    assert f"| Inception | 3 | 333 [{lo:,.0f}, {hi:,.0f}] |" in table


def _seeded(levels):
    """Seed curves rising linearly to each seed's level by step 400."""
    return {
        str(i): [(s, level * s / 400) for s in (100, 200, 300, 400)]
        for i, level in enumerate(levels)
    }


def test_fig3_claims_are_tested_over_seeds():
    hist = {
        "inception": _seeded([0.40, 0.44, 0.38]),
        "bn_baseline": _seeded([0.60, 0.62, 0.61]),
        "bn_x5": _seeded([0.62, 0.58, 0.66]),
        "bn_x30": _seeded([0.61]),  # one seed: not tested
    }
    _, results = bn_inception_curves.summarize(hist)
    maxima = bn_inception_seeds.seed_maxima(results)
    assert maxima["inception"] == pytest.approx([0.40, 0.44, 0.38])
    out = bn_inception_seeds.compare_seeds(results, [0.5])
    by_pair = {(c["claim"], c["pair"]): c for c in out}
    c = by_pair["higher max accuracy", "BN-Baseline vs Inception"]
    ref = sps.ttest_ind([60, 62, 61], [40, 44, 38], equal_var=False)
    assert c["difference"] == pytest.approx(61 - 122 / 3)
    assert c["p_value"] == pytest.approx(ref.pvalue)
    assert c["verdict"] == "holds"
    c = by_pair["higher max accuracy", "BN-x30 vs Inception"]
    assert c["verdict"] == "not tested (BN-x30: 1 seed)"
    # Steps to 50%: Inception's seeds never get there (censored).
    c = by_pair["fewer steps to 50%", "BN-Baseline vs Inception"]
    assert c["verdict"] == "not tested (Inception: 0/3 seeds reached it)"
    assert "difference" not in c
    c = by_pair["fewer steps to 50%", "BN-x5 vs BN-Baseline"]
    assert c["verdict"] == "not significant"
    table = bn_inception_seeds.format_comparisons(results, out)
    assert "| Inception | 40.0%, 44.0%, 38.0% |" in table
    assert (
        "| higher max accuracy | BN-Baseline vs Inception | +20.3 pts" in table
    )


def pathlib_name(path):
    return path.rsplit("/", 1)[-1]


def test_report_without_children_is_a_clear_error(mlflow_store, tmp_path):
    with mlflow_store.start_run() as parent:
        pass
    with pytest.raises(ValueError, match="Received: parent_run_id="):
        bn_inception.report(None, parent.info.run_id, results_dir=tmp_path)


def test_report_merges_parents_cuts_curves_and_warns_at_chance(
    mlflow_store, tmp_path
):
    mlflow = mlflow_store
    curves = {
        "inception": [0.10, 0.11, 0.09, 0.30],
        "bn_x5": [0.12, 0.2, 0.3, 0.5],
    }
    parents = []
    for name, acc in curves.items():  # one parent per variant
        with mlflow.start_run() as parent:
            with mlflow.start_run(run_name=name, nested=True):
                for step, value in zip((50, 100, 150, 200), acc):
                    mlflow.log_metric("val/top1_accuracy", value, step=step)
        parents.append(parent.info.run_id)
    out = bn_inception.report(
        None,
        parents,
        results_dir=tmp_path,
        fixed_thresholds=[0.2],
        chance=0.1,
        max_step=150,  # the 0.30 / 0.5 evaluations at step 200 are cut
    )
    assert out["threshold"] == pytest.approx(0.11)
    assert out["steps_to_fixed"] == {"inception": [None], "bn_x5": [100]}
    rows = {row["variant"]: row for row in out["rows"]}
    assert rows["bn_x5"]["max_accuracy"] == pytest.approx(0.3)
    assert rows["bn_x5"]["steps_to_threshold"] == 50
    assert rows["bn_x5"]["speedup"] == pytest.approx(2.0)
    for parent in parents:
        assert mlflow.MlflowClient().list_artifacts(parent, "report")
    table_md = (tmp_path / "table.md").read_text()
    assert "**Warning:** the Inception maximum (11.0%) is within 5.0%" in (
        table_md
    )
    assert "| BN-x5 | 1 | 100 |" in table_md
    # A variant under two parents comes from the first one listed.
    with mlflow.start_run() as late:
        with mlflow.start_run(run_name="bn_x5", nested=True):
            mlflow.log_metric("val/top1_accuracy", 0.9, step=50)
    out = bn_inception.report(
        None, [parents[0], late.info.run_id, parents[1]], results_dir=tmp_path
    )
    assert out["rows"][1]["max_accuracy"] == pytest.approx(0.9)
    assert f"bn_x5 `{late.info.run_id}`" in (tmp_path / "table.md").read_text()
    # The engine's hook on a parent without the baseline still writes the
    # table (no threshold) instead of failing after the runs.
    out = bn_inception.report(None, parents[1], results_dir=tmp_path)
    assert out["threshold"] is None
    assert out["rows"][0]["max_accuracy"] == pytest.approx(0.5)
    assert "**No 'inception' run**" in (tmp_path / "table.md").read_text()
