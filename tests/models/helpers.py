"""Shared checks for the model-builder tests."""

import keras
import numpy as np
import tensorflow as tf


def trainable_count(model):
    """Number of trainable scalars (BN gamma/beta yes, moving stats no)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def conv_params(kind, out_hw, kernel, c_in, filters, bias=True, tile=2):
    """Parameters of one conv layer of `kind`, straight from the formulas.

    conv2d: kh*kw*c*f (+ f); unshared (DL book eq. 9.9): one kernel and one
    bias per output position, oh*ow*(kh*kw*c*f + f); tiled (eq. 9.10):
    t_h*t_w kernels and biases, t clipped to the output size.
    """
    oh, ow = out_hw
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    per = kh * kw * c_in * filters + (filters if bias else 0)
    if kind == "conv2d":
        return per
    if kind == "unshared":
        return oh * ow * per
    if kind == "tiled":
        return min(tile, oh) * min(tile, ow) * per
    raise ValueError(kind)


def train_step(model, x, num_classes, loss_weights=None):
    """One SGD step on random labels; checks loss, gradients and update.

    Returns the loss value. Asserts every trainable weight gets a finite,
    not-all-zero gradient and that the step changes the weights.
    """
    y = np.arange(len(x)) % num_classes
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        if isinstance(out, dict):
            loss = sum(w * loss_fn(y, out[k]) for k, w in loss_weights.items())
        else:
            loss = loss_fn(y, out)
    grads = tape.gradient(loss, model.trainable_weights)
    assert np.isfinite(float(loss))
    for w, g in zip(model.trainable_weights, grads):
        assert g is not None, f"no gradient for {w.path}"
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), w.path
    nonzero = [np.any(np.asarray(g) != 0) for g in grads]
    # Dead ReLUs can zero a few gradients; most must flow.
    assert np.mean(nonzero) > 0.9, np.mean(nonzero)
    before = [np.array(w) for w in model.trainable_weights]
    keras.optimizers.SGD(0.1).apply(grads, model.trainable_weights)
    changed = [
        not np.array_equal(b, np.asarray(w))
        for b, w in zip(before, model.trainable_weights)
    ]
    assert np.mean(changed) > 0.9
    return float(loss)


def forward_and_train_step(model, num_classes=10):
    """Checks the logits' shape, then `train_step`, on random images.

    The batch is two uniform random images of the model's input shape
    (seed 1).
    """
    shape = (2, *model.input_shape[1:])
    x = np.random.default_rng(1).random(shape).astype("float32")
    assert model(x).shape == (2, num_classes)
    return train_step(model, x, num_classes)


def roundtrip(model, tmp_path):
    """Saves to `.keras`, reloads without custom_objects, compares output.

    The outputs are compared on a batch of two uniform random images of the
    model's input shape (seed 2).
    """
    shape = (2, *model.input_shape[1:])
    x = np.random.default_rng(2).random(shape).astype("float32")
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    expected = model(x, training=False)
    got = loaded(x, training=False)
    if isinstance(expected, dict):
        assert set(expected) == set(got)
        for k in expected:
            np.testing.assert_allclose(got[k], expected[k], atol=1e-5)
    else:
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert loaded.count_params() == model.count_params()
    return loaded


def output_shapes(model, names):
    """`{name: output shape without batch}` for the named layers."""
    return {n: tuple(model.get_layer(n).output.shape[1:]) for n in names}


def kernel_initializers(model):
    """Every kernel initializer of `model` (conv, separable, dense)."""
    attrs = ("kernel_initializer", "depthwise_initializer",
             "pointwise_initializer")  # fmt: skip
    return [
        getattr(layer, attr)
        for layer in model.layers
        for attr in attrs
        if hasattr(layer, attr)
    ]


def assert_conv_pads_symmetrically(model, name, pad, x):
    """Layer `{name}_conv` equals a conv padded `pad` on every side.

    The reference is `tf.nn.conv2d` with explicit padding (Caffe's and
    PyTorch's convention), applied to the input of `{name}_pad`.
    """
    conv = model.get_layer(f"{name}_conv")
    probe = keras.Model(
        model.input, [model.get_layer(f"{name}_pad").input, conv.output]
    )
    inputs, got = (np.asarray(t) for t in probe(x))
    p = [[0, 0], [pad, pad], [pad, pad], [0, 0]]
    expected = tf.nn.conv2d(inputs, conv.kernel, conv.strides, padding=p)
    if conv.use_bias:
        expected = expected + conv.bias
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
