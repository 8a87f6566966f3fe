"""Train one experiment: `python -m experiments.train experiment=<name>`.

The engine behind every `make` target. It composes the Hydra config
(`conf/train.yaml`, schema `experiments.engine.config_schema.TrainConfig`),
then:

1. validates the config and every child run's config (before any work);
2. builds the `tf.distribute` strategy, data, model and optimizer;
3. trains with `model.fit`, step-based: Keras epochs are the intervals
   between evaluations/checkpoints, `steps_per_execution` steps per compiled
   call, `make_datasets(skip_batches=step)` to resume the data stream;
4. logs to MLflow (params, tags, windowed train metrics, eval metrics with
   top-1/top-5 errors, model, figures) and checkpoints every N steps; the
   same command restarted after a kill resumes the same MLflow run from the
   last checkpoint (run key = config hash), with every step logged once;
5. for `variants:` / `seeds:`, runs one child run per combination under a
   parent run (finished children are skipped on restart), then calls
   `report(cfg=..., parent_run_id=...)`.

Example:

    python -m experiments.train experiment=bn_mnist trainer.steps=2000
    python -m experiments.train -m optimizer.learning_rate=0.1,0.5
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import contextlib  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import hydra  # noqa: E402
import keras  # noqa: E402
import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from experiments.engine import build  # noqa: E402
from experiments.engine import callbacks as cbs  # noqa: E402
from experiments.engine import checkpoints  # noqa: E402
from experiments.engine import compare  # noqa: E402
from experiments.engine import compat  # noqa: E402
from experiments.engine import distribute  # noqa: E402
from experiments.engine import metric_log  # noqa: E402
from experiments.engine import optimization  # noqa: E402
from experiments.engine import progress  # noqa: E402
from experiments.engine import summary as summary_lib  # noqa: E402
from experiments.engine import tracking  # noqa: E402
from experiments.engine.compose import CONF_DIR  # noqa: E402
from experiments.engine.config_schema import Strategy  # noqa: E402
from experiments.engine.config_schema import fit_chunk_steps  # noqa: E402
from experiments.engine.config_schema import validate_config  # noqa: E402
from experiments.engine.config_schema import variant_items  # noqa: E402
from experiments.engine.exit_codes import CheckpointError  # noqa: E402
from experiments.engine.exit_codes import ExitCode  # noqa: E402
from experiments.engine.exit_codes import describe  # noqa: E402
from experiments.engine.exit_codes import exit_code_for  # noqa: E402
from experiments.engine.exit_codes import exit_code_for_result  # noqa: E402

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Child:
    """One run of a multi-run experiment."""

    name: str
    cfg: DictConfig
    variant: str = None
    seed: int = None
    index: int = 1  # 1-based position among the children (progress)


# --------------------------------------------------------------------------
# Config expansion
# --------------------------------------------------------------------------


def expand_children(cfg):
    """Child configs of `cfg.variants` x `cfg.seeds` (empty for one run).

    Args:
        cfg: the root config.

    Returns:
        A list of `Child` whose configs have `variants`/`seeds` cleared.
    """
    variants = dict(cfg.variants or {})
    seeds = list(cfg.seeds or [])
    if not variants and not seeds:
        return []
    combos = itertools.product(list(variants) or [None], seeds or [None])
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


# --------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------


def _final_metrics(run):
    return {
        k: v for k, v in run.data.metrics.items() if not k.startswith("train/")
    }


def _checkpoint_dir(cfg, key):
    return pathlib.Path(cfg.paths.checkpoint_dir) / cfg.experiment_name / key


def _log_figures(run_id):
    """A learning-curve figure (train loss, val top-1 error) from MLflow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    client = MlflowClient()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key in zip(axes, ("train/loss", "val/top1_error")):
        history = sorted(
            client.get_metric_history(run_id, key), key=lambda m: m.step
        )
        ax.plot([m.step for m in history], [m.value for m in history])
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    mlflow.log_figure(fig, "figures/learning_curves.png")
    plt.close(fig)


def run_one(cfg, experiment_id, strategy, parent_run_id=None, child=None):
    """Trains one run (or resumes/skips it); returns its final metrics.

    Order: lock the run's checkpoint folder (a second identical command
    stops here), find an existing run (read-only), read the newest good
    checkpoint, build data and model (bad files, shapes and configs fail
    here), and only then create the MLflow run: an input error leaves no
    FAILED run behind.

    Args:
        cfg: the run's config (no `variants` / `seeds`).
        experiment_id: MLflow experiment id (None on non-chief workers).
        strategy: the `tf.distribute` strategy.
        parent_run_id: parent run of a child run.
        child: the `Child` (name, variant, seed) or None.

    Returns:
        Dict of final metrics (`val/...`), plus `status` and `run_id`.

    Raises:
        RunLockedError: another process runs the same run.
        CheckpointError: the checkpoint folder is not writable.
        DataError, ConfigError: from building data and model.
    """
    name = child.name if child else ""
    ckpt_dir = _checkpoint_dir(cfg, tracking.run_key(cfg, extra=name))
    with _run_lock(distribute.is_chief(strategy), ckpt_dir):
        return _run_one(cfg, experiment_id, strategy, parent_run_id, child)


def _run_lock(chief, directory):
    # Only the chief writes checkpoints (workers use scratch folders).
    return (
        checkpoints.run_lock(directory) if chief else contextlib.nullcontext()
    )


def _run_one(cfg, experiment_id, strategy, parent_run_id, child):
    t = cfg.trainer
    chief = distribute.is_chief(strategy)
    name = child.name if child else ""
    key = tracking.run_key(cfg, extra=name)
    ckpt_dir = _checkpoint_dir(cfg, key)
    state = (
        cbs.read_checkpoint_state(ckpt_dir, heal=chief)
        if cfg.tracking.resume
        else None
    )

    # --- find the MLflow run (created below, after the build) -----------
    run_id, resumed = None, False
    if chief:
        existing = (
            tracking.find_run(experiment_id, key, parent_run_id)
            if cfg.tracking.resume
            else None
        )
        if existing is not None and existing.info.status == "FINISHED":
            log.info(
                "Skipping finished run %s (%s)",
                name or key,
                existing.info.run_id,
            )
            _progress_run(child, name, t.steps, skipped=True)
            return {
                **_final_metrics(existing),
                "status": "FINISHED",
                "run_id": existing.info.run_id,
                "skipped": True,
            }
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
    if chief:
        if existing is None:
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
            run_id = (
                MlflowClient()
                .create_run(experiment_id, run_name=run_name, tags=tags)
                .info.run_id
            )
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
        result = _fit(
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


def _fit(cfg, strategy, chief, run_id, ckpt_dir, state, resumed, built):
    t = cfg.trainer
    start_step = min(int(state["step"]), t.steps) if state else 0
    chunk = fit_chunk_steps(t)
    ckpt_every = t.checkpoint_every_steps or t.eval_every_steps
    train_ds, val_ds, model, optimizer, lr_callback = built
    with strategy.scope():
        if start_step:
            optimizer.build(model.trainable_variables)
            path = state.get("path", ckpt_dir / cbs.CHECKPOINT_FILE)
            try:
                model.load_weights(path)
            except (OSError, ValueError) as e:
                raise CheckpointError(
                    f"checkpoint {path} does not load ({e}); delete "
                    f"{ckpt_dir} to restart the run from step 0."
                ) from e
            cbs.restore_seed_states(model, state)
            got = int(keras.ops.convert_to_numpy(optimizer.iterations))
            if got != start_step:
                raise RuntimeError(
                    f"checkpoint {ckpt_dir} holds step {got}, state.json says "
                    f"{start_step}; delete the folder to restart the run."
                )
    train_ds = optimization.labels_for(model, train_ds)
    val_ds = optimization.labels_for(model, val_ds)
    train_ds = distribute.distribute_options(train_ds, t.strategy)
    val_ds = distribute.distribute_options(val_ds, t.strategy)
    fit_ds = train_ds  # already starts at batch `start_step`
    if t.strategy != Strategy.default:
        compat.patch_symbolic_build(model, strategy, train_ds)

    buffer = None
    if chief:  # the one metric path, for callbacks too (`log_metrics`)
        buffer = metric_log.MetricBuffer(
            run_id,
            resume=resumed,
            spill_path=ckpt_dir / metric_log.SPILL_FILE,
            retry_every_s=cfg.tracking.retry_every_s,
            final_wait_s=cfg.tracking.final_wait_s,
        ).activate()
    logger = cbs.StepLogger(
        buffer,
        chunk_steps=chunk,
        total_steps=t.steps,
        log_every_steps=t.log_every_steps,
        progress=progress.current() if chief else None,
        metric_names=optimization.metric_names(model),
    )
    callbacks = [
        logger,
        cbs.StepCheckpointer(
            ckpt_dir,
            chunk_steps=chunk,
            every_steps=ckpt_every,
            state={"run_id": run_id},
            keep=t.keep_checkpoints,
            is_chief=chief,
        ),
    ]
    if lr_callback is not None:
        callbacks.append(lr_callback)
    for cb_cfg in (cfg.callbacks or {}).values():
        callbacks.append(hydra.utils.instantiate(cb_cfg, _convert_="all"))

    epochs = t.steps // chunk
    validation_freq = t.eval_every_steps // chunk
    if start_step < t.steps:
        model.fit(
            fit_ds,
            epochs=epochs,
            initial_epoch=start_step // chunk,
            steps_per_epoch=chunk,
            validation_data=val_ds,
            validation_freq=validation_freq,
            validation_steps=t.eval_steps,
            callbacks=callbacks,
            shuffle=False,  # the data pipeline shuffles (seeded)
            verbose=0,
        )
    if logger.failure:
        return {"status": "FAILED", "failure_reason": logger.failure}

    final = {}
    if t.steps % t.eval_every_steps or start_step >= t.steps:
        metrics = model.evaluate(
            val_ds, steps=t.eval_steps, return_dict=True, verbose=0
        )
        final = cbs.accuracy_to_error(
            {logger.metric_names.get(k, k): v for k, v in metrics.items()},
            prefix="val/",
        )
        if buffer is not None:
            buffer.log(final, t.steps)
    else:
        for step, metrics in reversed(logger.history):
            if any(k.startswith("val/") for k in metrics):
                final = {k: v for k, v in metrics.items() if k[:4] == "val/"}
                break
    if t.bn_population_stats:
        from layers import recompute_batch_norm_statistics

        recompute_batch_norm_statistics(
            model, train_ds, num_batches=t.bn_population_batches
        )
        metrics = model.evaluate(
            val_ds, steps=t.eval_steps, return_dict=True, verbose=0
        )
        population = cbs.accuracy_to_error(
            {logger.metric_names.get(k, k): v for k, v in metrics.items()},
            prefix="val/",
        )
        population = {f"{k}_population": v for k, v in population.items()}
        if buffer is not None:
            buffer.log(population, t.steps)
        final.update(population)
    if buffer is not None and not buffer.close():
        # Metrics spilled; the rerun resumes here and logs model + figures.
        return {**{k: float(v) for k, v in final.items()}, "status": "FINISHED"}
    if chief:
        if cfg.tracking.log_model:
            with tempfile.TemporaryDirectory() as tmp:
                path = pathlib.Path(tmp) / "model.keras"
                model.save(path)
                mlflow.log_artifact(str(path), artifact_path="model")
        if cfg.tracking.log_figures:
            _log_figures(run_id)
    return {**{k: float(v) for k, v in final.items()}, "status": "FINISHED"}


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------


def _mean_metrics(results):
    keys = {k for r in results for k, v in r.items() if isinstance(v, float)}
    mean = {}
    for key in sorted(keys):
        values = [r[key] for r in results if isinstance(r.get(key), float)]
        mean[key] = sum(values) / len(values)
    return mean


def train(cfg):
    """Runs the experiment described by `cfg`; returns its final metrics.

    Args:
        cfg: the composed root config (`conf/train.yaml`).

    Returns:
        Dict of final eval metrics (`val/top1_error`, ...; means over the
        child runs of a multi-run experiment, whose own results are under
        `"children"`), `"status"` and `"run_id"` (the parent's for multi-run).

    Raises:
        ConfigError: a config value is wrong, or the model/data cannot be
            built from it (raised before any MLflow run is created).
        DataError, MissingDataError: an input file is missing or corrupt
            (before any run is created).
        TrackingUnavailableError, InfrastructureError: the tracking server
            is unreachable, or a checkpoint/artifact folder is not writable.
        RunLockedError: the same run is already running.
    """
    validate_config(cfg)
    children = expand_children(cfg)
    for child in children:
        validate_config(child.cfg)
    strategy = distribute.make_strategy(cfg.trainer)
    chief = distribute.is_chief(strategy)
    experiment_id = (
        tracking.configure(cfg.tracking, cfg.experiment_name) if chief else None
    )
    if chief:
        compare.describe_experiment(MlflowClient(), experiment_id, cfg)
    steps = [c.cfg.trainer.steps for c in children] or [cfg.trainer.steps]
    progress.start(
        cfg.experiment_name,
        steps,
        mode=cfg.trainer.progress if chief else "none",
    )
    try:
        if not children:
            result = run_one(cfg, experiment_id, strategy)
            report = _call_report(cfg, result.get("run_id"), chief)
            return {**result, "report": report} if report else result
        key = tracking.run_key(cfg, extra="parent")
        with _run_lock(chief, _checkpoint_dir(cfg, key)):
            return _train_children(cfg, children, experiment_id, strategy, key)
    finally:
        progress.close()


def _train_children(cfg, children, experiment_id, strategy, key):
    chief = distribute.is_chief(strategy)
    parent_id = None
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
        logged, report = _finish_parent(cfg, parent_id, done, failed, curves)
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


def _finish_parent(cfg, parent_id, done, failed, curves):
    """Logs the parent's `mean/*` and `curve/*`, reports, ends the parent.

    The means are over the children's final `val/*` metrics read back from
    MLflow (`tracking.child_summary`), so they are the same whether the
    children were trained now, resumed or skipped as finished. They are
    logged only when every child finished (else they would average a
    subset; `failed_children` says which failed): the rerun that recovers
    the failed children logs them. So are the seed-mean curves per variant
    (`compare.log_variant_curves`; `curves` = `[(variant, run_id)]`).

    Returns:
        `(summary, report_output)`; the summary is None when the server is
        unreachable (the parent then stays RUNNING; the rerun of the same
        command finishes it).
    """
    client = MlflowClient()
    try:
        summary = tracking.child_summary(client, [r["run_id"] for r in done])
        if failed:
            client.set_tag(parent_id, "failed_children", ",".join(failed))
        else:
            metric_log.clear_failure_tags(client, parent_id)
            # Timestamp 0: a rerun logs the same row again (not a second
            # point), so every `mean/*` has one value, at the last step.
            client.log_batch(
                parent_id,
                metrics=[
                    mlflow.entities.Metric(f"mean/{k}", v, 0, cfg.trainer.steps)
                    for k, v in summary.items()
                    if math.isfinite(v)
                ],
            )
            compare.log_variant_curves(client, parent_id, curves)
        report = _call_report(cfg, parent_id, True)
        client.set_terminated(parent_id, "FAILED" if failed else "FINISHED")
    except Exception as e:
        if not metric_log.unreachable(e):
            raise
        log.warning(
            "MLflow server unreachable (%s): parent run %s stays RUNNING; "
            "rerun the same command to finish it",
            metric_log.reason(e),
            parent_id,
        )
        return None, None
    return summary, report


def _call_report(cfg, parent_run_id, chief):
    """Calls the config's `report:` hook; returns what it returned."""
    if chief and cfg.report is not None:
        # Not recursive: `cfg` itself holds `_target_` nodes.
        return hydra.utils.call(
            cfg.report,
            cfg=cfg,
            parent_run_id=parent_run_id,
            _recursive_=False,
        )


# Worst exit code of the jobs of a `-m` sweep run in this process.
_SWEEP_EXIT = [ExitCode.OK]


def _in_multirun():
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


@hydra.main(
    version_base="1.3", config_path=str(CONF_DIR), config_name="train"
)
def main(cfg):
    """Hydra entry point; returns `optimized_metric` for sweepers.

    Exits with an `experiments.engine.exit_codes.ExitCode`: non-zero when a run
    ended FAILED or KILLED, or an input/config/storage error stopped it (a
    one-line `error:` on stderr). In a `-m` sweep each job returns NaN on
    failure (so Optuna marks the trial failed and goes on) and the process
    exits with the worst code once the sweep is done (`_cli`). A bug (any
    other exception) keeps Hydra's traceback and exit status 1.
    """
    result = None
    try:
        result = train(cfg)
        code = exit_code_for_result(result)
    except Exception as e:
        code = exit_code_for(e)
        if code == ExitCode.UNEXPECTED:
            raise
        print(f"error: {describe(e)}", file=sys.stderr)
    if result is not None:
        # One JSON line (scripts), then the summary for people.
        print(json.dumps(summary_lib.json_result(result)))
        print(summary_lib.format_summary(cfg, result), flush=True)
        if code:
            failed = _failures(result)
            print(f"error: {'; '.join(failed)}", file=sys.stderr)
    if code and not _in_multirun():
        sys.exit(int(code))
    _SWEEP_EXIT[0] = max(_SWEEP_EXIT[0], code)
    value = None if result is None else result.get(cfg.optimized_metric)
    return float("nan") if value is None or code else float(value)


def _failures(result, name=""):
    """`["<run>: <status> (<reason>)", ...]` of the failed runs in `result`."""
    out = []
    for child, sub in (result.get("children") or {}).items():
        out += _failures(sub, child)
    if not result.get("children") and result.get("status") != "FINISHED":
        reason = result.get("failure_reason", "")
        out.append(
            f"run {name or result.get('run_id')} {result.get('status')}"
            + (f" ({reason})" if reason else "")
        )
    return out


def _cli():
    """`python -m experiments.train`: `main`, then the sweep's exit code."""
    main()
    sys.exit(int(_SWEEP_EXIT[0]))


if __name__ == "__main__":
    _cli()
