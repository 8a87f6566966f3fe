"""Train one experiment: `python -m convnet_repro.experiments.train`.

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

    python -m convnet_repro.experiments.train experiment=bn_mnist \
        trainer.steps=2000
    python -m convnet_repro.experiments.train -m optimizer.learning_rate=0.1,0.5
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

import hydra  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from convnet_repro.experiments.engine import compare  # noqa: E402
from convnet_repro.experiments.engine import distribute  # noqa: E402
from convnet_repro.experiments.engine import progress  # noqa: E402
from convnet_repro.experiments.engine import summary as summary_lib  # noqa: E402
from convnet_repro.experiments.engine import tracking  # noqa: E402
from convnet_repro.experiments.engine.children import call_report  # noqa: E402
from convnet_repro.experiments.engine.children import expand_children  # noqa: E402
from convnet_repro.experiments.engine.children import train_children  # noqa: E402
from convnet_repro.experiments.engine.compose import CONF_DIR  # noqa: E402
from convnet_repro.experiments.engine.config_checks import validate_config  # noqa: E402
from convnet_repro.experiments.engine.exit_codes import ExitCode  # noqa: E402
from convnet_repro.experiments.engine.exit_codes import describe  # noqa: E402
from convnet_repro.experiments.engine.exit_codes import exit_code_for  # noqa: E402
from convnet_repro.experiments.engine.exit_codes import exit_code_for_result  # noqa: E402
from convnet_repro.experiments.engine.run import checkpoint_dir  # noqa: E402
from convnet_repro.experiments.engine.run import run_lock  # noqa: E402
from convnet_repro.experiments.engine.run import run_one  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["expand_children", "main", "train"]


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
    warnings = validate_config(cfg)
    children = expand_children(cfg)
    for child in children:
        warnings += validate_config(child.cfg)
    for message in dict.fromkeys(warnings):  # once each, not once per child
        log.warning(message)
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
            report = call_report(cfg, result.get("run_id"), chief)
            return {**result, "report": report} if report else result
        key = tracking.run_key(cfg, extra="parent")
        with run_lock(chief, checkpoint_dir(cfg, key)):
            return train_children(cfg, children, experiment_id, strategy, key)
    finally:
        progress.close()


# Worst exit code of the jobs of a `-m` sweep run in this process.
_SWEEP_EXIT = [ExitCode.OK]


def _in_multirun():
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
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
        if result.get("run_id") is not None:  # None on non-chief workers:
            # they have no tracking store (the chief reports the run).
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
    """`python -m convnet_repro.experiments.train`: `main`, then the exit code
    of the sweep."""
    main()
    sys.exit(int(_SWEEP_EXIT[0]))


if __name__ == "__main__":
    _cli()
