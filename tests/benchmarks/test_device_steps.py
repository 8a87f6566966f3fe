"""`benchmarks.device_steps`: the plan, the measurement and its table."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from benchmarks import device_steps
from convnet_repro.experiments.engine import optimization
from tests.conftest import REPO_ROOT


def test_plan_holds_every_run_of_a_multi_run_config():
    plan = device_steps.plan_of(["imagenet_alexnet_5cnns"])
    runs = json.loads(json.dumps(plan))["imagenet_alexnet_5cnns"]
    assert len(runs) == 5  # the five CNNs of AlexNet Table 2
    assert {r["data"]["batch_size"] for r in runs} == {128}
    assert runs[0]["data"]["input_shape"] == [227, 227, 3]
    assert runs[0]["trainer"]["steps"] == 900_000
    cfg = device_steps.OmegaConf.create(runs[0])
    assert optimization.dtype_policy_name(cfg.trainer) == "float32"


def _tiny_plan(tmp_path):
    """imagenet_alexnet's run with a tiny CNN and batch: fast on a CPU."""
    (run,) = device_steps.plan_of(["imagenet_alexnet"])["imagenet_alexnet"]
    run["model"] = {
        "_target_": "convnet_repro.models.tiny.build_tiny_cnn",
        "input_shape": [16, 16, 3],
        "num_classes": 10,
    }
    run["data"] = {
        "batch_size": 4,
        "input_shape": [16, 16, 3],
        "num_classes": 10,
    }
    run["trainer"]["steps"] = 1000
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"imagenet_alexnet": [run]}))
    return path


def test_measures_each_policy_and_sums_the_runs_steps(tmp_path):
    plan, out = _tiny_plan(tmp_path), tmp_path / "steps.md"
    argv = ["--plan-in", str(plan), "--steps", "2", "--output", str(out)]
    (row,) = device_steps.main(argv + ["--policy", "config", "mixed_bfloat16"])
    (fp32,) = row["measured"]["config"]
    (bf16,) = row["measured"]["mixed_bfloat16"]
    assert fp32[0] == "float32" and bf16[0] == "mixed_bfloat16"
    assert fp32[1][0] > 0 and fp32[2] == 1000 and fp32[3] > 0
    text = out.read_text()
    assert "| imagenet_alexnet | tiny_cnn | 4 | 1 |" in text
    step_ms = f"{fp32[1][0] * 1e3:.1f}"
    assert f"| float32 | {step_ms} |" in text


def test_time_limit_leaves_rows_not_measured(tmp_path):
    plan, out = _tiny_plan(tmp_path), tmp_path / "steps.md"
    device_steps.main(
        ["--plan-in", str(plan), "--time-limit", "0", "--output", str(out)]
    )
    assert "| float32 | not measured (time limit) | - |" in out.read_text()


def test_rate_is_each_runs_own_macs_over_its_own_step():
    row = {
        "batch": 10,
        "measured": {
            "config": [
                ("float32", (0.01, 1.0), 100, 1e9),  # 6 TFLOP/s
                ("float32", (0.1, 1.0), 200, 2e9),  # 1.2 TFLOP/s
            ]
        },
    }
    cells = device_steps._cells(row, "config", gpu_tflops=60.0)
    # Not 2e9 MACs over the 0.01 s step (12 TFLOP/s): models never mix.
    assert cells[3:5] == ["6.0", "10%"]
    assert cells[5] == f"{(0.01 * 100 + 0.1 * 200) / 3600:,.1f}"
    assert cells[1] == "10.0-100.0"


def test_measures_under_jax_without_tensorflow_or_mlflow():
    """The GPU machine this ran on had JAX but no TensorFlow or MLflow."""
    pytest.importorskip("jax")
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        BLOCKED = ("tensorflow", "mlflow", "tf_keras")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked: {name}")
        sys.meta_path.insert(0, Block())
        import benchmarks.device_steps
        import convnet_repro.experiments.engine.optimization
        """
    )
    env = {"KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_without_an_accelerator_the_committed_table_is_not_overwritten(
    tmp_path, capsys
):
    with pytest.raises(SystemExit):
        device_steps.main(["--plan-in", str(_tiny_plan(tmp_path))])
    assert "sees no GPU/TPU" in capsys.readouterr().err
