"""make_datasets: determinism, exact resume, preprocessing, configs."""

import inspect
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from convnet_repro.experiments.data import make_datasets
from convnet_repro.experiments.data import synthetic

CONF_DIR = pathlib.Path(__file__).resolve().parents[2] / "conf" / "data"
SYN = dict(batch_size=32, input_shape=(16, 16, 1), num_classes=4)


def _batches(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_same_seed_same_stream_other_seed_differs():
    a = _batches(make_datasets("synthetic", seed=7, **SYN)[0], 3)
    b = _batches(make_datasets("synthetic", seed=7, **SYN)[0], 3)
    c = _batches(make_datasets("synthetic", seed=8, **SYN)[0], 3)
    _assert_same(a, b)
    assert not np.array_equal(a[0][1], c[0][1])
    assert a[0][0].dtype == np.float32 and a[0][1].dtype == np.int32


@pytest.mark.parametrize("augment", [None, "cifar"])
def test_skip_batches_equals_skip_across_epochs(augment):
    # 512 examples / 32 = 16 batches per epoch: k = 21 lies in epoch 2.
    kw = dict(SYN, seed=3, augment=augment, crop_size=16, resize_size=16)
    train_ds, _ = make_datasets("synthetic", **kw)
    resumed, _ = make_datasets("synthetic", skip_batches=21, **kw)
    _assert_same(_batches(train_ds.skip(21), 4), _batches(resumed, 4))


def test_each_epoch_visits_every_example_once():
    kw = dict(SYN, num_train_examples=100, seed=1, eval_batch_size=100)
    train_ds, _ = make_datasets("synthetic", **kw)  # 3 batches per epoch
    images, _ = synthetic.make_synthetic(100, (16, 16, 1), 4, seed=1)
    flat = images.reshape(100, -1) / 255.0
    epochs = _batches(train_ds, 6)
    for epoch in (epochs[:3], epochs[3:]):
        seen = np.concatenate([x for x, _ in epoch]).reshape(96, -1)
        index = [int(np.argmin(((flat - s) ** 2).sum(1))) for s in seen]
        assert len(set(index)) == 96
    assert not np.array_equal(epochs[0][0], epochs[3][0])  # reshuffled


def test_val_is_ordered_finite_with_partial_batch():
    _, val_ds = make_datasets(
        "synthetic",
        eval_batch_size=50,
        seed=0,
        **{k: v for k, v in SYN.items()},
    )
    images, labels = synthetic.make_synthetic(128, (16, 16, 1), 4, seed=2)
    batches = _batches(val_ds, 10)
    assert [len(y) for _, y in batches] == [50, 50, 28]
    np.testing.assert_array_equal(
        np.concatenate([y for _, y in batches]), labels
    )
    np.testing.assert_allclose(
        np.concatenate([x for x, _ in batches]), images / 255.0, rtol=1e-6
    )


def test_binarize_flatten_and_channel_normalization():
    images, _ = synthetic.make_synthetic(128, (16, 16, 1), 4, seed=2)
    train_images, _ = synthetic.make_synthetic(512, (16, 16, 1), 4, seed=1)
    grey = images[:32] / 255.0
    _, val_ds = make_datasets(
        "synthetic",
        binarize=True,
        flatten=True,
        seed=0,
        batch_size=32,
        num_classes=4,
    )
    x, _ = next(iter(val_ds))
    assert x.shape == (32, 256)
    np.testing.assert_array_equal(x.numpy(), (grey > 0.5).reshape(32, 256))
    assert set(np.unique(x.numpy())) <= {0.0, 1.0}
    _, val_ds = make_datasets("synthetic", mean="channel", std="channel", **SYN)
    x, _ = next(iter(val_ds))
    mean = train_images.mean() / 255.0
    std = train_images.std() / 255.0
    np.testing.assert_allclose(x.numpy(), (grey - mean) / std, atol=1e-5)
    _, val_ds = make_datasets("synthetic", mean="pixel", **SYN)
    mean_image = train_images.mean(0) / 255.0
    np.testing.assert_allclose(
        next(iter(val_ds))[0].numpy(), grey - mean_image, atol=1e-5
    )
    # List statistics are in 0-255 units, scaled by `rescale`.
    _, val_ds = make_datasets("synthetic", mean=[127.5], std=[63.75], **SYN)
    np.testing.assert_allclose(
        next(iter(val_ds))[0].numpy(), (grey - 0.5) / 0.25, atol=1e-5
    )
    _, val_ds = make_datasets("synthetic", mean=[127.5], rescale=1.0, **SYN)
    np.testing.assert_allclose(
        next(iter(val_ds))[0].numpy(), grey * 255.0 - 127.5, atol=1e-3
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="cifar100"), "Unknown dataset"),
        (dict(source="web"), "data.source"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=4096), "larger than the training set"),
        (dict(skip_batches=-1), "skip_batches"),
        (dict(seed=None), "seed"),
        (dict(augment="cifar", crop_size=12), "input_shape"),
        (dict(augment="autoaugment"), "Unknown augmentation policy"),
        (dict(augment="vgg"), "crop size"),
        (dict(mean="median"), "mean="),
        (dict(mean=[0.485]), "looks like \\[0, 1\\] units"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    kw = dict(name="synthetic", **SYN)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match) as info:
        make_datasets(**kw)
    assert "Received:" in str(info.value)


def test_every_data_config_matches_make_datasets():
    params = inspect.signature(make_datasets).parameters
    configs = sorted(CONF_DIR.glob("*.yaml"))
    assert {p.stem for p in configs} >= {
        "synthetic", "mnist", "fashion_mnist", "cifar10", "imagenette",
        "imagenet2012",
    }  # fmt: skip
    for path in configs:
        cfg = OmegaConf.load(path)
        assert cfg._target_ == "convnet_repro.experiments.data.make_datasets", (
            path
        )
        unknown = set(cfg) - set(params) - {"_target_"}
        assert not unknown, f"{path.name}: unknown keys {unknown}"
        for key in (
            "name",
            "source",
            "local_dir",
            "batch_size",
            "input_shape",
            "num_classes",
            "seed",
        ):
            assert key in cfg, f"{path.name} lacks {key}"
        assert OmegaConf.to_container(cfg)["seed"] == "${seed}"


def test_synthetic_config_instantiates():
    import hydra

    cfg = OmegaConf.create(
        {"seed": 0, "data": OmegaConf.load(CONF_DIR / "synthetic.yaml")}
    )
    train_ds, val_ds = hydra.utils.instantiate(cfg.data)
    x, y = next(iter(train_ds))
    assert x.shape == (32, 16, 16, 1) and y.shape == (32,)
    assert y.dtype == tf.int32


def test_synthetic_is_learnable_by_a_linear_model():
    train_ds, val_ds = make_datasets("synthetic", seed=0, **SYN)
    x = np.concatenate([b[0] for b, _ in zip(train_ds, range(16))])
    y = np.concatenate([b[1] for b, _ in zip(train_ds, range(16))])
    xv = np.concatenate([b[0] for b in val_ds])
    yv = np.concatenate([b[1] for b in val_ds])
    # Nearest class mean (a linear classifier) on held-out data.
    means = np.stack([x[y == c].mean(0) for c in range(4)]).reshape(4, -1)
    d = ((xv.reshape(len(xv), 1, -1) - means[None]) ** 2).sum(-1)
    assert (d.argmin(1) == yv).mean() > 0.9
