"""Fast tests of `experiments.probes.PercentileProbe` (BN paper Fig. 1(b, c)).

The probed values are checked against a NumPy forward pass written from the
formulas: z = gamma * (x W - mean) / sqrt(var + eps) + beta for the BN layer
in inference mode (Keras moving statistics), z = x W + b without BN.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from convnet_repro.experiments import probes
from convnet_repro.models.mlp import build_bn_mnist_mlp


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _numpy_last_sigmoid_input(model, x, batch_norm):
    """Input of `hidden2_act` from the weights, straight from the formulas."""
    h = x.reshape(len(x), -1)
    for i in (1, 2):
        dense = model.get_layer(f"hidden{i}_dense")
        z = h @ keras.ops.convert_to_numpy(dense.kernel)
        if batch_norm:
            bn = model.get_layer(f"hidden{i}_bn")
            gamma, beta, mean, var = (
                keras.ops.convert_to_numpy(w)
                for w in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)
            )
            z = gamma * (z - mean) / np.sqrt(var + bn.epsilon) + beta
        else:
            z = z + keras.ops.convert_to_numpy(dense.bias)
        h = _sigmoid(z)
    return z


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 6, 6, 1)) > 0.5).astype("float32")
    y = rng.integers(0, 3, size=n).astype("int32")
    return x, y


@pytest.mark.parametrize("batch_norm", [True, False])
def test_probe_matches_numpy_and_cadence(batch_norm, tmp_path):
    import mlflow

    from convnet_repro.experiments.engine.compose import fresh_sqlite_store

    x, y = _data()
    model = build_bn_mnist_mlp(
        input_shape=(6, 6, 1),
        num_classes=3,
        hidden_units=(5, 4),
        batch_norm=batch_norm,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=2,
    )
    probe = probes.PercentileProbe(
        layer="hidden2_act",
        units=[0, 3],
        every_steps=4,
        num_images=50,
        data=(None, tf.data.Dataset.from_tensor_slices((x, y)).batch(20)),
    )
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(10)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(
        f"sqlite:///{fresh_sqlite_store(tmp_path / 'm.db')}"
    )
    try:
        # An experiment of this store: the process-wide active experiment
        # id may belong to another test's store.
        mlflow.set_experiment("bn_mnist_probe")
        with mlflow.start_run() as run:
            model.fit(
                ds, steps_per_epoch=8, epochs=1, verbose=0, callbacks=[probe]
            )
        client = mlflow.MlflowClient()
        logged = {
            key: [
                (m.step, m.value)
                for m in sorted(
                    client.get_metric_history(run.info.run_id, key),
                    key=lambda m: m.step,
                )
            ]
            for key in probe.history[0][1]
        }
    finally:
        mlflow.set_tracking_uri(previous)

    # Before training, then every 4 steps (Keras calls back every 2).
    assert [s for s, _ in probe.history] == [0, 4, 8]
    # The run holds exactly the probed values, at their steps.
    assert len(logged) == 2 * 3  # 2 units x 3 percentiles
    for key, history in logged.items():
        expected = [(s, values[key]) for s, values in probe.history]
        assert [s for s, _ in history] == [s for s, _ in expected], key
        np.testing.assert_allclose(
            [v for _, v in history], [v for _, v in expected], rtol=1e-6
        )
    z = _numpy_last_sigmoid_input(model, x[:50], batch_norm)
    step, values = probe.history[-1]
    for unit in (0, 3):
        ref = np.percentile(z[:, unit], [15, 50, 85])
        got = [
            values[probes.metric_key("sigmoid_in", unit, q)]
            for q in (15, 50, 85)
        ]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
        assert got[0] <= got[1] <= got[2]
    # Training moved the distribution.
    assert probe.history[0][1] != probe.history[-1][1]


def test_probe_reads_images_from_a_data_config():
    cfg = {
        "_target_": (
            "convnet_repro.experiments.data.synthetic.make_blob_datasets"
        ),
        "input_shape": [6, 6, 1],
        "num_classes": 3,
        "batch_size": 16,
        "num_val": 40,
    }
    images = probes._probe_images(None, cfg, num_images=30)
    assert images.shape == (30, 6, 6, 1) and images.dtype == np.float32


def test_metric_key():
    assert probes.metric_key("sigmoid_in", 2, 85.0) == "sigmoid_in_u2_p85"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"units": []}, "units"),
        ({"percentiles": (15, 150)}, "percentiles"),
        ({"every_steps": 0}, "every_steps"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=f"Received: {match}"):
        probes.PercentileProbe(images=np.zeros((4, 2)), **kwargs)


def test_unknown_layer_is_a_clear_error():
    model = build_bn_mnist_mlp(input_shape=(6, 6, 1), hidden_units=(3,))
    model.compile(optimizer="sgd", loss="mse")
    probe = probes.PercentileProbe(layer="nope", images=np.zeros((4, 6, 6, 1)))
    probe.set_model(model)
    with pytest.raises(ValueError, match="Received: layer='nope'"):
        probe.on_train_begin()


def test_no_images_is_a_clear_error():
    with pytest.raises(ValueError, match="Received: images=None"):
        probes._probe_images(None, None, 10)
