"""Fast tests of the BN-MNIST Fig. 1 report on fabricated runs.

The rows (seed mean with the test-set error, smoothed steps to 96% / 97%,
tuning-split accuracy) are checked against NumPy/scipy written straight
from the definitions; the claims against cases whose verdict is known; the
MLflow path (child runs, a logged Keras model scored per image) end to end
on a temporary store.
"""

import csv
import math

import numpy as np
import pytest
from scipy import stats as sps

from convnet_repro.experiments.probes import metric_key
from convnet_repro.experiments.reports import bn_mnist
from convnet_repro.experiments.reports import bn_mnist_summary
from convnet_repro.experiments.reports import bn_mnist_table

STEPS = [500, 1000, 1500, 2000, 2500, 3000]
# Fabricated test-accuracy curves: {variant: {seed: values at STEPS}}.
CURVES = {
    "baseline": {
        0: [0.80, 0.90, 0.95, 0.962, 0.955, 0.965],
        1: [0.78, 0.91, 0.94, 0.958, 0.962, 0.964],
        2: [0.82, 0.92, 0.955, 0.96, 0.963, 0.966],
    },
    "bn": {
        0: [0.93, 0.966, 0.970, 0.975, 0.978, 0.980],
        1: [0.94, 0.960, 0.975, 0.971, 0.979, 0.982],
        2: [0.95, 0.962, 0.964, 0.972, 0.976, 0.978],
    },
}
N_IMG = 2000
PARAMS = {
    "trainer.steps": "3000",
    "data.num_train_examples": "50000",
    "data.binarize": "True",
    "data.batch_size": "60",
    "optimizer.learning_rate": "0.5",
}


def _correct(variant, seed):
    """Per-image correctness: BN right on 40 more images than no BN."""
    rng = np.random.default_rng(seed)
    c = (rng.random(N_IMG) < 0.95).astype(np.int8)
    c[:60] = 0  # images both get wrong
    if variant == "bn":
        c[60:100] = 1
    else:
        c[60:100] = 0
    return c


def _runs(**overrides):
    runs = []
    for variant, seeds in CURVES.items():
        for seed, values in seeds.items():
            q50 = [
                (
                    s,
                    (2.0 if variant == "baseline" else 0.2) * s / 3000
                    + seed / 100,
                )
                for s in STEPS
            ]
            runs.append(
                {
                    "variant": variant,
                    "seed": str(seed),
                    "run_id": f"{variant}{seed}" * 4,
                    "params": dict(PARAMS),
                    "accuracy": list(zip(STEPS, values)),
                    "percentiles": {50: q50},
                    "correct_test": _correct(variant, seed),
                    "correct_tuning": _correct(variant, seed + 10)[:500],
                    **overrides,
                }
            )
    return runs


def _smoothed_steps(values, thr):
    v = np.asarray(values)
    sm = np.array([v[0], *((v[:-2] + v[1:-1] + v[2:]) / 3), v[-1]])
    ok = sm >= thr
    if not ok[-1]:
        return None
    return STEPS[int(np.flatnonzero(~ok)[-1]) + 1] if (~ok).any() else STEPS[0]


def test_rows_match_the_definitions():
    summary = bn_mnist_summary.summarize(_runs(), num_test_images=N_IMG)
    base, bn = summary["rows"]
    assert (base["variant"], bn["variant"]) == ("baseline", "bn")
    assert bn["seeds"] == ["0", "1", "2"] and bn["steps"] == 3000
    assert bn["train_images"] == "50000" and bn["test_images"] == N_IMG
    accs = np.array([_correct("bn", s).mean() for s in range(3)])
    p = accs.mean()
    half = math.hypot(
        sps.t.ppf(0.975, 2) * accs.std(ddof=1) / math.sqrt(3),
        1.959964 * math.sqrt(p * (1 - p) / N_IMG),
    )
    assert bn["test_acc"]["mean"] == pytest.approx(p)
    assert bn["test_acc"]["hi"] - p == pytest.approx(half, rel=1e-5)
    moving = [v[-1] for v in CURVES["bn"].values()]
    assert bn["test_acc_moving"]["mean"] == pytest.approx(np.mean(moving))
    tuning = [_correct("bn", s + 10)[:500].mean() for s in range(3)]
    assert bn["tuning_acc"]["mean"] == pytest.approx(np.mean(tuning))
    for thr in (0.96, 0.97):
        for row, name in ((base, "baseline"), (bn, "bn")):
            want = [_smoothed_steps(v, thr) for v in CURVES[name].values()]
            assert row["steps_to"][str(thr)]["per_seed"] == want, (name, thr)
    # Baseline crosses 96% at 2,000 in seed 0 but dips at 2,500: smoothed,
    # it stays above only from 2,500.
    assert base["steps_to"]["0.96"]["per_seed"][0] == 2500
    assert base["steps_to"]["0.97"]["reached"] == 0


def test_claims_and_verdicts():
    claims = {
        c["claim"]: c
        for c in bn_mnist_summary.summarize(_runs(), num_test_images=N_IMG)[
            "claims"
        ]
    }
    acc = claims["BN ends more accurate (Alg. 2 test acc.)"]
    want = np.mean(
        [
            _correct("bn", s).mean() - _correct("baseline", s).mean()
            for s in range(3)
        ]
    )
    assert acc["difference"] == pytest.approx(want)
    assert acc["verdict"] == "holds"
    # McNemar per seed pair: BN right on 40 images, never the reverse.
    assert acc["mcnemar_p_per_seed"] == pytest.approx([2 * 0.5**40] * 3)
    steps96 = claims["BN reaches 96% in fewer steps"]
    assert steps96["verdict"] in ("holds", "not significant")
    assert steps96["speed_up"] > 1
    assert claims["BN reaches 97% in fewer steps"]["verdict"] == "not judged"
    drift = [c for k, c in claims.items() if "50th percentile" in k][0]
    assert drift["verdict"] == "holds"
    # q50 is linear in the step: range from step 500 (>= 10% of 3,000).
    assert drift["range_no_bn"] == pytest.approx(2.0 * 2500 / 3000)
    assert drift["range_bn"] == pytest.approx(0.2 * 2500 / 3000)
    shift = [c for k, c in claims.items() if "50th" in k and "shift" in k][0]
    # Mean over 10-20% of training (step 500) vs. the last 10% (3,000).
    assert shift["range_no_bn"] == pytest.approx(2.0 * 2500 / 3000)
    assert shift["verdict"] == "holds"


def test_one_seed_without_models_uses_logged_accuracies():
    runs = [
        {**r, "correct_test": None, "correct_tuning": None}
        for r in _runs()
        if r["seed"] == "0"
    ]
    runs[1]["accuracy_population"] = 0.981
    summary = bn_mnist_summary.summarize(runs, num_test_images=N_IMG)
    base, bn = summary["rows"]
    assert bn["test_acc"]["mean"] == 0.981  # Alg. 2, as logged
    assert base["test_acc"]["mean"] == CURVES["baseline"][0][-1]
    assert bn["tuning_acc"] is None
    verdicts = {c["claim"]: c["verdict"] for c in summary["claims"]}
    assert verdicts["BN ends more accurate (Alg. 2 test acc.)"] == "not judged"
    md = bn_mnist_table.format_markdown(summary)
    assert "| With BN | binary | 1 | 3,000 |" in md and "not judged" in md


def test_refuses_to_mix_runs_of_different_lengths_or_data():
    runs = _runs()
    runs[0]["params"]["data.num_train_examples"] = "5000"
    with pytest.raises(ValueError, match="data.num_train_examples"):
        bn_mnist_summary.summarize(runs)
    runs = _runs()
    runs[-1]["accuracy"] = runs[-1]["accuracy"][:-1]  # a shortened run
    with pytest.raises(ValueError, match="final_step"):
        bn_mnist_summary.summarize(runs)


def test_tuning_split_is_what_training_leaves_out():
    from convnet_repro.experiments.data import splits

    n = 600
    split = splits.Split(np.arange(n), images=np.zeros((n, 1, 1, 1)))
    kept = splits.subset(split, 500).labels
    held = bn_mnist.tuning_split_index(500, n)
    assert len(held) == 100 and not set(kept) & set(held)
    assert sorted({*kept, *held}) == list(range(n))
    with pytest.raises(ValueError, match="num_train_examples"):
        bn_mnist.tuning_split_index(0)


def _log_model(tmp_path, weight):
    """A tiny logged 'MLP': class = argmax of W x over 4 pixels."""
    import keras
    import mlflow

    model = keras.Sequential(
        [keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    model.layers[-1].set_weights([weight, np.zeros(2)])
    path = tmp_path / "model.keras"
    model.save(path)
    mlflow.log_artifact(str(path), artifact_path="model")


def test_report_reads_mlflow_children_scores_models_and_writes(
    tmp_path, monkeypatch
):
    import mlflow

    # Eval images: class 1 iff pixel 0 is bright; 8 test, 4 tuning images.
    x = np.zeros((8, 2, 2, 1), np.float32)
    x[4:, 0, 0, 0] = 1.0
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    sets = {"test": (x, y), "tuning": (x[2:6], y[2:6])}
    monkeypatch.setattr(bn_mnist, "load_eval_sets", lambda cfg: sets)
    good = np.array([[0, 1], [0, 0], [0, 0], [0, 0]], np.float32)
    bad = np.zeros((4, 2), np.float32)  # always class 0: 50% right
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    try:
        exp_id = mlflow.create_experiment(
            "bn_mnist_test", artifact_location=(tmp_path / "art").as_uri()
        )
        keys = {q: metric_key("sigmoid_in", 0, q) for q in (15, 50, 85)}
        with mlflow.start_run(experiment_id=exp_id) as parent:
            for variant in ("baseline", "bn"):
                for seed in (0,):  # one model each: keeps the test fast
                    with mlflow.start_run(
                        experiment_id=exp_id,
                        run_name=f"{variant}-seed{seed}",
                        nested=True,
                        tags={"variant": variant, "seed": str(seed)},
                    ):
                        mlflow.log_params(PARAMS)
                        for step in STEPS:
                            acc = (
                                (0.5 if variant == "baseline" else 1.0)
                                * step
                                / 3000
                            )
                            metrics = {"val/top1_accuracy": acc}
                            metrics.update(
                                {
                                    k: q / 50 + step / 1e4
                                    for q, k in keys.items()
                                }
                            )
                            mlflow.log_metrics(metrics, step=step)
                        _log_model(
                            tmp_path, bad if variant == "baseline" else good
                        )
            out = bn_mnist.report(
                {"experiment_name": "bn_mnist_test", "data": {}},
                parent.info.run_id,
                metric="val/top1_accuracy",
                results_dir=str(tmp_path / "results"),
            )
        base, bn = out["rows"]
        assert base["test_acc"]["mean"] == 0.5 and bn["test_acc"]["mean"] == 1.0
        assert (
            bn["tuning_acc"]["mean"] == 1.0
            and base["tuning_acc"]["mean"] == 0.5
        )
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
        md = (results / "table.md").read_text()
        assert "| With BN | binary | 1 | 3,000 | 50,000 / 8 |" in md
        assert parent.info.run_id in md
        artifacts = {
            a.path
            for a in mlflow.MlflowClient().list_artifacts(
                parent.info.run_id, "report"
            )
        }
        assert {"report/fig1.png", "report/table.md"} <= artifacts
    finally:
        mlflow.set_tracking_uri(previous)
