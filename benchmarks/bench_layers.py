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
machine are noisy: the load average is printed with the table.
"""

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

if keras.backend.backend() == "tensorflow":  # the child runs without it
    import tensorflow as tf

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
MAX_SECONDS_PER_MEASURE = 4.0  # stop repeating (after 2) past this


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


def _compile(make_layer, shape, jit):
    """Builds a forward+backward step; returns (step, x, compile_seconds)."""
    if keras.backend.backend() == "jax":
        return _compile_jax(make_layer, shape)
    if keras.backend.backend() == "torch":
        return _compile_torch(make_layer, shape)
    layer = make_layer()
    layer.build(shape)
    x = tf.random.stateless_normal(shape, seed=(1, 2))
    weights = layer.trainable_weights

    @tf.function(jit_compile=jit)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.square(tf.cast(y, tf.float32)))
        return tape.gradient(loss, [x, *weights])

    start = time.perf_counter()
    _run(step, x)
    return step, x, time.perf_counter() - start


def _compile_jax(make_layer, shape):
    """`jax.jit` of the same step through `layer.stateless_call`."""
    import jax

    layer = make_layer()
    layer.build(shape)
    x = jax.random.normal(jax.random.key(1), shape)
    weights = [v.value for v in layer.trainable_variables]

    def loss(x, weights):
        y, _ = layer.stateless_call(weights, [], x)
        return jax.numpy.sum(jax.numpy.square(y.astype("float32")))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))

    def step(x):
        gx, gw = grad(x, weights)
        return [gx, *gw]

    start = time.perf_counter()
    _run(step, x)
    return step, x, time.perf_counter() - start


def _compile_torch(make_layer, shape):
    """The same step in PyTorch eager mode, with `torch.autograd.grad`."""
    import torch

    layer = make_layer()
    layer.build(shape)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=generator).requires_grad_(True)
    weights = [v.value for v in layer.trainable_variables]

    def step(x):
        y = layer(x)
        loss = torch.sum(torch.square(y.float()))
        return torch.autograd.grad(loss, [x, *weights])

    start = time.perf_counter()
    _run(step, x)
    return step, x, time.perf_counter() - start


def _run(step, x):
    grads = step(x)
    for g in grads:
        np.asarray(g)  # waits for the device (TF, JAX; torch CPU is eager)


_OpError = (
    tf.errors.OpError
    if keras.backend.backend() == "tensorflow"
    else (RuntimeError)
)


def _measure_group(candidates, shape, jit, reps):
    """Compiles every candidate, then times them round-robin (so machine
    load affects all alike). Returns {name: (compile_s, min_s, median_s)}
    or {name: "skipped (...)"}."""
    compiled, results = {}, {}
    for name, (make, skip) in candidates.items():
        if skip is not None:
            results[name] = skip
            continue
        try:
            compiled[name] = _compile(make, shape, jit)
        except (_OpError, MemoryError) as err:
            msg = str(err).splitlines()[0][:60]
            results[name] = f"skipped (error: {type(err).__name__}: {msg})"
    times = {name: [] for name in compiled}
    for i in range(reps):
        for name, (step, x, _) in compiled.items():
            start = time.perf_counter()
            _run(step, x)
            times[name].append(time.perf_counter() - start)
        total = max(sum(t) for t in times.values()) if times else 0.0
        if i >= 1 and total > MAX_SECONDS_PER_MEASURE:
            break
    for name, (_, _, compile_s) in compiled.items():
        ts = times[name]
        results[name] = (compile_s, min(ts), statistics.median(ts))
    return {name: results[name] for name in candidates}


def _reps(shape, quick):
    work = np.prod(shape)
    if quick:
        return 3
    return 3 if work > 2_000_000 else 15


def run(sizes, quick, modes):
    import tf_keras  # the peer; imported here only

    rows = []
    for label, shape, filters in sizes:
        reps = _reps(shape, quick)
        unshared = {
            f"UnsharedConv2D {impl} (ours)": (
                lambda impl=impl: layers.UnsharedConv2D(
                    filters, KERNEL, implementation=impl
                ),
                lambda mode: None,
            )
            for impl in ("patches", "slices")
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
        for t in (2, 3):
            tiled[f"TiledConv2D t={t} (ours)"] = (
                lambda t=t: layers.TiledConv2D(filters, KERNEL, tile_size=t),
                lambda mode: None,
            )
        for group, candidates in (("unshared", unshared), ("tiled", tiled)):
            for mode in modes:
                results = _measure_group(
                    {
                        name: (make, skip_rule(mode))
                        for name, (make, skip_rule) in candidates.items()
                    },
                    shape,
                    mode == "XLA",
                    reps,
                )
                for name, result in results.items():
                    _progress(label, mode, name, result)
                rows.extend(_rows(label, group, mode, results))
    rows.extend(_run_lrn(quick, modes))
    return rows


# The row label of each non-TF backend's mode.
BACKEND_MODES = {"jax": "JAX jit", "torch": "torch eager"}


def run_backend(sizes, quick):
    """This process's (non-TF) backend: our layers vs its Conv2D."""
    mode = BACKEND_MODES[keras.backend.backend()]
    rows = []
    for label, shape, filters in sizes:
        candidates = {
            "keras Conv2D": (lambda: keras.layers.Conv2D(filters, KERNEL), None)
        }
        for impl in ("patches", "slices"):
            candidates[f"UnsharedConv2D {impl} (ours)"] = (
                lambda impl=impl: layers.UnsharedConv2D(
                    filters, KERNEL, implementation=impl
                ),
                None,
            )
        for t in (2, 3):
            candidates[f"TiledConv2D t={t} (ours)"] = (
                lambda t=t: layers.TiledConv2D(filters, KERNEL, tile_size=t),
                None,
            )
        results = _measure_group(candidates, shape, True, _reps(shape, quick))
        for name, result in results.items():
            _progress(label, mode, name, result)
        rows.extend(_rows(label, "backend", mode, results))
    return rows


def _child_rows(backend, quick):
    """Runs `run_backend` under KERAS_BACKEND=backend; returns its rows."""
    mode = BACKEND_MODES[backend]
    if importlib.util.find_spec(backend) is None:
        reason = f"skipped ({backend} is not installed; {INSTALL[backend]})"
        return [("all", mode, "all layers", reason, *[""] * 4)]
    env = {**os.environ, "KERAS_BACKEND": backend}
    command = [sys.executable, "-m", "benchmarks.bench_layers", "--child"]
    if quick:
        command.append("--quick")
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        reason = f"skipped ({backend} run failed: exit {done.returncode})"
        return [("all", mode, "all layers", reason, *[""] * 4)]
    return [tuple(row) for row in json.loads(done.stdout)]


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
        results = _measure_group(
            candidates, shape, mode == "XLA", 3 if quick else 15
        )
        for name, result in results.items():
            _progress(label, mode, name, result)
        rows.extend(_rows(label, "lrn", mode, results))
    return rows


def _progress(label, mode, name, result):
    if isinstance(result, str):
        text = result
    else:
        text = (
            f"compile {result[0]:.2f} s, step min {result[1] * 1e3:.1f} ms, "
            f"median {result[2] * 1e3:.1f} ms"
        )
    print(f"  [{label} | {mode}] {name}: {text}", file=sys.stderr, flush=True)


def _rows(label, group, mode, results):
    ours = [n for n in results if "(ours)" in n]
    peers = {
        n: r
        for n, r in results.items()
        if n not in ours and not isinstance(r, str)
    }
    best = min(peers.items(), key=lambda kv: kv[1][1]) if peers else None
    rows = []
    for name, result in results.items():
        if isinstance(result, str):
            rows.append((label, mode, name, result, "", "", "", ""))
            continue
        compile_s, step_s, median_s = result
        step_ratio = compile_ratio = ""
        if name in ours and best is not None:
            step_ratio = f"{step_s / best[1][1]:.2f}x {best[0].split()[-1]}"
            compile_ratio = f"{compile_s / best[1][0]:.2f}x"
            if group == "unshared":
                step_ratio = f"{step_s / best[1][1]:.2f}x (best: {best[0][9:]})"
        rows.append(
            (
                label,
                mode,
                name,
                f"{compile_s:.2f}",
                f"{step_s * 1e3:.1f}",
                f"{median_s * 1e3:.1f}",
                step_ratio,
                compile_ratio,
            )
        )
    return rows


def to_markdown(rows, header):
    lines = [
        header,
        "",
        "| input -> filters (3x3, valid) | mode | layer | compile s "
        "| step ms (min) | step ms (median) | step (min) vs best peer "
        "| compile vs that peer |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


INSTALL = {
    "jax": "pip install -e '.[jax]'",
    "torch": "pip install torch --index-url "
    "https://download.pytorch.org/whl/cpu",
}


def _versions(backends):
    """`, JAX x (jax.jit, XLA), PyTorch y (eager)` for the installed ones."""
    from importlib import metadata

    text = ""
    for backend, what in (("jax", "`jax.jit`, XLA"), ("torch", "eager")):
        if backend in backends and importlib.util.find_spec(backend):
            name = "JAX" if backend == "jax" else "PyTorch"
            text += f", {name} {metadata.version(backend)} ({what})"
    return text


def _ratio(row):
    """The float ratio of a row's "vs best peer" cell, or None."""
    cell = row[6].split("x", 1)[0]
    try:
        return float(cell)
    except ValueError:
        return None


def targets(rows):
    """Markdown lines checking issue #16's CPU targets against `rows`:
    UnsharedConv2D (best of ours) at or under the best tf_keras
    LocallyConnected2D (TF group), TiledConv2D at or under 1.5x Conv2D
    (every backend and mode)."""
    lines = ["", "### CPU targets (issue #16)", ""]
    best = {}
    for row in rows:
        label, mode, name = row[:3]
        ratio = _ratio(row)
        if ratio is None or "(ours)" not in name:
            continue
        if name.startswith("UnsharedConv2D") and mode in ("graph", "XLA"):
            if "LocallyConnected2D" not in row[6]:
                continue
            what = "UnsharedConv2D (best of ours) vs best LocallyConnected2D"
            key = (label, mode, what)
            best[key] = min(ratio, best.get(key, ratio))
        elif name.startswith("TiledConv2D"):
            key = (label, mode, f"{name[:-7]} vs Conv2D")
            best[key] = ratio
        else:
            continue
    for (label, mode, what), ratio in best.items():
        limit = 1.0 if what.startswith("Unshared") else 1.5
        verdict = "met" if ratio <= limit else "missed"
        lines.append(
            f"- {label} | {mode} | {what}: {ratio:.2f}x "
            f"(target <= {limit:g}x): {verdict}"
        )
    if len(lines) == 3:
        lines.append("- no measured rows")
    return "\n".join(lines) + "\n"


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
    if args.child:  # one non-TF backend's rows, as JSON on stdout
        sizes = QUICK_SIZES if args.quick else SIZES
        print(json.dumps(run_backend(sizes, args.quick)))
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
    sizes = QUICK_SIZES if args.quick else SIZES
    rows = run(sizes, args.quick, modes) if "tensorflow" in backends else []
    for backend in backends:
        if backend != "tensorflow":
            rows.extend(_child_rows(backend, args.quick))
    header = (
        "## Layer benchmark: forward+backward step and compile time\n\n"
        f"`python -m benchmarks.bench_layers{' --quick' if args.quick else ''}`"
        f" on {platform.machine()}, {os.cpu_count()} CPUs, TF "
        f"{tf.__version__}{_versions(backends)}, Keras {keras.__version__}, "
        "float32; one process per backend, run one after the other. Load "
        f"average at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f} "
        "(timings are noisy when > CPUs: the machine is shared with other "
        "jobs, so compare the ratios, each measured against a peer in the "
        "same row group and run, rather than the absolute times). Step = "
        "one step computing the grads of sum(y^2) w.r.t. input and weights, "
        "min (as `timeit` advises) and median over repeats run round-robin "
        "across the layers of a row group; "
        "compile = first call (trace, XLA compile if on, one run; torch "
        "eager: the first run). Ratios < 1 mean ours is faster. Total "
        f"{time.perf_counter() - start:.0f} s."
    )
    table = to_markdown(rows, header) + targets(rows)
    print(table)
    if output:
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        with open(output, "w") as f:
            f.write(table)
        print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
