"""LocalResponseNormalization (AlexNet Sec. 3.3)."""

import keras
import numpy as np
import pytest

from convnet_repro.layers import LocalResponseNormalization
from tests.helpers import check_layer
from tests.helpers import gradients
from tests.helpers import skip_unless_tensorflow
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
def test_equals_the_formula(radius, bias, alpha, beta):
    # Scale 20: alpha * sum(a^2) is comparable to k, so the test bites.
    x = 20 * np.random.default_rng(0).standard_normal((2, 3, 5, 12)).astype(
        "f4"
    )
    layer = LocalResponseNormalization(radius, bias, alpha, beta)
    y = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(
        y, ref.lrn(x, radius, bias, alpha, beta), rtol=1e-5
    )
    assert not np.allclose(y, x / bias**beta, rtol=1e-3)


@skip_unless_tensorflow("tf.nn.local_response_normalization")
def test_equals_tf_nn():
    import tensorflow as tf

    x = 20 * np.random.default_rng(0).standard_normal((2, 3, 5, 12))
    x = x.astype("f4")
    for radius, bias, alpha, beta in ((2, 2.0, 1e-4, 0.75), (3, 1, 1e-2, 1)):
        layer = LocalResponseNormalization(radius, bias, alpha, beta)
        expected = tf.nn.local_response_normalization(
            x, depth_radius=radius, bias=bias, alpha=alpha, beta=beta
        )
        np.testing.assert_allclose(
            layer(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-6
        )


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


def _plain_lrn(x, radius, bias, alpha, beta):
    """The AlexNet formula with a plain `power` and 2r + 1 shifted slices."""
    squares = keras.ops.pad(
        keras.ops.square(x), [(0, 0)] * 3 + [(radius, radius)]
    )
    channels = x.shape[-1]
    window = sum(squares[..., i : i + channels] for i in range(2 * radius + 1))
    return x * keras.ops.power(bias + alpha * window, -beta)


@pytest.mark.parametrize("beta", [0.75, 0.5, 1.0, 0.6])
def test_gradient_equals_the_plain_formula(beta):
    """The rsqrt special cases give the gradient of the plain power
    formula (and, on TensorFlow, tf.nn's)."""
    rng = np.random.default_rng(2)
    x = 20 * rng.standard_normal((2, 3, 4, 9)).astype("f4")
    weights = rng.standard_normal((2, 3, 4, 9)).astype("f4")
    layer = LocalResponseNormalization(2, 1.0, 1e-2, beta)
    peers = [layer, lambda t: _plain_lrn(t, 2, 1.0, 1e-2, beta)]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        peers.append(
            lambda t: tf.nn.local_response_normalization(t, 2, 1.0, 1e-2, beta)
        )
    grads = []
    for fn in peers:

        def objective(t, fn=fn):
            return keras.ops.sum(fn(t) * keras.ops.convert_to_tensor(weights))

        grads.append(gradients(objective, x)[1][0])
    for other in grads[1:]:
        np.testing.assert_allclose(grads[0], other, rtol=1e-4, atol=1e-6)
    assert np.abs(grads[0]).max() > 1e-3
