"""Study: equivariance of convolution, and invariance from max pooling.

Measured on real photos (Imagenette, greyscale) with randomly initialised
layers (the property is structural, so no training is needed):

- translation: relative error ||f(S x) - S f(x)|| / ||S f(x)|| for a shift S
  that fills with zeros. For convolution it is 0 (float round-off) away from
  the border, i.e. on the output positions whose window lies in the shifted
  content; the whole map differs only at the border. Tiled convolution (t=2)
  is equivariant only to shifts that are multiples of t; the unshared
  (locally connected) layer to none.
- rotation by 90 degrees and scaling x2 (nearest): convolution with generic
  kernels is not equivariant to these (Sec. 9.2: "convolution is not
  naturally equivariant to some other transformations, such as changes in
  the scale or rotation of an image").
- max pooling (stride 1, width p, as in Fig. 9.8): the fraction of pooled
  outputs left unchanged when the input shifts by s pixels, against the
  detector outputs themselves (p = 1). Detector = the linear convolution
  responses (no ReLU, so that zeros do not count as "unchanged").

Run: `make study-equivariance`.

Reference:
- Goodfellow, Bengio, Courville, "Deep Learning", 2016, Sec. 9.2
  (equivariant representations), 9.3 and Fig. 9.8 (pooling invariance),
  9.5 eq. 9.9-9.10 (unshared, tiled).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from convnet_repro import layers  # noqa: E402
from convnet_repro.experiments.studies import common  # noqa: E402

NAME = "equivariance"
COLUMNS = [
    "layer",
    "transform",
    "rel. error (interior)",
    "rel. error (whole map)",
]


def shift(x, dy, dx):
    """Shifts `(N, H, W, C)` down by `dy`, right by `dx` (>= 0), zero fill."""
    if dy < 0 or dx < 0:
        raise ValueError(f"Shifts must be >= 0. Received: dy={dy}, dx={dx}")
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    out[:, dy:, dx:] = x[:, : h - dy, : w - dx]
    return out


def rel_error(a, b):
    """`||a - b|| / ||b||` (Frobenius)."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def make_layer(kind, filters, kernel_size, input_shape, seed):
    """A built, randomly initialised layer: conv, tiled2, tiled3, unshared."""
    init = keras.initializers.GlorotUniform(seed=seed)
    bias = keras.initializers.RandomNormal(stddev=0.1, seed=seed + 1)
    kw = dict(kernel_initializer=init, bias_initializer=bias)
    if kind == "conv":
        layer = keras.layers.Conv2D(filters, kernel_size, **kw)
    elif kind == "unshared":
        layer = layers.UnsharedConv2D(filters, kernel_size, **kw)
    elif kind in ("tiled2", "tiled3"):
        layer = layers.TiledConv2D(
            filters, kernel_size, tile_size=int(kind[-1]), **kw
        )
    else:
        raise ValueError(
            "Unknown layer kind. Expected conv, tiled2, tiled3 or unshared. "
            f"Received: kind={kind!r}"
        )
    layer.build((None, *input_shape))
    return layer


def _apply(layer, x):
    return keras.ops.convert_to_numpy(layer(x))


def shift_errors(layer, x, dy, dx):
    """(interior, whole-map) relative error of the layer under a shift."""
    fx = _apply(layer, x)
    a = _apply(layer, shift(x, dy, dx))
    b = shift(fx, dy, dx)
    return rel_error(a[:, dy:, dx:], b[:, dy:, dx:]), rel_error(a, b)


def rotation_error(layer, x):
    """Relative error of f(rot90 x) vs rot90 f(x) (square inputs)."""
    a = _apply(layer, np.rot90(x, axes=(1, 2)).copy())
    b = np.rot90(_apply(layer, x), axes=(1, 2))
    return rel_error(a, b)


def scale_error(layer_up, layer, x):
    """f(up2 x) vs up2 f(x) on their common top-left crop (nearest x2)."""
    up = x.repeat(2, axis=1).repeat(2, axis=2)
    a = _apply(layer_up, up)
    b = _apply(layer, x).repeat(2, axis=1).repeat(2, axis=2)
    h, w = min(a.shape[1], b.shape[1]), min(a.shape[2], b.shape[2])
    return rel_error(a[:, :h, :w], b[:, :h, :w])


def pooling_unchanged(detector, x, pool_sizes, shifts, tol=1e-5):
    """Fraction of max-pooled outputs unchanged by a horizontal input shift.

    Args:
        detector: callable `x -> (N, H, W, C)` detector responses.
        x: input images `(N, H, W, C)`.
        pool_sizes: pooling widths p (stride 1, p x p); 1 = no pooling.
        shifts: shift sizes s in pixels.
        tol: relative tolerance for "unchanged".

    Returns:
        `{p: [fraction for each s]}` (valid output region `q >= s` only).
    """

    def result(z, p):
        y = detector(z)
        if p == 1:
            return y
        pool = keras.layers.MaxPooling2D(p, strides=1)
        return keras.ops.convert_to_numpy(pool(y))

    out = {}
    for p in pool_sizes:
        fractions = []
        for s in shifts:
            base = result(x, p)
            moved = result(shift(x, 0, s), p)
            scale = np.abs(base).max()
            same = np.abs(moved[:, :, s:] - base[:, :, s:]) <= tol * scale
            fractions.append(float(same.mean()))
        out[p] = fractions
    return out


def load_images(cfg):
    """`cfg.num_images` Imagenette val photos, greyscale, `(N, S, S, 1)`."""
    root = common.data_dir() / "imagenette2-224" / "val"
    files = sorted(
        p for d in sorted(root.iterdir()) for p in sorted(d.iterdir())[:2]
    )
    rng = np.random.default_rng(cfg.seed)
    pick = rng.choice(len(files), cfg.num_images, replace=False)
    images = [
        common.load_gray_image(
            files[i].relative_to(root.parent), (cfg.size,) * 2
        )
        for i in sorted(pick)
    ]
    return np.stack(images)[..., None].astype(np.float32)


def run(cfg):
    """Runs the study; returns `{"rows", "pooling", "metrics", "paths"}`."""
    out_dir = common.output_dir(cfg)
    x = load_images(cfg)
    shape = x.shape[1:]
    up_shape = (2 * shape[0], 2 * shape[1], shape[2])
    k, f = cfg.kernel_size, cfg.filters
    rows, curves, built = [], {}, {}
    for kind in cfg.kinds:
        layer = make_layer(kind, f, k, shape, cfg.seed)
        built[kind] = layer
        for dy, dx in cfg.shifts_table:
            inner, whole = shift_errors(layer, x, dy, dx)
            rows.append(
                {
                    "layer": kind,
                    "transform": f"shift ({dy}, {dx})",
                    "rel. error (interior)": inner,
                    "rel. error (whole map)": whole,
                }
            )
        curves[kind] = [
            shift_errors(layer, x, 0, s)[0] for s in range(1, cfg.max_shift + 1)
        ]
        rot = rotation_error(layer, x)
        rows.append(
            {
                "layer": kind,
                "transform": "rotate 90 deg",
                "rel. error (interior)": "-",
                "rel. error (whole map)": rot,
            }
        )
        if kind == "conv":  # same kernels on the x2 image; others are per-size
            layer_up = make_layer(kind, f, k, up_shape, cfg.seed)
            rows.append(
                {
                    "layer": kind,
                    "transform": "scale x2 (nearest)",
                    "rel. error (interior)": "-",
                    "rel. error (whole map)": scale_error(layer_up, layer, x),
                }
            )
    conv = built.get("conv") or make_layer("conv", f, k, shape, cfg.seed)
    shifts = list(range(cfg.max_shift + 1))
    pooling = pooling_unchanged(
        lambda z: _apply(conv, z), x, cfg.pool_sizes, shifts
    )
    pool_rows = [
        {"pool width": p, **{f"s={s}": pooling[p][s] for s in shifts}}
        for p in cfg.pool_sizes
    ]
    metrics = {
        f"{r['layer']}_{r['transform']}".replace(" ", "_")
        .replace("(", "")
        .replace(")", "")
        .replace(",", ""): r["rel. error (whole map)"]
        for r in rows
    }
    metrics.update(
        {
            f"pool{p}_unchanged_shift1": pooling[p][1]
            for p in cfg.pool_sizes
            if cfg.max_shift >= 1
        }
    )
    figures = [
        _figure(x, conv, built, curves, pooling, shifts, rows, cfg, out_dir)
    ]
    header = (
        f"{cfg.num_images} Imagenette val photos, greyscale {cfg.size}x"
        f"{cfg.size}; random layers with {f} filters {k}x{k} (Glorot "
        f"uniform kernels, N(0, 0.1) biases, seed {cfg.seed}). Interior = "
        "output positions whose window lies in the shifted content.\n"
    )
    pool_title = (
        "Max pooling: fraction of outputs unchanged by a shift of s pixels"
    )
    pool_columns = ["pool width", *[f"s={s}" for s in shifts]]
    tables = [
        ("Equivariance (relative error)", rows, COLUMNS),
        (pool_title, pool_rows, pool_columns),
    ]
    paths = common.write_outputs(out_dir, NAME, tables, figures, header)
    return dict(rows=rows, pooling=pooling, metrics=metrics, paths=paths)


def _figure(x, conv, built, curves, pooling, shifts, rows, cfg, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dy, dx = cfg.shifts_table[0]
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.5))
    demo = x[:1]
    a = _apply(conv, shift(demo, dy, dx))[0, ..., 0]
    b = shift(_apply(conv, demo), dy, dx)[0, ..., 0]
    panels = [
        (demo[0, ..., 0], "input"),
        (a, f"conv(shift{(dy, dx)} x), channel 0"),
        (np.abs(a - b), "|conv(shift x) - shift(conv x)|"),
    ]
    if "unshared" in built:
        u = built["unshared"]
        au = _apply(u, shift(demo, dy, dx))[0, ..., 0]
        bu = shift(_apply(u, demo), dy, dx)[0, ..., 0]
        panels[0] = (np.abs(au - bu), "unshared: |f(shift x) - shift(f x)|")
    for ax, (img, title) in zip(axes[0], panels):
        im = ax.imshow(img, cmap="gray" if title == "input" else "magma")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[1, 0]
    s = np.arange(1, cfg.max_shift + 1)
    for kind, errs in curves.items():
        ax.semilogy(s, np.maximum(errs, 1e-12), "o-", label=kind)
    ax.set_xlabel("horizontal shift (pixels)")
    ax.set_ylabel("rel. error, interior (0 drawn at 1e-12)")
    ax.set_title("translation equivariance")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    for p, fr in pooling.items():
        ax.plot(
            shifts,
            fr,
            "o-",
            label=f"max pool width {p}" if p > 1 else "no pooling",
        )
    ax.set_xlabel("horizontal shift (pixels)")
    ax.set_ylabel("fraction of outputs unchanged")
    ax.set_title("invariance from max pooling (stride 1)")
    ax.legend(fontsize=8)
    ax = axes[1, 2]
    other = [r for r in rows if not r["transform"].startswith("shift")]
    ax.bar(
        range(len(other)),
        [r["rel. error (whole map)"] for r in other],
        tick_label=[f"{r['layer']}: {r['transform']}" for r in other],
    )
    ax.tick_params(axis="x", labelsize=7, labelrotation=35)
    ax.set_ylabel("rel. error")
    ax.set_title("rotation / scale: not equivariant")
    return common.save_figure(fig, out_dir / f"{NAME}.png")


main = common.hydra_main(NAME, run)

if __name__ == "__main__":
    main()
