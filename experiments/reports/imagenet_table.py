"""The ImageNet results table: our errors beside the papers' (issue #7).

Reads the evaluation runs that `experiments.evaluate` logged (tag
`kind=evaluation`, `table=imagenet`, `scale=mini|full`), keeps the newest run
per table row, and writes to `results/imagenet_table/<scale>/`:

- `table.md`: rows grouped by family, ours beside the paper's top-1/top-5
  error, plus a check of the papers' orderings at this scale;
- `table.csv`: the same rows, machine readable;
- `errors.png`: our top-1/top-5 error per row, paper values as markers.

Orderings checked (each pair "holds" when the first has the lower error on
the metric of the paper table the claim comes from, `PAPER_METRIC`):

1. ensembles beat single models (same family, same protocol);
2. multi-crop beats one crop (same models, more views);
3. deeper families beat AlexNet (single models, same protocol; on top-5
   when either table reports only top-5, as GoogLeNet's does);
4. pre-training on ImageNet Fall 2011 helps (AlexNet "1 CNN*" < "1 CNN").

`table.md` also lists all five rows of AlexNet's Table 2 (`alexnet_table2`,
SIFT + FVs as a reference line), ours beside the paper's where measured.

Usage:
    # table from the runs already in the store
    python -m experiments.reports.imagenet_table --scale mini
    # train + evaluate every mini experiment first (`make imagenet-table`),
    # optionally shortened to a fraction of the steps
    python -m experiments.reports.imagenet_table --run [--fraction 0.25]

Reference:
- Krizhevsky et al., NIPS 2012, Table 2; Simonyan & Zisserman, ICLR 2015,
  Table 3; Szegedy et al., CVPR 2015, Table 3; He et al., CVPR 2016,
  Table 3.
"""

import argparse
import csv
import dataclasses
import math
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# The mini table (`make imagenet-table`): conf/experiment/<name>.yaml.
MINI_EXPERIMENTS = (
    "imagenette_alexnet_5cnns",
    "imagenette_vgg_a",
    "imagenette_googlenet",
    "imagenette_resnet18",
)
FAMILIES = ("AlexNet", "VGG", "GoogLeNet", "ResNet", "Conv kind")
TABLE_COLUMNS = (
    "family",
    "row",
    "protocol",
    "num_models",
    "num_views",
    "num_images",
    "top1_error",
    "top5_error",
    "paper_top1_error",
    "paper_top5_error",
    "run_id",
)
# The metric of each family's paper table (PAPERS.md): AlexNet Table 2,
# VGG Table 3 and ResNet Table 3 give top-1 and top-5 and lead with top-1
# (ResNet Table 2 is top-1 only); GoogLeNet's Table 3 is top-5 only.
PAPER_METRIC = {
    "AlexNet": "top1_error",
    "VGG": "top1_error",
    "GoogLeNet": "top5_error",
    "ResNet": "top1_error",
}
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
PROTOCOL_LABELS = {
    "center": "centre crop",
    "ten_crop": "10 crops",
    "multi_crop": "multi-crop",
}


@dataclasses.dataclass
class Row:
    """One table row: an evaluation run and the paper's numbers.

    Attributes:
        family: model family (`FAMILIES` order), e.g. `"ResNet"`.
        row: row label, e.g. `"ResNet-50"`.
        protocol: `center`, `ten_crop` or `multi_crop`.
        num_models: ensemble size (1 for a single model).
        num_views: views per image.
        num_images: evaluated validation images.
        top1_error, top5_error: ours, percent.
        paper_top1_error, paper_top5_error: the paper's, percent or None.
        sources: comma-separated source run ids.
        run_id: the evaluation run.
        order: position within the family.
        fraction: the fraction of its experiment's steps the models were
            trained for (tag `fraction`; None for runs from before the tag).
    """

    family: str
    row: str
    protocol: str
    num_models: int
    num_views: int
    num_images: int
    top1_error: float
    top5_error: float
    paper_top1_error: float | None = None
    paper_top5_error: float | None = None
    sources: str = ""
    run_id: str = ""
    order: float = 0.0
    start_time: int = 0
    fraction: float | None = None


def _float_or_none(value):
    if value in (None, "", "None", "null"):
        return None
    return float(value)


def row_from_run(run):
    """Builds a `Row` from an MLflow evaluation run."""
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    return Row(
        family=tags.get("family") or "",
        row=tags.get("row") or run.info.run_name,
        protocol=params.get("protocol", ""),
        num_models=int(params.get("num_models", 1)),
        num_views=int(params.get("num_views", 1)),
        num_images=int(params.get("num_images", 0)),
        top1_error=float(metrics["top1_error"]),
        top5_error=float(metrics["top5_error"]),
        paper_top1_error=_float_or_none(tags.get("paper_top1_error")),
        paper_top5_error=_float_or_none(tags.get("paper_top5_error")),
        sources=params.get("sources", ""),
        run_id=run.info.run_id,
        order=float(tags.get("order") or 0),
        start_time=int(run.info.start_time or 0),
        fraction=_float_or_none(tags.get("fraction")),
    )


def _family_index(family):
    return FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)


def build_table(rows):
    """Keeps the newest run per (family, row, protocol); sorts by family.

    Args:
        rows: iterable of `Row`.

    Returns:
        list of `Row`.

    Raises:
        ValueError: if the kept rows come from different training lengths
            (e.g. a `--fraction 0.25` run newer than the full-length rows
            of other models): one table never mixes them.
    """
    newest = {}
    for r in rows:
        key = (r.family, r.row, r.protocol)
        if key not in newest or r.start_time > newest[key].start_time:
            newest[key] = r
    by_fraction = {}
    for r in newest.values():
        by_fraction.setdefault(r.fraction, []).append(r.row)
    if len(by_fraction) > 1:
        found = "; ".join(
            f"fraction {'unknown' if f is None else f}: {sorted(set(rs))}"
            for f, rs in sorted(by_fraction.items(), key=lambda kv: str(kv))
        )
        raise ValueError(
            "The newest rows come from different training lengths; re-run "
            "the other rows with the same --fraction (or make "
            "imagenet-table for full length) so that one table holds one "
            f"length. Received: {found}"
        )
    return sorted(
        newest.values(),
        key=lambda r: (
            _family_index(r.family),
            r.family,
            r.order,
            r.row,
            r.num_views,
        ),
    )


def paper_metric(*rows):
    """The error metric the papers compare `rows` on.

    A family's own table metric (`PAPER_METRIC`); across families top-5 as
    soon as one table reports only top-5. Rows of other families follow
    their paper numbers: top-5 when they quote only a top-5 error.

    Args:
        *rows: the `Row`s of one comparison.

    Returns:
        `"top1_error"` or `"top5_error"`.
    """
    metrics = set()
    for row in rows:
        if row.family in PAPER_METRIC:
            metrics.add(PAPER_METRIC[row.family])
        elif row.paper_top1_error is None and row.paper_top5_error is not None:
            metrics.add("top5_error")
        else:
            metrics.add("top1_error")
    return "top5_error" if "top5_error" in metrics else "top1_error"


def check_orderings(rows):
    """The papers' orderings, tested on our rows.

    Args:
        rows: list of `Row` (one table).

    Returns:
        list of dicts `{claim, better, worse, holds}`; `better` is the row
        the papers say has the lower error.
    """
    checks = []
    main = [r for r in rows if r.family in FAMILIES[:4]]
    # 1. Ensembles beat single models (same family, same protocol).
    for ens in main:
        if ens.num_models < 2:
            continue
        for single in main:
            if (
                single.family == ens.family
                and single.num_models == 1
                and single.protocol == ens.protocol
            ):
                checks.append(_check("ensemble < single model", ens, single))
    # 2. More views beat fewer views (same source models).
    for many in rows:
        for few in rows:
            if (
                many.sources
                and many.sources == few.sources
                and many.family == few.family
                and many.num_views > few.num_views
            ):
                checks.append(_check("multi-crop < fewer crops", many, few))
    # 3. Deeper families beat AlexNet (single models, same protocol).
    alex = [r for r in main if r.family == "AlexNet" and r.num_models == 1]
    for deep in main:
        if deep.family == "AlexNet" or deep.num_models != 1:
            continue
        for a in alex:
            if a.protocol == deep.protocol:
                checks.append(_check("deeper family < AlexNet", deep, a))
    # 4. Pre-training helps (AlexNet Table 2: 1 CNN* < 1 CNN, 7 CNNs* <
    #    5 CNNs): a "*" row beats the same family's rows without "*" of
    #    as many models or fewer, same protocol.
    for pre in main:
        if not pre.row.endswith("*"):
            continue
        for base in main:
            if (
                base.family == pre.family
                and not base.row.endswith("*")
                and base.protocol == pre.protocol
                and base.num_models <= pre.num_models
            ):
                checks.append(_check("pre-trained* < from scratch", pre, base))
    return checks


def _label(row):
    return f"{row.row} ({PROTOCOL_LABELS.get(row.protocol, row.protocol)})"


def _check(claim, better, worse):
    metric = paper_metric(better, worse)
    ours, theirs = getattr(better, metric), getattr(worse, metric)
    return {
        "claim": claim,
        "metric": metric,
        "better": _label(better),
        "worse": _label(worse),
        "better_error": ours,
        "worse_error": theirs,
        "better_run_id": better.run_id,
        "worse_run_id": worse.run_id,
        "holds": ours < theirs,
        "tie": ours == theirs,
    }


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
    rows, checks, title=None, notes=(), scale=None, intervals=None
):
    """Markdown table (ours beside the paper's), AlexNet's Table 2 with all
    its rows (with `scale`, or when AlexNet rows exist), and the ordering
    checks. `intervals` (`{run_id: {metric: (lo, hi)}}`) adds each row's
    bootstrap interval; a check with a `verdict` (`imagenet_stats.judge`)
    prints it and its paired test."""
    intervals = intervals or {}
    lines = [f"## {title or 'ImageNet results table'}", ""]
    lines += [
        "| family | row | test protocol | models | views | images "
        "| top-1 (ours) | top-1 (paper) | top-5 (ours) | top-5 (paper) |",
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
    lines += list(notes)
    if any(r.family == "AlexNet" for r in rows) or scale is not None:
        lines += alexnet_table2(rows, scale or "mini")
    if checks:
        lines += ["", "### Do the papers' orderings hold here?", ""]
        by_claim = {}
        for c in checks:
            by_claim.setdefault(c["claim"], []).append(c)
        for claim, items in by_claim.items():
            held = sum(c["holds"] for c in items)
            ties = sum(c.get("tie", False) for c in items)
            head = f"- **{claim}**: lower error in {held}/{len(items)} pairs"
            if ties:
                head += f", {ties} tie(s)"
            verdicts = [c["verdict"] for c in items if "verdict" in c]
            if verdicts:
                counts = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)}
                head += "; paired tests: " + ", ".join(
                    f"{v} {n}" for v, n in counts.items()
                )
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
                )
    return "\n".join(lines) + "\n"


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
    rows, checks, out_dir, title=None, notes=(), scale=None, intervals=None
):
    """Writes `table.md`, `table.csv` and `errors.png`; returns the paths."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "table.md"
    md.write_text(format_markdown(rows, checks, title, notes, scale, intervals))
    csv_path = out_dir / "table.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: getattr(r, k) for k in TABLE_COLUMNS})
    png = out_dir / "errors.png"
    plot_errors(rows, png, title)
    return [md, csv_path, png]


def fetch_rows(client, scale="mini", table="imagenet"):
    """Every evaluation run of `table` at `scale`, over all experiments."""
    experiments = client.search_experiments()
    runs = []
    for start in range(0, len(experiments), 50):
        ids = [e.experiment_id for e in experiments[start : start + 50]]
        runs += client.search_runs(
            ids,
            filter_string=(
                "tags.kind = 'evaluation' and "
                f"tags.`table` = '{table}' and tags.scale = '{scale}'"
            ),
            max_results=5000,
        )
    return [row_from_run(r) for r in runs]


def report(
    cfg=None,
    parent_run_id=None,
    scale="mini",
    results_dir="results/imagenet_table",
    title=None,
    notes=(),
    predictions=None,
):
    """Builds the table from the MLflow store and writes the outputs.

    Args:
        cfg: unused (the `report:` hook signature); may be None.
        parent_run_id: if given, the outputs are also logged there.
        scale: `mini` (Imagenette, CPU) or `full` (ImageNet).
        results_dir: folder; outputs go to `<results_dir>/<scale>/`.
        title: heading of the Markdown table.
        notes: extra Markdown lines under the table (e.g. how it was run).
        predictions: `run_id -> (probabilities, labels)` or None (tests);
            default reads each evaluation run's stored predictions.

    Returns:
        dict with `rows` (list of dicts) and `checks`.
    """
    import mlflow

    client = mlflow.MlflowClient()
    rows = build_table(fetch_rows(client, scale))
    if not rows:
        raise ValueError(
            "No evaluation runs found; run `make imagenet-table` (or "
            f"python -m experiments.evaluate) first. Received: scale={scale!r}"
        )
    checks = check_orderings(rows)
    from experiments.reports import imagenet_stats

    correctness = imagenet_stats.Correctness(predictions)
    intervals = {
        r.run_id: imagenet_stats.row_intervals(r, correctness) for r in rows
    }
    for check in checks:
        imagenet_stats.judge(check, correctness)
    out = pathlib.Path(results_dir)
    out = (out if out.is_absolute() else REPO_ROOT / out) / scale
    notes = [
        "",
        f"Scale `{scale}`: "
        + (
            "Imagenette (10 ImageNet classes, 3925 val images) at reduced "
            "resolution with small-input models; the paper columns are "
            "ImageNet-1k numbers, quoted for reference, not comparable."
            if scale == "mini"
            else "ILSVRC-2012 validation set (50k images)."
        ),
        "Intervals: 95% bootstrap over the row's images (2,000 replicates, "
        "seed 0). Verdicts: exact McNemar on per-image correctness and a "
        "paired bootstrap of the error difference, on the paper table's "
        "metric; holds / fails when both are significant at 5% (for / "
        "against the paper), else not significant. Top-5 with <= 10 "
        "classes is weak and never judged.",
        *notes,
    ]
    written = write_outputs(
        rows,
        checks,
        out,
        title or f"ImageNet results table ({scale} scale)",
        notes,
        scale,
        intervals,
    )
    if parent_run_id:
        for path in written:
            client.log_artifact(parent_run_id, str(path), "report")
    return {"rows": [dataclasses.asdict(r) for r in rows], "checks": checks}


def _round_to(value, multiple):
    return max(multiple, int(round(value / multiple)) * multiple)


def shortened_overrides(cfg, fraction, max_images=None):
    """Hydra overrides that shorten one experiment to `fraction` of its steps.

    Steps and the step-schedule boundaries are scaled (steps rounded to a
    multiple of `trainer.steps_per_execution`); evaluation and checkpoints
    happen once, at the end.

    Args:
        cfg: the composed experiment config.
        fraction: float in (0, 1].
        max_images: evaluate the table rows on the first `max_images` val
            images (None keeps the config's setting).

    Returns:
        list of `key=value` strings.
    """
    if not 0 < fraction <= 1:
        raise ValueError(
            f"fraction must be in (0, 1]. Received: fraction={fraction}"
        )
    out = [f"++extras.fraction={fraction}"]  # tagged on the table rows
    if fraction < 1:
        spe = int(cfg.trainer.steps_per_execution)
        steps = _round_to(cfg.trainer.steps * fraction, spe)
        out += [
            f"trainer.steps={steps}",
            f"trainer.eval_every_steps={steps}",
            f"trainer.checkpoint_every_steps={steps}",
        ]
        if "boundaries" in cfg.schedule:  # schedule=step
            bounds = [
                min(steps - 1, max(1, int(round(b * fraction))))
                for b in cfg.schedule.boundaries
            ]
            out.append(f"schedule.boundaries=[{','.join(map(str, bounds))}]")
    if max_images:
        current = cfg.report.get("max_images")
        n = min(max_images, current) if current else max_images
        out.append(f"report.max_images={n}")
    return out


def run_mini_table(
    experiments=MINI_EXPERIMENTS, fraction=1.0, max_images=None, overrides=()
):
    """Trains and evaluates every mini experiment (then call `report`).

    Each experiment goes through `experiments.engine.train.train`, whose
    `report:`
    hook (`experiments.evaluate.evaluate_experiment`) logs the evaluation
    runs; finished runs are skipped on a re-run (the engine's run keys).

    Args:
        experiments: conf/experiment names.
        fraction: train each for this fraction of its steps.
        max_images: evaluate on the first `max_images` val images.
        overrides: extra Hydra overrides for every experiment.

    Returns:
        dict `{experiment: wall seconds}`.
    """
    import time

    from experiments.engine import train as engine
    from experiments.engine.compose import compose

    seconds = {}
    for name in experiments:
        base = [f"experiment={name}", *overrides]
        cfg = compose(base)
        extra = shortened_overrides(cfg, fraction, max_images)
        cfg = compose(base + extra)
        start = time.time()
        engine.train(cfg)
        seconds[name] = time.time() - start
        print(f"[imagenet_table] {name} {extra}: {seconds[name]:.0f} s")
    return seconds


def main(argv=None):
    """CLI: (optionally train and evaluate, then) rebuild the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="mini", choices=("mini", "full"))
    parser.add_argument(
        "--run",
        action="store_true",
        help="train + evaluate the mini experiments first",
    )
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument(
        "--experiments", nargs="+", default=list(MINI_EXPERIMENTS)
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="Hydra override for every experiment (repeatable)",
    )
    parser.add_argument(
        "--tracking-uri", default=None, help="default: the config's tracking"
    )
    parser.add_argument("--results-dir", default="results/imagenet_table")
    parser.add_argument(
        "--note", action="append", default=[], help="Markdown note line"
    )
    args = parser.parse_args(argv)

    from experiments.engine import tracking
    from experiments.engine.compose import compose

    if args.tracking_uri:
        args.override.append(f"tracking.uri={args.tracking_uri}")
    cfg = compose([f"experiment={args.experiments[0]}", *args.override])
    tracking.configure(cfg.tracking, "imagenet_table")
    if args.run:
        run_mini_table(
            args.experiments, args.fraction, args.max_images, args.override
        )
    out = report(
        scale=args.scale, results_dir=args.results_dir, notes=args.note
    )
    held = sum(c["holds"] for c in out["checks"])
    print(
        f"{len(out['rows'])} rows; orderings hold in {held}/"
        f"{len(out['checks'])} pairs -> {args.results_dir}/{args.scale}/"
    )


if __name__ == "__main__":
    main()
