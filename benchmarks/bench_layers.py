"""Benchmark of the custom convolutions against their peers.

    python -m benchmarks.bench_layers [--quick] [--output PATH]

Measures, in one process, the forward+backward time of one step (gradients
with respect to the weights and the input of `sum(y^2)`) and the compile
time (first call: tracing, XLA compilation when on, and one run) of

- `UnsharedConv2D` vs `tf_keras.layers.LocallyConnected2D` with
  `implementation=1` (a loop of per-position matmuls), `2` (a dense masked
  kernel) and `3` (a sparse kernel);
- `TiledConv2D` (t = 2, 3) vs `keras.layers.Conv2D`;
- `LocalResponseNormalization` vs `tf.nn.local_response_normalization`;

in TF graph mode (`tf.function`) and with XLA (`jit_compile=True`), at the
sizes of issue #2; then, for each other backend of `--backends`, in a child
process with `KERAS_BACKEND` set (Keras fixes one backend per process),
`UnsharedConv2D` and `TiledConv2D` vs that backend's `keras.layers.Conv2D`:
JAX under `jax.jit` (XLA), PyTorch eager (Keras's default there; with
`torch.compile` one layer's first step takes 44-98 s here). A backend that
is not installed gets a row saying so. This process merges the children's
rows (JSON on their stdout) into one table. Ratios compare like with like:
the same backend and mode, our layer over the best peer measured in the
same run, so machine load shifts both sides. Prints a Markdown table with
the CPU targets of issue #16 and writes it to `results/bench_layers.md`
(`--quick`: smaller run, no file unless `--output`). Timings on a shared
machine are noisy: the load average is printed with the table. Each
backend's device is named in the header; on a GPU machine without
TensorFlow, `--backends jax,torch` runs the other two (the driving process
then imports Keras under JAX), and their GPU rows go to
`results/bench_layers_gpu.md` with `--output`.

This module picks the layers and sizes and drives the run;
`benchmarks.layer_steps` compiles and times the steps on each backend,
`benchmarks.layer_table` makes the rows, the table and the target checks.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

# This process runs the TF rows; without TensorFlow (a JAX/torch GPU
# machine) it only drives the other backends' children.
os.environ.setdefault(
    "KERAS_BACKEND",
    "tensorflow" if importlib.util.find_spec("tensorflow") else "jax",
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

if keras.backend.backend() == "tensorflow":  # the child runs without it
    import tensorflow as tf

from benchmarks.layer_steps import measure_group  # noqa: E402
from benchmarks.layer_steps import reps_for  # noqa: E402
from benchmarks.layer_table import INSTALL  # noqa: E402
from benchmarks.layer_table import header  # noqa: E402
from benchmarks.layer_table import progress  # noqa: E402
from benchmarks.layer_table import skipped_backend_row  # noqa: E402
from benchmarks.layer_table import targets  # noqa: E402
from benchmarks.layer_table import to_markdown  # noqa: E402
from benchmarks.layer_table import to_rows  # noqa: E402
from benchmarks.machine import device_name  # noqa: E402
from convnet_repro import layers  # noqa: E402

# (label, input shape (B, H, W, C), filters); kernel 3x3, stride 1, valid.
SIZES = [
    ("32x28x28x16 -> 32", (32, 28, 28, 16), 32),
    ("32x56x56x64 -> 64", (32, 56, 56, 64), 64),
    ("128x8x8x32 -> 32", (128, 8, 8, 32), 32),
]
QUICK_SIZES = [
    ("16x14x14x8 -> 16", (16, 14, 14, 8), 16),
    ("128x8x8x32 -> 32", (128, 8, 8, 32), 32),
]
KERNEL = 3
LRN_SHAPE = (32, 32, 32, 24)  # AlexNet-style LRN input (B, H, W, C)
# Skip rules for the tf_keras peers (estimated before building anything).
MAX_DENSE_BYTES = 2**29  # impl 2 kernel (H*W*C, oh*ow*F) float32
MAX_IMPL1_POSITIONS = 1024  # impl 1 builds one matmul per output position
MAX_IMPL1_POSITIONS_XLA = 256  # XLA compile of 144 of them took ~20 s
MAX_SPARSE_NNZ = 20_000_000  # impl 3 keeps int64 indices per weight
# The row label of each non-TF backend's mode.
BACKEND_MODES = {"jax": "JAX jit", "torch": "torch eager"}


def _peer_skip_reason(impl, shape, filters, mode):
    _, h, w, c = shape
    oh, ow = h - KERNEL + 1, w - KERNEL + 1
    if impl == 1 and oh * ow > MAX_IMPL1_POSITIONS:
        return (
            f"skipped (too long: {oh * ow} per-position ops to trace, "
            f"> {MAX_IMPL1_POSITIONS})"
        )
    if impl == 1 and mode == "XLA" and oh * ow > MAX_IMPL1_POSITIONS_XLA:
        return (
            f"skipped (too long: XLA compile of {oh * ow} per-position "
            f"matmuls, > {MAX_IMPL1_POSITIONS_XLA})"
        )
    if impl == 3 and mode == "XLA":
        return (
            "skipped (XLA cannot compile its sparse ops: "
            "InvalidArgumentError, unsupported operations)"
        )
    if impl == 2:
        size = h * w * c * oh * ow * filters * 4
        if size > MAX_DENSE_BYTES:
            return f"skipped (memory: dense kernel {size / 2**30:.1f} GiB)"
    if impl == 3:
        nnz = oh * ow * KERNEL * KERNEL * c * filters
        if nnz > MAX_SPARSE_NNZ:
            return (
                f"skipped (memory: {nnz / 1e6:.0f}M sparse weights, "
                f"~{nnz * 24 / 2**30:.1f} GiB with indices)"
            )
    return None


def _ours_unshared(filters):
    return {
        f"UnsharedConv2D {impl} (ours)": (
            lambda impl=impl: layers.UnsharedConv2D(
                filters, KERNEL, implementation=impl
            )
        )
        for impl in ("patches", "slices")
    }


def _ours_tiled(filters):
    return {
        f"TiledConv2D t={t} (ours)": (
            lambda t=t: layers.TiledConv2D(filters, KERNEL, tile_size=t)
        )
        for t in (2, 3)
    }


def _measure(label, group, mode, candidates, shape, reps):
    """Times one group in one mode; prints progress, returns its rows."""
    results = measure_group(candidates, shape, mode == "XLA", reps)
    for name, result in results.items():
        progress(label, mode, name, result)
    return to_rows(label, group, mode, results)


def run(sizes, quick, modes):
    """TensorFlow: ours vs tf_keras LocallyConnected2D and keras Conv2D,
    then LRN, in each of `modes` ("graph", "XLA")."""
    import tf_keras  # the peer; imported here only

    rows = []
    for label, shape, filters in sizes:
        unshared = {
            name: (make, lambda mode: None)
            for name, make in _ours_unshared(filters).items()
        }
        for impl in (1, 2, 3):
            unshared[f"tf_keras LocallyConnected2D impl {impl}"] = (
                lambda impl=impl: tf_keras.layers.LocallyConnected2D(
                    filters, KERNEL, implementation=impl
                ),
                lambda mode, impl=impl: _peer_skip_reason(
                    impl, shape, filters, mode
                ),
            )
        tiled = {
            "keras Conv2D": (
                lambda: keras.layers.Conv2D(filters, KERNEL),
                lambda mode: None,
            )
        }
        for name, make in _ours_tiled(filters).items():
            tiled[name] = (make, lambda mode: None)
        for group, candidates in (("unshared", unshared), ("tiled", tiled)):
            for mode in modes:
                chosen = {
                    name: (make, skip_rule(mode))
                    for name, (make, skip_rule) in candidates.items()
                }
                rows += _measure(
                    label, group, mode, chosen, shape, reps_for(shape, quick)
                )
    rows.extend(_run_lrn(quick, modes))
    return rows


def run_backend(sizes, quick):
    """This process's (non-TF) backend: our layers vs its Conv2D."""
    mode = BACKEND_MODES[keras.backend.backend()]
    rows = []
    for label, shape, filters in sizes:
        makers = {"keras Conv2D": lambda: keras.layers.Conv2D(filters, KERNEL)}
        makers.update(_ours_unshared(filters))
        makers.update(_ours_tiled(filters))
        candidates = {name: (make, None) for name, make in makers.items()}
        # One mode per non-TF backend: JAX always jits, torch stays eager.
        rows += _measure(
            label, "backend", mode, candidates, shape, reps_for(shape, quick)
        )
    return rows


def _child_rows(backend, quick):
    """Runs `run_backend` under KERAS_BACKEND=backend; returns its rows and
    its device (None when it did not run)."""
    mode = BACKEND_MODES[backend]
    if importlib.util.find_spec(backend) is None:
        reason = f"skipped ({backend} is not installed; {INSTALL[backend]})"
        return [skipped_backend_row(mode, reason)], None
    env = {**os.environ, "KERAS_BACKEND": backend}
    command = [sys.executable, "-m", "benchmarks.bench_layers", "--child"]
    if quick:
        command.append("--quick")
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        reason = f"skipped ({backend} run failed: exit {done.returncode})"
        return [skipped_backend_row(mode, reason)], None
    child = json.loads(done.stdout)
    return [tuple(row) for row in child["rows"]], child["device"]


def _run_lrn(quick, modes):
    """LocalResponseNormalization (AlexNet's n=5, k=2) vs tf.nn."""
    shape = (8, 16, 16, 24) if quick else LRN_SHAPE
    label = "x".join(map(str, shape)) + " LRN"
    candidates = {
        "tf.nn.local_response_normalization": (
            lambda: keras.layers.Lambda(
                lambda x: tf.nn.local_response_normalization(
                    x, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75
                )
            ),
            None,
        ),
        "LocalResponseNormalization (ours)": (
            layers.LocalResponseNormalization,
            None,
        ),
    }
    rows = []
    for mode in modes:
        rows += _measure(
            label, "lrn", mode, candidates, shape, reps_for(shape, quick)
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run")
    parser.add_argument(
        "--output",
        default=None,
        help="Markdown file (default results/bench_layers.md; none if --quick)",
    )
    parser.add_argument(
        "--backends",
        default="tensorflow,jax,torch",
        help="comma-separated subset of tensorflow,jax,torch",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--modes",
        default="graph,XLA",
        help="comma-separated subset of graph,XLA",
    )
    args = parser.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else SIZES
    if args.child:  # one non-TF backend's rows and device, JSON on stdout
        rows = run_backend(sizes, args.quick)
        print(json.dumps({"rows": rows, "device": device_name()}))
        return
    backends = [b for b in args.backends.split(",") if b]
    for b in backends:
        if b not in ("tensorflow", *BACKEND_MODES):
            parser.error(f"unknown backend {b!r}; use tensorflow, jax, torch")
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in ("graph", "XLA"):
            parser.error(f"unknown mode {m!r}; use graph and/or XLA")
    output = args.output
    if output is None and not args.quick:
        output = os.path.join("results", "bench_layers.md")
    load = os.getloadavg()
    start = time.perf_counter()
    rows, devices = [], {}
    if "tensorflow" in backends:
        rows = run(sizes, args.quick, modes)
        devices["tensorflow"] = device_name()
    for backend in backends:
        if backend != "tensorflow":
            child_rows, devices[backend] = _child_rows(backend, args.quick)
            rows.extend(child_rows)
    seconds = time.perf_counter() - start
    text = header(args.quick, devices, load[0], seconds)
    on_accelerator = any(
        d and not d.startswith("CPU") for d in devices.values()
    )
    table = to_markdown(rows, text) + targets(rows, on_accelerator)
    print(table)
    if output:
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        with open(output, "w") as f:
            f.write(table)
        print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
