"""Generates the small, learnable `synthetic` classification set.

Not from any paper: engine tests and smoke runs train on it in seconds.
"""

import numpy as np


def make_synthetic(
    num_examples, input_shape=(16, 16, 1), num_classes=4, noise=0.25, seed=0
):
    """Generates a small, learnable classification set of uint8 images.

    Each class has a fixed random template of 4x4-pixel blocks (drawn from
    `seed`, independent of the training order seed); an example is its class
    template plus Gaussian noise of std `noise` (in [0, 1] units), clipped
    and stored as uint8. A linear model separates the classes easily.

    Args:
        num_examples: number of images.
        input_shape: `(H, W, C)`.
        num_classes: number of classes (labels `0..num_classes-1`, balanced).
        noise: noise standard deviation in [0, 1] pixel units.
        seed: data seed; the `split` seed offset keeps train/val disjoint.

    Returns:
        `(images uint8 (N, H, W, C), labels int32 (N,))`.
    """
    h, w, c = (int(d) for d in input_shape)
    template_rng = np.random.default_rng(12345)  # classes never change
    blocks = template_rng.random((num_classes, -(-h // 4), -(-w // 4), c))
    templates = blocks.repeat(4, axis=1).repeat(4, axis=2)[:, :h, :w, :]
    rng = np.random.default_rng(seed)
    labels = (np.arange(num_examples) % num_classes).astype(np.int32)
    rng.shuffle(labels)
    images = templates[labels] + noise * rng.standard_normal(
        (num_examples, h, w, c)
    )
    images = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
    return images, labels
