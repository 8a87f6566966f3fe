"""Keras callbacks of the step-based training engine.

The engine runs `model.fit` with one Keras "epoch" per `chunk` steps (the gcd
of the evaluation and checkpoint intervals), so the global step after batch
`b` of epoch `e` is `e * chunk + b + 1` (`b` is the last step of an
execution of `steps_per_execution` steps). Nothing here does per-step Python
work: callbacks run once per execution and act only on their intervals.

- `StepLogger`: train metrics averaged over each `log_every_steps` window,
  learning rate, eval metrics (with top-k errors), the NaN/Inf guard
  (stops training and records the reason; `keras.callbacks.TerminateOnNaN`
  also stops on a NaN/Inf loss, but leaves no reason for the MLflow run and
  the exit code, and nothing stops the checkpointer from saving the bad
  step); it feeds the experiment's
  `experiments.engine.progress.ExperimentProgress` (bar or plain lines).
- `StepCheckpointer`: a `.keras` checkpoint (weights + optimizer state) every
  `checkpoint_every_steps`, written atomically with its `state.json` (see
  `experiments.engine.checkpoints`), never after a bad loss.
- `FaultInjection`: kills the process at a step (tests of resume).

User callbacks (config `callbacks:`) get the global step as
`int(self.model.optimizer.iterations)` and log with
`experiments.engine.metric_log.log_metrics({key: value}, step)`: the same
resume-safe buffer as `StepLogger` (a resumed run drops steps it already
holds; values wait in memory while the tracking server is away).
"""

import math
import os
import pathlib

import keras

from convnet_repro.experiments.engine import metric_keys as mk
from convnet_repro.experiments.engine.checkpoints import CHECKPOINT_FILE  # noqa: F401
from convnet_repro.experiments.engine.checkpoints import STATE_FILE  # noqa: F401
from convnet_repro.experiments.engine.checkpoints import read_checkpoint_state  # noqa: F401
from convnet_repro.experiments.engine.checkpoints import restore_seed_states  # noqa: F401
from convnet_repro.experiments.engine.checkpoints import save_checkpoint


def accuracy_to_error(logs, prefix=""):
    """`{"top1_accuracy": a}` -> adds `"top1_error": 1 - a` (same prefix)."""
    out = {}
    for key, value in logs.items():
        out[f"{prefix}{key}"] = value
        if key.endswith("_accuracy"):
            out[f"{prefix}{mk.error_name(key)}"] = 1.0 - value
    return out


def current_learning_rate(optimizer):
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


class StepLogger(keras.callbacks.Callback):
    """Logs windowed train metrics and eval metrics at global steps.

    Train metrics in Keras logs are running means since the epoch start; the
    mean over the last window of `n_t - n_p` steps is recovered exactly (for
    a constant batch size) as `(m_t * n_t - m_p * n_p) / (n_t - n_p)`.

    Args:
        buffer: a `metric_log.MetricBuffer` (or None to log nothing).
        chunk_steps: steps per Keras epoch.
        total_steps: `trainer.steps`.
        log_every_steps: train-metric interval (0: only at epoch ends).
        progress: an `ExperimentProgress` told of every execution's step,
            loss and eval metrics (None: no progress display).
        metric_names: `{keras_log_key: logged_name}` renames (main output).
        progress_metric: the eval metric the progress line shows (the
            first `val/` metric when it is not logged).
    """

    def __init__(
        self,
        buffer,
        chunk_steps,
        total_steps,
        log_every_steps=0,
        progress=None,
        metric_names=None,
        progress_metric=mk.VAL_TOP1_ACCURACY,
    ):
        super().__init__()
        self.buffer = buffer
        self.chunk_steps = chunk_steps
        self.total_steps = total_steps
        self.log_every_steps = log_every_steps
        self.progress = progress
        self.progress_metric = progress_metric
        self.metric_names = metric_names or {}
        self.failure = None
        self.last_step = 0
        self.history = []  # (step, {name: value}) of everything logged

    def _rename(self, logs):
        return {self.metric_names.get(k, k): v for k, v in logs.items()}

    def _check_finite(self, value, step):
        if value is None or math.isfinite(value):
            return True
        self.failure = f"non-finite loss ({value}) at step {step}"
        self.model.stop_training = True
        return False

    def _emit(self, metrics, step):
        self.history.append((step, dict(metrics)))
        if self.buffer is not None:
            self.buffer.log(metrics, step)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._prev_n = 0
        self._prev = {}

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch * self.chunk_steps + batch + 1
        self.last_step = step
        logs = logs or {}
        if self.progress is not None:
            self.progress.update(step, loss=logs.get("loss"))
        if not self.log_every_steps or step % self.log_every_steps:
            return
        n = batch + 1
        window = {}
        for key, value in logs.items():
            prev = self._prev.get(key, 0.0)
            window[key] = (value * n - prev * self._prev_n) / (n - self._prev_n)
        self._prev, self._prev_n = dict(logs), n
        if not self._check_finite(window.get("loss"), step):
            return
        metrics = accuracy_to_error(
            self._rename(window), prefix=mk.TRAIN_PREFIX
        )
        metrics[mk.LR] = current_learning_rate(self.model.optimizer)
        self._emit(metrics, step)

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.chunk_steps
        logs = logs or {}
        if not self._check_finite(logs.get("loss"), self.last_step):
            return
        self.last_step = step
        val = {k[len("val_") :]: v for k, v in logs.items() if k[:4] == "val_"}
        if val:
            metrics = accuracy_to_error(self._rename(val), prefix=mk.VAL_PREFIX)
            self._emit(metrics, step)
            if self.progress is not None:
                key = self.progress_metric
                key = key if key in metrics else sorted(metrics)[0]
                self.progress.update(step, metric=(key, metrics[key]))
        if self.buffer is not None:
            self.buffer.flush()

    def on_train_end(self, logs=None):
        if self.buffer is not None:
            self.buffer.flush()


class StepCheckpointer(keras.callbacks.Callback):
    """Saves `step-<n>/{checkpoint.keras,state.json}` every `every_steps`.

    The checkpoint holds weights and optimizer state (the optimizer's
    `iterations` is the global step). `checkpoints.save_checkpoint` writes
    both files into a temporary folder switched in with one rename, so a
    kill during saving keeps the previous checkpoints. No checkpoint is
    written when the epoch's loss is not finite.

    Args:
        directory: checkpoint folder of this run.
        chunk_steps: steps per Keras epoch.
        every_steps: checkpoint interval (a multiple of `chunk_steps`).
        state: dict saved in `state.json` beside the step (e.g. run id).
        keep: older checkpoints to keep beside the newest.
        is_chief: False on non-chief workers (they write to a scratch dir).
    """

    def __init__(
        self,
        directory,
        chunk_steps,
        every_steps,
        state=None,
        keep=0,
        is_chief=True,
    ):
        super().__init__()
        self.directory = pathlib.Path(directory)
        self.chunk_steps = chunk_steps
        self.every_steps = every_steps
        self.state = dict(state or {})
        self.keep = keep
        self.is_chief = is_chief

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.chunk_steps
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            return
        if step % self.every_steps:
            return
        save_checkpoint(
            self.model,
            self.directory,
            step,
            self.state,
            self.keep,
            self.is_chief,
        )


class FaultInjection(keras.callbacks.Callback):
    """Simulates a crash: `os._exit(exit_code)` once `at_step` is reached.

    For tests of kill-and-resume. The global step is the optimizer's
    `iterations`, checked at the end of every execution.

    Args:
        at_step: global step at (or after) which to exit.
        exit_code: process exit status.
        env_var: if set, only fire when this environment variable is "1"
            (so the same command, rerun without it, resumes).
    """

    def __init__(self, at_step, exit_code=3, env_var=None):
        super().__init__()
        self.at_step = at_step
        self.exit_code = exit_code
        self.env_var = env_var

    def on_train_batch_end(self, batch, logs=None):
        armed = self.env_var is None or os.environ.get(self.env_var) == "1"
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if armed and step >= self.at_step:
            os._exit(self.exit_code)
