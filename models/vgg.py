"""VGG. Simonyan & Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition", ICLR 2015, arXiv:1409.1556.

Table 1 (configurations A, A-LRN, B, C, D, E), Sec. 2.1 (3x3 convs stride 1
pad 1, 1x1 convs in C, 2x2/2 max pools, FC-4096, FC-4096, FC-1000, ReLU
everywhere, LRN only in A-LRN), Table 2 (parameter counts), Sec. 3.1
(dropout 0.5 on the first two FC layers). See PAPERS.md 4.

Exact parameter counts (1000 classes): A/A-LRN 132,863,336; B 133,047,848;
C 133,638,952; D 138,357,544 (= keras.applications.VGG16); E 143,667,240
(= VGG19).

Deliberate deviations:
- Init: the paper pre-trains A and copies layers into deeper nets, or uses
  N(0, 10^-2 variance); it notes afterwards that Glorot init works without
  pre-training (Sec. 3.1), so `kernel_initializer` defaults to
  `"glorot_uniform"` (biases 0).
- A-LRN uses AlexNet's LRN parameters (n=5, k=2, alpha=1e-4, beta=0.75);
  the paper only says "LRN as in Krizhevsky et al.".
- `small_input=True` (CPU-scale, 32-64 px) keeps all five conv blocks and
  pools but uses 512-unit FC layers (times `width_multiplier`) instead of
  4096: a 32 px input ends as a 1x1x512 map.
"""

import keras

from convnet_repro.models._common import check_inputs
from convnet_repro.models._common import initialized_stage_conv
from convnet_repro.models._common import lrn as make_lrn
from convnet_repro.models._common import scaled

STAGES = ("block1", "block2", "block3", "block4", "block5")

# Table 1 as data: per block a list of (filters, kernel_size); "lrn" flags
# LRN after block1's conv (A-LRN).
VARIANTS = {
    "A": {"blocks": [[64], [128], [256] * 2, [512] * 2, [512] * 2]},
    "A-LRN": {
        "blocks": [[64], [128], [256] * 2, [512] * 2, [512] * 2],
        "lrn": True,
    },
    "B": {"blocks": [[64] * 2, [128] * 2, [256] * 2, [512] * 2, [512] * 2]},
    "C": {
        "blocks": [
            [64] * 2,
            [128] * 2,
            [256, 256, (256, 1)],
            [512, 512, (512, 1)],
            [512, 512, (512, 1)],
        ]
    },
    "D": {"blocks": [[64] * 2, [128] * 2, [256] * 3, [512] * 3, [512] * 3]},
    "E": {"blocks": [[64] * 2, [128] * 2, [256] * 4, [512] * 4, [512] * 4]},
}
ALIASES = {"vgg11": "A", "vgg11_lrn": "A-LRN", "vgg13": "B", "vgg16": "D",
           "vgg19": "E", "vgg16_c": "C"}  # fmt: skip


def apply_vgg_block(x, layers_spec, conv_layer, width_multiplier, lrn, name):
    """One VGG block: convs + ReLU (+ LRN after the first), 2x2/2 max pool.

    Args:
        x: input tensor.
        layers_spec: list of `filters` or `(filters, kernel_size)`.
        conv_layer: Conv2D-signature factory.
        width_multiplier: float, scales the filters.
        lrn: bool, LRN after the first conv's ReLU (A-LRN, block1).
        name: block name, e.g. `"block1"`.

    Returns:
        The pooled tensor.
    """
    for i, spec in enumerate(layers_spec, start=1):
        filters, kernel = spec if isinstance(spec, tuple) else (spec, 3)
        x = conv_layer(
            scaled(filters, width_multiplier),
            kernel,
            padding="same",
            name=f"{name}_conv{i}",
        )(x)
        x = keras.layers.ReLU(name=f"{name}_relu{i}")(x)
        if lrn and i == 1:
            x = make_lrn(name=f"{name}_lrn")(x)
    return keras.layers.MaxPooling2D(2, strides=2, name=f"{name}_pool")(x)


def build_vgg(
    variant="D",
    input_shape=(224, 224, 3),
    num_classes=1000,
    dropout=0.5,
    kernel_initializer="glorot_uniform",
    small_input=False,
    width_multiplier=1.0,
    conv=None,
    name=None,
):
    """Builds a VGG network (Simonyan & Zisserman 2015); outputs logits.

    Args:
        variant: `"A"`, `"A-LRN"`, `"B"`, `"C"`, `"D"`, `"E"` (Table 1) or an
            alias `vgg11, vgg11_lrn, vgg13, vgg16_c, vgg16, vgg19`.
        input_shape: `(H, W, C)`, H and W divisible by 32 for the paper's
            7x7 final map at 224. Defaults to `(224, 224, 3)`.
        num_classes: int, size of the last FC layer (no softmax).
        dropout: float, dropout after FC1 and FC2 (Sec. 3.1).
        kernel_initializer: initializer for all weights (see module notes).
        small_input: bool, 512-unit FC layers for 32-64 px inputs.
        width_multiplier: float, scales every conv and FC width.
        conv: conv spec `{"kind", "tile_size", "stages"}`; stages are
            `"block1".."block5"`.
        name: model name. Defaults to `"vgg_<variant>"`.

    Returns:
        A `keras.Model` from `(batch, H, W, C)` images (H, W >= 32) to
        `(batch, num_classes)` logits.

    Example:

    >>> build_vgg("D").count_params()
    138357544

    Reference:
    - Simonyan & Zisserman, ICLR 2015, Table 1 and Sec. 2-3.
    """
    key = ALIASES.get(variant, variant)
    if key not in VARIANTS:
        raise ValueError(
            f"Unknown VGG variant; use one of "
            f"{list(VARIANTS) + list(ALIASES)}. Received: variant={variant!r}"
        )
    shape = check_inputs(input_shape, num_classes, min_size=32)
    spec = VARIANTS[key]
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    for i, block in enumerate(spec["blocks"]):
        stage = STAGES[i]
        x = apply_vgg_block(
            x,
            block,
            initialized_stage_conv(conv, stage, STAGES, kernel_initializer),
            width_multiplier,
            lrn=spec.get("lrn", False) and i == 0,
            name=stage,
        )
    x = keras.layers.Flatten(name="flatten")(x)
    units = scaled(512 if small_input else 4096, width_multiplier)
    for fc in ("fc1", "fc2"):
        x = keras.layers.Dense(
            units, kernel_initializer=kernel_initializer, name=fc
        )(x)
        x = keras.layers.ReLU(name=f"{fc}_relu")(x)
        x = keras.layers.Dropout(dropout, name=f"{fc}_dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=kernel_initializer, name="predictions"
    )(x)
    default = "vgg_" + key.lower().replace("-", "_")
    return keras.Model(inputs, outputs, name=name or default)
