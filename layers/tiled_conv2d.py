"""Tiled convolution (Le et al., NIPS 2010; DL book Sec. 9.5, eq. 9.10).

    Z[i, j, k] = sum_{l, m, n} V[l, j + m - 1, k + n - 1]
                 K[i, l, m, n, j % t + 1, k % t + 1]

A set of t x t kernels is cycled through as one moves across the output:
units t steps apart share weights. t = 1 is ordinary convolution; t >= the
output size gives a locally connected layer. Biases are tiled like kernels.

Three exact implementations, chosen by `_plan` in `build` from the backend
and device (`_utils.compiles_with_xla`: JAX, or TensorFlow with an
accelerator, compile with XLA) unless `implementation=` names one:

- "space_to_depth" (TF graph mode when it costs <= 4x the FLOPs, i.e.
  t <= 3 for 3x3 kernels; under XLA when <= 2x, e.g. t = 2): the input
  is cut into s*t x s*t blocks moved to channels and one dense stride-1
  convolution with a block kernel (assembled from the tiled kernels by
  constant 0/1 selections) computes all t x t tile phases at once; a
  depth-to-space puts the outputs back. One large convolution is what
  oneDNN/XLA run fastest.
- "patches" (under XLA when space-to-depth would cost > 2x the FLOPs,
  e.g. t = 3): im2col with kh*kw strided slices, positions regrouped by
  tile phase, and one batched matmul (t_h*t_w, B*n, kh*kw*c) x
  (t_h*t_w, kh*kw*c, f): Conv2D's FLOPs. XLA fuses the slices; in TF
  graph mode the 9x patch tensor made it 6-10x Conv2D, so "auto" picks it
  only under XLA.
- "strided": output rows a, a + t, ... all use tile row a, so for each of
  the t_h * t_w tile offsets one convolution with stride s*t of the input
  shifted by s*a computes exactly those outputs (Conv2D's FLOPs, t^2 ops).

t = 1 is a plain `ops.conv`.
"""

import math

import keras
import numpy as np
from keras import ops

from convnet_repro.layers import _utils
from convnet_repro.layers.unshared_conv import LocalConvBase

IMPLEMENTATIONS = ("auto", "space_to_depth", "patches", "strided")


def _phase_selection(t, s, k):
    """0/1 array S[q, r, a, m] = [s * a + m == s * t * q + r], and q's size.

    Output row `t * u + a` (tile a) reads input row `s * (t * u + a) + m`
    = `T * (u + q) + r` with block size `T = s * t`: block `u + q`, phase r.
    """
    block = s * t
    taps = (s * (t - 1) + k - 1) // block + 1
    sel = np.zeros((taps, block, t, k), "float32")
    for q in range(taps):
        for r in range(block):
            for a in range(t):
                m = block * q + r - s * a
                if 0 <= m < k:
                    sel[q, r, a, m] = 1.0
    return sel, taps


@keras.saving.register_keras_serializable(package="repro")
class TiledConv2D(LocalConvBase):
    """2-D tiled convolution: t_h x t_w kernels cycled over output positions.

    Output `(j, k)` (0-based) uses kernel `(j % t_h, k % t_w)` and the bias of
    the same tile. The book writes `j % t + 1` with 1-based `j`, which is the
    same set of kernels with the tile index shifted by one; the layer uses the
    0-based form so that output `(0, 0)` uses kernel `(0, 0)`.

    Tile sizes larger than the output are clipped at build time to the output
    size (kernels that no output position would use are not created), so
    `tile_size >= output size` holds exactly `UnsharedConv2D`'s parameters.

    Args:
        filters, kernel_size, strides, padding, activation,
        *_initializer, *_regularizer, *_constraint, data_format,
        dilation_rate, groups: as `UnsharedConv2D` (the Conv2D core
        arguments; variance-scaling fans are those of one output unit).
        use_bias: bool; the bias has shape `(t_h, t_w, filters)`.
        tile_size: int or pair `(t_h, t_w)`, the tile size t (keyword
            only). Defaults to 2.
        implementation: `"auto"` (default), `"space_to_depth"`,
            `"patches"` or `"strided"` (same result; see the module
            docstring). "auto" picks in `build`: under XLA (JAX, or
            TensorFlow with a GPU/TPU) space-to-depth up to 2x the FLOPs,
            else patches; otherwise (TensorFlow on CPU, PyTorch)
            space-to-depth up to 4x, else strided.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Input shape:
        4D tensor `(batch, height, width, channels)`. Height and width may be
        `None` when both tile sizes are 1 (plain convolution).

    Output shape:
        4D tensor `(batch, out_height, out_width, filters)`, sizes as Conv2D.

    Example:

    >>> x = np.random.rand(2, 8, 8, 3).astype("float32")
    >>> tuple(TiledConv2D(4, 3, tile_size=2)(x).shape)
    (2, 6, 6, 4)

    Reference:
    - Le, Ngiam, Chen, Chia, Koh, Ng, "Tiled convolutional neural networks",
      NIPS 2010.
    - Goodfellow, Bengio, Courville, "Deep Learning", 2016, Sec. 9.5 eq. 9.10.
    """

    rank = 2
    IMPLEMENTATIONS = IMPLEMENTATIONS

    def __init__(self, *args, tile_size=2, **kwargs):
        super().__init__(*args, **kwargs)
        self.tile_size = _utils.normalize_tuple(tile_size, 2, "tile_size")

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
        out = self._checked_spatial_out(input_shape)
        # Kernels with tile index >= output size would never be used.
        self._tiles = tuple(
            t if n is None else min(t, n) for t, n in zip(tiles, out)
        )
        _utils.add_per_position_weights(self, self._tiles, c)
        self._plan(h, w)

    def _plan(self, h, w):
        """Picks the implementation and precomputes its constants."""
        th, tw = self._tiles
        if th == 1 and tw == 1:
            self._implementation = "conv"
            return
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        self._out = self._spatial_out((h, w))
        self._nh = math.ceil(self._out[0] / th)
        self._nw = math.ceil(self._out[1] / tw)
        self._same_pads = [
            _utils.same_padding(h, kh, sh),
            _utils.same_padding(w, kw, sw),
        ]
        sel_h, kph = _phase_selection(th, sh, kh)
        sel_w, kpw = _phase_selection(tw, sw, kw)
        # Space-to-depth multiplies the FLOPs by the block kernel's taps over
        # the real taps (16/9 for t=2, k=3; 4 for t=3) but runs one dense
        # stride-1 convolution, which measured faster than t^2 strided
        # convolutions up to a factor of 4 (benchmarks/bench_layers.py).
        self._select = (sel_h, sel_w)
        self._block_kernel = (kph, kpw)
        if self.implementation != "auto":
            self._implementation = self.implementation
            return
        factor = (kph * kpw * sh * th * sw * tw) / (kh * kw)
        # Under XLA the fused im2col + batched matmul ("patches", Conv2D's
        # FLOPs) measured 1.1-1.8x Conv2D for t=3 where space-to-depth
        # (4x FLOPs) was 2.9-4.5x; for t=2 (16/9) space-to-depth stays
        # faster (1.1-1.5x vs 1.7x). In TF graph mode the 9x patch tensor
        # is not fused away, so "strided" replaces it there (and on torch).
        if _utils.compiles_with_xla():
            self._implementation = (
                "space_to_depth" if factor <= 2.0 else "patches"
            )
        else:
            self._implementation = (
                "space_to_depth" if factor <= 4.0 else "strided"
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

        x = inputs
        if self.padding == "same":
            x = ops.pad(x, [(0, 0), *self._same_pads, (0, 0)])
        if self._implementation == "space_to_depth":
            y = self._call_space_to_depth(x)
        elif self._implementation == "patches":
            y = self._call_patches(x)
        else:
            y = self._call_strided(x)
        if self.use_bias:
            y = y + ops.tile(self.bias, (self._nh, self._nw, 1))
        oh, ow = self._out
        if self._nh * self._tiles[0] != oh or self._nw * self._tiles[1] != ow:
            y = y[:, :oh, :ow, :]
        return self.activation(y)

    def _fit(self, x, height, width):
        """Zero-pads (bottom/right) or crops x to (height, width)."""
        h, w = x.shape[1], x.shape[2]
        if height > h or width > w:
            x = ops.pad(
                x,
                [
                    (0, 0),
                    (0, max(height - h, 0)),
                    (0, max(width - w, 0)),
                    (0, 0),
                ],
            )
        if height < h or width < w:
            x = x[:, :height, :width, :]
        return x

    def _interleave(self, y):
        """(B, nh, nw, th, tw, F) tile outputs -> (B, nh*th, nw*tw, F)."""
        th, tw = self._tiles
        y = ops.reshape(y, (-1, self._nh, self._nw, th, tw, self.filters))
        y = ops.transpose(y, (0, 1, 3, 2, 4, 5))
        return ops.reshape(y, (-1, self._nh * th, self._nw * tw, self.filters))

    def _call_space_to_depth(self, x):
        # One stride-1 convolution over the input's space-to-depth blocks of
        # T = s * t pixels: block row u + q, phase r feeds output row
        # t * u + a through kernel row m = T * q + r - s * a of tile a.
        # The block kernel is assembled from `self.kernel` with constant 0/1
        # selection tensors, so gradients reach the tiled kernel directly.
        (th, tw), (sh, sw) = self._tiles, self.strides
        bh, bw = sh * th, sw * tw
        (kph, kpw), c = self._block_kernel, x.shape[-1]
        hb, wb = self._nh + kph - 1, self._nw + kpw - 1
        x = self._fit(x, hb * bh, wb * bw)
        x = ops.reshape(x, (-1, hb, bh, wb, bw, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        x = ops.reshape(x, (-1, hb, wb, bh * bw * c))
        sel_h = ops.convert_to_tensor(self._select[0], self.compute_dtype)
        sel_w = ops.convert_to_tensor(self._select[1], self.compute_dtype)
        kernel = ops.einsum(
            "qram,spbn,abmncf->qsrpcabf", sel_h, sel_w, self.kernel
        )
        kernel = ops.reshape(
            kernel, (kph, kpw, bh * bw * c, th * tw * self.filters)
        )
        return self._interleave(ops.conv(x, kernel, padding="valid"))

    def _call_patches(self, x):
        # im2col: patch (m, n) of output (i, j) is x[s*i + m, s*j + n].
        # Positions are regrouped by tile phase (a, b) = (i % t_h, j % t_w)
        # and each phase group is multiplied by its own kernel, all in one
        # batched matmul.
        (th, tw), (sh, sw) = self._tiles, self.strides
        (kh, kw), c = self.kernel_size, x.shape[-1]
        nh, nw, f = self._nh, self._nw, self.filters
        rows, cols = th * nh, tw * nw
        x = self._fit(x, sh * (rows - 1) + kh, sw * (cols - 1) + kw)
        patches = ops.concatenate(
            [
                x[
                    :,
                    m : m + sh * (rows - 1) + 1 : sh,
                    n : n + sw * (cols - 1) + 1 : sw,
                    :,
                ]
                for m in range(kh)
                for n in range(kw)
            ],
            axis=-1,
        )
        depth = kh * kw * c
        patches = ops.reshape(patches, (-1, nh, th, nw, tw, depth))
        patches = ops.transpose(patches, (2, 4, 0, 1, 3, 5))
        patches = ops.reshape(patches, (th * tw, -1, depth))
        kernel = ops.reshape(self.kernel, (th * tw, depth, f))
        y = ops.matmul(patches, kernel)
        y = ops.reshape(y, (th, tw, -1, nh, nw, f))
        y = ops.transpose(y, (2, 3, 0, 4, 1, 5))
        return ops.reshape(y, (-1, rows, cols, f))

    def _call_strided(self, x):
        # Outputs a, a + t, a + 2t, ... use tile a: one convolution with
        # stride s * t of the input shifted by s * a per tile offset.
        (th, tw), (sh, sw) = self._tiles, self.strides
        (kh, kw) = self.kernel_size
        need_h = sh * (th * self._nh - 1) + kh
        need_w = sw * (tw * self._nw - 1) + kw
        x = self._fit(x, need_h, need_w)
        parts = []
        for a in range(th):
            for b in range(tw):
                parts.append(
                    ops.conv(
                        x[:, a * sh :, b * sw :, :],
                        self.kernel[a, b],
                        strides=(sh * th, sw * tw),
                        padding="valid",
                    )
                )
        return self._interleave(ops.stack(parts, axis=3))

    def get_config(self):
        config = super().get_config()
        config["tile_size"] = self.tile_size
        return config
