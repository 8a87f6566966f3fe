"""Dress rehearsal, fast: one full-scale config per family, folder layout.

Each runs `experiments.rehearsal.rehearse` with the in-process kill
(KeyboardInterrupt at step 3, after the step-2 checkpoint; the slow suite
kills a subprocess) on the session's ILSVRC-2012 sample: config checks,
killed, resumed into the same MLflow run, its `report:` evaluation with the
paper protocol, its ImageNet-table row. BN-Inception keeps two of its six
variants here (`inception`: no BN, LRN, dropout; `bn_x5`: BN, the Sec.
4.2.1 changes); `test_rehearsal_slow.py` runs all six.
"""

import pytest
from omegaconf import OmegaConf

from convnet_repro.experiments import rehearse as cli
from convnet_repro.experiments.rehearsal import chain
from convnet_repro.experiments.rehearsal import checks
from convnet_repro.experiments.rehearsal import rehearse
from convnet_repro.experiments.rehearsal.stages import compose_rehearsal

FAMILIES = {
    "imagenet_alexnet": [],
    "imagenet_vgg_a": [],
    "imagenet_googlenet": [],
    "imagenet_resnet18": [],
    "bn_inception_full": [
        "~variants.bn_baseline",
        "~variants.bn_x30",
        "~variants.bn_x5_sigmoid",
        "~variants.inception_sigmoid",
    ],
}


def _assert_passed(stages):
    lines = "\n".join(s.line() for s in stages)
    print(lines)  # shown by pytest -rA: the step times of the report
    assert stages and all(s.ok for s in stages), lines
    names = [s.name for s in stages]
    assert names[:4] == ["config", "killed", "resumed", "evaluated"], lines
    return {s.name: s for s in stages}


@pytest.mark.parametrize("experiment", sorted(FAMILIES))
def test_family_rehearsal_passes(experiment, ilsvrc_sample, tmp_path):
    stages = _assert_passed(
        rehearse(
            experiment,
            "folder",
            ilsvrc_sample["folder"],
            tmp_path,
            kill="inprocess",
            overrides=FAMILIES[experiment],
        )
    )
    assert stages["step time"].seconds > 0
    if experiment != "bn_inception_full":
        assert "report row" in stages


def test_only_batch_steps_and_images_differ_from_the_paper_config():
    from convnet_repro.experiments.engine.compose import compose

    paper = OmegaConf.to_container(
        compose(["experiment=imagenet_googlenet"]), resolve=False
    )
    rehearsal, _ = compose_rehearsal("imagenet_googlenet")
    rehearsal = OmegaConf.to_container(rehearsal, resolve=False)
    changed = {
        f"{group}.{key}"
        for group in ("data", "model", "optimizer", "schedule", "trainer")
        for key in set(paper[group]) | set(rehearsal[group])
        if paper[group].get(key) != rehearsal[group].get(key)
    }
    assert changed == {
        "data.batch_size",
        "data.eval_batch_size",
        "data.num_val_examples",
        "trainer.steps",
        "trainer.steps_per_execution",
        "trainer.eval_every_steps",
        "trainer.checkpoint_every_steps",
        "trainer.log_every_steps",
        "trainer.eval_steps",
        "trainer.progress",
    }


def test_parameter_check_catches_the_wrong_network():
    import hydra

    cfg, _ = compose_rehearsal("imagenet_resnet18")
    model = hydra.utils.instantiate(
        OmegaConf.merge(cfg.model, {"variant": "resnet34"}), _convert_="all"
    )
    found = {n: ok for n, ok, _ in checks.check_model(cfg, model)}
    assert found == {"resolution": True, "parameters": False}


def test_augmentation_check_sees_the_policy_the_pipeline_applies(
    ilsvrc_sample, monkeypatch
):
    from convnet_repro.experiments.data import pipeline

    cfg, _ = compose_rehearsal(
        "imagenet_resnet18",
        ["data.source=local", f"data.local_dir={ilsvrc_sample['folder']}"],
    )
    assert [ok for _, ok, _ in checks.check_data(cfg)] == [True, True]
    real = pipeline.aug.build_policy
    # A pipeline that ignores the configured policy is caught.
    monkeypatch.setattr(
        pipeline.aug,
        "build_policy",
        lambda policy, **kw: real("flip", **kw),
    )
    (name, ok, detail), _ = checks.check_data(cfg)
    assert name == "augmentation" and not ok, detail


def test_cli_refuses_an_override_where_the_experiment_belongs(capsys):
    assert cli.main(["data.batch_size=4"]) == 2
    assert "experiment=imagenet_resnet50" in capsys.readouterr().err


def test_21k_sample_labels_are_the_loaders_sorted_wnid_positions(
    ilsvrc_sample, tmp_path
):
    root, labels = chain.imagenet21k_sample(ilsvrc_sample["folder"], tmp_path)
    ok, detail = chain.check_21k_labels(root, labels)
    assert ok, detail
    assert sorted(labels) == ilsvrc_sample["wnids"]
    # Interior positions of the 21,841 classes, not 0..9: a loader that
    # enumerated only the folders holding images would fail the check.
    assert min(labels.values()) > 0
    assert max(labels.values()) < chain.NUM_CLASSES_21K - 1
    shifted = {w: i for i, w in enumerate(sorted(labels))}
    assert not chain.check_21k_labels(root, shifted)[0]


def test_cli_names_the_chain_for_a_fine_tuning_config(capsys):
    code = cli.main(
        ["experiment=imagenet_alexnet_1cnn_pretrained", "--layout", "tfds"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "pre-trained chain" in err and "make rehearse" in err
