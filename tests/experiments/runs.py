"""Runs the training entry point in a child process for the resume tests.

Shared by the tests that kill a run (`FaultInjection` armed by the
`REPRO_KILL` environment variable) and resume it: each run gets its own
MLflow store, checkpoints and outputs below a temporary folder.
"""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
TRAIN = "convnet_repro.experiments.train"


def store_overrides(tmp):
    """Hydra overrides that keep a run's store and files under `tmp`."""
    return [
        f"tracking.uri=sqlite:///{tmp}/mlruns.db",
        f"tracking.artifact_location={tmp}/mlartifacts",
        f"paths.checkpoint_dir={tmp}/checkpoints",
        f"paths.output_dir={tmp}/outputs",
    ]


def run_module(module, args, **env):
    """`python -m module *args` from the repository root, this checkout
    first on the path, `env` added to the environment; the finished
    `subprocess.CompletedProcess` (output captured as text)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=500,
    )


def run_killed(overrides):
    """Trains with `REPRO_KILL=1` in a child process (the armed
    `FaultInjection` callback exits it with status 3)."""
    return run_module(TRAIN, overrides, REPRO_KILL="1")
