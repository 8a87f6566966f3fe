"""BN paper Fig. 1 on MNIST: accuracy curves, sigmoid-input percentiles, table.

Reads the finished MLflow child runs of one `bn_mnist*` experiment (one run
per variant and seed; variants `baseline` = without BN, `bn` = with BN) and
writes, to the parent run's artifacts (folder `report/`) and to
`results_dir` (committed, quoted in the README):

- `fig1.png`: the paper's three panels side by side, and each alone:
  `fig1a_test_accuracy.png` (test accuracy vs. training steps, with and
  without BN: mean over seeds, band = min..max), `fig1b_sigmoid_input_no_bn.png`
  and `fig1c_sigmoid_input_bn.png` (the {15, 50, 85}th percentiles of the
  input to one sigmoid of the last hidden layer, logged by
  `experiments.probes.PercentileProbe`, for the first seed).
- `table.md`, `table.csv`: per variant, the final test accuracy (mean +/-
  sample std over seeds) with Keras moving-average BN statistics and with
  the population statistics of Alg. 2
  (`layers.recompute_batch_norm_statistics`), and the number of steps the
  BN network needs to reach the baseline's final
  accuracy (on the seed-mean curve, and per seed).
- `summary.json`: the numbers behind the table and the curves.

Called by the engine once all child runs have finished (config key
`report:`), or again later from the command line:

    python -m experiments.reports.bn_mnist --parent-run-id <id> \
        [--experiment bn_mnist] [--tracking-uri sqlite:///mlruns.db]

Reference:
- Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training
  by Reducing Internal Covariate Shift", ICML 2015, arXiv:1502.03167,
  Sec. 4.1 and Figure 1; Alg. 2 (inference with population statistics).
"""

import argparse
import csv
import json
import math
import pathlib

import numpy as np

from experiments.reports import resolve_dir

# Variant (child-run) names in the paper's legend order, with its labels.
VARIANT_LABELS = {"baseline": "Without BN", "bn": "With BN"}
TABLE_COLUMNS = (
    "variant",
    "label",
    "seeds",
    "final_step",
    "acc_moving_mean",
    "acc_moving_std",
    "acc_population_mean",
    "acc_population_std",
    "steps_to_baseline_mean_curve",
    "steps_to_baseline_per_seed_mean",
    "steps_to_baseline_per_seed_std",
    "seeds_reaching_baseline",
)


def first_step_at_least(steps, values, threshold):
    """First step at which `values` reaches `threshold` (inclusive).

    Args:
        steps: sequence of int training steps, ascending.
        values: sequence of floats, one per step.
        threshold: float to reach.

    Returns:
        The int step, or `None` if no value reaches `threshold`.

    Example:

    >>> first_step_at_least([500, 1000, 1500], [0.9, 0.97, 0.96], 0.95)
    1000
    """
    if len(steps) != len(values):
        raise ValueError(
            "`steps` and `values` must have the same length. Received: "
            f"len(steps)={len(steps)}, len(values)={len(values)}"
        )
    # Tolerance so a curve reaches its own final value after a float round
    # trip through the tracking store.
    tol = 1e-9 * max(1.0, abs(threshold))
    for step, value in zip(steps, values):
        if value >= threshold - tol:
            return int(step)
    return None


def _clean(history):
    """`[(step, value), ...]` -> sorted, NaN-free, last value per step."""
    by_step = {}
    for step, value in history:
        if value is not None and not math.isnan(float(value)):
            by_step[int(step)] = float(value)
    return sorted(by_step.items())


def mean_curve(histories):
    """Mean over seeds at the steps that every seed evaluated.

    Args:
        histories: list of `[(step, value), ...]`, one per seed.

    Returns:
        `(steps, mean, lo, hi)`: NumPy arrays (`lo`/`hi`: min/max over seeds).
    """
    cleaned = [dict(_clean(h)) for h in histories if h]
    if not cleaned:
        empty = np.zeros(0)
        return empty.astype(int), empty, empty, empty
    common = sorted(set.intersection(*(set(c) for c in cleaned)))
    table = np.array([[c[s] for s in common] for c in cleaned])
    return (
        np.array(common, dtype=int),
        table.mean(axis=0),
        table.min(axis=0),
        table.max(axis=0),
    )


def _mean_std(values):
    """Mean and sample std (ddof=1; 0.0 for one value); `None`s if empty."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None, None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), std


def summarize(runs, baseline="baseline", treatment="bn"):
    """The Fig. 1 table from per-run results.

    Args:
        runs: list of dicts, one per child run, with keys `variant` (str),
            `seed`, `accuracy` (`[(step, test accuracy), ...]`, moving-average
            BN statistics) and optionally `accuracy_population` (float: final
            test accuracy with Alg. 2 population statistics) and `percentiles`
            (`{q: [(step, value), ...]}`).
        baseline: variant without BN; its mean final accuracy over seeds is
            the threshold.
        treatment: variant with BN whose steps to the threshold are counted.

    Returns:
        dict with `threshold` (float or `None`), `rows` (a list of dicts with
        the keys `TABLE_COLUMNS`, one per variant, paper order first) and
        `curves` (`{variant: {"steps", "mean", "lo", "hi"}}` as lists).

    Raises:
        ValueError: if `runs` is empty.
    """
    if not runs:
        raise ValueError(
            "No runs to summarize; did the child runs log test accuracy? "
            "Received: runs=[]"
        )
    by_variant = {}
    for run in runs:
        by_variant.setdefault(run["variant"], []).append(run)
    order = [v for v in VARIANT_LABELS if v in by_variant]
    order += sorted(v for v in by_variant if v not in VARIANT_LABELS)

    finals, curves = {}, {}
    for name in order:
        group = sorted(by_variant[name], key=lambda r: str(r.get("seed")))
        finals[name] = []
        for run in group:
            pairs = _clean(run["accuracy"])
            finals[name].append(pairs[-1] if pairs else (None, None))
        steps, mean, lo, hi = mean_curve([r["accuracy"] for r in group])
        curves[name] = {
            "steps": steps.tolist(),
            "mean": mean.tolist(),
            "lo": lo.tolist(),
            "hi": hi.tolist(),
        }
        by_variant[name] = group
    threshold = None
    if baseline in finals:
        threshold, _ = _mean_std([v for _, v in finals[baseline]])

    rows = []
    for name in order:
        group = by_variant[name]
        acc_mean, acc_std = _mean_std([v for _, v in finals[name]])
        pop_mean, pop_std = _mean_std(
            [r.get("accuracy_population") for r in group]
        )
        final_steps = [s for s, _ in finals[name] if s is not None]
        row = {
            "variant": name,
            "label": VARIANT_LABELS.get(name, name),
            "seeds": len(group),
            "final_step": max(final_steps) if final_steps else None,
            "acc_moving_mean": acc_mean,
            "acc_moving_std": acc_std,
            "acc_population_mean": pop_mean,
            "acc_population_std": pop_std,
            "steps_to_baseline_mean_curve": None,
            "steps_to_baseline_per_seed_mean": None,
            "steps_to_baseline_per_seed_std": None,
            "seeds_reaching_baseline": None,
        }
        if threshold is not None and name in (treatment, baseline):
            curve = curves[name]
            row["steps_to_baseline_mean_curve"] = first_step_at_least(
                curve["steps"], curve["mean"], threshold
            )
            per_seed = []
            for run in group:
                pairs = _clean(run["accuracy"])
                per_seed.append(
                    first_step_at_least(
                        [s for s, _ in pairs], [v for _, v in pairs], threshold
                    )
                )
            reached = [s for s in per_seed if s is not None]
            mean, std = _mean_std(reached)
            row["steps_to_baseline_per_seed_mean"] = mean
            row["steps_to_baseline_per_seed_std"] = std
            row["seeds_reaching_baseline"] = len(reached)
        rows.append(row)
    return {"threshold": threshold, "rows": rows, "curves": curves}


def _fmt_acc(mean, std):
    if mean is None:
        return "n/a"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _fmt_steps(value):
    return "not reached" if value is None else f"{int(round(value)):,}"


def format_markdown(summary, title=None, notes=()):
    """Renders the table (one row per variant) as Markdown.

    Args:
        summary: the output of `summarize`.
        title: optional heading line.
        notes: extra lines printed under the table.

    Returns:
        A Markdown string.
    """
    thr = summary["threshold"]
    thr_txt = "n/a" if thr is None else f"{100 * thr:.2f}%"
    lines = [f"### {title}", ""] if title else []
    lines += [
        "| Network | Seeds | Final test acc. %, moving averages "
        "| Final test acc. %, population stats (Alg. 2) "
        f"| Steps to baseline final acc. ({thr_txt}): mean curve "
        "| Per seed (mean ± std, reached/seeds) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in summary["rows"]:
        per_seed = "n/a"
        if row["seeds_reaching_baseline"] is not None:
            reached = row["seeds_reaching_baseline"]
            per_seed = f"{reached}/{row['seeds']} reached"
            if reached:
                per_seed = (
                    f"{_fmt_steps(row['steps_to_baseline_per_seed_mean'])} ± "
                    f"{_fmt_steps(row['steps_to_baseline_per_seed_std'])} "
                    f"({reached}/{row['seeds']})"
                )
        mean_curve_txt = (
            "n/a"
            if row["seeds_reaching_baseline"] is None
            else _fmt_steps(row["steps_to_baseline_mean_curve"])
        )
        moving = _fmt_acc(row["acc_moving_mean"], row["acc_moving_std"])
        population = _fmt_acc(
            row["acc_population_mean"], row["acc_population_std"]
        )
        lines.append(
            f"| {row['label']} | {row['seeds']} | {moving} | {population} "
            f"| {mean_curve_txt} | {per_seed} |"
        )
    lines.append("")
    lines += list(notes)
    return "\n".join(lines).rstrip() + "\n"


def _percentile_series(runs, variant):
    """`(seed, {q: (steps, values)})` of the first seed of `variant`."""
    group = [
        r for r in runs if r["variant"] == variant and r.get("percentiles")
    ]
    if not group:
        return None, {}
    run = sorted(group, key=lambda r: str(r.get("seed")))[0]
    series = {}
    for q in sorted(run["percentiles"], key=float):
        pairs = _clean(run["percentiles"][q])
        series[q] = ([s for s, _ in pairs], [v for _, v in pairs])
    return run.get("seed"), series


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
    finals = [r["acc_moving_mean"] for r in summary["rows"]]
    if finals and all(f is not None and f > 0.85 for f in finals):
        ax.set_ylim(0.7, 1.0)  # the paper's axis
    ax.set_xlabel("training steps")
    ax.set_ylabel("test accuracy")
    ax.set_title("(a) test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def _plot_percentiles(ax, seed, series, title):
    styles = [":", "-", "--"]  # 15th dotted, 50th solid, 85th dashed
    for i, (q, (steps, values)) in enumerate(series.items()):
        ax.plot(
            steps,
            values,
            styles[i % 3] if len(series) == 3 else "-",
            color="C0",
            lw=1.2,
            label=f"{float(q):g}th percentile",
        )
    ax.set_xlabel("training steps")
    ax.set_ylabel("input to the sigmoid")
    suffix = "" if seed is None else f" (seed {seed})"
    ax.set_title(title + suffix)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)


def plot_figures(summary, runs, out_dir, baseline="baseline", treatment="bn"):
    """Saves `fig1.png` (three panels) and one PNG per panel.

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
    data = [(*_percentile_series(runs, v), t, f) for v, t, f in panels]
    values = [
        x for _, series, _, _ in data for _, ys in series.values() for x in ys
    ]
    ylim = None
    if values:  # shared y axis so (b) and (c) compare at a glance
        lo, hi = min(values), max(values)
        pad = 0.05 * (hi - lo or 1.0)
        ylim = (lo - pad, hi + pad)

    out_dir = pathlib.Path(out_dir)
    written = []
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    _plot_accuracy(axes[0], summary)
    for ax, (seed, series, title, _) in zip(axes[1:], data):
        _plot_percentiles(ax, seed, series, title)
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
    for seed, series, title, filename in data:
        fig, ax = plt.subplots(figsize=(5, 4))
        _plot_percentiles(ax, seed, series, title)
        if ylim:
            ax.set_ylim(*ylim)
        fig.tight_layout()
        written.append(out_dir / filename)
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def write_outputs(summary, runs, out_dir, title=None, notes=(), extra=None):
    """Writes `table.md`, `table.csv`, `summary.json` and the figures.

    Args:
        summary: the output of `summarize`.
        runs: the per-run dicts given to `summarize` (for the percentiles).
        out_dir: destination folder (created).
        title: optional table heading.
        notes: lines under the Markdown table.
        extra: optional dict merged into `summary.json` (e.g. wall time).

    Returns:
        The list of written `pathlib.Path`s.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "table.md"
    md.write_text(format_markdown(summary, title, notes))
    csv_path = out_dir / "table.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(summary["rows"])
    js = out_dir / "summary.json"
    percentiles = {
        f"{r['variant']}/seed{r.get('seed')}": {
            str(q): _clean(h) for q, h in (r.get("percentiles") or {}).items()
        }
        for r in runs
    }
    js.write_text(
        json.dumps(
            {**summary, **(extra or {}), "percentiles": percentiles},
            indent=1,
        )
    )
    return [md, csv_path, js] + plot_figures(summary, runs, out_dir)


def fetch_runs(
    client,
    parent_run_id,
    metric="val_accuracy",
    population_metric="val_accuracy_population",
    percentile_keys=(),
):
    """Reads every finished run below `parent_run_id` that logged `metric`.

    A run's variant is its `variant` tag (or param), else its parent's name
    if that parent is itself below `parent_run_id`, else its own run name;
    its seed is its `seed` tag or param.

    Args:
        client: an `mlflow.MlflowClient`.
        parent_run_id: str, the parent run of the experiment.
        metric: the test-accuracy key logged during training.
        population_metric: key of the final test accuracy with Alg. 2
            population statistics (absent for runs without BN is fine).
        percentile_keys: dict `{q: metric key}` of the probe's percentiles.

    Returns:
        A list of run dicts for `summarize`.

    Raises:
        ValueError: if no run below the parent logged `metric`.
    """
    from experiments.engine.run_queries import descendant_runs

    runs = descendant_runs(client, parent_run_id)
    names = {r.info.run_id: r.info.run_name for r in runs}
    out = []
    for run in runs:
        if metric not in run.data.metrics:
            continue
        tags, params = run.data.tags, run.data.params
        up = tags.get("mlflow.parentRunId")
        variant = (
            tags.get("variant")
            or params.get("variant")
            or (names.get(up) if up != parent_run_id else None)
            or run.info.run_name
        )
        history = client.get_metric_history(run.info.run_id, metric)
        item = {
            "variant": variant,
            "seed": tags.get("seed", params.get("seed")),
            "run_id": run.info.run_id,
            "start_time": run.info.start_time,
            "end_time": run.info.end_time,
            "accuracy": [(m.step, m.value) for m in history],
            "accuracy_population": run.data.metrics.get(population_metric),
            "percentiles": {},
        }
        for q, key in dict(percentile_keys).items():
            hist = client.get_metric_history(run.info.run_id, key)
            if hist:
                item["percentiles"][q] = [(m.step, m.value) for m in hist]
        out.append(item)
    if not out:
        raise ValueError(
            f"No run below the parent logged {metric!r}; check the metric "
            f"name (report.metric). Received: parent_run_id={parent_run_id!r}"
        )
    return out


def report(
    cfg,
    parent_run_id,
    metric="val_accuracy",
    population_metric="val_accuracy_population",
    probe_prefix="sigmoid_in",
    probe_unit=0,
    percentiles=(15, 50, 85),
    baseline="baseline",
    treatment="bn",
    results_dir="results/bn_mnist",
    title=None,
):
    """Writes Fig. 1 (a, b, c) and the table for one finished experiment.

    Args:
        cfg: the experiment's config (a `DictConfig` or dict, may be `None`);
            `experiment_name` (title) and `paper.note` are read.
        parent_run_id: str, MLflow id of the parent run. The tracking URI
            must already be set (the engine does so).
        metric: test-accuracy key logged every evaluation (moving-average BN
            statistics at inference).
        population_metric: final test accuracy with Alg. 2 statistics.
        probe_prefix, probe_unit, percentiles: which `PercentileProbe`
            metrics to plot (`experiments.probes.metric_key`).
        baseline: the variant without BN (the threshold).
        treatment: the variant with BN.
        results_dir: folder for the committed copies (relative paths are
            relative to the repository root).
        title: optional table heading.

    Returns:
        The `summarize` dict, plus `wall_time_s` (first child start to last
        child end) and `written` (paths).
    """
    import mlflow
    from omegaconf import DictConfig
    from omegaconf import OmegaConf

    from experiments.probes import metric_key

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = cfg or {}
    client = mlflow.MlflowClient()
    keys = {q: metric_key(probe_prefix, probe_unit, q) for q in percentiles}
    runs = fetch_runs(client, parent_run_id, metric, population_metric, keys)
    summary = summarize(runs, baseline, treatment)
    starts = [r["start_time"] for r in runs if r["start_time"]]
    ends = [r["end_time"] for r in runs if r["end_time"]]
    wall = (max(ends) - min(starts)) / 1000 if starts and ends else None
    notes = [
        f"Test accuracy = `{metric}` on the 10,000 MNIST test images, child "
        f"runs of MLflow run `{parent_run_id}`; mean ± sample std over "
        "seeds. Moving averages: Keras BN moving mean/variance; population "
        "stats: Alg. 2 (`layers.recompute_batch_norm_statistics`, "
        f"`{population_metric}`); both equal for the network without BN.",
        "Steps to baseline: first evaluated step at which the accuracy "
        "(seed-mean curve, or each seed's curve) reaches the mean final "
        "accuracy of the network without BN (resolution = the evaluation "
        "interval); in the baseline's row, when the baseline itself first "
        "got there.",
    ]
    paper = cfg.get("paper") or {}
    if paper.get("note"):
        notes.append(f"Paper: {paper['note']}")
    if wall is not None:
        notes.append(
            f"Wall time of the {len(runs)} runs (first start to last end): "
            f"{wall:.0f} s."
        )
    if cfg.get("experiment_name"):
        title = title or f"{cfg['experiment_name']} (cf. BN paper Fig. 1)"
    written = write_outputs(
        summary,
        runs,
        resolve_dir(results_dir),
        title,
        notes,
        extra={"wall_time_s": wall, "parent_run_id": parent_run_id},
    )
    for path in written:
        client.log_artifact(parent_run_id, str(path), "report")
    return {
        **summary,
        "wall_time_s": wall,
        "written": [str(p) for p in written],
    }


def main(argv=None):
    """CLI: rebuild the report of a finished parent run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent-run-id", required=True)
    parser.add_argument("--experiment", default="bn_mnist")
    parser.add_argument(
        "--tracking-uri", default=None, help="default: the config's tracking"
    )
    parser.add_argument("--results-dir", default=None)
    args = parser.parse_args(argv)

    from omegaconf import OmegaConf

    from experiments.engine import tracking
    from experiments.engine.compose import compose

    cfg = compose([f"experiment={args.experiment}"])
    tracking.configure_cli(cfg.tracking, cfg.experiment_name, args.tracking_uri)
    kwargs = OmegaConf.to_container(cfg.report, resolve=True)
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("_")}
    if args.results_dir:
        kwargs["results_dir"] = args.results_dir
    out = report(cfg, args.parent_run_id, **kwargs)
    out.pop("curves")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
