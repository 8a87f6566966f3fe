"""Per-image predictions on disk, written and read one batch at a time.

A scored model or row keeps a folder with `probabilities.npy` (`(N,
classes)`; float16 for MLflow artifacts: 100 MB for 50,000 images x 1,000
classes; float32 for the report hook's scratch files), `labels.npy`
(`(N,)` int32) and `top_k_hits.npy` (`(N, 2)` int8: top-1 and top-5 hit,
scored on the full-precision probabilities before they are stored), so
ensembles are combined later, chunk by chunk, without any model's whole
prediction array in memory, and paired tests count exactly the hits the
row's error counted.

`np.lib.format.open_memmap` would write the same files, but it needs the
number of images up front (a `tf.data` stream says it only at its end) and
its dirty pages count towards resident memory until written back; so rows
are appended to a raw side file and the `.npy` header is added at the end.
"""

import os
import shutil

import numpy as np

from convnet_repro.experiments.evaluation import scoring

PROBABILITIES = "probabilities.npy"
LABELS = "labels.npy"
HITS = "top_k_hits.npy"  # columns: scoring.TOP_K
CHUNK_ROWS = 1024


class _NpyAppender:
    """Appends rows to a `.npy` file whose length is known only at close."""

    def __init__(self, path, dtype):
        self.path = str(path)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.rows = 0
        self.row_shape = None
        self._raw = open(self.path + ".raw", "wb")

    def append(self, rows):
        rows = np.asarray(rows)
        if self.row_shape is None:
            self.row_shape = rows.shape[1:]
        if rows.shape[1:] != self.row_shape:
            raise ValueError(
                f"Rows must be (B, *{self.row_shape}). "
                f"Received: shape={rows.shape}"
            )
        self._raw.write(rows.astype(self.dtype).tobytes())
        self.rows += len(rows)

    def close(self):
        self._raw.close()
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.rows, *(self.row_shape or ())),
        }
        with open(self.path, "wb") as out, open(self._raw.name, "rb") as raw:
            np.lib.format.write_array_header_2_0(out, header)
            shutil.copyfileobj(raw, out, length=1 << 20)
        os.remove(self._raw.name)


class PredictionWriter:
    """Streams `(probs (B, classes), labels (B,))` batches into a folder.

    Args:
        folder: created if missing; receives `probabilities.npy`,
            `labels.npy` and `top_k_hits.npy` at `close()`.
        dtype: stored probability dtype, `"float16"` or `"float32"`.

    Example:
    >>> w = PredictionWriter("/tmp/pred")
    >>> w.append(np.full((2, 3), 1 / 3), np.array([0, 2]))
    >>> w.close()
    '/tmp/pred'
    >>> np.load("/tmp/pred/probabilities.npy").shape
    (2, 3)
    """

    def __init__(self, folder, dtype="float16"):
        self.folder = str(folder)
        os.makedirs(self.folder, exist_ok=True)
        self._probs = _NpyAppender(
            os.path.join(self.folder, PROBABILITIES), dtype
        )
        self._labels = _NpyAppender(os.path.join(self.folder, LABELS), "int32")
        self._hits = _NpyAppender(os.path.join(self.folder, HITS), "int8")

    def append(self, probs, labels):
        probs = np.asarray(probs)
        if probs.ndim != 2 or len(labels) != len(probs):
            raise ValueError(
                "Expected probs (B, classes) and labels (B,). Received: "
                f"probs.shape={probs.shape}, labels={len(labels)}"
            )
        self._probs.append(probs)
        self._labels.append(labels)
        self._hits.append(scoring.top_k_hits(probs, labels))

    def close(self):
        """Writes the three `.npy` files; returns the folder."""
        self._probs.close()
        self._labels.close()
        self._hits.close()
        return self.folder


def read_hits(folder):
    """`(N, len(scoring.TOP_K))` int8 top-k hits of a prediction folder, or
    None for one written before the hits were stored."""
    path = os.path.join(folder, HITS)
    return np.load(path) if os.path.exists(path) else None


def _read_header(f):
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def read_chunks(path, rows=CHUNK_ROWS):
    """Yields chunks of `rows` rows of a `.npy` file in order.

    Plain reads (no memory map), so the resident memory stays one chunk.
    Probabilities come as float32.
    """
    with open(path, "rb") as f:
        shape, fortran, dtype = _read_header(f)
        if fortran:
            raise ValueError(
                f"Expected a C-ordered .npy file. Received: {path}"
            )
        width = int(np.prod(shape[1:], dtype=np.int64))
        for start in range(0, shape[0], rows):
            count = min(rows, shape[0] - start) * width
            chunk = np.fromfile(f, dtype=dtype, count=count)
            chunk = chunk.reshape((-1, *shape[1:]))
            yield chunk.astype(np.float32) if chunk.ndim == 2 else chunk


def num_rows(path):
    """Number of images in a `.npy` file (reads the header only)."""
    with open(path, "rb") as f:
        return _read_header(f)[0][0]


def combine(folders, counter, writer=None, rows=CHUNK_ROWS):
    """Equal-weight mean of several members' predictions, chunk by chunk.

    Args:
        folders: prediction folders of the ensemble members (same images in
            the same order).
        counter: a `scoring.TopKCounter`, updated with every chunk.
        writer: optional `PredictionWriter` receiving the mean.
        rows: images per chunk.

    Returns:
        `counter`.
    """
    paths = [os.path.join(f, PROBABILITIES) for f in folders]
    sizes = {f: num_rows(p) for f, p in zip(folders, paths)}
    if len(set(sizes.values())) != 1:
        raise ValueError(
            "Ensemble members were scored on different images; score them "
            f"with the same data and --max-images. Received: rows={sizes}"
        )
    labels = [read_chunks(os.path.join(f, LABELS), rows) for f in folders]
    probs = [read_chunks(p, rows) for p in paths]
    for member_probs, member_labels in zip(zip(*probs), zip(*labels)):
        if any((lab != member_labels[0]).any() for lab in member_labels):
            raise ValueError(
                "Ensemble members' labels differ image by image; score them "
                f"on the same data in the same order. Received: {folders}"
            )
        mean = np.mean(member_probs, axis=0)
        counter.update(mean, member_labels[0])
        if writer is not None:
            writer.append(mean, member_labels[0])
    return counter
