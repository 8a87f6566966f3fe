"""`benchmarks.bench_layers`' table: which backend ran on which device."""

import keras

from benchmarks import layer_steps
from benchmarks import layer_table


def test_header_names_each_backend_that_ran_and_its_device():
    text = layer_table.header(False, {"jax": "NVIDIA H200 (gpu)"}, 0.5, 9.0)
    assert "JAX " in text and "on NVIDIA H200 (gpu)" in text
    assert "TF " not in text and "PyTorch" not in text  # they did not run


def test_targets_say_when_checked_on_an_accelerator():
    row = ("8x8", "JAX jit", "TiledConv2D t=2 (ours)", "1", "1", "1")
    row += ("2.00x Conv2D", "1.00x")
    cpu = layer_table.targets([row])
    gpu = layer_table.targets([row], on_accelerator=True)
    assert "TiledConv2D t=2 vs Conv2D: 2.00x (target <= 1.5x): missed" in cpu
    assert "accelerator" not in cpu and "informative" in gpu


def test_measure_group_times_every_candidate():
    candidates = {
        "keras Conv2D": (lambda: keras.layers.Conv2D(4, 3), None),
        "skipped one": (None, "skipped (memory)"),
    }
    results = layer_steps.measure_group(candidates, (2, 8, 8, 3), False, 3)
    compile_s, step_min, step_median = results["keras Conv2D"]
    assert 0 < step_min <= step_median and compile_s > 0
    assert results["skipped one"] == "skipped (memory)"
