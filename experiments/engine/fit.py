"""The fit loop of one run: restore, callbacks, `model.fit`, final scores.

`fit_run` is called by `experiments.engine.run` with the MLflow run active
and the data, model and optimizer built (`experiments.engine.build`). Its
stages, one function each:

1. `restore`: a resumed run loads its newest checkpoint (weights, optimizer
   step, seed-generator states) and checks the step matches `state.json`;
2. `_callbacks`: the step logger (windowed metrics, NaN guard, progress),
   the step checkpointer, the plateau LR callback and the config's
   `callbacks:`;
3. `model.fit`, step-based: Keras epochs are `fit_chunk_steps` steps;
4. `_final_scores`: the last evaluation (or a new one when the run did not
   end on an evaluation step) and, with `trainer.bn_population_stats`, the
   scores after recomputing the BN population statistics (BN paper Alg. 2);
5. `experiments.engine.artifacts.log_run_artifacts`: model and figures.

Checkpoint/resume is our own rather than `keras.callbacks.BackupAndRestore`:
that restores at epoch granularity into a new process but knows nothing of
the MLflow run, the data position or the metric de-duplication that a
resume into the same run needs.
"""

import hydra
import keras

from convnet_repro.experiments.engine import artifacts
from convnet_repro.experiments.engine import build
from convnet_repro.experiments.engine import callbacks as cbs
from convnet_repro.experiments.engine import compat
from convnet_repro.experiments.engine import distribute
from convnet_repro.experiments.engine import metric_keys as mk
from convnet_repro.experiments.engine import metric_log
from convnet_repro.experiments.engine import optimization
from convnet_repro.experiments.engine import progress
from convnet_repro.experiments.engine.config_checks import fit_chunk_steps
from convnet_repro.experiments.engine.config_schema import Strategy
from convnet_repro.experiments.engine.exit_codes import CheckpointError


def restore(model, optimizer, strategy, ckpt_dir, state, start_step):
    """Loads a resumed run's checkpoint into `model` and `optimizer`.

    Args:
        model: the built, compiled model.
        optimizer: its optimizer (built here, so its slots load too).
        strategy: the `tf.distribute` strategy.
        ckpt_dir: the run's checkpoint folder.
        state: the checkpoint's `state.json` content.
        start_step: the step the run resumes at.

    Raises:
        CheckpointError: the checkpoint file does not load.
        RuntimeError: the checkpoint holds another step than `state.json`.
    """
    with strategy.scope():
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


def _datasets(model, train_ds, val_ds, strategy_kind):
    """Labels repeated per model output, multi-worker sharding options."""
    out = []
    for ds in (train_ds, val_ds):
        ds = optimization.labels_for(model, ds)
        out.append(distribute.distribute_options(ds, strategy_kind))
    return out


def _callbacks(
    cfg, chief, run_id, ckpt_dir, buffer, model, lr_callback, tuning
):
    """The step logger first, then checkpointer, LR and config callbacks
    (`tuning`: the tuning split's stream, for those that score it)."""
    t = cfg.trainer
    chunk = fit_chunk_steps(t)
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
            every_steps=t.checkpoint_every_steps or t.eval_every_steps,
            state={"run_id": run_id},
            keep=t.keep_checkpoints,
            is_chief=chief,
        ),
    ]
    if lr_callback is not None:
        callbacks.append(lr_callback)
    for cb_cfg in (cfg.callbacks or {}).values():
        callback = hydra.utils.instantiate(cb_cfg, _convert_="all")
        if build.wants_tuning_split(cb_cfg):  # built beside train/val
            callback.set_tuning_data(tuning)
        callbacks.append(callback)
    return logger, callbacks


def _evaluate(model, val_ds, t, logger):
    """`val/*` metrics (with top-k errors) of one pass over `val_ds`."""
    metrics = model.evaluate(
        val_ds, steps=t.eval_steps, return_dict=True, verbose=0
    )
    return cbs.accuracy_to_error(
        {logger.metric_names.get(k, k): v for k, v in metrics.items()},
        prefix=mk.VAL_PREFIX,
    )


def _final_scores(model, train_ds, val_ds, t, logger, buffer, start_step):
    """The run's final `val/*` (and `val/*_population`) metrics, logged."""
    final = {}
    if t.steps % t.eval_every_steps or start_step >= t.steps:
        final = _evaluate(model, val_ds, t, logger)
        if buffer is not None:
            buffer.log(final, t.steps)
    else:
        for _, metrics in reversed(logger.history):
            if any(k.startswith(mk.VAL_PREFIX) for k in metrics):
                final = {
                    k: v
                    for k, v in metrics.items()
                    if k.startswith(mk.VAL_PREFIX)
                }
                break
    if t.bn_population_stats:
        from convnet_repro.layers import recompute_batch_norm_statistics

        recompute_batch_norm_statistics(
            model, train_ds, num_batches=t.bn_population_batches
        )
        population = {
            mk.population_key(k): v
            for k, v in _evaluate(model, val_ds, t, logger).items()
        }
        if buffer is not None:
            buffer.log(population, t.steps)
        final.update(population)
    return {k: float(v) for k, v in final.items()}


def fit_run(cfg, strategy, chief, run_id, ckpt_dir, state, resumed, built):
    """Trains (or finishes) one run inside its active MLflow run.

    Args:
        cfg: the run's config.
        strategy: the `tf.distribute` strategy.
        chief: whether this process logs and checkpoints.
        run_id: the MLflow run id (None on non-chief workers).
        ckpt_dir: the run's checkpoint folder.
        state: the checkpoint state to resume from, or None.
        resumed: whether the MLflow run existed (its logged steps are kept).
        built: `(train_ds, val_ds, tuning_ds, model, optimizer,
            lr_callback)` (`experiments.engine.build.build_run`).

    Returns:
        Final `val/*` metrics plus `status` (and `failure_reason` on a
        NaN/Inf loss).
    """
    t = cfg.trainer
    start_step = min(int(state["step"]), t.steps) if state else 0
    chunk = fit_chunk_steps(t)
    train_ds, val_ds, tuning_ds, model, optimizer, lr_callback = built
    if start_step:
        restore(model, optimizer, strategy, ckpt_dir, state, start_step)
    # The train stream already starts at batch `start_step`.
    train_ds, val_ds = _datasets(model, train_ds, val_ds, t.strategy)
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
    logger, callbacks = _callbacks(
        cfg, chief, run_id, ckpt_dir, buffer, model, lr_callback, tuning_ds
    )
    if start_step < t.steps:
        model.fit(
            train_ds,
            epochs=t.steps // chunk,
            initial_epoch=start_step // chunk,
            steps_per_epoch=chunk,
            validation_data=val_ds,
            validation_freq=t.eval_every_steps // chunk,
            validation_steps=t.eval_steps,
            callbacks=callbacks,
            shuffle=False,  # the data pipeline shuffles (seeded)
            verbose=0,
        )
    if logger.failure:
        return {"status": "FAILED", "failure_reason": logger.failure}
    final = _final_scores(
        model, train_ds, val_ds, t, logger, buffer, start_step
    )
    if buffer is not None and not buffer.close():
        # Metrics spilled; the rerun resumes here and logs model + figures.
        return {**final, "status": "FINISHED"}
    if chief:
        artifacts.log_run_artifacts(cfg, model, run_id)
    return {**final, "status": "FINISHED"}
