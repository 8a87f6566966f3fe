"""The papers' test protocols as views of one image (TensorFlow ops,
usable inside `tf.data`); `experiments.evaluation.predict` averages the
softmax over them.

- `center` (1 view): shorter side resized to `resize`, central crop.
- `ten_crop` (10): the four corner crops + the centre crop and their
  mirrors (Krizhevsky et al. 2012, Sec. 4.1; He et al. 2016, Table 3).
- `multi_crop` (36 per scale, 144 with 4 scales): Szegedy et al. 2015,
  Sec. 7 (squares, 5 crops + the whole square, mirrors, per scale).

The batched crops come from `experiments.data.eval_views`.
"""

import tensorflow as tf

from convnet_repro.experiments.data import augment
from convnet_repro.experiments.data.eval_views import eval_views

PROTOCOLS = ("center", "ten_crop", "multi_crop")
# Szegedy et al. 2015, Sec. 7: shorter sides 256, 288, 320, 352 for a 224 crop.
GOOGLENET_SCALE_RATIOS = (256 / 224, 288 / 224, 320 / 224, 352 / 224)


def default_resize(crop):
    """Test shorter side for a crop size, keeping AlexNet's 256/224 ratio."""
    return int(round(crop * 256 / 224))


def default_scales(crop):
    """GoogLeNet's four test scales (256..352 for 224) rescaled to `crop`."""
    return [int(round(crop * r)) for r in GOOGLENET_SCALE_RATIOS]


def num_views(protocol, scales=None):
    """Number of views per image that `protocol` produces.

    Args:
        protocol: one of `PROTOCOLS`.
        scales: list of shorter sides for `multi_crop` (4 gives 144 views).

    Returns:
        int.
    """
    _check_protocol(protocol)
    if protocol == "center":
        return 1
    if protocol == "ten_crop":
        return 10
    return 36 * len(scales or GOOGLENET_SCALE_RATIOS)


def _check_protocol(protocol):
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"Unknown test protocol; use one of {list(PROTOCOLS)}. "
            f"Received: protocol={protocol!r}"
        )


def resize_shorter_side(image, size):
    """Resizes `image` (H, W, C) so that its shorter side equals `size`.

    Bilinear with antialiasing, aspect ratio kept: the training pipeline's
    `experiments.data.augment.resize_shorter_side`. Returns float32.
    """
    return augment.resize_shorter_side(tf.cast(image, tf.float32), size)


def five_crops(image, crop):
    """Centre, top-left, top-right, bottom-left and bottom-right crops.

    Args:
        image: `(H, W, C)` tensor with `H, W >= crop`.
        crop: int, side of the square crops.

    Returns:
        `(5, crop, crop, C)` tensor (`experiments.data.eval_views` order).
    """
    views = eval_views(image[None], "ten_crop", crop, flip=False)
    return views[:, 0]


def _with_mirrors(views):
    return tf.concat([views, tf.reverse(views, axis=[2])], axis=0)


def _squares(image):
    """Left/centre/right (or top/centre/bottom) squares of `image`."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    s = tf.minimum(h, w)
    dy, dx = h - s, w - s  # one of them is zero
    return [
        image[y : y + s, x : x + s]
        for y, x in ((0, 0), (dy // 2, dx // 2), (dy, dx))
    ]


def image_views(image, protocol, crop, resize=None, scales=None):
    """All test views of one image under `protocol`.

    `center` and `ten_crop` resize the shorter side to `resize` and take the
    views of `experiments.data.eval_views`; `multi_crop` is GoogLeNet's
    (squares, 5 crops + the whole square, mirrors, per scale).

    Args:
        image: `(H, W, C)` image of any size (uint8 or float; values are
            passed through, so a normalised image stays normalised).
        protocol: `"center"`, `"ten_crop"` or `"multi_crop"`.
        crop: int, the model's input side.
        resize: shorter side before cropping (`center`, `ten_crop`);
            defaults to `default_resize(crop)`.
        scales: shorter sides for `multi_crop`; defaults to
            `default_scales(crop)`.

    Returns:
        float32 tensor `(num_views(protocol, scales), crop, crop, C)`.
    """
    _check_protocol(protocol)
    resize = resize or default_resize(crop)
    scales = list(scales or default_scales(crop))
    if min([resize] + scales) < crop:
        raise ValueError(
            "Test sizes must be >= the crop size; raise `resize`/`scales`. "
            f"Received: resize={resize}, scales={scales}, crop={crop}"
        )
    image = tf.cast(image, tf.float32)
    if protocol in ("center", "ten_crop"):
        resized = resize_shorter_side(image, resize)
        return eval_views(resized[None], protocol, crop)[:, 0]
    views = []
    for scale in scales:
        resized = resize_shorter_side(image, scale)
        for square in _squares(resized):
            whole = tf.image.resize(square, (crop, crop), antialias=True)
            views.append(
                tf.concat([five_crops(square, crop), whole[None]], axis=0)
            )
    return _with_mirrors(tf.concat(views, axis=0))
