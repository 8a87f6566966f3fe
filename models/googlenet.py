"""GoogLeNet (Inception v1). Szegedy et al., "Going Deeper with
Convolutions", CVPR 2015, arXiv:1409.4842.

Table 1 (layer widths of inception modules 3a-5b), Figure 2(b) (module:
1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1, all with ReLU),
Figure 3 (LRN after pool1 and after conv2), Sec. 5 (auxiliary classifiers
on 4a and 4d: 5x5/3 avg pool, 1x1 conv 128, FC 1024, dropout 0.7, linear;
their losses are weighted by 0.3 and they are discarded at inference;
dropout 0.4 before the final linear layer). See PAPERS.md 5.

Exact parameter count (dense conv1, no aux heads, 1000 classes):
6,998,552; the aux heads add 3,188,840 (on 4a) and 3,190,888 (on 4d).

Deliberate deviations:
- The paper gives no init; `kernel_initializer` defaults to Glorot
  uniform, zero biases. Without BN the Glorot-initialised small net barely
  passes its input through (features' spread across a batch ~4e-5 at
  56 px, width 0.25), so the mini-scale table uses `"he_normal"`.
- `separable_conv1=True` makes conv1 a depthwise-separable 7x7 with depth
  multiplier 8, which matches Table 1's "2.7K" params for conv1 (a dense
  7x7x3x64 conv has 9.4K); the dense conv is the default because the text
  describes a plain convolution.
- `small_input=True` (CPU-scale, 32-64 px): conv1 is 3x3 stride 1 and the
  stem has one 3x3/2 max pool (after conv2) instead of two, so a 32 px
  input reaches inception3 at 16x16, inception4 at 8x8, inception5 at 4x4.
- Padding as the authors' Caffe model: conv1 pads 3 on every side before
  its 7x7/2 (TF "same" would pad 2 above/left, 3 below/right); the 3x3/2
  max pools keep TF "same", which pads one -inf row/column at the end
  only, exactly Caffe's ceil-mode pooling on these even sizes.
"""

import functools

import keras

from convnet_repro.models._common import apply_conv
from convnet_repro.models._common import check_inputs
from convnet_repro.models._common import initialized_stage_conv
from convnet_repro.models._common import lrn as make_lrn
from convnet_repro.models._common import max_pool_3x3_s2
from convnet_repro.models._common import scaled
from convnet_repro.models._common import separable_stem_conv

STAGES = ("conv1", "conv2", "inception3", "inception4", "inception5")

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
MODULES = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
AUX_AFTER = ("4a", "4d")
# Sec. 5: "their loss is added to the total loss of the network with a
# discount weight (the losses of the auxiliary classifiers were weighted by
# 0.3)". Use as `model.compile(loss_weights=AUX_LOSS_WEIGHTS, ...)`.
AUX_LOSS_WEIGHTS = {"logits": 1.0, "aux1": 0.3, "aux2": 0.3}


def aux_compile_args(loss, metrics=("accuracy",)):
    """`model.compile` arguments for a model built with `aux_logits=True`.

    Keras needs one loss per output and labels keyed like the outputs (see
    `aux_targets`). Metrics are computed on the main head only.

    Args:
        loss: a Keras loss (e.g. sparse CE with `from_logits=True`).
        metrics: metrics for the `"logits"` output.

    Returns:
        `{"loss": ..., "loss_weights": AUX_LOSS_WEIGHTS, "metrics": ...}`.

    Example:

    >>> loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    >>> sorted(aux_compile_args(loss))
    ['loss', 'loss_weights', 'metrics']
    """
    return {
        "loss": {k: loss for k in AUX_LOSS_WEIGHTS},
        "loss_weights": dict(AUX_LOSS_WEIGHTS),
        "metrics": {"logits": list(metrics)},
    }


def aux_targets(images, labels):
    """`tf.data` map function: the same labels for the three outputs."""
    return images, {k: labels for k in AUX_LOSS_WEIGHTS}


def apply_inception_module(x, widths, conv_layer, name, width_multiplier=1.0):
    """One inception module (Figure 2(b)): four branches concatenated.

    Args:
        x: input tensor.
        widths: `(#1x1, #3x3 red, #3x3, #5x5 red, #5x5, pool proj)`.
        conv_layer: Conv2D-signature factory.
        name: e.g. `"inception4a"`.
        width_multiplier: float, scales every width.

    Returns:
        The concatenated tensor (`name` is the Concatenate layer).
    """
    c1, c3r, c3, c5r, c5, cp = (scaled(c, width_multiplier) for c in widths)

    def unit(t, filters, kernel, suffix):
        return apply_conv(
            t, conv_layer, filters, kernel, name=f"{name}_{suffix}"
        )

    b1 = unit(x, c1, 1, "1x1")
    b3 = unit(unit(x, c3r, 1, "3x3_reduce"), c3, 3, "3x3")
    b5 = unit(unit(x, c5r, 1, "5x5_reduce"), c5, 5, "5x5")
    bp = keras.layers.MaxPooling2D(
        3, strides=1, padding="same", name=f"{name}_pool"
    )(x)
    bp = unit(bp, cp, 1, "pool_proj")
    return keras.layers.Concatenate(name=name)([b1, b3, b5, bp])


def apply_aux_head(
    x,
    num_classes,
    conv_layer,
    dropout,
    width_multiplier,
    name,
    kernel_initializer="glorot_uniform",
):
    """Auxiliary classifier (Sec. 5): avg pool 5/3, 1x1 conv 128, FC 1024,
    dropout 0.7, linear. Returns logits."""
    dense = functools.partial(
        keras.layers.Dense, kernel_initializer=kernel_initializer
    )
    pool = min(5, x.shape[1], x.shape[2])
    x = keras.layers.AveragePooling2D(pool, strides=3, name=f"{name}_pool")(x)
    x = apply_conv(
        x, conv_layer, scaled(128, width_multiplier), 1, name=f"{name}_proj"
    )
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    x = dense(scaled(1024, width_multiplier), name=f"{name}_fc")(x)
    x = keras.layers.ReLU(name=f"{name}_fc_relu")(x)
    x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return dense(num_classes, name=name)(x)


def apply_stem(
    x,
    conv,
    kernel_initializer,
    lrn=True,
    separable_conv1=False,
    small_input=False,
    width_multiplier=1.0,
    **unit,
):
    """The layers before inception3 (Table 1, Figure 3); BN-Inception's too.

    conv1 7x7/2 (3x3/1 with `small_input`; a separable 7x7 with depth
    multiplier 8 with `separable_conv1`, unless `conv` makes it unshared or
    tiled), 3x3/2 max pool `pool1` (dropped with `small_input`), LRN
    `pool1_lrn`, 1x1 `conv2_reduce`, 3x3 `conv2`, LRN `conv2_lrn`, 3x3/2
    max pool `pool2`. `lrn=False` drops both LRNs; `**unit` (`batch_norm`,
    `activation`) goes to every `apply_conv`.
    """

    def conv_for(stage):
        return initialized_stage_conv(conv, stage, STAGES, kernel_initializer)

    def maybe_lrn(t, name):
        return make_lrn(name=name)(t) if lrn else t

    c64, c192 = scaled(64, width_multiplier), scaled(192, width_multiplier)
    conv1 = conv_for("conv1")
    if separable_conv1:
        conv1 = separable_stem_conv(conv1, kernel_initializer)
    k1, s1 = (3, 1) if small_input else (7, 2)
    x = apply_conv(x, conv1, c64, k1, strides=s1, name="conv1", **unit)
    if not small_input:
        x = max_pool_3x3_s2(x, "pool1")
    x = maybe_lrn(x, "pool1_lrn")
    x = apply_conv(x, conv_for("conv2"), c64, 1, name="conv2_reduce", **unit)
    x = apply_conv(x, conv_for("conv2"), c192, 3, name="conv2", **unit)
    x = maybe_lrn(x, "conv2_lrn")
    return max_pool_3x3_s2(x, "pool2")


def build_googlenet(
    input_shape=(224, 224, 3),
    num_classes=1000,
    aux_logits=False,
    dropout=0.4,
    aux_dropout=0.7,
    lrn=True,
    separable_conv1=False,
    small_input=False,
    width_multiplier=1.0,
    conv=None,
    name=None,
    kernel_initializer="glorot_uniform",
):
    """Builds GoogLeNet (Szegedy et al. 2015, Table 1); outputs logits.

    Args:
        input_shape: `(H, W, C)`. Defaults to `(224, 224, 3)`.
        num_classes: int, size of the final linear layer.
        aux_logits: bool. If True the model outputs a dict
            `{"logits": main, "aux1": on 4a, "aux2": on 4d}`; compile with
            `**aux_compile_args(loss)` (aux losses weighted 0.3, Sec. 5)
            and map the data with `aux_targets`.
        dropout: float, dropout before the final linear layer (0.4).
        aux_dropout: float, dropout in the aux heads (0.7).
        lrn: bool, LRN after pool1 and after conv2 (Figure 3).
        separable_conv1: bool, depthwise-separable conv1 (multiplier 8).
            An unshared/tiled conv1 (via `conv`) takes precedence.
        small_input: bool, CPU-scale stem for 32-64 px inputs.
        width_multiplier: float, scales every width.
        conv: conv spec `{"kind", "tile_size", "stages"}`; stages are
            `"conv1", "conv2", "inception3", "inception4", "inception5"`
            (the aux heads' 1x1 conv follows `"inception4"`).
        name: model name. Defaults to `"googlenet"`.
        kernel_initializer: initializer of every conv and dense kernel.
            Defaults to `"glorot_uniform"`.

    Returns:
        A `keras.Model` from `(batch, H, W, C)` images to `(batch,
        num_classes)` logits, or to a dict of three such tensors.

    Example:

    >>> build_googlenet().count_params()
    6998552

    Reference:
    - Szegedy et al., CVPR 2015, Table 1, Figures 2-3, Sec. 5.
    """
    shape = check_inputs(input_shape, num_classes)

    inputs = keras.Input(shape=shape, name="image")
    x = apply_stem(inputs, conv, kernel_initializer, lrn=lrn,
                   separable_conv1=separable_conv1, small_input=small_input,
                   width_multiplier=width_multiplier)  # fmt: skip

    aux = []
    for stage, modules in (
        ("inception3", ("3a", "3b")),
        ("inception4", ("4a", "4b", "4c", "4d", "4e")),
        ("inception5", ("5a", "5b")),
    ):
        conv_layer = initialized_stage_conv(
            conv, stage, STAGES, kernel_initializer
        )
        for module in modules:
            x = apply_inception_module(
                x,
                MODULES[module],
                conv_layer,
                name=f"inception{module}",
                width_multiplier=width_multiplier,
            )
            if aux_logits and module in AUX_AFTER:
                aux.append(
                    apply_aux_head(
                        x,
                        num_classes,
                        conv_layer,
                        aux_dropout,
                        width_multiplier,
                        name=f"aux{len(aux) + 1}",
                        kernel_initializer=kernel_initializer,
                    )
                )
        if stage != "inception5":
            x = max_pool_3x3_s2(x, f"pool{stage[-1]}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    logits = keras.layers.Dense(
        num_classes, kernel_initializer=kernel_initializer, name="logits"
    )(x)
    outputs = logits
    if aux_logits:
        outputs = {"logits": logits, "aux1": aux[0], "aux2": aux[1]}
    return keras.Model(inputs, outputs, name=name or "googlenet")
