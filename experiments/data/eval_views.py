"""Test-time views: centre crop, 10-crop and multi-scale evaluation.

- `center`: one central crop (AlexNet/GoogLeNet/BN single-crop numbers).
- `ten_crop`: the centre and the four corner crops, plus their horizontal
  flips (Krizhevsky et al. 2012, Sec. 4.1; He et al. 2016, Sec. 3.4).
- `multi_scale`: the image is resized (shorter side) to each of `scales`
  and each scale gives a centre crop, a 10-crop, or the whole resized image
  (`per_scale="dense"`, for fully convolutional evaluation as in Simonyan &
  Zisserman 2015, Sec. 3.2 and He et al. 2016 Table 4).

Feed the val images uncropped (`make_datasets(..., val_crop=False)`), then
average the softmax over views with `merge_views`.
"""

import tensorflow as tf

from experiments.data import augment as aug

PROTOCOLS = ("center", "ten_crop", "multi_scale")
PER_SCALE = ("center", "ten_crop", "dense")


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
    scales=None,
    per_scale="center",
    flip=None,
    output="stacked",
):
    """Returns the evaluation views of a batch of images.

    Args:
        images: float tensor `(B, H, W, C)` with `H, W >= crop_size`.
        protocol: one of `PROTOCOLS`.
        crop_size: side of the square crops.
        scales: `multi_scale` shorter-side sizes, e.g. `[224, 256, 384, 480,
            640]` (He et al. 2016) or `[256, 384, 512]` (VGG Q values).
        per_scale: `multi_scale` views per scale: `center`, `ten_crop` or
            `dense` (whole resized image).
        flip: also add the horizontally flipped views. Defaults to True for
            `ten_crop`, `per_scale="ten_crop"` and `dense`, False otherwise.
        output: `"stacked"` -> `(views, B, h, w, C)`; `"flat"` -> `(views *
            B, h, w, C)` in view-major order (`reshape(views, B, ...)`
            recovers the stack). `dense` views differ in size, so `dense`
            always returns a list of `(B, h_s, w_s, C)` tensors.

    Returns:
        The views. View order: for each scale, `[centre, top-left,
        top-right, bottom-left, bottom-right]` (only `centre` for
        `center`), then the same views flipped. View 0 is the centre crop.

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
    if protocol == "multi_scale":
        if not scales:
            raise ValueError(
                "multi_scale needs a list of sizes, e.g. scales=[256, 384]. "
                f"Received: scales={scales!r}"
            )
        if per_scale not in PER_SCALE:
            raise ValueError(
                f"per_scale must be one of {PER_SCALE}. Received: "
                f"per_scale={per_scale!r}"
            )
        too_small = [
            s for s in scales if s < crop_size and per_scale != "dense"
        ]
        if too_small:
            raise ValueError(
                "Every scale must be >= crop_size. Received: "
                f"scales={list(scales)}, crop_size={crop_size}"
            )
    else:
        static = images.shape[1:3]
        if any(d is not None and d < crop_size for d in static):
            raise ValueError(
                f"Images are smaller than crop_size={crop_size}; resize them "
                f"first. Received: images.shape={images.shape}"
            )
    ten = protocol == "ten_crop" or (
        protocol == "multi_scale" and per_scale == "ten_crop"
    )
    dense = protocol == "multi_scale" and per_scale == "dense"
    if flip is None:
        flip = ten or dense
    if protocol == "multi_scale":
        views = []
        for size in scales:
            resized = aug.resize_shorter_side(images, size)
            views += [resized] if dense else _crops(resized, crop_size, ten)
    else:
        views = _crops(images, crop_size, ten)
    if flip:
        views = views + [tf.reverse(v, axis=[2]) for v in views]
    if dense:
        return views
    views = tf.stack(views)
    if output == "flat":
        views = tf.reshape(
            views, tf.concat([[-1], tf.shape(views)[2:]], axis=0)
        )
    return views


def merge_views(predictions, num_views):
    """Averages `(views * B, K)` view-major predictions into `(B, K)`."""
    predictions = tf.convert_to_tensor(predictions)
    k = tf.shape(predictions)[-1]
    return tf.reduce_mean(tf.reshape(predictions, (num_views, -1, k)), axis=0)
