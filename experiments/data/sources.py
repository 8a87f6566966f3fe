"""Raw data sources: IDX files, image folders, synthetic images, TFDS.

Everything here returns plain NumPy arrays or lists of file paths; the
`tf.data` pipelines live in `experiments.data.pipeline`.

Offline data root: the env var `CONVNET_REPRO_DATA_DIR` holds `mnist/` (the
four IDX `.gz` files), `imagenette2-224/{train,val}/<wnid>/*.JPEG` (see
`shared/data/PROVENANCE.md`) and optionally `cifar10/` (the extracted
`cifar-10-python.tar.gz` or `cifar-10-binary.tar.gz`). A config's
`local_dir` overrides it.

Reference:
    LeCun et al., 1998, IDX format: http://yann.lecun.com/exdb/mnist/
    Krizhevsky, 2009, CIFAR-10 batches: https://www.cs.toronto.edu/~kriz/cifar.html
"""

import gzip
import os
import pathlib
import pickle
import zlib

import numpy as np

from experiments.engine.exit_codes import DataError

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

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".gif")
# CIFAR-10 batch files (python pickles, or `<name>.bin` in the binary
# version), inside `cifar-10-batches-py/` or `cifar-10-batches-bin/`.
CIFAR10_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}

_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class MissingDataError(FileNotFoundError):
    """A dataset was not found offline and may not be downloaded."""


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


def list_image_folder(directory, class_names=None, class_index=None):
    """Lists an image-folder tree `directory/<class>/<image>`.

    Classes are the sub-folder names in sorted order (label = index), files
    are sorted within each class, so the listing is deterministic.

    Args:
        directory: root of the tree (e.g. `imagenette2-224/train`).
        class_names: optional list fixing the class order (e.g. the train
            split's classes when listing val).
        class_index: optional full class list (e.g. the 1,000 ILSVRC-2012
            wnids): the sub-folders found may be any subset of it and each
            label is the folder's position in it.

    Returns:
        `(paths list[str], labels int32 (N,), class_names list[str])`, with
        `class_names` the `class_index` when given.

    Raises:
        ValueError: no class folders, a `class_names` folder is missing, or
            a folder is not in `class_index`.
    """
    directory = pathlib.Path(directory)
    if class_names is None:
        class_names = sorted(p.name for p in directory.iterdir() if p.is_dir())
    positions = range(len(class_names))
    if class_index is not None:
        where = {name: i for i, name in enumerate(class_index)}
        unknown = [name for name in class_names if name not in where]
        if unknown:
            raise ValueError(
                f"Folder {unknown[0]!r} is not one of the "
                f"{len(where)} class names of this dataset (e.g. an ILSVRC-"
                f"2012 wnid); rename or remove it. Received: "
                f"directory={str(directory)!r}"
            )
        positions = [where[name] for name in class_names]
    if not class_names:
        raise ValueError(
            "Image folder has no class sub-folders; expected "
            f"<dir>/<class>/<image>. Received: directory={str(directory)!r}"
        )
    paths, labels = [], []
    for label, name in zip(positions, class_names):
        class_dir = directory / name
        if not class_dir.is_dir():
            raise ValueError(
                f"Class folder {name!r} is missing. Received: "
                f"directory={str(directory)!r}"
            )
        files = sorted(
            f
            for f in class_dir.iterdir()
            if f.suffix.lower() in IMAGE_EXTENSIONS
        )
        paths.extend(str(f) for f in files)
        labels.extend([label] * len(files))
    check_image_files(paths)
    if class_index is not None:
        class_names = class_index
    return paths, np.asarray(labels, np.int32), list(class_names)


# (magic prefix, trailer the file must end with (None: not checked)).
_IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", b"\xff\xd9"),  # JPEG: SOI ... EOI
    (b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"),  # PNG: ... IEND chunk
    (b"GIF8", b";"),
    (b"BM", None),
    (b"RIFF", None),  # WebP
)


def image_file_problem(path):
    """Why `path` is not a complete image file, or None.

    Checks the format's magic bytes and its end marker (JPEG EOI, PNG IEND,
    GIF trailer) in the first and last bytes only: it finds truncated
    copies and non-image files without decoding (13,394 Imagenette files:
    1.4 s warm, 2.6 s cold, on a busy 2-core machine). Trailing NUL padding
    after the marker is accepted. Damaged scan data inside an intact file
    is found only by decoding (`pipeline` names the file then).
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, size - 64))
            tail = f.read().rstrip(b"\0")
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    for magic, trailer in _IMAGE_SIGNATURES:
        if head.startswith(magic):
            if trailer is not None and not tail.endswith(trailer):
                return "truncated (no end-of-image marker)"
            return None
    return f"not an image (starts with {head[:4]!r})"


def check_image_files(paths):
    """Raises `DataError` naming the first bad image files (see
    `image_file_problem`), before any decoding or training."""
    bad = []
    for path in paths:
        problem = image_file_problem(path)
        if problem is not None:
            bad.append(f"{path} is {problem}")
    if bad:
        raise DataError(
            f"{len(bad)} corrupt image file(s): {'; '.join(bad[:3])}"
            f"{'; ...' if len(bad) > 3 else ''}; replace them from the "
            "original archive (or delete them). "
            f"Received: {len(paths)} files"
        )


def make_synthetic(
    num_examples, input_shape=(16, 16, 1), num_classes=4, noise=0.25, seed=0
):
    """Generates a small, learnable classification set of uint8 images.

    Each class has a fixed random template of 4x4-pixel blocks (drawn from
    `seed`, independent of the training order seed); an example is its class
    template plus Gaussian noise of std `noise` (in [0, 1] units), clipped
    and stored as uint8. A linear model separates the classes easily.

    Args:
        num_examples: number of images.
        input_shape: `(H, W, C)`.
        num_classes: number of classes (labels `0..num_classes-1`, balanced).
        noise: noise standard deviation in [0, 1] pixel units.
        seed: data seed; the `split` seed offset keeps train/val disjoint.

    Returns:
        `(images uint8 (N, H, W, C), labels int32 (N,))`.
    """
    h, w, c = (int(d) for d in input_shape)
    template_rng = np.random.default_rng(12345)  # classes never change
    blocks = template_rng.random((num_classes, -(-h // 4), -(-w // 4), c))
    templates = blocks.repeat(4, axis=1).repeat(4, axis=2)[:, :h, :w, :]
    rng = np.random.default_rng(seed)
    labels = (np.arange(num_examples) % num_classes).astype(np.int32)
    rng.shuffle(labels)
    images = templates[labels] + noise * rng.standard_normal(
        (num_examples, h, w, c)
    )
    images = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
    return images, labels


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
