"""Fault injection, slow part: real processes, exit codes, resume healing.

`python -m convnet_repro.experiments.train` is run as a subprocess, exactly as a
scheduler would, so the exit status checked is the process's own (Hydra's
`@hydra.main` ignores return values). See `test_faults.py` for the fast
in-process faults.
"""

import os
import pathlib
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.engine import checkpoints
from convnet_repro.experiments.engine import tracking
from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.compose import fresh_sqlite_store
from convnet_repro.experiments.engine.exit_codes import ExitCode
from tests.experiments.training import AtStep
from tests.experiments.training import metric_history

pytestmark = pytest.mark.slow
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SMOKE = ["experiment=smoke"]


def _cli(tmp_path, *overrides, multirun=False, timeout=600):
    fresh_sqlite_store(tmp_path / "mlruns.db")
    args = [
        sys.executable,
        "-m",
        "convnet_repro.experiments.train",
        *(["--multirun"] if multirun else []),
        *SMOKE,
        f"tracking.uri=sqlite:///{tmp_path}/mlruns.db",
        f"tracking.artifact_location={tmp_path}/mlartifacts",
        f"paths.checkpoint_dir={tmp_path}/checkpoints",
        f"hydra.run.dir={tmp_path}/outputs",
        f"hydra.sweep.dir={tmp_path}/multirun",
        "tracking.log_figures=false",
        *overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        args,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _errors(proc):
    return [line for line in proc.stderr.splitlines() if "error:" in line]


def _runs(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns.db")
    experiments = client.search_experiments()
    return client.search_runs([e.experiment_id for e in experiments])


def test_diverged_run_exits_non_zero(tmp_path):
    proc = _cli(tmp_path, "data.nan_after_batches=25")
    assert proc.returncode == ExitCode.DIVERGED, proc.stderr[-2000:]
    (line,) = _errors(proc)
    assert "FAILED (non-finite loss" in line
    (run,) = _runs(tmp_path)
    assert run.info.status == "FAILED"


def test_config_error_exits_2_before_any_run(tmp_path):
    proc = _cli(tmp_path, "optimizer.learning_rate=nan")
    assert proc.returncode == ExitCode.CONFIG, proc.stderr[-2000:]
    (line,) = _errors(proc)
    assert "optimizer.learning_rate must be a finite number" in line
    assert _runs(tmp_path) == []


def test_multi_run_with_one_diverged_child_exits_non_zero(tmp_path):
    proc = _cli(
        tmp_path,
        "variants={ok: {optimizer.learning_rate: 0.05}, "
        "big: {optimizer.learning_rate: 1e6}}",
        "trainer.steps=20",
    )
    assert proc.returncode == ExitCode.DIVERGED, proc.stderr[-2000:]
    runs = {
        r.data.tags.get("repro.child", "parent"): r for r in _runs(tmp_path)
    }
    assert runs["ok"].info.status == "FINISHED"
    assert runs["big"].info.status == "FAILED"
    assert runs["parent"].info.status == "FAILED"


def test_sweep_exits_with_its_worst_job_after_running_all(tmp_path):
    proc = _cli(
        tmp_path,
        "optimizer.learning_rate=1e6,0.05",
        "trainer.steps=20",
        multirun=True,
    )
    assert proc.returncode == ExitCode.DIVERGED, proc.stderr[-2000:]
    statuses = sorted(r.info.status for r in _runs(tmp_path))
    assert statuses == ["FAILED", "FINISHED"]  # the 2nd job still ran


def test_same_command_twice_stops_the_second(tmp_path):
    cfg = compose(SMOKE, tmp_path=tmp_path)
    folder = tmp_path / "checkpoints" / "smoke" / tracking.run_key(cfg)
    with checkpoints.run_lock(folder):  # the first command, still running
        proc = _cli(tmp_path)
    assert proc.returncode == ExitCode.BUSY, proc.stderr[-2000:]
    (line,) = _errors(proc)
    assert "already running" in line and str(os.getpid()) in line
    assert _runs(tmp_path) == []


def test_three_processes_create_a_fresh_store_at_once(tmp_path):
    code = (
        "import sys\n"
        "from experiments.engine import tracking\n"
        "print(tracking.configure({'uri': 'sqlite:///' + sys.argv[1], "
        "'artifact_location': sys.argv[2]}, 'exp'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    db, art = tmp_path / "fresh" / "mlruns.db", tmp_path / "art"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(db), str(art)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-2000:]
    assert len({out.split()[-1] for out, _ in outputs}) == 1  # one experiment


class CrashAt(AtStep):
    """Raises at `at_step` (an in-process crash; the run ends FAILED)."""

    def fire(self, step):
        raise RuntimeError(f"injected crash at step {step}")


def test_corrupt_newest_checkpoint_resumes_from_the_previous_one(tmp_path):
    overrides = SMOKE + [
        "trainer.keep_checkpoints=1",
        "tracking.log_model=false",
    ]
    crash = [
        "+callbacks.crash._target_=tests.experiments.test_faults_slow.CrashAt",
        "+callbacks.crash.at_step=30",
    ]
    with pytest.raises(RuntimeError, match="injected crash"):
        train_lib.train(compose(overrides + crash, tmp_path=tmp_path))
    cfg = compose(overrides, tmp_path=tmp_path)
    folder = tmp_path / "checkpoints" / "smoke" / tracking.run_key(cfg)
    assert sorted(p.name for p in folder.glob("step-*")) == [
        "step-10",
        "step-20",
    ]
    newest = folder / "step-20" / "checkpoint.keras"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated

    result = train_lib.train(cfg)  # the same command again
    assert result["status"] == "FINISHED"
    client = MlflowClient()
    run = client.get_run(result["run_id"])
    assert run.data.tags["resumed_from_step"] == "10"
    assert (folder / "corrupt-step-20").is_dir()
    # Steps 10..30 were replayed: each step still logged exactly once, and
    # the values equal an uninterrupted run's.
    reference = train_lib.train(
        compose(overrides + ["tracking.resume=false"], tmp_path=tmp_path)
    )
    for key in ("train/loss", "val/loss"):
        got = metric_history(client, run.info.run_id, key)
        want = metric_history(client, reference["run_id"], key)
        assert [s for s, _ in got] == [s for s, _ in want], key
        assert [v for _, v in got] == pytest.approx(
            [v for _, v in want], rel=1e-6
        )
    assert [s for s, _ in got] == [20, 40]
