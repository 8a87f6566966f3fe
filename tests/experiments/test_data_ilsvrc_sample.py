"""The ILSVRC-2012 sample: both layouts give every real image its true
wnid's index in the 1,000-class list, through tfds' real preparation."""

import hashlib
import tarfile

import numpy as np
import pytest

from convnet_repro.experiments.data import ilsvrc_sample as sample
from convnet_repro.experiments.data import make_datasets

TENCH = "n01440764"  # class 0 of ILSVRC-2012


def _fingerprints(ds):
    """`{sha1 of the uint8 pixels: label}` of a batch-size-1 dataset."""
    out = {}
    for x, y in ds.as_numpy_iterator():
        pixels = np.round(x[0]).astype(np.uint8)
        key = hashlib.sha1(pixels.tobytes() + bytes(pixels.shape)).hexdigest()
        assert key not in out  # every image is met once
        out[key] = int(y[0])
    return out


def _pixels_of(paths_and_wnids, wnids):
    import tensorflow as tf

    expected = {}
    for path, wnid in paths_and_wnids:
        image = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3)
        pixels = image.numpy()
        key = hashlib.sha1(pixels.tobytes() + bytes(pixels.shape)).hexdigest()
        expected[key] = wnids.index(wnid)
    return expected


def _raw(name, source, **kwargs):
    # Native size, raw 0-255 pixels, no augmentation: image identity.
    return make_datasets(
        "imagenet2012",
        batch_size=1,
        source=source,
        rescale=1.0,
        mean=None,
        **kwargs,
    )


def test_sample_tars_are_what_tfds_reads(ilsvrc_sample):
    manual = ilsvrc_sample["manual_dir"]
    with tarfile.open(f"{manual}/{sample.VAL_TAR}") as tar:
        members = tar.getmembers()
    # All 50,000 names (so tfds' sorted-names zip gives true labels); only
    # the real images are files.
    assert len(members) == sample.NUM_VAL_IMAGES
    files = sorted(m.name for m in members if m.isfile())
    assert files == sorted(ilsvrc_sample["val"])
    assert len(files) == 10 * 20
    with tarfile.open(f"{manual}/{sample.TRAIN_TAR}") as tar:
        inner = sorted(tar.getnames())
    assert inner == [f"{w}.tar" for w in ilsvrc_sample["wnids"]]
    assert all(
        name.startswith(wnid + "_")
        for name, wnid in ilsvrc_sample["train"].items()
    )


def test_tfds_path_gives_true_wnid_indices(ilsvrc_sample, ilsvrc_tfds_dir):
    wnids = sample.imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == TENCH
    folder = ilsvrc_sample["folder"]
    train_ds, val_ds = _raw(
        "imagenet2012", "tfds", tfds_data_dir=ilsvrc_tfds_dir
    )
    got_val = _fingerprints(val_ds)
    expected_val = _pixels_of(
        (
            (f"{folder}/val/{wnid}/{name}", wnid)
            for name, wnid in ilsvrc_sample["val"].items()
        ),
        wnids,
    )
    assert got_val == expected_val
    assert 0 in got_val.values()  # tench
    _, first = _raw(
        "imagenet2012",
        "tfds",
        tfds_data_dir=ilsvrc_tfds_dir,
        num_val_examples=7,
    )
    assert len(_fingerprints(first)) == 7  # evaluate's num_images
    got_train = _fingerprints(train_ds.take(len(ilsvrc_sample["train"])))
    expected_train = _pixels_of(
        (
            (f"{folder}/train/{wnid}/{name}", wnid)
            for name, wnid in ilsvrc_sample["train"].items()
        ),
        wnids,
    )
    assert got_train == expected_train  # one epoch: every image once


def test_folder_layout_gives_the_same_labels(ilsvrc_sample):
    wnids = sample.imagenet_wnids()
    train_ds, val_ds = _raw(
        "imagenet2012",
        "local",
        local_dir=ilsvrc_sample["folder"],
        num_classes=1000,
        cache=False,
    )
    folder = ilsvrc_sample["folder"]
    assert _fingerprints(val_ds) == _pixels_of(
        (
            (f"{folder}/val/{wnid}/{name}", wnid)
            for name, wnid in ilsvrc_sample["val"].items()
        ),
        wnids,
    )
    labels = np.concatenate([y for _, y in val_ds.as_numpy_iterator()])
    expected = sorted(
        wnids.index(w) for w in ilsvrc_sample["val"].values()
    )  # the listing is sorted by wnid, so by index here
    assert labels.tolist() == expected
    assert set(labels) == {wnids.index(w) for w in ilsvrc_sample["wnids"]}
    assert labels[0] == 0 and wnids[labels[-1]] == "n03888257"


def test_folder_not_in_the_class_list_is_one_clear_line(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / TENCH).mkdir(parents=True)
        (tmp_path / split / "cats").mkdir()
    with pytest.raises(ValueError, match="'cats' is not one of the 1000"):
        make_datasets(
            "imagenet2012", batch_size=1, source="local", local_dir=tmp_path
        )


def test_sample_refuses_a_folder_made_with_other_arguments(
    ilsvrc_sample, tmp_path
):
    with pytest.raises(ValueError, match="layouts must be"):
        sample.make_ilsvrc_sample(tmp_path, layouts=("zip",))
    sample.make_ilsvrc_sample(tmp_path, images_per_class=1, layouts=("folder",))
    with pytest.raises(ValueError, match="other arguments"):
        sample.make_ilsvrc_sample(tmp_path, images_per_class=2)


@pytest.mark.slow
def test_jpeg_placeholders_also_give_true_labels(tmp_path):
    # The measured variant: 8x8 JPEGs for the other 49,800 names,
    # which tfds turns into val examples too (~1 min to prepare).
    import tensorflow_datasets as tfds

    made = sample.make_ilsvrc_sample(
        tmp_path / "sample",
        images_per_class=2,
        layouts=("tfds",),
        placeholder="jpeg",
    )
    builder = sample.prepare_tfds(made["manual_dir"], tmp_path / "tfds")
    assert builder.info.splits["validation"].num_examples == 50_000
    wnids, truth = sample.imagenet_wnids(), sample.validation_wnids()
    found = 0
    for example in tfds.as_numpy(builder.as_dataset("validation")):
        name = example["file_name"].decode()
        assert wnids[example["label"]] == truth[int(name[15:23]) - 1]
        found += name in made["val"]
    assert found == len(made["val"]) == 20
