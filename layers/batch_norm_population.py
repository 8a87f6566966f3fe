"""Population statistics for batch normalization (Ioffe & Szegedy 2015).

Algorithm 2, steps 8-11: after training, process multiple training
mini-batches B, each of size m, and average over them:

    E[x]   = E_B[mu_B]
    Var[x] = m / (m - 1) * E_B[sigma_B^2]

(the unbiased variance estimate). Keras instead keeps exponential moving
averages of biased batch variances (momentum 0.99); this module recomputes
the paper's statistics and writes them into `moving_mean` and
`moving_variance`, which Keras uses at inference.
"""

import keras
import numpy as np
from keras import ops


def _batch_norm_layers(layer, found, seen):
    """Depth-first list of every BatchNormalization inside `layer`."""
    if id(layer) in seen:
        return
    seen.add(id(layer))
    if isinstance(layer, keras.layers.BatchNormalization):
        found.append(layer)
    for child in getattr(layer, "layers", None) or []:
        _batch_norm_layers(child, found, seen)


def _inputs_of(batch):
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def recompute_batch_norm_statistics(model, dataset, num_batches=None):
    """Sets every BN layer's moving statistics to the BN paper's population
    statistics (Alg. 2, steps 8-11), computed over training mini-batches.

    The network runs in training mode (`model(x, training=True)`), so every
    BatchNormalization normalizes with its batch statistics, exactly as
    during training; frozen (`trainable=False`) BN layers are switched to
    batch statistics for the pass and switched back afterwards. Other
    training-mode layers (dropout) are active too, as in training. For each
    BN layer and batch, mu_B and the biased sigma_B^2 are taken over all
    axes except the BN axis, so m = batch * H * W for a conv feature map.
    The unbiased factor m / (m - 1) is applied per batch, which equals the
    paper's formula when every batch has the same m. BN masks are ignored.
    With the TensorFlow backend the per-batch forward pass is traced once
    (`tf.function`, retraced only for a new input shape) and returns every
    BN call's statistics; other backends run it eagerly. BN layers nested
    in sub-models are included.

    Args:
        model: a built `keras.Model` (or layer) containing BN layers.
        dataset: iterable of input batches or `(inputs, targets, ...)`
            tuples, e.g. a `tf.data.Dataset` of training batches.
        num_batches: int > 0, how many batches to use; None uses the whole
            dataset (which must then be finite).

    Returns:
        Dict `{layer.path: {"mean", "variance", "num_batches", "m"}}` with
        numpy arrays of the new population statistics.

    Raises:
        ValueError: no BN layer in the model, an infinite dataset without
            `num_batches`, or a BN layer that the forward pass never used.

    Reference:
    - Ioffe, Szegedy, "Batch Normalization: Accelerating Deep Network
      Training by Reducing Internal Covariate Shift", ICML 2015, Alg. 2.
    """
    if num_batches is not None and (
        not isinstance(num_batches, int) or num_batches <= 0
    ):
        raise ValueError(
            "`num_batches` must be a positive int or None. "
            f"Received: num_batches={num_batches!r}"
        )
    if num_batches is None and hasattr(dataset, "cardinality"):
        if int(dataset.cardinality()) == -1:  # tf.data.INFINITE_CARDINALITY
            raise ValueError(
                "The dataset is infinite; pass num_batches=<int> to say how "
                "many training batches to average over. Received: "
                "num_batches=None"
            )
    bn_layers = []
    _batch_norm_layers(model, bn_layers, set())
    if not bn_layers:
        raise ValueError(
            "The model has no keras.layers.BatchNormalization layer. "
            f"Received: model={getattr(model, 'name', model)!r}"
        )

    records = {id(layer): [] for layer in bn_layers}
    saved_trainable = {id(layer): layer.trainable for layer in bn_layers}
    # While a forward pass runs (eagerly or being traced), each BN call
    # appends its (mu_B, sigma_B^2, m) tensors here; `forward` returns them.
    calls = {id(layer): [] for layer in bn_layers}

    def make_wrapper(layer, original_call):
        def call(inputs, *args, **kwargs):
            x = ops.cast(inputs, "float32")
            rank = len(x.shape)
            axis = (
                layer.axis
                if isinstance(layer.axis, (list, tuple))
                else [layer.axis]
            )
            keep = {a % rank for a in axis}
            reduce_axes = [a for a in range(rank) if a not in keep]
            mean, variance = ops.moments(x, reduce_axes)
            shape = ops.shape(x)
            m = 1
            for a in reduce_axes:  # dynamic dims (batch) are tensors
                m = m * ops.cast(shape[a], "int64")
            calls[id(layer)].append((mean, variance, m))
            return original_call(inputs, *args, **kwargs)

        return call

    def forward(inputs):
        for found in calls.values():
            found.clear()
        model(inputs, training=True)
        return {key: list(found) for key, found in calls.items()}

    # Trace the per-batch forward pass once (TF graph, ~10x faster than
    # eager for small models); other backends run it eagerly.
    step = forward
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        step = tf.function(forward, reduce_retracing=True)

    for layer in bn_layers:
        object.__setattr__(layer, "call", make_wrapper(layer, layer.call))
        layer.trainable = True
    try:
        for i, batch in enumerate(dataset):
            if num_batches is not None and i >= num_batches:
                break
            result = step(_inputs_of(batch))
            for key, found in result.items():
                for mean, variance, m in found:
                    records[key].append(
                        (
                            ops.convert_to_numpy(mean).astype("float64"),
                            ops.convert_to_numpy(variance).astype("float64"),
                            int(ops.convert_to_numpy(m)),
                        )
                    )
    finally:
        for layer in bn_layers:
            object.__delattr__(layer, "call")
            layer.trainable = saved_trainable[id(layer)]

    stats = {}
    for layer in bn_layers:
        rec = records[id(layer)]
        if not rec:
            raise ValueError(
                f"BatchNormalization layer {layer.name!r} was not used by the "
                "forward pass, so it has no statistics; check the dataset "
                f"and model inputs. Received: layer={layer.path!r}"
            )
        if any(m < 2 for _, _, m in rec):
            raise ValueError(
                f"BN layer {layer.name!r} saw a batch with m < 2 values per "
                "channel; the unbiased variance needs m >= 2. Received: "
                f"m={min(m for _, _, m in rec)}"
            )
        mean = np.mean([r[0] for r in rec], axis=0)
        variance = np.mean([r[1] * r[2] / (r[2] - 1) for r in rec], axis=0)
        layer.moving_mean.assign(mean.reshape(layer.moving_mean.shape))
        layer.moving_variance.assign(
            variance.reshape(layer.moving_variance.shape)
        )
        stats[layer.path] = {
            "mean": mean.astype("float32"),
            "variance": variance.astype("float32"),
            "num_batches": len(rec),
            "m": rec[0][2],
        }
    return stats
