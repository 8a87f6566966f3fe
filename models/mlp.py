"""The MNIST multilayer perceptron of the Batch Normalization paper.

Reference:
- Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training
  by Reducing Internal Covariate Shift", ICML 2015, arXiv:1502.03167,
  Sec. 4.1 (784-100-100-100-10, sigmoid, Figure 1) and Sec. 3.2 (BN goes
  immediately before the nonlinearity, z = g(BN(Wu)); the bias b is dropped
  because BN's beta subsumes it).
"""

import keras

from convnet_repro.models._common import check_inputs


def build_bn_mnist_mlp(
    input_shape=(28, 28, 1),
    num_classes=10,
    hidden_units=(100, 100, 100),
    batch_norm=True,
    activation="sigmoid",
    kernel_init_stddev=0.1,
    name=None,
):
    """Builds the BN paper's MNIST MLP (Sec. 4.1); outputs logits.

    Each hidden layer is `Dense(use_bias=not batch_norm)` ->
    `BatchNormalization` (if `batch_norm`) -> `Activation`. The input of
    `hidden{i}_act` is the "input to a typical sigmoid" that Figure 1(b, c)
    plots.

    Args:
        input_shape: image shape; flattened inside the model. Defaults to
            `(28, 28, 1)` (784 inputs).
        num_classes: int, units of the `logits` layer. Defaults to `10`.
        hidden_units: tuple of ints, one per hidden layer. Defaults to
            `(100, 100, 100)` (paper).
        batch_norm: bool, add BN before each nonlinearity. Defaults to `True`.
        activation: Keras activation name. Defaults to `"sigmoid"` (paper).
        kernel_init_stddev: float, std of the zero-mean Gaussian used for all
            weights. The paper only says "small random Gaussian values";
            `0.1` follows the faithful public reproduction (PAPERS.md 1),
            which used a truncated normal; we use a plain normal as the paper
            says. Biases start at zero.
        name: model name. Defaults to `"bn_mnist_mlp"` or
            `"bn_mnist_mlp_nobn"`.

    Returns:
        A functional `keras.Model` from `(batch, *input_shape)` inputs to
        `(batch, num_classes)` logits, with layers `flatten`,
        `hidden{i}_dense`, `hidden{i}_bn` (only with BN), `hidden{i}_act`
        (i = 1, 2, ...) and `logits`.

    Example:

    >>> model = build_bn_mnist_mlp()
    >>> model.output_shape
    (None, 10)
    """
    shape = tuple(input_shape)
    check_inputs(shape if len(shape) == 3 else (*shape, 1), num_classes)
    if not hidden_units or any(int(u) < 1 for u in hidden_units):
        raise ValueError(
            "hidden_units must be a non-empty list of positive ints. "
            f"Received: hidden_units={hidden_units!r}"
        )
    if kernel_init_stddev <= 0:
        raise ValueError(
            "kernel_init_stddev must be > 0. "
            f"Received: kernel_init_stddev={kernel_init_stddev!r}"
        )

    def init():
        return keras.initializers.RandomNormal(stddev=kernel_init_stddev)

    inputs = keras.Input(shape=shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(
            int(units),
            use_bias=not batch_norm,
            kernel_initializer=init(),
            name=f"hidden{i}_dense",
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"hidden{i}_bn")(x)
        x = keras.layers.Activation(activation, name=f"hidden{i}_act")(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=init(), name="logits"
    )(x)
    default = "bn_mnist_mlp" if batch_norm else "bn_mnist_mlp_nobn"
    return keras.Model(inputs, outputs, name=name or default)
