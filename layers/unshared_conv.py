"""Locally connected ("unshared") convolutions.

Deep Learning book (Goodfellow, Bengio, Courville 2016), Sec. 9.5, eq. 9.9:

    Z[i, j, k] = sum_{l, m, n} V[l, j + m - 1, k + n - 1] w[i, j, k, l, m, n]

Every output position (j, k) has its own kernel and its own bias (bias per
output unit, Sec. 9.5). This is the layer `tf.keras.layers.LocallyConnected2D`
offered up to Keras 2 (DeepFace, Taigman et al. 2014).

Implementation: patches `(B, oh*ow, kh*kw*c)` (from `extract_patches`, or
the kh*kw shifted strided views concatenated) and one batched matrix product
`einsum("bpk,pkf->bpf")` (a position-major batched matmul) applies the
per-position kernels. See
`benchmarks/bench_layers.py` for the comparison with tf_keras.

`LocalConvBase` holds the Conv2D-style arguments, output sizes and config
that `TiledConv2D` (eq. 9.10) shares with these layers.
"""

import math

import keras
from keras import ops

from convnet_repro.layers import _utils


class LocalConvBase(keras.layers.Layer):
    """Base of `UnsharedConv1D/2D` and `TiledConv2D`: the Conv2D arguments.

    Takes the core arguments of `keras.layers.Conv2D` (`groups`,
    `dilation_rate` and `data_format` only at their defaults, so that
    `get_conv_layer` can forward Conv2D keyword arguments) plus
    `implementation`, one of the subclass's `IMPLEMENTATIONS`. It holds the
    output-size arithmetic, `compute_output_shape` and `get_config`;
    subclasses set `rank`, add their weights in `build`
    (`_utils.add_per_position_weights`) and compute in `call`.
    """

    rank = None
    IMPLEMENTATIONS = ("auto",)

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
        data_format=None,
        dilation_rate=1,
        groups=1,
        implementation="auto",
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        name = type(self).__name__
        if implementation not in self.IMPLEMENTATIONS:
            raise ValueError(
                f"{name}: `implementation` must be one of "
                f"{self.IMPLEMENTATIONS}. Received: implementation="
                f"{implementation!r}"
            )
        self.implementation = implementation
        _utils.check_conv2d_extras(
            name, groups, data_format, dilation_rate, self.rank
        )
        _utils.set_conv_args(
            self,
            self.rank,
            filters,
            kernel_size,
            strides,
            padding,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
        )
        self.input_spec = keras.layers.InputSpec(ndim=self.rank + 2)

    def _spatial_out(self, spatial):
        return tuple(
            _utils.conv_output_length(n, k, s, self.padding)
            for n, k, s in zip(spatial, self.kernel_size, self.strides)
        )

    def _checked_spatial_out(self, input_shape):
        """`_spatial_out` of the input; raises if the kernel does not fit."""
        out = self._spatial_out(tuple(input_shape[1:-1]))
        if any(n is not None and n <= 0 for n in out):
            raise ValueError(
                f"{type(self).__name__}: kernel_size={self.kernel_size} is "
                "larger than the (padded) input; use padding='same' or a "
                f"smaller kernel. Received: input_shape={tuple(input_shape)}"
            )
        return out

    def compute_output_shape(self, input_shape):
        spatial = self._spatial_out(tuple(input_shape[1:-1]))
        return (input_shape[0], *spatial, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {**_utils.conv_config(self), "implementation": self.implementation}
        )
        return config


class _UnsharedConv(LocalConvBase):
    """Rank-generic base of `UnsharedConv1D` and `UnsharedConv2D`."""

    IMPLEMENTATIONS = ("auto", "patches", "slices")

    def build(self, input_shape):
        spatial = tuple(input_shape[1:-1])
        channels = input_shape[-1]
        if any(n is None for n in spatial) or channels is None:
            raise ValueError(
                f"{type(self).__name__} layer {self.name!r} needs static "
                "spatial dimensions and channels (one kernel per output "
                "position); give the model a fixed input_shape (or use "
                "model.conv.kind=conv2d). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        out = self._checked_spatial_out(input_shape)
        self.input_spec = keras.layers.InputSpec(
            ndim=self.rank + 2, axes={i + 1: n for i, n in enumerate(spatial)}
        )
        self.input_spec.axes[-1] = channels
        self._out = out
        self._implementation = self._resolve_implementation()
        # 2-D: (oh, ow, kh, kw, c, f) = eq. 9.9's 6-D tensor w, axes reordered.
        _utils.add_per_position_weights(self, out, channels)

    def _patches(self, inputs):
        """(B, *out, prod(kernel_size) * c) in (k1, k2, ..., c) order."""
        x = inputs
        if self.padding == "same":
            pads = [(0, 0)]
            for n, k, s in zip(
                inputs.shape[1:-1], self.kernel_size, self.strides
            ):
                pads.append(_utils.same_padding(n, k, s))
            pads.append((0, 0))
            x = ops.pad(x, pads)
        if self._implementation == "patches" and self.rank == 2:
            return ops.image.extract_patches(
                x, self.kernel_size, strides=self.strides, padding="valid"
            )
        views = []
        for offset in _product(self.kernel_size):
            index = [slice(None)]
            for o, n, s in zip(offset, self._out, self.strides):
                index.append(slice(o, o + (n - 1) * s + 1, s))
            views.append(x[tuple(index)])
        if len(views) == 1:
            return views[0]
        return ops.concatenate(views, axis=-1)

    def _resolve_implementation(self):
        if self.implementation != "auto":
            return self.implementation
        # Follow Keras's jit_compile="auto" (_utils.compiles_with_xla).
        # extract_patches is fastest in TF graph mode but slow under XLA,
        # where the strided slices win (benchmarks/bench_layers.py); JAX
        # and PyTorch get the slices too.
        if keras.backend.backend() == "tensorflow" and (
            not _utils.compiles_with_xla()
        ):
            return "patches"
        return "slices"

    def call(self, inputs):
        patches = self._patches(inputs)
        num_pos = math.prod(self._out)
        patches = ops.reshape(patches, (-1, num_pos, patches.shape[-1]))
        kernel = ops.reshape(self.kernel, (num_pos, -1, self.filters))
        # einsum("bpk,pkf->bpf") as an explicit position-major batched
        # matmul: TF's einsum picks a slower path without XLA (see bench).
        outputs = ops.matmul(ops.transpose(patches, (1, 0, 2)), kernel)
        outputs = ops.transpose(outputs, (1, 0, 2))
        outputs = ops.reshape(outputs, (-1, *self._out, self.filters))
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs)


def _product(sizes):
    """All offsets (o1, o2, ...) with 0 <= oi < sizes[i], row-major."""
    offsets = [()]
    for n in sizes:
        offsets = [o + (i,) for o in offsets for i in range(n)]
    return offsets


@keras.saving.register_keras_serializable(package="repro")
class UnsharedConv2D(_UnsharedConv):
    """2-D locally connected layer: a convolution without weight sharing.

    Each output position `(j, k)` has its own `kh x kw x c x filters` kernel
    and its own bias vector (DL book eq. 9.9). Accepts the core arguments of
    `keras.layers.Conv2D`; `groups`, `dilation_rate` and `data_format` are
    accepted only at their defaults so that `get_conv_layer` can forward
    Conv2D keyword arguments.

    Args:
        filters: int, number of output channels.
        kernel_size: int or pair `(kh, kw)`.
        strides: int or pair. Defaults to 1.
        padding: `"valid"` or `"same"` (TF conventions).
        activation: activation name or callable. Defaults to linear.
        use_bias: bool; the bias has shape `(oh, ow, filters)`.
        kernel_initializer: initializer of the kernel. For variance-scaling
            initializers (Glorot, He, LeCun) the fans are those of one output
            unit (`kh * kw * c` in, `kh * kw * filters` out), as for Conv2D.
        bias_initializer: initializer of the bias.
        kernel_regularizer, bias_regularizer, activity_regularizer: optional
            regularizers.
        kernel_constraint, bias_constraint: optional constraints.
        data_format: `None` or `"channels_last"` only.
        dilation_rate: 1 only.
        groups: 1 only.
        implementation: how patches are gathered (same result):
            `"patches"` (`ops.image.extract_patches`, fastest in TF graph
            mode), `"slices"` (kh*kw strided slices, fastest under XLA) or
            `"auto"` (default: "patches" on CPU-only TensorFlow, where Keras
            does not use XLA by default, else "slices"; JAX and PyTorch
            use "slices"). Resolved once in `build`.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Input shape:
        4D tensor `(batch, height, width, channels)` with static height,
        width and channels.

    Output shape:
        4D tensor `(batch, out_height, out_width, filters)`, sizes as Conv2D.

    Example:

    >>> x = np.random.rand(2, 8, 8, 3).astype("float32")
    >>> tuple(UnsharedConv2D(4, 3)(x).shape)
    (2, 6, 6, 4)

    Reference:
    - Goodfellow, Bengio, Courville, "Deep Learning", 2016, Sec. 9.5 eq. 9.9.
    - Taigman et al., "DeepFace", CVPR 2014 (locally connected layers).
    """

    rank = 2


@keras.saving.register_keras_serializable(package="repro")
class UnsharedConv1D(_UnsharedConv):
    """1-D locally connected layer: a Conv1D without weight sharing.

    Each output step has its own `k x c x filters` kernel and its own bias
    (DL book eq. 9.9 restricted to one spatial axis).

    Args:
        filters: int, number of output channels.
        kernel_size: int.
        strides: int. Defaults to 1.
        padding: `"valid"` or `"same"`.
        activation, use_bias, *_initializer, *_regularizer, *_constraint,
        data_format, dilation_rate, groups, implementation: as
        `UnsharedConv2D` (1-D always uses strided slices).
        **kwargs: base `Layer` arguments.

    Input shape:
        3D tensor `(batch, steps, channels)` with static steps and channels.

    Output shape:
        3D tensor `(batch, out_steps, filters)`.

    Example:

    >>> x = np.random.rand(2, 10, 3).astype("float32")
    >>> tuple(UnsharedConv1D(4, 3, strides=2)(x).shape)
    (2, 4, 4)

    Reference:
    - Goodfellow, Bengio, Courville, "Deep Learning", 2016, Sec. 9.5 eq. 9.9.
    """

    rank = 1
