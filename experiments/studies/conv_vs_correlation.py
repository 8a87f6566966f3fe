"""Study: true convolution vs cross-correlation on a real photo.

Every classic kernel of `layers.filter_bank.FILTERS` is applied to a
greyscale Imagenette photo with true convolution (DL book eq. 9.4, kernel
flipped) and with cross-correlation (eq. 9.6, what libraries call
"convolution"), both `mode="same"`. Since `conv(I, K) = corr(I, flip(K))`
(flip = rotation by 180 degrees), the two agree exactly for kernels with
`flip(K) = K` (average, Gaussian, high-pass, sharpen) and differ for the
others; for the antisymmetric derivative kernels (Sobel, Prewitt:
`flip(K) = -K`) they differ by a sign.

Associativity (Sec. 9.1, "convolution is commutative" and, in full mode,
associative): D * (G * I) = (D * G) * I with D a Sobel derivative and G a
Gaussian, in full mode. The same rearrangement fails for cross-correlation:
(I star G) star D = I star (G * D) (the kernels combine by *convolution*),
not I star (G star D).

Run: `make study-conv_vs_correlation`.

Reference:
- Goodfellow, Bengio, Courville, "Deep Learning", 2016, Sec. 9.1
  (eqs. 9.4-9.6), 9.2.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from convnet_repro.experiments.studies import common  # noqa: E402
from convnet_repro.layers import filter_bank  # noqa: E402
from convnet_repro.layers import functional  # noqa: E402

NAME = "conv_vs_correlation"
COLUMNS = [
    "kernel",
    "flip(K)",
    "max |conv - corr|",
    "max |conv + corr|",
    "max |conv|",
    "conv == corr",
]


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def conv(x, k, mode):
    """True convolution (`layers.functional.convolve`) as numpy."""
    return _np(functional.convolve(x, k, mode=mode))


def corr(x, k, mode):
    """Cross-correlation (`layers.functional.cross_correlate`) as numpy."""
    return _np(functional.cross_correlate(x, k, mode=mode))


def flip_relation(kernel):
    """`"K"`, `"-K"` or `"other"`: what rotating the kernel by 180 gives."""
    flipped = kernel[::-1, ::-1]
    if np.array_equal(flipped, kernel):
        return "K"
    if np.array_equal(flipped, -kernel):
        return "-K"
    return "other"


def kernel_rows(image, names, size):
    """Table rows and the (conv, corr) outputs for each kernel."""
    rows, outputs = [], {}
    for name in names:
        k = filter_bank.get_filter(name, size)
        a, b = conv(image, k, "same"), corr(image, k, "same")
        outputs[name] = (k, a, b)
        diff = float(np.abs(a - b).max())
        scale = float(np.abs(a).max())
        rows.append(
            {
                "kernel": name,
                "flip(K)": flip_relation(k),
                "max |conv - corr|": diff,
                "max |conv + corr|": float(np.abs(a + b).max()),
                "max |conv|": scale,
                "conv == corr": "yes" if diff <= 1e-5 * scale else "no",
            }
        )
    return rows, outputs


def associativity(image, derivative, smoothing, size):
    """Max abs differences of the full-mode rearrangements.

    Returns:
        Rows with `operation`, `left`, `right`, `max |left - right|` and
        `relative` (divided by max |left|).
    """
    d = filter_bank.get_filter(derivative, size).astype(np.float64)
    g = filter_bank.get_filter(smoothing, size).astype(np.float64)
    full = {
        "D * (G * I)": conv(conv(image, g, "full"), d, "full"),
        "(D * G) * I": conv(image, conv(g, d, "full"), "full"),
        "D * G": conv(d, g, "full"),
        "G * D": conv(g, d, "full"),
        "(I star G) star D": corr(corr(image, g, "full"), d, "full"),
        "I star (G star D)": corr(image, corr(g, d, "full"), "full"),
        "I star (G * D)": corr(image, conv(g, d, "full"), "full"),
    }
    cases = [
        ("convolution", "D * (G * I)", "(D * G) * I"),
        ("convolution", "D * G", "G * D"),
        ("cross-correlation", "(I star G) star D", "I star (G star D)"),
        ("cross-correlation", "(I star G) star D", "I star (G * D)"),
    ]
    rows = []
    for op, left_name, right_name in cases:
        left, right = full[left_name], full[right_name]
        diff = float(np.abs(left - right).max())
        rows.append(
            {
                "operation": op,
                "left": left_name,
                "right": right_name,
                "max |left - right|": diff,
                "relative": diff / float(np.abs(left).max()),
            }
        )
    return rows


def run(cfg):
    """Runs the study; returns `{"rows", "associativity", "metrics"}`."""
    out_dir = common.output_dir(cfg)
    image = common.load_gray_image(cfg.image)
    if cfg.get("crop"):
        image = image[: cfg.crop, : cfg.crop]
    names = (
        list(cfg.kernels) if cfg.get("kernels") else list(filter_bank.FILTERS)
    )
    rows, outputs = kernel_rows(image, names, cfg.kernel_size)
    assoc = associativity(image, cfg.derivative, cfg.smoothing, cfg.kernel_size)
    metrics = {
        f"max_abs_diff_{r['kernel']}": r["max |conv - corr|"] for r in rows
    }
    metrics["assoc_conv_max_abs"] = assoc[0]["max |left - right|"]
    metrics["assoc_corr_max_abs"] = assoc[2]["max |left - right|"]
    figures = [
        _kernel_figure(image, outputs, out_dir),
        _assoc_figure(image, cfg, out_dir),
    ]
    header = (
        f"Image: `{cfg.image}`, greyscale {image.shape[0]}x{image.shape[1]}"
        f" in [0, 1]; {cfg.kernel_size}x{cfg.kernel_size} kernels from "
        "`layers.filter_bank`, `mode='same'`, float32 arithmetic "
        "(`layers.functional`). flip(K) is K rotated by 180 degrees; "
        "conv(I, K) = corr(I, flip(K)).\n"
    )
    assoc_title = (
        f"Associativity in full mode (D = {cfg.derivative}, G = "
        f"{cfg.smoothing}, I = the image)"
    )
    tables = [
        ("Convolution vs cross-correlation per kernel", rows, COLUMNS),
        (assoc_title, assoc, list(assoc[0])),
    ]
    paths = common.write_outputs(out_dir, NAME, tables, figures, header)
    return dict(rows=rows, associativity=assoc, metrics=metrics, paths=paths)


def _kernel_figure(image, outputs, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(outputs)
    fig, axes = plt.subplots(n, 4, figsize=(11, 2.7 * n))
    axes = np.atleast_2d(axes)
    for row, (name, (k, a, b)) in zip(axes, outputs.items()):
        row[0].imshow(
            k, cmap="coolwarm", vmin=-np.abs(k).max(), vmax=np.abs(k).max()
        )
        for (i, j), v in np.ndenumerate(k):
            row[0].text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=7)
        row[0].set_title(f"{name} K", fontsize=9)
        lim = np.abs(a).max()
        row[1].imshow(a, cmap="gray", vmin=-lim if a.min() < 0 else 0, vmax=lim)
        row[1].set_title("convolution I * K", fontsize=9)
        row[2].imshow(b, cmap="gray", vmin=-lim if b.min() < 0 else 0, vmax=lim)
        row[2].set_title("cross-correlation I star K", fontsize=9)
        im = row[3].imshow(
            np.abs(a - b), cmap="magma", vmin=0, vmax=max(lim, 1e-12)
        )
        row[3].set_title(
            f"|conv - corr|, max {np.abs(a - b).max():.2g}", fontsize=9
        )
        fig.colorbar(im, ax=row[3], fraction=0.046)
        for ax in row:
            ax.axis("off")
    del image
    return common.save_figure(fig, out_dir / f"{NAME}.png")


def _assoc_figure(image, cfg, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = filter_bank.get_filter(cfg.derivative, cfg.kernel_size)
    g = filter_bank.get_filter(cfg.smoothing, cfg.kernel_size)
    panels = [
        ("D * (G * I)", conv(conv(image, g, "full"), d, "full")),
        ("(D * G) * I", conv(image, conv(g, d, "full"), "full")),
        ("(I star G) star D", corr(corr(image, g, "full"), d, "full")),
        ("I star (G star D)", corr(image, corr(g, d, "full"), "full")),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8))
    for r in range(2):
        (n1, a), (n2, b) = panels[2 * r], panels[2 * r + 1]
        lim = np.abs(a).max()
        axes[r, 0].imshow(a, cmap="gray", vmin=-lim, vmax=lim)
        axes[r, 0].set_title(n1)
        axes[r, 1].imshow(b, cmap="gray", vmin=-lim, vmax=lim)
        axes[r, 1].set_title(n2)
        im = axes[r, 2].imshow(np.abs(a - b), cmap="magma", vmin=0, vmax=lim)
        axes[r, 2].set_title(f"|difference|, max {np.abs(a - b).max():.2g}")
        fig.colorbar(im, ax=axes[r, 2], fraction=0.046)
        for ax in axes[r]:
            ax.axis("off")
    return common.save_figure(fig, out_dir / f"{NAME}_associativity.png")


main = common.hydra_main(NAME, run, objective="assoc_conv_max_abs")


if __name__ == "__main__":
    main()
