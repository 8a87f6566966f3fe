"""Tiny models for fast engine tests and smoke runs (no paper).

- `build_tiny_cnn`: conv1 (3x3, 8) -> ReLU -> 2x2 max pool -> conv2 (3x3,
  16) -> ReLU -> global average pool -> Dense logits. Stages: "conv1",
  "conv2".
- `build_engine_mlp`: Flatten -> Dense (-> BN) -> ReLU -> Dense logits, with
  an optional second (aux) output: the model of `conf/experiment/smoke.yaml`.
"""

import keras

from convnet_repro.models._common import check_inputs
from convnet_repro.models._common import stage_conv

STAGES = ("conv1", "conv2")


def build_tiny_cnn(
    input_shape, num_classes, conv=None, filters=(8, 16), name=None
):
    """Builds a 2-conv CNN that outputs logits (a smoke-test model).

    Args:
        input_shape: `(H, W, C)`; H, W must be static for unshared/tiled.
        num_classes: int, size of the final `Dense`.
        conv: conv spec dict (`kind`, `tile_size`, `stages` in
            `("conv1", "conv2")`); see `models._common`.
        filters: pair of ints, filters of conv1 and conv2.
        name: model name. Defaults to `"tiny_cnn"`.

    Returns:
        A `keras.Model` from `(batch, H, W, C)` images (H, W >= 6) to
        `(batch, num_classes)` logits.

    Example:

    >>> build_tiny_cnn((16, 16, 1), 10).output_shape
    (None, 10)
    """
    shape = check_inputs(input_shape, num_classes, min_size=6)
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    for i, stage in enumerate(STAGES):
        conv_layer = stage_conv(conv, stage, STAGES)
        x = conv_layer(filters[i], 3, padding="same", name=f"{stage}_conv")(x)
        x = keras.layers.ReLU(name=f"{stage}_relu")(x)
        if i == 0:
            x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or "tiny_cnn")


def build_engine_mlp(
    input_shape=(8, 8, 1),
    num_classes=4,
    hidden_units=16,
    batch_norm=False,
    aux_head=False,
    dropout=0.0,
    name=None,
):
    """Flatten -> Dense (-> BN) -> ReLU -> Dense logits (+ optional aux head).

    Args:
        input_shape: `(H, W, C)`.
        num_classes: number of logits.
        hidden_units: width of the hidden layer.
        batch_norm: insert a `BatchNormalization` before the ReLU.
        dropout: dropout rate after the hidden layer (0 = none).
        aux_head: add a second logits output (GoogLeNet-style aux head) to
            exercise `trainer.loss_weights`.
        name: model name.

    Returns:
        A functional `keras.Model` outputting logits (a list of two when
        `aux_head`).
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = keras.layers.Dense(
        hidden_units, use_bias=not batch_norm, name="hidden_dense"
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="hidden_bn")(x)
    x = keras.layers.ReLU(name="hidden_relu")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    if aux_head:
        aux = keras.layers.Dense(num_classes, name="aux_logits")(x)
        outputs = [outputs, aux]
    return keras.Model(inputs, outputs, name=name or "engine_mlp")
