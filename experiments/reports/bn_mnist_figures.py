"""BN paper Fig. 1 figures (a, b, c) from a `bn_mnist.summarize` result.

(a) test accuracy vs. training steps: the mean over seeds, band = min..max
over seeds. (b, c) the {15, 50, 85}th percentiles of the input to one
sigmoid of the last hidden layer (`experiments.probes.PercentileProbe`),
without and with BN: for each percentile the median over ALL seeds, band =
min..max over seeds, so the figure shows the seed spread, not one seed.
"""

import pathlib

VARIANT_LABELS = {"baseline": "Without BN", "bn": "With BN"}


def _plot_accuracy(ax, summary):
    for name, curve in summary["curves"].items():
        if not curve["steps"]:
            continue
        label = VARIANT_LABELS.get(name, name)
        (line,) = ax.plot(curve["steps"], curve["mean"], label=label, lw=1.5)
        ax.fill_between(
            curve["steps"],
            curve["lo"],
            curve["hi"],
            color=line.get_color(),
            alpha=0.2,
            lw=0,
        )
    finals = [r["test_acc"]["mean"] for r in summary["rows"]]
    if finals and all(f > 0.85 for f in finals):
        ax.set_ylim(0.7, 1.0)  # the paper's axis
    ax.set_xlabel("training steps")
    ax.set_ylabel("test accuracy")
    ax.set_title("(a) test accuracy (mean, band = seed range)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def _plot_bands(ax, bands, title):
    styles = [":", "-", "--"]  # 15th dotted, 50th solid, 85th dashed
    for i, (q, band) in enumerate(
        sorted(bands.items(), key=lambda x: float(x[0]))
    ):
        ax.plot(
            band["steps"],
            band["median"],
            styles[i % 3],
            color="C0",
            lw=1.2,
            label=f"{float(q):g}th percentile",
        )
        ax.fill_between(
            band["steps"], band["lo"], band["hi"], color="C0", alpha=0.15, lw=0
        )
    ax.set_xlabel("training steps")
    ax.set_ylabel("input to the sigmoid")
    n = {b["seeds"] for b in bands.values()}
    ax.set_title(f"{title} ({'/'.join(map(str, sorted(n)))} seeds)")
    ax.grid(alpha=0.3)
    if bands:
        ax.legend(fontsize=8)


def plot_figures(summary, out_dir, baseline="baseline", treatment="bn"):
    """Saves `fig1.png` (three panels) and one PNG per panel.

    Args:
        summary: `bn_mnist.summarize` output (`curves`, `rows`, `bands`).
        out_dir: destination folder.
        baseline, treatment: variant names of panels (b) and (c).

    Returns:
        The list of written `pathlib.Path`s.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = [
        (baseline, "(b) without BN", "fig1b_sigmoid_input_no_bn.png"),
        (treatment, "(c) with BN", "fig1c_sigmoid_input_bn.png"),
    ]
    bands = summary.get("bands", {})
    data = [(bands.get(v, {}), t, f) for v, t, f in panels]
    values = [
        x
        for b, _, _ in data
        for band in b.values()
        for x in band["lo"] + band["hi"]
    ]
    ylim = None
    if values:  # shared y axis so (b) and (c) compare at a glance
        lo, hi = min(values), max(values)
        pad = 0.05 * (hi - lo or 1.0)
        ylim = (lo - pad, hi + pad)

    out_dir = pathlib.Path(out_dir)
    written = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    _plot_accuracy(axes[0], summary)
    for ax, (b, title, _) in zip(axes[1:], data):
        _plot_bands(ax, b, title)
        if ylim:
            ax.set_ylim(*ylim)
    fig.suptitle("BN paper Fig. 1 reproduced: MNIST, 784-100-100-100-10")
    fig.tight_layout()
    written.append(out_dir / "fig1.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    _plot_accuracy(ax, summary)
    fig.tight_layout()
    written.append(out_dir / "fig1a_test_accuracy.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    for b, title, filename in data:
        fig, ax = plt.subplots(figsize=(5, 4))
        _plot_bands(ax, b, title)
        if ylim:
            ax.set_ylim(*ylim)
        fig.tight_layout()
        written.append(out_dir / filename)
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written
