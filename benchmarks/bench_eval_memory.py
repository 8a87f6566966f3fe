"""Peak memory of evaluation at N and 4N images (`make bench-eval-memory`).

Each size is scored in a fresh subprocess (the mini AlexNet of
`imagenette_alexnet_5cnns`, widened to 1,000 classes so the per-image
predictions weigh what ImageNet's do, untrained; GoogLeNet's 144-crop
protocol on real Imagenette val images, streamed from disk as at full
scale: `data.cache=false`, a list mean), and the subprocess reports its
peak resident memory (`resource.getrusage`, `ru_maxrss`). Streaming
evaluation keeps one batch of views, so the two peaks agree; the growth
per image is extrapolated to GoogLeNet's 7-model, 144-crop ILSVRC-2012
evaluation (50,000 images x 1,000 classes) beside what the former design
held in memory.

Usage:
    python -m benchmarks.bench_eval_memory [--images 100] [--protocol
        multi_crop] [--experiment imagenette_alexnet_5cnns]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

FULL_IMAGES = 50_000
FULL_CLASSES = 1_000
FULL_MODELS = 7
FULL_VIEWS = 144


def child(args):
    """Scores `args.images` images; prints a JSON line with the peak RSS."""
    import hydra

    from convnet_repro.experiments.engine.compose import compose
    from convnet_repro.experiments.evaluation import predict
    from convnet_repro.experiments.evaluation import store

    cfg = compose(
        [
            f"experiment={args.experiment}",
            "model.num_classes=1000",
            "data.cache=false",
            "data.mean=[0.485,0.456,0.406]",
            "data.num_train_examples=64",
            "data.batch_size=32",
        ]
    )
    model = hydra.utils.instantiate(cfg.model, _convert_="all")
    ds, _ = predict.eval_dataset(cfg.data, args.images)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        writer = store.PredictionWriter(tmp, "float16")
        result = predict.evaluate(
            [model],
            ds,
            args.protocol,
            writer=writer,
            resize=cfg.data.get("resize_size"),
            max_images=args.images,
        )
        writer.close()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "images": result["num_images"],
                "views": result["num_views"],
                "peak_rss_mb": peak_kib / 1024,
                "seconds": time.time() - start,
            }
        )
    )


def _measure(images, args):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_eval_memory", "--child"]
        + ["--images", str(images), "--protocol", args.protocol]
        + ["--experiment", args.experiment],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100, help="N (then 4N)")
    p.add_argument("--protocol", default="multi_crop")
    p.add_argument("--experiment", default="imagenette_alexnet_5cnns")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    small = _measure(args.images, args)
    large = _measure(4 * args.images, args)
    ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    growth = (large["peak_rss_mb"] - small["peak_rss_mb"]) / (
        large["images"] - small["images"]
    )
    full = (
        large["peak_rss_mb"]
        + max(growth, 0.0) * (FULL_IMAGES - large["images"]) * FULL_MODELS
    )
    old_gb = FULL_MODELS * FULL_VIEWS * FULL_IMAGES * FULL_CLASSES * 4 / 1e9
    stored_mb = FULL_IMAGES * FULL_CLASSES * 2 / 1e6
    print(f"protocol {args.protocol} ({small['views']} views), 1000 classes")
    for m in (small, large):
        print(
            f"  N={m['images']:>5}: peak RSS {m['peak_rss_mb']:.0f} MB "
            f"({m['seconds']:.0f} s)"
        )
    print(f"  ratio 4N/N: {ratio:.3f}; growth {growth * 1024:.1f} KB/image")
    print(
        f"  extrapolated to {FULL_IMAGES:,} images x {FULL_VIEWS} crops x "
        f"{FULL_MODELS} models: peak RSS ~{full:.0f} MB at this model size "
        f"(+ {FULL_MODELS} x {stored_mb:.0f} MB float16 predictions on "
        f"disk); the former design held {old_gb:.0f} GB of float32 logits "
        "in memory (plus a float64 softmax of them)"
    )


if __name__ == "__main__":
    main()
