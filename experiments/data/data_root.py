"""Finds each dataset's offline folder below the data root, or says how.

Offline data root: the env var `CONVNET_REPRO_DATA_DIR` holds `mnist/` (the
four IDX `.gz` files), `imagenette2-224/{train,val}/<wnid>/*.JPEG` (see
`shared/data/PROVENANCE.md`) and optionally `cifar10/` (the extracted
`cifar-10-python.tar.gz` or `cifar-10-binary.tar.gz`). A config's
`local_dir` overrides it. The readers of each format live in `idx_format`,
`cifar10` and `image_folder`.
"""

import os
import pathlib

from convnet_repro.experiments.data.cifar10 import cifar10_batch_files
from convnet_repro.experiments.data.idx_format import is_idx_dir

ENV_VAR = "CONVNET_REPRO_DATA_DIR"

# Sub-directory of the offline root that holds each dataset.
LOCAL_SUBDIRS = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "imagenette": "imagenette2-224",
    "imagenet2012": "imagenet2012",
    "cifar10": "cifar10",
}
# Where Debian's `dataset-fashion-mnist` package installs the IDX files.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def resolve_local_dir(name, local_dir=None):
    """Finds the offline directory of dataset `name`, or returns None.

    Search order: `local_dir` itself, `local_dir/<subdir>`, then
    `$CONVNET_REPRO_DATA_DIR/<subdir>` (and, for Fashion-MNIST, Debian's
    `/usr/share/dataset-fashion-mnist`). A candidate counts only if it holds
    the expected files (four IDX files, the six CIFAR-10 batches, or
    `train/` and `val/` folders).
    """
    subdir = LOCAL_SUBDIRS.get(name, name)
    candidates = []
    if local_dir:
        local_dir = pathlib.Path(os.path.expanduser(str(local_dir)))
        candidates += [local_dir, local_dir / subdir]
    if os.environ.get(ENV_VAR):
        candidates.append(pathlib.Path(os.environ[ENV_VAR]) / subdir)
    if name == "fashion_mnist":
        candidates.append(pathlib.Path(DEBIAN_FASHION_MNIST))
    for candidate in candidates:
        if _looks_like(name, candidate):
            return candidate
    return None


def _looks_like(name, directory):
    if not directory.is_dir():
        return False
    if name in ("mnist", "fashion_mnist"):
        return is_idx_dir(directory)
    if name == "cifar10":
        return cifar10_batch_files(directory) is not None
    return (directory / "train").is_dir() and (directory / "val").is_dir()


def missing_data_message(name, local_dir, tfds_name=None):
    """One line saying where `name` was looked for and how to provide it."""
    subdir = LOCAL_SUBDIRS.get(name, name)
    fixes = [
        f"set {ENV_VAR} to a folder holding {subdir}/ or pass "
        "data.local_dir=<dir>"
    ]
    if tfds_name:
        fixes.append(
            "use data.source=auto data.download=true so tensorflow-datasets "
            "fetches "
            f"{tfds_name!r} (into data.tfds_data_dir)"
            + (
                " from the ILSVRC2012 tar files in data.manual_dir"
                if tfds_name == "imagenet2012"
                else ""
            )
        )
    return (
        f"Dataset {name!r} not found offline; {', or '.join(fixes)}. "
        f"Received: local_dir={local_dir!r}, "
        f"{ENV_VAR}={os.environ.get(ENV_VAR)!r}"
    )
