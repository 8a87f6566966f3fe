"""TiledConv2D (Le et al. 2010; DL book eq. 9.10)."""

import keras
import numpy as np
import pytest

from convnet_repro.layers import TiledConv2D
from convnet_repro.layers import UnsharedConv2D
from convnet_repro.layers import _utils
from tests.helpers import check_layer
from tests.helpers import gradients
from tests.helpers import skip_unless_tensorflow
from tests.layers import references as ref


def test_basics(tmp_path):
    layer, _ = check_layer(
        TiledConv2D,
        {"filters": 4, "kernel_size": 3, "tile_size": (2, 3)},
        input_shape=(2, 8, 9, 3),
        expected_output_shape=(2, 6, 7, 4),
        expected_num_weights=2,
        tmp_path=tmp_path,
    )
    assert tuple(layer.kernel.shape) == (2, 3, 3, 3, 3, 4)
    assert tuple(layer.bias.shape) == (2, 3, 4)  # biases tiled like kernels


@pytest.mark.parametrize(
    "implementation", ["space_to_depth", "strided", "patches"]
)
@pytest.mark.parametrize(
    "tile, strides, padding",
    [
        (2, (1, 1), "valid"),
        (3, (1, 1), "same"),
        ((2, 3), (2, 1), "valid"),
        (2, (2, 2), "same"),
        (4, (1, 1), "valid"),  # t does not divide the output (7)
    ],
)
def test_matches_eq_9_10(tile, strides, padding, implementation):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 8, 3)).astype("float32")
    layer = TiledConv2D(
        4,
        (3, 2),
        strides=strides,
        padding=padding,
        tile_size=tile,
        bias_initializer="random_normal",
    )
    layer.build(x.shape)
    layer._implementation = implementation  # both exact paths, every case
    y = keras.ops.convert_to_numpy(layer(x))
    kernel, bias = (w.numpy() for w in layer.weights)
    # Keras (th, tw, kh, kw, c, f) -> book K[i=f, l=c, m, n, tile_j, tile_k].
    K = kernel.transpose(5, 4, 2, 3, 0, 1)
    oh, ow = y.shape[1:3]
    th, tw = kernel.shape[:2]
    tiled_bias = np.tile(bias, (-(-oh // th), -(-ow // tw), 1))[:oh, :ow]
    for b in range(2):
        V = x[b].transpose(2, 0, 1)
        if padding == "same":
            V = ref.pad_same(V, (3, 2), strides)
        Z = ref.tiled(K, V, oh, ow, strides).transpose(1, 2, 0) + tiled_bias
        np.testing.assert_allclose(y[b], Z, atol=1e-5)


@pytest.mark.parametrize("padding, strides", [("valid", 1), ("same", 2)])
def test_tile_1_is_conv2d(padding, strides):
    x = np.random.default_rng(1).standard_normal((2, 9, 9, 3)).astype("f4")
    conv = keras.layers.Conv2D(4, 3, strides=strides, padding=padding)
    expected = keras.ops.convert_to_numpy(conv(x))
    layer = TiledConv2D(4, 3, strides=strides, padding=padding, tile_size=1)
    layer.build(x.shape)
    k, b = conv.get_weights()
    layer.set_weights([k[None, None], b[None, None]])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-6
    )


def test_tile_1_accepts_dynamic_spatial_shape():
    y = TiledConv2D(2, 3, tile_size=1, padding="same")(
        keras.Input((None, None, 3))
    )
    assert tuple(y.shape) == (None, None, None, 2)


@pytest.mark.parametrize("tile", [6, 50])
def test_tile_at_least_output_is_unshared(tile):
    x = np.random.default_rng(2).standard_normal((2, 8, 8, 3)).astype("f4")
    unshared = UnsharedConv2D(4, 3, bias_initializer="random_normal")
    expected = keras.ops.convert_to_numpy(unshared(x))  # output 6 x 6
    layer = TiledConv2D(4, 3, tile_size=tile)
    layer.build(x.shape)
    # Tiles are clipped to the output: exactly the unshared parameters.
    assert tuple(layer.kernel.shape) == tuple(unshared.kernel.shape)
    layer.set_weights(unshared.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5
    )


def test_equal_tiles_is_conv2d():
    x = np.random.default_rng(3).standard_normal((1, 10, 10, 2)).astype("f4")
    conv = keras.layers.Conv2D(3, 3, padding="same")
    expected = keras.ops.convert_to_numpy(conv(x))
    k, b = conv.get_weights()
    layer = TiledConv2D(3, 3, padding="same", tile_size=3)
    layer.build(x.shape)
    layer.set_weights(
        [np.broadcast_to(k, (3, 3, *k.shape)), np.broadcast_to(b, (3, 3, 3))]
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5
    )


@pytest.mark.parametrize("xla", [False, True])
def test_plan_is_made_in_build_from_backend_and_device(xla, monkeypatch):
    """Without XLA: space-to-depth up to 4x the FLOPs (t <= 3 for 3x3),
    else strided. Under XLA (JAX, TF on an accelerator): space-to-depth
    only up to 2x (t = 2), else patches. An explicit choice wins."""
    monkeypatch.setattr(_utils, "compiles_with_xla", lambda: xla)
    plans = {}
    for tile in (2, 3, 4):
        layer = TiledConv2D(2, 3, tile_size=tile)
        layer.build((None, 12, 12, 1))
        plans[tile] = layer._implementation
    if xla:
        assert plans == {2: "space_to_depth", 3: "patches", 4: "patches"}
    else:
        assert plans == {2: "space_to_depth", 3: "space_to_depth", 4: "strided"}
    forced = TiledConv2D(2, 3, tile_size=2, implementation="strided")
    forced.build((None, 12, 12, 1))
    assert forced._implementation == "strided"


def test_auto_plan_follows_the_backend():
    layer = TiledConv2D(2, 3, tile_size=3)
    layer.build((None, 12, 12, 1))
    xla = keras.backend.backend() == "jax" or (
        keras.backend.backend() == "tensorflow"
        and any(
            not d.startswith("cpu") for d in keras.distribution.list_devices()
        )
    )
    assert layer._implementation == ("patches" if xla else "space_to_depth")


@pytest.mark.parametrize("tile", [2, 3])
def test_every_implementation_gives_the_same_outputs_and_gradients(tile):
    """The three implementations (and XLA, when the backend uses it) agree
    on outputs and on gradients for the input, the kernel and the bias."""
    x = np.random.default_rng(5).standard_normal((3, 10, 9, 2)).astype("f4")
    results, weights = {}, None
    for implementation in ("space_to_depth", "patches", "strided"):
        layer = TiledConv2D(
            3,
            3,
            tile_size=tile,
            bias_initializer="random_normal",
            implementation=implementation,
        )
        layer.build(x.shape)
        if weights is not None:
            layer.set_weights(weights)
        weights = layer.get_weights()

        def loss(x, kernel, bias, layer=layer):
            y, _ = layer.stateless_call([kernel, bias], [], x)
            return keras.ops.sum(keras.ops.square(y))

        results[implementation] = gradients(loss, x, *weights)
    first, *others = results.values()
    for other in others:
        np.testing.assert_allclose(other[0], first[0], rtol=1e-4)
        for a, b in zip(other[1], first[1]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tile", [2, 3])
@skip_unless_tensorflow("tf.function(jit_compile=True)")
def test_tf_xla_matches_tf_graph(tile):
    """The same layer under TF graph mode and TF XLA."""
    import tensorflow as tf

    x = np.random.default_rng(5).standard_normal((3, 10, 9, 2)).astype("f4")
    layer = TiledConv2D(3, 3, tile_size=tile, bias_initializer="random_normal")
    layer.build(x.shape)
    graph = tf.function(layer)(tf.constant(x))
    xla = tf.function(layer, jit_compile=True)(tf.constant(x))
    np.testing.assert_allclose(xla.numpy(), graph.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "tile, implementation",
    [(1, "conv"), (2, "space_to_depth"), (2, "patches"), (2, "strided")],
)
@pytest.mark.parametrize("s", [1, 2])
def test_gradients_match_eq_9_11_to_9_13(tile, implementation, s):
    """Autodiff through TiledConv2D equals the book's g(G, V, s) (eq. 9.11)
    for each tile's kernel and h(K, G, s) (eq. 9.12-9.13) for the input,
    G = dJ/dZ restricted to the output positions that tile serves."""
    c_in, f, h, w, kh, kw = 2, 3, 8, 7, 3, 2
    rng = np.random.default_rng(6)
    V = rng.standard_normal((c_in, h, w))
    layer = TiledConv2D(
        f, (kh, kw), strides=s, tile_size=tile, use_bias=False, dtype="float64"
    )
    layer.build((1, h, w, c_in))
    if tile > 1:
        layer._implementation = implementation
    kernel = rng.standard_normal(tuple(layer.kernel.shape))
    oh, ow = ref.out_size(h, kh, s), ref.out_size(w, kw, s)
    G = rng.standard_normal((f, oh, ow))
    g = G.transpose(1, 2, 0)[None]

    def objective(v, k):
        Z, _ = layer.stateless_call([k], [], v)
        return keras.ops.sum(Z * keras.ops.convert_to_tensor(g))

    J, (dv, dk) = gradients(objective, V.transpose(1, 2, 0)[None], kernel)
    assert dv.dtype == dk.dtype == np.float64  # 1e-10 tests the formulas
    expected_J, expected_dv = 0.0, np.zeros_like(V)
    for a in range(tile):
        for b in range(tile):
            # Keras (kh, kw, c, f) of tile (a, b) -> book K[i=f, l=c, m, n].
            K = kernel[a, b].transpose(3, 2, 0, 1)
            mask = np.zeros((oh, ow))
            mask[a::tile, b::tile] = 1.0
            expected_J += np.sum(ref.conv_strided(K, V, s) * G * mask)
            np.testing.assert_allclose(
                dk[a, b].transpose(3, 2, 0, 1),
                ref.grad_kernel(G * mask, V, s, kh, kw),
                atol=1e-10,
            )
            expected_dv += ref.grad_input(K, G * mask, s, h, w)
    np.testing.assert_allclose(J, expected_J, atol=1e-10)
    np.testing.assert_allclose(
        dv[0].transpose(2, 0, 1), expected_dv, atol=1e-10
    )


def test_gradients_flow_to_every_tile():
    x = np.random.default_rng(4).standard_normal((2, 7, 7, 2)).astype("f4")
    layer = TiledConv2D(3, 3, tile_size=2)
    layer.build(x.shape)

    def loss(kernel, bias):
        y, _ = layer.stateless_call([kernel, bias], [], x)
        return keras.ops.sum(keras.ops.square(y))

    _, (gk, gb) = gradients(loss, *layer.get_weights())
    assert np.all(np.abs(gk).sum(axis=(2, 3, 4)) > 0)
    assert np.all(np.abs(gb) > 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tile_size": 0}, "tile_size"),
        ({"tile_size": (1, 2, 3)}, "tile_size"),
        ({"groups": 3}, "groups"),
        ({"padding": "causal"}, "padding"),
        ({"implementation": "im2col"}, "implementation"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=f"(?s){match}.*Received"):
        TiledConv2D(4, 3, **kwargs)


def test_dynamic_shape_with_tiles_is_rejected():
    with pytest.raises(ValueError, match="static height"):
        TiledConv2D(2, 3, tile_size=2)(keras.Input((None, None, 3)))
