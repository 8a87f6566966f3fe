"""Pooling variants from the DL book, Sec. 9.3 ("Convolution and Pooling").

- `LpPooling2D`: "the L2 norm of a rectangular neighborhood" and its
  generalisation (Boureau et al. 2010), here as a power mean
  `(mean |x|^p)^(1/p)`: p = 1 is the average of |x|, p -> inf the max.
- `WeightedAveragePooling2D`: "a weighted average based on the distance from
  the central pixel".
- `QuadrantPooling2D`: "the final pooling layer of the network may be defined
  to output four sets of summary statistics, one for each quadrant of an
  image, regardless of the image size"; with more levels this is the spatial
  pyramid pooling of He et al. 2014 (SPP-net).
"""

import math

import keras
import numpy as np
from keras import ops

from convnet_repro.layers import _utils


class _WindowPooling2D(keras.layers.Layer):
    """Base of the sliding-window poolings: `pool_size`, `strides`
    (None = pool_size) and `padding`, their output shape and config."""

    def __init__(self, pool_size, strides=None, padding="valid", **kwargs):
        super().__init__(**kwargs)
        pool_size = _utils.normalize_tuple(pool_size, 2, "pool_size")
        strides = pool_size if strides is None else strides
        self.pool_size = pool_size
        self.strides = _utils.normalize_tuple(strides, 2, "strides")
        self.padding = _utils.normalize_padding(padding)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        oh, ow = (
            _utils.conv_output_length(n, k, s, self.padding)
            for n, k, s in zip((h, w), self.pool_size, self.strides)
        )
        return (b, oh, ow, c)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pool_size": self.pool_size,
                "strides": self.strides,
                "padding": self.padding,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="repro")
class LpPooling2D(_WindowPooling2D):
    """Lp pooling as a power mean: `(avg_pool(|x|^p))^(1/p)` per window.

    p = 1 gives the average of |x| (average pooling for x >= 0), p = 2 the
    root-mean-square (the book's L2 pooling up to the constant sqrt(window
    size)), and p = inf the max of |x|. For numerical stability with any p
    the power mean is computed in float32 on the stacked window pixels
    divided by each window's max m: `m * mean((|x| / m)^p)^(1/p)`, equal in
    exact arithmetic (p = 1 and inf use the pooling ops directly). With
    `padding="same"` border windows average over the input pixels they cover
    only (as `AveragePooling2D`).

    Args:
        p: float >= 1 or `float("inf")` / `"inf"`. Defaults to 2.
        pool_size: int or pair. Defaults to 2.
        strides: int, pair or None (= pool_size).
        padding: `"valid"` or `"same"`.
        **kwargs: base `Layer` arguments.

    Input shape:
        4D tensor `(batch, height, width, channels)`.

    Output shape:
        4D tensor `(batch, pooled_height, pooled_width, channels)`.

    Example:

    >>> x = np.random.rand(2, 8, 8, 3).astype("float32")
    >>> tuple(LpPooling2D(p=2, pool_size=2)(x).shape)
    (2, 4, 4, 3)

    Reference:
    - Goodfellow, Bengio, Courville, "Deep Learning", 2016, Sec. 9.3.
    - Boureau, Ponce, LeCun, "A theoretical analysis of feature pooling in
      visual recognition", ICML 2010.
    """

    def __init__(
        self, p=2.0, pool_size=2, strides=None, padding="valid", **kwargs
    ):
        super().__init__(pool_size, strides, padding, **kwargs)
        try:
            p_value = float(p)
        except (TypeError, ValueError):
            p_value = float("nan")
        if not p_value >= 1.0:
            raise ValueError(
                "`p` must be a number >= 1 or 'inf' (p < 1 is not a norm and "
                f"its gradient is infinite at 0). Received: p={p!r}"
            )
        self.p = p_value

    def build(self, input_shape):
        dynamic = input_shape[1] is None or input_shape[2] is None
        if dynamic and self.padding == "same" and self.p not in (1.0, np.inf):
            raise ValueError(
                "LpPooling2D with 1 < p < inf and padding='same' needs static "
                "height and width; use padding='valid' or a fixed Input "
                f"shape. Received: input_shape={tuple(input_shape)}"
            )

    def call(self, inputs):
        a = ops.abs(inputs)
        if math.isinf(self.p):
            return ops.max_pool(a, self.pool_size, self.strides, self.padding)
        if self.p == 1.0:
            return ops.average_pool(
                a, self.pool_size, self.strides, self.padding
            )
        # Exact power mean per window, stable for any p: stack the k*k
        # window pixels on a new axis, divide by the window max m, and
        # average (|x| / m)^p over the pixels inside the image. float32
        # inside (float16 |x|^p overflows for moderate p).
        a = ops.cast(a, "float32")
        views, valid = self._window_pixels(a)
        m = ops.max(views, axis=3, keepdims=True)
        safe_m = ops.where(m > 0, m, ops.ones_like(m))
        total = ops.sum(ops.power(views / safe_m, self.p) * valid, axis=3)
        mean = total / ops.sum(valid, axis=3)
        # All-zero windows: output 0 with a finite (zero) gradient.
        positive = mean > 0
        safe = ops.where(positive, mean, ops.ones_like(mean))
        out = ops.where(
            positive,
            safe_m[:, :, :, 0] * ops.power(safe, 1.0 / self.p),
            ops.zeros_like(mean),
        )
        return ops.cast(out, self.compute_dtype)

    def _window_pixels(self, a):
        """(B, oh, ow, kh*kw, C) window pixels and their 0/1 validity."""
        h, w = a.shape[1], a.shape[2]
        (kh, kw), (sh, sw) = self.pool_size, self.strides
        if h is None or w is None:
            h, w = ops.shape(a)[1], ops.shape(a)[2]
        if self.padding == "same":
            pads = [
                _utils.same_padding(h, kh, sh),
                _utils.same_padding(w, kw, sw),
            ]
            oh, ow = -(-h // sh), -(-w // sw)
        else:
            pads = [(0, 0), (0, 0)]
            oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
        ones = ops.ones_like(a[:1, :, :, :1])
        a = ops.pad(a, [(0, 0), *pads, (0, 0)])
        ones = ops.pad(ones, [(0, 0), *pads, (0, 0)])
        views, valid = [], []
        for i in range(kh):
            for j in range(kw):
                rows = slice(i, i + (oh - 1) * sh + 1, sh)
                cols = slice(j, j + (ow - 1) * sw + 1, sw)
                views.append(a[:, rows, cols, :])
                valid.append(ones[:, rows, cols, :])
        return ops.stack(views, axis=3), ops.stack(valid, axis=3)

    def get_config(self):
        config = super().get_config()
        config["p"] = self.p
        return config


@keras.saving.register_keras_serializable(package="repro")
class WeightedAveragePooling2D(_WindowPooling2D):
    """Average pooling weighted by the distance from the window centre.

    Each window position `(u, v)` at distance `d` from the window centre
    gets weight `w(d)` (normalized to sum to 1):
    `"gaussian"`: `exp(-d^2 / (2 sigma^2))`;
    `"linear"`: `max(0, 1 - d / (r + 1))` with `r` the window half-diagonal.
    The weights are a fixed (non-trainable) depthwise kernel. With
    `padding="same"` border windows renormalize the weights over the pixels
    inside the image, so a constant image stays constant.

    Args:
        pool_size: int or pair. Defaults to 3.
        strides: int, pair or None (= pool_size).
        padding: `"valid"` or `"same"`.
        weighting: `"gaussian"` (default) or `"linear"`.
        sigma: float > 0, Gaussian width in pixels. Defaults to 1.
        **kwargs: base `Layer` arguments.

    Input shape:
        4D tensor `(batch, height, width, channels)`, static channels.

    Output shape:
        4D tensor `(batch, pooled_height, pooled_width, channels)`.

    Example:

    >>> x = np.random.rand(2, 9, 9, 3).astype("float32")
    >>> tuple(WeightedAveragePooling2D(3)(x).shape)
    (2, 3, 3, 3)

    Reference:
    - Goodfellow, Bengio, Courville, "Deep Learning", 2016, Sec. 9.3.
    """

    def __init__(
        self,
        pool_size=3,
        strides=None,
        padding="valid",
        weighting="gaussian",
        sigma=1.0,
        **kwargs,
    ):
        super().__init__(pool_size, strides, padding, **kwargs)
        if weighting not in ("gaussian", "linear"):
            raise ValueError(
                "`weighting` must be 'gaussian' or 'linear'. "
                f"Received: weighting={weighting!r}"
            )
        if not sigma > 0:
            raise ValueError(f"`sigma` must be > 0. Received: sigma={sigma!r}")
        self.weighting = weighting
        self.sigma = float(sigma)

    def window_weights(self):
        """The `(kh, kw)` numpy weights, summing to 1."""
        kh, kw = self.pool_size
        dy = np.arange(kh) - (kh - 1) / 2.0
        dx = np.arange(kw) - (kw - 1) / 2.0
        d = np.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
        if self.weighting == "gaussian":
            w = np.exp(-(d**2) / (2.0 * self.sigma**2))
        else:
            w = np.maximum(0.0, 1.0 - d / (d.max() + 1.0))
        return w / w.sum()

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(
                "WeightedAveragePooling2D needs a static channel dimension. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self._channels = input_shape[-1]

    def call(self, inputs):
        w = self.window_weights()
        kernel = np.tile(w[:, :, None, None], (1, 1, self._channels, 1))
        kernel = ops.convert_to_tensor(kernel, dtype=self.compute_dtype)
        out = ops.depthwise_conv(
            inputs, kernel, strides=self.strides, padding=self.padding
        )
        if self.padding == "same":
            ones = ops.ones_like(inputs[:1, :, :, :1])
            norm = ops.depthwise_conv(
                ones,
                ops.convert_to_tensor(w[:, :, None, None], self.compute_dtype),
                strides=self.strides,
                padding="same",
            )
            out = out / norm
        return out

    def get_config(self):
        config = super().get_config()
        config.update({"weighting": self.weighting, "sigma": self.sigma})
        return config


@keras.saving.register_keras_serializable(package="repro")
class QuadrantPooling2D(keras.layers.Layer):
    """Fixed-size summary of a feature map of any size (pyramid pooling).

    For each level `L` in `levels` the map is cut into an `L x L` grid and
    each cell is max- or average-pooled; level 2 gives the book's four
    quadrant summaries, level 1 global pooling. Cell `i` of `L` along an
    axis of size `n` covers `[floor(i n / L), ceil((i + 1) n / L))`
    (adaptive pooling; never empty, cells overlap by one pixel when `L` does
    not divide `n`). Works on variable-size inputs `(None, None, C)`.

    Args:
        levels: tuple of positive ints. Defaults to `(1, 2)`.
        mode: `"max"` (default) or `"avg"`.
        **kwargs: base `Layer` arguments.

    Input shape:
        4D tensor `(batch, height, width, channels)`; height and width may
        be `None`, channels must be static.

    Output shape:
        2D tensor `(batch, channels * sum(L * L for L in levels))`, ordered
        level, grid row, grid column, channel.

    Example:

    >>> x = np.random.rand(2, 7, 5, 3).astype("float32")
    >>> tuple(QuadrantPooling2D(levels=(1, 2))(x).shape)
    (2, 15)

    Reference:
    - Goodfellow, Bengio, Courville, "Deep Learning", 2016, Sec. 9.3.
    - He, Zhang, Ren, Sun, "Spatial Pyramid Pooling in Deep Convolutional
      Networks for Visual Recognition", ECCV 2014.
    """

    def __init__(self, levels=(1, 2), mode="max", **kwargs):
        super().__init__(**kwargs)
        try:
            levels = tuple(int(v) for v in levels)
        except (TypeError, ValueError):
            levels = ()
        if not levels or any(v <= 0 for v in levels):
            raise ValueError(
                "`levels` must be a non-empty tuple of positive ints, e.g. "
                f"(1, 2). Received: levels={levels!r}"
            )
        if mode not in ("max", "avg"):
            raise ValueError(
                f"`mode` must be 'max' or 'avg'. Received: mode={mode!r}"
            )
        self.levels = levels
        self.mode = mode
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(
                "QuadrantPooling2D needs a static channel dimension. "
                f"Received: input_shape={tuple(input_shape)}"
            )

    @staticmethod
    def _cell_masks(n, cells, dtype):
        """(cells, n) 0/1 mask: row i marks the pixels of cell i."""
        pos = ops.arange(n)[None, :]
        i = ops.arange(cells)[:, None]
        start = (i * n) // cells
        stop = -((-(i + 1) * n) // cells)  # ceil((i + 1) * n / cells)
        return ops.cast((pos >= start) & (pos < stop), dtype)

    def _pool_axis(self, x, mask, axis):
        # x: (..., n, ...) at `axis`; mask (L, n). Returns L at `axis`.
        shape = [1] * (len(x.shape) + 1)
        shape[axis] = mask.shape[0]
        shape[axis + 1] = -1
        m = ops.reshape(mask, shape)
        xe = ops.expand_dims(x, axis)
        if self.mode == "max":
            low = ops.cast(-np.inf, x.dtype)
            return ops.max(ops.where(m > 0, xe, low), axis=axis + 1)
        return ops.sum(xe * m, axis=axis + 1) / ops.sum(m, axis=axis + 1)

    def call(self, inputs):
        h, w = ops.shape(inputs)[1], ops.shape(inputs)[2]
        channels = inputs.shape[-1]
        outputs = []
        for level in self.levels:
            rows = self._cell_masks(h, level, inputs.dtype)
            cols = self._cell_masks(w, level, inputs.dtype)
            y = self._pool_axis(inputs, rows, 1)  # (B, L, W, C)
            y = self._pool_axis(y, cols, 2)  # (B, L, L, C)
            outputs.append(ops.reshape(y, (-1, level * level * channels)))
        if len(outputs) == 1:
            return outputs[0]
        return ops.concatenate(outputs, axis=-1)

    def compute_output_shape(self, input_shape):
        size = input_shape[-1] * sum(v * v for v in self.levels)
        return (input_shape[0], size)

    def get_config(self):
        config = super().get_config()
        config.update({"levels": self.levels, "mode": self.mode})
        return config
