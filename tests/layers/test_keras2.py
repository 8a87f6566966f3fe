"""Migration from tf_keras LocallyConnected1D/2D (real tf_keras layers)."""

import keras
import numpy as np
import pytest

from convnet_repro import layers

# tf_keras runs on TensorFlow whatever KERAS_BACKEND says, so under JAX and
# PyTorch these tests migrate a real Keras 2 layer into that backend.


@pytest.fixture(scope="module")
def tf_keras():
    return pytest.importorskip("tf_keras")


CASES = [
    # (rank, input spatial, kernel, strides, padding)
    (2, (7, 6), (3, 2), (1, 1), "valid"),
    (2, (7, 6), 3, (2, 1), "valid"),
    (2, (7, 7), 3, 2, "same"),
    (1, (9,), 3, 2, "valid"),
    (1, (8,), 3, 1, "same"),
]


@pytest.mark.parametrize("implementation", [1, 2, 3])
@pytest.mark.parametrize("rank, spatial, kernel, strides, padding", CASES)
def test_from_locally_connected_gives_the_same_outputs(
    tf_keras, implementation, rank, spatial, kernel, strides, padding
):
    if padding == "same" and implementation == 1:
        pytest.skip("tf_keras implementation=1 supports padding='valid' only")
    cls = {
        1: tf_keras.layers.LocallyConnected1D,
        2: tf_keras.layers.LocallyConnected2D,
    }[rank]
    old = cls(
        4,
        kernel,
        strides=strides,
        padding=padding,
        implementation=implementation,
        activation="tanh",
        bias_initializer="random_normal",
        name="lc",
    )
    x = np.random.default_rng(0).standard_normal((2, *spatial, 3))
    x = x.astype("float32")
    expected = old(x).numpy()
    new = layers.from_locally_connected(old)
    assert type(new).__name__ == f"UnsharedConv{rank}D"
    assert new.name == "lc" and new.activation is keras.activations.tanh
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(new(x)), expected, atol=1e-5
    )


def test_h5_model_weights_load_into_unshared_conv(tf_keras, tmp_path):
    """A Keras 2 model (LocallyConnected2D, implementation=2, and a Dense)
    saved as .h5 loads into the Keras 3 rebuild with the same outputs."""
    k2 = tf_keras
    inputs = k2.Input((8, 8, 3))
    x = k2.layers.LocallyConnected2D(
        5, 3, implementation=2, bias_initializer="random_normal", name="lc2"
    )(inputs)
    x = k2.layers.Flatten(name="flat")(x)
    x = k2.layers.Dense(3, name="out")(x)
    old = k2.Model(inputs, x)
    path = tmp_path / "keras2.h5"
    old.save(path)
    data = np.random.default_rng(1).standard_normal((2, 8, 8, 3)).astype("f4")
    expected = old(data).numpy()

    inputs = keras.Input((8, 8, 3))
    x = layers.UnsharedConv2D(5, 3, name="lc2")(inputs)
    x = keras.layers.Flatten(name="flat")(x)
    new = keras.Model(inputs, keras.layers.Dense(3, name="out")(x))
    assert layers.load_locally_connected_h5(new, path) == ["lc2", "out"]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(new(data)), expected, atol=1e-5
    )


def test_unmatched_layer_name_is_reported(tf_keras, tmp_path):
    inputs = tf_keras.Input((6, 3))
    old = tf_keras.Model(
        inputs, tf_keras.layers.LocallyConnected1D(2, 3, name="a")(inputs)
    )
    old.save(tmp_path / "m.h5")
    inputs = keras.Input((6, 3))
    new = keras.Model(inputs, layers.UnsharedConv1D(2, 3, name="b")(inputs))
    with pytest.raises(ValueError, match="'b' has no weights.*'a'"):
        layers.load_locally_connected_h5(new, tmp_path / "m.h5")


def test_same_padding_that_tensorflow_places_differently_is_refused(
    tf_keras,
):
    old = tf_keras.layers.LocallyConnected2D(
        2, 2, padding="same", implementation=2
    )
    old.build((None, 6, 6, 1))
    with pytest.raises(ValueError, match="ZeroPadding.*Received"):
        layers.from_locally_connected(old)
