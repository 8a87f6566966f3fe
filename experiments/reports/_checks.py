"""Argument checks shared by the report statistics modules."""

import numpy as np


def check_level(level):
    if not 0.0 < level < 1.0:
        raise ValueError(
            f"`level` must be in (0, 1), e.g. 0.95. Received: level={level!r}"
        )


def one_d(values, name, expected):
    """`values` as a float array; a ValueError unless non-empty and 1-D."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"`{name}` must {expected}. Received: shape={arr.shape}"
        )
    return arr


def finite_1d(values, name):
    arr = one_d(values, name, "be a non-empty 1-D sequence of numbers")
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"`{name}` has NaN or infinite values; drop them first. "
            f"Received: {arr.tolist()[:10]}"
        )
    return arr


def per_image(values, name):
    return one_d(values, name, "hold one value per test image (non-empty 1-D)")
