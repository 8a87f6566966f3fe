"""LocalResponseNormalization (AlexNet Sec. 3.3)."""

import numpy as np
import pytest
import tensorflow as tf

from layers import LocalResponseNormalization
from tests.helpers import check_layer
from tests.layers import references as ref


def test_basics(tmp_path):
    check_layer(
        LocalResponseNormalization,
        {},
        input_shape=(2, 4, 4, 7),
        expected_output_shape=(2, 4, 4, 7),
        expected_num_weights=0,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize(
    "radius, bias, alpha, beta",
    [
        (2, 2.0, 1e-4, 0.75),
        (0, 1.0, 0.5, 0.5),
        (3, 1.0, 1e-2, 1.0),
        (9, 2.0, 1e-3, 0.75),
    ],
)
def test_equals_tf_nn_and_the_formula(radius, bias, alpha, beta):
    # Scale 20: alpha * sum(a^2) is comparable to k, so the test bites.
    x = 20 * np.random.default_rng(0).standard_normal((2, 3, 5, 12)).astype(
        "f4"
    )
    layer = LocalResponseNormalization(radius, bias, alpha, beta)
    y = layer(x).numpy()
    expected = tf.nn.local_response_normalization(
        x, depth_radius=radius, bias=bias, alpha=alpha, beta=beta
    ).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        y, ref.lrn(x, radius, bias, alpha, beta), rtol=1e-5
    )
    assert not np.allclose(y, x / bias**beta, rtol=1e-3)


def test_alexnet_defaults():
    layer = LocalResponseNormalization()
    assert (layer.depth_radius, layer.bias, layer.alpha, layer.beta) == (
        2,
        2.0,
        1e-4,
        0.75,
    )


def test_works_on_rank_2():
    x = np.random.default_rng(1).standard_normal((4, 6)).astype("f4") * 30
    np.testing.assert_allclose(
        LocalResponseNormalization(alpha=1e-2)(x),
        ref.lrn(x, 2, 2.0, 1e-2, 0.75),
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depth_radius": -1}, "depth_radius"),
        ({"depth_radius": 1.5}, "depth_radius"),
        ({"bias": 0.0}, "bias"),
        ({"alpha": -1.0}, "alpha"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=f"{match}.*Received"):
        LocalResponseNormalization(**kwargs)


@pytest.mark.parametrize("beta", [0.75, 0.5, 1.0, 0.6])
def test_gradient_equals_tf_nn(beta):
    """The rsqrt special cases and pow give tf.nn's input gradient."""
    rng = np.random.default_rng(2)
    x = tf.constant(20 * rng.standard_normal((2, 3, 4, 9)).astype("f4"))
    weights = tf.constant(rng.standard_normal((2, 3, 4, 9)).astype("f4"))
    layer = LocalResponseNormalization(2, 1.0, 1e-2, beta)
    grads = []
    for fn in (
        layer,
        lambda t: tf.nn.local_response_normalization(t, 2, 1.0, 1e-2, beta),
    ):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(fn(x) * weights)
        grads.append(tape.gradient(loss, x).numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    assert np.abs(grads[0]).max() > 1e-3
