"""Dress rehearsal, slow: every full-scale config, both data layouts.

What runs (shared work, so that it fits CI's slow budget; see the report in
the README):

- folder layout, the pre-trained chain (`experiments.rehearsal.chain`:
  ImageNet-21k pre-training, registering its models, the 5 CNNs, the two
  fine-tuning configs and the 7 CNNs* row, in one MLflow store);
- folder layout, every other `imagenet_*` config and `bn_inception_full`:
  the whole rehearsal (config checks, in-process kill at step 3 after the
  step-2 checkpoint, resume into the same MLflow runs, the `report:`
  evaluation with the paper protocol, the ImageNet-table row);
- tfds layout (the sample's two tars really prepared by tfds once per
  session), every config: the config stage (the model, and the config's
  augmentation traced on tfds-decoded images, batch shapes);
- tfds layout, one config per family: the whole rehearsal with a real
  subprocess kill (`os._exit` in `python -m convnet_repro.experiments.train`)
  and the
  `python -m convnet_repro.experiments.evaluate` command.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from convnet_repro.experiments.rehearsal import chain
from convnet_repro.experiments.rehearsal import checks
from convnet_repro.experiments.rehearsal import rehearse
from convnet_repro.experiments.rehearsal.stages import compose_rehearsal
from convnet_repro.experiments.rehearsal.stages import data_overrides

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CONF = REPO_ROOT / "conf" / "experiment"
FULL_SCALE = sorted(
    p.stem
    for pattern in ("imagenet_*.yaml", "imagenet21k_*.yaml")
    for p in CONF.glob(pattern)
) + ["bn_inception_full"]
# The pre-trained chain (21k pre-training -> fine-tuning) rehearses as one
# test in one store; every other full-scale config rehearses alone.
ALL = [e for e in FULL_SCALE if e not in chain.CHAIN]
# Config checks need no source model; the 21k folder has no tfds builder.
TFDS_CONFIGS = [e for e in FULL_SCALE if e != chain.PRETRAIN]
FAMILY = (
    "imagenet_alexnet",
    "imagenet_vgg_a",
    "imagenet_googlenet",
    "imagenet_resnet18",
    "bn_inception_full",
)

pytestmark = pytest.mark.slow


def _assert_passed(stages):
    lines = "\n".join(s.line() for s in stages)
    assert stages and all(s.ok for s in stages), lines
    print(lines)


def test_every_full_scale_config_is_rehearsed():
    assert len(FULL_SCALE) == 27
    assert set(ALL) | set(chain.CHAIN) == set(FULL_SCALE)
    assert len(ALL) == 24 and len(chain.CHAIN) == 3
    assert {"imagenet_alexnet_5cnns", "imagenet_googlenet_7models"} <= set(ALL)
    assert set(chain.FINETUNED) <= set(TFDS_CONFIGS)


def _rehearse_cli(experiment, folder, workdir):
    """`python -m convnet_repro.experiments.rehearse` in its own process.

    In one pytest process the full-size rehearsals grew its memory to
    12.5 GB (the pre-trained chain alone leaves ~12.8 GB behind): a
    following rehearsal was OOM-killed on a 24 GB machine. Each runs in its
    own process, as a user runs it, and its checkpoints and models (~0.3-
    4.6 GB; the chain ~9 GB) are removed once it has passed or failed.
    """
    command = [
        sys.executable,
        "-m",
        "convnet_repro.experiments.rehearse",
        f"experiment={experiment}",
        "--layout=folder",
        f"--data-dir={folder}",
        "--kill=inprocess",
        f"--workdir={workdir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    try:
        done = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True
        )
    finally:
        for name in ("run", "chain"):
            shutil.rmtree(workdir / name, ignore_errors=True)
    print(done.stdout)  # the stage lines and step times, shown by -rA
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, tail
    lines = done.stdout.splitlines()
    assert not [x for x in lines if x.startswith("FAIL ")], tail
    return lines, tail


def test_pretrained_chain_folder_layout(ilsvrc_sample, tmp_path):
    """21k pre-training -> register -> 5 CNNs -> 1 CNN* -> 7 CNNs* row."""
    folder = ilsvrc_sample["folder"]
    lines, tail = _rehearse_cli(chain.PRETRAIN, folder, tmp_path)
    assert "PASS pre-trained chain" in lines, tail
    for experiment in chain.FINETUNED:
        for stage in ("finetuned", "report row"):
            assert any(
                x.startswith(f"PASS {experiment} {stage}") for x in lines
            ), (experiment, stage, tail)
    assert any(x.startswith(f"PASS {chain.PRETRAIN} registered") for x in lines)


@pytest.mark.parametrize("experiment", ALL)
def test_rehearsal_folder_layout(experiment, ilsvrc_sample, tmp_path):
    """The rehearse CLI in its own process (`_rehearse_cli`)."""
    folder = ilsvrc_sample["folder"]
    lines, tail = _rehearse_cli(experiment, folder, tmp_path)
    assert f"PASS {experiment}" in lines, tail
    for stage in ("config", "killed", "resumed", "evaluated"):
        assert any(x.startswith(f"PASS {stage} ") for x in lines), tail


@pytest.mark.parametrize("experiment", TFDS_CONFIGS)
def test_config_on_tfds_layout(experiment, ilsvrc_sample, ilsvrc_tfds_dir):
    import hydra

    cfg, _ = compose_rehearsal(
        experiment,
        data_overrides("tfds", ilsvrc_sample["manual_dir"], ilsvrc_tfds_dir),
    )
    model = hydra.utils.instantiate(cfg.model, _convert_="all")
    found = checks.check_model(cfg, model) + checks.check_data(cfg)
    assert all(ok for _, ok, _ in found), found


@pytest.mark.ci_slow
@pytest.mark.parametrize("experiment", FAMILY)
def test_rehearsal_tfds_layout_real_kill(
    experiment, ilsvrc_sample, ilsvrc_tfds_dir, tmp_path
):
    _assert_passed(
        rehearse(
            experiment,
            "tfds",
            ilsvrc_sample["manual_dir"],
            tmp_path,
            kill="subprocess",
            tfds_data_dir=ilsvrc_tfds_dir,
        )
    )
