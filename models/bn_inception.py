"""BN-Inception. Ioffe & Szegedy, "Batch Normalization: Accelerating Deep
Network Training by Reducing Internal Covariate Shift", ICML 2015,
arXiv:1502.03167.

Appendix, Figure 5 (the table below), Sec. 4.2 (BN before each
nonlinearity, applied "in a convolutional way": one gamma/beta per feature
map; 13.6M parameters stated), Sec. 4.2.1 (BN-x5/x30 remove LRN and
dropout). Changes versus GoogLeNet (PAPERS.md 2b): each 5x5 becomes two
stacked 3x3 convs ("double 3x3"); a third 28x28 module 3c; pooling inside
modules is average or max per the table; no pooling layers between
modules: modules 3c and 4e downsample with stride-2 convs/pool before the
concatenation; conv1 is a separable 7x7 with depth multiplier 8.

Table convention (the paper's Figure 5 is internally inconsistent): we use
the branch widths of the table literally, as the public reimplementations
do (MXNet/CNTK "Inception-BN"). The branches of 4c and 4d then sum to
160+160+160+128 = 608 channels (the table prints 576) and 4e outputs
192+256+608 = 1056 (the table prints 1024). With a separable conv1, BN, no
LRN weights and 1000 classes this gives 11,278,528 trainable parameters
(11,298,560 with BN moving statistics), not the 13.6M the text states; we
do not invent widths to reach 13.6M. The dense-conv1 option adds 6,696.

Deliberate deviations:
- The paper gives no init; `kernel_initializer` defaults to Glorot
  uniform, zero biases. Without BN the Glorot-initialised net barely
  passes its input through (the features' spread across a batch is
  ~5e-5 at init, 32 px, width 0.25), so the mini-scale experiment uses
  `"he_normal"` (He et al. 2015) for every variant.
- With `batch_norm=True` convs have no bias (BN's beta subsumes it,
  Sec. 3.2); with `batch_norm=False` ("Inception" baseline) they do.
- `lrn=True` puts LRN after pool1 and conv2 as GoogLeNet's Figure 3 (the
  "Inception" baseline of Sec. 4.2.2); BN-x5/x30 set `lrn=False`.
- `small_input=True` (CPU-scale, 32-64 px): conv1 is 3x3 stride 1 and the
  stem's first max pool is dropped, so a 32 px input reaches inception3 at
  16x16, inception4 at 8x8 and inception5 at 4x4.
- Padding as the public Caffe BN-Inception: strided convs (conv1 7x7/2,
  the 3x3/2 convs of 3c and 4e) pad k//2 on every side; the 3x3/2 max
  pools keep TF "same" (one -inf row/column at the end = Caffe's
  ceil-mode pooling on even sizes).
"""

import functools

import keras

from convnet_repro.models._common import apply_conv
from convnet_repro.models._common import check_inputs
from convnet_repro.models._common import initialized_stage_conv
from convnet_repro.models._common import scaled
from convnet_repro.models.googlenet import STAGES  # the same five stages
from convnet_repro.models.googlenet import apply_stem

# Figure 5: #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3,
# pool type, pool proj (None = pass through), stride.
MODULES = {
    "3a": (64, 64, 64, 64, 96, "avg", 32, 1),
    "3b": (64, 64, 96, 64, 96, "avg", 64, 1),
    "3c": (0, 128, 160, 64, 96, "max", None, 2),
    "4a": (224, 64, 96, 96, 128, "avg", 128, 1),
    "4b": (192, 96, 128, 96, 128, "avg", 128, 1),
    "4c": (160, 128, 160, 128, 160, "avg", 128, 1),
    "4d": (96, 128, 192, 160, 192, "avg", 128, 1),
    "4e": (0, 128, 192, 192, 256, "max", None, 2),
    "5a": (352, 192, 320, 160, 224, "avg", 128, 1),
    "5b": (352, 192, 320, 192, 224, "max", 128, 1),
}
STAGE_MODULES = {
    "inception3": ("3a", "3b", "3c"),
    "inception4": ("4a", "4b", "4c", "4d", "4e"),
    "inception5": ("5a", "5b"),
}


def apply_bn_inception_module(
    x,
    widths,
    conv_layer,
    name,
    batch_norm=True,
    activation="relu",
    width_multiplier=1.0,
):
    """One BN-Inception module (Figure 5 row): up to four branches.

    Args:
        x: input tensor.
        widths: a `MODULES` row.
        conv_layer: Conv2D-signature factory.
        name: e.g. `"inception3a"` (the Concatenate layer's name).
        batch_norm: bool, BN before every nonlinearity.
        activation: nonlinearity name (`"relu"` or `"sigmoid"`).
        width_multiplier: float, scales every width.

    Returns:
        The concatenated tensor.
    """
    c1, c3r, c3, d3r, d3, pool_type, proj, stride = widths

    def unit(t, filters, kernel, suffix, strides=1):
        return apply_conv(
            t,
            conv_layer,
            scaled(filters, width_multiplier),
            kernel,
            strides=strides,
            batch_norm=batch_norm,
            activation=activation,
            name=f"{name}_{suffix}",
        )

    branches = []
    if c1:
        branches.append(unit(x, c1, 1, "1x1"))
    b3 = unit(x, c3r, 1, "3x3_reduce")
    branches.append(unit(b3, c3, 3, "3x3", strides=stride))
    d = unit(x, d3r, 1, "double3x3_reduce")
    d = unit(d, d3, 3, "double3x3a")
    branches.append(unit(d, d3, 3, "double3x3b", strides=stride))
    pool_cls = {"avg": keras.layers.AveragePooling2D,
                "max": keras.layers.MaxPooling2D}[pool_type]  # fmt: skip
    p = pool_cls(3, strides=stride, padding="same", name=f"{name}_pool")(x)
    if proj is not None:
        p = unit(p, proj, 1, "pool_proj")
    branches.append(p)
    return keras.layers.Concatenate(name=name)(branches)


def build_bn_inception(
    input_shape=(224, 224, 3),
    num_classes=1000,
    batch_norm=True,
    activation="relu",
    lrn=True,
    dropout=0.4,
    width_multiplier=1.0,
    small_input=False,
    conv=None,
    name=None,
    separable_conv1=True,
    kernel_initializer="glorot_uniform",
):
    """Builds BN-Inception (BN paper, Figure 5); outputs logits.

    Args:
        input_shape: `(H, W, C)`. Defaults to `(224, 224, 3)`.
        num_classes: int, size of the final linear layer.
        batch_norm: bool. False gives the paper's "Inception" baseline
            (same topology, biases, no BN).
        activation: `"relu"` or `"sigmoid"` (BN-x5-Sigmoid, Sec. 4.2.2).
        lrn: bool, LRN after pool1 and conv2 (removed in BN-x5, 4.2.1).
        dropout: float, dropout before the classifier (0.4 as GoogLeNet;
            BN-x5/x30 use 0).
        width_multiplier: float, scales every width.
        small_input: bool, CPU-scale stem for 32-64 px inputs.
        conv: conv spec `{"kind", "tile_size", "stages"}`; stages are
            `"conv1", "conv2", "inception3", "inception4", "inception5"`.
            An unshared/tiled conv1 replaces the separable conv1.
        name: model name. Defaults to `"bn_inception"` (or
            `"inception_nobn"`).
        separable_conv1: bool, conv1 is a separable 7x7 with depth
            multiplier 8 (paper). False gives a dense 7x7 conv.
        kernel_initializer: initializer of every conv and the classifier
            (the separable conv1's depthwise and pointwise kernels).
            Defaults to `"glorot_uniform"`.

    Returns:
        A `keras.Model` from `(batch, H, W, C)` images to `(batch,
        num_classes)` logits.

    Example:

    >>> model = build_bn_inception(lrn=False)
    >>> model.output_shape
    (None, 1000)

    Reference:
    - Ioffe & Szegedy, ICML 2015, Sec. 4.2 and Appendix Figure 5.
    """
    shape = check_inputs(input_shape, num_classes)
    if not 0.0 <= (dropout or 0.0) < 1.0:
        raise ValueError(
            f"dropout must be in [0, 1). Received: dropout={dropout!r}"
        )
    keras.activations.get(activation)  # fails early on a bad name

    common = {"batch_norm": batch_norm, "activation": activation}
    inputs = keras.Input(shape=shape, name="image")
    x = apply_stem(inputs, conv, kernel_initializer, lrn=lrn,
                   separable_conv1=separable_conv1, small_input=small_input,
                   width_multiplier=width_multiplier, **common)  # fmt: skip
    apply_module = functools.partial(
        apply_bn_inception_module, width_multiplier=width_multiplier, **common
    )
    for stage, modules in STAGE_MODULES.items():
        conv_layer = initialized_stage_conv(
            conv, stage, STAGES, kernel_initializer
        )
        for m in modules:
            x = apply_module(x, MODULES[m], conv_layer, f"inception{m}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=kernel_initializer, name="logits"
    )(x)
    default = "bn_inception" if batch_norm else "inception_nobn"
    return keras.Model(inputs, outputs, name=name or default)
