"""Hold out a fixed, class-stratified tuning split of a training split.

Every choice of a mini experiment (early stopping, init, learning rate,
crop area) is scored on a *tuning split* cut from the training images, so
the validation set (Imagenette val, MNIST test) is used only for reported
numbers. `split_off(train, per_class)` returns `(rest, tuning)`: the
tuning split holds `per_class` examples of every class, the rest trains.

The choice is a pure function of the data, never of the run's seed or of
the machine, so every seed, process and copy of the data set holds out the
same examples:

- image folders (`Split.paths`): per class, the `per_class` files whose
  *file name* (not its folder) has the smallest SHA-256 digest. Adding or
  removing other files of a class changes the tuning split only where a
  file enters or leaves the lowest digests; renaming the data root changes
  nothing.
- in-memory arrays (MNIST, CIFAR-10, decoded folders): per class, the first
  `per_class` examples of a fixed seed-0 permutation of the array (the
  same rule as `splits.subset`, applied within each class).

`bn_mnist` keeps its own older rule (`data.num_train_examples`: the first
50,000 of a seed-0 permutation train, the other 10,000 are its tuning
split, scored by its report only); that rule is neither stratified nor
served to the engine as a stream, hence this module.

scikit-learn's `train_test_split(stratify=...)` was considered: it draws
proportional (not equal) counts per class from a random state, so the split
depends on the list order and the library version; a digest of the file
name does not.
"""

import hashlib
import os

import numpy as np

_KINDS = ("files", "array")


def _name_key(path):
    name = os.path.basename(str(path))
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def tuning_index(split, per_class):
    """Sorted indices into `split` of its tuning examples.

    Args:
        split: a `splits.Split` of kind `files` or `array` (its labels).
        per_class: examples held out of every class (int > 0).

    Returns:
        int64 array of `per_class * num_classes_present` sorted indices.

    Raises:
        ValueError: `per_class` is not a positive int, the split is a
            stream (tfds), or a class has no more than `per_class` examples
            (nothing of it would be left to train on).
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int):
        raise ValueError(
            "data.tuning_per_class must be a positive int (or null for no "
            f"tuning split). Received: tuning_per_class={per_class!r}"
        )
    if per_class <= 0:
        raise ValueError(
            "data.tuning_per_class must be > 0 (or null for no tuning "
            f"split). Received: tuning_per_class={per_class}"
        )
    if split.kind not in _KINDS:
        raise ValueError(
            "A tuning split needs a local image folder or an in-memory data "
            "set (a tfds stream cannot be split by example); set "
            f"data.local_dir or drop data.tuning_per_class. Received: split "
            f"kind={split.kind!r}"
        )
    labels = np.asarray(split.labels)
    if split.kind == "files":
        keys = np.asarray([_name_key(p) for p in split.paths])
    else:
        keys = np.empty(len(labels), np.int64)
        keys[np.random.default_rng(0).permutation(len(labels))] = np.arange(
            len(labels)
        )
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) <= per_class:
            raise ValueError(
                f"Class {int(label)} has {len(members)} training examples: "
                f"holding out {per_class} would leave none to train on; "
                "lower data.tuning_per_class. Received: "
                f"tuning_per_class={per_class}"
            )
        order = np.argsort(keys[members], kind="stable")
        chosen.append(members[order[:per_class]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def split_off(split, per_class):
    """`(rest, tuning)` of a training split; `(split, None)` without one.

    Args:
        split: the training `splits.Split` (files or array).
        per_class: examples per class to hold out, or None (no tuning
            split: `split` is returned whole).

    Returns:
        `(rest, tuning)`: two `Split`s of the same kind, disjoint, in the
        original order; `tuning` holds `per_class` examples of each class.
    """
    if per_class is None:
        return split, None
    held = tuning_index(split, per_class)
    keep = np.setdiff1d(np.arange(split.size), held, assume_unique=True)
    return split.take(keep), split.take(held)
