"""Single models over seeds, for the ImageNet table (issue #14).

A single-model row is scored with the paper's test protocols on one trained
model (its `members: 1`, the experiment's first seed). When the experiment
trained several seeds (the long tier: 3, AlexNet 5), the others say how far
that one model is from the recipe's mean. This module reads every seed's
final top-1 error back from MLflow (`seed_errors`), adds a Welch test over
seeds to the "deeper family < AlexNet" checks (`judge_over_seeds`) and
writes the seeds table (`seeds_table`).

A seed's error is its training run's final `val/top1_error`: the engine's
validation pass at the end of training (one centre crop, all validation
images; in the long tier with the best tuning-split weights restored), so
the seed-level test compares recipes, the per-image McNemar test of
`imagenet_stats.judge` compares the two scored models.
"""

from convnet_repro.experiments.engine import metric_keys as mk
from convnet_repro.experiments.engine import run_queries
from convnet_repro.experiments.reports import paired_tests as pt
from convnet_repro.experiments.reports.imagenet_rows import PROTOCOL_LABELS
from convnet_repro.experiments.reports.imagenet_rows import source_run_id
from convnet_repro.experiments.reports.imagenet_stats import member_summary

DEPTH_CLAIM = "deeper family < AlexNet"


def seed_errors(client, row):
    """A single-model row's seeds: each seed run's final top-1 error.

    The seeds are the row's source run and its siblings with the same
    `variant` tag (the same model and recipe, another `seed`), finished
    runs only, in seed order. A source without a parent run is its own only
    seed; a source that is not an MLflow run (a `.keras` file) has none.

    Args:
        client: an `mlflow.MlflowClient`.
        row: an `imagenet_rows.Row` with `num_models == 1`.

    Returns:
        dict `errors` (percent, one per finished seed run with a
        `val/top1_error`), `seeds` (their `seed` tags) and `runs` (how many
        seed runs exist, finished or not); None for an ensemble row or a
        source that is not a run.
    """
    from mlflow.exceptions import MlflowException

    if row.num_models != 1 or not row.sources:
        return None
    try:
        run = client.get_run(source_run_id(row.sources.split(",")[0]))
    except MlflowException:
        return None
    parent = run.data.tags.get(run_queries.PARENT_TAG)
    runs = [run]
    if parent:
        variant = run.data.tags.get("variant")
        runs = [
            r
            for r in run_queries.child_runs(client, parent)
            if r.data.tags.get("variant") == variant
        ]
    runs.sort(key=lambda r: int(_seed(r) or 0))
    done = [
        r
        for r in runs
        if r.info.status == "FINISHED" and mk.VAL_TOP1_ERROR in r.data.metrics
    ]
    return {
        "errors": [100 * r.data.metrics[mk.VAL_TOP1_ERROR] for r in done],
        "seeds": [_seed(r) for r in done],
        "runs": len(runs),
    }


def _seed(run):
    """A run's seed: its child tag, else its `seed` param (one run)."""
    return run.data.tags.get("seed") or run.data.params.get("seed")


def judge_over_seeds(check, rows, seeds):
    """Adds a Welch test over seeds to a depth check (in place).

    Only "deeper family < AlexNet" checks on top-1 between two centre-crop
    rows are tested (the seeds' errors are centre-crop top-1, whatever the
    row's protocol), and only when both rows have at least 2 seeds.

    Args:
        check: a dict of `imagenet_orderings.check_orderings`.
        rows: `{run_id: Row}` of the table.
        seeds: `{run_id: seed_errors(...)}`.

    Returns:
        `check`, with `over_seeds` (dict `difference`, `lo`, `hi`,
        `p_value`, `verdict`, `n_better`, `n_worse`; better - worse mean
        error, percent) when tested.
    """
    better = rows.get(check.get("better_run_id"))
    worse = rows.get(check.get("worse_run_id"))
    if (
        check["claim"] != DEPTH_CLAIM
        or check["metric"] != mk.TOP1_ERROR
        or better is None
        or worse is None
        or {better.protocol, worse.protocol} != {"center"}
    ):
        return check
    b = (seeds.get(better.run_id) or {}).get("errors") or []
    a = (seeds.get(worse.run_id) or {}).get("errors") or []
    if len(a) < 2 or len(b) < 2:
        return check
    test = pt.seed_difference(a, b)
    check["over_seeds"] = {
        **test,
        "verdict": pt.verdict(
            test["difference"],
            p_value=test["p_value"],
            interval=(test["lo"], test["hi"]),
            direction=-1,
        ),
        "n_better": len(b),
        "n_worse": len(a),
    }
    return check


def seeds_table(rows, seeds):
    """Markdown: each single model beside the mean over its seeds.

    One line per single-model row name (its centre-crop evaluation where
    there is one).

    Args:
        rows: the table's `Row`s.
        seeds: `{run_id: seed_errors(...)}`.

    Returns:
        Markdown lines (none without any single-model row with seeds).
    """
    chosen = {}
    for r in rows:
        if not (seeds.get(r.run_id) or {}).get("errors"):
            continue
        if r.row not in chosen or r.protocol == "center":
            chosen[r.row] = r
    if not chosen:
        return []
    lines = [
        "",
        "### Single models beside their seeds (top-1 error)",
        "",
        "| row | this model, scored | test protocol | seeds, mean [95% CI] "
        "| seeds, min-max | seeds found |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in chosen.values():
        s = seeds[r.run_id]
        m = member_summary(s["errors"], s["runs"])
        mean = f"{m['mean']:.2f}"
        if m["lo"] is not None:
            mean += f" [{m['lo']:.1f}, {m['hi']:.1f}]"
        spread = f"{m['min']:.2f}-{m['max']:.2f}" if m["n"] > 1 else "–"
        found = ", ".join(str(x) for x in s["seeds"])
        lines.append(
            f"| {r.row} | {r.top1_error:.2f} | "
            f"{PROTOCOL_LABELS.get(r.protocol, r.protocol)} | {mean} | "
            f"{spread} | {m['n']} of {m['of']} "
            f"({'seeds' if m['n'] > 1 else 'seed'} {found}) |"
        )
    lines += [
        "",
        "Seeds: each seed run's final `val/top1_error` (the engine's "
        "centre-crop validation pass on every validation image at the end "
        "of training); the row's own model is one of them, scored here by "
        "the evaluation (on the row's images). Interval: Student-t over "
        "seeds (`statistics.seed_interval`); a single seed has none.",
    ]
    return lines


def format_over_seeds(check):
    """The `; over seeds ...` clause of a check's Markdown line ("" if the
    check was not tested over seeds)."""
    s = check.get("over_seeds")
    if not s:
        return ""
    return (
        f"; over seeds ({s['n_better']} vs {s['n_worse']}): "
        f"{s['difference']:+.2f} [{s['lo']:+.2f}, {s['hi']:+.2f}] pts, "
        f"Welch p = {s['p_value']:.2g}: {s['verdict']}"
    )
