"""AlexNet. Krizhevsky, Sutskever & Hinton, "ImageNet Classification with
Deep Convolutional Neural Networks", NIPS 2012.

Sec. 3.5 and Figure 2 (layers), Sec. 3.2 (two-GPU split: conv2, conv4 and
conv5 see only the maps on their own GPU, here `groups=2`), Sec. 3.3 (LRN
after ReLU in conv1 and conv2, n=5, k=2, alpha=1e-4, beta=0.75), Sec. 3.4
(overlapping max pool z=3, s=2), Sec. 4.2 (dropout 0.5 in fc6, fc7),
Sec. 5 (init N(0, 0.01^2); biases 1 in conv2, conv4, conv5 and the hidden
FC layers, 0 elsewhere). See PAPERS.md 3.

Deliberate deviations:
- Input 227x227, not the paper's 224: (224 - 11) / 4 + 1 is not an integer;
  227 gives the 55x55 conv1 maps of Figure 2 (PAPERS.md 3d, Caffe).
- `groups=1` gives the one-tower network (62,378,344 parameters instead of
  the faithful 60,965,224).
- The conv2/4/5 groups are built as channel slices, one conv layer per
  group, concatenated (the paper's two towers; same connectivity and count
  as `Conv2D(groups=2)`, which `native_groups=True` selects).
- `small_input=True` (CPU-scale, 32-64 px): conv1 is 5x5 stride 1 "same"
  instead of 11x11 stride 4, and the FC layers have 4096/8 = 512 units
  (times `width_multiplier`); everything else (grouping, LRN, overlapping
  pools, dropout) is kept.
- `extra_conv6=True` (the "1 CNN*" net of Sec. 6: "an extra sixth
  convolutional layer over the last pooling layer"): the paper gives no
  width, kernel or grouping. Ours is 256 (the conv5 width, times
  `width_multiplier`) 3x3 "same" kernels + ReLU over pool5, one tower,
  bias 1 like conv4/conv5; at 227 px it keeps the 6x6x256 maps, so fc6 is
  unchanged and the net has 590,080 more parameters (61,555,304).
"""

import keras

from convnet_repro.models._common import check_inputs
from convnet_repro.models._common import grouped_conv
from convnet_repro.models._common import lrn as make_lrn
from convnet_repro.models._common import scaled
from convnet_repro.models._common import stage_conv

STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5")

# (stage, filters, kernel, grouped, bias_init, lrn_and_pool_after)
LAYERS = (
    ("conv1", 96, 11, False, 0.0, "lrn_pool"),
    ("conv2", 256, 5, True, 1.0, "lrn_pool"),
    ("conv3", 384, 3, False, 0.0, None),
    ("conv4", 384, 3, True, 1.0, None),
    ("conv5", 256, 3, True, 1.0, "pool"),
)


def build_alexnet(
    input_shape=(227, 227, 3),
    num_classes=1000,
    groups=2,
    lrn=True,
    dropout=0.5,
    init_stddev=0.01,
    small_input=False,
    width_multiplier=1.0,
    native_groups=False,
    conv=None,
    name=None,
    kernel_initializer=None,
    unit_biases=True,
    extra_conv6=False,
):
    """Builds AlexNet (Krizhevsky et al. 2012); outputs logits.

    Args:
        input_shape: `(H, W, C)`. Defaults to `(227, 227, 3)` (see module
            docstring for the 224 discrepancy).
        num_classes: int, size of `fc8` (no softmax). Defaults to `1000`.
        groups: `2` (faithful two-GPU split in conv2, conv4, conv5) or `1`
            (one tower).
        lrn: bool, LRN after ReLU in conv1 and conv2 (Sec. 3.3).
        dropout: float, dropout rate after fc6 and fc7 (Sec. 4.2).
        init_stddev: std of the zero-mean Gaussian for all weights (Sec. 5).
        small_input: bool, CPU-scale variant for 32-64 px inputs.
        width_multiplier: float, scales every conv and FC width.
        native_groups: bool. False (default) builds each grouped conv as
            two towers (`{stage}_conv_g0`, `_g1`) joined by a concatenation;
            True uses one `Conv2D(groups=2)` (same function and count;
            faster on GPU, ~20x slower to train on CPU in TF 2.21).
        conv: conv spec `{"kind", "tile_size", "stages"}`; stages are
            `"conv1".."conv5"` (and `"conv6"` with `extra_conv6`).
        name: model name. Defaults to `"alexnet"`.
        kernel_initializer: initializer of every kernel; `None` (default)
            is the paper's `RandomNormal(stddev=init_stddev)`.
        unit_biases: bool, biases 1 in conv2, conv4, conv5, fc6 and fc7
            (Sec. 5: "accelerates the early stages of learning by providing
            the ReLUs with positive inputs"); False gives zero biases.
        extra_conv6: bool, the Sec. 6 pre-trained net's sixth conv layer
            over pool5 (`conv6_conv`, 256 x 3x3 "same" + ReLU; width and
            kernel are our choice, see the module docstring): +590,080
            parameters, 61,555,304 in all at 227 px / 1000 classes.
            Its stage name for `conv` is `"conv6"`.

    Returns:
        A `keras.Model` from `(batch, H, W, C)` images to `(batch,
        num_classes)` logits. 227x227 gives the paper's 55-27-13-6 maps;
        H, W >= 67 (>= 15 with `small_input=True`).

    Example:

    >>> build_alexnet().count_params()
    60965224
    >>> build_alexnet(extra_conv6=True).count_params()
    61555304

    Reference:
    - Krizhevsky et al., NIPS 2012, Sec. 3-5 and Figure 2.
    """
    # Smallest input whose conv5 pool is still >= 1x1: 67 px with the
    # 11x11/4 conv1, 15 px with the small-input stem.
    shape = check_inputs(
        input_shape, num_classes, min_size=15 if small_input else 67
    )
    if groups not in (1, 2):
        raise ValueError(f"groups must be 1 or 2. Received: groups={groups!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"dropout must be in [0, 1). Received: dropout={dropout!r}"
        )

    def weights():
        if kernel_initializer is not None:
            return keras.initializers.get(kernel_initializer)
        return keras.initializers.RandomNormal(stddev=init_stddev)

    stages = STAGES + ("conv6",) if extra_conv6 else STAGES
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    for stage, filters, kernel, grouped, bias, after in LAYERS:
        conv_layer = stage_conv(conv, stage, stages)
        kw = {"padding": "same"}
        if stage == "conv1":
            if small_input:
                kernel = 5
            else:
                kw = {"strides": 4, "padding": "valid"}
        x = grouped_conv(
            x,
            conv_layer,
            scaled(filters, width_multiplier, divisor=groups),
            kernel,
            groups if grouped else 1,
            name=f"{stage}_conv",
            native=native_groups,
            kernel_initializer=weights(),
            bias_initializer=keras.initializers.Constant(
                bias if unit_biases else 0.0
            ),
            **kw,
        )
        x = keras.layers.ReLU(name=f"{stage}_relu")(x)
        if after == "lrn_pool" and lrn:
            x = make_lrn(name=f"{stage}_lrn")(x)
        if after:
            x = keras.layers.MaxPooling2D(3, strides=2, name=f"{stage}_pool")(x)
    if extra_conv6:
        x = stage_conv(conv, "conv6", stages)(
            scaled(256, width_multiplier),
            3,
            padding="same",
            kernel_initializer=weights(),
            bias_initializer=keras.initializers.Constant(
                1.0 if unit_biases else 0.0
            ),
            name="conv6_conv",
        )(x)
        x = keras.layers.ReLU(name="conv6_relu")(x)

    x = keras.layers.Flatten(name="flatten")(x)
    units = scaled(512 if small_input else 4096, width_multiplier)
    for fc in ("fc6", "fc7"):
        x = keras.layers.Dense(
            units,
            kernel_initializer=weights(),
            bias_initializer=keras.initializers.Constant(
                1.0 if unit_biases else 0.0
            ),
            name=fc,
        )(x)
        x = keras.layers.ReLU(name=f"{fc}_relu")(x)
        x = keras.layers.Dropout(dropout, name=f"{fc}_dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=weights(), name="fc8"
    )(x)
    return keras.Model(inputs, outputs, name=name or "alexnet")
