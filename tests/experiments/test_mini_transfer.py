"""The mini transfer analog's data: MNIST restricted to a class subset,
relabelled 0..k-1, the training images cut to a fixed fraction."""

import numpy as np

from convnet_repro.experiments import mini_transfer as mt


def test_digit_subsets_relabel_and_cut():
    train, val = mt.make_digit_datasets(
        mt.FINETUNE_CLASSES, train_fraction=0.09, batch_size=50, seed=1
    )
    labels = np.concatenate([y.numpy() for _, y in val])
    # MNIST test set: 892 + 958 + 1028 + 974 + 1009 images of digits 5-9.
    assert len(labels) == 4861
    assert np.bincount(labels).tolist() == [892, 958, 1028, 974, 1009]
    x, y = next(iter(train))
    assert x.shape == (50, 28, 28, 1) and float(x.numpy().max()) <= 1.0
    assert set(y.numpy()) <= set(range(5))
    # 9% of the 29,404 training images of 5-9, identical for every seed.
    (xs, _), *_ = train.unbatch().batch(6000).take(1)  # > two passes
    seen = {image.tobytes() for image in xs.numpy()}
    assert 2600 < len(seen) <= round(29404 * 0.09)


def test_a_run_of_the_analog_trains_through_the_engine(tmp_path):
    """`_run` composes real engine overrides (a key the trainer schema does
    not have used to fail here, before any step)."""
    data = mt._data(mt.FINETUNE_CLASSES, 0.01)
    result = mt._run("mini_transfer_test", data, 10, 0, tmp_path)
    assert result["status"] == "FINISHED"
    assert 0.0 <= result["val/top1_error"] <= 1.0
