"""Process exit codes of the command-line entry points, and their errors.

One table for `python -m convnet_repro.experiments.train` (and anything that
reuses
`exit_code_for`): a scheduler, `make` or CI can tell a typo from a diverged
run from a dead tracking server without reading logs.

| code | meaning |
|------|---------|
| 0 | every run FINISHED (or was already finished) |
| 1 | an unexpected error (a bug: Python traceback; also Hydra's own
  composition errors, e.g. an unknown key, which Hydra exits with itself) |
| 2 | config error (`ConfigError`), raised before any work |
| 3 | data error: missing, truncated or corrupt input file |
| 4 | diverged: a run stopped on a NaN/Inf loss (status FAILED) |
| 5 | infrastructure: tracking server/store, checkpoint or artifact folder |
| 6 | busy: the same run is already running (its lock is held) |
| 130 | interrupted (Ctrl-C / SIGINT; the run is marked KILLED) |

A multi-run (`variants:` / `seeds:` children or a Hydra `-m` sweep) exits
with the largest code of its runs, so "any child failed" is non-zero.
"""

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    UNEXPECTED = 1
    CONFIG = 2
    DATA = 3
    DIVERGED = 4
    INFRASTRUCTURE = 5
    BUSY = 6
    INTERRUPTED = 130


class DataError(ValueError):
    """An input file is missing, truncated or corrupt; names file and fix."""


class MissingDataError(FileNotFoundError):
    """A dataset was not found offline and may not be downloaded."""


class InfrastructureError(RuntimeError):
    """Storage the run needs (store, checkpoint/artifact folder) failed."""


class CheckpointError(InfrastructureError):
    """A checkpoint cannot be written or none of the kept ones is readable."""


class RunLockedError(RuntimeError):
    """Another live process is running the same run (same checkpoint key)."""


def exit_code_for(error):
    """The `ExitCode` of an exception raised by a run.

    Args:
        error: the exception (or None for success).

    Returns:
        An `ExitCode`.
    """
    # Imported here: this module stays importable without TF/MLflow.
    from convnet_repro.experiments.engine.config_schema import ConfigError
    from convnet_repro.experiments.engine.tracking import (
        TrackingUnavailableError,
    )

    if error is None:
        return ExitCode.OK
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(error, ConfigError):
        return ExitCode.CONFIG
    if isinstance(error, (DataError, MissingDataError)):
        return ExitCode.DATA
    if _is_decode_error(error):
        return ExitCode.DATA
    if isinstance(error, RunLockedError):
        return ExitCode.BUSY
    if isinstance(error, (InfrastructureError, TrackingUnavailableError)):
        return ExitCode.INFRASTRUCTURE
    return ExitCode.UNEXPECTED


def _is_decode_error(error):
    # tf.errors.InvalidArgumentError of a decode op in the tf.data graph
    # (by name: this module does not import TensorFlow).
    return type(error).__name__ == "InvalidArgumentError" and (
        "Decode" in str(error)
    )


def describe(error):
    """One line for `error: ...` on stderr.

    An image that fails to decode inside the training pipeline (with
    `data.cache=false` files are decoded per step, after only the cheap
    header/trailer check) raises TensorFlow's multi-line graph error
    without a file name: it is reduced to its reason and the fix.
    """
    if _is_decode_error(error):
        reason = str(error).strip().splitlines()[0].split("}} ")[-1]
        return (
            f"an image failed to decode during training ({reason.strip()}); "
            "rerun with data.cache=true to decode every file before "
            "training and name the bad one."
        )
    return " ".join(str(error).split("\n")[:1]) or type(error).__name__


def exit_code_for_result(result):
    """The `ExitCode` of a `train()` result (the worst of its children).

    Args:
        result: dict with `status`, maybe `failure_reason`, `exit_code`,
            `tracking_pending` (metrics left in a local file because the
            server was gone) and `children` (name -> such a dict).

    Returns:
        An `ExitCode`.
    """
    codes = [ExitCode.OK]
    for child in (result.get("children") or {}).values():
        codes.append(exit_code_for_result(child))
    if result.get("tracking_pending"):
        codes.append(ExitCode.INFRASTRUCTURE)  # metrics kept in a file
    if "exit_code" in result:
        codes.append(ExitCode(result["exit_code"]))
    elif result.get("status") == "KILLED":
        codes.append(ExitCode.INTERRUPTED)
    elif result.get("status") == "FAILED" and not result.get("children"):
        reason = str(result.get("failure_reason", ""))
        codes.append(
            ExitCode.DIVERGED
            if reason.startswith("non-finite")
            else ExitCode.UNEXPECTED
        )
    return max(codes)
