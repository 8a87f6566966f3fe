"""Multiply-adds of a built model, counted from its layers' shapes.

Convention (that of the papers' "FLOPs" and of most model zoos): one
multiply-add (MAC) per kernel weight per output position, for every
`Conv2D`, `SeparableConv2D`, `DepthwiseConv2D`, `Dense`, `UnsharedConv2D`,
`UnsharedConv1D` and `TiledConv2D`; biases, BN, activations, LRN and
pooling are not counted (each costs a few ops per activation, under ~2%
of a conv net's total). A training step costs about 3x the forward pass
(forward, gradient w.r.t. activations, gradient w.r.t. weights), and one
MAC is 2 FLOPs: `training_flops = 6 * forward_macs`.

Keras has no FLOP counter (`model.count_params` counts weights), and TF's
profiler counts the traced graph's ops (BN and pooling included, custom
layers' einsums by their own conventions), which would not give the
papers' figures; counting from the layer shapes does (tests compare with
the published numbers).
"""

import math

import keras

# Layer class name -> MACs per output position and output channel.
_SAME_AS_CONV = ("Conv2D", "Conv1D", "UnsharedConv2D", "UnsharedConv1D",
                 "TiledConv2D")  # fmt: skip


def _shape(tensor, layer, what):
    shape = tuple(tensor.shape[1:])
    if None in shape:
        raise ValueError(
            f"Layer {layer.name!r} has an unknown {what} size {shape}; build "
            "the model with a static input_shape to count its multiply-adds."
        )
    return shape


def layer_macs(layer):
    """Multiply-adds of one layer on one example (0 for uncounted layers)."""
    kind = type(layer).__name__
    counted = _SAME_AS_CONV + ("SeparableConv2D", "DepthwiseConv2D", "Dense")
    if kind not in counted or not layer.weights:
        return 0
    c_in = _shape(layer.input, layer, "input")[-1]
    out = _shape(layer.output, layer, "output")
    positions, c_out = math.prod(out[:-1]), out[-1]
    if kind == "Dense":
        return positions * c_in * c_out
    window = math.prod(layer.kernel_size)
    if kind == "DepthwiseConv2D":
        return positions * c_out * window
    if kind == "SeparableConv2D":
        mid = c_in * layer.depth_multiplier
        return positions * (mid * window + mid * c_out)
    groups = getattr(layer, "groups", 1)
    return positions * c_out * window * (c_in // groups)


def count_macs(model):
    """Forward multiply-adds per example of `model` (nested models too).

    Args:
        model: a built functional `keras.Model` with static input sizes.

    Returns:
        int, multiply-adds for one example (training-mode graph: auxiliary
        heads included when the model has them).
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
        else:
            total += layer_macs(layer)
    return total


def training_flops(model):
    """FLOPs of one training image: `6 * count_macs(model)` (see module)."""
    return 6 * count_macs(model)
