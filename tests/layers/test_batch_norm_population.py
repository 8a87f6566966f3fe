"""recompute_batch_norm_statistics (BN paper Alg. 2, steps 8-11)."""

import keras
import numpy as np
import pytest

from convnet_repro.layers import recompute_batch_norm_statistics


def _batches(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (3.0 + 2.0 * rng.standard_normal(shape)).astype("float32")
        for _ in range(n)
    ]


def _expected(batches, axes):
    m = np.prod([batches[0].shape[a] for a in axes])
    means = [b.astype("float64").mean(axis=axes) for b in batches]
    variances = [b.astype("float64").var(axis=axes) for b in batches]
    return np.mean(means, axis=0), m / (m - 1) * np.mean(variances, axis=0)


def test_dense_bn_matches_formula():
    inputs = keras.Input((5,))
    bn = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, bn(inputs))
    batches = _batches((8, 5), 6)
    stats = recompute_batch_norm_statistics(model, batches)
    mean, var = _expected(batches, (0,))
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-5)
    (entry,) = stats.values()
    assert entry["num_batches"] == 6 and entry["m"] == 8
    # The unbiased factor matters: m/(m-1) = 8/7.
    assert not np.allclose(var, _expected(batches, (0,))[1] * 7 / 8, rtol=1e-3)


def test_conv_bn_nested_and_num_batches():
    """m = batch * H * W; BN inside a sub-model; the second BN sees the
    first BN's output normalized with batch statistics (training mode)."""
    inner_in = keras.Input((4, 4, 3))
    bn1 = keras.layers.BatchNormalization(name="bn1")
    inner = keras.Model(inner_in, bn1(inner_in), name="inner")
    inputs = keras.Input((4, 4, 3))
    x = inner(inputs)
    bn2 = keras.layers.BatchNormalization(name="bn2", epsilon=0.5)
    model = keras.Model(
        inputs, bn2(keras.layers.Lambda(lambda t: 2 * t + 1)(x))
    )
    tf = pytest.importorskip("tensorflow")  # tf.data feeds every backend

    batches = _batches((2, 4, 4, 3), 5)
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.stack(batches), np.zeros((5, 2)))
    ).repeat()
    stats = recompute_batch_norm_statistics(model, dataset, num_batches=3)
    used = batches[:3]
    mean, var = _expected(used, (0, 1, 2))
    np.testing.assert_allclose(bn1.moving_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(bn1.moving_variance.numpy(), var, rtol=1e-5)
    # bn1 (gamma 1, beta 0, eps 1e-3) with batch stats, then 2x + 1: the
    # batch mean is 1 and the biased variance 4 * v / (v + eps) per batch.
    v = [b.var(axis=(0, 1, 2)) for b in used]
    expected_var = 32 / 31 * np.mean([4 * vb / (vb + 1e-3) for vb in v], axis=0)
    np.testing.assert_allclose(bn2.moving_mean.numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        bn2.moving_variance.numpy(), expected_var, rtol=1e-4
    )
    assert {e["m"] for e in stats.values()} == {32}
    assert len(stats) == 2


def test_frozen_bn_uses_batch_statistics_and_stays_frozen():
    inputs = keras.Input((3,))
    bn = keras.layers.BatchNormalization()
    bn.trainable = False
    model = keras.Model(inputs, bn(inputs))
    batches = _batches((10, 3), 2)
    recompute_batch_norm_statistics(model, batches)
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), _expected(batches, (0,))[0], rtol=1e-5
    )
    assert bn.trainable is False
    assert "call" not in vars(bn)  # the wrapper was removed


def test_errors():
    tf = pytest.importorskip("tensorflow")  # tf.data feeds every backend

    inputs = keras.Input((3,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="no keras.layers.BatchNormalization"):
        recompute_batch_norm_statistics(plain, _batches((4, 3), 1))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
    infinite = tf.data.Dataset.from_tensors(np.ones((4, 3), "f4")).repeat()
    with pytest.raises(ValueError, match="infinite.*Received"):
        recompute_batch_norm_statistics(model, infinite)
    with pytest.raises(ValueError, match="num_batches.*Received"):
        recompute_batch_norm_statistics(model, infinite, num_batches=0)
    with pytest.raises(ValueError, match="m >= 2"):
        recompute_batch_norm_statistics(model, [np.ones((1, 3), "f4")])
