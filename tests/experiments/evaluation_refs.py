"""NumPy references and tiny models shared by the evaluation tests: the
paper crops written out by hand, a linear model whose logits numpy can
recompute, a small uint8 dataset and the top-1/top-5 errors of averaged
probabilities."""

import keras
import numpy as np
import tensorflow as tf


def np_five_crops(image, crop):
    """Centre, TL, TR, BL, BR crops of an (H, W, C) array."""
    h, w = image.shape[:2]
    cy, cx = (h - crop) // 2, (w - crop) // 2
    return np.stack(
        [
            image[cy : cy + crop, cx : cx + crop],
            image[:crop, :crop],
            image[:crop, w - crop :],
            image[h - crop :, :crop],
            image[h - crop :, w - crop :],
        ]
    )


def np_ten_crops(image, crop):
    """The five crops, then the same five of the mirrored image."""
    five = np_five_crops(image, crop)
    return np.concatenate([five, five[:, :, ::-1]])


def linear_model(seed, crop=4, classes=6):
    """Flatten + Dense on (crop, crop, 3) inputs, seeded: logits in numpy
    by `np_logits`."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((crop, crop, 3))
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(classes)(x)
    return keras.Model(inputs, outputs)


def np_logits(model, views):
    """`linear_model`'s logits of (V, crop, crop, 3) views, in numpy."""
    w, b = [v.numpy() for v in model.weights]
    return views.reshape(len(views), -1) @ w + b


def tiny_dataset(n=7, shape=(6, 8, 3), classes=6, seed=4):
    """`n` random uint8 images and labels: `(dataset, images, labels)`."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n,) + shape).astype(np.uint8)
    labels = rng.integers(0, classes, n).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((images, labels)), images, labels


def softmax_errors(probs, labels):
    """Top-1 and top-5 error (%) of averaged probabilities, in numpy."""
    top = np.argsort(-probs, axis=1)
    top1 = 100 * np.mean(top[:, 0] != labels)
    top5 = 100 * np.mean([y not in row[:5] for y, row in zip(labels, top)])
    return top1, top5
