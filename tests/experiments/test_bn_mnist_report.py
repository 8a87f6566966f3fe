"""Fast tests of the BN-MNIST Fig. 1 report on fabricated MLflow runs.

The table maths (mean +/- sample std over seeds, threshold = the baseline's
mean final accuracy, steps to reach it) are checked against NumPy written
straight from the definitions.
"""

import csv
import pathlib

import numpy as np
import pytest
from omegaconf import OmegaConf

from experiments.probes import metric_key
from experiments.reports import bn_mnist

# The fixture runs log the keys training logs, and the report reads them
# with the settings the experiment config gives its hook (not the defaults).
REPORT = OmegaConf.load(
    pathlib.Path(__file__).resolve().parents[2]
    / "conf/experiment/bn_mnist.yaml"
).report

STEPS = [0, 500, 1000, 1500, 2000]
# Fabricated test-accuracy curves: {variant: {seed: values at STEPS}}.
CURVES = {
    "baseline": {
        0: [0.10, 0.80, 0.90, 0.950, 0.960],
        1: [0.11, 0.78, 0.91, 0.940, 0.970],
        2: [0.09, 0.82, 0.92, 0.955, 0.965],
    },
    "bn": {
        0: [0.10, 0.93, 0.966, 0.970, 0.980],
        1: [0.12, 0.94, 0.960, 0.975, 0.982],
        2: [0.10, 0.95, 0.962, 0.964, 0.978],
    },
}
POPULATION = {"bn": {0: 0.981, 1: 0.983, 2: 0.977}}


def test_first_step_at_least():
    assert bn_mnist.first_step_at_least([1, 2, 3], [0.1, 0.5, 0.4], 0.5) == 2
    assert bn_mnist.first_step_at_least([1, 2], [0.1, 0.2], 0.5) is None
    with pytest.raises(ValueError, match="same length"):
        bn_mnist.first_step_at_least([1, 2], [0.1], 0.5)


def test_mean_curve_uses_common_steps():
    steps, mean, lo, hi = bn_mnist.mean_curve(
        [[(0, 0.1), (10, 0.5), (20, 0.7)], [(0, 0.3), (20, 0.9)]]
    )
    np.testing.assert_array_equal(steps, [0, 20])
    np.testing.assert_allclose(mean, [0.2, 0.8])
    np.testing.assert_allclose(lo, [0.1, 0.7])
    np.testing.assert_allclose(hi, [0.3, 0.9])


def _runs():
    runs = []
    for variant, seeds in CURVES.items():
        for seed, values in seeds.items():
            runs.append(
                {
                    "variant": variant,
                    "seed": str(seed),
                    "accuracy": list(zip(STEPS, values)),
                    "accuracy_population": POPULATION.get(variant, {}).get(
                        seed
                    ),
                }
            )
    return runs


def _expected():
    """The table written straight from the definitions with NumPy."""
    base = np.array([v[-1] for v in CURVES["baseline"].values()])
    bn = np.array([v[-1] for v in CURVES["bn"].values()])
    threshold = base.mean()
    bn_curves = np.array(list(CURVES["bn"].values()))
    mean_curve = bn_curves.mean(axis=0)
    step_mean = STEPS[int(np.argmax(mean_curve >= threshold))]
    per_seed = [STEPS[int(np.argmax(c >= threshold))] for c in bn_curves]
    pop = np.array(list(POPULATION["bn"].values()))
    return {
        "threshold": threshold,
        "base": (base.mean(), base.std(ddof=1)),
        "bn": (bn.mean(), bn.std(ddof=1)),
        "pop": (pop.mean(), pop.std(ddof=1)),
        "step_mean": step_mean,
        "per_seed": (np.mean(per_seed), np.std(per_seed, ddof=1)),
    }


def test_summarize_matches_numpy():
    exp = _expected()
    summary = bn_mnist.summarize(_runs())
    assert summary["threshold"] == pytest.approx(exp["threshold"])
    base, bn = summary["rows"]
    assert (base["variant"], bn["variant"]) == ("baseline", "bn")
    assert base["seeds"] == bn["seeds"] == 3
    assert bn["final_step"] == STEPS[-1]
    assert base["acc_moving_mean"] == pytest.approx(exp["base"][0])
    assert base["acc_moving_std"] == pytest.approx(exp["base"][1])
    assert bn["acc_moving_mean"] == pytest.approx(exp["bn"][0])
    assert bn["acc_moving_std"] == pytest.approx(exp["bn"][1])
    assert bn["acc_population_mean"] == pytest.approx(exp["pop"][0])
    assert bn["acc_population_std"] == pytest.approx(exp["pop"][1])
    assert base["acc_population_mean"] is None
    assert bn["steps_to_baseline_mean_curve"] == exp["step_mean"]
    assert bn["steps_to_baseline_per_seed_mean"] == pytest.approx(
        exp["per_seed"][0]
    )
    assert bn["steps_to_baseline_per_seed_std"] == pytest.approx(
        exp["per_seed"][1]
    )
    assert bn["seeds_reaching_baseline"] == 3
    # The baseline reaches its own mean final accuracy only at the end.
    assert base["steps_to_baseline_mean_curve"] == STEPS[-1]


def test_summarize_rejects_no_runs():
    with pytest.raises(ValueError, match="Received: runs"):
        bn_mnist.summarize([])


def test_report_reads_mlflow_children_and_writes_outputs(tmp_path):
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    try:
        exp_id = mlflow.create_experiment(
            "bn_mnist_test", artifact_location=(tmp_path / "art").as_uri()
        )
        keys = {q: metric_key("sigmoid_in", 0, q) for q in (15, 50, 85)}
        with mlflow.start_run(experiment_id=exp_id) as parent:
            for variant, seeds in CURVES.items():
                for seed, values in seeds.items():
                    with mlflow.start_run(
                        experiment_id=exp_id,
                        run_name=f"{variant}-seed{seed}",
                        nested=True,
                        tags={"variant": variant, "seed": str(seed)},
                    ):
                        for step, value in zip(STEPS, values):
                            metrics = {REPORT.metric: value}
                            metrics.update(
                                {
                                    k: q / 50 - 1 + step / 1e4
                                    for q, k in keys.items()
                                }
                            )
                            mlflow.log_metrics(metrics, step=step)
                        pop = POPULATION.get(variant, {}).get(seed)
                        if pop is not None:
                            mlflow.log_metric(
                                REPORT.population_metric, pop, step=STEPS[-1]
                            )
            out = bn_mnist.report(
                {"experiment_name": "bn_mnist_test"},
                parent.info.run_id,
                results_dir=str(tmp_path / "results"),
                metric=REPORT.metric,
                population_metric=REPORT.population_metric,
            )
        exp = _expected()
        assert out["threshold"] == pytest.approx(exp["threshold"])
        bn = out["rows"][1]
        assert bn["acc_population_mean"] == pytest.approx(exp["pop"][0])
        assert bn["steps_to_baseline_mean_curve"] == exp["step_mean"]
        assert out["wall_time_s"] is not None and out["wall_time_s"] >= 0

        results = tmp_path / "results"
        for name in (
            "table.md",
            "table.csv",
            "summary.json",
            "fig1.png",
            "fig1a_test_accuracy.png",
            "fig1b_sigmoid_input_no_bn.png",
            "fig1c_sigmoid_input_bn.png",
        ):
            assert (results / name).stat().st_size > 0, name
        with (results / "table.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert [r["variant"] for r in rows] == ["baseline", "bn"]
        assert float(rows[1]["acc_moving_mean"]) == pytest.approx(exp["bn"][0])
        md = (results / "table.md").read_text()
        assert f"{100 * exp['bn'][0]:.2f} ± {100 * exp['bn'][1]:.2f}" in md
        artifacts = {
            a.path
            for a in mlflow.MlflowClient().list_artifacts(
                parent.info.run_id, "report"
            )
        }
        assert "report/fig1.png" in artifacts
        assert "report/table.md" in artifacts
    finally:
        mlflow.set_tracking_uri(previous)
