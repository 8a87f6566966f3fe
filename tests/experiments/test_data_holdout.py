"""The tuning split: held out of the training split by file name (folders)
or a fixed permutation (arrays), stratified, disjoint, seed-independent."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from convnet_repro.experiments.data import holdout
from convnet_repro.experiments.data import make_datasets
from convnet_repro.experiments.data.splits import Split
from tests.helpers import needs_imagenette

HOLDOUT_PY = pathlib.Path(holdout.__file__)


def _folder_split(root, per_class=(30, 40, 25), order=None):
    paths, labels = [], []
    for label, count in enumerate(per_class):
        for i in range(count):
            paths.append(f"{root}/class{label}/n{label:02d}_{i * 7 + 3}.JPEG")
            labels.append(label)
    index = np.arange(len(paths)) if order is None else order
    return Split(
        np.asarray(labels, np.int32)[index],
        paths=[paths[i] for i in index],
        num_classes=len(per_class),
    )


def test_folder_split_is_stratified_disjoint_and_complete():
    split = _folder_split("/data/a")
    rest, tuning = holdout.split_off(split, 10)
    assert np.bincount(tuning.labels).tolist() == [10, 10, 10]
    assert np.bincount(rest.labels).tolist() == [20, 30, 15]
    assert not set(rest.paths) & set(tuning.paths)
    assert sorted(rest.paths + tuning.paths) == sorted(split.paths)
    # Labels stay with their files.
    for s in (rest, tuning):
        assert all(
            p.split("/")[-2] == f"class{y}" for p, y in zip(s.paths, s.labels)
        )
    # Not simply the first files of each class (a fixed pseudo-random pick).
    first = {p for p in split.paths if int(p.split("_")[-1][:-5]) < 70}
    assert set(tuning.paths) != first


def test_folder_split_depends_on_file_names_only():
    a = holdout.split_off(_folder_split("/data/a"), 5)[1]
    moved = holdout.split_off(_folder_split("/elsewhere/copy"), 5)[1]
    order = np.random.default_rng(3).permutation(95)
    shuffled = holdout.split_off(_folder_split("/data/a", order=order), 5)[1]
    names = [os.path.basename(p) for p in a.paths]
    assert names == [os.path.basename(p) for p in moved.paths]
    assert sorted(names) == sorted(os.path.basename(p) for p in shuffled.paths)


def test_array_split_is_stratified_and_fixed():
    labels = np.repeat(np.arange(4), [20, 30, 40, 50]).astype(np.int32)
    images = np.arange(len(labels), dtype=np.uint8)[:, None, None, None]
    split = Split(labels, images, num_classes=4)
    rest, tuning = holdout.split_off(split, 6)
    again = holdout.split_off(split, 6)[1]
    assert np.bincount(tuning.labels).tolist() == [6, 6, 6, 6]
    assert not set(rest.images.ravel()) & set(tuning.images.ravel())
    assert rest.size + tuning.size == split.size
    np.testing.assert_array_equal(tuning.images, again.images)


def test_no_tuning_split_keeps_the_split_whole():
    split = _folder_split("/d")
    assert holdout.split_off(split, None) == (split, None)


@pytest.mark.parametrize(
    "per_class, match",
    [(0, "must be > 0"), (2.5, "positive int"), (25, "Class 2 has 25")],
)
def test_bad_tuning_sizes_fail_with_the_fix(per_class, match):
    with pytest.raises(ValueError, match=match):
        holdout.split_off(_folder_split("/d"), per_class)


def test_a_stream_cannot_be_split():
    with pytest.raises(ValueError, match="tfds stream"):
        holdout.split_off(Split(np.zeros(10), stream=object()), 1)


def test_make_datasets_trains_on_the_rest_and_serves_the_tuning_split():
    common = dict(
        name="synthetic",
        batch_size=8,
        eval_batch_size=64,
        num_train_examples=64,
        num_val_examples=16,
        tuning_per_class=4,
    )
    train_ds, val_ds = make_datasets(**common)
    _, tune_ds = make_datasets(**common, eval_split="tuning")
    tune_x, tune_y = next(iter(tune_ds))
    assert np.bincount(tune_y.numpy()).tolist() == [4, 4, 4, 4]
    assert len(next(iter(val_ds))[1]) == 16  # val untouched
    seen = np.concatenate(
        [x.numpy() for x, _ in train_ds.take(48 // 8)]
    )  # one epoch of the 48 remaining images
    tune = {t.tobytes() for t in tune_x.numpy()}
    train = {t.tobytes() for t in seen}
    assert len(train) == 48 and not train & tune


def test_eval_split_tuning_needs_a_tuning_split():
    with pytest.raises(ValueError, match="needs a tuning split"):
        make_datasets("synthetic", batch_size=8, eval_split="tuning")
    with pytest.raises(ValueError, match="eval_split must be one of"):
        make_datasets("synthetic", batch_size=8, eval_split="test")


@needs_imagenette
def test_imagenette_tuning_split_is_the_same_in_another_process():
    from convnet_repro.experiments.data import data_root
    from convnet_repro.experiments.data import image_folder

    root = data_root.resolve_local_dir("imagenette")
    paths, labels, _ = image_folder.list_image_folder(root / "train")
    split = Split(labels, paths=paths, num_classes=10)
    rest, tuning = holdout.split_off(split, 50)
    assert tuning.size == 500 and rest.size == split.size - 500
    assert np.bincount(tuning.labels).tolist() == [50] * 10
    names = sorted(os.path.basename(p) for p in tuning.paths)
    # A fresh interpreter (another hash seed) loading only holdout.py.
    code = (
        "import importlib.util as u, os, sys, numpy as np\n"
        f"spec = u.spec_from_file_location('h', {str(HOLDOUT_PY)!r})\n"
        "h = u.module_from_spec(spec); spec.loader.exec_module(h)\n"
        "class S:\n"
        "    kind = 'files'\n"
        "    def __init__(s, p, y): s.paths, s.labels = p, np.asarray(y)\n"
        "root = sys.argv[1]\n"
        "p, y = [], []\n"
        "for i, c in enumerate(sorted(os.listdir(root))):\n"
        "    for f in sorted(os.listdir(os.path.join(root, c)))[::-1]:\n"
        "        p.append(os.path.join(root, c, f)); y.append(i)\n"
        "idx = h.tuning_index(S(p, y), 50)\n"
        "print('\\n'.join(sorted(os.path.basename(p[i]) for i in idx)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root / "train")],
        env=dict(os.environ, PYTHONHASHSEED="123"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == names
