"""Training-step time of the full-scale models on this machine's accelerator.

    python -m benchmarks.device_steps [--configs NAME ...] [--policy P ...]
        [--steps 10] [--time-limit S] [--gpu-tflops 989.4] [--output PATH]
    python -m benchmarks.device_steps --plan-out plan.json [--configs ...]
    python -m benchmarks.device_steps --plan-in plan.json [...]

`benchmarks.gpu_budget` turns FLOPs into GPU-hours at an assumed
utilisation; this measures the step instead. For each full-scale config
(in the order given) and each distinct model among its runs, it builds the
model under a dtype policy, compiles it as the trainer does
(`gpu_budget.measure_step`: loss, aux-loss weights, L2, optimizer) with XLA
and one step per execution, and times `--steps` training steps at the
config's own per-step batch on a random batch already on the device,
after one untimed first step (tracing and XLA compilation). It reports
seconds per step, images/s, the achieved TFLOP/s (6 x forward MACs x
batch / step time) and its share of `--gpu-tflops`, and the GPU-hours of
the config's steps at that rate (all runs; the input pipeline, evaluation
and checkpoints are not included: `make bench-input` measures decoding).

`--policy` names the Keras dtype policies to measure, each a column group:
`config` (the run's own `trainer.mixed_precision`; float32 for every
ImageNet config), `mixed_bfloat16`, `mixed_float16`. `--time-limit` stops
starting new measurements after that many seconds (XLA compiles of the
deepest nets take a minute or more); the table is rewritten after each
config, so a stopped run keeps what it measured.

A JAX-only GPU machine (no TensorFlow or MLflow, which composing the runs
needs) takes a plan: `--plan-out` writes the resolved runs here, and
`--plan-in` measures them there under `KERAS_BACKEND=jax`. Under JAX every
step is `jax.jit`-compiled; TensorFlow's op determinism
(`trainer.deterministic`, which makes Keras turn XLA off) does not apply.
"""

import argparse
import importlib
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from benchmarks import gpu_budget  # noqa: E402
from benchmarks.machine import device_name  # noqa: E402
from convnet_repro.experiments.engine import optimization  # noqa: E402

POLICIES = ("config", "mixed_bfloat16", "mixed_float16")
# The run-config nodes a measurement reads (the rest need Hydra's runtime).
PLAN_NODES = ("model", "optimizer", "schedule", "trainer")
PLAN_DATA_KEYS = ("batch_size", "input_shape", "num_classes")
OUTPUT = gpu_budget.REPO_ROOT / "results" / "gpu_steps.md"


def plan_of(names):
    """`{config name: [run config (plain dict) ...]}`, composed here."""
    plan = {}
    for name in names:
        plan[name] = []
        for cfg in gpu_budget.runs_of(name):
            run = {
                key: OmegaConf.to_container(
                    cfg[key], resolve=True, enum_to_str=True
                )
                for key in PLAN_NODES
            }
            run["data"] = {k: cfg.data[k] for k in PLAN_DATA_KEYS}
            run["data"]["input_shape"] = list(run["data"]["input_shape"])
            plan[name].append(run)
    return plan


def measure_config(name, runs, policies, steps, deadline, cache):
    """One table row (dict) of config `name`; fills `cache` per model."""
    row = {"config": name, "runs": len(runs), "measured": {}}
    macs = set()
    for cfg in runs:
        entry = gpu_budget.model_entry(cfg, cache)
        macs.add(entry["macs"])
        for policy in policies:
            dtype = (
                optimization.dtype_policy_name(cfg.trainer)
                if policy == "config"
                else policy
            )
            if dtype not in entry:
                if time.monotonic() > deadline:
                    entry[dtype] = None
                else:
                    entry[dtype] = gpu_budget.measure_step(
                        cfg,
                        batch=int(cfg.data.batch_size),
                        steps=steps,
                        policy=dtype,
                        jit=True,
                    )
                    keras.backend.clear_session()
                    step_s, first_s = entry[dtype]
                    print(
                        f"  {name} {dtype}: {step_s * 1e3:.1f} ms/step "
                        f"(first step {first_s:.0f} s)",
                        file=sys.stderr,
                    )
            cell = row["measured"].setdefault(policy, [])
            run = (dtype, entry[dtype], int(cfg.trainer.steps), entry["macs"])
            cell.append(run)
    first = runs[0]
    row["model"] = gpu_budget._model_name(first.model)
    row["batch"] = int(first.data.batch_size)
    row["macs"] = sorted(macs)
    return row


def _cells(row, policy, gpu_tflops):
    """The cells of one policy: dtype, ms/step, img/s, TFLOP/s, %, hours.

    TFLOP/s is that of the run with the highest rate (its own model's
    MACs over its own step), so runs of different models never mix."""
    measured = row["measured"][policy]
    dtypes = sorted({d for d, _, _, _ in measured})
    if any(m is None for _, m, _, _ in measured):
        return [", ".join(dtypes), "not measured (time limit)"] + ["-"] * 4
    step = [m[0] for _, m, _, _ in measured]
    batch = row["batch"]
    rate = max(6.0 * macs * batch / m[0] / 1e12 for _, m, _, macs in measured)
    hours = sum(m[0] * s for _, m, s, _ in measured) / 3600
    return [
        ", ".join(dtypes),
        gpu_budget._span(sorted(x * 1e3 for x in step), "{:.1f}"),
        gpu_budget._span(sorted(batch / x for x in step), "{:,.0f}"),
        f"{rate:.1f}",
        f"{rate / gpu_tflops:.0%}",
        f"{hours:,.1f}",
    ]


def markdown(rows, policies, gpu_tflops):
    head = "| config | model | batch | runs | fwd GMACs/img |"
    rule = "|---|---|---:|---:|---:|"
    for policy in policies:
        head += (
            f" {policy}: dtype | ms/step | img/s | TFLOP/s | % of "
            f"{gpu_tflops:g} | device-hours (all steps) |"
        )
        rule += "---|---:|---:|---:|---:|---:|"
    lines = [head, rule]
    for row in rows:
        cells = [
            row["config"],
            row["model"],
            str(row["batch"]),
            str(row["runs"]),
            gpu_budget._span([m / 1e9 for m in row["macs"]], "{:.2f}"),
        ]
        for policy in policies:
            cells += _cells(row, policy, gpu_tflops)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(rows, args, device, seconds):
    """The Markdown file: what ran, on what, then the table."""
    backend = keras.backend.backend()
    version = importlib.import_module(backend).__version__
    return (
        "# Training-step time of the full-scale models on an accelerator\n\n"
        "Made by `make gpu-steps` (`python -m benchmarks.device_steps"
        f"{' --plan-in PLAN' if args.plan_in else ''}`) on {device}: Keras "
        f"{keras.__version__}, {backend} {version}, XLA (`jit_compile=True`),"
        " one step per execution. Each model is compiled as the trainer "
        "compiles it (loss, aux-loss weights, L2, optimizer) and trained at "
        "its config's own per-step batch on a random batch already on the "
        f"device; ms/step is the median of {args.steps} steps after an "
        "untimed first step (tracing, XLA compile), a span where a "
        "config's runs differ. TFLOP/s = 6 x forward MACs x batch / step "
        "(of the run with the highest rate, where a config's runs "
        "differ). Device-hours = every run's steps at its own measured "
        "step time, summed: training steps only, no input pipeline, "
        "evaluation or checkpoints, on one device (the papers spread these "
        "batches over 2-8 GPUs). float32 runs at XLA's default precision "
        "(TF32 on NVIDIA GPUs since Ampere). Not measured: the time limit "
        f"(`--time-limit`) stopped new measurements. Script time "
        f"{seconds:.0f} s.\n\n"
        + markdown(rows, args.policy, args.gpu_tflops)
        + "\n"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="*", default=None)
    parser.add_argument(
        "--policy", nargs="+", default=["config"], choices=POLICIES
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--time-limit", type=float, default=None)
    parser.add_argument(
        "--gpu-tflops", type=float, default=gpu_budget.H100_BF16_DENSE_TFLOPS
    )
    parser.add_argument(
        "--output",
        type=pathlib.Path,
        default=None,
        help="Markdown file (default results/gpu_steps.md, on an "
        "accelerator only)",
    )
    parser.add_argument("--plan-out", type=pathlib.Path, default=None)
    parser.add_argument("--plan-in", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1: {args.steps}")
    device = device_name()
    if args.output is None and not args.plan_out:
        if device.startswith("CPU"):  # checked before composing anything
            parser.error(
                f"Keras ({keras.backend.backend()}) sees no GPU/TPU, only "
                f"{device}; run on an accelerator, or pass --output to time "
                "the CPU (minutes per model)"
            )
        args.output = OUTPUT
    if args.plan_in:
        plan = json.loads(args.plan_in.read_text())
        names = args.configs or list(plan)
        unknown = sorted(set(names) - set(plan))
        if unknown:
            parser.error(f"not in {args.plan_in}: {unknown}")
    else:
        names = args.configs or gpu_budget.full_scale_configs()
        unknown = sorted(set(names) - set(gpu_budget.full_scale_configs()))
        if unknown:
            parser.error(
                f"not full-scale configs: {unknown}; use names from "
                f"{gpu_budget.full_scale_configs()}"
            )
        plan = plan_of(names)
    if args.plan_out:
        args.plan_out.write_text(json.dumps({n: plan[n] for n in names}))
        print(f"wrote {args.plan_out}", file=sys.stderr)
        return None
    start = time.monotonic()
    limit = float("inf") if args.time_limit is None else args.time_limit
    deadline = start + limit
    rows, cache = [], {}
    for name in names:
        runs = [OmegaConf.create(run) for run in plan[name]]
        rows.append(
            measure_config(name, runs, args.policy, args.steps, deadline, cache)
        )
        text = report(rows, args, device, time.monotonic() - start)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
