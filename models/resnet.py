"""ResNet v1. He, Zhang, Ren & Sun, "Deep Residual Learning for Image
Recognition", CVPR 2016, arXiv:1512.03385.

Table 1 (ResNet-18/34/50/101/152: stem 7x7/2 conv + 3x3/2 max pool, four
stages conv2_x..conv5_x of basic or bottleneck blocks, global average pool,
FC), Sec. 3.3 (shortcut options A: zero-padding, B: projections where
dimensions increase, C: all projections; BN after each conv, before the
activation; ReLU after the addition), Sec. 3.4 (He init, no dropout),
Sec. 4.2 (CIFAR-10 6n+2 nets: 3x3 conv 16, stages of 16/32/64 filters on
32/16/8 maps, option A). See PAPERS.md 6.

Exact trainable parameter counts, option B, 1000 classes (convs without
bias, BN gamma/beta counted, BN moving statistics not; the torchvision
convention): 11,689,512 / 21,797,672 / 25,557,032 / 44,549,160 /
60,192,808. ResNet-20 (option A, 10 classes): 269,722 (the paper's 0.27M).

Deliberate choices:
- In bottleneck blocks the stride-2 downsampling sits in the first 1x1 conv
  as in the authors' released Caffe models (torchvision's "v1.5" moves it
  to the 3x3 conv); parameter counts are identical.
- Option A's shortcut subsamples with stride 2 (1x1 max pool of stride 2 =
  taking every other pixel) and appends zero channels.
- `small_input=True` (CPU-scale, 32-64 px) for the ImageNet depths: the
  stem is a 3x3 stride-1 conv without max pool (as the paper's CIFAR nets);
  the four stages and their blocks are unchanged.
- BN uses epsilon 1e-5 (Caffe/torchvision), momentum 0.99 (Keras default).
- Strided windows pad symmetrically as Caffe, torchvision and
  `keras.applications` do: conv1 pads 3 then a valid 7x7/2 conv, pool1
  pads 1 then a valid 3x3/2 max pool, basic blocks' 3x3/2 convs pad 1 (TF
  "same" would pad 2/3 and 0/1, shifting every map by a pixel). With the
  same layer names as `keras.applications.ResNet50`, its weights load into
  the option-B ResNet-50/101/152 exactly (`models.keras_applications`).
"""

import functools

import keras

from convnet_repro.models._common import ZeroPadChannels
from convnet_repro.models._common import apply_conv
from convnet_repro.models._common import check_inputs
from convnet_repro.models._common import scaled
from convnet_repro.models._common import stage_conv

# Table 1 as data. "widths" are the stages' (bottleneck inner) widths.
VARIANTS = {
    "resnet18": {"block": "basic", "blocks": [2, 2, 2, 2], "shortcut": "B"},
    "resnet34": {"block": "basic", "blocks": [3, 4, 6, 3], "shortcut": "B"},
    "resnet50": {"block": "bottleneck", "blocks": [3, 4, 6, 3],
                 "shortcut": "B"},
    "resnet101": {"block": "bottleneck", "blocks": [3, 4, 23, 3],
                  "shortcut": "B"},
    "resnet152": {"block": "bottleneck", "blocks": [3, 8, 36, 3],
                  "shortcut": "B"},
}  # fmt: skip
for _n in (3, 5, 7, 9, 18):  # Sec. 4.2: 6n + 2 layers, n blocks per stage
    VARIANTS[f"resnet{6 * _n + 2}"] = {
        "block": "basic",
        "blocks": [_n] * 3,
        "shortcut": "A",
        "cifar": True,
    }
IMAGENET_STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5")
CIFAR_STAGES = ("conv1", "conv2", "conv3", "conv4")
SHORTCUTS = ("A", "B", "C")
# Every ResNet conv: He init (Sec. 3.4), BN before the ReLU (Sec. 3.3).
_conv_bn = functools.partial(
    apply_conv, batch_norm=True, kernel_initializer="he_normal"
)


def apply_shortcut(x, filters, stride, shortcut, conv_layer, name):
    """Shortcut branch (Sec. 3.3, options A/B/C).

    Args:
        x: block input.
        filters: output channels of the block.
        stride: the block's stride.
        shortcut: `"A"` (identity, or subsample + zero-pad channels), `"B"`
            (1x1 projection + BN only where the shape changes) or `"C"`
            (always a projection).
        conv_layer: Conv2D-signature factory.
        name: block name.

    Returns:
        The shortcut tensor, shaped like the residual branch.
    """
    changes = stride != 1 or x.shape[-1] != filters
    if shortcut == "C" or (shortcut == "B" and changes):
        return _conv_bn(
            x, conv_layer, filters, 1, stride, activation=None, name=f"{name}_0"
        )
    if not changes:
        return x
    if stride != 1:
        x = keras.layers.MaxPooling2D(
            1, strides=stride, name=f"{name}_0_subsample"
        )(x)
    return ZeroPadChannels(filters - x.shape[-1], name=f"{name}_0_pad")(x)


def apply_basic_block(x, filters, stride, shortcut, conv_layer, name):
    """Two 3x3 convs (Figure 5 left); output has `filters` channels."""
    s = apply_shortcut(x, filters, stride, shortcut, conv_layer, name)
    x = _conv_bn(x, conv_layer, filters, 3, stride, name=f"{name}_1")
    x = _conv_bn(
        x, conv_layer, filters, 3, 1, activation=None, name=f"{name}_2"
    )
    x = keras.layers.Add(name=f"{name}_add")([s, x])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def apply_bottleneck_block(x, filters, stride, shortcut, conv_layer, name):
    """1x1, 3x3, 1x1 convs (Figure 5 right); output has 4*filters channels."""
    s = apply_shortcut(x, 4 * filters, stride, shortcut, conv_layer, name)
    x = _conv_bn(x, conv_layer, filters, 1, stride, name=f"{name}_1")
    x = _conv_bn(x, conv_layer, filters, 3, 1, name=f"{name}_2")
    x = _conv_bn(
        x, conv_layer, 4 * filters, 1, 1, activation=None, name=f"{name}_3"
    )
    x = keras.layers.Add(name=f"{name}_add")([s, x])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def build_resnet(
    variant="resnet50",
    input_shape=(224, 224, 3),
    num_classes=1000,
    shortcut=None,
    small_input=False,
    width_multiplier=1.0,
    conv=None,
    name=None,
):
    """Builds a ResNet (He et al. 2016, Table 1 / Sec. 4.2); outputs logits.

    Args:
        variant: `"resnet18"`, `"resnet34"`, `"resnet50"`, `"resnet101"`,
            `"resnet152"` (ImageNet, Table 1) or `"resnet20"`, `"resnet32"`,
            `"resnet44"`, `"resnet56"`, `"resnet110"` (CIFAR, 6n+2).
        input_shape: `(H, W, C)`. Defaults to `(224, 224, 3)`.
        num_classes: int, size of the final FC layer.
        shortcut: `"A"`, `"B"` or `"C"` (Sec. 3.3). Defaults to the
            paper's choice: B for ImageNet depths, A for CIFAR.
        small_input: bool, 3x3/1 stem without max pool (ImageNet depths).
        width_multiplier: float, scales every width.
        conv: conv spec `{"kind", "tile_size", "stages"}`; stages are
            `"conv1".."conv5"` (CIFAR nets: `"conv1".."conv4"`).
        name: model name. Defaults to `variant`.

    Returns:
        A `keras.Model` from `(batch, H, W, C)` images to `(batch,
        num_classes)` logits.

    Example:

    >>> build_resnet("resnet50").count_params()
    25557032

    Reference:
    - He et al., CVPR 2016, Table 1, Sec. 3.3, 3.4, 4.2.
    """
    if variant not in VARIANTS:
        raise ValueError(
            f"Unknown ResNet variant; use one of {list(VARIANTS)}. "
            f"Received: variant={variant!r}"
        )
    spec = VARIANTS[variant]
    shortcut = shortcut or spec["shortcut"]
    if shortcut not in SHORTCUTS:
        raise ValueError(
            f"shortcut must be one of {list(SHORTCUTS)}. "
            f"Received: shortcut={shortcut!r}"
        )
    shape = check_inputs(input_shape, num_classes)
    cifar = spec.get("cifar", False)
    stages = CIFAR_STAGES if cifar else IMAGENET_STAGES
    block_fn = (
        apply_basic_block
        if spec["block"] == "basic"
        else apply_bottleneck_block
    )

    inputs = keras.Input(shape=shape, name="image")
    stem = stage_conv(conv, "conv1", stages)
    if cifar or small_input:
        x = _conv_bn(
            inputs, stem, scaled(16 if cifar else 64, width_multiplier), 3, 1,
            name="conv1",
        )  # fmt: skip
    else:
        x = _conv_bn(
            inputs, stem, scaled(64, width_multiplier), 7, 2, name="conv1"
        )
        # keras.applications / torchvision: pad 1 (zeros: x >= 0 after the
        # ReLU, so this equals -inf padding), then a valid 3x3/2 max pool.
        x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    base = 16 if cifar else 64
    for i, num_blocks in enumerate(spec["blocks"]):
        stage = stages[i + 1]
        conv_layer = stage_conv(conv, stage, stages)
        filters = scaled(base * 2**i, width_multiplier)
        for j in range(num_blocks):
            x = block_fn(
                x,
                filters,
                2 if (i > 0 and j == 0) else 1,
                shortcut,
                conv_layer,
                name=f"{stage}_block{j + 1}",
            )
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or variant)
