"""Study: parameter sharing, from dense to unshared, tiled and convolution.

The same small network (layer(8, 5x5) -> ReLU -> max-pool 2 ->
layer(16, 3x3) -> ReLU -> global max pooling -> Dense) is built with five
kinds of "layer", all mapping to the same output shape:

- `dense`: a fully connected layer to the whole `(oh, ow, filters)` map (a
  multilayer perceptron with the same units),
- `unshared`: locally connected (DL book eq. 9.9), one kernel per position,
- `tiled2`, `tiled3`: tiled convolution (eq. 9.10), t = 2 and 3 kernels per
  axis, cycled,
- `conv`: ordinary convolution (eq. 9.7), one kernel everywhere.

Two tasks on real MNIST:

- `mnist`: digit class on a small training subset (where the convolutional
  prior helps: same test accuracy with orders of magnitude fewer weights).
- `quadrant`: a 10x10 digit placed in one of the four quadrants of a 36x36
  canvas; the label is the quadrant. The digits keep an 8-pixel margin, so
  every window that sees the digit lies inside the image in every quadrant;
  convolution + global max pooling is then *exactly* invariant to the
  placement and cannot beat chance (25%): the "infinitely strong prior" of
  Sec. 9.4 causing underfitting. Unshared and dense layers learn it at once.
  The `position sensitivity` column is the largest change of the logits when
  the same digit moves between quadrants (0 means the model cannot see where).

Run: `make study-parameter_sharing`.

Reference:
- Goodfellow, Bengio, Courville, "Deep Learning", 2016, Sec. 9.2 (parameter
  sharing), 9.4 (convolution and pooling as an infinitely strong prior),
  9.5 (eqs. 9.9, 9.10, Fig. 9.16).
- Le et al., "Tiled convolutional neural networks", NIPS 2010.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from convnet_repro import layers  # noqa: E402
from convnet_repro.experiments.studies import common  # noqa: E402

NAME = "parameter_sharing"
KINDS = ("dense", "unshared", "tiled2", "tiled3", "conv")
COLUMNS = [
    "task",
    "layer",
    "parameters",
    "storage (bytes)",
    "train acc",
    "test acc",
    "ms / step",
    "position sensitivity",
]


def _layer(kind, filters, kernel_size, name):
    """Returns `f(x) -> y` for one of `KINDS` (valid padding, stride 1)."""
    if kind == "dense":

        def apply(x):
            h, w = x.shape[1] - kernel_size + 1, x.shape[2] - kernel_size + 1
            y = keras.layers.Flatten(name=f"{name}_flatten")(x)
            y = keras.layers.Dense(h * w * filters, name=f"{name}_dense")(y)
            return keras.layers.Reshape((h, w, filters), name=name)(y)

        return apply
    if kind == "unshared":
        return layers.get_conv_layer("unshared")(
            filters, kernel_size, name=name
        )
    if kind in ("tiled2", "tiled3"):
        conv = layers.get_conv_layer("tiled", tile_size=int(kind[-1]))
        return conv(filters, kernel_size, name=name)
    if kind == "conv":
        return keras.layers.Conv2D(filters, kernel_size, name=name)
    raise ValueError(
        f"Unknown layer kind. Expected one of {KINDS}. Received: kind={kind!r}"
    )


def build_net(kind, input_shape, num_classes, filters=(8, 16), kernels=(5, 3)):
    """Builds the study's network with every "conv" slot of type `kind`.

    Args:
        kind: one of `KINDS`.
        input_shape: `(H, W, C)`, static.
        num_classes: logits size.
        filters: output channels of the two layers.
        kernels: kernel sizes of the two layers.

    Returns:
        A `keras.Model` that outputs logits.
    """
    inputs = keras.Input(shape=tuple(input_shape))
    x = _layer(kind, filters[0], kernels[0], "layer1")(inputs)
    x = keras.layers.ReLU(name="layer1_relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = _layer(kind, filters[1], kernels[1], "layer2")(x)
    x = keras.layers.ReLU(name="layer2_relu")(x)
    x = keras.layers.GlobalMaxPooling2D(name="global_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"net_{kind}")


def quadrant_canvas(digits, quadrants, canvas=36, offsets=(8, 18)):
    """Places each small digit in quadrant `q` (0 TL, 1 TR, 2 BL, 3 BR).

    Args:
        digits: float `(N, s, s)`.
        quadrants: int `(N,)` in 0..3.
        canvas: canvas side.
        offsets: the two top-left offsets per axis.

    Returns:
        float32 `(N, canvas, canvas, 1)`.
    """
    n, s, _ = digits.shape
    if offsets[1] + s > canvas:
        raise ValueError(
            "The digit does not fit the canvas; enlarge it. "
            f"Received: canvas={canvas}, offsets={tuple(offsets)}, size={s}"
        )
    out = np.zeros((n, canvas, canvas, 1), np.float32)
    for i, (d, q) in enumerate(zip(digits, quadrants)):
        r, c = offsets[q // 2], offsets[q % 2]
        out[i, r : r + s, c : c + s, 0] = d
    return out


def make_task(task, n_train, n_test, seed, digit_size=10, canvas=36):
    """Returns `((x_train, y_train), (x_test, y_test), num_classes, digits)`.

    `digits` holds the small test digits (quadrant task) for measuring the
    position sensitivity; None for the `mnist` task.
    """
    xtr, ytr = common.load_mnist("train", n_train)
    xte, yte = common.load_mnist("test", n_test)
    if task == "mnist":
        prep = lambda x: (x[..., None] / 255.0).astype(np.float32)  # noqa: E731
        return (prep(xtr), ytr), (prep(xte), yte), 10, None
    if task == "quadrant":
        rng = np.random.default_rng(seed)
        dtr = common.shrink_digits(xtr, digit_size)
        dte = common.shrink_digits(xte, digit_size)
        qtr = rng.integers(0, 4, len(dtr)).astype(np.int32)
        qte = rng.integers(0, 4, len(dte)).astype(np.int32)
        train = (quadrant_canvas(dtr, qtr, canvas), qtr)
        test = (quadrant_canvas(dte, qte, canvas), qte)
        return train, test, 4, dte
    raise ValueError(
        f"Unknown task. Expected 'mnist' or 'quadrant'. Received: task={task!r}"
    )


def position_sensitivity(model, digits, canvas=36):
    """Largest logit change when the same digits move between quadrants."""
    logits = [
        model.predict(
            quadrant_canvas(digits, np.full(len(digits), q), canvas), verbose=0
        )
        for q in range(4)
    ]
    return float(max(np.abs(lg - logits[0]).max() for lg in logits[1:]))


class _StepTimer(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times = getattr(self, "times", [])
        self.times.append(time.perf_counter() - self._t0)


def train_one(kind, data, num_classes, cfg, seed, steps):
    """Trains one network for `steps`; returns (model, table row)."""
    (xtr, ytr), (xte, yte) = data
    keras.utils.set_random_seed(seed)
    model = build_net(
        kind, xtr.shape[1:], num_classes, tuple(cfg.filters), tuple(cfg.kernels)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(seed)
    total = steps * cfg.batch_size
    epochs = -(-total // len(xtr))
    idx = np.concatenate([rng.permutation(len(xtr)) for _ in range(epochs)])
    idx = idx[:total]
    timer = _StepTimer()
    model.fit(
        xtr[idx],
        ytr[idx],
        batch_size=cfg.batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    train_acc = model.evaluate(xtr, ytr, batch_size=256, verbose=0)[1]
    test_acc = model.evaluate(xte, yte, batch_size=256, verbose=0)[1]
    params = model.count_params()
    times = np.asarray(timer.times[min(5, len(timer.times) - 1) :])
    return model, {
        "layer": kind,
        "parameters": params,
        "storage (bytes)": 4 * params,
        "train acc": float(train_acc),
        "test acc": float(test_acc),
        "ms / step": 1000 * float(np.median(times)),
    }


def run(cfg):
    """Runs every (task, layer kind); returns `{"rows", "metrics", "paths"}`."""
    out_dir = common.output_dir(cfg)
    rows = []
    for task in cfg.tasks:
        train, test, num_classes, digits = make_task(
            task, cfg.n_train, cfg.n_test, cfg.seed
        )
        for kind in cfg.kinds:
            model, row = train_one(
                kind, (train, test), num_classes, cfg, cfg.seed, cfg.steps[task]
            )
            if digits is not None:
                row["position sensitivity"] = position_sensitivity(
                    model, digits[: cfg.n_sensitivity]
                )
            else:
                row["position sensitivity"] = "-"
            rows.append({"task": task, **row})
            print(rows[-1], flush=True)
            keras.backend.clear_session()
    metrics = {
        f"{r['task']}_{r['layer']}_{k}": r[key]
        for r in rows
        for k, key in (
            ("test_acc", "test acc"),
            ("train_acc", "train acc"),
            ("params", "parameters"),
            ("ms_per_step", "ms / step"),
        )
    }
    figures = [_figure(rows, out_dir)]
    header = (
        f"Network: layer({cfg.filters[0]}, {cfg.kernels[0]}x{cfg.kernels[0]})"
        f" -> ReLU -> maxpool 2 -> layer({cfg.filters[1]}, "
        f"{cfg.kernels[1]}x{cfg.kernels[1]}) -> ReLU -> global max pool "
        f"-> Dense. Adam({cfg.learning_rate}), batch {cfg.batch_size}, "
        f"steps {dict(cfg.steps)}, seed {cfg.seed}; {cfg.n_train} training and "
        f"{cfg.n_test} test images of real MNIST. `mnist`: 28x28 digits, "
        "10 classes. `quadrant`: a 10x10 digit in one of 4 quadrants of a "
        "36x36 canvas, label = quadrant (chance 25%). ms / step is the "
        "median wall time of a training step on a shared 2-core CPU (other "
        "jobs running: compare orders of magnitude only).\n"
    )
    tables = [("Results", rows, COLUMNS)]
    paths = common.write_outputs(out_dir, NAME, tables, figures, header)
    return {"rows": rows, "metrics": metrics, "paths": paths}


def _figure(rows, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2))
    axes = np.atleast_1d(axes)
    for ax, task in zip(axes, tasks):
        sub = [r for r in rows if r["task"] == task]
        for r in sub:
            ax.scatter(r["parameters"], r["test acc"], s=60)
            ax.annotate(
                r["layer"],
                (r["parameters"], r["test acc"]),
                textcoords="offset points",
                xytext=(5, 5),
            )
        if task == "quadrant":
            ax.axhline(0.25, color="grey", ls=":", label="chance")
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        ax.margins(x=0.2)
        ax.set_xlabel("parameters (log)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"task: {task}")
        ax.grid(alpha=0.3)
    return common.save_figure(fig, out_dir / f"{NAME}.png")


main = common.hydra_main(NAME, run, objective="mnist_conv_test_acc")


if __name__ == "__main__":
    main()
