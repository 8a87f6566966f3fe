"""Fine-tuning (`experiments.engine.finetune`): weights copied by layer
name, the
head re-initialised for a new label set, the head's learning rate, the
source recorded, and clear errors for a missing or unrelated source."""

import keras
import numpy as np
import pytest

from convnet_repro.experiments.engine import build
from convnet_repro.experiments.engine import finetune
from convnet_repro.experiments.engine import tracking
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.config_checks import validate_config
from convnet_repro.experiments.engine.config_schema import ConfigError
from convnet_repro.models.alexnet import build_alexnet
from convnet_repro.models.tiny import build_engine_mlp


def _mlp(num_classes=4, hidden_units=16):
    return build_engine_mlp(num_classes=num_classes, hidden_units=hidden_units)


def test_body_copied_by_name_head_reinitialised_for_new_classes():
    source = _mlp(num_classes=4)
    target = _mlp(num_classes=3)
    fresh = target.get_layer("logits").get_weights()
    done = finetune.transfer_weights(source, target)
    assert done == {"copied": ["hidden_dense"], "head": ["logits"], "new": []}
    for a, b in zip(
        source.get_layer("hidden_dense").get_weights(),
        target.get_layer("hidden_dense").get_weights(),
    ):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(fresh, target.get_layer("logits").get_weights()):
        np.testing.assert_array_equal(a, b)  # left as the builder made it
    assert target.get_layer("logits").get_weights()[0].shape == (16, 3)


def test_alexnet_conv6_head_is_fc8_and_conv6_new_over_a_plain_source():
    kw = dict(input_shape=(32, 32, 3), small_input=True, width_multiplier=0.125)
    source = build_alexnet(num_classes=10, **kw)
    target = build_alexnet(num_classes=5, extra_conv6=True, **kw)
    done = finetune.transfer_weights(source, target)
    assert done["head"] == ["fc8"] and done["new"] == ["conv6_conv"]
    assert {"conv1_conv", "conv2_conv_g0", "fc6", "fc7"} <= set(done["copied"])


def test_unrelated_or_reshaped_source_fails_in_one_line():
    with pytest.raises(ConfigError, match="no layer of finetune.source") as e:
        finetune.transfer_weights(
            build_alexnet(input_shape=(32, 32, 3), small_input=True), _mlp()
        )
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="'hidden_dense' has weights"):
        finetune.transfer_weights(_mlp(hidden_units=8), _mlp(num_classes=3))
    with pytest.raises(ConfigError, match="finetune.head names layers"):
        finetune.transfer_weights(_mlp(), _mlp(), head=["fc8"])
    # reinit_head=false copies the head, which then must match.
    source, target = _mlp(), _mlp()
    finetune.transfer_weights(source, target, reinit_head=False)
    np.testing.assert_array_equal(
        source.get_layer("logits").get_weights()[0],
        target.get_layer("logits").get_weights()[0],
    )


def test_missing_source_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError, match="finetune.source cannot be loaded"):
        finetune.load_source(str(tmp_path / "nope.keras"))
    cfg = compose(
        ["experiment=smoke", f"finetune.source={tmp_path}/nope.keras"],
        tmp_path,
    )
    strategy = __import__("tensorflow").distribute.get_strategy()
    with pytest.raises(ConfigError, match="nope.keras") as e:
        build.build_run(cfg, strategy)
    assert "\n" not in str(e.value)
    # A resumed run never reads the source (its checkpoint has the weights).
    build.build_run(cfg, strategy, skip_batches=20)


def _one_step_deltas(cfg, model):
    optimizer = keras.optimizers.SGD(learning_rate=0.1)
    optimizer = finetune.scale_head_gradients(optimizer, model, cfg)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [v.numpy().copy() for v in model.trainable_variables]
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype("float32")
    y = np.arange(8) % 4
    model.train_on_batch(x, y)
    return [v.numpy() - b for v, b in zip(model.trainable_variables, before)]


def test_head_lr_multiplier_scales_only_the_head_update(tmp_path):
    base = ["experiment=smoke", "finetune.source=x.keras"]
    plain = compose(base, tmp_path)
    tenfold = compose(base + ["finetune.head_lr_multiplier=10"], tmp_path)
    keras.utils.set_random_seed(0)
    a = _one_step_deltas(plain, _mlp())
    keras.utils.set_random_seed(0)
    b = _one_step_deltas(tenfold, _mlp())
    # hidden kernel, hidden bias, logits kernel, logits bias
    np.testing.assert_allclose(b[0], a[0], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(b[2], 10 * a[2], rtol=1e-4, atol=1e-7)
    assert np.abs(a[2]).max() > 0
    adam = compose(base + ["optimizer=adam", "finetune.head_lr_multiplier=10"])
    with pytest.raises(ConfigError, match="needs optimizer=sgd"):
        finetune.scale_head_gradients(None, _mlp(), adam)
    with pytest.raises(ConfigError, match="head_lr_multiplier must be > 0"):
        validate_config(compose(base + ["finetune.head_lr_multiplier=0"]))


def test_run_keys_of_runs_from_scratch_do_not_see_the_node(tmp_path):
    plain = compose(["experiment=smoke"], tmp_path)
    assert tracking.run_key(plain) == tracking.run_key(
        compose(["experiment=smoke", "finetune.reinit_head=false"], tmp_path)
    )
    tuned = compose(["experiment=smoke", "finetune.source=abc"], tmp_path)
    assert tracking.run_key(tuned) != tracking.run_key(plain)
    assert finetune.tags(plain) == {}
    assert finetune.source_run_id("runs:/abc/model") == "abc"
    assert finetune.source_run_id("/x/model.keras") is None
    tags = finetune.tags(
        compose(["experiment=smoke", "finetune.source=/x/model.keras"])
    )
    assert tags["finetune.source"] == "/x/model.keras"
    assert "finetune.source_run_id" not in tags
