"""Study: pooling makes a classifier accept inputs of varying size.

DL book Sec. 9.3: "pooling is essential for handling inputs of varying
size ... the final pooling layer outputs four sets of summary statistics,
one for each quadrant of an image, regardless of the image size". A fully
convolutional trunk (3x3 convs, `same` padding, two 2x2 max pools) ends in
`layers.QuadrantPooling2D(levels=(1, 2))` (a global max plus the four
quadrant maxima per channel), so the `Dense` classifier always sees the
same vector length, for any height and width.

Real MNIST digits are resized (bilinear) to a side of S pixels. Two models
with the same architecture are trained:

- `mixed`: each batch has one size drawn from `train_sizes` (20..40 px);
- `fixed28`: every batch is 28 px (the native size);

and both are evaluated on every size of `eval_sizes`, including sizes that
neither saw. Deviation: the book gives no experiment; sizes, network and
steps are ours (stated in the config).

Run: `make study-variable_size_pooling`.

Reference:
- Goodfellow, Bengio, Courville, "Deep Learning", 2016, Sec. 9.3.
- He, Zhang, Ren, Sun, "Spatial Pyramid Pooling in Deep Convolutional
  Networks for Visual Recognition", ECCV 2014.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from convnet_repro import layers  # noqa: E402
from convnet_repro.experiments.studies import common  # noqa: E402

NAME = "variable_size_pooling"


def build_net(num_classes=10, filters=(16, 32, 64), levels=(1, 2)):
    """Fully convolutional trunk + `QuadrantPooling2D` + `Dense` logits.

    Args:
        num_classes: logits size.
        filters: channels of the three 3x3 conv layers.
        levels: pyramid levels of `QuadrantPooling2D`.

    Returns:
        A `keras.Model` accepting `(None, None, None, 1)` inputs.
    """
    inputs = keras.Input(shape=(None, None, 1))
    x = inputs
    for i, f in enumerate(filters):
        x = keras.layers.Conv2D(
            f, 3, padding="same", activation="relu", name=f"conv{i + 1}"
        )(x)
        if i < len(filters) - 1:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.QuadrantPooling2D(levels=tuple(levels), name="quadrant_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="quadrant_pool_net")


def resize(images, size):
    """uint8 `(N, 28, 28)` -> float32 `(N, size, size, 1)` in [0, 1]."""
    x = tf.image.resize(
        images[..., None].astype(np.float32) / 255.0, (size, size)
    )
    return x.numpy()


def train_model(x, y, sizes, cfg, seed):
    """Trains with one size per batch drawn from `sizes`; returns the model."""
    keras.utils.set_random_seed(seed)
    model = build_net(filters=tuple(cfg.filters), levels=tuple(cfg.levels))
    optimizer = keras.optimizers.Adam(cfg.learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(reduce_retracing=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    rng = np.random.default_rng(seed)
    resized = {s: resize(x, s) for s in sizes}
    for _ in range(cfg.steps):
        s = int(rng.choice(sizes))
        idx = rng.integers(0, len(x), cfg.batch_size)
        step(tf.constant(resized[s][idx]), tf.constant(y[idx]))
    return model


def evaluate(model, x, y, sizes):
    """Accuracy per size: `{size: accuracy}`."""
    out = {}
    for s in sizes:
        logits = model.predict(resize(x, s), batch_size=256, verbose=0)
        out[s] = float(np.mean(np.argmax(logits, -1) == y))
    return out


def run(cfg):
    """Runs the study; returns `{"rows", "metrics", "paths"}`."""
    out_dir = common.output_dir(cfg)
    xtr, ytr = common.load_mnist("train", cfg.n_train)
    xte, yte = common.load_mnist("test", cfg.n_test)
    models = {
        "mixed": list(cfg.train_sizes),
        "fixed28": [28],
    }
    accs = {}
    for name, sizes in models.items():
        model = train_model(xtr, ytr, sizes, cfg, cfg.seed)
        accs[name] = evaluate(model, xte, yte, list(cfg.eval_sizes))
        keras.backend.clear_session()
    rows = [
        {
            "size (px)": s,
            "seen in mixed training": "yes" if s in cfg.train_sizes else "no",
            "acc mixed-size training": accs["mixed"][s],
            "acc 28-px training": accs["fixed28"][s],
        }
        for s in cfg.eval_sizes
    ]
    metrics = {
        f"acc_{name}_{s}px": a for name, d in accs.items() for s, a in d.items()
    }
    figures = [_figure(rows, cfg, out_dir)]
    header = (
        "Network: conv3x3(" + ", ".join(str(f) for f in cfg.filters) + ") "
        "with 2x2 max pools in between -> QuadrantPooling2D(levels="
        f"{tuple(cfg.levels)}, max) -> Dense(10). Adam({cfg.learning_rate}), "
        f"batch {cfg.batch_size}, {cfg.steps} steps, seed {cfg.seed}; "
        f"{cfg.n_train} training and {cfg.n_test} test images of real MNIST "
        "resized (bilinear) to S x S. Mixed training sizes: "
        f"{list(cfg.train_sizes)}.\n"
    )
    tables = [("Test accuracy per input size", rows, list(rows[0]))]
    paths = common.write_outputs(out_dir, NAME, tables, figures, header)
    return {"rows": rows, "metrics": metrics, "paths": paths}


def _figure(rows, cfg, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["size (px)"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(
        sizes,
        [r["acc mixed-size training"] for r in rows],
        "o-",
        label=f"trained on sizes {list(cfg.train_sizes)}",
    )
    ax.plot(
        sizes,
        [r["acc 28-px training"] for r in rows],
        "s--",
        label="trained on 28 px only",
    )
    ax.axvspan(min(cfg.train_sizes), max(cfg.train_sizes), alpha=0.1)
    ax.set_xlabel("input side S (pixels)")
    ax.set_ylabel("test accuracy")
    ax.set_title("one classifier, any input size (QuadrantPooling2D)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return common.save_figure(fig, out_dir / f"{NAME}.png")


main = common.hydra_main(
    NAME,
    run,
    objective=lambda result: np.mean(
        [r["acc mixed-size training"] for r in result["rows"]]
    ),
)

if __name__ == "__main__":
    main()
