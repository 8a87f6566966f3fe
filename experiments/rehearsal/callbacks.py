"""Keras callbacks the rehearsal adds to a run through `callbacks:`.

`callbacks:` is not part of the run key
(`experiments.engine.tracking.run_key`), so
adding them leaves the run, its checkpoint folder and its resume unchanged.
"""

import json
import pathlib
import time

import keras


class StepTimer(keras.callbacks.Callback):
    """Appends `{"step", "seconds", "first"}` per training step to a file.

    The time is from `on_train_batch_begin` to `on_train_batch_end` (one
    execution of `steps_per_execution` steps; the rehearsal uses 1), so
    evaluation and checkpointing are not counted. `first` marks the first
    step of a `fit` call (tracing and XLA compilation). A JSON-lines file
    rather than an MLflow metric: a killed-and-resumed step would otherwise
    log the same metric step twice.

    Args:
        path: JSON-lines file (appended to; shared by the runs of a
            rehearsal).
    Each line's `run` is the active MLflow run id (the engine sets it
    during `fit`), so the children of a multi-run experiment stay apart.
    """

    def __init__(self, path):
        super().__init__()
        self.path = pathlib.Path(path)
        self._start = None
        self._first = True

    def on_train_begin(self, logs=None):
        self._first = True

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        seconds = time.perf_counter() - self._start
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(
                json.dumps(
                    {
                        "run": _active_run_id(),
                        "step": step,
                        "seconds": seconds,
                        "first": self._first,
                    }
                )
                + "\n"
            )
        self._first = False


def _active_run_id():
    import mlflow

    run = mlflow.active_run()
    return run.info.run_id if run else ""


class Interrupt(keras.callbacks.Callback):
    """Raises `KeyboardInterrupt` (what Ctrl-C raises) at `at_step`, once.

    The in-process stand-in for a kill: the engine marks the run KILLED
    and re-raises, the checkpoint on disk is the last one written, and the
    same `train(cfg)` call resumes it. Unlike `os._exit`, the Python
    process (its imports, decoded-image cache) survives, which is why it is
    cheaper; the subprocess kill (`experiments.engine.callbacks.FaultInjection`)
    is the faithful one.

    Args:
        at_step: global optimizer step at which to interrupt.
        flag: file created when it fires; an existing file disarms it (so
            the resumed run is not interrupted again).
    """

    def __init__(self, at_step, flag):
        super().__init__()
        self.at_step = at_step
        self.flag = pathlib.Path(flag)

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step >= self.at_step and not self.flag.exists():
            self.flag.parent.mkdir(parents=True, exist_ok=True)
            self.flag.touch()
            raise KeyboardInterrupt(f"rehearsal interrupt at step {step}")
