"""Augmentation policies and evaluation views."""

import numpy as np
import pytest
import tensorflow as tf

from convnet_repro.experiments.data import augment as aug
from convnet_repro.experiments.data import eval_views

SEED = tf.constant([3, 4], tf.int64)


def _image(h=80, w=96, c=3):
    return tf.constant(np.random.default_rng(0).random((h, w, c)), tf.float32)


@pytest.mark.parametrize("policy", aug.POLICIES)
def test_policy_shapes_ranges_and_determinism(policy):
    fn = aug.build_policy(policy, crop_size=64, lighting_std=0.0)
    image = _image()
    out = fn(image, SEED)
    expected = (80, 96, 3) if policy in ("none", "flip") else (64, 64, 3)
    assert tuple(out.shape) == expected and out.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1
    np.testing.assert_array_equal(out, fn(image, SEED))
    if policy != "none":
        outs = [fn(image, tf.constant([s, 0])).numpy() for s in range(8)]
        assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_alexnet_crop_is_a_window_of_the_image_or_its_flip():
    image = _image(73, 73)  # already at resize_size: no resampling
    fn = aug.build_policy("alexnet", crop_size=64, lighting_std=0.0)
    x = image.numpy()
    for s in range(5):
        out = fn(image, tf.constant([s, 1])).numpy()
        windows = [
            src[i : i + 64, j : j + 64]
            for src in (x, x[:, ::-1])
            for i in range(10)
            for j in range(10)
        ]
        assert any(np.array_equal(out, w) for w in windows)


def test_pca_lighting_matches_formula():
    image = _image(8, 8)
    out = aug.pca_lighting(image, SEED, alpha_std=0.1).numpy()
    alpha = tf.random.stateless_normal((3,), seed=SEED, stddev=0.1).numpy()
    eigvec = np.array(aug.IMAGENET_EIGVEC)
    eigval = np.array(aug.IMAGENET_EIGVAL)
    shift = eigvec @ (alpha * eigval)  # AlexNet Sec. 4.1
    np.testing.assert_allclose(
        out - image.numpy(), np.broadcast_to(shift, out.shape), atol=1e-6
    )


def test_scale_jitter_size_range_and_resize():
    image = _image(100, 200)
    out = aug.resize_shorter_side(image, 50)
    assert tuple(out.shape) == (50, 100, 3)
    with pytest.raises(ValueError, match="scale_range"):
        aug.build_policy("vgg", crop_size=64, scale_range=[32, 100])
    fn = aug.build_policy(
        "vgg", crop_size=64, scale_range=[64, 64], lighting_std=0.0
    )
    # S = 64 = crop: the crop is the whole resized image (or its flip).
    full = aug.resize_shorter_side(_image(64, 64), 64).numpy()
    out = fn(_image(64, 64), SEED).numpy()
    assert np.allclose(out, full) or np.allclose(out, full[:, ::-1])


def test_ten_crop_views():
    images = tf.constant(
        np.random.default_rng(1).random((2, 9, 11, 3)), tf.float32
    )
    views = eval_views(images, "ten_crop", crop_size=5)
    assert tuple(views.shape) == (10, 2, 5, 5, 3)
    x = images.numpy()
    expected = [
        x[:, 2:7, 3:8],  # centre
        x[:, :5, :5], x[:, :5, -5:], x[:, -5:, :5], x[:, -5:, -5:],
    ]  # fmt: skip
    expected += [e[:, :, ::-1] for e in expected]
    np.testing.assert_array_equal(views.numpy(), np.stack(expected))
    np.testing.assert_array_equal(views[0], aug.center_crop(images, 5))
    flat = eval_views(images, "ten_crop", crop_size=5, output="flat")
    assert tuple(flat.shape) == (20, 5, 5, 3)
    np.testing.assert_array_equal(tf.reshape(flat, views.shape), views)


def test_center_view():
    images = tf.zeros((2, 40, 60, 3))
    assert tuple(eval_views(images, "center", 32).shape) == (1, 2, 32, 32, 3)
    for kwargs, match in [
        (dict(protocol="twelve_crop"), "Unknown eval protocol"),
        (dict(protocol="center", crop_size=64), "smaller than crop_size"),
    ]:
        kwargs.setdefault("crop_size", 32)
        with pytest.raises(ValueError, match=match):
            eval_views(images, **kwargs)


def test_pca_lighting_follows_the_pixel_scale():
    """AlexNet trains on raw 0-255 pixels (rescale=1); the colour shift must
    then be 255x the one on [0, 1] pixels, i.e. the same augmentation."""
    from convnet_repro.experiments.data import make_datasets

    def first_batch(rescale):
        train_ds, _ = make_datasets(
            "synthetic", batch_size=4, input_shape=(8, 8, 3),
            num_classes=2, augment="alexnet", crop_size=8, resize_size=8,
            lighting_std=0.5, rescale=rescale, seed=3,
        )  # fmt: skip
        return next(iter(train_ds))[0].numpy()

    raw, unit = first_batch(1.0), first_batch(1.0 / 255.0)
    np.testing.assert_allclose(raw, 255.0 * unit, rtol=1e-4, atol=1e-3)


def _window_of(out, x, pad):
    """`(flipped, row, col)` of the window of `x` zero-padded by `pad` (or
    of its mirror image) that `out` equals pixel for pixel, or None. The
    pixels of `x` are distinct and nonzero, so one of them places it."""
    for flipped, src in ((False, x), (True, x[:, ::-1])):
        padded = np.pad(src, [(pad, pad), (pad, pad), (0, 0)])
        r, c = np.argwhere(out[..., 0] > 0)[0]
        sr, sc = np.argwhere(src[..., 0] == out[r, c, 0])[0]
        i, j = pad + sr - r, pad + sc - c
        h, w = out.shape[:2]
        if np.array_equal(out, padded[i : i + h, j : j + w]):
            return flipped, int(i), int(j)
    return None


def test_cifar_pad_4_crop_and_flip_are_pixel_exact():
    """He et al. 2016 Sec. 4.2: 4 zero pixels padded on each side, a random
    crop of the original size, a random horizontal flip. Distinct nonzero
    pixels identify each output's window: every one is an exact window, all
    9 x 9 offsets and both flips occur."""
    x = (np.arange(1, 37, dtype="float32") / 100).reshape(6, 6, 1)
    fn = aug.build_policy("cifar", crop_size=6)
    found = set()
    image = tf.constant(x)
    outs = next(
        iter(
            tf.data.Dataset.range(1000)
            .map(lambda s: fn(image, tf.stack([s, tf.constant(7, tf.int64)])))
            .batch(1000)
        )
    ).numpy()
    for s, out in enumerate(outs):
        window = _window_of(out, x, pad=4)
        assert window is not None, s
        found.add(window)
    assert {(i, j) for _, i, j in found} == {
        (i, j) for i in range(9) for j in range(9)
    }
    assert {flipped for flipped, _, _ in found} == {False, True}


def test_flip_policy_mirrors_exactly_about_half_the_time():
    x = np.arange(12, dtype="float32").reshape(2, 3, 2) / 12
    fn = aug.build_policy("flip")
    outs = [fn(tf.constant(x), tf.constant([s, 5])).numpy() for s in range(200)]
    flipped = [np.array_equal(o, x[:, ::-1]) for o in outs]
    assert all(f or np.array_equal(o, x) for f, o in zip(flipped, outs))
    assert 70 < sum(flipped) < 130  # p = 1/2: 200 draws, > 4 sigma inside
