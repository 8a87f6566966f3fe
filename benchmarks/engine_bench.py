"""Overhead of the engine's loop vs a bare `model.fit` on the same model.

Both train the BN paper's MNIST MLP (Sec. 4.1: 784-100-100-100-10 sigmoid,
BN, batch 60, SGD lr 0.5) on generated 28x28 data of the same shapes, for
the same number of steps and `steps_per_execution`:

- `bare`: `compile` + `fit(steps_per_epoch=steps, epochs=1)`, nothing else;
- `engine`: `experiments.engine.train.train(cfg)`, i.e. MLflow run +
  params + tags,
  windowed train metrics, evaluations, checkpoints, final model and figure.

Reports wall and process-CPU seconds (CPU time is less disturbed by other
processes on a shared machine).

Usage:
    python -m benchmarks.engine_bench --steps 10000 --spe 500
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402

from convnet_repro.experiments.data.synthetic import make_blob_datasets  # noqa: E402
from convnet_repro.experiments.engine import train as train_lib  # noqa: E402
from convnet_repro.experiments.engine.compose import compose  # noqa: E402

DATA = dict(
    input_shape=(28, 28, 1),
    num_classes=10,
    batch_size=60,
    num_train=6000,
    num_val=1000,
    seed=0,
)


def bare_fit(steps, spe, jit_compile):
    """(wall, CPU) seconds of compile + fit of `steps` steps."""
    from convnet_repro.models.mlp import build_bn_mnist_mlp

    keras.utils.set_random_seed(0)
    train_ds, _ = make_blob_datasets(**DATA)
    start, cpu = time.perf_counter(), time.process_time()
    model = build_bn_mnist_mlp(batch_norm=True, kernel_init_stddev=0.1)
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        steps_per_execution=spe,
        jit_compile=jit_compile,
    )
    model.fit(
        train_ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False
    )
    return time.perf_counter() - start, time.process_time() - cpu


def engine_fit(steps, spe, jit_compile, eval_every, log_every, ckpt_every):
    """(wall, CPU) seconds of `train(cfg)`, same model, data and steps."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(
            [
                "experiment=smoke",
                "model=bn_mnist_mlp",
                "data.input_shape=[28,28,1]",
                "data.num_classes=10",
                "data.batch_size=60",
                "data.num_train=6000",
                "data.num_val=1000",
                "optimizer.learning_rate=0.5",
                "optimizer.momentum=0.0",
                f"trainer.steps={steps}",
                f"trainer.steps_per_execution={spe}",
                f"trainer.eval_every_steps={eval_every}",
                f"trainer.log_every_steps={log_every}",
                f"trainer.checkpoint_every_steps={ckpt_every}",
                f"trainer.jit_compile={str(jit_compile).lower()}",
                "trainer.top_k=1",
            ],
            tmp_path=tmp,
        )
        start, cpu = time.perf_counter(), time.process_time()
        train_lib.train(cfg)
        return time.perf_counter() - start, time.process_time() - cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--spe", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--log-every", type=int, default=1000)
    parser.add_argument("--ckpt-every", type=int, default=10000)
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    # Warm-up (imports, first tracing of shared TF machinery).
    bare_fit(args.spe, args.spe, args.jit)
    rows = []
    for _ in range(args.repeats):
        bare = bare_fit(args.steps, args.spe, args.jit)
        engine = engine_fit(
            args.steps,
            args.spe,
            args.jit,
            args.eval_every,
            args.log_every,
            args.ckpt_every,
        )
        loop_only = engine_fit(
            args.steps, args.spe, args.jit, args.steps, args.steps, args.steps
        )
        row = {"steps": args.steps, "steps_per_execution": args.spe}
        for name, (wall, cpu) in (
            ("bare_fit", bare),
            ("engine", engine),
            ("engine_one_eval", loop_only),
        ):
            row[f"{name}_wall_s"] = round(wall, 2)
            row[f"{name}_cpu_s"] = round(cpu, 2)
        row["overhead_cpu_ms_per_step"] = round(
            1000 * (engine[1] - bare[1]) / args.steps, 3
        )
        row["overhead_one_eval_cpu_ms_per_step"] = round(
            1000 * (loop_only[1] - bare[1]) / args.steps, 3
        )
        rows.append(row)
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
