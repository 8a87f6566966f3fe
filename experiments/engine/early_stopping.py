"""Early stopping on the tuning split, resume-safe (a config callback).

`TuningEarlyStopping` is `keras.callbacks.EarlyStopping` (its improvement
test, `patience`, `min_delta`, `restore_best_weights`) fed by its own
evaluation of the *tuning split* (`experiments.data.holdout`) every
`every_steps`, logged under `tune/` (e.g. `tune/top1_accuracy`) so it is
never mistaken for the `val/` numbers of the validation set; optionally
with the papers' plateau schedule: the first `lr_drops` plateaus divide
the learning rate by 10 and reset the patience count, the next one stops
training (`keras.callbacks.ReduceLROnPlateau` cannot see the tuning metric
or share the plateau count). Patience counts tuning evaluations, not Keras
epochs. From a config (conf/fragment/imagenette_mini_long.yaml), with
`data.tuning_per_class` set:

    callbacks:
      early_stopping:
        _target_: >-
          convnet_repro.experiments.engine.early_stopping.TuningEarlyStopping
        every_steps: ${trainer.checkpoint_every_steps}
        checkpoint_every_steps: ${trainer.checkpoint_every_steps}
        patience: 5
        lr_drops: 2
        directory: ${paths.checkpoint_dir}/early_stopping

The tuning stream is not built here: a node without `data` is served the
one the engine's data step builds beside train and val
(`experiments.engine.build.wants_tuning_split`, `set_tuning_data`), with
the same preprocessing as val.

Resume (the engine restarts a killed run at its newest checkpoint, in a
new process, with fresh callbacks): `on_train_begin` rebuilds the state
(best value and step, evaluations without improvement) from the monitored
metric the MLflow run already holds up to the checkpoint's step, so a
resumed run stops where the uninterrupted one would. An evaluation due at
the checkpoint's own step but not logged (killed in between) is run then.
The best weights, needed after a resume, are written at each new best to
`<directory>/<run id>/best-step-<n>.npz` (the previous best file is
then deleted; the last one stays, like the run's checkpoints). This is exact
because every tuning evaluation falls on a checkpoint step (checked) and
the engine's checkpointer runs before config callbacks: a best file never
precedes its checkpoint, and the checkpoint of step n holds the lr from
before a drop decided at n (so a drop at the resume step is applied again,
older ones are not). The engine's metric buffer drops replayed steps.
Limits, stated: (1) a run whose newest checkpoint is corrupt falls back
to an older one whose best file may be gone; it then keeps the weights it
resumed from (a warning and the metric `tune/restored_best` = 0 say so);
(2) a run killed after it had already stopped, before the engine marked
it finished, trains one more chunk (its train metrics are logged), then
stops without evaluating and ends with the same weights; (3) the engine
skips `fit` for a run resumed at `trainer.steps`, so one killed between
reaching the cap and being marked finished keeps the cap's (last)
weights.

`keras.callbacks.BackupAndRestore` was considered for the state: it keeps
the epoch counter and weights, not the callback's best value, patience
count or best weights, and restores at epoch granularity only.
"""

import logging
import os
import pathlib

import keras
import numpy as np

from convnet_repro.experiments.engine import metric_log
from convnet_repro.experiments.engine import optimization
from convnet_repro.experiments.engine.callbacks import accuracy_to_error

log = logging.getLogger(__name__)

_MAX_NAMES = ("accuracy",)
_MIN_NAMES = ("loss", "error")


def _step(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def _mode_of(monitor, mode):
    if mode in ("min", "max"):
        return mode
    tail = monitor.rsplit("_", 1)[-1].rsplit("/", 1)[-1]
    if tail in _MAX_NAMES:
        return "max"
    if tail in _MIN_NAMES:
        return "min"
    raise ValueError(
        "TuningEarlyStopping cannot tell whether a larger "
        f"{monitor!r} is better; pass mode='max' or mode='min'. "
        f"Received: mode={mode!r}"
    )


def _logged_history(key, up_to):
    """`[(step, value)]` of `key` in the active MLflow run, steps <= up_to."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return []
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, key)
    return sorted({m.step: m.value for m in history if m.step <= up_to}.items())


class TuningEarlyStopping(keras.callbacks.EarlyStopping):
    """Evaluates the tuning split every `every_steps`; stops on a plateau.

    Args:
        every_steps: evaluation interval in steps; a multiple of
            `checkpoint_every_steps`.
        data: the stream scored, or a built `(train, eval)` pair whose
            second stream is scored; None: the run's tuning split, which
            the engine passes through `set_tuning_data`.
        checkpoint_every_steps: the run's checkpoint interval (0 or None:
            not checked; then resume is exact only at evaluation steps).
        monitor: logged key monitored (`tune/<metric>`).
        patience: evaluations without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
        mode: `max`, `min` or `auto` (from the name: accuracy is `max`,
            loss and error `min`).
        restore_best_weights: end with the weights of the best evaluation
            (else the last weights).
        directory: folder for the best weights across a resume (None: kept
            in memory only, not resume-safe).
        eval_steps: batches per evaluation (None: the whole split).
        prefix: key prefix of the logged metrics.
        lr_drops: plateaus that multiply the learning rate by `lr_factor`
            (and reset the patience count) before one stops training
            (needs a constant learning rate: `schedule: constant`).
        lr_factor: the factor of each drop.
    """

    def __init__(
        self,
        every_steps,
        data=None,
        checkpoint_every_steps=None,
        monitor="tune/top1_accuracy",
        patience=5,
        min_delta=0.0,
        mode="auto",
        restore_best_weights=True,
        directory=None,
        eval_steps=None,
        prefix="tune/",
        lr_drops=0,
        lr_factor=0.1,
    ):
        if not monitor.startswith(prefix):
            raise ValueError(
                f"monitor must be a `{prefix}` metric (the tuning split's), "
                f"e.g. {prefix}top1_accuracy. Received: monitor={monitor!r}"
            )
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(
                "patience counts tuning evaluations and must be an int >= 1."
                f" Received: patience={patience!r}"
            )
        every_steps = int(every_steps)
        if every_steps <= 0 or (
            checkpoint_every_steps and every_steps % checkpoint_every_steps
        ):
            raise ValueError(
                "every_steps must be a positive multiple of "
                "trainer.checkpoint_every_steps (a resumed run restarts at a "
                f"checkpoint). Received: every_steps={every_steps}, "
                f"checkpoint_every_steps={checkpoint_every_steps}"
            )
        super().__init__(
            monitor=monitor,
            min_delta=min_delta,
            patience=patience,
            mode=_mode_of(monitor, mode),
            restore_best_weights=restore_best_weights,
        )
        self.data = data
        self.every_steps = every_steps
        self.directory = pathlib.Path(directory) if directory else None
        self.eval_steps = eval_steps
        self.prefix = prefix
        self.lr_drops = int(lr_drops)
        self.lr_factor = float(lr_factor)
        self.drops = 0
        self.best_step = None
        self.stopped_step = None
        self.done = False  # the stopping rule already fired before a resume
        self._ds = None
        self._folder = None
        self._begin_weights = None
        self._restored_best = 1.0

    # --- data and evaluation ------------------------------------------
    def set_tuning_data(self, dataset):
        """The engine's tuning stream (built beside train and val)."""
        self.data = dataset

    def _stream(self):
        data = self.data
        if isinstance(data, (tuple, list)):
            if len(data) != 2:
                raise ValueError(
                    "TuningEarlyStopping's data must be a stream or a "
                    f"(train, eval) pair. Received: {len(data)} items"
                )
            data = data[1]
        if data is None:
            raise ValueError(
                "TuningEarlyStopping has no tuning data: set "
                "data.tuning_per_class (the engine then passes the tuning "
                "split) or give `data`."
            )
        return optimization.labels_for(self.model, data)

    def evaluate(self, step):
        """Scores the tuning split, logs `tune/*` at `step`; returns them."""
        if self._ds is None:
            self._ds = self._stream()
        raw = self.model.evaluate(
            self._ds, steps=self.eval_steps, return_dict=True, verbose=0
        )
        names = optimization.metric_names(self.model)
        metrics = accuracy_to_error(
            {names.get(k, k): float(v) for k, v in raw.items()},
            prefix=self.prefix,
        )
        if self.monitor not in metrics:
            raise ValueError(
                f"The tuning evaluation logs {sorted(metrics)}, not the "
                f"monitored {self.monitor!r}; fix `monitor`."
            )
        metric_log.log_metrics(metrics, step)
        return metrics

    # --- the stopping rule (Keras's, one call per evaluation) ----------
    def _observe(self, value, step, epoch, live):
        """One evaluation through Keras's rule; `live`: the model holds
        this step's weights and lr (False: replaying an older step)."""
        super().on_epoch_end(epoch, {self.monitor: value})
        if self.best is value:  # Keras keeps the improving value itself
            self.best_step = step
            if live and self.restore_best_weights:
                self._save_best(step)
        if self.model.stop_training and self.drops < self.lr_drops:
            # A plateau with drops left: lr / 10 and go on (the papers'
            # "divide by 10 when the error stops improving"). A replayed
            # older drop is not assigned again: the checkpoint resumed
            # from holds the optimizer's learning rate after it (the
            # checkpoint of a step is written before this callback runs
            # at that step, hence `live` at the resume step itself).
            self.model.stop_training = False
            self.stopped_epoch = 0
            self.wait = 0
            self.drops += 1
            if live:
                optimizer = self.model.optimizer
                old = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
                optimizer.learning_rate = old * self.lr_factor
                metric_log.log_metrics(
                    {f"{self.prefix}lr_drops": self.drops}, step
                )
        if self.model.stop_training:
            self.stopped_step = step

    def _best_path(self, step):
        return self._folder / f"best-step-{step}.npz"

    def _save_best(self, step):
        """Writes `model.get_weights()` (what Keras restores) atomically.

        A `.weights.h5` file was the first choice and does not fit: Keras
        saves (and `load_weights` restores) the optimizer's state with the
        model's, which would rewind the step count and the learning rate.
        """
        if self._folder is None:
            return
        self._folder.mkdir(parents=True, exist_ok=True)
        path = self._best_path(step)
        tmp = self._folder / f"tmp-{os.getpid()}.npz"
        with open(tmp, "wb") as f:
            np.savez(f, *self.model.get_weights())
        os.replace(tmp, path)
        for old in self._folder.glob("best-step-*.npz"):
            if old != path:
                old.unlink(missing_ok=True)

    def _best_from_file(self, step):
        path = self._best_path(step) if self._folder else None
        if path is None or not path.is_file():
            log.warning(
                "Early stopping: the best weights of step %d are gone (%s); "
                "this run ends with the weights it resumed from instead.",
                step,
                path,
            )
            self._restored_best = 0.0
            return self.model.get_weights()
        with np.load(path) as saved:
            return [saved[f"arr_{i}"] for i in range(len(saved.files))]

    # --- Keras hooks ----------------------------------------------------
    def on_train_begin(self, logs=None):
        if self._ds is None:  # fails before training without data
            self._ds = self._stream()
        super().on_train_begin(logs)
        if self.monitor_op is None:
            self._set_monitor_op()
        import mlflow

        run = mlflow.active_run()
        if self.directory is not None and run is not None:
            self._folder = self.directory / run.info.run_id
        step = _step(self.model)
        if step == 0:
            return
        history = _logged_history(self.monitor, step)
        if step % self.every_steps == 0 and all(s != step for s, _ in history):
            value = self.evaluate(step)[self.monitor]
            history.append((step, value))
        for s, value in history:
            self._observe(value, s, s // self.every_steps, live=s == step)
        self.done = bool(self.model.stop_training)
        self.model.stop_training = False  # Keras stops after a batch only
        if self.restore_best_weights and self.best_step is not None:
            if self.best_step == step:
                self.best_weights = self.model.get_weights()
            else:
                self.best_weights = self._best_from_file(self.best_step)
        if self.done:
            self._begin_weights = self.model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        step = _step(self.model)
        if self.done:  # resumed after the rule fired: stop, keep weights
            self.stopped_epoch = max(epoch, 1)
            self.model.stop_training = True
            return
        if step % self.every_steps:
            return
        value = self.evaluate(step)[self.monitor]
        self._observe(value, step, epoch, live=True)

    def on_train_end(self, logs=None):
        step = _step(self.model)
        if self._begin_weights is not None and not self.restore_best_weights:
            self.model.set_weights(self._begin_weights)
        super().on_train_end(logs)
        step = self.stopped_step if self.stopped_step is not None else step
        summary = {f"{self.prefix}stopped_step": float(step)}
        if self.best_step is not None:
            summary[f"{self.prefix}best_step"] = float(self.best_step)
            summary[f"{self.prefix}best_{self.monitor[len(self.prefix) :]}"] = (
                float(np.asarray(self.best))
            )
        if self.restore_best_weights:
            summary[f"{self.prefix}restored_best"] = self._restored_best
        metric_log.log_metrics(summary, step)
