"""Dress-rehearse a full-scale experiment before spending GPU-days on it.

Runs the paper config with only `conf/debug/rehearsal.yaml` overridden
(batch 2, 3 steps, a few images): config checks -> train -> checkpoint ->
kill -> resume (same MLflow run) -> its `report:` evaluation -> its
ImageNet-table row, and prints one PASS/FAIL line per stage plus the
measured step time. Exit status 0 when every stage passes.

Data: an ILSVRC-2012-format folder (`--layout folder --data-dir ROOT`, with
`train/<wnid>/`, `val/<wnid>/`), the tfds `manual_dir` with the two tars
(`--layout tfds --data-dir MANUAL_DIR --tfds-data-dir DIR`), or, without
`--data-dir`, a sample made from the Imagenette JPEGs of the offline data
root (`experiments.data.ilsvrc_sample`).

Usage:
    python -m convnet_repro.experiments.rehearse experiment=imagenet_resnet50
    python -m convnet_repro.experiments.rehearse \
        experiment=imagenet_googlenet_7models \
        --layout tfds --kill inprocess trainer.jit_compile=false
    make rehearse EXPERIMENT=imagenet_vgg_e_jitter ARGS="--layout tfds"

The three configs of AlexNet's pre-trained rows (`imagenet21k_alexnet_conv6_
pretrain`, `imagenet_alexnet_{1cnn,7cnns}_pretrained`) rehearse together:
naming any of them runs the chain (`experiments.rehearsal.chain`), folder
layout, in-process kills.
"""

import argparse
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m convnet_repro.experiments.rehearse",
        description=__doc__.split("\n")[0],
    )
    p.add_argument(
        "overrides",
        nargs="+",
        help="experiment=<name> (or just <name>), then Hydra overrides",
    )
    p.add_argument("--layout", default="folder", choices=("folder", "tfds"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--tfds-data-dir", default=None)
    p.add_argument(
        "--kill", default="subprocess", choices=("subprocess", "inprocess")
    )
    p.add_argument("--workdir", default=None, help="default: a temp folder")
    p.add_argument("--images-per-class", type=int, default=4)
    return p


def _sample(args, workdir):
    from convnet_repro.experiments.data import ilsvrc_sample

    sample = ilsvrc_sample.make_ilsvrc_sample(
        workdir / "sample",
        images_per_class=args.images_per_class,
        layouts=(args.layout,),
    )
    return sample["folder" if args.layout == "folder" else "manual_dir"]


def _chain(experiment, args, overrides, workdir):
    """Rehearses the pre-trained chain `experiment` belongs to."""
    from convnet_repro.experiments.rehearsal import chain

    if overrides or args.layout != "folder":
        print(
            f"error: {experiment} rehearses only as part of the pre-trained "
            "chain, on the folder layout and without overrides; run "
            f"make rehearse EXPERIMENT={experiment} (optionally ARGS="
            '"--data-dir <ILSVRC folder>"). '
            f"Received: {overrides or ['--layout', args.layout]}",
            file=sys.stderr,
        )
        return 2
    args.layout = "folder"
    data_dir = args.data_dir or _sample(args, workdir)
    steps = " -> ".join(chain.CHAIN)
    print(
        f"{experiment} belongs to the pre-trained chain {steps} (+ "
        f"{chain.ENSEMBLE_OF_FIVE}): rehearsing the chain (kill inprocess) "
        f"in {workdir}"
    )
    # In-process kills (as the chain test): five experiments, nine training
    # runs, ~11 GB of 147M-parameter checkpoints and models in workdir.
    stages = chain.rehearse_chain(data_dir, workdir / "chain", kill="inprocess")
    for stage in stages:
        print(stage.line(), flush=True)
    ok = bool(stages) and all(s.ok for s in stages)
    print(f"{'PASS' if ok else 'FAIL'} pre-trained chain")
    return 0 if ok else 1


def main(argv=None):
    """CLI entry point; returns the process exit status."""
    from convnet_repro.experiments.rehearsal import chain
    from convnet_repro.experiments.rehearsal import rehearse

    args = _parser().parse_args(argv)
    first, *overrides = args.overrides
    experiment = first.split("=", 1)[1] if "=" in first else first
    if first.startswith(("+", "~")) or (
        "=" in first and not first.startswith("experiment=")
    ):
        print(
            "error: the first argument names the experiment, e.g. "
            f"experiment=imagenet_resnet50. Received: {first!r}",
            file=sys.stderr,
        )
        return 2
    workdir = pathlib.Path(
        args.workdir or tempfile.mkdtemp(prefix=f"rehearse-{experiment}-")
    ).resolve()
    if experiment in chain.CHAIN:
        return _chain(experiment, args, overrides, workdir)
    data_dir = args.data_dir or _sample(args, workdir)
    tfds_dir = args.tfds_data_dir or (
        str(workdir / "tfds") if args.layout == "tfds" else None
    )
    print(
        f"rehearsal of {experiment} ({args.layout}, kill {args.kill}) in "
        f"{workdir}"
    )
    stages = rehearse(
        experiment,
        args.layout,
        data_dir,
        workdir / "run",
        kill=args.kill,
        tfds_data_dir=tfds_dir,
        overrides=overrides,
    )
    for stage in stages:
        print(stage.line(), flush=True)
    ok = all(s.ok for s in stages)
    print(f"{'PASS' if ok else 'FAIL'} {experiment}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
