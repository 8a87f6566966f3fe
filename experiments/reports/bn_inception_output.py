"""BN-Inception's report files: the speed-up table and Fig. 2.

`table.md` (ours beside the paper's steps to threshold and max accuracy,
plus the steps to fixed accuracies and, with several seeds, the Fig. 3
claims tested over seeds), `table.csv`, `summary.json` and
`accuracy_vs_steps.png`.
"""

import csv
import json
import pathlib

from convnet_repro.experiments.reports.bn_inception_curves import SMOOTH_WINDOW
from convnet_repro.experiments.reports.bn_inception_curves import steps_to_fixed
from convnet_repro.experiments.reports.bn_inception_curves import (
    steps_to_fixed_seeds,
)
from convnet_repro.experiments.reports.bn_inception_seeds import compare_seeds
from convnet_repro.experiments.reports.bn_inception_seeds import (
    format_comparisons,
)
from convnet_repro.experiments.reports.bn_inception_seeds import seed_maxima

TABLE_COLUMNS = (
    "variant",
    "model",
    "paper_steps_to_threshold",
    "paper_max_accuracy",
    "steps_to_threshold",
    "speedup",
    "max_accuracy",
    "step_at_max",
    "final_step",
)


def _paper_entry(paper, name):
    """The paper's reference numbers for `name` from `cfg.paper.variants`."""
    variants = (paper or {}).get("variants") or {}
    return variants.get(name) or {}


def _fmt_paper_steps(value):
    if value is None:
        return "n/a"
    return f"{value / 1e6:.1f}·10^6"


def fmt_pct(value):
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _fmt_steps(value):
    return "not reached" if value is None else f"{value:,}"


def table_rows(results, paper=None):
    """The table as a list of dicts with the keys `TABLE_COLUMNS`."""
    rows = []
    for r in results:
        ref = _paper_entry(paper, r.name)
        rows.append(
            {
                "variant": r.name,
                "model": r.label,
                "paper_steps_to_threshold": ref.get("steps_to_threshold"),
                "paper_max_accuracy": ref.get("max_accuracy"),
                "steps_to_threshold": r.steps_to_threshold,
                "speedup": r.speedup,
                "max_accuracy": r.max_accuracy,
                "step_at_max": r.step_at_max,
                "final_step": r.steps[-1] if r.steps else None,
            }
        )
    return rows


def format_markdown(threshold, results, paper=None, title=None, notes=()):
    """Renders the table in the paper's Fig. 3 format, beside the paper's.

    Args:
        threshold: float accuracy the step counts refer to.
        results: list of `VariantResult` (from `summarize`).
        paper: the experiment's `paper:` mapping (may be `None`).
        title: optional heading line.
        notes: extra lines printed under the table.

    Returns:
        A Markdown string.
    """
    paper = paper or {}
    paper_thr = paper.get("threshold")
    lines = [f"### {title}", ""] if title else []
    lines += [
        f"| Model | Paper: steps to {fmt_pct(paper_thr)} | Paper: max acc. "
        f"| Ours: steps to {fmt_pct(threshold)} | Ours: speed-up "
        "| Ours: max acc. (at step) | Ours: steps run |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ref = _paper_entry(paper, r.name)
        paper_acc = fmt_pct(ref.get("max_accuracy"))
        if ref.get("note"):
            paper_acc = f"{paper_acc} ({ref['note']})"
        speedup = "n/a" if r.speedup is None else f"{r.speedup:.1f}x"
        ours_acc = fmt_pct(r.max_accuracy)
        if r.step_at_max is not None:
            ours_acc = f"{ours_acc} ({r.step_at_max:,})"
        lines.append(
            f"| {r.label} | {_fmt_paper_steps(ref.get('steps_to_threshold'))} "
            f"| {paper_acc} | {_fmt_steps(r.steps_to_threshold)} "
            f"| {speedup} | {ours_acc} "
            f"| {_fmt_steps(r.steps[-1] if r.steps else None)} |"
        )
    lines.append("")
    lines += list(notes)
    return "\n".join(lines).rstrip() + "\n"


def format_fixed_thresholds(results, thresholds):
    """Markdown table of the steps to fixed accuracies (not in the paper).

    Compares the variants with each other when the baseline's maximum is
    too low to separate them (e.g. a shortened run).
    """
    if not thresholds:
        return ""
    header = " | ".join(f"steps to {fmt_pct(t)}" for t in thresholds)
    lines = [
        f"| Model | Seeds | {header} |",
        "|---|---:|" + "---:|" * len(thresholds),
    ]
    table = steps_to_fixed_seeds(results, thresholds)
    for r in results:
        cells = " | ".join(_fmt_cell(c) for c in table[r.name])
        lines.append(f"| {r.label} | {len(r.seed_curves)} | {cells} |")
    return "\n".join(lines) + "\n"


def _fmt_cell(cell):
    """`mean [lo, hi]`, a single step, or how many seeds got there."""
    if cell["mean"] is None:
        if cell["reached"]:
            return f"not reached ({cell['reached']}/{cell['seeds']} seeds)"
        return "not reached"
    if cell["lo"] is None:
        return f"{cell['mean']:,.0f}"
    return f"{cell['mean']:,.0f} [{cell['lo']:,.0f}, {cell['hi']:,.0f}]"


def plot_curves(results, threshold, path, title=None):
    """Saves the accuracy-vs-steps plot of all variants (paper Fig. 2)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        if not r.steps:
            continue
        (line,) = ax.plot(r.steps, r.values, label=r.label, linewidth=1.5)
        if r.steps_to_threshold is not None:
            ax.plot(
                [r.steps_to_threshold],
                [r.values[r.steps.index(r.steps_to_threshold)]],
                marker="o",
                color=line.get_color(),
            )
    if threshold is not None:
        ax.axhline(
            threshold,
            color="gray",
            linestyle="--",
            linewidth=1,
            label=f"Inception max ({fmt_pct(threshold)})",
        )
    ax.set_xlabel("training steps")
    ax.set_ylabel("single-crop validation accuracy")
    ax.set_title(title or "BN-Inception variants (cf. BN paper Fig. 2)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(
    threshold,
    results,
    out_dir,
    paper=None,
    title=None,
    notes=(),
    fixed_thresholds=(),
):
    """Writes `table.md`, `table.csv`, `summary.json` and the plot.

    `fixed_thresholds` adds a second Markdown table (steps to those fixed
    accuracies) and the same numbers to `summary.json`.

    Returns:
        The list of written `pathlib.Path`s.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = table_rows(results, paper)
    md = out_dir / "table.md"
    heading = title and f"{title} (cf. BN paper Fig. 3)"
    text = format_markdown(threshold, results, paper, heading, notes)
    fixed = format_fixed_thresholds(results, fixed_thresholds)
    if fixed:
        text += (
            "\nSteps to fixed accuracies (not in the paper; compares the "
            "variants when the baseline's maximum cannot): the first "
            f"evaluation from which the centred {SMOOTH_WINDOW}-point moving "
            "average stays at or above the accuracy to the end; several "
            "seeds: mean [95% t-interval].\n\n" + fixed
        )
    comparisons = compare_seeds(results, fixed_thresholds)
    table = format_comparisons(results, comparisons)
    if table and any(len(r.seed_curves) > 1 for r in results):
        text += (
            "\nThe paper's Fig. 3 claims over seeds: each seed's max "
            "accuracy, and the smoothed steps above, compared by a Welch "
            "t-test (difference = first minus second variant); holds / not "
            "significant / fails at 5%.\n\n" + table
        )
    md.write_text(text)
    csv_path = out_dir / "table.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    summary = out_dir / "summary.json"
    summary.write_text(
        json.dumps(
            {
                "threshold": threshold,
                "rows": rows,
                "curves": {r.name: [r.steps, r.values] for r in results},
                "fixed_thresholds": list(fixed_thresholds),
                "steps_to_fixed": steps_to_fixed(results, fixed_thresholds),
                "steps_to_fixed_seeds": steps_to_fixed_seeds(
                    results, fixed_thresholds
                ),
                "smooth_window": SMOOTH_WINDOW,
                "max_accuracy_seeds": seed_maxima(results),
                "seed_comparisons": comparisons,
            },
            indent=1,
        )
    )
    png = out_dir / "accuracy_vs_steps.png"
    plot_curves(
        results, threshold, png, title and f"{title} (cf. BN paper Fig. 2)"
    )
    return [md, csv_path, summary, png]
