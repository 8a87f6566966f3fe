"""Reads the batches of an extracted CIFAR-10 archive into arrays.

Accepts the python (pickled) and the binary (`.bin`) versions.
`keras.datasets.cifar10.load_data` was considered and does not fit: it
downloads into `~/.keras` instead of reading a given offline folder.

Reference:
    Krizhevsky, 2009, CIFAR-10 batches: https://www.cs.toronto.edu/~kriz/cifar.html
"""

import pathlib
import pickle

import numpy as np

from convnet_repro.experiments.engine.exit_codes import MissingDataError

# CIFAR-10 batch files (python pickles, or `<name>.bin` in the binary
# version), inside `cifar-10-batches-py/` or `cifar-10-batches-bin/`.
CIFAR10_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}


def cifar10_batch_files(directory):
    """`{split: [batch file paths]}` of the CIFAR-10 batches below
    `directory` (itself, `cifar-10-batches-py/` or `cifar-10-batches-bin/`;
    python or `.bin` files), or None when any of the six is missing."""
    directory = pathlib.Path(directory)
    for candidate in (
        directory,
        directory / "cifar-10-batches-py",
        directory / "cifar-10-batches-bin",
    ):
        for suffix in ("", ".bin"):
            files = {
                split: [candidate / (name + suffix) for name in names]
                for split, names in CIFAR10_BATCHES.items()
            }
            if all(p.is_file() for paths in files.values() for p in paths):
                return files
    return None


def _read_cifar10_batch(path):
    if path.suffix == ".bin":
        # Binary version: records of 1 label byte + 3072 pixel bytes.
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size % 3073:
            raise ValueError(
                f"{path.name} is not a CIFAR-10 binary batch (size "
                f"{raw.size} is not a multiple of 3073). Received: {path}"
            )
        raw = raw.reshape(-1, 3073)
        return raw[:, 1:], raw[:, 0]
    # Python version: a pickled dict written by the dataset's authors (load
    # only files you trust, as with keras.datasets.cifar10).
    with path.open("rb") as f:
        batch = pickle.load(f, encoding="bytes")
    return np.asarray(batch[b"data"], np.uint8), np.asarray(batch[b"labels"])


def load_cifar10_split(directory, split):
    """Loads `split` ("train" or "test") of an extracted CIFAR-10 archive.

    Each image row is 1024 red, 1024 green, then 1024 blue values of a
    32x32 image in row-major order (the dataset's own layout).

    Returns:
        `(images uint8 (N, 32, 32, 3), labels int32 (N,))`.
    """
    if split not in CIFAR10_BATCHES:
        raise ValueError(
            f"CIFAR-10 split must be one of {sorted(CIFAR10_BATCHES)}. "
            f"Received: split={split!r}"
        )
    files = cifar10_batch_files(directory)
    if files is None:
        raise MissingDataError(
            "No CIFAR-10 batch files (data_batch_1..5, test_batch) found; "
            "extract cifar-10-python.tar.gz there. "
            f"Received: directory={str(directory)!r}"
        )
    parts = [_read_cifar10_batch(path) for path in files[split]]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts]).astype(np.int32)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels
