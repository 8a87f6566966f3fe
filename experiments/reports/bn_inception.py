"""BN-Inception speed-up report (BN paper Fig. 2 and 3): hook and CLI.

Reads, from the finished MLflow child runs of one `bn_inception*`
experiment (several seeds per variant: child runs tagged `seed`), each
variant's validation-accuracy curve, measures the paper's quantities
(`bn_inception_curves`: steps to the baseline's maximum, max accuracy,
speed-up, smoothed steps to fixed accuracies) and writes them beside the
paper's numbers (`bn_inception_output`) to the parent run's artifacts and
to `results_dir` (committed, quoted in the README): `table.md`,
`table.csv`, `summary.json`, `accuracy_vs_steps.png`.

Called by the engine once all child runs have finished (config key
`report:`), or again later from the command line:

    python -m convnet_repro.experiments.reports.bn_inception \
        --parent-run-id <id> \
        [--experiment bn_inception] [--tracking-uri sqlite:///mlruns.db]

Reference:
- Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training
  by Reducing Internal Covariate Shift", ICML 2015, arXiv:1502.03167,
  Sec. 4.2.2, Figure 2 and Figure 3.
"""

import argparse
import json

from convnet_repro.experiments.engine import metric_keys as mk
from convnet_repro.experiments.reports import resolve_dir
from convnet_repro.experiments.reports.bn_inception_curves import VARIANT_LABELS
from convnet_repro.experiments.reports.bn_inception_curves import steps_to_fixed
from convnet_repro.experiments.reports.bn_inception_curves import (
    steps_to_fixed_seeds,
)
from convnet_repro.experiments.reports.bn_inception_curves import summarize
from convnet_repro.experiments.reports.bn_inception_output import fmt_pct
from convnet_repro.experiments.reports.bn_inception_output import table_rows
from convnet_repro.experiments.reports.bn_inception_output import write_outputs


def fetch_histories(
    client, parent_run_id, metric=mk.VAL_TOP1_ACCURACY, status=None
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
    from convnet_repro.experiments.engine.run_queries import child_runs

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
    metric=mk.VAL_TOP1_ACCURACY,
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
            f"maximum ({fmt_pct(thr)}) is within {fmt_pct(chance_margin)} "
            f"of chance ({fmt_pct(chance)}): the baseline has not started "
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

    from convnet_repro.experiments.engine import tracking
    from convnet_repro.experiments.engine.compose import compose

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
