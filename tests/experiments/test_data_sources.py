"""IDX reader, image-folder listing, offline resolution and missing data."""

import gzip
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from convnet_repro.experiments.data import cifar10
from convnet_repro.experiments.data import data_root
from convnet_repro.experiments.data import idx_format
from convnet_repro.experiments.data import image_folder
from convnet_repro.experiments.data import make_datasets
from convnet_repro.experiments.data import splits as data_splits
from convnet_repro.experiments.engine.exit_codes import MissingDataError

DATA_ROOT = pathlib.Path(os.environ.get(data_root.ENV_VAR, "/nonexistent"))
MNIST_DIR = DATA_ROOT / "mnist"
IMAGENETTE_DIR = DATA_ROOT / "imagenette2-224"
needs_mnist = pytest.mark.skipif(
    not idx_format.is_idx_dir(MNIST_DIR),
    reason=f"real MNIST IDX files not found in {MNIST_DIR}",
)
needs_imagenette = pytest.mark.skipif(
    not (IMAGENETTE_DIR / "val").is_dir(),
    reason=f"Imagenette not found in {IMAGENETTE_DIR}",
)


def _write_idx(path, array):
    """IDX writer straight from the format: 0, 0, dtype code, ndim, dims."""
    header = bytes([0, 0, 0x08, array.ndim])
    header += np.asarray(array.shape, ">u4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data)
    pathlib.Path(path).write_bytes(data)


def _write_tiny_mnist(directory, n_train=6, n_test=4):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        image_stem, label_stem = idx_format.IDX_FILES[split]
        _write_idx(directory / (image_stem + ".gz"), images)
        _write_idx(directory / label_stem, labels)  # raw file also accepted
        arrays[split] = images, labels
    return arrays


def test_read_idx_roundtrip_and_errors(tmp_path):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        _write_idx(tmp_path / name, array)
        out = idx_format.read_idx(tmp_path / name)
        np.testing.assert_array_equal(out, array)
        assert out.dtype == np.uint8
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01abcd")
    with pytest.raises(ValueError, match="Not an IDX file"):
        idx_format.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes_truncated())
    with pytest.raises(ValueError, match="truncated"):
        idx_format.read_idx(tmp_path / "short")


def _idx_bytes_truncated():
    return bytes([0, 0, 8, 1]) + np.asarray([10], ">u4").tobytes() + b"abc"


def _local_datasets(name, directory, input_shape):
    """`make_datasets` on an offline folder only, batches of 3."""
    return make_datasets(
        name,
        batch_size=3,
        eval_batch_size=3,
        source="local",
        local_dir=str(directory),
        input_shape=input_shape,
        num_classes=10,
    )


def test_tiny_idx_dir_through_make_datasets(tmp_path):
    arrays = _write_tiny_mnist(tmp_path)
    train_ds, val_ds = _local_datasets("mnist", tmp_path, (28, 28, 1))
    x, y = next(iter(val_ds))
    images, labels = arrays["test"]
    np.testing.assert_allclose(x[..., 0], images[:3] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels[:3])
    assert y.dtype == tf.int32
    assert [int(b[1].shape[0]) for b in val_ds] == [3, 1]
    # One epoch of 2 batches of 3 visits all 6 training images exactly once.
    seen = np.concatenate([b[0].numpy() for b in train_ds.take(2)])
    expected = arrays["train"][0] / 255.0
    order = [
        int(np.argmin(((expected - s[..., 0]) ** 2).sum((1, 2)))) for s in seen
    ]
    assert sorted(order) == list(range(6))
    with pytest.raises(ValueError, match="fix data.num_classes"):
        make_datasets(
            "mnist", batch_size=3, local_dir=str(tmp_path), num_classes=100
        )


@needs_mnist
def test_real_mnist_matches_provenance():
    train_images, train_labels = idx_format.load_idx_split(MNIST_DIR, "train")
    test_images, test_labels = idx_format.load_idx_split(MNIST_DIR, "test")
    assert train_images.shape == (60000, 28, 28, 1)
    assert test_images.shape == (10000, 28, 28, 1)
    assert train_images.dtype == np.uint8 and train_labels.dtype == np.int32
    assert np.bincount(train_labels).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949
    ]  # fmt: skip
    assert np.bincount(test_labels).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009
    ]  # fmt: skip
    assert train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert train_images.mean() / 255 == pytest.approx(0.1307, abs=1e-4)
    assert train_images.std() / 255 == pytest.approx(0.3081, abs=1e-4)


@pytest.mark.skipif(
    not idx_format.is_idx_dir(data_root.DEBIAN_FASHION_MNIST),
    reason="apt package dataset-fashion-mnist not installed",
)
def test_debian_fashion_mnist_is_found_and_balanced(monkeypatch):
    monkeypatch.delenv(data_root.ENV_VAR, raising=False)
    directory = data_root.resolve_local_dir("fashion_mnist")
    assert str(directory) == data_root.DEBIAN_FASHION_MNIST
    _, labels = idx_format.load_idx_split(directory, "test")
    assert np.bincount(labels).tolist() == [1000] * 10
    assert labels[:3].tolist() == [9, 2, 1]


def _write_tree(root, sizes=((20, 30), (30, 20), (24, 24))):
    """root/{train,val}/{cat,dog}/*.png; pixel value encodes the class."""
    for split in ("train", "val"):
        for label, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, (h, w) in enumerate(sizes):
                value = 50 + 100 * label
                image = np.full((h, w, 3), value, np.uint8)
                png = tf.io.encode_png(image).numpy()
                (folder / f"img{i}.png").write_bytes(png)
            (folder / "notes.txt").write_text("not an image")


def test_image_folder_listing_and_pipeline(tmp_path):
    _write_tree(tmp_path)
    paths, labels, classes = image_folder.list_image_folder(tmp_path / "train")
    assert classes == ["cat", "dog"]
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert all(p.endswith(".png") for p in paths) and paths == sorted(paths)
    for cache in (True, False, str(tmp_path / "cache")):
        train_ds, val_ds = make_datasets(
            "imagenette",
            batch_size=2,
            eval_batch_size=4,
            source="local",
            local_dir=str(tmp_path),
            decode_size=16,
            crop_size=12,
            resize_size=14,
            augment="resnet",
            lighting_std=0.0,
            cache=cache,
            input_shape=(12, 12, 3),
            num_classes=2,
        )
        x, y = next(iter(train_ds))
        assert x.shape == (2, 12, 12, 3)
        # Constant images stay constant under crop/flip/resize.
        np.testing.assert_allclose(
            x.numpy(),
            (50 + 100 * y.numpy()[:, None, None, None]) / 255 * np.ones_like(x),
            atol=1e-5,
        )
        assert [b[1].numpy().tolist() for b in val_ds] == [[0, 0, 0, 1], [1, 1]]
    saved = sorted((tmp_path / "cache").glob("decoded_16px_6_*.npy"))
    assert len(saved) == 2
    # A later process (empty in-memory cache) reads the .npy files back.
    data_splits._DECODE_CACHE.clear()
    for path in saved:  # halve the stored pixels: visible if read back
        np.save(path, np.load(path) // 2)
    _, val_ds = make_datasets(
        "imagenette",
        batch_size=2,
        source="local",
        local_dir=str(tmp_path),
        decode_size=16,
        cache=str(tmp_path / "cache"),
    )
    first = next(iter(val_ds))[0].numpy()
    np.testing.assert_allclose(first, 25 / 255 * np.ones_like(first))
    data_splits._DECODE_CACHE.clear()


def _write_tiny_cifar10(directory, binary, n=3):
    """The six batch files in the dataset's own layout: per image 1024 red,
    1024 green, 1024 blue bytes, row-major."""
    import pickle

    rng = np.random.default_rng(1)
    arrays = {}
    directory.mkdir(parents=True)
    for split, names in cifar10.CIFAR10_BATCHES.items():
        images, labels = [], []
        for name in names:
            hwc = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            label = rng.integers(0, 10, n).astype(np.uint8)
            rows = hwc.transpose(0, 3, 1, 2).reshape(n, 3072)
            if binary:
                records = np.concatenate([label[:, None], rows], axis=1)
                (directory / f"{name}.bin").write_bytes(records.tobytes())
            else:
                batch = {b"data": rows, b"labels": label.tolist()}
                (directory / name).write_bytes(pickle.dumps(batch))
            images.append(hwc)
            labels.append(label)
        arrays[split] = np.concatenate(images), np.concatenate(labels)
    return arrays


@pytest.mark.parametrize("binary", [False, True])
def test_cifar10_batches_offline(tmp_path, binary, monkeypatch):
    monkeypatch.delenv(data_root.ENV_VAR, raising=False)
    folder = "cifar-10-batches-bin" if binary else "cifar-10-batches-py"
    arrays = _write_tiny_cifar10(tmp_path / "cifar10" / folder, binary)
    images, labels = cifar10.load_cifar10_split(tmp_path / "cifar10", "train")
    np.testing.assert_array_equal(images, arrays["train"][0])
    np.testing.assert_array_equal(labels, arrays["train"][1])
    assert images.shape == (15, 32, 32, 3) and labels.dtype == np.int32
    # Found from the data root, as the env var would point to it.
    assert data_root.resolve_local_dir("cifar10", tmp_path) is not None
    _, val_ds = _local_datasets("cifar10", tmp_path, (32, 32, 3))
    x, y = next(iter(val_ds))
    np.testing.assert_allclose(x, arrays["test"][0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, arrays["test"][1])
    with pytest.raises(MissingDataError, match="cifar-10-python"):
        cifar10.load_cifar10_split(tmp_path, "train")


def test_missing_data_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv(data_root.ENV_VAR, raising=False)
    with pytest.raises(MissingDataError) as info:
        make_datasets(
            "mnist", batch_size=8, source="local", local_dir=str(tmp_path)
        )
    message = str(info.value)
    assert "\n" not in message
    assert data_root.ENV_VAR in message and "data.local_dir" in message
    assert "Received: local_dir=" in message
    assert "data.download=true" in message  # mnist is also on tfds
    # auto: nothing local, tfds not prepared, no download -> same kind of
    # error naming the tfds fix, before any download is attempted.
    with pytest.raises(MissingDataError, match="data.download=true"):
        make_datasets(
            "imagenette",
            batch_size=8,
            local_dir=str(tmp_path),
            tfds_data_dir=str(tmp_path / "tfds"),
        )


@needs_imagenette
def test_real_imagenette_listing_and_subset():
    _, labels, classes = image_folder.list_image_folder(
        IMAGENETTE_DIR / "train"
    )
    assert len(classes) == 10 and classes[0] == "n01440764"
    assert np.bincount(labels).tolist() == [
        963, 955, 993, 858, 941, 956, 961, 931, 951, 960
    ]  # fmt: skip
    _, val_labels, _ = image_folder.list_image_folder(IMAGENETTE_DIR / "val")
    assert len(val_labels) == 3925
    train_ds, val_ds = make_datasets(
        "imagenette",
        batch_size=8,
        local_dir=str(IMAGENETTE_DIR),
        decode_size=40,
        crop_size=32,
        augment="alexnet",
        num_train_examples=16,
        num_val_examples=8,
        input_shape=(32, 32, 3),
        num_classes=10,
    )
    x, y = next(iter(train_ds))
    assert x.shape == (8, 32, 32, 3) and x.dtype == tf.float32
    assert 0 <= int(tf.reduce_min(y)) and int(tf.reduce_max(y)) < 10
    xv, _ = next(iter(val_ds))
    assert xv.shape == (8, 32, 32, 3)
    assert 0.0 <= float(tf.reduce_min(xv)) and float(tf.reduce_max(xv)) <= 1.0


def test_unprepared_imagenet_on_tfds_names_the_manual_dir(tmp_path):
    """The real `tfds.builder` on an empty data_dir: ImageNet cannot be
    downloaded, so `download=true` fails in one line naming
    `data.manual_dir`, before tfds tries anything. (The prepared tfds path
    runs for real on the ILSVRC sample: test_data_ilsvrc_sample.py,
    test_data_tfds_stream.py.)"""
    with pytest.raises(MissingDataError) as info:
        make_datasets(
            "imagenet2012",
            batch_size=4,
            source="tfds",
            download=True,
            tfds_data_dir=str(tmp_path / "tfds"),
        )
    assert "\n" not in str(info.value)
    assert "data.manual_dir" in str(info.value)
    assert not any((tmp_path / "tfds").rglob("*.tfrecord*"))


def test_data_configs_compose_with_the_root_config():
    import hydra
    from omegaconf import OmegaConf

    from convnet_repro.experiments.engine.config_schema import register_configs

    register_configs()
    conf_dir = pathlib.Path(__file__).resolve().parents[2] / "conf"
    with hydra.initialize_config_dir(
        version_base="1.3", config_dir=str(conf_dir)
    ):
        for path in sorted((conf_dir / "data").glob("*.yaml")):
            cfg = hydra.compose(
                "train", overrides=[f"data={path.stem}", "seed=3"]
            )
            data = OmegaConf.to_container(cfg.data, resolve=True)
            assert data["seed"] == 3 and data["name"], path.name
