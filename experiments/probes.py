"""Probe callbacks: watch a hidden unit's input distribution during training.

`PercentileProbe` reproduces the measurement behind BN paper Fig. 1(b, c):
"the evolution of input distributions to a typical sigmoid, over the course
of training, shown as {15, 50, 85}th percentiles". Every `every_steps`
optimizer steps it runs a fixed set of probe images (by default the first
test images) through the model in inference mode, reads the *input* of one
layer (e.g. `hidden3_act`, the last hidden sigmoid) and logs the percentiles
of the chosen units to MLflow at that global step, through the training
run's resume-safe metric buffer
(`experiments.engine.metric_log.log_metrics`): after
a resume, the probe steps the run already holds are not logged again.

Cost: one forward pass over `num_images` images per probe, so it can run at
the same cadence as the test-accuracy evaluation.

Reference:
- Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training
  by Reducing Internal Covariate Shift", ICML 2015, arXiv:1502.03167,
  Sec. 4.1 and Figure 1(b, c).
"""

import keras
import numpy as np


def metric_key(prefix, unit, percentile):
    """MLflow key of one probed percentile, e.g. `sigmoid_in_u0_p15`.

    Args:
        prefix: str, the probe's metric prefix.
        unit: int, index of the probed unit.
        percentile: number in [0, 100].

    Returns:
        The metric name.

    Example:

    >>> metric_key("sigmoid_in", 0, 15)
    'sigmoid_in_u0_p15'
    """
    return f"{prefix}_u{int(unit)}_p{percentile:g}"


def _probe_images(images, data, num_images):
    """The first `num_images` probe images as a float32 NumPy array.

    `images` wins over `data`. `data` is a data config (anything with a
    `_target_`, instantiated here), or what such a config returns: a
    `(train_ds, val_ds)` pair, of which the finite `val_ds` is read, or a
    single dataset of `(images, labels)` batches.
    """
    if images is None and data is None:
        raise ValueError(
            "PercentileProbe needs probe images: pass `images=` (an array) "
            "or `data=` (a data config or its datasets). Received: "
            "images=None, data=None"
        )
    if images is None:
        if hasattr(data, "get") and data.get("_target_"):
            import hydra

            data = hydra.utils.instantiate(data)
        if isinstance(data, (tuple, list)):
            data = data[1]
        chunks, count = [], 0
        for batch in data:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = keras.ops.convert_to_numpy(x)
            chunks.append(x)
            count += len(x)
            if num_images is not None and count >= num_images:
                break
        images = np.concatenate(chunks)
    images = np.asarray(images, dtype="float32")
    if num_images is not None:
        images = images[: int(num_images)]
    images = np.ascontiguousarray(images)
    if len(images) < 2:
        raise ValueError(
            "PercentileProbe needs at least 2 probe images. Received: "
            f"{len(images)} images"
        )
    return images


def _compiled_forward(model):
    """Inference-mode forward pass, traced once (2x cheaper than eager)."""

    def forward(x):
        return model(x, training=False)

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(forward, reduce_retracing=True)
    return forward


class PercentileProbe(keras.callbacks.Callback):
    """Logs percentiles of a layer's input units on fixed probe images.

    Every `every_steps` optimizer steps (and once before training) the model
    runs in inference mode on the probe images; for each unit in `units` the
    `percentiles` of that unit's input over the images are logged (through
    `experiments.engine.metric_log.log_metrics`: the engine's buffer, else the
    active MLflow run) as `metric_key(prefix, unit, q)` at
    `step = optimizer.iterations`, and kept in `self.history`.

    With `steps_per_execution=k`, Keras calls the callback every `k` steps,
    so the cadence is `every_steps` rounded up to a multiple of `k`.

    Args:
        layer: name of the layer whose *input* is probed. Defaults to
            `"hidden3_act"` (the last hidden sigmoid of
            `models.mlp.build_bn_mnist_mlp`, as in the paper's Fig. 1).
        units: int or list of ints, units (last-axis indices) to probe.
            Defaults to `0` (the paper plots "one typical activation").
        percentiles: numbers in [0, 100]. Defaults to `(15, 50, 85)`.
        every_steps: int > 0, probe cadence in optimizer steps.
        num_images: int or `None` (all), how many probe images to use.
        images: optional array of probe images (already preprocessed).
        data: optional data config with `_target_` (e.g. `${data}`) or its
            `(train_ds, val_ds)` output; the first `num_images` images of
            `val_ds` are the probe set. Used when `images` is `None`.
        prefix: metric-name prefix. Defaults to `"sigmoid_in"`.
        log_to_mlflow: bool, log when an MLflow run is active.

    Example:

    >>> probe = PercentileProbe(every_steps=500, images=x_test[:1000])
    >>> model.fit(ds, steps_per_epoch=500, epochs=10,
    ...           callbacks=[probe])  # doctest: +SKIP
    >>> probe.history[0]  # doctest: +SKIP
    (0, {'sigmoid_in_u0_p15': -1.2, 'sigmoid_in_u0_p50': 0.1, ...})

    Reference:
    - Ioffe & Szegedy 2015, Sec. 4.1, Figure 1(b, c).
    """

    def __init__(
        self,
        layer="hidden3_act",
        units=0,
        percentiles=(15, 50, 85),
        every_steps=500,
        num_images=2000,
        images=None,
        data=None,
        prefix="sigmoid_in",
        log_to_mlflow=True,
    ):
        super().__init__()
        units = [units] if isinstance(units, int) else list(units)
        if not units or any(int(u) < 0 for u in units):
            raise ValueError(
                "`units` must be a non-negative int or a non-empty list of "
                f"them. Received: units={units!r}"
            )
        percentiles = [float(q) for q in percentiles]
        if not percentiles or any(not 0 <= q <= 100 for q in percentiles):
            raise ValueError(
                "`percentiles` must be numbers in [0, 100]. Received: "
                f"percentiles={percentiles!r}"
            )
        if int(every_steps) < 1:
            raise ValueError(
                "`every_steps` must be >= 1. Received: "
                f"every_steps={every_steps}"
            )
        self.layer = layer
        self.units = [int(u) for u in units]
        self.percentiles = percentiles
        self.every_steps = int(every_steps)
        self.num_images = num_images
        self.prefix = prefix
        self.log_to_mlflow = log_to_mlflow
        self._images = images
        self._data = data
        self._probe_model = None
        self._forward = None
        self._inputs = None
        self._next_step = 0
        self.history = []

    def on_train_begin(self, logs=None):
        if self._probe_model is None:
            names = [lyr.name for lyr in self.model.layers]
            if self.layer not in names:
                raise ValueError(
                    f"The model has no layer {self.layer!r} to probe; pass "
                    f"one of {names}. Received: layer={self.layer!r}"
                )
            target = self.model.get_layer(self.layer).input
            width = target.shape[-1]
            if width is not None and max(self.units) >= width:
                raise ValueError(
                    f"Layer {self.layer!r} has {width} input units. "
                    f"Received: units={self.units}"
                )
            inputs = self.model.inputs
            if len(inputs) == 1:
                inputs = inputs[0]  # a bare tensor then matches the model
            self._probe_model = keras.Model(inputs, target)
            self._forward = _compiled_forward(self._probe_model)
            self._images = _probe_images(
                self._images, self._data, self.num_images
            )
            self._data = None  # drop the datasets once read
            self._inputs = keras.ops.convert_to_tensor(self._images)
        step = self._global_step()
        if step >= self._next_step:
            self._probe(step)

    def on_train_batch_end(self, batch, logs=None):
        step = self._global_step()
        if step >= self._next_step:
            self._probe(step)

    def _global_step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def compute(self):
        """Percentiles on the probe images now: `{metric_key: value}`."""
        z = keras.ops.convert_to_numpy(self._forward(self._inputs))
        z = z.reshape(len(z), -1)
        values = {}
        for unit in self.units:
            qs = np.percentile(z[:, unit], self.percentiles)
            for q, v in zip(self.percentiles, qs):
                values[metric_key(self.prefix, unit, q)] = float(v)
        return values

    def _probe(self, step):
        values = self.compute()
        self.history.append((step, values))
        # Next probe at the next multiple of `every_steps` after `step`.
        self._next_step = (step // self.every_steps + 1) * self.every_steps
        if self.log_to_mlflow:
            from convnet_repro.experiments.engine import metric_log

            # The engine's resume-safe path: a resumed run drops the probe
            # steps it already holds (no duplicates).
            metric_log.log_metrics(values, step=step)
