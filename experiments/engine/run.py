"""The lifecycle of one MLflow run: lock, find or resume, create, end.

`run_one` trains one run, resumes an unfinished one from its newest
checkpoint into the same MLflow run (the run key is the config hash,
`experiments.engine.tracking.run_key`), or skips a finished one. Its order
keeps input errors cheap: lock the run's checkpoint folder (a second
identical command stops here), find an existing run (read-only), read the
newest good checkpoint, build data and model (bad files, shapes and configs
fail here), and only then create the MLflow run, so an input error leaves
no FAILED run behind. The training itself is `experiments.engine.fit`.
"""

import contextlib
import logging
import pathlib

import keras
import mlflow
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.engine import build
from convnet_repro.experiments.engine import callbacks as cbs
from convnet_repro.experiments.engine import checkpoints
from convnet_repro.experiments.engine import compare
from convnet_repro.experiments.engine import distribute
from convnet_repro.experiments.engine import metric_keys as mk
from convnet_repro.experiments.engine import metric_log
from convnet_repro.experiments.engine import progress
from convnet_repro.experiments.engine import tracking
from convnet_repro.experiments.engine.fit import fit_run

log = logging.getLogger(__name__)


def checkpoint_dir(cfg, key):
    """`<paths.checkpoint_dir>/<experiment_name>/<run key>`."""
    return pathlib.Path(cfg.paths.checkpoint_dir) / cfg.experiment_name / key


def run_lock(chief, directory):
    """The run's folder lock (only the chief writes checkpoints)."""
    return (
        checkpoints.run_lock(directory) if chief else contextlib.nullcontext()
    )


def run_one(cfg, experiment_id, strategy, parent_run_id=None, child=None):
    """Trains one run (or resumes/skips it); returns its final metrics.

    Args:
        cfg: the run's config (no `variants` / `seeds`).
        experiment_id: MLflow experiment id (None on non-chief workers).
        strategy: the `tf.distribute` strategy.
        parent_run_id: parent run of a child run.
        child: the `experiments.engine.children.Child` or None.

    Returns:
        Dict of final metrics (`val/...`), plus `status` and `run_id`.

    Raises:
        RunLockedError: another process runs the same run.
        CheckpointError: the checkpoint folder is not writable.
        DataError, ConfigError: from building data and model.
    """
    name = child.name if child else ""
    ckpt_dir = checkpoint_dir(cfg, tracking.run_key(cfg, extra=name))
    with run_lock(distribute.is_chief(strategy), ckpt_dir):
        return _run_one(cfg, experiment_id, strategy, parent_run_id, child)


def _skipped(existing):
    """Result of a run that already FINISHED (its non-train metrics)."""
    metrics = existing.data.metrics.items()
    return {
        **{k: v for k, v in metrics if not k.startswith(mk.TRAIN_PREFIX)},
        "status": "FINISHED",
        "run_id": existing.info.run_id,
        "skipped": True,
    }


def _create_run(cfg, experiment_id, key, parent_run_id, child):
    """Creates the MLflow run with its tags; returns its id."""
    name = child.name if child else ""
    tags = {tracking.RUN_KEY_TAG: key}
    if parent_run_id:
        tags[tracking.PARENT_TAG] = parent_run_id
    tags[compare.NOTE_TAG] = compare.run_note(cfg, child)
    if child:
        tags["repro.child"] = child.name
        if child.variant is not None:
            tags["variant"] = child.variant
        if child.seed is not None:
            tags["seed"] = str(child.seed)
    run_name = cfg.run_name or name or cfg.experiment_name
    if parent_run_id and cfg.run_name:
        run_name = f"{cfg.run_name}-{name}"
    return (
        MlflowClient()
        .create_run(experiment_id, run_name=run_name, tags=tags)
        .info.run_id
    )


def _run_one(cfg, experiment_id, strategy, parent_run_id, child):
    t = cfg.trainer
    chief = distribute.is_chief(strategy)
    name = child.name if child else ""
    key = tracking.run_key(cfg, extra=name)
    ckpt_dir = checkpoint_dir(cfg, key)
    resume = cfg.tracking.resume
    state = cbs.read_checkpoint_state(ckpt_dir, heal=chief) if resume else None
    # --- find the MLflow run (created below, after the build) -----------
    run_id, resumed, existing = None, False, None
    if chief:
        if resume:
            existing = tracking.find_run(experiment_id, key, parent_run_id)
        if existing is not None and existing.info.status == "FINISHED":
            log.info(
                "Skipping finished run %s (%s)",
                name or key,
                existing.info.run_id,
            )
            _progress_run(child, name, t.steps, skipped=True)
            return _skipped(existing)
        if existing is not None:
            run_id, resumed = existing.info.run_id, True
        if state is not None and state.get("run_id") != run_id:
            state = None  # a stale checkpoint of another store/run
    start_step = min(int(state["step"]), t.steps) if state else 0
    _progress_run(child, name or cfg.experiment_name, start_step)

    policy = build.seed_and_policy(cfg)
    try:
        built = build.build_run(cfg, strategy, skip_batches=start_step)
    except BaseException:
        keras.mixed_precision.set_dtype_policy(policy)
        raise
    if chief and existing is None:
        run_id = _create_run(cfg, experiment_id, key, parent_run_id, child)
    active = mlflow.start_run(run_id=run_id) if chief else None
    try:
        if chief:
            mlflow.set_tags(
                {
                    "status_detail": "running",
                    "strategy": type(strategy).__name__,
                    "num_replicas_in_sync": strategy.num_replicas_in_sync,
                }
            )
            tracking.log_config(cfg, log_params=not resumed)
            if start_step:
                mlflow.set_tag("resumed_from_step", str(start_step))
        result = fit_run(
            cfg, strategy, chief, run_id, ckpt_dir, state, resumed, built
        )
    except BaseException as e:
        if chief:
            metric_log.end_run(
                "FAILED" if isinstance(e, Exception) else "KILLED",
                tags={"failure_reason": f"{type(e).__name__}: {e}"[:5000]},
                wait=isinstance(e, Exception),
            )
        raise
    finally:
        keras.mixed_precision.set_dtype_policy(policy)
    _progress_run(child, name, None, status=result["status"])
    if chief:
        status = result.pop("status")
        tags = {"status_detail": status.lower()}
        if status == "FAILED":
            tags["failure_reason"] = result["failure_reason"]
        if not metric_log.end_run(status, tags=tags):
            result["tracking_pending"] = True  # rerun to finish the run
        del active
        result.update(status=status, run_id=run_id)
    return result


def _progress_run(child, name, start_step, status=None, skipped=False):
    """Tells the experiment's progress that a run starts or ends."""
    p = progress.current()
    if p is None:
        return
    if start_step is not None:
        p.begin_run(child.index if child else 1, name, start_step)
    if status is not None or skipped:
        p.end_run(status or "FINISHED", skipped=skipped)
