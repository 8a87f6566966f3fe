"""Custom Keras layers for convnet-repro; importing the package registers them.

See docs/ARCHITECTURE.md (layers/) for the contracts.
"""

import functools

import keras

from convnet_repro.layers.batch_norm_population import (
    recompute_batch_norm_statistics,
)
from convnet_repro.layers.filter_bank import FILTERS
from convnet_repro.layers.filter_bank import FilterBankInitializer
from convnet_repro.layers.filter_bank import get_filter
from convnet_repro.layers.functional import convolve
from convnet_repro.layers.functional import cross_correlate
from convnet_repro.layers.functional import smooth_positions
from convnet_repro.layers.keras2 import convert_locally_connected_weights
from convnet_repro.layers.keras2 import from_locally_connected
from convnet_repro.layers.keras2 import load_locally_connected_h5
from convnet_repro.layers.local_response_normalization import (
    LocalResponseNormalization,
)
from convnet_repro.layers.pooling import LpPooling2D
from convnet_repro.layers.pooling import QuadrantPooling2D
from convnet_repro.layers.pooling import WeightedAveragePooling2D
from convnet_repro.layers.tiled_conv2d import TiledConv2D
from convnet_repro.layers.unshared_conv import UnsharedConv1D
from convnet_repro.layers.unshared_conv import UnsharedConv2D

CONV_LAYERS = {
    "conv2d": keras.layers.Conv2D,
    "unshared": UnsharedConv2D,
    "tiled": TiledConv2D,
}


def get_conv_layer(kind="conv2d", **defaults):
    """Returns a constructor with the `keras.layers.Conv2D` signature.

    Models build every convolution through this factory so that the kind of
    weight sharing (ordinary, unshared, tiled) is a config choice.

    Args:
        kind: one of `CONV_LAYERS`: `"conv2d"`, `"unshared"`, `"tiled"`.
        **defaults: keyword arguments bound into every call, e.g.
            `tile_size=2` for `"tiled"`.

    Returns:
        `f(filters, kernel_size, strides=1, padding=..., name=..., **kw)`
        returning a Keras layer.

    Example:

    >>> conv = get_conv_layer("tiled", tile_size=2)
    >>> type(conv(8, 3, padding="same", name="c1")).__name__
    'TiledConv2D'
    """
    if kind not in CONV_LAYERS:
        raise ValueError(
            f"Unknown conv kind. Expected one of {sorted(CONV_LAYERS)}. "
            f"Received: kind={kind!r}"
        )
    if kind != "tiled" and "tile_size" in defaults:
        raise ValueError(
            f"`tile_size` only applies to kind='tiled'. Received: kind={kind!r}"
            f", tile_size={defaults['tile_size']!r}"
        )
    return functools.partial(CONV_LAYERS[kind], **defaults)


__all__ = [
    "CONV_LAYERS",
    "FILTERS",
    "FilterBankInitializer",
    "LocalResponseNormalization",
    "LpPooling2D",
    "QuadrantPooling2D",
    "TiledConv2D",
    "UnsharedConv1D",
    "UnsharedConv2D",
    "WeightedAveragePooling2D",
    "convert_locally_connected_weights",
    "convolve",
    "cross_correlate",
    "from_locally_connected",
    "get_conv_layer",
    "get_filter",
    "load_locally_connected_h5",
    "recompute_batch_norm_statistics",
    "smooth_positions",
]
