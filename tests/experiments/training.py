"""Helpers for the tests that train through the engine in-process: a run
with its report folder, metric histories, and a callback that acts once
the optimizer has taken a given number of steps.

The child-process runs of the resume tests are in `runs.py`.
"""

import keras


def train_with_report(tmp_path, overrides):
    """Trains the composed `overrides` with its store and files under
    `tmp_path` and the report written to `tmp_path / "results"`, without
    logging the model; asserts the run finished.

    Returns:
        `(result, results_dir)`: what `train()` returned and the report
        folder.
    """
    from convnet_repro.experiments.engine import train as train_lib
    from convnet_repro.experiments.engine.compose import compose

    results = tmp_path / "results"
    cfg = compose(
        [
            *overrides,
            f"report.results_dir={results}",
            "tracking.log_model=false",
        ],
        tmp_path=tmp_path,
    )
    out = train_lib.train(cfg)
    assert out["status"] == "FINISHED"
    return out, results


def metric_history(client, run_id, key):
    """`(step, value)` pairs of a run's metric `key`, sorted by step."""
    return sorted(
        (m.step, m.value) for m in client.get_metric_history(run_id, key)
    )


def global_step(model):
    """The steps `model`'s optimizer has taken, as an int."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class AtStep(keras.callbacks.Callback):
    """Calls `fire(step)` after every training batch once the optimizer has
    taken `at_step` steps; subclasses say what happens.

    Args:
        at_step: the global step from which `fire` is called.
    """

    def __init__(self, at_step):
        super().__init__()
        self.at_step = at_step

    def on_train_batch_end(self, batch, logs=None):
        step = global_step(self.model)
        if step >= self.at_step:
            self.fire(step)

    def fire(self, step):
        raise NotImplementedError
