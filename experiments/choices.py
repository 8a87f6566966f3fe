"""Re-make the mini experiments' choices on the tuning split (issue #14).

The mini Imagenette configs carry choices (an init, a crop area) that were
first made by short probes scored on Imagenette val, the set every reported
number comes from. This command re-makes them where they belong: every
candidate of every question in `conf/choices/imagenette.yaml` trains with
the engine (one parent run per candidate, one child per seed, in MLflow
experiment `choices_<question>`) on Imagenette train minus the tuning split,
and is scored on the tuning split alone (`data.eval_split=tuning`, so the
runs' `val/*` metrics are tuning-split scores; `report=null`, so no
evaluation hook scores Imagenette val). It then writes
`results/mini_choices/choices.md` and `choices.csv`: per candidate the
seed-mean tuning top-1 with a 95% interval (seed spread + the tuning set's
binomial error: `statistics.combined_interval`), and per alternative the
difference to the chosen candidate with a Welch test over seeds
(`paired_tests.seed_difference`, `verdict`), with the run ids, steps, seeds
and wall time behind each row.

A killed command resumes: the engine resumes unfinished runs and skips
finished ones, so a rerun only re-reads what is done.

Considered: a Hydra `-m` sweep over the candidates (the engine supports
it), but a question's candidates override different keys, the summary
needs every candidate's parent run afterwards, and the sweep's Optuna/
basic sweepers rank on one scalar without intervals; a loop over composed
configs keeps the spec, the runs and the table in one place.

Usage:
    python -m convnet_repro.experiments.choices [--question alexnet_init ...]
        [--out results/mini_choices] [override ...]
"""

import argparse
import csv
import pathlib
import sys

from omegaconf import OmegaConf

from convnet_repro.experiments.engine import metric_keys as mk
from convnet_repro.experiments.engine.compose import CONF_DIR
from convnet_repro.experiments.engine.exit_codes import ExitCode
from convnet_repro.experiments.engine.exit_codes import describe
from convnet_repro.experiments.engine.exit_codes import exit_code_for
from convnet_repro.experiments.engine.exit_codes import exit_code_for_result
from convnet_repro.experiments.reports import resolve_dir

SPEC = CONF_DIR / "choices" / "imagenette.yaml"
METRIC = mk.val_key(mk.TOP1_ACCURACY)  # the tuning split's, see above
COLUMNS = (
    "question",
    "candidate",
    "chosen",
    "tuning_top1_pct",
    "interval_95",
    "minus_chosen_pts",
    "welch_interval_95",
    "verdict",
    "seeds",
    "steps",
    "tuning_images",
    "minutes",
    "parent_run_id",
    "child_run_ids",
)


def load_spec(path=SPEC):
    """The questions of `path`, resolved; refuses a spec without `chosen`."""
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    for name, q in spec["questions"].items():
        if q["chosen"] not in q["candidates"]:
            raise ValueError(
                f"conf/choices: question {name!r} chooses {q['chosen']!r}, "
                f"which is not one of its candidates {sorted(q['candidates'])}"
            )
    return spec


def candidate_overrides(spec, name, candidate, extra=()):
    """Hydra overrides of one candidate: experiment, spec, question, own."""
    q = spec["questions"][name]
    seeds = ",".join(str(s) for s in spec["seeds"])
    return [
        f"experiment={q['experiment']}",
        f"experiment_name=choices_{name}",
        f"seeds=[{seeds}]",
        *spec["overrides"],
        *q.get("overrides", []),
        *q["candidates"][candidate],
        *extra,
    ]


def run_candidate(cfg):
    """Trains one composed candidate; returns its parent run id.

    A run that did not finish (diverged, killed) exits with the engine's
    exit code (`exit_codes`) and a one-line `error:`; rerunning the
    command resumes it.
    """
    from convnet_repro.experiments.engine.train import train

    result = train(cfg)
    code = exit_code_for_result(result)
    if code:
        print(
            f"error: a choices run of {cfg.experiment_name} ended "
            f"{result.get('status')} (exit code {int(code)}: "
            f"{result.get('failure_reason') or 'see its MLflow run'}); "
            "rerun the same command to resume it",
            file=sys.stderr,
        )
        sys.exit(int(code))
    return result["run_id"]


def read_children(client, parent_run_id):
    """`(values, run_ids, steps, minutes)` of a candidate's finished seeds."""
    from convnet_repro.experiments.engine.run_queries import child_runs

    runs = [
        r
        for r in child_runs(client, parent_run_id)
        if r.info.status == "FINISHED"
    ]
    if not runs or any(METRIC not in r.data.metrics for r in runs):
        raise ValueError(
            f"Parent run {parent_run_id} has no finished child with "
            f"{METRIC}; rerun `make mini-choices` to finish it."
        )
    steps = sorted({int(r.data.params.get("trainer.steps", -1)) for r in runs})
    minutes = sum(r.info.end_time - r.info.start_time for r in runs) / 60e3
    return (
        [r.data.metrics[METRIC] for r in runs],
        [r.info.run_id for r in runs],
        steps,
        minutes,
    )


def summarize(question, chosen, candidates, num_images):
    """Table rows of one question.

    Args:
        question: its name.
        chosen: the chosen candidate's name.
        candidates: `{name: {"values", "run_ids", "steps", "minutes",
            "parent_run_id"}}`, `values` one tuning top-1 per seed.
        num_images: tuning-split images behind each value.

    Returns:
        One dict per candidate (keys `COLUMNS`), the chosen one first.
    """
    from convnet_repro.experiments.reports.paired_tests import seed_difference
    from convnet_repro.experiments.reports.paired_tests import verdict
    from convnet_repro.experiments.reports.statistics import combined_interval

    base = candidates[chosen]["values"]
    rows = []
    for name in sorted(candidates, key=lambda n: (n != chosen, n)):
        c = candidates[name]
        ci = combined_interval(c["values"], num_images)
        row = {
            "question": question,
            "candidate": name,
            "chosen": "yes" if name == chosen else "",
            "tuning_top1_pct": round(100 * ci["mean"], 1),
            "interval_95": f"[{100 * ci['lo']:.1f}, {100 * ci['hi']:.1f}]",
            "minus_chosen_pts": "",
            "welch_interval_95": "",
            "verdict": "",
            "seeds": len(c["values"]),
            "steps": "/".join(str(s) for s in c["steps"]),
            "tuning_images": num_images,
            "minutes": round(c["minutes"], 1),
            "parent_run_id": c["parent_run_id"],
            "child_run_ids": " ".join(r[:8] for r in c["run_ids"]),
        }
        if name != chosen:
            d = seed_difference(base, c["values"])
            # Claim "the chosen one is better": alternative - chosen < 0.
            row["minus_chosen_pts"] = round(100 * d["difference"], 1)
            row["welch_interval_95"] = (
                f"[{100 * d['lo']:.1f}, {100 * d['hi']:.1f}]"
            )
            row["verdict"] = "chosen better: " + verdict(
                d["difference"], p_value=d["p_value"], direction=-1
            )
        rows.append(row)
    return rows


def write_outputs(rows, spec, out_dir):
    """Writes `choices.md` and `choices.csv` to `out_dir`; returns them."""
    from convnet_repro.experiments.studies.common import markdown_table

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "choices.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    parts = [
        "# Mini choices, re-made on the tuning split\n\n"
        "Written by `make mini-choices` (`experiments/choices.py`, spec "
        "`conf/choices/imagenette.yaml`). Tuning top-1 = accuracy on the "
        f"{spec['tuning_per_class']}-per-class tuning split held out of "
        "Imagenette train, at the probe's last step; no Imagenette val image "
        "is loaded or scored. Interval: seed spread (t) and the tuning "
        "set's binomial error; `minus_chosen_pts`: alternative - chosen, "
        "Welch interval over seeds; verdict of the claim that the chosen "
        "candidate is better.\n"
    ]
    for name, q in spec["questions"].items():
        mine = [r for r in rows if r["question"] == name]
        if not mine:
            continue
        parts.append(
            f"\n## {name}\n\n{q['question']}; first made on: "
            f"{q['first_made_on']}.\n\n"
            + markdown_table(mine, [c for c in COLUMNS if c != "question"])
        )
    md = out_dir / "choices.md"
    md.write_text("".join(parts))
    return [md, out_dir / "choices.csv"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--question",
        action="append",
        default=None,
        help="only these questions (default: all); the table then holds "
        "only them",
    )
    parser.add_argument("--out", default="results/mini_choices")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides added to every run"
    )
    args = parser.parse_args(argv)

    from mlflow.tracking import MlflowClient

    spec = load_spec()
    names = args.question or list(spec["questions"])
    unknown = sorted(set(names) - set(spec["questions"]))
    if unknown:
        parser.error(
            f"unknown question(s) {unknown}; the spec has "
            f"{sorted(spec['questions'])}"
        )
    num_images = 10 * spec["tuning_per_class"]  # Imagenette: 10 classes
    try:
        # Every candidate's config is composed and checked before any run.
        configs = {
            name: {
                cand: _checked(
                    candidate_overrides(spec, name, cand, args.overrides)
                )
                for cand in spec["questions"][name]["candidates"]
            }
            for name in names
        }
        rows = []
        for name in names:
            found = {}
            for candidate, cfg in configs[name].items():
                parent = run_candidate(cfg)
                values, run_ids, steps, minutes = read_children(
                    MlflowClient(), parent
                )
                found[candidate] = {
                    "values": values,
                    "run_ids": run_ids,
                    "steps": steps,
                    "minutes": minutes,
                    "parent_run_id": parent,
                }
            q = spec["questions"][name]
            rows += summarize(name, q["chosen"], found, num_images)
            for path in write_outputs(rows, spec, resolve_dir(args.out)):
                print(f"wrote {path}")
    except Exception as e:
        code = exit_code_for(e)
        if code == ExitCode.UNEXPECTED:
            raise
        print(f"error: {describe(e)}", file=sys.stderr)
        sys.exit(int(code))


def _checked(overrides):
    """The composed config of `overrides`, validated (`ConfigError`)."""
    from convnet_repro.experiments.engine.compose import compose
    from convnet_repro.experiments.engine.config_checks import validate_config

    cfg = compose(overrides)
    validate_config(cfg)
    return cfg


if __name__ == "__main__":
    main()
