"""Migration from Keras 2's `LocallyConnected1D/2D` to `UnsharedConv1D/2D`.

Keras 3 removed the locally connected layers; `UnsharedConv1D/2D` compute
the same function (DL book eq. 9.9) with the kernel laid out as
`(*out, *kernel_size, c, f)`. Keras 2 stored that kernel in one of three
layouts, chosen by its `implementation` argument:

1. `(prod(out), prod(kernel_size) * c, f)`: one row per output position,
   patch features in `(*kernel_size, c)` order ("valid" padding only).
2. `(*in, c, *out, f)`: a dense input x output tensor that a 0/1 mask
   restricts to each output's receptive field.
3. A flat vector of the nonzero entries of the `(prod(out) * f,
   prod(in) * c)` matrix, in sorted (output index, input index) order.

Keras 2's "same" padding puts `k // 2` zeros before the input on each axis;
TensorFlow's (and this package's) puts `(total padding) // 2`. The two agree
for odd kernels at stride 1; other "same" layers are refused with the fix.

Keras 3's own `Model.load_weights` reads Keras 2 `.h5` files only when every
weight keeps its shape, which the locally connected kernels do not, so
`load_locally_connected_h5` reads the file with `h5py` (a Keras dependency)
and converts those layers on the way.
"""

import json

import numpy as np

from convnet_repro.layers import _utils
from convnet_repro.layers.unshared_conv import UnsharedConv1D
from convnet_repro.layers.unshared_conv import UnsharedConv2D

_CLASSES = {"LocallyConnected1D": 1, "LocallyConnected2D": 2}


def _taps(spatial, out, kernel_size, strides, befores):
    """Input index of tap m of output o per axis, and whether it exists.

    Returns `(index, valid)`: `index[d]` broadcasts to `(*out,
    *kernel_size)` (input row read by output o through tap m on axis d,
    clipped into range) and `valid` is False where it falls in padding.
    """
    rank = len(spatial)
    index, valid = [], True
    for d, (n, o, k, s, b) in enumerate(
        zip(spatial, out, kernel_size, strides, befores)
    ):
        shape_o = [1] * (2 * rank)
        shape_o[d] = o
        shape_m = [1] * (2 * rank)
        shape_m[rank + d] = k
        i = s * np.arange(o).reshape(shape_o) + np.arange(k).reshape(shape_m)
        i = i - b
        valid = valid & (i >= 0) & (i < n)
        index.append(np.clip(i, 0, n - 1))
    return index, np.broadcast_to(valid, (*out, *kernel_size))


def convert_locally_connected_weights(config, weights, input_shape):
    """Keras 2 `LocallyConnected1D/2D` weights -> `UnsharedConv1D/2D`'s.

    Args:
        config: the Keras 2 layer's `get_config()` (needs `kernel_size`,
            `strides`, `padding`, `filters`, `implementation`,
            `data_format`, `use_bias`).
        weights: its `get_weights()`: `[kernel]` or `[kernel, bias]`.
        input_shape: the layer's input shape, `(batch, *spatial, c)`.

    Returns:
        `[kernel]` or `[kernel, bias]` for the equivalent
        `UnsharedConv1D/2D` (same filters, kernel_size, strides, padding).

    Raises:
        ValueError: channels_first data, an unknown implementation, or
            "same" padding whose offset differs from TensorFlow's.
    """
    rank = len(input_shape) - 2
    spatial, c = tuple(input_shape[1:-1]), input_shape[-1]
    kernel_size = _utils.normalize_tuple(
        config["kernel_size"], rank, "kernel_size"
    )
    strides = _utils.normalize_tuple(config["strides"], rank, "strides")
    padding = _utils.normalize_padding(config["padding"])
    f = config["filters"]
    if config.get("data_format", "channels_last") != "channels_last":
        raise ValueError(
            "Only channels_last LocallyConnected layers convert (UnsharedConv "
            "is channels_last); transpose the data and the layer first. "
            f"Received: data_format={config['data_format']!r}"
        )
    befores = []
    for n, k, s in zip(spatial, kernel_size, strides):
        before = 0
        if padding == "same":
            before = k // 2
            if before != _utils.same_padding(n, k, s)[0]:
                raise ValueError(
                    f"Keras 2's padding='same' pads {k // 2} before, "
                    f"TensorFlow's {_utils.same_padding(n, k, s)[0]} (kernel "
                    f"{k}, stride {s}, input {n}): no UnsharedConv layer "
                    "matches; pad explicitly (keras.layers.ZeroPadding) and "
                    "use padding='valid'. Received: "
                    f"kernel_size={kernel_size}, strides={strides}"
                )
        befores.append(before)
    out = tuple(
        _utils.conv_output_length(n, k, s, padding)
        for n, k, s in zip(spatial, kernel_size, strides)
    )
    kernel = np.asarray(weights[0])
    implementation = config.get("implementation", 1)
    index, valid = _taps(spatial, out, kernel_size, strides, befores)
    if implementation == 1:
        ours = kernel.reshape(*out, *kernel_size, c, f)
    elif implementation == 2:
        # (in..., c, out..., f)[i(o, m)..., :, o..., :] -> (out, k, c, f).
        outs = [
            np.arange(o).reshape([o if e == d else 1 for e in range(2 * rank)])
            for d, o in enumerate(out)
        ]
        ours = kernel[(*index, slice(None), *outs, slice(None))]
        ours = ours * valid[..., None, None]
    elif implementation == 3:
        # Nonzeros of the (out..., f) x (in..., c) matrix in sorted order:
        # per output position, per filter, the existing taps in row-major
        # order (input index grows with the tap), then the channels.
        flat_valid = valid.reshape(-1, *kernel_size)
        ours = np.zeros((len(flat_valid), *kernel_size, c, f), kernel.dtype)
        start = 0
        for pos, taps in enumerate(flat_valid):
            size = int(taps.sum()) * c * f
            block = kernel[start : start + size].reshape(f, -1, c)
            ours[pos][taps] = block.transpose(1, 2, 0)
            start += size
        if start != kernel.size:
            raise ValueError(
                f"The implementation=3 kernel has {kernel.size} entries, the "
                f"layer's connectivity {start}; check input_shape. Received: "
                f"input_shape={tuple(input_shape)}"
            )
        ours = ours.reshape(*out, *kernel_size, c, f)
    else:
        raise ValueError(
            "`implementation` must be 1, 2 or 3 (the Keras 2 layouts). "
            f"Received: implementation={implementation!r}"
        )
    converted = [np.ascontiguousarray(ours)]
    if config.get("use_bias", True):
        converted.append(np.asarray(weights[1]).reshape(*out, f))
    return converted


def _unshared_kwargs(config):
    keys = (
        "filters",
        "kernel_size",
        "strides",
        "padding",
        "activation",
        "use_bias",
        "kernel_initializer",
        "bias_initializer",
        "kernel_regularizer",
        "bias_regularizer",
        "activity_regularizer",
        "kernel_constraint",
        "bias_constraint",
        "name",
        "trainable",
    )
    return {k: config[k] for k in keys if k in config}


def from_locally_connected(layer):
    """Returns an `UnsharedConv1D/2D` equal to a built tf_keras layer.

    Args:
        layer: a built `tf_keras.layers.LocallyConnected1D/2D` (any
            `implementation`, channels_last).

    Returns:
        A built `UnsharedConv1D` or `UnsharedConv2D` with the same
        configuration (name, activation, initializers, ...) and the
        converted weights, so it gives the same outputs.

    Example:

    ```python
    old = tf_keras.layers.LocallyConnected2D(8, 3, implementation=2)
    old.build((None, 16, 16, 3))
    new = layers.from_locally_connected(old)  # UnsharedConv2D
    ```
    """
    name = type(layer).__name__
    if name not in _CLASSES:
        raise ValueError(
            "Expected a tf_keras LocallyConnected1D or LocallyConnected2D "
            f"layer. Received: layer of type {name}"
        )
    config = layer.get_config()
    # tf_keras records the shape `build` received (`Layer._maybe_build`).
    input_shape = getattr(layer, "_build_input_shape", None)
    if input_shape is None or not layer.built:
        raise ValueError(
            f"Build the {name} first (call it or `layer.build(shape)`). "
            f"Received: unbuilt layer {layer.name!r}"
        )
    input_shape = tuple(input_shape)
    weights = convert_locally_connected_weights(
        config, layer.get_weights(), input_shape
    )
    cls = UnsharedConv1D if _CLASSES[name] == 1 else UnsharedConv2D
    new = cls.from_config(_unshared_kwargs(config))
    new.build(input_shape)
    new.set_weights(weights)
    return new


def load_locally_connected_h5(model, path):
    """Loads a Keras 2 `.h5` model file's weights into a Keras 3 model.

    Layers are matched by name: rebuild the Keras 2 architecture in Keras 3
    with `UnsharedConv1D/2D` where it had `LocallyConnected1D/2D`, keeping
    the layer names. The locally connected kernels are converted from any
    Keras 2 `implementation` layout; every other layer's weights load as
    stored (Keras 2 and 3 share their order). Keras 3's
    `model.load_weights(path)` was considered: it reads these files but
    requires identical weight shapes, which the converted kernels lack.

    Args:
        model: a built Keras 3 model.
        path: a Keras 2 `.h5` file from `model.save(..., save_format="h5")`
            or `model.save_weights("....h5")` (a weights-only file has no
            layer configs, so only `implementation=1` layers convert).

    Returns:
        The list of layer names that were loaded.

    Raises:
        ValueError: a model layer with weights has no group in the file, or
            a weight count or shape does not match.
    """
    import h5py

    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        configs = {}
        if "model_config" in f.attrs:
            model_config = json.loads(f.attrs["model_config"])
            for entry in model_config["config"]["layers"]:
                configs[entry["config"]["name"]] = entry
        loaded = []
        for layer in model.layers:
            if not layer.weights:
                continue
            if layer.name not in root:
                raise ValueError(
                    f"Layer {layer.name!r} has no weights in {path}; name the "
                    "Keras 3 layers as in the Keras 2 model. Layers in the "
                    f"file: {sorted(root.keys())}"
                )
            group = root[layer.name]
            names = [
                n.decode() if isinstance(n, bytes) else n
                for n in group.attrs["weight_names"]
            ]
            arrays = [np.asarray(group[n]) for n in names]
            entry = configs.get(layer.name, {})
            if isinstance(layer, (UnsharedConv1D, UnsharedConv2D)):
                config = dict(entry.get("config", {}))
                config.setdefault("implementation", 1)
                for key in ("kernel_size", "strides", "padding", "filters"):
                    config.setdefault(key, layer.get_config()[key])
                config.setdefault("use_bias", layer.use_bias)
                axes = layer.input_spec.axes
                shape = (None, *[axes[d + 1] for d in range(layer.rank)])
                arrays = convert_locally_connected_weights(
                    config, arrays, (*shape, axes[-1])
                )
            layer.set_weights(arrays)
            loaded.append(layer.name)
    return loaded
