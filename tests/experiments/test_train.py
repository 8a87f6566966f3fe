"""End-to-end tests of `experiments.engine.train.train` on tiny generated data.

Every run logs to a temporary SQLite MLflow store (no server).
"""

import keras
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.engine import optimization
from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import compose
from tests.experiments.training import global_step
from tests.experiments.training import metric_history

SMOKE = ["experiment=smoke"]
REPORT_CALLS = []


def record_report(cfg, parent_run_id):
    """A `report:` target that records its call and the parent's status
    (the report runs after the children, before the parent ends)."""
    status = MlflowClient().get_run(parent_run_id).info.status
    REPORT_CALLS.append((cfg.experiment_name, parent_run_id, status))


def _run(tmp_path, *overrides):
    cfg = compose(SMOKE + list(overrides), tmp_path=tmp_path)
    result = train_lib.train(cfg)
    return cfg, result, MlflowClient()


def test_smoke_run_logs_params_metrics_and_artifacts(tmp_path):
    cfg, result, client = _run(
        tmp_path,
        "+callbacks.probe._target_=tests.experiments.test_train.ProbeCallback",
    )
    assert result["status"] == "FINISHED"
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    # Flattened resolved config as params.
    params = run.data.params
    assert params["trainer.steps"] == "40"
    assert params["optimizer._target_"] == "keras.optimizers.SGD"
    assert params["optimizer.learning_rate"] == "0.05"
    assert params["data.input_shape"] == "[8, 8, 1]"
    assert params["model.num_classes"] == "4"  # interpolation resolved
    # Tags.
    tags = run.data.tags
    for key in ("keras_version", "tensorflow_version", "device", "git_dirty"):
        assert tags[key]
    assert tags["paper.reference"] == "none (engine smoke test)"
    assert len(tags["repro.run_key"]) == 16
    # Train metrics every log_every_steps=5, eval every 20, global steps.
    steps = [
        s for s, _ in metric_history(client, run.info.run_id, "train/loss")
    ]
    assert steps == [5, 10, 15, 20, 25, 30, 35, 40]
    for key in ("val/loss", "val/top1_error", "val/top5_error"):
        assert [s for s, _ in metric_history(client, run.info.run_id, key)] == [
            20,
            40,
        ]
    acc = metric_history(client, run.info.run_id, "val/top1_accuracy")
    err = metric_history(client, run.info.run_id, "val/top1_error")
    np.testing.assert_allclose([1 - v for _, v in acc], [v for _, v in err])
    assert result["val/top1_error"] == pytest.approx(err[-1][1])
    lr = metric_history(client, run.info.run_id, "lr")
    assert [v for _, v in lr] == pytest.approx([0.05] * 8)
    # Artifacts: model, figure, resolved config.
    paths = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "figures", "config.yaml"} <= paths
    model_files = [
        a.path for a in client.list_artifacts(run.info.run_id, "model")
    ]
    assert model_files == ["model/model.keras"]
    # Windowed train accuracy: 16 examples x 5 steps -> multiples of 1/80.
    for _, value in metric_history(
        client, run.info.run_id, "train/top1_accuracy"
    ):
        assert value * 80 == pytest.approx(round(value * 80), abs=1e-3)
    # A user callback logs with the global step while fit runs.
    probe = metric_history(client, run.info.run_id, "probe/step")
    assert probe == [(10, 10.0), (20, 20.0), (30, 30.0), (40, 40.0)]
    # A checkpoint at the last step.
    ckpt = tmp_path / "checkpoints" / "smoke" / tags["repro.run_key"]
    assert (ckpt / "step-40" / "checkpoint.keras").exists()
    assert '"step": 40' in (ckpt / "step-40" / "state.json").read_text()


def test_rerun_of_finished_run_is_skipped(tmp_path):
    _, first, client = _run(tmp_path)
    _, second, _ = _run(tmp_path)
    assert second["run_id"] == first["run_id"]
    assert second.get("skipped") is True
    assert second["val/top1_error"] == pytest.approx(first["val/top1_error"])
    assert len(metric_history(client, first["run_id"], "train/loss")) == 8


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(tmp_path):
    _, a, client = _run(tmp_path)
    _, b, _ = _run(tmp_path, "tracking.resume=false")
    assert a["run_id"] != b["run_id"]
    for key in ("train/loss", "val/loss"):
        assert metric_history(client, a["run_id"], key) == metric_history(
            client, b["run_id"], key
        )
    _, c, _ = _run(tmp_path, "seed=1")
    assert metric_history(client, c["run_id"], "val/loss") != metric_history(
        client, a["run_id"], "val/loss"
    )


def test_variants_and_seeds_make_child_runs_and_call_report(tmp_path):
    REPORT_CALLS.clear()
    cfg, result, client = _run(
        tmp_path,
        "variants={bn: {model.batch_norm: true}, plain: "
        "{model.batch_norm: false}}",
        "seeds=[0,1]",
        "trainer.steps=10",  # one evaluation, at the end
        "+report._target_=tests.experiments.test_train.record_report",
    )
    parent = client.get_run(result["run_id"])
    assert parent.info.status == "FINISHED"
    assert REPORT_CALLS == [("smoke", parent.info.run_id, "RUNNING")]
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    names = sorted(r.data.tags["repro.child"] for r in children)
    assert names == ["bn-seed0", "bn-seed1", "plain-seed0", "plain-seed1"]
    by_name = {r.data.tags["repro.child"]: r for r in children}
    assert by_name["bn-seed1"].data.params["model.batch_norm"] == "True"
    assert by_name["plain-seed1"].data.params["model.batch_norm"] == "False"
    assert by_name["plain-seed1"].data.params["seed"] == "1"
    assert by_name["plain-seed1"].data.tags["variant"] == "plain"
    assert set(result["children"]) == set(names)
    # The parent holds the mean over children.
    values = [r.data.metrics["val/top1_error"] for r in children]
    assert parent.data.metrics["mean/val/top1_error"] == pytest.approx(
        np.mean(values)
    )
    assert result["val/top1_error"] == pytest.approx(np.mean(values))


def test_nan_loss_marks_run_failed_and_keeps_last_good_checkpoint(tmp_path):
    # Batches after 22 are NaN: the checkpoint at step 20 stays the last.
    _, result, client = _run(tmp_path, "data.nan_after_batches=22")
    assert result["status"] == "FAILED"
    run = client.get_run(result["run_id"])
    assert run.info.status == "FAILED"
    assert "non-finite loss" in run.data.tags["failure_reason"]
    assert "step 25" in run.data.tags["failure_reason"]
    steps = [
        s for s, _ in metric_history(client, run.info.run_id, "train/loss")
    ]
    assert steps == [5, 10, 15, 20]
    ckpt = tmp_path / "checkpoints" / "smoke" / run.data.tags["repro.run_key"]
    assert [p.name for p in ckpt.glob("step-*")] == ["step-20"]
    assert '"step": 20' in (ckpt / "step-20" / "state.json").read_text()


def _sparse_ce(logits, labels):
    """Mean sparse categorical cross-entropy from logits, in float64."""
    z = np.asarray(logits, "float64")
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -np.mean(log_p[np.arange(len(labels)), labels])


@pytest.mark.parametrize("outputs", ["list", "dict"])
def test_aux_outputs_use_loss_weights(outputs):
    """The engine's compiled loss is CE(main) + 0.3 CE(aux), computed here
    in numpy from the model's two outputs (not a bare sum, not main only),
    and its metrics score the main output. `dict`: outputs named as
    GoogLeNet's, whose aux key sorts before the main one (Keras flattens a
    dict in key order, so positional weights would land on the aux head)."""
    from convnet_repro.experiments.data.synthetic import make_blob_datasets
    from convnet_repro.models.tiny import build_engine_mlp

    cfg = compose(
        SMOKE + ["model.aux_head=true", "trainer.loss_weights=[1.0,0.3]"]
    )
    keras.utils.set_random_seed(0)
    model = build_engine_mlp(aux_head=True)
    if outputs == "dict":
        main_out, aux_out = model.outputs
        model = keras.Model(model.input, {"logits": main_out, "aux1": aux_out})
        assert model.output_names[0] == "aux_logits"  # aux first
    optimization.compile_model(model, cfg, keras.optimizers.SGD(0.05))
    _, val_ds = make_blob_datasets(num_val=32)
    got = model.evaluate(
        optimization.labels_for(model, val_ds), return_dict=True, verbose=0
    )
    x = np.concatenate([x for x, _ in val_ds])
    y = np.concatenate([y for _, y in val_ds])
    out = model(x)
    if outputs == "dict":
        out = [out["logits"], out["aux1"]]
    main, aux = (keras.ops.convert_to_numpy(o) for o in out)
    ce_main, ce_aux = _sparse_ce(main, y), _sparse_ce(aux, y)
    assert abs(ce_aux - ce_main) > 0.05  # the weight is visible
    assert got["loss"] == pytest.approx(ce_main + 0.3 * ce_aux, rel=1e-5)
    acc = np.mean(np.argmax(main, axis=1) == y)  # metrics: main output only
    assert got["logits_top1_accuracy"] == pytest.approx(acc)


def test_aux_outputs_without_loss_weights_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="trainer.loss_weights"):
        _run(tmp_path, "model.aux_head=true")


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            [
                "schedule=step",
                "schedule.boundaries=[10,30]",
                "schedule.gamma=0.5",
            ],
            lambda s: 0.05 * 0.5 ** ((s > 10) + (s > 30)),
        ),
        (
            [
                "schedule=exponential",
                "schedule.decay_steps=10",
                "schedule.decay_rate=0.5",
                "schedule.staircase=false",
            ],
            lambda s: 0.05 * 0.5 ** (s / 10),
        ),
    ],
)
def test_schedules_follow_their_formulas(tmp_path, overrides, expected):
    _, result, client = _run(tmp_path, "trainer.steps=40", *overrides)
    lr = metric_history(client, result["run_id"], "lr")
    # Logged after `s` updates, i.e. the lr of the next update (step s).
    for step, value in lr:
        assert value == pytest.approx(expected(step), rel=1e-5), step


@pytest.mark.slow
def test_plateau_schedule_reduces_lr(tmp_path):
    _, result, client = _run(
        tmp_path,
        "schedule=plateau",
        "schedule.patience=0",
        "schedule.min_delta=1000",  # never counts as improving
        "trainer.eval_every_steps=10",
        "trainer.checkpoint_every_steps=10",
    )
    lr = dict(metric_history(client, result["run_id"], "lr"))
    # Eval at 10 sets the best loss; at 20 no "improvement" -> x0.1 (wait 1
    # >= patience 0), again at 30 and 40.
    assert lr[15] == pytest.approx(0.05)
    assert lr[25] == pytest.approx(0.005)
    assert lr[35] == pytest.approx(0.0005)


def test_l2_weight_decay_adds_half_wd_squared_norm_of_kernels():
    from convnet_repro.models.tiny import build_engine_mlp

    model = build_engine_mlp(batch_norm=True)
    n = optimization.add_l2_weight_decay(model, 0.01)
    assert n == 2  # hidden + logits kernels; not biases, not BN
    kernels = [
        v.numpy() for v in model.trainable_variables if "kernel" in v.path
    ]
    expected = 0.01 / 2 * sum(float(np.sum(k**2)) for k in kernels)
    got = float(sum(keras.ops.convert_to_numpy(x) for x in model.losses))
    assert got == pytest.approx(expected, rel=1e-5)


def test_bn_population_stats_are_logged_beside_moving_averages(tmp_path):
    """After training, BN holds the population statistics of its inputs over
    the training set (mean, unbiased variance; numpy here) and the logged
    `val/top1_error_population` is that model's error; the moving averages
    give a different model. One batch = the 64 training examples, so every
    population batch holds the same examples whatever the shuffle."""
    from convnet_repro.experiments.data.synthetic import make_blob_datasets

    _, result, client = _run(
        tmp_path,
        "model.batch_norm=true",
        "trainer.bn_population_stats=true",
        "trainer.bn_population_batches=3",
        "data.num_train=64",
        "data.batch_size=64",
    )
    run = client.get_run(result["run_id"])
    path = client.download_artifacts(
        run.info.run_id, "model/model.keras", str(tmp_path)
    )
    model = keras.saving.load_model(path)
    train_ds, val_ds = make_blob_datasets(num_train=64, batch_size=64)
    x_train = next(iter(train_ds))[0].numpy()
    hidden = keras.Model(model.inputs, model.get_layer("hidden_dense").output)
    h = keras.ops.convert_to_numpy(hidden([x_train])).astype("float64")
    bn = model.get_layer("hidden_bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), h.mean(0), atol=1e-4)
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), h.var(0, ddof=1), rtol=1e-4
    )
    x_val = np.concatenate([x for x, _ in val_ds])
    y_val = np.concatenate([y for _, y in val_ds])
    error = np.mean(np.argmax(model.predict(x_val, verbose=0), 1) != y_val)
    metrics = run.data.metrics
    assert metrics["val/top1_error_population"] == pytest.approx(error)
    assert result["val/top1_error_population"] == pytest.approx(error)
    # 40 steps at momentum 0.99 leave the moving mean far from the
    # population mean: the two evaluations are of different models.
    assert not np.allclose(metrics["val/loss"], metrics["val/loss_population"])


class ProbeCallback(keras.callbacks.Callback):
    """Logs the global step at every epoch end (chunk = 10 steps)."""

    def on_epoch_end(self, epoch, logs=None):
        step = global_step(self.model)
        mlflow.log_metric("probe/step", step, step=step)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_top_k_accuracy_takes_mixed_precision_logits(dtype):
    logits = np.array(
        [[0.1, 0.5, 0.3, 0.2], [0.9, 0.1, 0.0, 0.4], [0.2, 0.1, 0.3, 0.8]]
    )
    labels = np.array([2, 2, 3])
    metric = optimization.SparseTopKAccuracy(k=2)
    metric.update_state(labels, keras.ops.cast(logits, dtype))
    # numpy: label among the 2 largest logits?
    top2 = np.argsort(-logits, axis=1)[:, :2]
    expected = np.mean([y in row for y, row in zip(labels, top2)])
    assert float(metric.result()) == pytest.approx(expected)


@pytest.mark.slow
def test_mixed_precision_run(tmp_path):
    """A bfloat16 run computes what float32 computes: its logged val loss
    equals the float32 loss of the same weights within bfloat16 rounding,
    and stays within 5% of a float32 run's from the same seed."""
    from convnet_repro.experiments.data.synthetic import make_blob_datasets
    from convnet_repro.models.tiny import build_engine_mlp

    _, exact, client = _run(tmp_path, "trainer.steps=20")
    _, result, _ = _run(
        tmp_path, "trainer.mixed_precision=bfloat16", "trainer.steps=20"
    )
    assert result["status"] == "FINISHED"
    assert keras.mixed_precision.dtype_policy().name == "float32"  # restored
    path = client.download_artifacts(
        result["run_id"], "model/model.keras", str(tmp_path)
    )
    half = keras.saving.load_model(path)
    assert half.get_layer("hidden_dense").compute_dtype == "bfloat16"
    model = build_engine_mlp()
    model.set_weights(half.get_weights())  # float32 variables either way
    _, val_ds = make_blob_datasets()
    x = np.concatenate([x for x, _ in val_ds])
    y = np.concatenate([y for _, y in val_ds])
    logits = keras.ops.convert_to_numpy(model(x))
    logged = result["val/loss"]
    assert logged == pytest.approx(_sparse_ce(logits, y), rel=2e-2)
    assert logged == pytest.approx(exact["val/loss"], rel=5e-2)


def test_rerun_of_a_finished_sweep_keeps_the_parents_end_time(tmp_path):
    """A rerun that only skips finished children leaves the parent's
    duration that of the sweep (not up to the rerun); one that trains a
    child ends the parent again."""
    sweep = ["seeds=[0,1]", "trainer.steps=10"]
    _, first, client = _run(tmp_path, *sweep)
    ended = client.get_run(first["run_id"]).info.end_time
    _, again, _ = _run(tmp_path, *sweep)
    assert again["run_id"] == first["run_id"]
    parent = client.get_run(first["run_id"]).info
    assert (parent.status, parent.end_time) == ("FINISHED", ended)
    child = first["children"]["seed1"]["run_id"]
    client.set_terminated(child, "KILLED")  # as a killed run leaves it
    _, resumed, _ = _run(tmp_path, *sweep)
    assert resumed["children"]["seed1"].get("skipped") is None
    assert client.get_run(first["run_id"]).info.end_time > ended
