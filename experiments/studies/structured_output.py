"""Study: structured output, a fully convolutional network labels every pixel.

DL book Sec. 9.6: convolutional networks "can be used to output a
high-dimensional, structured object", e.g. a tensor S where S_{i,j,k} is the
probability that pixel (j, k) belongs to class i, for pixel-wise labelling
of images. Here: composites of 2-3 real MNIST digits on a 56x56 canvas;
every pixel gets class 0 (background) or 1 + the digit's class (so 11
classes). A small fully convolutional encoder-decoder (three 2x2 poolings,
so the 7x7 bottleneck sees a whole digit; transposed-convolution upsampling
with skip connections; no Dense layer) outputs an 11-channel map of the
input's size.

Metrics on composites of MNIST *test* digits: pixel accuracy, foreground
pixel accuracy (pixels of digits only: background alone is ~85% of the
pixels) and mean IoU over the 11 classes. Deviation: the book describes the
idea only (no dataset or numbers); data, network and steps are ours.

Run: `make study-structured_output`.

Reference:
- Goodfellow, Bengio, Courville, "Deep Learning", 2016, Sec. 9.6.
- Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic
  Segmentation", CVPR 2015; Ronneberger et al., "U-Net", MICCAI 2015.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from convnet_repro.experiments.studies import common  # noqa: E402

NAME = "structured_output"
NUM_CLASSES = 11  # background + 10 digits


def make_composites(images, labels, n, canvas, digits_range, seed, threshold):
    """Composites of 2-3 digits and their per-pixel labels.

    Each digit (28x28) goes into a distinct cell of a 2x2 grid over the
    canvas, jittered by up to `(canvas - 56) / 2 + 4` pixels, and is merged
    with `max`. A pixel is labelled `1 + digit` where that digit's intensity
    exceeds `threshold` (x 255) and is the brightest there; otherwise 0.

    Args:
        images: uint8 `(N, 28, 28)`.
        labels: int `(N,)`.
        n: number of composites.
        canvas: canvas side (>= 56).
        digits_range: `(min, max)` digits per composite (max <= 4).
        seed: RNG seed.
        threshold: foreground threshold in [0, 1].

    Returns:
        `(x float32 (n, canvas, canvas, 1), y int32 (n, canvas, canvas))`.
    """
    if canvas < 56 or not 1 <= digits_range[0] <= digits_range[1] <= 4:
        raise ValueError(
            "Need canvas >= 56 and 1 <= min <= max <= 4 digits. Received: "
            f"canvas={canvas}, digits_range={tuple(digits_range)}"
        )
    rng = np.random.default_rng(seed)
    x = np.zeros((n, canvas, canvas), np.uint8)
    y = np.zeros((n, canvas, canvas), np.int32)
    half = canvas // 2
    jitter = (canvas - 56) // 2 + 4
    for i in range(n):
        k = rng.integers(digits_range[0], digits_range[1] + 1)
        for cell in rng.choice(4, k, replace=False):
            j = rng.integers(len(images))
            r0 = (cell // 2) * half + (half - 28) // 2
            c0 = (cell % 2) * half + (half - 28) // 2
            r = int(
                np.clip(r0 + rng.integers(-jitter, jitter + 1), 0, canvas - 28)
            )
            c = int(
                np.clip(c0 + rng.integers(-jitter, jitter + 1), 0, canvas - 28)
            )
            digit = images[j]
            region = x[i, r : r + 28, c : c + 28]
            fg = (digit > threshold * 255) & (digit >= region)
            y[i, r : r + 28, c : c + 28][fg] = labels[j] + 1
            x[i, r : r + 28, c : c + 28] = np.maximum(region, digit)
    return (x[..., None] / 255.0).astype(np.float32), y


def build_fcn(num_classes=NUM_CLASSES, filters=(16, 32, 64, 96)):
    """Fully convolutional U-Net-style encoder-decoder (logits per pixel).

    Level `i` runs two 3x3 convs with `filters[i]` channels at resolution
    1 / 2**i; the decoder upsamples with 2x2 transposed convolutions and
    concatenates the encoder map of the same size (skip connection).

    Args:
        num_classes: logits per pixel.
        filters: channels per level, full resolution first.

    Returns:
        A `keras.Model` on `(None, None, 1)` inputs whose H, W are divisible
        by `2 ** (len(filters) - 1)`; output `(H, W, num_classes)`.
    """
    if len(filters) < 2:
        raise ValueError(
            f"Need at least 2 levels. Received: filters={tuple(filters)}"
        )

    def block(x, f, name):
        for i in (1, 2):
            x = keras.layers.Conv2D(
                f, 3, padding="same", activation="relu", name=f"{name}_{i}_conv"
            )(x)
        return x

    inputs = keras.Input(shape=(None, None, 1))
    skips = []
    x = inputs
    for level, f in enumerate(filters[:-1], 1):
        x = block(x, f, f"enc{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = block(x, filters[-1], "mid")
    for level, (skip, f) in enumerate(
        zip(reversed(skips), reversed(filters[:-1])), 1
    ):
        x = keras.layers.Conv2DTranspose(
            f, 2, strides=2, name=f"up{level}_tconv"
        )(x)
        x = keras.layers.Concatenate(name=f"up{level}_concat")([x, skip])
        x = block(x, f, f"dec{level}")
    outputs = keras.layers.Conv2D(num_classes, 1, name="pixel_logits")(x)
    return keras.Model(inputs, outputs, name="fcn")


def segmentation_metrics(y_true, y_pred, num_classes=NUM_CLASSES):
    """Pixel accuracy, foreground accuracy, per-class IoU and mean IoU.

    Mean IoU averages the classes that occur in `y_true` or `y_pred`.
    """
    y_true, y_pred = y_true.ravel(), y_pred.ravel()
    conf = np.bincount(
        num_classes * y_true + y_pred, minlength=num_classes**2
    ).reshape(num_classes, num_classes)
    inter = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    fg = y_true > 0
    return {
        "pixel_accuracy": float(np.mean(y_true == y_pred)),
        "foreground_accuracy": float(np.mean(y_true[fg] == y_pred[fg])),
        "mean_iou": float(np.nanmean(iou)),
        "iou": iou,
        "support": conf.sum(1),
    }


def run(cfg):
    """Runs the study; returns `{"rows", "metrics", "paths"}`."""
    out_dir = common.output_dir(cfg)
    keras.utils.set_random_seed(cfg.seed)
    xtr, ytr = common.load_mnist("train", cfg.n_train_digits)
    xte, yte = common.load_mnist("test", cfg.n_test_digits)
    rng_args = (cfg.canvas, tuple(cfg.digits_range))
    x_train, y_train = make_composites(
        xtr, ytr, cfg.n_train, *rng_args, cfg.seed, cfg.threshold
    )
    x_test, y_test = make_composites(
        xte, yte, cfg.n_test, *rng_args, cfg.seed + 1, cfg.threshold
    )
    model = build_fcn(NUM_CLASSES, tuple(cfg.filters))
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    epochs = max(1, round(cfg.steps * cfg.batch_size / len(x_train)))
    model.fit(
        x_train, y_train, batch_size=cfg.batch_size, epochs=epochs, verbose=0
    )
    pred = np.argmax(model.predict(x_test, batch_size=64, verbose=0), -1)
    m = segmentation_metrics(y_test, pred)
    rows = [
        {
            "class": "background" if c == 0 else f"digit {c - 1}",
            "test pixels": int(m["support"][c]),
            "IoU": float(m["iou"][c]),
        }
        for c in range(NUM_CLASSES)
    ]
    summary = [
        {"metric": "pixel accuracy", "value": m["pixel_accuracy"]},
        {
            "metric": "foreground pixel accuracy",
            "value": m["foreground_accuracy"],
        },
        {"metric": "mean IoU (11 classes)", "value": m["mean_iou"]},
        {
            "metric": "all-background baseline pixel accuracy",
            "value": float(np.mean(y_test == 0)),
        },
    ]
    metrics = {
        k: m[k] for k in ("pixel_accuracy", "foreground_accuracy", "mean_iou")
    }
    figures = [_figure(x_test, y_test, pred, out_dir)]
    header = (
        f"{cfg.n_train} training composites (from {cfg.n_train_digits} MNIST "
        f"train digits) and {cfg.n_test} test composites (from MNIST test "
        f"digits), {cfg.digits_range[0]}-{cfg.digits_range[1]} digits on a "
        f"{cfg.canvas}x{cfg.canvas} canvas; foreground = intensity > "
        f"{cfg.threshold}. FCN filters {list(cfg.filters)}, Adam("
        f"{cfg.learning_rate}), batch {cfg.batch_size}, {epochs} epochs, "
        f"unweighted per-pixel cross-entropy, seed {cfg.seed}.\n"
    )
    tables = [
        ("Summary (test composites)", summary, ["metric", "value"]),
        ("IoU per class", rows, ["class", "test pixels", "IoU"]),
    ]
    paths = common.write_outputs(out_dir, NAME, tables, figures, header)
    return dict(rows=rows, summary=summary, metrics=metrics, paths=paths)


def _figure(x, y, pred, out_dir, n=4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    colors = ["black", *plt.get_cmap("tab10").colors]
    cmap = ListedColormap(colors)
    fig, axes = plt.subplots(3, n, figsize=(3 * n, 9))
    for i in range(min(n, len(x))):
        axes[0, i].imshow(x[i, ..., 0], cmap="gray")
        axes[1, i].imshow(
            y[i], cmap=cmap, vmin=0, vmax=10, interpolation="nearest"
        )
        axes[2, i].imshow(
            pred[i], cmap=cmap, vmin=0, vmax=10, interpolation="nearest"
        )
    for r, title in enumerate(("input", "true labels", "predicted labels")):
        axes[r, 0].set_ylabel(title)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=colors[c]) for c in range(NUM_CLASSES)
    ]
    fig.legend(
        handles,
        ["bg", *[str(d) for d in range(10)]],
        loc="lower center",
        ncol=11,
        fontsize=8,
    )
    return common.save_figure(fig, out_dir / f"{NAME}.png")


main = common.hydra_main(NAME, run, objective="mean_iou")


if __name__ == "__main__":
    main()
