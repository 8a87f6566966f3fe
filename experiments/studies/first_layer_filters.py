"""Study: learned first-layer filters of a small CNN on natural images.

DL book Sec. 9.10 ("the neuroscientific basis"): V1 simple cells are well
described by Gabor functions, and "most deep learning algorithms" learn
Gabor-like first-layer features (edge detectors at various orientations,
colour blobs) when trained on natural images. We train a small CNN on real
Imagenette photos at 64x64 (colour) for a few minutes on a CPU and show its
first-layer 7x7 filters as an image grid, before and after training.

A simple quantitative check: the fraction of each filter's spectral energy
(DC removed) at low spatial frequencies (radius <= half Nyquist). Random
initial filters are white noise (8 / 48 = 0.17 of the non-DC frequencies
of a 7x7 kernel); smooth, oriented, Gabor-like filters concentrate it.
Deviation: the network, size and training length are ours, far from the
ImageNet-scale training that shows the cleanest Gabors (e.g. AlexNet,
Krizhevsky et al. 2012, Fig. 3).

Run: `make study-first_layer_filters`.

Reference:
- Goodfellow, Bengio, Courville, "Deep Learning", 2016, Sec. 9.10, Fig. 9.19.
- Krizhevsky, Sutskever, Hinton, NIPS 2012, Fig. 3.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from convnet_repro.experiments.studies import common  # noqa: E402

NAME = "first_layer_filters"


def load_imagenette(split, per_class, size, seed):
    """`per_class` photos of each of the 10 classes, `(N, size, size, 3)`."""
    from PIL import Image

    root = common.data_dir() / "imagenette2-224" / split
    if not root.is_dir():
        raise ValueError(
            "Imagenette not found; set CONVNET_REPRO_DATA_DIR to the folder "
            f"holding imagenette2-224/. Received: path={str(root)!r}"
        )
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, wnid in enumerate(sorted(p.name for p in root.iterdir())):
        files = sorted((root / wnid).iterdir())
        for i in rng.choice(len(files), min(per_class, len(files)), False):
            img = (
                Image.open(files[i])
                .convert("RGB")
                .resize((size, size), Image.BILINEAR)
            )
            images.append(np.asarray(img, np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, np.int32)


def build_net(
    num_classes=10, filters=32, kernel_size=7, input_size=64, weight_decay=0.0
):
    """conv1 (the studied layer, stride 2) -> 2 conv blocks -> GAP -> Dense.

    `weight_decay` is an L2 penalty on every conv kernel (AlexNet used 5e-4).
    """
    reg = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=(input_size, input_size, 3))
    x = keras.layers.RandomFlip("horizontal", name="flip")(inputs)
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=2,
        padding="same",
        kernel_regularizer=reg,
        name="conv1",
    )(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    for i, f in enumerate((64, 128), start=2):
        x = keras.layers.Conv2D(
            f, 3, padding="same", kernel_regularizer=reg, name=f"conv{i}"
        )(x)
        x = keras.layers.BatchNormalization(name=f"conv{i}_bn")(x)
        x = keras.layers.ReLU(name=f"conv{i}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="first_layer_cnn")


def low_frequency_fraction(kernels):
    """Per filter: share of non-DC spectral energy at radius <= Nyquist / 2.

    Args:
        kernels: `(kh, kw, in, out)` array.

    Returns:
        `(out,)` array in [0, 1].
    """
    kh, kw = kernels.shape[:2]
    fy = np.fft.fftfreq(kh)[:, None]
    fx = np.fft.fftfreq(kw)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    low = (radius <= 0.25) & (radius > 0)
    spec = np.abs(np.fft.fft2(kernels, axes=(0, 1))) ** 2  # (kh, kw, in, out)
    spec = spec.sum(axis=2)
    spec[0, 0] = 0.0
    return spec[low].sum(axis=0) / np.maximum(spec.sum(axis=(0, 1)), 1e-30)


def filter_grid(kernels, columns=8):
    """Tiles `(kh, kw, 3, n)` kernels, each scaled to [0, 1], into an image."""
    kh, kw, _, n = kernels.shape
    rows = -(-n // columns)
    grid = np.ones((rows * (kh + 1) + 1, columns * (kw + 1) + 1, 3))
    for i in range(n):
        k = kernels[..., i]
        k = (k - k.min()) / max(k.max() - k.min(), 1e-12)
        r, c = divmod(i, columns)
        grid[
            1 + r * (kh + 1) : 1 + r * (kh + 1) + kh,
            1 + c * (kw + 1) : 1 + c * (kw + 1) + kw,
        ] = k
    return grid


def run(cfg):
    """Runs the study; returns `{"rows", "metrics", "paths"}`."""
    out_dir = common.output_dir(cfg)
    keras.utils.set_random_seed(cfg.seed)
    xtr, ytr = load_imagenette("train", cfg.train_per_class, cfg.size, cfg.seed)
    xva, yva = load_imagenette("val", cfg.val_per_class, cfg.size, cfg.seed)
    mean = xtr.reshape(-1, 3).mean(0)
    std = xtr.reshape(-1, 3).std(0)
    norm = lambda x: ((x - mean) / std).astype(np.float32)  # noqa: E731
    xtr, xva = norm(xtr), norm(xva)
    model = build_net(
        10, cfg.filters, cfg.kernel_size, cfg.size, cfg.weight_decay
    )
    init = keras.ops.convert_to_numpy(model.get_layer("conv1").kernel).copy()
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    epochs = max(1, round(cfg.steps * cfg.batch_size / len(xtr)))
    history = model.fit(
        xtr,
        ytr,
        batch_size=cfg.batch_size,
        epochs=epochs,
        validation_data=(xva, yva),
        verbose=0,
    )
    trained = keras.ops.convert_to_numpy(model.get_layer("conv1").kernel)
    rows = []
    for name, k in (("random init", init), ("trained", trained)):
        lf = low_frequency_fraction(k)
        rows.append(
            {
                "filters": name,
                "mean low-freq. energy fraction": float(lf.mean()),
                "filters with fraction > 0.5": int((lf > 0.5).sum()),
            }
        )
    val_acc = float(history.history["val_accuracy"][-1])
    train_acc = float(history.history["accuracy"][-1])
    for r in rows:
        r["val acc"] = val_acc if r["filters"] == "trained" else 0.1
    metrics = {
        "val_accuracy": val_acc,
        "train_accuracy": train_acc,
        "epochs": epochs,
        "low_freq_fraction_init": rows[0]["mean low-freq. energy fraction"],
        "low_freq_fraction_trained": rows[1]["mean low-freq. energy fraction"],
    }
    np.save(out_dir / f"{NAME}_conv1_kernel.npy", trained)
    figures = [_figure(init, trained, val_acc, out_dir)]
    header = (
        f"{len(xtr)} Imagenette train photos (and "
        f"{len(xva)} val) at {cfg.size}x{cfg.size} colour, "
        f"standardised per channel, random horizontal flips. conv1: "
        f"{cfg.filters} filters {cfg.kernel_size}x{cfg.kernel_size}, stride "
        f"2 -> ReLU -> pool -> 2 x (conv3x3 + BN + ReLU + pool) -> GAP -> "
        f"Dense; L2 {cfg.weight_decay} on conv kernels. "
        f"Adam({cfg.learning_rate}), batch {cfg.batch_size}, "
        f"{epochs} epochs. Final train acc {train_acc:.3f}, val acc "
        f"{val_acc:.3f} (chance 0.1). The init row's val acc is chance.\n"
    )
    tables = [("First-layer filters", rows, list(rows[0]))]
    paths = common.write_outputs(out_dir, NAME, tables, figures, header)
    paths.append(out_dir / f"{NAME}_conv1_kernel.npy")
    return {
        "rows": rows,
        "metrics": metrics,
        "paths": paths,
        "init": init,
        "trained": trained,
    }


def _figure(init, trained, val_acc, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    axes[0].imshow(filter_grid(init), interpolation="nearest")
    axes[0].set_title("conv1 filters, random init")
    axes[1].imshow(filter_grid(trained), interpolation="nearest")
    axes[1].set_title(f"conv1 filters, trained (val acc {val_acc:.2f})")
    for ax in axes:
        ax.axis("off")
    return common.save_figure(fig, out_dir / f"{NAME}.png")


main = common.hydra_main(NAME, run, objective="val_accuracy")


if __name__ == "__main__":
    main()
