"""Shared plumbing for the model builders: the conv seam and small helpers.

Every builder in `models/` accepts a conv specification

    conv = {"kind": "conv2d" | "unshared" | "tiled",
            "tile_size": t,            # only for kind="tiled"
            "stages": ["conv1", ...]}  # default: every stage of the family

and asks `stage_conv(conv, stage, all_stages)` for the layer factory of
each stage. The factory has the `keras.layers.Conv2D` signature
(`filters, kernel_size, strides=1, padding=..., use_bias=..., name=...`).
Stages not listed keep ordinary `Conv2D`.
"""

import functools

import keras
from keras import ops

CONV_KINDS = ("conv2d", "unshared", "tiled")


def _conv_factory(kind, **defaults):
    """Returns a Conv2D-signature factory for `kind`.

    Plain convolutions use `keras.layers.Conv2D` directly (so grouped convs
    can use its `groups` argument); the other kinds come from
    `layers.get_conv_layer`, imported lazily.
    """
    if kind == "conv2d":
        return functools.partial(keras.layers.Conv2D, **defaults)
    from convnet_repro.layers import get_conv_layer

    return get_conv_layer(kind, **defaults)


def parse_conv(conv, all_stages):
    """Validates a conv specification and returns `(kind, tile_size, stages)`.

    Args:
        conv: `None` or a dict with keys `kind`, `tile_size`, `stages`.
        all_stages: tuple of the family's stage names.

    Returns:
        `(kind, tile_size, frozenset_of_stages)`.

    Raises:
        ValueError: on an unknown key, kind or stage name.
    """
    conv = dict(conv or {})
    unknown = set(conv) - {"kind", "tile_size", "stages"}
    if unknown:
        raise ValueError(
            "`conv` accepts only the keys kind, tile_size, stages. "
            f"Received: conv={conv!r}"
        )
    kind = conv.get("kind") or "conv2d"
    if kind not in CONV_KINDS:
        raise ValueError(
            f"Unknown conv kind; use one of {list(CONV_KINDS)}. "
            f"Received: kind={kind!r}"
        )
    tile_size = conv.get("tile_size")
    if kind == "tiled" and tile_size is None:
        tile_size = 2
    stages = conv.get("stages")
    if stages is None:
        stages = all_stages
    if isinstance(stages, str):
        stages = [stages]
    bad = [s for s in stages if s not in all_stages]
    if bad:
        raise ValueError(
            f"Unknown conv stage(s) {bad}; this model's stages are "
            f"{list(all_stages)}. Received: stages={list(stages)!r}"
        )
    return kind, tile_size, frozenset(stages)


def stage_conv(conv, stage, all_stages):
    """Returns the conv-layer factory to use in `stage`.

    Args:
        conv: the builder's `conv` argument (dict or `None`).
        stage: the stage name, one of `all_stages`.
        all_stages: the family's stage names.

    Returns:
        A callable with the `keras.layers.Conv2D` signature.
    """
    kind, tile_size, stages = parse_conv(conv, all_stages)
    if stage not in stages or kind == "conv2d":
        return _conv_factory("conv2d")
    if kind == "tiled":
        return _conv_factory("tiled", tile_size=tile_size)
    return _conv_factory(kind)


def is_plain(conv_layer):
    """True when `conv_layer` builds `keras.layers.Conv2D` (has `groups`)."""
    return getattr(conv_layer, "func", None) is keras.layers.Conv2D


def initialized_stage_conv(conv, stage, all_stages, kernel_initializer):
    """`stage_conv` whose layers use `kernel_initializer`."""
    return functools.partial(
        stage_conv(conv, stage, all_stages),
        kernel_initializer=kernel_initializer,
    )


def separable_stem_conv(conv_layer, kernel_initializer, depth_multiplier=8):
    """Inception's separable conv1 (depth multiplier 8) where `conv_layer`
    is a plain Conv2D; an unshared/tiled `conv_layer` is kept as it is."""
    if not is_plain(conv_layer):
        return conv_layer
    return functools.partial(
        keras.layers.SeparableConv2D,
        depth_multiplier=depth_multiplier,
        depthwise_initializer=kernel_initializer,
        pointwise_initializer=kernel_initializer,
    )


def grouped_conv(
    x, conv_layer, filters, kernel_size, groups, name, native=False, **kw
):
    """Applies a grouped convolution (AlexNet's two-GPU split).

    By default the channels are split into `groups` slices, each slice gets
    its own layer (`{name}_g{i}`) with `filters/groups` outputs, and the
    results are concatenated (`{name}`): the paper's two towers literally,
    for every conv kind. With `native=True` a plain conv uses one
    `Conv2D(groups=...)` layer instead (same function and parameter count;
    fast on GPU, but TF's grouped-conv gradient on CPU is ~10x slower than
    the split, measured on the small AlexNet).
    """
    if groups == 1:
        return conv_layer(filters, kernel_size, name=name, **kw)(x)
    channels = x.shape[-1]
    if channels % groups or filters % groups:
        raise ValueError(
            "Grouped conv needs channels and filters divisible by groups. "
            f"Received: channels={channels}, filters={filters}, "
            f"groups={groups}"
        )
    if native and is_plain(conv_layer):
        return conv_layer(filters, kernel_size, groups=groups, name=name, **kw)(
            x
        )
    size = channels // groups
    outs = []
    for g in range(groups):
        part = ChannelSlice(g * size, (g + 1) * size, name=f"{name}_slice{g}")
        layer = conv_layer(
            filters // groups, kernel_size, name=f"{name}_g{g}", **kw
        )
        outs.append(layer(part(x)))
    return keras.layers.Concatenate(name=name)(outs)


@keras.saving.register_keras_serializable(package="repro")
class ChannelSlice(keras.layers.Layer):
    """Selects channels `[start, stop)` of a channels-last tensor.

    Args:
        start: int, first channel.
        stop: int, one past the last channel.
        **kwargs: base `Layer` arguments.

    Input shape:
        `(batch, ..., channels)`.

    Output shape:
        `(batch, ..., stop - start)`.
    """

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= start < stop:
            raise ValueError(
                "ChannelSlice needs 0 <= start < stop. "
                f"Received: start={start}, stop={stop}"
            )
        self.start = int(start)
        self.stop = int(stop)

    def call(self, inputs):
        return inputs[..., self.start : self.stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        config = super().get_config()
        config.update({"start": self.start, "stop": self.stop})
        return config


@keras.saving.register_keras_serializable(package="repro")
class ZeroPadChannels(keras.layers.Layer):
    """Appends `pad` all-zero channels (ResNet shortcut option A).

    He et al. 2016, Sec. 3.3: "the shortcut still performs identity
    mapping, with extra zero entries padded for increasing dimensions".

    Args:
        pad: int >= 0, number of zero channels appended.
        **kwargs: base `Layer` arguments.

    Input shape:
        `(batch, h, w, c)`.

    Output shape:
        `(batch, h, w, c + pad)`.
    """

    def __init__(self, pad, **kwargs):
        super().__init__(**kwargs)
        if pad < 0:
            raise ValueError(
                f"ZeroPadChannels needs pad >= 0. Received: pad={pad}"
            )
        self.pad = int(pad)

    def call(self, inputs):
        return ops.pad(inputs, [[0, 0], [0, 0], [0, 0], [0, self.pad]])

    def compute_output_shape(self, input_shape):
        c = input_shape[-1]
        return (*input_shape[:-1], None if c is None else c + self.pad)

    def get_config(self):
        config = super().get_config()
        config.update({"pad": self.pad})
        return config


def check_inputs(input_shape, num_classes, min_size=None):
    """Validates `input_shape` (H, W, C) and `num_classes`; returns a tuple."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(
            "input_shape must be (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be a positive int. Received: "
            f"num_classes={num_classes!r}"
        )
    if min_size is not None:
        h, w = shape[0], shape[1]
        if h is not None and w is not None and min(h, w) < min_size:
            raise ValueError(
                f"Input is too small for this model (needs >= {min_size} px; "
                "try small_input=True). "
                f"Received: input_shape={input_shape!r}"
            )
    return shape


def scaled(channels, width_multiplier, divisor=1):
    """`channels * width_multiplier`, rounded to a multiple of `divisor`."""
    if width_multiplier <= 0:
        raise ValueError(
            "width_multiplier must be > 0. "
            f"Received: width_multiplier={width_multiplier!r}"
        )
    c = int(round(channels * width_multiplier / divisor)) * divisor
    return max(divisor, c)


def lrn(name):
    """AlexNet LRN (n=5, k=2, alpha=1e-4, beta=0.75) from `layers`."""
    from convnet_repro.layers import LocalResponseNormalization

    return LocalResponseNormalization(
        depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75, name=name
    )


def max_pool_3x3_s2(x, name):
    """The 3x3/2 max pool GoogLeNet and BN-Inception put between stages.

    TF "same" padding: one -inf row/column at the end only, exactly Caffe's
    ceil-mode pooling on even sizes.
    """
    return keras.layers.MaxPooling2D(3, strides=2, padding="same", name=name)(x)


def symmetric_pad(x, kernel_size, strides, name):
    """Pads `x` for a strided conv/pool as Caffe, PyTorch and
    `keras.applications` do: `kernel_size // 2` zeros on every side.

    TF's `padding="same"` pads a strided window asymmetrically (a 7x7/2
    conv on 224 px pads 2 above/left, 3 below/right), which shifts every
    output by a pixel against weights trained with symmetric padding. With
    stride 1 (or a 1x1 kernel) "same" is already symmetric (or pads
    nothing) and `x` is returned unchanged.

    Args:
        x: channels-last tensor.
        kernel_size: int or `(kh, kw)`, odd.
        strides: int or `(sh, sw)`.
        name: name of the `ZeroPadding2D` layer.

    Returns:
        `(x, padding)`: the (padded) tensor and the `padding` argument for
        the conv/pool that follows (`"valid"` after padding, else
        `"same"`).
    """
    kh, kw = (kernel_size,) * 2 if isinstance(kernel_size, int) else kernel_size
    sh, sw = (strides,) * 2 if isinstance(strides, int) else strides
    if (sh, sw) == (1, 1) or (kh // 2, kw // 2) == (0, 0):
        return x, "same"
    pad = keras.layers.ZeroPadding2D((kh // 2, kw // 2), name=name)(x)
    return pad, "valid"


def apply_conv(
    x,
    conv_layer,
    filters,
    kernel_size,
    strides=1,
    batch_norm=False,
    activation="relu",
    name=None,
    **kwargs,
):
    """Conv (+ BN before the nonlinearity) (+ activation), "same" size.

    The conv unit of every family with BN or "same" convs (GoogLeNet,
    BN-Inception, ResNet). Stride 1 uses `padding="same"`; a strided conv
    pads symmetrically first (`symmetric_pad`, layer `{name}_pad`). With
    `batch_norm=True` the conv has no bias (BN's beta subsumes it; BN paper
    Sec. 3.2) and BN uses epsilon 1e-5 (Caffe/torchvision). Layers:
    `{name}_conv`, `{name}_bn`, `{name}_{activation}`; `activation=None`
    ends at the conv/BN (ResNet's last conv of a block, before the add).
    `**kwargs` (e.g. `kernel_initializer`) go to `conv_layer`.
    """
    x, padding = symmetric_pad(x, kernel_size, strides, f"{name}_pad")
    x = conv_layer(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=not batch_norm,
        name=f"{name}_conv",
        **kwargs,
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(epsilon=1e-5, name=f"{name}_bn")(x)
    if activation is None:
        return x
    return keras.layers.Activation(activation, name=f"{name}_{activation}")(x)
