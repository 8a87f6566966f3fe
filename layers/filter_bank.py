"""Classic hand-designed image filters, by name and as a Keras initializer.

The filters that convolutional networks learn in their first layer resemble
these (DL book Sec. 9.2 edge detection, Fig. 9.6; Sec. 9.10 Gabor-like
first-layer features). Kernels are written in cross-correlation form, the way
`keras.layers.Conv2D` applies them (DL book eq. 9.6):

| name        | 3x3 kernel                       | effect                    |
|-------------|----------------------------------|---------------------------|
| average     | ones / 9                         | box blur                  |
| gaussian    | [1,2,1] x [1,2,1] / 16           | Gaussian-like blur        |
| prewitt_h   | rows [1,1,1],[0,0,0],[-1,-1,-1]  | horizontal edges (d/dy)   |
| prewitt_v   | prewitt_h transposed             | vertical edges (d/dx)     |
| sobel_h     | rows [1,2,1],[0,0,0],[-1,-2,-1]  | horizontal edges          |
| sobel_v     | sobel_h transposed               | vertical edges            |
| high_pass   | -1 everywhere, 8 at the centre   | edges, sums to 0          |
| sharpen     | [0,-1,0],[-1,5,-1],[0,-1,0]      | sharpen, sums to 1        |
| sharpen_low | 2 * identity - gaussian          | mild unsharp mask         |

Edge filters are the unnormalized integer forms (Gonzalez & Woods;
scikit-image divides Prewitt by 3 and Sobel by 4). Larger odd sizes: average
and gaussian (binomial coefficients), Prewitt/Sobel (a linear ramp times a
box/binomial profile), high_pass (size^2 - 1 at the centre) and sharpen_low;
`sharpen` exists in 3x3 only.
"""

import math

import keras
import numpy as np


def _binomial(size):
    row = np.array([math.comb(size - 1, i) for i in range(size)], "float64")
    return row


def _ramp(size):
    return np.arange(size // 2, -(size // 2) - 1, -1, dtype="float64")


def _delta(size):
    k = np.zeros((size, size))
    k[size // 2, size // 2] = 1.0
    return k


def _gaussian(size):
    b = _binomial(size)
    k = np.outer(b, b)
    return k / k.sum()


def _sharpen(size):
    if size != 3:
        raise ValueError(
            "The 'sharpen' filter exists in 3x3 only; use 'sharpen_low' for "
            f"other sizes. Received: size={size}"
        )
    return np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], "float64")


FILTERS = {
    "average": lambda s: np.full((s, s), 1.0 / (s * s)),
    "gaussian": _gaussian,
    "prewitt_h": lambda s: np.outer(_ramp(s), np.ones(s)),
    "prewitt_v": lambda s: np.outer(_ramp(s), np.ones(s)).T,
    "sobel_h": lambda s: np.outer(_ramp(s), _binomial(s)),
    "sobel_v": lambda s: np.outer(_ramp(s), _binomial(s)).T,
    "high_pass": lambda s: s * s * _delta(s) - np.ones((s, s)),
    "sharpen": _sharpen,
    "sharpen_low": lambda s: 2.0 * _delta(s) - _gaussian(s),
}
"""Name -> function `size -> (size, size) float64 array`."""


def get_filter(name, size=3):
    """Returns the named filter as a `(size, size)` float32 numpy array.

    Args:
        name: a key of `FILTERS`.
        size: odd int >= 3, the kernel height and width.

    Returns:
        `np.ndarray` of shape `(size, size)`, dtype float32.

    Example:

    >>> get_filter("sobel_v")
    array([[ 1.,  0., -1.],
           [ 2.,  0., -2.],
           [ 1.,  0., -1.]], dtype=float32)
    """
    if name not in FILTERS:
        raise ValueError(
            f"Unknown filter. Expected one of {sorted(FILTERS)}. "
            f"Received: name={name!r}"
        )
    if not isinstance(size, int) or size < 3 or size % 2 == 0:
        raise ValueError(
            "Filter `size` must be an odd int >= 3 (the filters have a "
            f"centre pixel). Received: size={size!r}"
        )
    return FILTERS[name](size).astype("float32")


@keras.saving.register_keras_serializable(package="repro")
class FilterBankInitializer(keras.initializers.Initializer):
    """Initializes a conv kernel with classic filters from `FILTERS`.

    Output channel `j` (Conv2D) or depth multiplier `j` (DepthwiseConv2D)
    gets filter `names[j % len(names)]`.

    - `depthwise=False` (for `Conv2D`, kernel `(k, k, c_in, c_out)`): the
      filter is spread over the input channels divided by `c_in`, so output
      `j` is the filter applied to the channel mean (grey image for RGB).
    - `depthwise=True` (for `DepthwiseConv2D`, kernel `(k, k, c_in, mult)`):
      every input channel is filtered on its own with weight 1.

    Args:
        name: a filter name or a list of names.
        depthwise: bool, see above.

    Example:

    >>> conv = keras.layers.Conv2D(
    ...     2, 3, kernel_initializer=FilterBankInitializer(["sobel_h",
    ...     "sobel_v"]), use_bias=False)
    >>> tuple(conv(np.zeros((1, 5, 5, 3))).shape)
    (1, 3, 3, 2)
    """

    def __init__(self, name="sobel_h", depthwise=False):
        names = [name] if isinstance(name, str) else list(name)
        if not names:
            raise ValueError(
                "FilterBankInitializer needs at least one filter name. "
                f"Received: name={name!r}"
            )
        for n in names:
            if n not in FILTERS:
                raise ValueError(
                    f"Unknown filter. Expected one of {sorted(FILTERS)}. "
                    f"Received: name={n!r}"
                )
        self.name = name if isinstance(name, str) else names
        self.depthwise = bool(depthwise)

    def __call__(self, shape, dtype=None):
        if len(shape) != 4 or shape[0] != shape[1]:
            raise ValueError(
                "FilterBankInitializer needs a square 2-D conv kernel "
                "(k, k, c_in, c_out). Received: shape="
                f"{tuple(shape)}"
            )
        k, _, c_in, c_out = shape
        names = [self.name] if isinstance(self.name, str) else self.name
        kernel = np.zeros(shape, "float32")
        scale = 1.0 if self.depthwise else 1.0 / c_in
        for j in range(c_out):
            kernel[:, :, :, j] = (
                get_filter(names[j % len(names)], k)[:, :, None] * scale
            )
        return keras.ops.convert_to_tensor(
            kernel, dtype=dtype or keras.config.floatx()
        )

    def get_config(self):
        return {"name": self.name, "depthwise": self.depthwise}
