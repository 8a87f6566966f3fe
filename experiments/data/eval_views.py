"""Test-time views of a batch: the centre crop or the 10 crops.

- `center`: one central crop (AlexNet/GoogLeNet/BN single-crop numbers).
- `ten_crop`: the centre and the four corner crops, plus their horizontal
  flips (Krizhevsky et al. 2012, Sec. 4.1; He et al. 2016, Sec. 3.4).

The per-image protocols of the papers (multi-scale, GoogLeNet's 144 crops)
are `experiments.data.protocol_views`, which builds on these.
"""

import tensorflow as tf

from convnet_repro.experiments.data import augment as aug

PROTOCOLS = ("center", "ten_crop")


def _crops(images, crop_size, ten):
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    views = [aug.center_crop(images, crop_size)]
    if ten:
        for top, left in (
            (0, 0),
            (0, w - crop_size),
            (h - crop_size, 0),
            (h - crop_size, w - crop_size),
        ):
            views.append(
                images[:, top : top + crop_size, left : left + crop_size, :]
            )
    return views


def eval_views(
    images,
    protocol="center",
    crop_size=224,
    flip=None,
    output="stacked",
):
    """Returns the evaluation views of a batch of images.

    Args:
        images: float tensor `(B, H, W, C)` with `H, W >= crop_size`.
        protocol: one of `PROTOCOLS`.
        crop_size: side of the square crops.
        flip: also add the horizontally flipped views. Defaults to True for
            `ten_crop`, False otherwise.
        output: `"stacked"` -> `(views, B, h, w, C)`; `"flat"` -> `(views *
            B, h, w, C)` in view-major order (`reshape(views, B, ...)`
            recovers the stack).

    Returns:
        The views. View order: `[centre, top-left, top-right, bottom-left,
        bottom-right]` (only `centre` for `center`), then the same views
        flipped. View 0 is the centre crop.

    Example:
    >>> views = eval_views(tf.zeros((2, 256, 256, 3)), "ten_crop", 224)
    >>> views.shape
    TensorShape([10, 2, 224, 224, 3])
    """
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"Unknown eval protocol. Expected one of {PROTOCOLS}. "
            f"Received: protocol={protocol!r}"
        )
    if output not in ("stacked", "flat"):
        raise ValueError(
            f"output must be 'stacked' or 'flat'. Received: output={output!r}"
        )
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4:
        raise ValueError(
            "eval_views needs a batch (B, H, W, C). Received: "
            f"images.shape={images.shape}"
        )
    static = images.shape[1:3]
    if any(d is not None and d < crop_size for d in static):
        raise ValueError(
            f"Images are smaller than crop_size={crop_size}; resize them "
            f"first. Received: images.shape={images.shape}"
        )
    ten = protocol == "ten_crop"
    views = _crops(images, crop_size, ten)
    if flip is None:
        flip = ten
    if flip:
        views = views + [tf.reverse(v, axis=[2]) for v in views]
    views = tf.stack(views)
    if output == "flat":
        views = tf.reshape(
            views, tf.concat([[-1], tf.shape(views)[2:]], axis=0)
        )
    return views
