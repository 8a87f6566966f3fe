"""The ImageNet results table: our errors beside the papers' (issue #7).

The CLI and the `report:` hook: reads the evaluation runs from MLflow
(`imagenet_rows`), checks the papers' orderings (`imagenet_orderings`) with
per-image intervals and paired tests (`imagenet_stats`) and, where a single
model was trained with several seeds, a test over seeds (`imagenet_seeds`),
and writes
`results/imagenet_table/<scale>/{table.md,table.csv,errors.png}`
(`imagenet_output`); `--run` first trains and evaluates every mini
experiment (`imagenet_runner`).

Usage:
    # table from the runs already in the store
    python -m convnet_repro.experiments.reports.imagenet_table --scale mini
    # train + evaluate every mini experiment first (`make imagenet-table`),
    # optionally shortened to a fraction of the steps
    python -m convnet_repro.experiments.reports.imagenet_table --run \
        [--fraction 0.25]

Reference:
- Krizhevsky et al., NIPS 2012, Table 2; Simonyan & Zisserman, ICLR 2015,
  Table 3; Szegedy et al., CVPR 2015, Table 3; He et al., CVPR 2016,
  Table 3.
"""

import argparse
import collections
import dataclasses
import pathlib

from convnet_repro.experiments.reports import paired_tests as pt
from convnet_repro.experiments.reports.imagenet_orderings import check_orderings
from convnet_repro.experiments.reports.imagenet_output import write_outputs
from convnet_repro.experiments.reports.imagenet_rows import build_table
from convnet_repro.experiments.reports.imagenet_rows import fetch_rows
from convnet_repro.experiments.reports.imagenet_rows import member_errors
from convnet_repro.experiments.reports.imagenet_runner import MINI_EXPERIMENTS
from convnet_repro.experiments.reports.imagenet_runner import run_mini_table

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


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
        dict with `rows` (list of dicts), `checks` (a top-5 check at mini
        scale is `weak`, never judged; a depth check between centre-crop
        rows with seeds has `over_seeds`), `members` (`{run_id:
        imagenet_stats.member_summary}` of the ensemble rows) and `seeds`
        (`{run_id: imagenet_seeds.seed_errors}` of the single-model rows).
    """
    import mlflow

    client = mlflow.MlflowClient()
    rows = build_table(fetch_rows(client, scale))
    if not rows:
        raise ValueError(
            "No evaluation runs found; run `make imagenet-table` (or "
            "python -m convnet_repro.experiments.evaluate) first. "
            f"Received: scale={scale!r}"
        )
    checks = check_orderings(rows)
    from convnet_repro.experiments.reports import imagenet_seeds
    from convnet_repro.experiments.reports import imagenet_stats

    correctness = imagenet_stats.Correctness(predictions)
    intervals = {
        r.run_id: imagenet_stats.row_intervals(r, correctness) for r in rows
    }
    seeds = {
        r.run_id: imagenet_seeds.seed_errors(client, r)
        for r in rows
        if r.num_models == 1
    }
    by_id = {r.run_id: r for r in rows}
    for check in checks:  # mini: 10 classes, top-5 is never judged
        imagenet_stats.judge(check, correctness, weak_top5=scale != "full")
        imagenet_seeds.judge_over_seeds(check, by_id, seeds)
    members = {
        r.run_id: imagenet_stats.member_summary(
            member_errors(client, r), r.num_models
        )
        for r in rows
        if r.num_models > 1
    }
    out = pathlib.Path(results_dir)
    out = (out if out.is_absolute() else REPO_ROOT / out) / scale
    notes = [
        "",
        f"Scale `{scale}`: "
        + (
            "Imagenette (10 ImageNet classes, 3925 val images) at reduced "
            "resolution with small-input models; the paper columns are "
            "ImageNet-1k numbers, quoted for reference, not comparable."
            if scale != "full"
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
        members,
        seeds,
    )
    if parent_run_id:
        for path in written:
            client.log_artifact(parent_run_id, str(path), "report")
    return {
        "rows": [dataclasses.asdict(r) for r in rows],
        "checks": checks,
        "members": members,
        "seeds": seeds,
    }


def main(argv=None):
    """CLI: (optionally train and evaluate, then) rebuild the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", default="mini", choices=("mini", "mini-long", "full")
    )
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

    from convnet_repro.experiments.engine import tracking
    from convnet_repro.experiments.engine.compose import compose

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
    print(summary_line(out, f"{args.results_dir}/{args.scale}/"))


def summary_line(out, where):
    """The CLI's last line: rows, and the verdicts of the ordered pairs.

    Counts the per-image verdicts (McNemar and paired bootstrap), not the
    mere direction of the difference; a depth pair's test over seeds is in
    the table. A pair without stored predictions, or scored on different
    images, is "not judged"; a pair on a weak top-5 (<= 10 classes) is
    counted apart.

    Args:
        out: what `report` returns (`rows`, `checks`).
        where: the folder the table was written to.

    Returns:
        e.g. `"7 rows; 10 ordered pairs: holds 5, not significant 1,
        fails 0, not judged 0; weak top-5 4 -> DIR"`.
    """
    from convnet_repro.experiments.reports.imagenet_stats import NOT_JUDGED

    weak = [c for c in out["checks"] if c.get("weak")]
    counts = collections.Counter(
        NOT_JUDGED
        if str(c.get("verdict", NOT_JUDGED)).startswith(NOT_JUDGED)
        else c["verdict"]
        for c in out["checks"]
        if not c.get("weak")
    )
    order = (pt.HOLDS, pt.NOT_SIGNIFICANT, pt.FAILS, NOT_JUDGED)
    verdicts = ", ".join(f"{v} {counts[v]}" for v in order)
    return (
        f"{len(out['rows'])} rows; {len(out['checks'])} ordered pairs: "
        f"{verdicts}; weak top-5 {len(weak)} -> {where}"
    )


if __name__ == "__main__":
    main()
