"""UnsharedConv1D / UnsharedConv2D (DL book eq. 9.9)."""

import keras
import numpy as np
import pytest

from convnet_repro.layers import CONV_LAYERS
from convnet_repro.layers import TiledConv2D
from convnet_repro.layers import UnsharedConv1D
from convnet_repro.layers import UnsharedConv2D
from convnet_repro.layers import get_conv_layer
from tests.helpers import check_layer
from tests.helpers import gradients
from tests.layers import references as ref


def test_basics(tmp_path):
    layer, _ = check_layer(
        UnsharedConv2D,
        {"filters": 4, "kernel_size": 3, "strides": 2, "padding": "same"},
        input_shape=(2, 7, 6, 3),
        expected_output_shape=(2, 4, 3, 4),
        expected_num_weights=2,
        tmp_path=tmp_path,
    )
    assert tuple(layer.kernel.shape) == (4, 3, 3, 3, 3, 4)
    assert tuple(layer.bias.shape) == (4, 3, 4)  # one bias per output unit


@pytest.mark.parametrize("implementation", ["patches", "slices"])
@pytest.mark.parametrize(
    "padding, strides", [("valid", (1, 1)), ("valid", (2, 1)), ("same", (2, 2))]
)
def test_matches_eq_9_9(padding, strides, implementation):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 6, 3)).astype("float32")
    layer = UnsharedConv2D(
        4,
        (3, 2),
        strides=strides,
        padding=padding,
        implementation=implementation,
        bias_initializer="random_normal",
    )
    y = keras.ops.convert_to_numpy(layer(x))
    kernel, bias = (w.numpy() for w in layer.weights)
    # Keras (oh, ow, kh, kw, c, f) -> book W[i=f, j, k, l=c, m, n].
    W = kernel.transpose(5, 0, 1, 4, 2, 3)
    for b in range(2):
        V = x[b].transpose(2, 0, 1)
        if padding == "same":
            V = ref.pad_same(V, (3, 2), strides)
        Z = ref.unshared(W, V, strides) + bias.transpose(2, 0, 1)
        np.testing.assert_allclose(y[b], Z.transpose(1, 2, 0), atol=1e-5)


@pytest.mark.parametrize("implementation", ["patches", "slices"])
@pytest.mark.parametrize("strides", [(1, 1), (2, 1)])
def test_gradients_match_the_eq_9_9_reference(strides, implementation):
    """Autodiff through UnsharedConv2D equals the hand-derived gradients of
    eq. 9.9 for the input, the kernel and the bias (float64, 1e-10)."""
    c_in, f, h, w, kh, kw = 2, 3, 7, 6, 3, 2
    rng = np.random.default_rng(7)
    V = rng.standard_normal((c_in, h, w))
    layer = UnsharedConv2D(
        f,
        (kh, kw),
        strides=strides,
        implementation=implementation,
        dtype="float64",
    )
    layer.build((1, h, w, c_in))
    kernel = rng.standard_normal(tuple(layer.kernel.shape))
    bias = rng.standard_normal(tuple(layer.bias.shape))
    oh, ow = layer.kernel.shape[:2]
    G = rng.standard_normal((f, oh, ow))
    g = G.transpose(1, 2, 0)[None]

    def objective(v, k, b):
        Z, _ = layer.stateless_call([k, b], [], v)
        return keras.ops.sum(Z * keras.ops.convert_to_tensor(g))

    x = V.transpose(1, 2, 0)[None]
    J, (dv, dk, db) = gradients(objective, x, kernel, bias)
    assert dv.dtype == dk.dtype == db.dtype == np.float64
    # Keras (oh, ow, kh, kw, c, f) -> book W[i=f, j, k, l=c, m, n].
    W = kernel.transpose(5, 0, 1, 4, 2, 3)
    Z = ref.unshared(W, V, strides) + bias.transpose(2, 0, 1)
    np.testing.assert_allclose(J, np.sum(Z * G), atol=1e-10)
    np.testing.assert_allclose(
        dk.transpose(5, 0, 1, 4, 2, 3),
        ref.grad_unshared_kernel(G, V, strides, kh, kw),
        atol=1e-10,
    )
    np.testing.assert_allclose(
        dv[0].transpose(2, 0, 1),
        ref.grad_unshared_input(W, G, strides, h, w),
        atol=1e-10,
    )
    np.testing.assert_allclose(db, g[0], atol=1e-10)  # dJ/db = G


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_equal_kernels_everywhere_is_conv2d(padding):
    x = np.random.default_rng(2).standard_normal((2, 8, 9, 3)).astype("f4")
    conv = keras.layers.Conv2D(5, 3, strides=2, padding=padding)
    expected = keras.ops.convert_to_numpy(conv(x))
    k, b = conv.get_weights()
    layer = UnsharedConv2D(5, 3, strides=2, padding=padding)
    layer.build(x.shape)
    oh, ow = layer.kernel.shape[:2]
    layer.set_weights(
        [
            np.broadcast_to(k, (oh, ow, *k.shape)),
            np.broadcast_to(b, (oh, ow, 5)),
        ]
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5
    )


def test_conv2d_translation_equivariant_unshared_not():
    """Shifting the input shifts Conv2D's output (eq. 9.7 shares K), not
    UnsharedConv2D's (each position has its own weights)."""
    rng = np.random.default_rng(3)
    x = np.zeros((1, 12, 12, 2), "float32")
    x[0, 2:7, 2:7] = rng.standard_normal((5, 5, 2))
    shifted = np.roll(x, (2, 3), axis=(1, 2))
    for cls, equivariant in (
        (keras.layers.Conv2D, True),
        (UnsharedConv2D, False),
    ):
        layer = cls(3, 3, bias_initializer="random_normal")
        y = keras.ops.convert_to_numpy(layer(x))
        y_shift = keras.ops.convert_to_numpy(layer(shifted))
        same = np.allclose(y_shift[0, 2:, 3:], y[0, :-2, :-3], atol=1e-5)
        assert same == equivariant, cls.__name__


def test_unshared_1d_matches_formula():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 11, 3)).astype("float32")
    layer = UnsharedConv1D(4, 3, strides=2, bias_initializer="random_normal")
    y = keras.ops.convert_to_numpy(layer(x))
    kernel, bias = (w.numpy() for w in layer.weights)  # (ow, k, c, f), (ow, f)
    assert y.shape == (2, 5, 4)
    for t in range(5):
        expected = np.einsum("bkc,kcf->bf", x[:, 2 * t : 2 * t + 3], kernel[t])
        np.testing.assert_allclose(y[:, t], expected + bias[t], atol=1e-5)


def test_unshared_1d_basics(tmp_path):
    check_layer(
        UnsharedConv1D,
        {"filters": 2, "kernel_size": 3, "padding": "same", "use_bias": False},
        input_shape=(2, 5, 3),
        expected_output_shape=(2, 5, 2),
        expected_num_weights=1,
        tmp_path=tmp_path,
    )


def test_glorot_fans_are_per_output_unit():
    """Variance as Conv2D's glorot: 2 / (kh*kw*c + kh*kw*f)."""
    layer = UnsharedConv2D(16, 3, kernel_initializer="glorot_normal")
    layer.build((None, 12, 12, 16))
    std = np.std(layer.kernel.numpy())
    expected = np.sqrt(2.0 / (9 * 16 + 9 * 16))
    assert abs(std - expected) / expected < 0.1


def test_regularizer_constraint_activation():
    layer = UnsharedConv2D(
        2,
        3,
        activation="relu",
        kernel_regularizer=keras.regularizers.L2(0.1),
        kernel_constraint=keras.constraints.NonNeg(),
    )
    y = layer(np.random.default_rng(5).standard_normal((1, 5, 5, 1)))
    assert keras.ops.convert_to_numpy(y).min() >= 0.0
    assert len(layer.losses) == 1
    assert layer.kernel.constraint is layer.kernel_constraint


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"filters": 0, "kernel_size": 3}, "filters"),
        ({"filters": 2, "kernel_size": (3, 0)}, "kernel_size"),
        ({"filters": 2, "kernel_size": 3, "padding": "full"}, "padding"),
        ({"filters": 2, "kernel_size": 3, "groups": 2}, "groups"),
        (
            {"filters": 2, "kernel_size": 3, "implementation": 2},
            "implementation",
        ),
        ({"filters": 2, "kernel_size": 3, "dilation_rate": 2}, "dilation"),
        (
            {"filters": 2, "kernel_size": 3, "data_format": "channels_first"},
            "data_format",
        ),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=f"(?s){match}.*Received"):
        UnsharedConv2D(**kwargs)


def test_dynamic_spatial_shape_is_rejected():
    with pytest.raises(ValueError, match="static spatial"):
        UnsharedConv2D(2, 3)(keras.Input((None, None, 3)))


def test_kernel_larger_than_input_is_rejected():
    with pytest.raises(ValueError, match="larger than"):
        UnsharedConv2D(2, 5)(keras.Input((3, 3, 1)))


def test_get_conv_layer():
    assert set(CONV_LAYERS) == {"conv2d", "unshared", "tiled"}
    conv = get_conv_layer("tiled", tile_size=3)
    layer = conv(8, 3, strides=1, padding="same", use_bias=False, name="c")
    assert isinstance(layer, TiledConv2D) and layer.tile_size == (3, 3)
    layer = get_conv_layer("unshared")(4, 3, groups=1, data_format=None)
    assert isinstance(layer, UnsharedConv2D)
    assert isinstance(get_conv_layer()(4, 3), keras.layers.Conv2D)
    with pytest.raises(ValueError, match="Received: kind='dense'"):
        get_conv_layer("dense")
