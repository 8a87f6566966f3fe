"""Every config's mean (and std) is in the units of the pixels the model
sees, whatever its `rescale` (AlexNet trains on raw 0-255 pixels)."""

import hydra
import numpy as np
import pytest

from convnet_repro.experiments.data.pipeline import pixel_statistic
from convnet_repro.experiments.engine.compose import CONF_DIR
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.experiments.engine.train import expand_children

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
# A per-channel mean of natural images lies well inside the pixel range;
# a std is a fraction of it.
PLAUSIBLE = {"mean": (0.2, 0.8), "std": (0.05, 0.5)}


def _data_configs(name):
    cfg = compose([f"experiment={name}"])
    yield name, cfg.data
    for child in expand_children(cfg):
        yield f"{name}/{child.name}", child.cfg.data


def test_every_config_states_its_mean_in_pixel_units():
    checked = 0
    for name in EXPERIMENTS:
        for label, data in _data_configs(name):
            rescale = float(data.get("rescale", 1.0 / 255.0))
            for what, (low, high) in PLAUSIBLE.items():
                value = data.get(what)
                if value is None or isinstance(value, str):
                    continue  # None, or computed on the rescaled data
                stat = pixel_statistic(list(value), what, rescale)
                fraction = stat / (255.0 * rescale)
                assert np.all((fraction > low) & (fraction < high)), (
                    f"{label}: data.{what}={list(value)} with rescale="
                    f"{rescale} is {fraction} of the pixel range"
                )
                checked += 1
    assert checked >= 20  # every imagenet_* config has a list mean


@pytest.mark.parametrize(
    "experiment", ["imagenet_alexnet", "imagenet_resnet50"]
)
def test_built_pipeline_centres_the_pixels(experiment, ilsvrc_sample):
    # AlexNet sees raw 0-255 pixels, ResNet [0, 1] ones; both come out
    # centred once the mean is subtracted.
    cfg = compose(
        [
            f"experiment={experiment}",
            "data.source=local",
            f"data.local_dir={ilsvrc_sample['folder']}",
            "data.batch_size=32",
        ]
    )
    _, val_ds = hydra.utils.instantiate(cfg.data, _convert_="all")
    x = np.concatenate([x for x, _ in val_ds.as_numpy_iterator()])
    pixel_range = 255.0 * float(cfg.data.rescale)
    channel_means = x.reshape(-1, 3).mean(0) / pixel_range
    assert np.all(np.abs(channel_means) < 0.1), channel_means
    assert x.std() / pixel_range > 0.15  # not collapsed
