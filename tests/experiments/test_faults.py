"""Fault injection, fast part: bad configs, inputs, checkpoints and locks.

Each test injects one fault (a NaN hyperparameter, a truncated file, a
corrupt checkpoint, a held lock, an unwritable folder) and checks what the
user gets: a one-line error naming the file or key and the fix, the exit
code class, what is kept, and that no MLflow run is left behind when the
fault is in the input. The CLI and multi-process faults are in
`test_faults_slow.py`.
"""

import gzip
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.data import idx_format
from convnet_repro.experiments.data import image_folder
from convnet_repro.experiments.data import pipeline
from convnet_repro.experiments.engine import checkpoints
from convnet_repro.experiments.engine import exit_codes
from convnet_repro.experiments.engine import tracking
from convnet_repro.experiments.engine import train as train_lib
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.config_checks import validate_config
from convnet_repro.experiments.engine.config_schema import ConfigError
from convnet_repro.experiments.engine.exit_codes import ExitCode
from convnet_repro.experiments.engine.exit_codes import MissingDataError

SMOKE = ["experiment=smoke"]
DATA_ROOT = pathlib.Path(os.environ.get("CONVNET_REPRO_DATA_DIR", "/nonexist"))
IMAGENETTE = DATA_ROOT / "imagenette2-224"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _runs(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns.db")
    experiments = client.search_experiments()
    return client.search_runs([e.experiment_id for e in experiments])


# --------------------------------------------------------------------------
# Exit codes and config validation
# --------------------------------------------------------------------------


def test_exit_codes_of_errors_and_results():
    assert exit_codes.exit_code_for(ConfigError("x")) == ExitCode.CONFIG
    data_error = exit_codes.DataError("x")
    assert exit_codes.exit_code_for(data_error) == ExitCode.DATA
    missing = MissingDataError("x")
    assert exit_codes.exit_code_for(missing) == ExitCode.DATA
    unreachable = tracking.TrackingUnavailableError("x")
    assert exit_codes.exit_code_for(unreachable) == ExitCode.INFRASTRUCTURE
    ckpt = exit_codes.CheckpointError("x")
    assert exit_codes.exit_code_for(ckpt) == ExitCode.INFRASTRUCTURE
    locked = exit_codes.RunLockedError("x")
    assert exit_codes.exit_code_for(locked) == ExitCode.BUSY
    assert exit_codes.exit_code_for(RuntimeError("x")) == ExitCode.UNEXPECTED
    ok = {"status": "FINISHED"}
    diverged = {"status": "FAILED", "failure_reason": "non-finite loss (nan)"}
    assert exit_codes.exit_code_for_result(ok) == ExitCode.OK
    assert exit_codes.exit_code_for_result(diverged) == ExitCode.DIVERGED
    # A multi-run: any failed child makes the whole command fail.
    parent = {"status": "FAILED", "children": {"a": ok, "b": diverged}}
    assert exit_codes.exit_code_for_result(parent) == ExitCode.DIVERGED
    killed = {"status": "KILLED"}
    assert exit_codes.exit_code_for_result(killed) == ExitCode.INTERRUPTED
    # Finished, but the server was gone: metrics wait in a file for a rerun.
    pending = {"status": "FINISHED", "tracking_pending": True}
    assert exit_codes.exit_code_for_result(pending) == ExitCode.INFRASTRUCTURE


@pytest.mark.parametrize(
    "override, key",
    [
        ("optimizer.learning_rate=nan", "optimizer.learning_rate"),
        ("optimizer.learning_rate=inf", "optimizer.learning_rate"),
        ("optimizer.momentum=-inf", "optimizer.momentum"),
        ("schedule=step schedule.gamma=nan", "schedule.gamma"),
        ("data.noise=inf", "data.noise"),
    ],
)
def test_non_finite_hyperparameters_are_rejected(override, key):
    cfg = compose(SMOKE + override.split())
    with pytest.raises(ConfigError, match=rf"{key} must be a finite number"):
        validate_config(cfg)


def test_eval_interval_longer_than_the_run_is_warned_once(tmp_path, caplog):
    """Warned, not rejected; a sweep says it once, not once per child."""
    short = ["trainer.steps=10", "trainer.eval_every_steps=20"]
    (warning,) = validate_config(compose(SMOKE + short))
    assert "trainer.eval_every_steps=20 > trainer.steps=10" in warning
    assert validate_config(compose(SMOKE)) == []
    cfg = compose(SMOKE + short + ["seeds=[0,1]"], tmp_path=tmp_path)
    with caplog.at_level(logging.WARNING):
        assert train_lib.train(cfg)["status"] == "FINISHED"
    assert caplog.text.count("trainer.eval_every_steps=20 >") == 1


# --------------------------------------------------------------------------
# Checkpoints: atomic step folders, fallback, lock
# --------------------------------------------------------------------------


def _tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _save(model, directory, steps, keep=1):
    for step in steps:
        checkpoints.save_checkpoint(
            model, directory, step, {"run_id": "r"}, keep=keep
        )


def test_checkpoint_is_one_folder_and_old_ones_are_pruned(tmp_path):
    _save(_tiny_model(), tmp_path, [10, 20, 30], keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-20", "step-30"]
    state = checkpoints.read_checkpoint_state(tmp_path)
    assert state["step"] == 30 and state["run_id"] == "r"
    assert state["path"] == str(tmp_path / "step-30" / "checkpoint.keras")


@pytest.mark.parametrize("damage", ["truncate", "flip", "state", "missing"])
def test_corrupt_checkpoint_falls_back_to_the_previous_one(
    tmp_path, caplog, damage
):
    model = _tiny_model()
    _save(model, tmp_path, [10, 20], keep=1)
    newest = tmp_path / "step-20" / "checkpoint.keras"
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # inside a member: only the CRC check sees it
        data = bytearray(data)
        data[len(data) // 3] ^= 0xFF
        newest.write_bytes(bytes(data))
    elif damage == "state":
        (tmp_path / "step-20" / "state.json").write_text('{"step": ')
    else:
        newest.unlink()
    with caplog.at_level(logging.WARNING):
        state = checkpoints.read_checkpoint_state(tmp_path)
    assert state["step"] == 10
    assert "step-20" in caplog.text and "falling back" in caplog.text
    # Moved aside: kept for inspection, never read again; saving the
    # replayed step works.
    assert (tmp_path / "corrupt-step-20").is_dir()
    model.load_weights(state["path"])
    _save(model, tmp_path, [20], keep=1)
    assert checkpoints.read_checkpoint_state(tmp_path)["step"] == 20


def test_no_good_checkpoint_restarts_from_scratch(tmp_path):
    _save(_tiny_model(), tmp_path, [10], keep=0)
    (tmp_path / "step-10" / "checkpoint.keras").write_bytes(b"PK\x03\x04")
    assert checkpoints.read_checkpoint_state(tmp_path) is None


def test_save_killed_midway_leaves_previous_checkpoint_and_no_debris(
    tmp_path,
):
    model = _tiny_model()
    _save(model, tmp_path, [10])
    # A save killed before its rename: a half-written temporary folder.
    half = tmp_path / "tmp-step-20-12345"
    half.mkdir()
    (half / "checkpoint.keras").write_bytes(b"PK\x03\x04 half")
    assert checkpoints.read_checkpoint_state(tmp_path)["step"] == 10
    _save(model, tmp_path, [20])
    assert not half.exists()  # cleaned by the next save, no manual delete
    assert checkpoints.read_checkpoint_state(tmp_path)["step"] == 20


def test_single_file_layout_of_older_versions_is_still_read(tmp_path):
    model = _tiny_model()
    model.save(tmp_path / "checkpoint.keras")
    (tmp_path / "state.json").write_text('{"step": 7, "run_id": "r"}')
    state = checkpoints.read_checkpoint_state(tmp_path)
    assert state["step"] == 7
    assert state["path"] == str(tmp_path / "checkpoint.keras")
    _save(model, tmp_path, [10])
    assert not (tmp_path / "checkpoint.keras").exists()


def test_run_lock_stops_a_second_holder_and_is_released(tmp_path):
    with checkpoints.run_lock(tmp_path / "run"):
        with pytest.raises(exit_codes.RunLockedError) as info:
            with checkpoints.run_lock(tmp_path / "run"):
                pass
        message = str(info.value)
        assert f"pid {os.getpid()}" in message and "\n" not in message
    with checkpoints.run_lock(tmp_path / "run"):
        pass


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    code = (
        "import sys, time\n"
        "from experiments.engine.checkpoints import run_lock\n"
        "with run_lock(sys.argv[1]):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(exit_codes.RunLockedError, match=str(proc.pid)):
            with checkpoints.run_lock(tmp_path / "run"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with checkpoints.run_lock(tmp_path / "run"):  # stale file, no lock
        pass


def test_unwritable_checkpoint_folder_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(exit_codes.CheckpointError, match="not writable"):
        with checkpoints.run_lock(blocker / "exp" / "key"):
            pass


# --------------------------------------------------------------------------
# Bad inputs: named, and found before any MLflow run exists
# --------------------------------------------------------------------------


def _mnist_copy(tmp_path, truncate=None):
    folder = tmp_path / "mnist"
    shutil.copytree(DATA_ROOT / "mnist", folder)
    if truncate:
        path = folder / truncate
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return folder


@pytest.mark.skipif(not (DATA_ROOT / "mnist").is_dir(), reason="no MNIST")
def test_truncated_mnist_gz_is_named_before_any_run(tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    folder = _mnist_copy(tmp_path, truncate=name)
    with pytest.raises(exit_codes.DataError, match=f"mnist/{name}"):
        idx_format.read_idx(folder / name)
    cfg = compose(
        # The root config (tiny_cnn), not the smoke experiment: its fixture
        # data node is inline and would merge into `data=mnist`.
        ["data=mnist", f"data.local_dir={folder}", "seeds=[0,1]"],
        tmp_path=tmp_path,
    )
    with pytest.raises(exit_codes.DataError, match="truncated or corrupt"):
        train_lib.train(cfg)
    assert _runs(tmp_path) == []  # neither the parent nor a child


def _image_folder(root, corrupt):
    """`root/{train,val}/<cls>/` with 2 real JPEGs per class, one damaged."""
    val = sorted((IMAGENETTE / "val").iterdir())[:2]
    for split in ("train", "val"):
        for cls in val:
            target = root / split / cls.name
            target.mkdir(parents=True)
            for f in sorted(cls.iterdir())[:2]:
                shutil.copy(f, target / f.name)
    victim = sorted((root / "train" / val[0].name).iterdir())[0]
    data = victim.read_bytes()
    if corrupt == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    elif corrupt == "garbage":
        victim.write_bytes(b"<html>not found</html>")
    else:  # damaged scan data, intact start and end markers
        data = bytearray(data)
        data[len(data) // 2 : len(data) // 2 + 200] = b"\xff" * 200
        victim.write_bytes(bytes(data))
    return victim


@pytest.mark.skipif(not IMAGENETTE.is_dir(), reason="no Imagenette")
@pytest.mark.parametrize("corrupt", ["truncate", "garbage", "scan"])
def test_corrupt_jpeg_is_named_when_first_read(tmp_path, corrupt):
    victim = _image_folder(tmp_path / "imagenette2-224", corrupt)
    with pytest.raises(exit_codes.DataError, match=victim.name) as info:
        pipeline.make_datasets(
            "imagenette",
            batch_size=2,
            local_dir=str(tmp_path),
            source="local",
            decode_size=32,
            cache=corrupt == "scan",
        )
    assert "\n" not in str(info.value)
    assert "replace them" in str(info.value)


@pytest.mark.skipif(not IMAGENETTE.is_dir(), reason="no Imagenette")
def test_decode_error_during_training_is_one_data_line(tmp_path):
    # cache=false: damaged scan data passes the header/trailer check and
    # fails only when the step's batch is decoded.
    _image_folder(tmp_path / "imagenette2-224", "scan")
    train_ds, _ = pipeline.make_datasets(
        "imagenette",
        batch_size=4,
        local_dir=str(tmp_path),
        source="local",
        decode_size=32,
        cache=False,
    )
    with pytest.raises(Exception) as info:
        for _ in train_ds.take(3):
            pass
    assert exit_codes.exit_code_for(info.value) == ExitCode.DATA
    line = exit_codes.describe(info.value)
    assert "\n" not in line and "data.cache=true" in line


def test_image_check_accepts_real_formats(tmp_path):
    good = tmp_path / "a.png"
    keras.utils.save_img(good, np.zeros((4, 4, 3), np.uint8))
    assert image_folder.image_file_problem(good) is None
    padded = tmp_path / "b.jpg"
    keras.utils.save_img(padded, np.zeros((4, 4, 3), np.uint8))
    padded.write_bytes(padded.read_bytes() + b"\0" * 10)
    assert image_folder.image_file_problem(padded) is None
    good.write_bytes(good.read_bytes()[:-4])
    assert "truncated" in image_folder.image_file_problem(good)


def test_unbuildable_model_is_named_before_any_run(tmp_path):
    cfg = compose(
        [  # the root config's tiny_cnn (the smoke model is an inline MLP)
            "model.conv.kind=unshared",
            "model.input_shape=[null,null,1]",
        ],
        tmp_path=tmp_path,
    )
    with pytest.raises(ConfigError, match="UnsharedConv2D layer 'conv1"):
        train_lib.train(cfg)
    assert _runs(tmp_path) == []


def test_unwritable_checkpoint_and_artifact_folders_fail_before_runs(
    tmp_path,
):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = compose(SMOKE, tmp_path=tmp_path)
    cfg.paths.checkpoint_dir = f"{blocker}/ckpt"
    with pytest.raises(exit_codes.CheckpointError, match=f"{blocker}/ckpt"):
        train_lib.train(cfg)
    assert _runs(tmp_path) == []
    cfg = compose(SMOKE + ["experiment_name=other"], tmp_path=tmp_path)
    cfg.tracking.artifact_location = f"{blocker}/a"
    with pytest.raises(exit_codes.InfrastructureError, match="artifact"):
        train_lib.train(cfg)
    assert _runs(tmp_path) == []


def test_second_identical_command_stops_before_touching_the_run(tmp_path):
    cfg = compose(SMOKE, tmp_path=tmp_path)
    key = tracking.run_key(cfg)
    folder = tmp_path / "checkpoints" / "smoke" / key
    with checkpoints.run_lock(folder):  # the "first" command
        with pytest.raises(exit_codes.RunLockedError, match="already running"):
            train_lib.train(cfg)
    assert _runs(tmp_path) == []


def test_gzip_error_types_are_the_ones_read_idx_maps(tmp_path):
    # Guards the except clause: what a truncated / garbled .gz raises.
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"\0" * 1000)[:20])
    with pytest.raises(exit_codes.DataError, match="x.gz"):
        idx_format.read_idx(path)
    path.write_bytes(b"\x1f\x8b" + b"\0" * 30)
    with pytest.raises(exit_codes.DataError, match="x.gz"):
        idx_format.read_idx(path)
