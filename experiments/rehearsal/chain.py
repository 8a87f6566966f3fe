"""Rehearses AlexNet's pre-trained chain: 21k pre-training -> 1 CNN*, 7 CNNs*.

`imagenet_alexnet_1cnn_pretrained` and `imagenet_alexnet_7cnns_pretrained`
fine-tune from `models:/imagenet21k_alexnet_conv6/1` and `/2`, and the
7-model row also scores the five `imagenet_alexnet_5cnns` runs, so neither
rehearses alone. `rehearse_chain` runs what a user with ImageNet-21k runs,
in one MLflow store, with the configs unchanged:

1. `imagenet21k_alexnet_conv6_pretrain` (21,841 classes, both seeds) on an
   ImageNet-21k-format folder (`imagenet21k_sample`): config checks, kill,
   resume (it has no `report:`; the paper gives no pre-training number);
2. `registered`: its two child models registered as versions 1 (seed 0)
   and 2 (seed 1) of `imagenet21k_alexnet_conv6`, as the config's header
   tells the user (`register_pretrained`);
3. `imagenet_alexnet_5cnns` trained (no kill: the per-config rehearsal
   covers its kill and resume);
4. `imagenet_alexnet_1cnn_pretrained`, then `_7cnns_pretrained`: the whole
   rehearsal (kill, resume, protocol, report row), plus `finetuned`: each
   run's `finetune.source_run_id` tag names the registered version's run,
   and the 7 CNNs* row scored 7 models.
"""

import pathlib

from convnet_repro.experiments.rehearsal import stages as stages_lib

PRETRAIN = "imagenet21k_alexnet_conv6_pretrain"
REGISTERED = "imagenet21k_alexnet_conv6"
ENSEMBLE_OF_FIVE = "imagenet_alexnet_5cnns"
FINETUNED = {  # experiment -> registered version it fine-tunes from
    "imagenet_alexnet_1cnn_pretrained": "1",
    "imagenet_alexnet_7cnns_pretrained": "2",
}
CHAIN = (PRETRAIN, *FINETUNED)
NUM_CLASSES_21K = 21841


def imagenet21k_sample(folder, out_dir, num_classes=NUM_CLASSES_21K):
    """An ImageNet-21k-format folder: the sample's wnids + empty synsets.

    `conf/data/imagenet21k.yaml` labels a class by its position among the
    sorted wnid folders of `train/` and checks their number against
    `data.num_classes` (21,841). The sample's real wnid folders are linked
    in and empty `n<8 digits>` folders (wnid-like names spread over the
    whole range, so the real ones land at interior positions) make up the
    count in both `train/` and `val/`, as a full copy would hold them.

    Args:
        folder: ILSVRC-format sample root (`train/<wnid>/`, `val/<wnid>/`).
        out_dir: output root (created; reused when complete).
        num_classes: class folders in total.

    Returns:
        `(root, labels)`: the folder root and `{wnid: label}` of the real
        wnids, as the 21k loader must assign them.
    """
    folder, out = pathlib.Path(folder), pathlib.Path(out_dir)
    real = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    step = 15_000_000 // num_classes  # real wnids span n01... to n15...
    fake = []
    for i in range(num_classes + len(real)):
        name = f"n{i * step:08d}"
        if name not in real:
            fake.append(name)
    names = sorted(real + fake[: num_classes - len(real)])
    for split in ("train", "val"):
        (out / split).mkdir(parents=True, exist_ok=True)
        for name in real:
            link = out / split / name
            if not link.exists():
                link.symlink_to((folder / split / name).resolve())
        for name in fake[: num_classes - len(real)]:
            (out / split / name).mkdir(exist_ok=True)
    return out, {w: names.index(w) for w in real}


def check_21k_labels(root, labels):
    """The 21k loader gives each real image its wnid's label, 21,841 classes.

    Lists `root` with the loader the `imagenet21k` data config uses
    (`experiments.data.splits.load`) and compares every image's label with
    its wnid's position among the sorted class folders.

    Returns:
        `(ok, detail)`.
    """
    from convnet_repro.experiments.data import splits as data_splits

    splits = data_splits.load(
        "imagenet21k", "local", str(root), None, None, False
    )
    bad, count = [], 0
    for split in splits:
        for path, label in zip(split.paths, split.labels):
            count += 1
            if labels[pathlib.Path(path).parent.name] != int(label):
                bad.append(f"{pathlib.Path(path).name}: {int(label)}")
    classes = {s.num_classes for s in splits}
    ok = not bad and classes == {NUM_CLASSES_21K} and count > 0
    shown = ", ".join(f"{w}={i}" for w, i in sorted(labels.items())[:3])
    return ok, (
        f"{count} images at their wnid's label of {sorted(classes)} classes "
        f"({shown}, ...)" + (f"; wrong: {bad[:3]}" if bad else "")
    )


def register_pretrained(client, experiment_name=PRETRAIN, name=REGISTERED):
    """Registers the pre-training's child models, seed 0 first.

    `mlflow.register_model("runs:/<id>/model", name)` needs a model logged
    with `mlflow.<flavor>.log_model` in MLflow 3 ("Unable to find a
    logged_model"); the engine logs a plain `.keras` artifact, so a version
    is created from the run's `model/` artifact folder instead, which is
    what `models:/<name>/<version>` sources resolve
    (`experiments.evaluation.sources.resolve_run_id`).

    Returns:
        `{version: run id}`.
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(experiment_name)
    runs = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("repro.role") != "parent"
        and r.info.status == "FINISHED"
    ]
    runs.sort(key=lambda r: int(r.data.tags.get("seed", r.data.params["seed"])))
    try:
        client.create_registered_model(name)
    except MlflowException:
        pass  # registered by an earlier rehearsal in the same store
    out = {}
    for run in runs:
        rid = run.info.run_id
        version = client.create_model_version(
            name, source=f"runs:/{rid}/model", run_id=rid
        )
        out[str(version.version)] = rid
    return out


def _prefixed(label, found):
    return [
        stages_lib.Stage(f"{label} {s.name}", s.ok, s.seconds, s.detail)
        for s in found
    ]


def _trained(experiment, data_overrides, store):
    from convnet_repro.experiments.engine import train as train_lib
    from convnet_repro.experiments.engine.compose import compose

    _, command = stages_lib.compose_rehearsal(
        experiment,
        [*data_overrides, *stages_lib._store_overrides(store)],
    )
    result = train_lib.train(compose(command))
    ok = result.get("status") == "FINISHED"
    return ok, f"{len(result.get('children') or [1])} run(s) FINISHED"


def _finetuned(client, experiment, version, registered):
    from convnet_repro.experiments.evaluation import sources

    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    tags = {
        r.data.tags.get("finetune.source_run_id")
        for r in runs
        if r.data.tags.get("repro.role") != "parent"
    }
    want = registered.get(version)
    ok = (
        tags == {want}
        and sources.resolve_run_id(f"models:/{REGISTERED}/{version}") == want
    )
    detail = f"source models:/{REGISTERED}/{version} = run {str(want)[:8]}"
    if experiment.endswith("7cnns_pretrained"):
        evals = stages_lib._evaluations(
            client, stages_lib._parent_id(client, _cfg(experiment))
        )
        models = sorted({r.data.params.get("num_models") for r in evals})
        ok &= models == ["7"]
        detail += f"; ensemble of {models} models"
    return ok, detail


def _cfg(experiment):
    from convnet_repro.experiments.engine.compose import compose

    return compose([f"experiment={experiment}", "debug=rehearsal"])


def rehearse_chain(folder, workdir, kill="inprocess"):
    """Rehearses the pre-trained chain in one store; returns its `Stage`s.

    Args:
        folder: ILSVRC-format sample root (`train/<wnid>/`, `val/<wnid>/`).
        workdir: fresh folder (store, checkpoints, 21k sample, per-stage
            callback files).
        kill: `inprocess` or `subprocess` (see `stages.rehearse`).

    Returns:
        list of `Stage`, each named `<experiment> <stage>`; stops at the
        first failure.
    """
    import mlflow
    from mlflow import MlflowClient

    workdir = pathlib.Path(workdir).resolve()
    store = workdir / "store"
    store.mkdir(parents=True, exist_ok=True)
    out = []

    def ok():
        return all(s.ok for s in out)

    root, labels = imagenet21k_sample(folder, workdir / "imagenet21k")
    out.append(
        stages_lib._stage(
            f"{PRETRAIN} labels", lambda: check_21k_labels(root, labels)
        )
    )
    out += _prefixed(
        PRETRAIN,
        stages_lib.rehearse(
            PRETRAIN,
            "folder",
            root,
            workdir / PRETRAIN,
            kill=kill,
            store_dir=store,
        ),
    )
    uri = f"sqlite:///{store}/mlruns.db"
    client = MlflowClient(tracking_uri=uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        if not ok():
            return out
        registered = {}

        def register():
            registered.update(register_pretrained(client))
            return sorted(registered) == ["1", "2"], (
                f"{REGISTERED} versions "
                + ", ".join(f"{v}=run {r[:8]}" for v, r in registered.items())
            )

        out.append(stages_lib._stage(f"{PRETRAIN} registered", register))
        folder_data = stages_lib.data_overrides("folder", folder)
        if ok():
            out.append(
                stages_lib._stage(
                    f"{ENSEMBLE_OF_FIVE} trained",
                    lambda: _trained(ENSEMBLE_OF_FIVE, folder_data, store),
                )
            )
        for experiment, version in FINETUNED.items():
            if not ok():
                break
            out += _prefixed(
                experiment,
                stages_lib.rehearse(
                    experiment,
                    "folder",
                    folder,
                    workdir / experiment,
                    kill=kill,
                    store_dir=store,
                ),
            )
            if ok():
                out.append(
                    stages_lib._stage(
                        f"{experiment} finetuned",
                        lambda e=experiment, v=version: _finetuned(
                            client, e, v, registered
                        ),
                    )
                )
    finally:
        mlflow.set_tracking_uri(previous)
    return out
