"""Reads MNIST-style IDX files (optionally gzip-compressed) into arrays.

Used for MNIST and Fashion-MNIST offline copies: the four files
`{train,t10k}-{images-idx3,labels-idx1}-ubyte(.gz)` in one folder.
`keras.datasets.mnist.load_data` was considered and does not fit: it reads
its own `.npz` download, not the IDX files of an offline folder.

Reference:
    LeCun et al., 1998, IDX format: http://yann.lecun.com/exdb/mnist/
"""

import gzip
import pathlib
import zlib

import numpy as np

from convnet_repro.experiments.engine.exit_codes import DataError

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path):
    """Reads one IDX file (optionally gzip-compressed) into a NumPy array.

    Args:
        path: path of an IDX file (`*-idx3-ubyte` or `*.gz`).

    Returns:
        A NumPy array with the shape and dtype stored in the header.

    Raises:
        ValueError: the file is not a valid IDX file.
        DataError: a `.gz` file is truncated or corrupt.

    Example:
    >>> read_idx("mnist/t10k-labels-idx1-ubyte.gz")[:3]  # doctest: +SKIP
    array([7, 2, 1], dtype=uint8)
    """
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(
            f"{path} is truncated or corrupt ({e}); copy or download it "
            f"again (its folder must hold the four MNIST .gz files). "
            f"Received: path={str(path)!r}"
        ) from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(
            "Not an IDX file (expected a 0x0000 magic prefix). "
            f"Received: path={str(path)!r}"
        )
    dtype_code, ndim = data[2], data[3]
    if dtype_code not in _IDX_DTYPES:
        raise ValueError(
            f"Unknown IDX dtype code {dtype_code:#x}. Received: path={path}"
        )
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4)
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    offset = 4 + 4 * ndim
    count = int(np.prod(dims)) if ndim else 1
    if len(data) - offset != count * dtype.itemsize:
        raise ValueError(
            f"IDX file is truncated: header says {tuple(dims)} but holds "
            f"{len(data) - offset} bytes. Received: path={str(path)!r}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return array.reshape(tuple(int(d) for d in dims)).astype(
        dtype.newbyteorder("="), copy=False
    )


def find_idx_file(directory, stem):
    """Returns `directory/stem(.gz)` or None (both name styles accepted)."""
    directory = pathlib.Path(directory)
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def is_idx_dir(directory):
    """True if `directory` holds the four MNIST-style IDX files."""
    return directory is not None and all(
        find_idx_file(directory, stem) is not None
        for pair in IDX_FILES.values()
        for stem in pair
    )


def load_idx_split(directory, split):
    """Loads `split` ("train" or "test") of an MNIST-format IDX directory.

    Returns:
        `(images uint8 (N, H, W, 1), labels int32 (N,))`.
    """
    if split not in IDX_FILES:
        raise ValueError(
            f"IDX split must be one of {sorted(IDX_FILES)}. Received: "
            f"split={split!r}"
        )
    image_stem, label_stem = IDX_FILES[split]
    images = read_idx(find_idx_file(directory, image_stem))
    labels = read_idx(find_idx_file(directory, label_stem))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{image_stem} has {images.shape[0]} images but {label_stem} has "
            f"{labels.shape[0]} labels. Received: directory={str(directory)!r}"
        )
    return images[..., None], labels.astype(np.int32)
