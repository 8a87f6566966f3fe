"""Tiled convolution (Le et al., NIPS 2010; DL book Sec. 9.5, eq. 9.10).

    Z[i, j, k] = sum_{l, m, n} V[l, j + m - 1, k + n - 1]
                 K[i, l, m, n, j % t + 1, k % t + 1]

A set of t x t kernels is cycled through as one moves across the output:
units t steps apart share weights. t = 1 is ordinary convolution; t >= the
output size gives a locally connected layer. Biases are tiled like kernels.

Implementation (exact, and about the cost of one convolution): output rows
`a, a + t, a + 2t, ...` all use kernel row `a`, so for each of the t_h * t_w
tile offsets `(a, b)` one strided convolution (stride `s * t`) of the input
shifted by `(a * s, b * s)` computes exactly the outputs that use kernel
`(a, b)`. The t^2 partial outputs are interleaved back with a reshape (a
depth-to-space). Each output is computed once, so the FLOPs equal Conv2D's.
"""

import math

import keras
from keras import ops

from layers import _utils


@keras.saving.register_keras_serializable(package="repro")
class TiledConv2D(keras.layers.Layer):
    """2-D tiled convolution: t_h x t_w kernels cycled over output positions.

    Output `(j, k)` (0-based) uses kernel `(j % t_h, k % t_w)` and the bias of
    the same tile. The book writes `j % t + 1` with 1-based `j`, which is the
    same set of kernels with the tile index shifted by one; the layer uses the
    0-based form so that output `(0, 0)` uses kernel `(0, 0)`.

    Tile sizes larger than the output are clipped at build time to the output
    size (kernels that no output position would use are not created), so
    `tile_size >= output size` holds exactly `UnsharedConv2D`'s parameters.

    Args:
        filters: int, number of output channels.
        kernel_size: int or pair `(kh, kw)`.
        strides: int or pair. Defaults to 1.
        padding: `"valid"` or `"same"` (TF conventions).
        activation: activation name or callable. Defaults to linear.
        use_bias: bool; the bias has shape `(t_h, t_w, filters)`.
        kernel_initializer: initializer; variance-scaling fans are those of
            one output unit, as for Conv2D.
        bias_initializer: initializer of the bias.
        kernel_regularizer, bias_regularizer, activity_regularizer: optional
            regularizers.
        kernel_constraint, bias_constraint: optional constraints.
        tile_size: int or pair `(t_h, t_w)`, the tile size t. Defaults to 2.
        data_format: `None` or `"channels_last"` only.
        dilation_rate: 1 only.
        groups: 1 only.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Input shape:
        4D tensor `(batch, height, width, channels)`. Height and width may be
        `None` when both tile sizes are 1 (plain convolution).

    Output shape:
        4D tensor `(batch, out_height, out_width, filters)`, sizes as Conv2D.

    Example:

    >>> x = np.random.rand(2, 8, 8, 3).astype("float32")
    >>> TiledConv2D(4, 3, tile_size=2)(x).shape
    TensorShape([2, 6, 6, 4])

    Reference:
    - Le, Ngiam, Chen, Chia, Koh, Ng, "Tiled convolutional neural networks",
      NIPS 2010.
    - Goodfellow, Bengio, Courville, "Deep Learning", 2016, Sec. 9.5 eq. 9.10.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        tile_size=2,
        data_format=None,
        dilation_rate=1,
        groups=1,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        _utils.check_conv2d_extras(
            "TiledConv2D", groups, data_format, dilation_rate, 2
        )
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(
                "`filters` must be a positive int. "
                f"Received: filters={filters!r}"
            )
        self.filters = filters
        self.kernel_size = _utils.normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = _utils.normalize_tuple(strides, 2, "strides")
        self.padding = _utils.normalize_padding(padding)
        self.tile_size = _utils.normalize_tuple(tile_size, 2, "tile_size")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        _, h, w, c = input_shape
        if c is None:
            raise ValueError(
                "TiledConv2D needs a static channel dimension. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        tiles = list(self.tile_size)
        for axis, n in enumerate((h, w)):
            if n is None and tiles[axis] > 1:
                raise ValueError(
                    "TiledConv2D with tile_size > 1 needs static height and "
                    "width (the tiling is anchored at output (0, 0)); give "
                    f"the Input a fixed shape. Received: input_shape="
                    f"{tuple(input_shape)}"
                )
        out = self._spatial_out((h, w))
        if any(n is not None and n <= 0 for n in out):
            raise ValueError(
                f"TiledConv2D: kernel_size={self.kernel_size} is larger than "
                "the (padded) input; use padding='same' or a smaller kernel. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        # Kernels with tile index >= output size would never be used.
        self._tiles = tuple(
            t if n is None else min(t, n) for t, n in zip(tiles, out)
        )
        th, tw = self._tiles
        self.kernel = self.add_weight(
            name="kernel",
            shape=(th, tw, *self.kernel_size, c, self.filters),
            initializer=_utils.per_unit_initializer(
                self.kernel_initializer, th * tw
            ),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(th, tw, self.filters),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None

    def _spatial_out(self, spatial):
        return tuple(
            _utils.conv_output_length(n, k, s, self.padding)
            for n, k, s in zip(spatial, self.kernel_size, self.strides)
        )

    def call(self, inputs):
        th, tw = self._tiles
        if th == 1 and tw == 1:
            outputs = ops.conv(
                inputs,
                self.kernel[0, 0],
                strides=self.strides,
                padding=self.padding,
            )
            if self.use_bias:
                outputs = outputs + self.bias[0, 0]
            return self.activation(outputs)

        h, w = inputs.shape[1], inputs.shape[2]
        oh, ow = self._spatial_out((h, w))
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        nh, nw = math.ceil(oh / th), math.ceil(ow / tw)
        # Pad to the "same" borders, then pad/crop the bottom/right so that
        # every tile offset yields exactly (nh, nw) outputs.
        pads = [(0, 0), (0, 0)]
        if self.padding == "same":
            pads = [
                _utils.same_padding(h, kh, sh),
                _utils.same_padding(w, kw, sw),
            ]
        need_h = sh * (th * nh - 1) + kh
        need_w = sw * (tw * nw - 1) + kw
        extra_h = need_h - (h + sum(pads[0]))
        extra_w = need_w - (w + sum(pads[1]))
        pads = [
            (pads[0][0], pads[0][1] + max(extra_h, 0)),
            (pads[1][0], pads[1][1] + max(extra_w, 0)),
        ]
        x = inputs
        if any(p for pair in pads for p in pair):
            x = ops.pad(x, [(0, 0), *pads, (0, 0)])
        x = x[:, :need_h, :need_w, :]

        parts = []
        for a in range(th):
            for b in range(tw):
                xs = x[:, a * sh : need_h, b * sw : need_w, :]
                y = ops.conv(
                    xs,
                    self.kernel[a, b],
                    strides=(sh * th, sw * tw),
                    padding="valid",
                )
                if self.use_bias:
                    y = y + self.bias[a, b]
                parts.append(y)
        # (B, nh, nw, th*tw, F) -> (B, nh, th, nw, tw, F) -> (B, H', W', F).
        y = ops.stack(parts, axis=3)
        y = ops.reshape(y, (-1, nh, nw, th, tw, self.filters))
        y = ops.transpose(y, (0, 1, 3, 2, 4, 5))
        y = ops.reshape(y, (-1, nh * th, nw * tw, self.filters))
        if nh * th != oh or nw * tw != ow:
            y = y[:, :oh, :ow, :]
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        oh, ow = self._spatial_out(tuple(input_shape[1:3]))
        return (input_shape[0], oh, ow, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "tile_size": self.tile_size,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(
                    self.bias_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(
                    self.kernel_constraint
                ),
                "bias_constraint": keras.constraints.serialize(
                    self.bias_constraint
                ),
            }
        )
        return config
