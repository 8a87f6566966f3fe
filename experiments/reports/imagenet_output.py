"""The ImageNet table's files: `table.md`, `table.csv` and `errors.png`.

- `table.md`: rows grouped by family, ours beside the paper's top-1/top-5
  error (with bootstrap intervals), all five rows of AlexNet's Table 2
  (SIFT + FVs as a reference line) and the ordering checks;
- `table.csv`: the same rows, machine readable;
- `errors.png`: our top-1/top-5 error per row, paper values as markers.
"""

import csv
import math
import pathlib

from convnet_repro.experiments.reports.imagenet_rows import PROTOCOL_LABELS
from convnet_repro.experiments.reports.imagenet_rows import TABLE_COLUMNS
from convnet_repro.experiments.reports.imagenet_seeds import format_over_seeds
from convnet_repro.experiments.reports.imagenet_seeds import seeds_table

WEAK_TOP5_NOTE = (
    "† Top-5 of 10 classes is weak (guessing 5 of 10 classes is right "
    "half the time): shown for completeness, no ordering is judged on it."
)
METRIC_LABELS = {"top1_error": "top-1", "top5_error": "top-5"}

# AlexNet Table 2 (Krizhevsky et al. 2012; PAPERS.md 3e): every row, with
# (top-1 val, top-5 val, top-5 test) in percent (None: "-" in the paper),
# our row name and the config that measures it (None: no code, a
# reference line). * = pre-trained on ImageNet Fall 2011, Sec. 6.
ALEXNET_TABLE2 = (
    ("SIFT + FVs", (None, None, 26.2), None, None),
    ("1 CNN", (40.7, 18.2, None), "AlexNet, 1 CNN", "imagenet_alexnet"),
    ("5 CNNs", (38.1, 16.4, 16.4), "AlexNet, 5 CNNs", "imagenet_alexnet_5cnns"),
    (
        "1 CNN*",
        (39.0, 16.6, None),
        "AlexNet, 1 CNN*",
        "imagenet_alexnet_1cnn_pretrained",
    ),
    (
        "7 CNNs*",
        (36.7, 15.4, 15.3),
        "AlexNet, 7 CNNs*",
        "imagenet_alexnet_7cnns_pretrained",
    ),
)


def _fmt(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}"


def alexnet_table2(rows, scale):
    """AlexNet's Table 2, all five rows: the paper's numbers beside ours.

    Ours is the row's 10-crop evaluation at `scale` (the paper's protocol),
    else its newest protocol; rows we have not measured say which config
    measures them. No paper number ever fills an "ours" cell.

    Args:
        rows: the table's `Row`s (one scale).
        scale: `mini` or `full`, named in the "ours" header.

    Returns:
        Markdown lines.
    """
    where = "ILSVRC-2012 val" if scale == "full" else "Imagenette val"
    lines = [
        "",
        "### AlexNet, Table 2 (Krizhevsky et al. 2012), every row",
        "",
        "| Table 2 row | top-1 val (paper) | top-5 val (paper) | top-5 test "
        f"(paper) | top-1 (ours, {scale}) | top-5 (ours, {scale}) | ours "
        "measured by |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, paper, ours_row, config in ALEXNET_TABLE2:
        mine = [r for r in rows if r.family == "AlexNet" and r.row == ours_row]
        mine.sort(key=lambda r: (r.protocol == "ten_crop", r.start_time))
        if config is None:
            how = "reference line (non-CNN baseline, no code)"
            top1 = top5 = None
        elif mine:
            top1, top5 = mine[-1].top1_error, mine[-1].top5_error
            how = (
                f"{PROTOCOL_LABELS.get(mine[-1].protocol, mine[-1].protocol)}"
                f", {mine[-1].num_images} {where} images"
            )
        else:
            top1 = top5 = None
            how = f"not measured at this scale (`experiment={config}`)"
        lines.append(
            f"| {name} | {_fmt(paper[0])} | {_fmt(paper[1])} | "
            f"{_fmt(paper[2])} | {_fmt(top1)} | {_fmt(top5)} | {how} |"
        )
    lines += [
        "",
        "\\* pre-trained on ImageNet Fall 2011 (15M images, 22K classes) "
        "with a sixth conv layer, then fine-tuned (Sec. 6); our full-scale "
        "configs: imagenet21k_alexnet_conv6_pretrain, then the two above.",
    ]
    if scale != "full":
        lines.append(
            "The paper's numbers are ILSVRC-2012 (1000 classes); ours at "
            "mini scale are Imagenette (10 classes): not comparable."
        )
    return lines


def format_markdown(
    rows,
    checks,
    title=None,
    notes=(),
    scale=None,
    intervals=None,
    members=None,
    seeds=None,
):
    """Markdown table (ours beside the paper's), AlexNet's Table 2 with all
    its rows (with `scale`, or when AlexNet rows exist), the ensembles'
    members alone (`members`, see `members_table`), the single models
    beside their seeds (`seeds`, see `imagenet_seeds.seeds_table`) and the
    ordering checks (with their tests over seeds, where there are some).
    `intervals` (`{run_id: {metric: (lo, hi)}}`) adds each row's bootstrap
    interval; a check with a `verdict` (`imagenet_stats.judge`) prints it
    and its paired test; checks marked `weak` (top-5 of 10 classes) are
    listed but not counted. At mini scales the top-5 column is marked
    weak."""
    intervals = intervals or {}
    top5 = "top-5 (ours, weak†)" if scale != "full" else "top-5 (ours)"
    lines = [f"## {title or 'ImageNet results table'}", ""]
    lines += [
        "| family | row | test protocol | models | views | images "
        f"| top-1 (ours) | top-1 (paper) | {top5} | top-5 (paper) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ci = intervals.get(r.run_id, {})
        lines.append(
            f"| {r.family} | {r.row} | "
            f"{PROTOCOL_LABELS.get(r.protocol, r.protocol)} | {r.num_models}"
            f" | {r.num_views} | {r.num_images} | "
            f"{_fmt_ci(r.top1_error, ci, 'top1_error')}"
            f" | {_fmt(r.paper_top1_error)} | "
            f"{_fmt_ci(r.top5_error, ci, 'top5_error')}"
            f" | {_fmt(r.paper_top5_error)} |"
        )
    lines += [
        "",
        "Errors in percent on the validation set. Orderings are judged on "
        "the metric of the paper table they come from (GoogLeNet: top-5).",
    ]
    if scale != "full":
        lines.append(WEAK_TOP5_NOTE)
    lines += list(notes)
    lines += members_table(rows, members or {})
    lines += seeds_table(rows, seeds or {})
    if any(r.family == "AlexNet" for r in rows) or scale is not None:
        lines += alexnet_table2(rows, scale or "mini")
    if checks:
        lines += ["", "### Do the papers' orderings hold here?", ""]
        by_claim = {}
        for c in checks:
            by_claim.setdefault(c["claim"], []).append(c)
        for claim, items in by_claim.items():
            judged = [c for c in items if not c.get("weak")]
            held = sum(c["holds"] for c in judged)
            ties = sum(c.get("tie", False) for c in judged)
            head = f"- **{claim}**: lower error in {held}/{len(judged)} pairs"
            if ties:
                head += f", {ties} tie(s)"
            if len(judged) < len(items):
                head += (
                    f", {len(items) - len(judged)} on weak top-5 not counted"
                )
            verdicts = [c["verdict"] for c in items if "verdict" in c]
            if verdicts:
                head += "; paired tests: " + _counts(verdicts)
            over_seeds = [
                c["over_seeds"]["verdict"] for c in items if "over_seeds" in c
            ]
            if over_seeds:
                head += "; over seeds (Welch): " + _counts(over_seeds)
            lines.append(head)
            for c in items:
                mark = c.get("verdict") or (
                    "holds"
                    if c["holds"]
                    else ("tie" if c.get("tie") else "FAILS")
                )
                test = ""
                if "p_mcnemar" in c:
                    test = (
                        f"; difference {c['difference']:+.2f} "
                        f"[{c['lo']:+.2f}, {c['hi']:+.2f}] pts, exact "
                        f"McNemar p = {c['p_mcnemar']:.2g}"
                    )
                lines.append(
                    f"  - {mark} ({METRIC_LABELS[c['metric']]}): "
                    f"{c['better']} {_fmt(c['better_error'])} vs "
                    f"{c['worse']} {_fmt(c['worse_error'])}{test}"
                    f"{format_over_seeds(c)}"
                )
    return "\n".join(lines) + "\n"


def _counts(verdicts):
    """`"holds 2, not significant 1"`: each verdict and how often."""
    counts = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)}
    return ", ".join(f"{v} {n}" for v, n in counts.items())


def members_table(rows, members):
    """Markdown: each ensemble beside its members alone (top-1 error).

    Args:
        rows: the table's `Row`s.
        members: `{run_id: imagenet_stats.member_summary(...)}` of the
            ensemble rows (rows without an entry are left out).

    Returns:
        Markdown lines (none without any entry).
    """
    found = [r for r in rows if members.get(r.run_id)]
    if not found:
        return []
    lines = [
        "",
        "### Ensembles beside their members alone (top-1 error)",
        "",
        "| row | test protocol | ensemble | members, mean [95% CI] "
        "| members, min-max | members found |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in found:
        m = members[r.run_id]
        mean = _fmt(m["mean"])
        if m["lo"] is not None:
            mean += f" [{m['lo']:.1f}, {m['hi']:.1f}]"
        lines.append(
            f"| {r.row} | {PROTOCOL_LABELS.get(r.protocol, r.protocol)} | "
            f"{_fmt(r.top1_error)} | {mean} | {_fmt(m['min'])}-"
            f"{_fmt(m['max'])} | {m['n']} of {m['of']} |"
        )
    lines += [
        "",
        "Members alone: each member's final `val/top1_error` from its "
        "training run (the engine's single centre-crop validation pass), "
        "so they compare with the centre-crop ensemble row; interval: "
        "Student-t over members (`statistics.seed_interval`).",
    ]
    return lines


def _fmt_ci(value, intervals, metric):
    """`value [lo, hi]` when a bootstrap interval exists, else `value`."""
    if metric not in intervals:
        return _fmt(value)
    lo, hi = intervals[metric]
    return f"{_fmt(value)} [{lo:.1f}, {hi:.1f}]"


def plot_errors(rows, path, title=None):
    """Horizontal bars of our top-1/top-5 error; paper values as markers."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    labels = [
        f"{r.row} ({PROTOCOL_LABELS.get(r.protocol, r.protocol)})" for r in rows
    ]
    y = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
    ax.barh(
        [v - 0.2 for v in y],
        [r.top1_error for r in rows],
        height=0.4,
        label="top-1 (ours)",
    )
    ax.barh(
        [v + 0.2 for v in y],
        [r.top5_error for r in rows],
        height=0.4,
        label="top-5 (ours)",
    )
    for key, dy, marker in (
        ("paper_top1_error", -0.2, "|"),
        ("paper_top5_error", 0.2, "x"),
    ):
        pts = [
            (getattr(r, key), v + dy)
            for r, v in zip(rows, y)
            if getattr(r, key) is not None
        ]
        if pts:
            ax.scatter(
                *zip(*pts),
                marker=marker,
                color="black",
                s=60,
                zorder=3,
                label=key.replace("paper_", "paper ").replace("_error", ""),
            )
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("validation error (%)")
    ax.set_title(title or "ImageNet table")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(
    rows,
    checks,
    out_dir,
    title=None,
    notes=(),
    scale=None,
    intervals=None,
    members=None,
    seeds=None,
):
    """Writes `table.md`, `table.csv` and `errors.png`; returns the paths."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "table.md"
    md.write_text(
        format_markdown(
            rows, checks, title, notes, scale, intervals, members, seeds
        )
    )
    csv_path = out_dir / "table.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: getattr(r, k) for k in TABLE_COLUMNS})
    png = out_dir / "errors.png"
    plot_errors(rows, png, title)
    return [md, csv_path, png]
