"""Private helpers shared by the layers in this package."""

import math

import keras


def normalize_tuple(value, n, name):
    """Returns `value` as a tuple of `n` positive ints or raises ValueError."""
    if isinstance(value, int):
        value = (value,) * n
    try:
        value = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be an int or a tuple of {n} ints. "
            f"Received: {name}={value!r}"
        ) from None
    if len(value) != n or any(v <= 0 for v in value):
        raise ValueError(
            f"`{name}` must be a positive int or a tuple of {n} positive "
            f"ints. Received: {name}={value!r}"
        )
    return value


def normalize_padding(padding):
    """Returns "valid" or "same" or raises ValueError."""
    value = str(padding).lower()
    if value not in ("valid", "same"):
        raise ValueError(
            "`padding` must be 'valid' or 'same'. "
            f"Received: padding={padding!r}"
        )
    return value


def check_conv2d_extras(cls_name, groups, data_format, dilation_rate, rank):
    """Rejects Conv2D keyword arguments the custom convolutions lack."""
    if groups != 1:
        raise ValueError(
            f"{cls_name} supports groups=1 only; split the channels and "
            f"concatenate in the model instead. Received: groups={groups!r}"
        )
    if data_format not in (None, "channels_last"):
        raise ValueError(
            f"{cls_name} supports data_format='channels_last' only. "
            f"Received: data_format={data_format!r}"
        )
    if normalize_tuple(dilation_rate, rank, "dilation_rate") != (1,) * rank:
        raise ValueError(
            f"{cls_name} supports dilation_rate=1 only. "
            f"Received: dilation_rate={dilation_rate!r}"
        )


def conv_output_length(length, kernel, stride, padding):
    """Output length of a convolution along one axis (TF conventions)."""
    if length is None:
        return None
    if padding == "same":
        return math.ceil(length / stride)
    return max((length - kernel) // stride + 1, 0)


def same_padding(length, kernel, stride):
    """(before, after) padding that TF's "same" adds along one axis."""
    out = math.ceil(length / stride)
    total = max((out - 1) * stride + kernel - length, 0)
    return total // 2, total - total // 2


def per_unit_initializer(initializer, num_positions):
    """Makes variance-scaling fans those of one output unit.

    Keras computes the fans of a kernel of shape `(*positions, kh, kw, c, f)`
    as `c * prod(positions) * kh * kw` and `f * prod(positions) * kh * kw`.
    Each output unit of an unshared/tiled layer only sees `kh * kw * c`
    inputs, as in Conv2D, so the scale is multiplied by the number of kernel
    positions to cancel that factor. Other initializers are returned as-is.
    """
    if num_positions == 1 or not isinstance(
        initializer, keras.initializers.VarianceScaling
    ):
        return initializer
    return keras.initializers.VarianceScaling(
        scale=initializer.scale * num_positions,
        mode=initializer.mode,
        distribution=initializer.distribution,
        seed=initializer.seed,
    )
