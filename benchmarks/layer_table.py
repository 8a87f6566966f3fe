"""Turns layer-benchmark timings into table rows, Markdown and target checks.

A row is 8 strings: input label, mode, layer, compile s, step ms (min),
step ms (median), step ratio vs the best peer, compile ratio vs that peer
(a skipped layer keeps its reason in the compile column). Rows travel as
JSON from the other backends' child processes, so they stay plain tuples.
"""

import os
import platform
import sys

import keras

# How to install each optional backend, for the row of a missing one.
INSTALL = {
    "jax": "pip install -e '.[jax]'",
    "torch": "pip install torch --index-url "
    "https://download.pytorch.org/whl/cpu",
}


def progress(label, mode, name, result):
    """Prints one measurement (or its skip reason) to stderr."""
    if isinstance(result, str):
        text = result
    else:
        text = (
            f"compile {result[0]:.2f} s, step min {result[1] * 1e3:.1f} ms, "
            f"median {result[2] * 1e3:.1f} ms"
        )
    print(f"  [{label} | {mode}] {name}: {text}", file=sys.stderr, flush=True)


def to_rows(label, group, mode, results):
    """Rows of one measured group; ours (names with "(ours)") get their
    ratios to the fastest peer of the group."""
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


def skipped_backend_row(mode, reason):
    """The one row of a backend that could not run."""
    return ("all", mode, "all layers", reason, *[""] * 4)


def to_markdown(rows, header):
    """`header`, then the rows as one Markdown table."""
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


def _versions(devices):
    """`TF x on D, JAX y (jax.jit, XLA) on D, ...` for the backends run."""
    import importlib

    parts = []
    for backend, what in (
        ("tensorflow", "TF {}"),
        ("jax", "JAX {} (`jax.jit`, XLA)"),
        ("torch", "PyTorch {} (eager)"),
    ):
        if devices.get(backend):
            version = importlib.import_module(backend).__version__
            parts.append(f"{what.format(version)} on {devices[backend]}")
    return ", ".join(parts) or "no backend ran"


def header(quick, devices, load_start, seconds):
    """The paragraph above the table: command, machine, versions, load.

    Args:
        devices: `{backend: device name}` of the backends that ran.
    """
    return (
        "## Layer benchmark: forward+backward step and compile time\n\n"
        f"`python -m benchmarks.bench_layers{' --quick' if quick else ''}`"
        f" on {platform.machine()}, {os.cpu_count()} CPUs: "
        f"{_versions(devices)}, Keras {keras.__version__}, "
        "float32; one process per backend, run one after the other. Load "
        f"average at start {load_start:.1f}, at end {os.getloadavg()[0]:.1f} "
        "(timings are noisy when > CPUs: the machine is shared with other "
        "jobs, so compare the ratios, each measured against a peer in the "
        "same row group and run, rather than the absolute times). Step = "
        "one step computing the grads of sum(y^2) w.r.t. input and weights, "
        "min (as `timeit` advises) and median over repeats run round-robin "
        "across the layers of a row group; "
        "compile = first call (trace, XLA compile if on, one run; torch "
        "eager: the first run). Ratios < 1 mean ours is faster. Total "
        f"{seconds:.0f} s."
    )


def _ratio(row):
    """The float ratio of a row's "vs best peer" cell, or None."""
    cell = row[6].split("x", 1)[0]
    try:
        return float(cell)
    except ValueError:
        return None


def targets(rows, on_accelerator=False):
    """Markdown lines checking issue #16's CPU targets against `rows`:
    UnsharedConv2D (best of ours) at or under the best tf_keras
    LocallyConnected2D (TF group), TiledConv2D at or under 1.5x Conv2D
    (every backend and mode). `on_accelerator`: the rows were measured on
    a GPU/TPU, where the targets are only informative."""
    title = "### CPU targets (issue #16)"
    if on_accelerator:
        title += ", checked on the accelerator (set for CPUs: informative)"
    lines = ["", title, ""]
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
