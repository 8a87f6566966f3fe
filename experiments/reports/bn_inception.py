"""BN-Inception speed-up table and accuracy curves (BN paper Fig. 2 and 3).

Builds, from the finished MLflow child runs of one `bn_inception*`
experiment, the paper's two quantities for every variant, beside the paper's
numbers:

- **steps to threshold**: the first evaluated training step at which the
  variant's single-crop validation accuracy reaches the *maximum* accuracy of
  the baseline variant (`inception`). This is the paper's "steps to 72.2%":
  72.2% is Inception's maximum (Fig. 3 caption). Accuracy is only known at
  evaluation steps, so the resolution is `trainer.eval_every_steps` (no
  interpolation between evaluations).
- **max accuracy**: the maximum over all evaluations, with its step.
- **steps to fixed accuracies** (`fixed_thresholds`, not in the paper): the
  first evaluation from which the centred 3-point moving average of the
  curve stays at or above X to the end (`statistics.steps_to_threshold`),
  so a single noisy evaluation, or a crossing that falls back, does not
  count; with several seeds per variant, the mean over seeds with a 95%
  t-interval. This is the robust comparison: the paper-style column above
  is a first crossing of single evaluations of one (seed-mean) curve.

Several seeds per variant (child runs tagged `seed`) are averaged into one
curve (at the steps every seed evaluated) for the paper-style columns.

plus the speed-up over the baseline (baseline steps / variant steps) and the
accuracy-vs-steps plot of all variants (Fig. 2). Outputs go to the parent
run's artifacts and to `results_dir` (committed, quoted in the README):
`table.md`, `table.csv`, `summary.json`, `accuracy_vs_steps.png`.

Called by the engine once all child runs have finished (config key
`report:`), or again later from the command line:

    python -m experiments.reports.bn_inception --parent-run-id <id> \
        [--experiment bn_inception] [--tracking-uri sqlite:///mlruns.db]

Reference:
- Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training
  by Reducing Internal Covariate Shift", ICML 2015, arXiv:1502.03167,
  Sec. 4.2.2, Figure 2 and Figure 3.
"""

import argparse
import csv
import dataclasses
import json
import math
import pathlib

from experiments.reports import resolve_dir
from experiments.reports import statistics as st

SMOOTH_WINDOW = 3  # evaluations in the centred moving average

# Child-run (variant) names in the paper's row order, with the paper's labels.
VARIANT_LABELS = {
    "inception": "Inception",
    "bn_baseline": "BN-Baseline",
    "bn_x5": "BN-x5",
    "bn_x30": "BN-x30",
    "bn_x5_sigmoid": "BN-x5-Sigmoid",
    "inception_sigmoid": "Inception-Sigmoid",
}
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


@dataclasses.dataclass
class VariantResult:
    """The paper's quantities for one variant, measured from its curve.

    Attributes:
        name: variant (child run) name, e.g. `"bn_x5"`.
        steps: evaluated training steps, ascending.
        values: validation accuracy at each of `steps`.
        max_accuracy: `max(values)`, or `None` without evaluations.
        step_at_max: first step at which `max_accuracy` occurs.
        steps_to_threshold: first step with accuracy >= threshold, or `None`
            if never reached.
        speedup: baseline's `steps_to_threshold` / this variant's, or `None`.
        seed_curves: `{seed: (steps, values)}`, one entry per seed run.
    """

    name: str
    steps: list
    values: list
    max_accuracy: float | None = None
    step_at_max: int | None = None
    steps_to_threshold: int | None = None
    speedup: float | None = None
    seed_curves: dict = dataclasses.field(default_factory=dict)

    @property
    def label(self):
        return VARIANT_LABELS.get(self.name, self.name)


def steps_to_threshold(steps, values, threshold):
    """First step at which `values` reaches `threshold`.

    Args:
        steps: sequence of int training steps, ascending.
        values: sequence of float accuracies, one per step.
        threshold: float accuracy to reach (inclusive).

    Returns:
        The int step, or `None` if no value reaches `threshold`.

    Example:

    >>> steps_to_threshold([100, 200, 300], [0.2, 0.5, 0.4], 0.45)
    200
    """
    if len(steps) != len(values):
        raise ValueError(
            "`steps` and `values` must have the same length. Received: "
            f"len(steps)={len(steps)}, len(values)={len(values)}"
        )
    for step, value in zip(steps, values):
        # A relative tolerance so that the baseline reaches its own maximum
        # even after a float round trip through the tracking store.
        if value >= threshold - 1e-9 * max(1.0, abs(threshold)):
            return int(step)
    return None


def summarize(histories, baseline="inception", threshold=None, strict=True):
    """Computes the paper's table from accuracy-vs-steps histories.

    Args:
        histories: dict `{variant: [(step, accuracy), ...]}`, or
            `{variant: {seed: [(step, accuracy), ...]}}` for several seeds
            (averaged at the steps every seed evaluated); the order of the
            pairs does not matter. NaN accuracies are ignored.
        baseline: the variant whose maximum accuracy is the threshold and
            whose steps are the speed-up reference.
        threshold: float; overrides the baseline's maximum (e.g. `0.722` to
            use the paper's absolute number). `None` uses the baseline's max.
        strict: bool; if False, a missing baseline gives a `None` threshold
            (no steps, no speed-ups) instead of an error.

    Returns:
        `(threshold, results)`: the float threshold (or `None` if it cannot be
        defined) and a list of `VariantResult` in the paper's row order, then
        any other variants alphabetically.

    Raises:
        ValueError: if `threshold` is None and `baseline` is not in
            `histories`.
    """
    if threshold is None and baseline not in histories and strict:
        raise ValueError(
            f"The baseline variant {baseline!r} has no runs, so the threshold "
            "(its maximum accuracy) is undefined; pass `threshold=` or run "
            f"the baseline. Received: variants={sorted(histories)}"
        )
    order = [n for n in VARIANT_LABELS if n in histories]
    order += sorted(n for n in histories if n not in VARIANT_LABELS)
    results = {}
    for name in order:
        result = _variant_result(name, histories[name])
        pairs = list(zip(result.steps, result.values))
        if pairs:
            result.max_accuracy = max(result.values)
            result.step_at_max = result.steps[
                result.values.index(result.max_accuracy)
            ]
        results[name] = result
    if threshold is None and baseline in results:
        threshold = results[baseline].max_accuracy
    if threshold is not None:
        for result in results.values():
            result.steps_to_threshold = steps_to_threshold(
                result.steps, result.values, threshold
            )
        ref = results.get(baseline)
        ref_steps = ref.steps_to_threshold if ref else None
        for result in results.values():
            if ref_steps and result.steps_to_threshold:
                result.speedup = ref_steps / result.steps_to_threshold
    return threshold, list(results.values())


def _variant_result(name, history):
    """A `VariantResult` with its seed curves and their mean curve."""
    seeds = history if isinstance(history, dict) else {None: history}
    curves = {}
    for seed, pairs in seeds.items():
        clean = dict(
            sorted((int(s), float(v)) for s, v in pairs if not math.isnan(v))
        )
        curves[seed] = (list(clean), list(clean.values()))
    common = sorted(set.intersection(*(set(c[0]) for c in curves.values())))
    values = [
        sum(dict(zip(*c))[s] for c in curves.values()) / len(curves)
        for s in common
    ]
    return VariantResult(name, common, values, seed_curves=curves)


def _paper_entry(paper, name):
    """The paper's reference numbers for `name` from `cfg.paper.variants`."""
    variants = (paper or {}).get("variants") or {}
    return variants.get(name) or {}


def _fmt_paper_steps(value):
    if value is None:
        return "n/a"
    return f"{value / 1e6:.1f}·10^6"


def _fmt_pct(value):
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
        f"| Model | Paper: steps to {_fmt_pct(paper_thr)} | Paper: max acc. "
        f"| Ours: steps to {_fmt_pct(threshold)} | Ours: speed-up "
        "| Ours: max acc. (at step) | Ours: steps run |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ref = _paper_entry(paper, r.name)
        paper_acc = _fmt_pct(ref.get("max_accuracy"))
        if ref.get("note"):
            paper_acc = f"{paper_acc} ({ref['note']})"
        speedup = "n/a" if r.speedup is None else f"{r.speedup:.1f}x"
        ours_acc = _fmt_pct(r.max_accuracy)
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


def steps_to_fixed_seeds(results, thresholds, window=SMOOTH_WINDOW):
    """Per seed, the smoothed steps to each fixed accuracy, with intervals.

    Returns:
        dict `{variant: [dict per threshold]}`: `per_seed` (step or None
        per seed), `reached`, `seeds`, and `mean`, `lo`, `hi` of
        `statistics.seed_interval` over the seeds (`mean` None unless every
        seed reached it; `lo`/`hi` None for one seed).
    """
    out = {}
    for r in results:
        out[r.name] = []
        for t in thresholds:
            per_seed = [
                st.steps_to_threshold(s, v, t, window) if s else None
                for s, v in r.seed_curves.values()
            ]
            reached = [x for x in per_seed if x is not None]
            cell = {"per_seed": per_seed, "reached": len(reached)}
            cell["seeds"] = len(per_seed)
            if per_seed and len(reached) == len(per_seed):
                cell.update(st.seed_interval(reached))
            else:
                cell.update(mean=None, lo=None, hi=None)
            out[r.name].append(cell)
    return out


def steps_to_fixed(results, thresholds, window=SMOOTH_WINDOW):
    """Steps from which each variant's smoothed curve stays >= each accuracy.

    Returns:
        dict `{variant: [step (seed mean for several seeds) or None per
        threshold]}`; None unless every seed stays above.
    """
    return {
        name: [cell["mean"] for cell in cells]
        for name, cells in steps_to_fixed_seeds(
            results, thresholds, window
        ).items()
    }


def format_fixed_thresholds(results, thresholds):
    """Markdown table of the steps to fixed accuracies (not in the paper).

    Compares the variants with each other when the baseline's maximum is
    too low to separate them (e.g. a shortened run).
    """
    if not thresholds:
        return ""
    header = " | ".join(f"steps to {_fmt_pct(t)}" for t in thresholds)
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
            label=f"Inception max ({_fmt_pct(threshold)})",
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
            },
            indent=1,
        )
    )
    png = out_dir / "accuracy_vs_steps.png"
    plot_curves(
        results, threshold, png, title and f"{title} (cf. BN paper Fig. 2)"
    )
    return [md, csv_path, summary, png]


def fetch_histories(
    client, parent_run_id, metric="val/top1_accuracy", status=None
):
    """Reads `metric`'s history of every child run of `parent_run_id`.

    A child's variant name is its `variant` tag if set, else its run name.

    Args:
        client: an `mlflow.MlflowClient`.
        parent_run_id: str, the parent run of the variants.
        metric: the logged validation-accuracy key.
        status: optional dict, filled with `{variant: run status}` (the
            status with the engine's `failure_reason` tag when set).

    Returns:
        dict `{variant: [(step, value), ...]}`, or `{variant: {seed:
        [(step, value), ...]}}` for a variant with several seed runs.

    Raises:
        ValueError: if the parent run has no child runs.
    """
    from experiments.engine.run_queries import child_runs

    children = child_runs(client, parent_run_id)
    if not children:
        raise ValueError(
            "The parent run has no child runs; was it started with "
            f"`variants:`? Received: parent_run_id={parent_run_id!r}"
        )
    histories, seeded = {}, {}
    for run in children:
        name = run.data.tags.get("variant") or run.info.run_name
        history = client.get_metric_history(run.info.run_id, metric)
        pairs = [(m.step, m.value) for m in history]
        seed = run.data.tags.get("seed")
        seeded.setdefault(name, {})[seed] = pairs
        histories[name] = pairs
        if status is not None:
            reason = run.data.tags.get("failure_reason")
            state = run.info.status + (f": {reason}" if reason else "")
            if status.get(name, "FINISHED") == "FINISHED":
                status[name] = state  # a variant shows its worst seed
    for name, seeds in seeded.items():
        if len(seeds) > 1:  # several seeds: keep them all
            histories[name] = seeds
    return histories


def _cut(history, max_step):
    """Drops the evaluations after `max_step` (from each seed's curve)."""
    if isinstance(history, dict):
        return {seed: _cut(h, max_step) for seed, h in history.items()}
    return [(step, v) for step, v in history if step <= max_step]


def report(
    cfg,
    parent_run_id,
    metric="val/top1_accuracy",
    baseline="inception",
    threshold=None,
    results_dir="results/bn_inception",
    title=None,
    fixed_thresholds=(),
    chance=None,
    chance_margin=0.05,
    max_step=None,
):
    """Writes the speed-up table and Fig. 2 for one finished experiment.

    Args:
        cfg: the experiment's config (a `DictConfig` or dict); its `paper:`
            entry gives the reference column. May be `None`.
        parent_run_id: str, MLflow id of the parent of the variant runs, or
            a list of such ids whose children are merged (e.g. variants
            split over two commands; a variant found under several parents
            is taken from the first). The tracking URI must already be set
            (the engine does so).
        metric: the validation-accuracy metric logged by the engine.
        baseline: the variant whose maximum accuracy is the threshold.
        threshold: float to use instead of the baseline's maximum.
        results_dir: folder for the committed copies (relative paths are
            relative to the repository root).
        title: optional name in the table/plot headings (defaults to the
            experiment name).
        fixed_thresholds: accuracies for an extra "steps to X" table.
        chance: chance accuracy (1 / classes); with it the table warns when
            the threshold is within `chance_margin` of chance (the baseline
            has not started learning, e.g. in a shortened run).
        chance_margin: float, absolute accuracy margin for that warning.
        max_step: int; if set, evaluations after this step are ignored, to
            compare runs of different lengths at a common horizon.

    Returns:
        dict with `threshold`, `rows` (see `table_rows`) and
        `steps_to_fixed`.
    """
    import mlflow
    from omegaconf import DictConfig
    from omegaconf import OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = cfg or {}
    paper = cfg.get("paper") or {}
    client = mlflow.MlflowClient()
    parents = (
        [parent_run_id] if isinstance(parent_run_id, str) else parent_run_id
    )
    status, histories, source = {}, {}, {}
    for parent in parents:
        found_status = {}
        found = fetch_histories(client, parent, metric, found_status)
        for name in found:
            if name not in histories:  # the first parent listed wins
                histories[name] = found[name]
                status[name] = found_status[name]
                source[name] = parent
    if len(parents) > 1:
        notes_source = "Runs taken from: " + "; ".join(
            f"{name} `{parent}`" for name, parent in source.items()
        )
    if max_step is not None:
        histories = {name: _cut(h, max_step) for name, h in histories.items()}
    thr, results = summarize(histories, baseline, threshold, strict=False)
    notes = [
        f"Metric `{metric}` from the child runs of MLflow run(s) "
        f"{', '.join(f'`{p}`' for p in parents)}. Steps to threshold: "
        "first evaluation with "
        f"accuracy >= the {VARIANT_LABELS.get(baseline, baseline)} maximum; "
        "speed-up = baseline steps / variant steps. This is a first "
        "crossing by single evaluations (of the seed-mean curve), so noisy; "
        "the smoothed steps to fixed accuracies below are the robust one.",
    ]
    evaluated = [r for r in results if r.steps]
    if evaluated:
        last = max(r.steps[-1] for r in evaluated)
        gaps = [b - a for r in evaluated for a, b in zip(r.steps, r.steps[1:])]
        every = f", every {min(gaps):,} steps" if gaps else ""
        cut = "" if max_step is None else f" (curves cut at {max_step:,})"
        notes.append(f"Evaluations up to step {last:,}{every}{cut}.")
    if len(parents) > 1:
        notes.append(notes_source + ".")
    if chance is not None and thr is not None and thr < chance + chance_margin:
        notes.insert(
            0,
            f"**Warning:** the {VARIANT_LABELS.get(baseline, baseline)} "
            f"maximum ({_fmt_pct(thr)}) is within {_fmt_pct(chance_margin)} "
            f"of chance ({_fmt_pct(chance)}): the baseline has not started "
            "learning, so its steps and the speed-ups only say when each "
            "variant left chance.",
        )
    if threshold is None and baseline not in histories:
        notes.insert(
            0,
            f"**No {baseline!r} run** under these parents, so no threshold: "
            "rebuild with the CLI, passing every parent (--parent-run-id).",
        )
    last_eval = {r.name: r.steps[-1] if r.steps else 0 for r in results}
    unfinished = [
        f"{n} ({s}; last evaluation at step {last_eval.get(n, 0):,})"
        for n, s in status.items()
        if s != "FINISHED"
    ]
    if unfinished:
        notes.append("Runs not finished: " + "; ".join(unfinished) + ".")
    if paper.get("source"):
        notes.append(f"Paper column: {paper['source']}.")
    title = title or cfg.get("experiment_name")
    fixed_thresholds = [float(t) for t in fixed_thresholds or ()]
    written = write_outputs(
        thr,
        results,
        resolve_dir(results_dir),
        paper,
        title,
        notes,
        fixed_thresholds,
    )
    for parent in parents:
        for path in written:
            client.log_artifact(parent, str(path), "report")
    return {
        "threshold": thr,
        "rows": table_rows(results, paper),
        "steps_to_fixed": steps_to_fixed(results, fixed_thresholds),
        "steps_to_fixed_seeds": steps_to_fixed_seeds(results, fixed_thresholds),
    }


def main(argv=None):
    """CLI: rebuild the report of finished parent run(s)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parent-run-id",
        required=True,
        action="append",
        help="repeat to merge the variants of several parent runs",
    )
    parser.add_argument("--experiment", default="bn_inception")
    parser.add_argument(
        "--tracking-uri", default=None, help="default: the config's tracking"
    )
    parser.add_argument("--results-dir", default=None)
    parser.add_argument(
        "--max-step", type=int, default=None, help="cut curves at this step"
    )
    args = parser.parse_args(argv)

    from omegaconf import OmegaConf

    from experiments.engine import tracking
    from experiments.engine.compose import compose

    cfg = compose([f"experiment={args.experiment}"])
    tracking.configure_cli(cfg.tracking, cfg.experiment_name, args.tracking_uri)
    kwargs = OmegaConf.to_container(cfg.report, resolve=True)
    kwargs.pop("_target_", None)
    if args.results_dir:
        kwargs["results_dir"] = args.results_dir
    if args.max_step is not None:
        kwargs["max_step"] = args.max_step
    parents = args.parent_run_id
    out = report(cfg, parents[0] if len(parents) == 1 else parents, **kwargs)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
