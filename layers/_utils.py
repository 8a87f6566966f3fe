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


def compiles_with_xla():
    """Whether Keras compiles this backend's steps with XLA by default.

    Mirrors `Model.compile(jit_compile="auto")`, so that layers pick their
    implementation in `build` for the compiler that will run them: JAX
    always traces through XLA; TensorFlow uses XLA only when an accelerator
    is visible (`keras.distribution.list_devices()` lists "gpu:0"/"tpu:0"
    before CPUs); PyTorch and NumPy run without it. A TF model compiled
    with an explicit `jit_compile=True` on a CPU-only machine keeps the
    graph-mode choice (correct, maybe slower); layers with an
    `implementation` argument let the user override it.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    if backend == "tensorflow":
        devices = keras.distribution.list_devices()
        return any(not d.lower().startswith("cpu") for d in devices)
    return False


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


def add_per_position_weights(layer, grid, channels):
    """Adds `layer.kernel` `(*grid, *kernel_size, channels, filters)` and
    `layer.bias` `(*grid, filters)` (None without `use_bias`).

    `grid` is the shape of the kernel positions: the output size for the
    unshared layers, the tile sizes for `TiledConv2D`. The kernel's
    initializer gets the fans of one output unit (`per_unit_initializer`).
    """
    layer.kernel = layer.add_weight(
        name="kernel",
        shape=(*grid, *layer.kernel_size, channels, layer.filters),
        initializer=per_unit_initializer(
            layer.kernel_initializer, math.prod(grid)
        ),
        regularizer=layer.kernel_regularizer,
        constraint=layer.kernel_constraint,
    )
    layer.bias = None
    if layer.use_bias:
        layer.bias = layer.add_weight(
            name="bias",
            shape=(*grid, layer.filters),
            initializer=layer.bias_initializer,
            regularizer=layer.bias_regularizer,
            constraint=layer.bias_constraint,
        )


_SERIALIZED = {
    "activation": keras.activations,
    "kernel_initializer": keras.initializers,
    "bias_initializer": keras.initializers,
    "kernel_regularizer": keras.regularizers,
    "bias_regularizer": keras.regularizers,
    "kernel_constraint": keras.constraints,
    "bias_constraint": keras.constraints,
}


def set_conv_args(layer, rank, filters, kernel_size, strides, padding, **objs):
    """Validates and stores the `keras.layers.Conv2D` core arguments.

    Shared by the locally connected layers (unshared, tiled): sets
    `filters, kernel_size, strides, padding, use_bias` and the activation,
    initializers, regularizers and constraints given in `objs` (plus
    `use_bias`) as attributes of `layer`, resolving each with its
    `keras.<module>.get`.
    """
    if not isinstance(filters, int) or filters <= 0:
        raise ValueError(
            f"`filters` must be a positive int. Received: filters={filters!r}"
        )
    layer.filters = filters
    layer.kernel_size = normalize_tuple(kernel_size, rank, "kernel_size")
    layer.strides = normalize_tuple(strides, rank, "strides")
    layer.padding = normalize_padding(padding)
    layer.use_bias = bool(objs.pop("use_bias"))
    for key, module in _SERIALIZED.items():
        setattr(layer, key, module.get(objs.pop(key)))
    if objs:
        raise TypeError(f"Unexpected arguments: {sorted(objs)}")


def conv_config(layer):
    """The `get_config` entries of the arguments `set_conv_args` stored."""
    config = {
        "filters": layer.filters,
        "kernel_size": layer.kernel_size,
        "strides": layer.strides,
        "padding": layer.padding,
        "use_bias": layer.use_bias,
    }
    for key, module in _SERIALIZED.items():
        config[key] = module.serialize(getattr(layer, key))
    return config
