"""Multi-run experiments: a child run per variant x seed under one parent.

`expand_children` turns `cfg.variants` x `cfg.seeds` into child configs;
`train_children` creates (or resumes) the parent run, trains each child
with `experiments.engine.run.run_one` (finished children are skipped on a
rerun), logs the parent's `mean/*` and seed-mean `curve/*` metrics and
calls the config's `report:` hook.
"""

import copy
import dataclasses
import logging
import math

import hydra
import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from omegaconf import OmegaConf
from omegaconf import open_dict

from convnet_repro.experiments.engine import build
from convnet_repro.experiments.engine import compare
from convnet_repro.experiments.engine import distribute
from convnet_repro.experiments.engine import metric_keys as mk
from convnet_repro.experiments.engine import metric_log
from convnet_repro.experiments.engine import outage
from convnet_repro.experiments.engine import run_queries
from convnet_repro.experiments.engine import tracking
from convnet_repro.experiments.engine.config_checks import active_variants
from convnet_repro.experiments.engine.config_checks import variant_items
from convnet_repro.experiments.engine.run import run_one

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Child:
    """One run of a multi-run experiment."""

    name: str
    cfg: DictConfig
    variant: str = None
    seed: int = None
    index: int = 1  # 1-based position among the children (progress)


def expand_children(cfg):
    """Child configs of `cfg.variants` x `cfg.seeds` (empty for one run).

    Args:
        cfg: the root config.

    Returns:
        A list of `Child` whose configs have `variants`/`seeds` cleared,
        seed-major (all variants of the first seed, then the next seed).
    """
    variants = active_variants(cfg)
    seeds = list(cfg.seeds or [])
    if not variants and not seeds:
        return []
    # Seed-major: every variant of one seed before the next seed, so a run
    # stopped part-way (a kill, a time budget) holds complete comparisons.
    combos = [(v, s) for s in seeds or [None] for v in list(variants) or [None]]
    children = []
    for variant, seed in combos:
        child = copy.deepcopy(cfg)
        with open_dict(child):
            child.variants = None
            child.seeds = None
            if variant is not None:
                for key, value in variant_items(variant, variants[variant]):
                    OmegaConf.update(child, key, value, merge=True)
            if seed is not None:
                child.seed = int(seed)
        name = "-".join(
            x for x in (variant, None if seed is None else f"seed{seed}") if x
        )
        children.append(
            Child(name, child, variant, seed, index=len(children) + 1)
        )
    return children


def _mean_metrics(results):
    keys = {k for r in results for k, v in r.items() if isinstance(v, float)}
    mean = {}
    for key in sorted(keys):
        values = [r[key] for r in results if isinstance(r.get(key), float)]
        mean[key] = sum(values) / len(values)
    return mean


def train_children(cfg, children, experiment_id, strategy, key):
    chief = distribute.is_chief(strategy)
    parent_id, finished_at = None, None
    if chief:
        parent = (
            tracking.find_run(experiment_id, key)
            if cfg.tracking.resume
            else None
        )
        if parent is None:
            build.preflight(children, strategy)
            parent_id = (
                MlflowClient()
                .create_run(
                    experiment_id,
                    run_name=cfg.run_name or cfg.experiment_name,
                    tags={
                        tracking.RUN_KEY_TAG: key,
                        "repro.role": "parent",
                        compare.NOTE_TAG: compare.run_note(cfg),
                    },
                )
                .info.run_id
            )
            with mlflow.start_run(run_id=parent_id):
                tracking.log_config(cfg)
        else:
            parent_id = parent.info.run_id
            if parent.info.status == "FINISHED":
                finished_at = parent.info.end_time
        # Ending the `with` block marked the parent FINISHED; it runs until
        # its last child has (the UI shows it running meanwhile).
        MlflowClient().update_run(parent_id, status="RUNNING")
    results = {}
    try:
        for child in children:
            results[child.name] = run_one(
                child.cfg, experiment_id, strategy, parent_id, child
            )
    except BaseException:
        if chief:
            MlflowClient().set_terminated(parent_id, "FAILED")
        raise
    failed = [n for n, r in results.items() if r.get("status") == "FAILED"]
    done = [r for r in results.values() if r.get("status") != "FAILED"]
    summary = _mean_metrics(done)  # non-chief workers: no MLflow
    pending, report = {}, None
    if chief:
        curves = [
            (c.variant or c.name, results[c.name]["run_id"]) for c in children
        ]
        # A rerun that trains nothing keeps the parent's end time, so its
        # duration stays that of the sweep.
        if not all(r.get("skipped") for r in results.values()):
            finished_at = None
        logged, report = _finish_parent(
            cfg, parent_id, done, failed, curves, finished_at
        )
        summary = summary if logged is None else logged
        pending = {"tracking_pending": True} if logged is None else {}
    return {
        **summary,
        **pending,
        **({"report": report} if report else {}),
        "children": results,
        "status": "FAILED" if failed else "FINISHED",
        "run_id": parent_id,
    }


def _finish_parent(cfg, parent_id, done, failed, curves, end_time=None):
    """Logs the parent's `mean/*` and `curve/*`, reports, ends the parent.

    The means are over the children's final `val/*` metrics read back from
    MLflow (`run_queries.child_summary`), so they are the same whether the
    children were trained now, resumed or skipped as finished. They are
    logged only when every child finished (else they would average a
    subset; `failed_children` says which failed): the rerun that recovers
    the failed children logs them. So are the seed-mean curves per variant
    (`compare.log_variant_curves`; `curves` = `[(variant, run_id)]`).
    `end_time` (ms), when given, is the parent's end time (a rerun whose
    children had all finished keeps the sweep's own); else now.

    Returns:
        `(summary, report_output)`; the summary is None when the server is
        unreachable (the parent then stays RUNNING; the rerun of the same
        command finishes it).
    """
    client = MlflowClient()
    try:
        summary = run_queries.child_summary(client, [r["run_id"] for r in done])
        if failed:
            client.set_tag(parent_id, "failed_children", ",".join(failed))
        else:
            metric_log.clear_failure_tags(client, parent_id)
            # Timestamp 0: a rerun logs the same row again (not a second
            # point), so every `mean/*` has one value, at the last step.
            client.log_batch(
                parent_id,
                metrics=[
                    mlflow.entities.Metric(
                        mk.mean_key(k), v, 0, cfg.trainer.steps
                    )
                    for k, v in summary.items()
                    if math.isfinite(v)
                ],
            )
            compare.log_variant_curves(client, parent_id, curves)
        report = call_report(cfg, parent_id, True)
        client.set_terminated(
            parent_id, "FAILED" if failed else "FINISHED", end_time=end_time
        )
    except Exception as e:
        if not outage.unreachable(e):
            raise
        log.warning(
            "MLflow server unreachable (%s): parent run %s stays RUNNING; "
            "rerun the same command to finish it",
            outage.reason(e),
            parent_id,
        )
        return None, None
    return summary, report


def call_report(cfg, parent_run_id, chief):
    """Calls the config's `report:` hook; returns what it returned."""
    if chief and cfg.report is not None:
        # Not recursive: `cfg` itself holds `_target_` nodes.
        return hydra.utils.call(
            cfg.report,
            cfg=cfg,
            parent_run_id=parent_run_id,
            _recursive_=False,
        )
