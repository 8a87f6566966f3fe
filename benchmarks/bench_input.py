"""Benchmark of the training input pipeline, in images/s per CPU core.

    python -m benchmarks.bench_input [--quick] [--output PATH]

For each paper's full-scale training config (`imagenet_alexnet`,
`imagenet_vgg_d_jitter`, `imagenet_googlenet`, `imagenet_resnet50`:
their real crop size, decode size and augmentation), builds the
`imagenet2012` training stream exactly as `experiments.engine.train`
does, on the
image-folder layout (JPEG read + decode + augmentation per example, no
cache), and times it on ONE CPU thread (`tf.data` private thread pool of 1,
intra-op parallelism 1). Two image sets:

- `imagenette-224`: the Imagenette JPEGs as stored (shorter side 224 px,
  ~67k pixels per image);
- `ilsvrc-size`: the same images resized to 500x375 and re-encoded at JPEG
  quality 90 (the typical ILSVRC-2012 size, ~110 KB; the real set averages
  ~400x350), since decoding cost grows with the pixel count.

It prints a Markdown table (load average included: timings on a shared
machine are noisy) with the cores one GPU needs at stated training rates,
and writes it to `results/bench_input.md` (`--quick`: fewer images, no file
unless `--output`).
"""

import argparse
import os
import pathlib
import platform
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import hydra  # noqa: E402
import tensorflow as tf  # noqa: E402

from convnet_repro.experiments.data import data_root  # noqa: E402
from convnet_repro.experiments.engine.compose import compose  # noqa: E402

CONFIGS = {
    "alexnet": "imagenet_alexnet",
    "vgg": "imagenet_vgg_d_jitter",
    "googlenet": "imagenet_googlenet",
    "resnet": "imagenet_resnet50",
}
# Assumed single-GPU training rates (images/s), mixed precision: ResNet-50
# ~2,800 on an H100 (NVIDIA's published TF/PyTorch AMP figures are
# 2,500-3,000); the others scaled from it by forward GFLOPs (AlexNet 0.72,
# VGG-16 15.5, GoogLeNet 1.5, ResNet-50 4.1), an upper bound for the small
# nets, which do not reach the GPU's peak.
GPU_RATE = {"alexnet": 16_000, "vgg": 740, "googlenet": 7_700, "resnet": 2_800}
BATCH = 32


def ilsvrc_sized_copy(source, out, per_class):
    """Writes `per_class` images of each class of `source/train` (and 2 of
    `source/val`) at 500x375, JPEG quality 90, under `out/{train,val}/`."""
    for split, count in (("train", per_class), ("val", 2)):
        for wnid_dir in sorted((source / split).iterdir()):
            target = out / split / wnid_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted(wnid_dir.glob("*.JPEG"))[:count]:
                image = tf.io.decode_jpeg(tf.io.read_file(str(path)), 3)
                image = tf.image.resize(image, (375, 500), antialias=True)
                image = tf.cast(tf.clip_by_value(image, 0, 255), "uint8")
                tf.io.write_file(
                    str(target / path.name),
                    tf.io.encode_jpeg(image, quality=90),
                )
    return out


def one_thread(ds):
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False
    return ds.with_options(options)


def images_per_second(experiment, folder, num_batches):
    cfg = compose(
        [
            f"experiment={experiment}",
            "data.source=local",
            f"data.local_dir={folder}",
            f"data.batch_size={BATCH}",
        ]
    )
    train_ds, _ = hydra.utils.instantiate(cfg.data, _convert_="all")
    iterator = iter(one_thread(train_ds))
    next(iterator)  # tracing, first reads
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(num_batches):
        next(iterator)
    images = num_batches * BATCH
    return (
        images / (time.process_time() - cpu_start),
        images / (time.perf_counter() - start),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    source = data_root.resolve_local_dir("imagenette")
    if source is None:
        sys.exit(data_root.missing_data_message("imagenette", None))
    num_batches = 3 if args.quick else 12
    with tempfile.TemporaryDirectory() as tmp:
        sets = {
            "imagenette-224": source,
            "ilsvrc-size": ilsvrc_sized_copy(
                source, pathlib.Path(tmp), 20 if args.quick else 60
            ),
        }
        rates = {
            (name, policy): images_per_second(experiment, folder, num_batches)
            for policy, experiment in CONFIGS.items()
            for name, folder in sets.items()
        }
    load = os.getloadavg()
    lines = [
        "| augmentation (config) | img/s/core, imagenette-224 | "
        "img/s/core, ILSVRC-size | assumed GPU img/s | cores per GPU "
        "(ILSVRC-size) |",
        "|---|---|---|---|---|",
    ]
    for policy, experiment in CONFIGS.items():
        (small, small_wall), (large, large_wall) = (
            rates[(n, policy)] for n in sets
        )
        lines.append(
            f"| {policy} (`{experiment}`) | {small:.0f} ({small_wall:.0f}) "
            f"| {large:.0f} ({large_wall:.0f}) | {GPU_RATE[policy]:,} | "
            f"{GPU_RATE[policy] / large:.0f} |"
        )
    lines.append(
        f"\nImages per CPU-second of the process (its CPU time, so a loaded "
        f"machine does not lower it), wall-clock rate in brackets; "
        f"{num_batches} batches of {BATCH} per cell, one tf.data thread; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"CPUs, load average {load[0]:.1f} during the run."
    )
    table = "\n".join(lines)
    print(table)
    output = args.output or (None if args.quick else "results/bench_input.md")
    if output:
        pathlib.Path(output).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(output).write_text(
            "# Input pipeline throughput (benchmarks/bench_input.py)\n\n"
            + table
            + "\n"
        )


if __name__ == "__main__":
    main()
