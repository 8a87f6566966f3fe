"""TuningEarlyStopping: stops on a plateau of the tuning metric, divides the
lr on the plateaus before, restores the best weights, and a killed run
resumed with the same command logs what the uninterrupted run logs."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.compose import fresh_sqlite_store
from convnet_repro.experiments.engine.early_stopping import TuningEarlyStopping
from tests.experiments.runs import run_killed
from tests.experiments.runs import store_overrides as _store

ES = "convnet_repro.experiments.engine.early_stopping.TuningEarlyStopping"


def _flat_model(lr):
    """Zero inputs and no bias: the loss is log(4) whatever the weights."""
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, use_bias=False)]
    )
    model.compile(
        keras.optimizers.SGD(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _fit(callback, lr=0.5, epochs=12):
    ds = tf.data.Dataset.from_tensor_slices(
        (np.zeros((8, 3), np.float32), np.arange(8) % 4)
    ).batch(4)
    model = _flat_model(lr)
    model.fit(
        ds.repeat(),
        epochs=epochs,
        steps_per_epoch=2,
        verbose=0,
        shuffle=False,
        callbacks=[callback],
    )
    return model


def _callback(**kwargs):
    ds = tf.data.Dataset.from_tensor_slices(
        (np.zeros((4, 3), np.float32), np.arange(4) % 4)
    ).batch(4)
    return TuningEarlyStopping(
        data=(None, ds), every_steps=2, monitor="tune/loss", **kwargs
    )


def test_patience_one_stops_a_flat_run_that_a_huge_patience_does_not():
    short = _callback(patience=1)
    model = _fit(short)
    assert int(model.optimizer.iterations) == 4  # evaluations at 2 and 4
    assert (short.best_step, short.stopped_step) == (2, 4)
    patient = _callback(patience=1000)
    model = _fit(patient)
    assert int(model.optimizer.iterations) == 24
    assert patient.stopped_step is None


def test_each_plateau_divides_the_lr_until_the_drops_are_spent():
    callback = _callback(patience=1, lr_drops=2, lr_factor=0.1)
    model = _fit(callback)
    # Plateaus at 4 (drop), 6 (drop), 8 (stop).
    assert int(model.optimizer.iterations) == 8
    assert callback.drops == 2
    lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert lr == pytest.approx(0.005)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"monitor": "val/loss"}, "must be a `tune/` metric"),
        ({"patience": 0}, "int >= 1"),
        ({"every_steps": 15, "checkpoint_every_steps": 10}, "multiple of"),
        ({"monitor": "tune/weird"}, "pass mode="),
    ],
)
def test_bad_settings_fail_with_the_fix(kwargs, match):
    args = {"data": None, "every_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        TuningEarlyStopping(**args)


# --- through the engine (smoke experiment), killed and resumed ----------
OVERRIDES = [
    "experiment=smoke",
    "trainer.steps=100",
    "trainer.eval_every_steps=110",  # val once, at the end
    "trainer.checkpoint_every_steps=10",
    "trainer.progress=none",
    "tracking.log_model=false",
    "tracking.log_figures=false",
    f"+callbacks.es._target_={ES}",
    "+callbacks.es.data=${data}",  # the smoke fixture's (train, val) pair
    "+callbacks.es.every_steps=10",
    "+callbacks.es.checkpoint_every_steps=10",
    "+callbacks.es.monitor=tune/loss",  # the tiny MLP overfits: rises
    "+callbacks.es.patience=3",
    "+callbacks.es.lr_drops=1",
    "+callbacks.es.directory=${paths.checkpoint_dir}/early_stopping",
    "+callbacks.kill._target_=experiments.engine.callbacks.FaultInjection",
    "+callbacks.kill.at_step=45",  # checkpoint at 40, after the lr drop
    "+callbacks.kill.env_var=REPRO_KILL",
]
KEYS = (
    "train/loss",
    "lr",
    "tune/loss",
    "tune/lr_drops",
    "tune/best_step",
    "tune/stopped_step",
    "val/loss",
)


def _history(tmp, run_id):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlruns.db")
    return {
        k: sorted(
            (m.step, m.value) for m in client.get_metric_history(run_id, k)
        )
        for k in KEYS
    }


@pytest.mark.slow
def test_killed_early_stopping_run_resumes_like_an_uninterrupted_one(
    tmp_path,
):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    for d in (ref, killed):
        fresh_sqlite_store(d / "mlruns.db")
    want = train_lib.train(compose(OVERRIDES + _store(ref)))
    out = run_killed(OVERRIDES + _store(killed))
    assert out.returncode == 3, out.stderr[-3000:]
    got = train_lib.train(compose(OVERRIDES + _store(killed)))
    assert got["run_id"] != want["run_id"]
    a, b = _history(ref, want["run_id"]), _history(killed, got["run_id"])
    # The run stopped before its cap, after an lr drop, with an earlier best.
    stopped = a["tune/stopped_step"][0][1]
    best = a["tune/best_step"][0][1]
    assert best < 40 < stopped < 100
    assert a["tune/lr_drops"] and a["tune/lr_drops"][0][0] <= 40
    for key in KEYS:
        # Every step exactly once, nothing lost, the same values.
        assert [s for s, _ in b[key]] == [s for s, _ in a[key]], key
        assert [v for _, v in b[key]] == pytest.approx(
            [v for _, v in a[key]], rel=1e-5, abs=1e-6
        ), key
    # The final val score is the restored best's (the smoke's tune = val).
    tune = dict(a["tune/loss"])
    assert a["val/loss"][0][1] == pytest.approx(tune[best], rel=1e-5)
