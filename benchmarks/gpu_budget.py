"""GPU budget of every full-scale config: FLOPs, images, GPU-hours, CPU step.

    python -m benchmarks.gpu_budget [--measure] [--configs NAME ...]
        [--gpu-tflops 989.4] [--utilization 0.4] [--output PATH]

For each `conf/experiment/imagenet_*.yaml` and `bn_inception_full.yaml`
(composed with Hydra as the trainer composes them, then expanded into its
runs: `seeds` x `variants`, as `experiments.engine.train.expand_children` does),
builds every run's model at the config's resolution and reports

- forward multiply-adds per image, counted from the model's layers
  (`models.flops`: conv/dense MACs; a training image costs
  `6 * MACs` FLOPs: forward + two backward products, 2 FLOPs per MAC);
- training images: `trainer.steps * data.batch_size`, summed over runs;
- GPU-hours: total training FLOPs / (`utilization` x `gpu_tflops`),
  by default 40% of an H100 SXM's dense BF16 peak (989.4 TFLOP/s). The
  utilisation is an assumption, not a measurement; `make gpu-steps`
  (`benchmarks.device_steps`) measures it: on an H200 it is 2-40%, lowest
  for the batch-32 configs (GoogLeNet, BN-Inception);
- with `--measure`: the CPU time of one training step at the config's
  real resolution and a batch of 2 (the real compile: loss, aux-loss
  weights, L2, optimizer; `jit_compile=False`, one step per execution),
  the median of 3 steps after one warm-up step, per distinct model.

Prints a Markdown table; with `--measure` (or `--output`) writes it to
`results/gpu_budget.md`. Counting only takes about a minute (it builds
every full-size model); `--measure` adds tens of seconds per model on a
shared 2-core machine.
"""

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import hydra  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from convnet_repro.experiments.engine import optimization  # noqa: E402
from convnet_repro.experiments.engine.compose import compose  # noqa: E402
from convnet_repro.experiments.engine.config_schema import REPO_ROOT  # noqa: E402
from convnet_repro.models.flops import count_macs  # noqa: E402

H100_BF16_DENSE_TFLOPS = 989.4  # H100 SXM, dense (no sparsity) BF16
ILSVRC_TRAIN_IMAGES = 1_281_167
MEASURE_BATCH = 2
MEASURE_STEPS = 3
OUTPUT = REPO_ROOT / "results" / "gpu_budget.md"


def full_scale_configs():
    """Names of the full-scale experiment configs, sorted."""
    conf = REPO_ROOT / "conf" / "experiment"
    names = sorted(p.stem for p in conf.glob("imagenet_*.yaml"))
    return names + ["bn_inception_full"]


def runs_of(name):
    """The run configs of experiment `name` (one, or one per child)."""
    # Imported here: the trainer needs MLflow and TensorFlow, which
    # `benchmarks.device_steps --plan-in` (a JAX-only machine) does without.
    from convnet_repro.experiments.engine.train import expand_children

    cfg = compose([f"experiment={name}"])
    return [c.cfg for c in expand_children(cfg)] or [cfg]


def _model_key(cfg):
    return OmegaConf.to_yaml(cfg.model, resolve=True)


def measure_step(
    cfg, batch=MEASURE_BATCH, steps=MEASURE_STEPS, policy=None, jit=False
):
    """Times training steps of `cfg`'s model on this machine's device.

    The real compile (`optimization`: loss, aux-loss weights, L2,
    optimizer), one step per execution, on a random batch placed on the
    device once (the input pipeline is not timed).

    Args:
        cfg: a run config (`runs_of`).
        batch: images per step.
        steps: timed steps, after one untimed first step (tracing and,
            with `jit`, XLA compilation).
        policy: the Keras dtype policy to build under (None: the current).
        jit: `jit_compile` (XLA).

    Returns:
        `(median seconds per step, seconds of the first step)`.
    """
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.trainer.steps_per_execution = 1
        cfg.trainer.jit_compile = jit
    previous = keras.mixed_precision.dtype_policy().name
    keras.mixed_precision.set_dtype_policy(policy or previous)
    try:
        keras.utils.set_random_seed(0)
        model = hydra.utils.instantiate(cfg.model, _convert_="all")
        optimization.apply_weight_decay(model, cfg.optimizer)
        learning_rate, _ = optimization.build_learning_rate(cfg)
        optimizer = optimization.build_optimizer(cfg, learning_rate)
        optimization.compile_model(model, cfg, optimizer)
        shape = (batch, *cfg.data.input_shape)
        rng = np.random.default_rng(0)
        x = keras.ops.convert_to_tensor(rng.random(shape, dtype=np.float32))
        y = keras.ops.convert_to_tensor(
            np.arange(batch, dtype=np.int32) % cfg.data.num_classes
        )
        y = [y] * len(model.outputs) if len(model.outputs) > 1 else y
        start = time.perf_counter()
        model.train_on_batch(x, y)  # returns Python floats: waits
        first = time.perf_counter() - start
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    return statistics.median(times), first


def model_entry(cfg, cache):
    """The `cache` entry of `cfg`'s model, keyed by its resolved config;
    a new entry is built once for its forward MACs (`{"macs": n}`)."""
    key = _model_key(cfg)
    if key not in cache:
        model = hydra.utils.instantiate(cfg.model, _convert_="all")
        cache[key] = {"macs": count_macs(model)}
        del model
        keras.backend.clear_session()
    return cache[key]


def _model_name(model_cfg):
    family = model_cfg._target_.split(".")[-1].removeprefix("build_")
    variant = model_cfg.get("variant")
    if not variant:
        return family
    return variant if variant.startswith(family) else f"{family} {variant}"


def budget(name, gpu_tflops, utilization, measure, cache):
    """One table row (dict) for experiment `name`."""
    runs = runs_of(name)
    macs, images, flops, step_s, cpu_s = set(), 0, 0.0, set(), 0.0
    for cfg in runs:
        entry = model_entry(cfg, cache)
        if measure and "step_s" not in entry:
            entry["step_s"], _ = measure_step(cfg)
            keras.backend.clear_session()
            print(f"  {name}: {entry['step_s']:.2f} s/step", file=sys.stderr)
        run_images = int(cfg.trainer.steps) * int(cfg.data.batch_size)
        images += run_images
        flops += 6.0 * entry["macs"] * run_images
        macs.add(entry["macs"])
        if measure:
            step_s.add(entry["step_s"])
            cpu_s += entry["step_s"] / MEASURE_BATCH * run_images
    cfg = runs[0]
    return {
        "config": name,
        "model": _model_name(cfg.model),
        "px": cfg.data.input_shape[0],
        "runs": len(runs),
        "batch": int(cfg.data.batch_size),
        "steps": sorted({int(c.trainer.steps) for c in runs}),
        "gmacs": sorted(m / 1e9 for m in macs),
        "images": images,
        "epochs": images / len(runs) / ILSVRC_TRAIN_IMAGES,
        "pflop": flops / 1e15,
        "gpu_hours": flops / (utilization * gpu_tflops * 1e12) / 3600,
        "step_s": sorted(step_s),
        "cpu_years": cpu_s / (3600 * 24 * 365) if measure else None,
    }


def _span(values, fmt):
    if not values:
        return "-"
    lo, hi = values[0], values[-1]
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}-{fmt.format(hi)}"


def markdown(rows, gpu_tflops, utilization):
    gpu = f"{utilization:.0%} of {gpu_tflops:g} TFLOP/s"
    lines = [
        "| config | model | px | runs | batch x steps (per run) | "
        "fwd GMACs/img | train GFLOP/img | train images (all runs) | "
        f"epochs/run | PFLOP | GPU-hours ({gpu}) | CPU s/step (batch 2) | "
        "CPU-years here |",
        "|" + "---|" * 13,
    ]
    for r in rows:
        steps = "/".join(f"{s:,}" for s in r["steps"])
        gflop = [6 * g for g in r["gmacs"]]
        cpu = "-" if r["cpu_years"] is None else f"{r['cpu_years']:,.0f}"
        lines.append(
            f"| {r['config']} | {r['model']} | {r['px']} | {r['runs']} | "
            f"{r['batch']} x {steps} | {_span(r['gmacs'], '{:.2f}')} | "
            f"{_span(gflop, '{:.1f}')} | {r['images'] / 1e6:,.1f}M | "
            f"{r['epochs']:.0f} | {r['pflop']:,.0f} | {r['gpu_hours']:,.1f} | "
            f"{_span(r['step_s'], '{:.2f}')} | {cpu} |"
        )
    total = sum(r["gpu_hours"] for r in rows)
    lines.append(f"\nAll configs together: {total:,.0f} GPU-hours.")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--measure",
        action="store_true",
        help="also time one CPU training step per model",
    )
    parser.add_argument(
        "--configs",
        nargs="*",
        default=None,
        help="experiment names (default: all full-scale)",
    )
    parser.add_argument(
        "--gpu-tflops", type=float, default=H100_BF16_DENSE_TFLOPS
    )
    parser.add_argument("--utilization", type=float, default=0.4)
    parser.add_argument("--output", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)  # fmt: skip
    names = args.configs or full_scale_configs()
    unknown = sorted(set(names) - set(full_scale_configs()))
    if unknown:
        parser.error(
            f"not full-scale configs: {unknown}; use names from "
            f"{full_scale_configs()}"
        )
    if not 0 < args.utilization <= 1:
        parser.error(f"--utilization must be in (0, 1]: {args.utilization}")
    start, cache = time.time(), {}
    rows = [
        budget(n, args.gpu_tflops, args.utilization, args.measure, cache)
        for n in names
    ]
    table = markdown(rows, args.gpu_tflops, args.utilization)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    footer = (
        f"\nMACs: conv + dense multiply-adds of the training graph (aux "
        "heads included), counted by `models.flops`; train FLOP = 6 x MACs. "
        "GPU-hours = total FLOP / (utilisation x peak); peak: H100 SXM dense "
        "BF16 unless `--gpu-tflops` says otherwise. CPU s/step: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"cores shared (load {load:.1f}), TF graph mode without XLA, median "
        f"of {MEASURE_STEPS} steps after a warm-up; CPU-years = that rate "
        "over all training images; on a shared machine they are noisy (up to "
        "2x between runs of one model). "
        f"Script time {time.time() - start:.0f} s."
    )
    text = (
        "# GPU budget of the full-scale configs\n\n"
        "Made by `make gpu-budget` (`python -m benchmarks.gpu_budget "
        "--measure`).\n\n" + table + "\n" + footer + "\n"
    )
    print(text)
    output = args.output or (OUTPUT if args.measure else None)
    if output:
        pathlib.Path(output).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(output).write_text(text)
    return rows


if __name__ == "__main__":
    main()
