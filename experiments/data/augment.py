"""Paper training augmentations as composable, seeded, named policies.

Each op is `op(image, seed) -> image` on one float32 `(H, W, C)` image whose
pixels are in `[0, 1]` (before normalization); `seed` is a shape-`(2,)` int
tensor, so the same seed gives the same crop (stateless ops: the train stream
can resume at any step, see `experiments.data.pipeline`). A policy is a list
of ops applied in order with sub-seeds `fold_in(seed, i)`.

Policies (all parameterized by the output `crop_size`; the paper sizes are
the defaults for `crop_size=224`, other sizes scale by `crop_size / 224`, e.g.
`crop_size=64` gives a resize to 73 and VGG jitter S in [73, 146]):

- `alexnet`: shorter side to 256, centre 256x256, random 224 crop,
  horizontal flip, PCA lighting alpha ~ N(0, 0.1) (Krizhevsky et al. 2012,
  Sec. 4.1).
- `vgg`: scale jitter, shorter side S ~ U[256, 512], random 224 crop, flip,
  PCA lighting (Simonyan & Zisserman 2015, Sec. 3.1).
- `googlenet`: random crop of 8%-100% of the area with aspect ratio in
  [3/4, 4/3], resized to 224, flip (Szegedy et al. 2015, Sec. 6). The
  paper's photometric distortions (Howard 2013) are not reproduced.
- `resnet`: shorter side S ~ U[256, 480], random 224 crop, flip, PCA
  lighting ("standard colour augmentation", He et al. 2016, Sec. 3.4).
- `cifar`: 4-pixel zero padding, random 32 crop, flip (He et al. 2016,
  Sec. 4.2).
- `flip`, `none`.

Deviations: crops are taken from the decoded image, which the pipeline may
store at a reduced square resolution (`decode_size`); PCA lighting uses the
ImageNet eigen-decomposition for every dataset and is not clipped.

Reference:
    Krizhevsky, Sutskever, Hinton, 2012, "ImageNet Classification with Deep
    Convolutional Neural Networks", Sec. 4.1.
"""

import tensorflow as tf

# ImageNet RGB covariance eigen-decomposition for [0, 1] pixels, as used by
# fb.resnet.torch (datasets/imagenet.lua) to implement AlexNet Sec. 4.1.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)

POLICIES = ("none", "flip", "cifar", "alexnet", "vgg", "googlenet", "resnet")


def scaled(size, crop_size):
    """Scales a paper size given for 224 crops to `crop_size` crops."""
    return int(round(size * crop_size / 224))


def resize_shorter_side(image, size):
    """Resizes `(H, W, C)` or `(B, H, W, C)` so the shorter side is `size`.

    Aspect ratio kept; bilinear with antialiasing.
    """
    shape = tf.shape(image)
    h = tf.cast(shape[-3], tf.float32)
    w = tf.cast(shape[-2], tf.float32)
    size = tf.cast(size, tf.float32)
    scale = size / tf.minimum(h, w)
    new_h = tf.cast(tf.round(h * scale), tf.int32)
    new_w = tf.cast(tf.round(w * scale), tf.int32)
    new_h = tf.maximum(new_h, tf.cast(size, tf.int32))
    new_w = tf.maximum(new_w, tf.cast(size, tf.int32))
    return tf.image.resize(image, (new_h, new_w), antialias=True)


def center_crop(image, size):
    """Central `size x size` crop of an `(H, W, C)` or `(B, H, W, C)` image."""
    shape = tf.shape(image)
    h, w = shape[-3], shape[-2]
    top = (h - size) // 2
    left = (w - size) // 2
    return image[..., top : top + size, left : left + size, :]


def random_crop(image, size, seed):
    channels = image.shape[-1]
    return tf.image.stateless_random_crop(
        image, (size, size, channels), seed=seed
    )


def random_flip(image, seed):
    return tf.image.stateless_random_flip_left_right(image, seed=seed)


def pca_lighting(image, seed, alpha_std=0.1):
    """AlexNet colour augmentation: adds `V (alpha * lambda)` to each pixel.

    `alpha ~ N(0, alpha_std)` is drawn once per image (Sec. 4.1).
    """
    alpha = tf.random.stateless_normal((3,), seed=seed, stddev=alpha_std)
    eigval = tf.constant(IMAGENET_EIGVAL, tf.float32)
    eigvec = tf.constant(IMAGENET_EIGVEC, tf.float32)
    rgb = tf.linalg.matvec(eigvec, alpha * eigval)
    return image + rgb


def scale_jitter_crop(image, seed, size_range, crop_size):
    """Shorter side to S ~ U[size_range] (integer), then a random crop."""
    low, high = size_range
    seeds = tf.random.experimental.stateless_split(seed, 2)
    s = tf.random.stateless_uniform(
        (), seed=seeds[0], minval=low, maxval=high + 1, dtype=tf.int32
    )
    image = resize_shorter_side(image, s)
    return random_crop(image, crop_size, seeds[1])


def random_resized_crop(
    image,
    seed,
    crop_size,
    area_range=(0.08, 1.0),
    aspect_range=(3 / 4, 4 / 3),
):
    """GoogLeNet crop: area fraction and log-uniform aspect, then resize."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.slice(image, begin, size)
    return tf.image.resize(image, (crop_size, crop_size), antialias=True)


def eval_transform(image, crop_size=None, resize_size=None):
    """Evaluation view: shorter side to `resize_size`, centre crop."""
    if resize_size:
        image = resize_shorter_side(image, resize_size)
    if crop_size:
        image = center_crop(image, crop_size)
    return image


def build_policy(
    policy,
    crop_size=None,
    resize_size=None,
    scale_range=None,
    area_range=(0.08, 1.0),
    aspect_range=(3 / 4, 4 / 3),
    lighting_std=0.1,
    pad=4,
):
    """Returns `augment(image, seed) -> image` for a named policy.

    Args:
        policy: one of `POLICIES`, or a list of them applied in order (e.g.
            `["cifar"]`), or None (= "none").
        crop_size: output side length. Required except for `none`/`flip`.
        resize_size: AlexNet shorter side before cropping (default
            `256 * crop_size / 224`).
        scale_range: `[S_min, S_max]` for `vgg` (default 256-512 scaled) and
            `resnet` (default 256-480 scaled).
        area_range: area fraction range for `googlenet`.
        aspect_range: aspect ratio range for `googlenet`.
        lighting_std: std of PCA lighting alpha; 0 disables it.
        pad: zero padding for `cifar`.

    Returns:
        A function `(image (H, W, C) float32, seed (2,) int) -> image`.

    Example:
    >>> fn = build_policy("resnet", crop_size=64)
    >>> fn(tf.zeros((80, 80, 3)), tf.constant([0, 1])).shape
    TensorShape([64, 64, 3])
    """
    if policy is None:
        policy = "none"
    names = [policy] if isinstance(policy, str) else list(policy)
    for name in names:
        if name not in POLICIES:
            raise ValueError(
                f"Unknown augmentation policy. Expected one of {POLICIES}. "
                f"Received: policy={name!r}"
            )
        if name not in ("none", "flip") and not crop_size:
            raise ValueError(
                f"Policy {name!r} needs a crop size; set data.crop_size. "
                f"Received: crop_size={crop_size!r}"
            )
    lighting = (
        [lambda x, s: pca_lighting(x, s, lighting_std)] if lighting_std else []
    )
    flip = [random_flip]

    def policy_ops(name):  # the ops of one policy, over the options above
        if name == "none":
            return []
        if name == "flip":
            return flip
        if name == "cifar":

            def pad_crop(x, s):
                x = tf.pad(x, [[pad, pad], [pad, pad], [0, 0]])
                return random_crop(x, crop_size, s)

            return [pad_crop] + flip
        if name == "alexnet":
            size = resize_size or scaled(256, crop_size)

            def alexnet_crop(x, s):
                x = center_crop(resize_shorter_side(x, size), size)
                return random_crop(x, crop_size, s)

            return [alexnet_crop] + flip + lighting
        if name in ("vgg", "resnet"):
            default = (256, 512) if name == "vgg" else (256, 480)
            size_range = tuple(
                scale_range or [scaled(d, crop_size) for d in default]
            )
            if size_range[0] < crop_size or size_range[0] > size_range[1]:
                raise ValueError(
                    f"scale_range must satisfy crop_size <= S_min <= S_max. "
                    f"Received: scale_range={list(size_range)}, "
                    f"crop_size={crop_size}"
                )
            return [
                lambda x, s: scale_jitter_crop(x, s, size_range, crop_size)
            ] + (flip + lighting)
        # googlenet
        if not 0 < area_range[0] <= area_range[1] <= 1:
            raise ValueError(
                f"area_range must be within (0, 1]. Received: area_range="
                f"{list(area_range)}"
            )
        return [
            lambda x, s: random_resized_crop(
                x, s, crop_size, tuple(area_range), tuple(aspect_range)
            )
        ] + flip

    ops = [op for name in names for op in policy_ops(name)]

    def augment(image, seed):
        seed = tf.cast(seed, tf.int64)
        for i, op in enumerate(ops):
            image = op(image, tf.random.experimental.stateless_fold_in(seed, i))
        return image

    return augment
