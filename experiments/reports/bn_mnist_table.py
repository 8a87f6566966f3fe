"""BN-MNIST report files: the network and claims tables, CSV, JSON, figures.

`format_markdown` and `write_outputs` over the summary that
`experiments.reports.bn_mnist_summary.summarize` builds.
"""

import csv
import json
import pathlib

from convnet_repro.experiments.reports.bn_mnist_figures import plot_figures


def _pct(ci, digits=2):
    if ci is None or ci.get("mean") is None:
        return "n/a"
    if ci.get("lo") is None:
        return f"{100 * ci['mean']:.{digits}f}"
    return (
        f"{100 * ci['mean']:.{digits}f} "
        f"[{100 * ci['lo']:.{digits}f}, {100 * ci['hi']:.{digits}f}]"
    )


def _count(value):
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "all"  # no data.num_train_examples: the whole training set


def _steps_txt(s):
    if not s["reached"]:
        return f"not reached (0/{s['seeds']})"
    if s["reached"] < s["seeds"]:  # a mean of the fast seeds only: biased
        got = ", ".join(f"{x:,}" for x in s["per_seed"] if x is not None)
        return f"{s['reached']}/{s['seeds']} seeds reached ({got})"
    txt = f"{s['mean']:,.0f}"
    if s.get("lo") is not None:
        txt += f" [{max(0, s['lo']):,.0f}, {s['hi']:,.0f}]"
    return txt


def format_markdown(summary, title=None, notes=()):
    """The network table and the claims table as Markdown."""
    lines = [f"### {title}", ""] if title else []
    thr = [f"Steps to {100 * t:g}% (smoothed)" for t in summary["thresholds"]]
    lines += [
        "| Network | Input | Seeds | Steps | Train / test images "
        "| Test acc. %, Alg. 2 [95% CI] | Test acc. %, moving avg. [95% CI] "
        "| Tuning-split acc. % [95% CI] | " + " | ".join(thr) + " | Run ids |",
        "|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(thr) + "---|",
    ]
    for row in summary["rows"]:
        grey = {True: "binary", False: "grey-scale"}.get(
            row["binarize"] in (True, "True"), "?"
        )
        steps = [
            _steps_txt(row["steps_to"][str(t)]) for t in summary["thresholds"]
        ]
        ids = ", ".join(f"`{r[:8]}`" for r in row["run_ids"])
        lines.append(
            f"| {row['label']} | {grey} | {len(row['seeds'])} "
            f"| {row['steps']:,} | {_count(row['train_images'])} / "
            f"{row['test_images']:,} | {_pct(row['test_acc'])} "
            f"| {_pct(row['test_acc_moving'])} | {_pct(row['tuning_acc'])} | "
            + " | ".join(steps)
            + f" | {ids} |"
        )
    if summary["claims"]:
        lines += [
            "",
            "| Claim (paper) | Difference BN - no BN [95% CI] | Test "
            "| Verdict |",
            "|---|---:|---|---|",
        ]
        for c in summary["claims"]:
            if c["verdict"] == "not judged":
                lines.append(
                    f"| {c['claim']} | n/a | {c['test']} | not judged |"
                )
                continue
            scale = 100 if c["metric"] == "accuracy" else 1
            unit = " pts" if c["metric"] == "accuracy" else ""
            fmt = ".2f" if c["metric"] != "steps" else ",.0f"
            diff = (
                f"{scale * c['difference']:{fmt}}{unit} "
                f"[{scale * c['lo']:{fmt}}, {scale * c['hi']:{fmt}}]"
            )
            test = f"{c['test']}, p = {c['p_value']:.2g}"
            if "speed_up" in c:
                test += f"; speed-up {c['speed_up']:.2f}x"
            if "mcnemar_p_per_seed" in c:
                ps = ", ".join(f"{p:.2g}" for p in c["mcnemar_p_per_seed"])
                test += f"; exact McNemar per seed pair: p = {ps}"
            if "range_bn" in c:
                test += (
                    f"; mean: no BN {c['range_no_bn']:.2f}, BN "
                    f"{c['range_bn']:.2f}"
                )
            lines.append(f"| {c['claim']} | {diff} | {test} | {c['verdict']} |")
    lines.append("")
    lines += list(notes)
    return "\n".join(lines).rstrip() + "\n"


CSV_COLUMNS = (
    "variant",
    "label",
    "binarize",
    "seeds",
    "run_ids",
    "steps",
    "train_images",
    "test_images",
    "test_acc",
    "test_acc_moving",
    "tuning_acc",
    "steps_to",
)


def write_outputs(summary, out_dir, title=None, notes=(), extra=None):
    """Writes `table.md`, `table.csv`, `summary.json` and the figures."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "table.md"
    md.write_text(format_markdown(summary, title, notes))
    csv_path = out_dir / "table.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=CSV_COLUMNS, extrasaction="ignore"
        )
        writer.writeheader()
        for row in summary["rows"]:
            writer.writerow(
                {
                    k: json.dumps(row[k])
                    if isinstance(row[k], (dict, list))
                    else row[k]
                    for k in CSV_COLUMNS
                }
            )
    js = out_dir / "summary.json"
    js.write_text(
        json.dumps({**summary, **(extra or {})}, indent=1, default=float)
    )
    return [md, csv_path, js] + plot_figures(summary, out_dir)
