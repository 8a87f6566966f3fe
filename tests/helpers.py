"""Shared test helpers (STYLE.md Sec. 6): the essentials of keras
`testing.TestCase.run_layer_test`, for our custom layers."""

import os
import pathlib

import keras
import numpy as np
import pytest

# The offline data root (tests/conftest.py defaults it to ../shared/data).
DATA_ROOT = pathlib.Path(
    os.environ.get("CONVNET_REPRO_DATA_DIR", "/nonexistent")
)
MNIST_DIR = DATA_ROOT / "mnist"
IMAGENETTE_DIR = DATA_ROOT / "imagenette2-224"
needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason=f"real MNIST IDX files not found in {MNIST_DIR}",
)
needs_imagenette = pytest.mark.skipif(
    not (IMAGENETTE_DIR / "val").is_dir(),
    reason=f"Imagenette not found in {IMAGENETTE_DIR}",
)


def check_layer(
    cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    expected_num_weights=None,
    tmp_path=None,
    input_data=None,
    atol=1e-6,
):
    """Builds `cls(**init_kwargs)` on random data and checks the basics.

    Asserts:
    1. The output shape equals `expected_output_shape`, and
       `compute_output_shape(input_shape)` agrees.
    2. `cls.from_config(layer.get_config()).get_config() == get_config()`.
    3. `deserialize_keras_object(serialize_keras_object(layer))` works with
       no `custom_objects` (the class is registered) and keeps the config.
    4. With `tmp_path`: a `.keras` save/load round trip of a one-layer model
       gives the same outputs.
    5. With `expected_num_weights`: the number of weight variables.

    Args:
        cls: the layer class.
        init_kwargs: dict of constructor arguments.
        input_shape: full input shape including the batch size.
        expected_output_shape: full output shape.
        expected_num_weights: int or None (not checked).
        tmp_path: a `pathlib.Path` for the save/load check, or None.
        input_data: optional numpy input (default: standard normal).
        atol: tolerance of the save/load output comparison.

    Returns:
        `(layer, outputs)` with outputs as numpy.
    """
    if input_data is None:
        rng = np.random.default_rng(0)
        input_data = rng.standard_normal(input_shape).astype("float32")
    layer = cls(**init_kwargs)
    outputs = keras.ops.convert_to_numpy(layer(input_data))
    assert outputs.shape == tuple(expected_output_shape), (
        f"{cls.__name__}: output shape {outputs.shape} != "
        f"{tuple(expected_output_shape)}"
    )
    computed = tuple(layer.compute_output_shape(tuple(input_shape)))
    assert computed == tuple(expected_output_shape), (
        f"{cls.__name__}: compute_output_shape {computed} != "
        f"{tuple(expected_output_shape)}"
    )
    if expected_num_weights is not None:
        assert len(layer.weights) == expected_num_weights

    config = layer.get_config()
    assert cls.from_config(config).get_config() == config

    serialized = keras.saving.serialize_keras_object(layer)
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is cls
    assert revived.get_config() == config

    if tmp_path is not None:
        inputs = keras.Input(shape=tuple(input_shape[1:]))
        model = keras.Model(inputs, cls(**init_kwargs)(inputs))
        expected = keras.ops.convert_to_numpy(model(input_data))
        path = tmp_path / f"{cls.__name__}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        got = keras.ops.convert_to_numpy(loaded(input_data))
        np.testing.assert_allclose(got, expected, atol=atol, rtol=0)
    return layer, outputs


def gradients(fn, *args):
    """Value and gradients of a scalar `fn(*args)` on the current backend.

    `tf.GradientTape` (TensorFlow), `jax.value_and_grad` (JAX, with 64-bit
    types enabled while any argument is float64) or `torch.autograd`
    (PyTorch): the one autodiff API Keras 3 does not wrap in `keras.ops`.

    Args:
        fn: callable of backend tensors returning a scalar tensor; it may
            use `keras.ops` and layers (`layer.stateless_call` to
            differentiate with respect to weights).
        *args: numpy arrays, the points of differentiation.

    Returns:
        `(value, [grad of each arg])` as numpy arrays.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.convert_to_tensor(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = fn(*tensors)
        grads = tape.gradient(value, tensors)
    elif backend == "jax":
        import contextlib

        import jax

        wide = any(np.asarray(a).dtype == np.float64 for a in args)
        scope = jax.enable_x64(True) if wide else contextlib.nullcontext()
        with scope:
            tensors = [jax.numpy.asarray(a) for a in args]
            argnums = tuple(range(len(args)))
            value, grads = jax.value_and_grad(fn, argnums)(*tensors)
            value = np.asarray(value)
            grads = [np.asarray(g) for g in grads]
    elif backend == "torch":
        tensors = [
            keras.ops.convert_to_tensor(a).requires_grad_(True) for a in args
        ]
        value = fn(*tensors)
        value.backward()
        grads = [t.grad for t in tensors]
    else:
        pytest.skip(f"no autodiff on the {backend!r} backend")
    return (
        keras.ops.convert_to_numpy(value),
        [keras.ops.convert_to_numpy(g) for g in grads],
    )


def skip_unless_tensorflow(what):
    """pytest mark: skip a TensorFlow-only peer comparison elsewhere."""
    return pytest.mark.skipif(
        keras.backend.backend() != "tensorflow",
        reason=f"{what} is TensorFlow-only (KERAS_BACKEND=tensorflow runs "
        "it); the numpy-reference tests cover this backend",
    )


STUDY_CONF_DIR = pathlib.Path(__file__).resolve().parents[1] / "conf" / "study"


def compose_study(name, tmp_path, *overrides):
    """A concept study's config (conf/study/), untracked, output in tmp_path."""
    from hydra import compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(STUDY_CONF_DIR), version_base="1.3"):
        return compose(
            name,
            overrides=[
                f"out_dir={tmp_path}",
                "tracking.enabled=false",
                *overrides,
            ],
        )
