"""A CPU-scale analog of AlexNet's pre-train-then-fine-tune rows (NOT them).

Krizhevsky et al. 2012, Sec. 6, pre-train on ImageNet Fall 2011 (14.2M
images, 22K classes) and fine-tune on ILSVRC-2012 (1.28M images, 1000
classes: 9% of the pre-training images). The data root holds no second
natural-image set (Imagenette is 10 ILSVRC classes; no Fashion-MNIST), so
this analog uses real MNIST split by class: pre-train on digits 0-4 (all
their ~30.6k training images), fine-tune on digits 5-9 with 9% of their
training images (~2.6k), against training from scratch on the same ~2.6k
images for the same steps. A new label set, a 9% fine-tuning budget, the
engine's `finetune:` mechanism; digits are one domain, so it says nothing
about natural images.

Usage:
    python -m convnet_repro.experiments.mini_transfer \
        [--seeds 0 1 2] [--steps 600]
"""

import argparse
import json
import logging
import pathlib
import tempfile

import numpy as np
import tensorflow as tf

from convnet_repro.experiments.data import data_root
from convnet_repro.experiments.data import idx_format
from convnet_repro.experiments.engine import metric_keys as mk
from convnet_repro.experiments.engine.exit_codes import MissingDataError

PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
FINETUNE_CLASSES = (5, 6, 7, 8, 9)
FINETUNE_FRACTION = 1.28 / 14.2  # ILSVRC-2012 / Fall 2011 images


def make_digit_datasets(
    classes,
    train_fraction=1.0,
    batch_size=64,
    eval_batch_size=1000,
    seed=0,
    local_dir=None,
    skip_batches=0,
    **unused,
):
    """MNIST restricted to `classes` (relabelled 0..k-1), train set cut.

    A data `_target_` of the engine (`make_datasets` contract). The cut
    keeps the first `train_fraction` of the chosen classes' training images
    in a fixed order (independent of `seed`), so every run of a study sees
    the same images. Test images of the classes are the validation set.

    Returns:
        `(train_ds, val_ds)`: an infinite shuffled stream starting at batch
        `skip_batches`, and one pass over the test images.
    """
    del unused
    directory = data_root.resolve_local_dir("mnist", local_dir)
    if directory is None:
        raise MissingDataError(
            data_root.missing_data_message("mnist", local_dir)
        )
    remap = np.full(10, -1, np.int32)
    remap[list(classes)] = np.arange(len(classes))

    def split(name, fraction):
        x, y = idx_format.load_idx_split(directory, name)
        keep = np.flatnonzero(remap[y] >= 0)
        keep = keep[: int(round(len(keep) * fraction))]
        return x[keep].astype("float32") / 255.0, remap[y[keep]]

    x, y = split("train", train_fraction)
    xv, yv = split("test", 1.0)
    train = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .skip(skip_batches)
    )
    val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(eval_batch_size)
    return train, val


def _data(classes, fraction):
    return {
        "_target_": (
            "convnet_repro.experiments.mini_transfer.make_digit_datasets"
        ),
        "classes": list(classes),
        "train_fraction": fraction,
        "batch_size": 64,
        "seed": "${seed}",
        "input_shape": [28, 28, 1],
        "num_classes": len(classes),
    }


def _run(name, data, steps, seed, root, extra=()):
    from omegaconf import open_dict

    from convnet_repro.experiments.engine import train as train_lib
    from convnet_repro.experiments.engine.compose import compose

    cfg = compose(
        [
            "model=tiny_cnn",
            "+model.filters=[32,64]",
            f"experiment_name={name}",
            f"seed={seed}",
            "optimizer.learning_rate=0.05",
            "optimizer.momentum=0.9",
            f"trainer.steps={steps}",
            f"trainer.eval_every_steps={steps}",
            f"trainer.checkpoint_every_steps={steps}",
            "trainer.log_every_steps=100",
            "trainer.progress=none",
            "tracking.log_figures=false",
            *extra,
        ],
        root,
    )
    with open_dict(cfg):
        cfg.data = data
    result = train_lib.train(cfg)
    return result


def study(seeds=(0, 1, 2), steps=600, root=None):
    """Pre-trains once, then fine-tunes and trains from scratch per seed.

    Returns:
        dict with the pre-training run and per-seed `val/top1_error` of
        both arms (percent).
    """
    root = pathlib.Path(root or tempfile.mkdtemp(prefix="mini_transfer_"))
    pre = _run("mini_pretrain", _data(PRETRAIN_CLASSES, 1.0), steps, 0, root)
    source = f"runs:/{pre['run_id']}"
    small = _data(FINETUNE_CLASSES, FINETUNE_FRACTION)
    out = {"pretrain_top1_error": 100 * pre[mk.VAL_TOP1_ERROR], "seeds": {}}
    for seed in seeds:
        tuned = _run(
            "mini_finetune", small, steps, seed, root,
            [f"finetune.source={source}"],
        )  # fmt: skip
        scratch = _run("mini_scratch", small, steps, seed, root)
        out["seeds"][seed] = {
            "finetuned": 100 * tuned[mk.VAL_TOP1_ERROR],
            "scratch": 100 * scratch[mk.VAL_TOP1_ERROR],
        }
    for arm in ("finetuned", "scratch"):
        values = [v[arm] for v in out["seeds"].values()]
        out[f"{arm}_mean"] = float(np.mean(values))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m convnet_repro.experiments.mini_transfer"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--root", default=None, help="store + checkpoints folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = study(args.seeds, args.steps, args.root)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
