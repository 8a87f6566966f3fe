"""Checkpoint storage of a run: atomic step folders, fallback, a run lock.

Layout of a run's checkpoint folder (`paths.checkpoint_dir/<exp>/<key>/`):

    .lock                     flock held by the process running the run
    step-40/checkpoint.keras  weights + optimizer state (`.keras` zip)
    step-40/state.json        step, MLflow run id, RNG seed states
    step-30/...               older ones kept (`trainer.keep_checkpoints`)

A checkpoint is written into `tmp-step-<n>-<pid>/` and switched in with one
`os.rename` to `step-<n>/`, so the two files appear together or not at all:
a kill at any moment leaves the previous checkpoints intact and at most a
`tmp-*` folder, removed by the next save. Reading tries the newest folder
first and checks it (`state.json` parses, the zip's CRCs match: ~0.8 s per
300 MB, once per resume); a corrupt one is named in a warning, moved aside
to `corrupt-step-<n>/` and the next older one is used; with none left the
run restarts from step 0. Either way the MLflow run keeps the steps it has
already logged and the replayed ones are dropped (`tracking.MetricBuffer`).

`run_lock` takes `fcntl.flock` on `.lock`: the kernel drops it when the
process dies (even on `kill -9`), so a stale lock never blocks, while a
second live process for the same run stops at once with `RunLockedError`.

Why not `keras.callbacks.BackupAndRestore`: it restores weights, optimizer
and the epoch/batch counters, but not what an exact resume needs here: the
data position (the seeded stream restarts at the checkpoint's step), the
Dropout/noise RNG states (`SeedGenerator` variables, not in a `.keras`
file), the MLflow run id, N kept older checkpoints with a fallback when the
newest is corrupt, and a lock against a second process; it also deletes
its backup when `fit` ends and writes its weights and JSON as two files.
"""

import contextlib
import fcntl
import json
import logging
import os
import pathlib
import shutil
import zipfile

from convnet_repro.experiments.engine.exit_codes import CheckpointError
from convnet_repro.experiments.engine.exit_codes import RunLockedError

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
CHECKPOINT_FILE = "checkpoint.keras"
LOCK_FILE = ".lock"
_PREFIX = "step-"


def _step_folders(directory):
    """Complete `step-<n>` folders, newest first."""
    found = []
    for path in pathlib.Path(directory).glob(f"{_PREFIX}*"):
        suffix = path.name[len(_PREFIX) :]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(model, directory, step, state, keep=0, is_chief=True):
    """Writes `step-<step>/{checkpoint.keras,state.json}` as one unit.

    Args:
        model: the compiled, trained `keras.Model`.
        directory: the run's checkpoint folder.
        step: global step saved.
        state: dict stored in `state.json` beside the step (e.g. run id).
        keep: older checkpoints to keep beside the newest.
        is_chief: False on non-chief workers (they write to a scratch dir).

    Raises:
        CheckpointError: the folder cannot be written (names it and the fix).
    """
    directory = pathlib.Path(directory)
    if not is_chief:
        # Every worker must take part in saving; only the chief's file counts.
        scratch = directory / f"worker-scratch-{os.getpid()}"
        scratch.mkdir(parents=True, exist_ok=True)
        model.save(scratch / CHECKPOINT_FILE)
        shutil.rmtree(scratch, ignore_errors=True)
        return
    tmp = directory / f"tmp-{_PREFIX}{int(step)}-{os.getpid()}"
    final = directory / f"{_PREFIX}{int(step)}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save(tmp / CHECKPOINT_FILE)
        seeds = [v.numpy().tolist() for v in seed_state_variables(model)]
        (tmp / STATE_FILE).write_text(
            json.dumps({**state, "step": int(step), "seed_states": seeds})
        )
        if final.exists():  # a replayed step (after a fallback)
            old = directory / f"trash-{final.name}-{os.getpid()}"
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, final)  # the one switch: both files or neither
    except OSError as e:
        raise CheckpointError(
            f"cannot write checkpoint {final} ({e.strerror or e}); free disk "
            "space or fix the folder's permissions, or set "
            f"paths.checkpoint_dir=<writable dir>. Received: step={step}"
        ) from e
    _prune(directory, keep)


def _prune(directory, keep):
    for path in _step_folders(directory)[keep + 1 :]:
        shutil.rmtree(path, ignore_errors=True)
    # Left-overs of killed saves (the run lock excludes live writers) and
    # the single-file layout of older versions.
    for path in directory.glob(f"tmp-{_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)
    for name in (CHECKPOINT_FILE, STATE_FILE, f"tmp-{CHECKPOINT_FILE}"):
        (directory / name).unlink(missing_ok=True)
    for path in directory.glob(f"{_PREFIX}*.keras"):
        path.unlink(missing_ok=True)


def _problem(folder):
    """Why the checkpoint in `folder` is unusable, or None if it is good."""
    ckpt, state_path = folder / CHECKPOINT_FILE, folder / STATE_FILE
    for path in (ckpt, state_path):
        if not path.is_file():
            return f"{path} is missing"
    try:
        state = json.loads(state_path.read_text())
        int(state["step"])
    except (ValueError, KeyError, TypeError, OSError) as e:
        return f"{state_path} is unreadable ({type(e).__name__}: {e})"
    try:
        with zipfile.ZipFile(ckpt) as archive:
            bad = archive.testzip()  # reads every member, checks its CRC
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"{ckpt} is truncated or corrupt ({e})"
    if bad is not None:
        return f"{ckpt} is corrupt (CRC mismatch in {bad})"
    return None


def _legacy_candidate(directory):
    """The single-file layout of older versions (read, never written)."""
    if (directory / CHECKPOINT_FILE).exists():
        return [directory]
    return []


def read_checkpoint_state(directory, heal=True):
    """The newest good checkpoint's `state.json`, or None.

    Corrupt or half-written checkpoints are skipped with a warning naming
    the file, and moved aside to `corrupt-step-<n>/`, so the next save
    cannot collide with them and they stay for inspection.

    Args:
        directory: the run's checkpoint folder.
        heal: move corrupt checkpoints aside (only the process holding the
            run lock should; non-chief workers only read).

    Returns:
        The state dict plus `"path"`: the `checkpoint.keras` to load; None
        when no usable checkpoint exists.
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return None
    for folder in _step_folders(directory) + _legacy_candidate(directory):
        problem = _problem(folder)
        if problem is None:
            state = json.loads((folder / STATE_FILE).read_text())
            return {**state, "path": str(folder / CHECKPOINT_FILE)}
        log.warning(
            "Checkpoint skipped: %s; falling back to an older checkpoint "
            "(or step 0). Kept for inspection as corrupt-%s; delete it "
            "when done.",
            problem,
            folder.name,
        )
        if not heal:
            continue
        if folder != directory:
            aside = directory / f"corrupt-{folder.name}"
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(folder, aside)
        else:
            (directory / CHECKPOINT_FILE).rename(
                directory / f"corrupt-{CHECKPOINT_FILE}"
            )
    return None


def ensure_writable_dir(directory):
    """Creates `directory` and proves it writable with a probe file.

    Raises:
        OSError: the folder cannot be created or written.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


@contextlib.contextmanager
def run_lock(directory):
    """Holds an exclusive `flock` on `directory/.lock` (one process per run).

    Creating the lock file also proves the folder is writable, before any
    MLflow run exists.

    Args:
        directory: the run's checkpoint folder (created if missing).

    Raises:
        CheckpointError: the folder cannot be created or written.
        RunLockedError: another live process holds the lock.
    """
    directory = pathlib.Path(directory)
    path = directory / LOCK_FILE
    try:
        ensure_writable_dir(directory)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CheckpointError(
            f"checkpoint folder {directory} is not writable "
            f"({e.strerror or e}); fix its permissions or set "
            "paths.checkpoint_dir=<writable dir>. "
            f"Received: directory={str(directory)!r}"
        ) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise RunLockedError(
            f"this run is already running (pid {holder or '?'} holds {path});"
            " wait for it to end or stop it, then rerun to resume. "
            f"Received: run key={directory.name}"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def seed_state_variables(model):
    """Dropout/noise RNG states (`SeedGenerator`), in model order.

    A `.keras` file does not restore them, so they travel in `state.json`:
    a resumed run then draws the same dropout masks as an uninterrupted one.
    """
    return [v for v in model.variables if "seed_generator_state" in v.path]


def restore_seed_states(model, state):
    """Assigns the RNG states saved by `save_checkpoint` to `model`."""
    saved = state.get("seed_states") or []
    variables = seed_state_variables(model)
    if len(saved) != len(variables):
        raise ValueError(
            f"checkpoint has {len(saved)} RNG states, the model "
            f"{len(variables)}; delete the checkpoint folder to restart. "
            f"Received: seed_states={saved}"
        )
    for variable, value in zip(variables, saved):
        variable.assign(value)
