"""Checks the data configs: `python -m convnet_repro.experiments.data`.

For each `conf/data/<name>.yaml` (default: all), builds the datasets with
seed 0 and prints where the data came from, the batch shapes, value range,
label counts of the first batches and the train-stream throughput. Extra
`key=value` arguments override config keys (e.g. `num_train_examples=500`).

Example:
    python -m convnet_repro.experiments.data mnist imagenette \
        num_train_examples=2000
"""

import os
import pathlib
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import hydra  # noqa: E402
import hydra.errors  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from convnet_repro.experiments.engine.exit_codes import MissingDataError  # noqa: E402

CONF_DIR = pathlib.Path(__file__).resolve().parents[2] / "conf" / "data"


def check(name, overrides=(), num_batches=50):
    """Builds `conf/data/<name>.yaml` and returns a one-line summary."""
    cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    cfg = OmegaConf.merge(
        {"seed": 0, "paths": {"data_dir": None}},
        {"data": cfg},
        OmegaConf.from_dotlist([f"data.{o}" for o in overrides]),
    )
    start = time.perf_counter()
    try:
        train_ds, val_ds = hydra.utils.instantiate(cfg.data, _convert_="all")
    except hydra.errors.InstantiationException as error:
        if isinstance(error.__cause__, MissingDataError):
            return f"{name:14s} MISSING  {error.__cause__}"
        raise
    built = time.perf_counter() - start
    x, y = next(iter(train_ds))
    start = time.perf_counter()
    labels = [b[1].numpy() for b in train_ds.take(num_batches)]
    rate = num_batches / (time.perf_counter() - start)
    counts = np.bincount(np.concatenate(labels))
    num_val = sum(int(b[1].shape[0]) for b in val_ds)
    return (
        f"{name:14s} train batch {tuple(x.shape)} {x.dtype.name} "
        f"[{float(np.min(x)):.3f}, {float(np.max(x)):.3f}], labels "
        f"{counts.tolist()} in {num_batches} batches; val {num_val} "
        f"examples; build {built:.1f}s, {rate:.0f} train batches/s"
    )


def main(argv):
    names = [a for a in argv if "=" not in a]
    overrides = [a for a in argv if "=" in a]
    names = names or sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
    for name in names:
        print(check(name, overrides), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
