"""Score trained classifiers with the papers' test protocols (command line).

A thin shell over `experiments.evaluation`: loads the models (MLflow run
ids, `runs:/<id>`, `models:/<name>/<version>`, `.keras` paths, or
`keras:<arch>` = our builder with `keras.applications` weights), streams
the validation images of an experiment's (or a data) config through a test
protocol, averages the softmax over views and models (an ensemble when
several sources are given), and logs top-1/top-5 error (percent) as a new
MLflow run with the per-image probabilities (float16) and top-k hits as
artifacts.
`--combine` averages such stored probabilities of earlier evaluation runs
instead (an ensemble of separately scored models).

Protocols (views per image; `experiments.data.protocol_views`):
- `center` (1): shorter side `resize`, central crop (VGG's dense
  evaluation stands in as a centre crop: our heads are not convolutional).
- `ten_crop` (10): four corners + centre, and mirrors (Krizhevsky et al.
  2012, Sec. 4.1; He et al. 2016, Table 3).
- `multi_crop` (144 with 4 scales): Szegedy et al. 2015, Sec. 7.

A run scored on a data config other than the one it was trained on (e.g.
binarized vs grey-scale MNIST) is refused, naming the differing keys;
`--allow-data-mismatch` scores it anyway.

Usage:
    python -m convnet_repro.experiments.evaluate RUN_ID [RUN_ID ...] \
        --protocol ten_crop \
        --experiment imagenette_alexnet_5cnns --row "AlexNet, 5 CNNs"
    python -m convnet_repro.experiments.evaluate models:/alexnet/3 \
        --data imagenet2012 \
        --override data.manual_dir=/data/imagenet --scale full
    python -m convnet_repro.experiments.evaluate keras:resnet50 \
        --keras-weights imagenet \
        --data imagenet2012 --protocol ten_crop --scale full
    python -m convnet_repro.experiments.evaluate \
        EVAL_RUN_ID [EVAL_RUN_ID ...] --combine \
        --row "7 models, 144 crops"

Reference:
- Krizhevsky et al., NIPS 2012, Sec. 4.1 and Table 2; Simonyan & Zisserman,
  ICLR 2015, Sec. 3.2; Szegedy et al., CVPR 2015, Sec. 7 and Table 3; He et
  al., CVPR 2016, Sec. 3.4 and Table 3.
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from convnet_repro.experiments.data.protocol_views import PROTOCOLS  # noqa: E402
from convnet_repro.experiments.evaluation import records  # noqa: E402
from convnet_repro.experiments.evaluation.report_hook import (  # noqa: E402,F401
    evaluate_experiment,  # the experiments' `report:` target
)


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m convnet_repro.experiments.evaluate",
        description=(
            "Top-1/top-5 error of one model or an ensemble (softmax average) "
            "under a test protocol; logs an MLflow run."
        ),
    )
    p.add_argument(
        "sources",
        nargs="+",
        help="run ids, runs:/<id>, models:/<name>/<version>, .keras paths, "
        "keras:<arch> (vgg16 vgg19 resnet50 resnet101 resnet152), or with "
        "--combine evaluation run ids",
    )
    p.add_argument("--protocol", default="center", choices=PROTOCOLS)
    p.add_argument(
        "--experiment",
        default=None,
        help="conf/experiment name whose data config gives the val images",
    )
    p.add_argument(
        "--data",
        default=None,
        help="conf/data name (instead of --experiment), e.g. imagenette",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra Hydra override (repeatable), e.g. data.decode_size=72",
    )
    p.add_argument("--resize", type=int, default=None)
    p.add_argument("--scales", type=int, nargs="+", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--row", default=None, help="table row name (tag)")
    p.add_argument("--family", default="")
    p.add_argument("--table", default="imagenet")
    p.add_argument(
        "--scale", default="mini", choices=("mini", "mini-long", "full")
    )
    p.add_argument("--paper-top1-error", type=float, default=None)
    p.add_argument("--paper-top5-error", type=float, default=None)
    p.add_argument("--experiment-name", default=records.DEFAULT_EXPERIMENT)
    p.add_argument(
        "--tracking-uri", default=None, help="default: the config's tracking"
    )
    p.add_argument(
        "--allow-data-mismatch",
        action="store_true",
        help="score runs on a data config unlike their training data",
    )
    p.add_argument(
        "--keras-weights",
        default=None,
        help="keras:<arch> sources: 'imagenet', a weights file, or 'none' "
        "(random weights, for offline checks)",
    )
    p.add_argument(
        "--num-classes",
        type=int,
        default=1000,
        help="keras:<arch> sources: classifier width (default 1000)",
    )
    p.add_argument(
        "--combine",
        action="store_true",
        help="average the stored predictions of earlier evaluation runs",
    )
    return p


def _compose(args):
    from convnet_repro.experiments.engine.compose import compose
    from convnet_repro.experiments.evaluation import sources

    overrides = list(args.override)
    if args.experiment:
        overrides.insert(0, f"experiment={args.experiment}")
    elif args.data:
        overrides.insert(0, f"data={args.data}")
    elif not args.combine:
        raise ValueError(
            "Say where the validation images come from: --experiment NAME "
            "or --data NAME. Received: experiment=None, data=None"
        )
    keras_sources = [s for s in args.sources if sources.is_keras_source(s)]
    if keras_sources:
        if len(keras_sources) != len(args.sources):
            raise ValueError(
                "keras:<arch> sources need the caffe mean; score them apart "
                f"from trained runs. Received: sources={args.sources}"
            )
        if args.keras_weights is None:
            raise ValueError(
                "keras:<arch> needs --keras-weights imagenet|PATH|none. "
                "Received: --keras-weights=None"
            )
        rescale = compose(overrides).data.get("rescale") or 1.0
        overrides += sources.keras_data_overrides(rescale)
        print(
            "[evaluate] keras:<arch> weights expect the caffe mean RGB: "
            + " ".join(overrides[-2:])
        )
    return compose(overrides)


def _score(args, cfg, out_dir):
    """Streams the protocol through the models; predictions to `out_dir`."""
    from omegaconf import OmegaConf

    from convnet_repro.experiments.evaluation import predict
    from convnet_repro.experiments.evaluation import sources
    from convnet_repro.experiments.evaluation import store

    sources.check_data_config(args.sources, cfg.data, args.allow_data_mismatch)
    weights = args.keras_weights
    models = [
        sources.load_model(
            s,
            keras_weights=None if weights in (None, "none") else weights,
            num_classes=args.num_classes,
            data_cfg=OmegaConf.to_container(cfg.data, resolve=True),
        )
        for s in args.sources
    ]
    ds, _ = predict.eval_dataset(cfg.data, args.max_images)
    resize = args.resize or cfg.data.get("resize_size")
    writer = store.PredictionWriter(out_dir, "float16")
    result = predict.evaluate(
        models,
        ds,
        args.protocol,
        writer=writer,
        resize=resize,
        scales=args.scales,
        batch_size=args.batch_size,
        max_images=args.max_images,
    )
    writer.close()
    return result, {"resize": resize, "scales": args.scales}


def _combine(args, out_dir):
    """Averages the stored predictions of evaluation runs (`--combine`)."""
    import mlflow

    from convnet_repro.experiments.evaluation import scoring
    from convnet_repro.experiments.evaluation import store

    client = mlflow.MlflowClient()
    runs = [client.get_run(r) for r in args.sources]
    protocols = {r.data.params.get("protocol") for r in runs}
    if len(protocols) != 1:
        raise ValueError(
            "--combine averages runs of one protocol; pick runs scored alike. "
            f"Received: protocols={sorted(map(str, protocols))}"
        )
    args.protocol = protocols.pop()
    fractions = {r.data.tags.get("fraction") for r in runs}
    if len(fractions) != 1:
        raise ValueError(
            "--combine averages runs of one training length; pick runs "
            f"tagged alike. Received: fractions={sorted(map(str, fractions))}"
        )
    fraction = fractions.pop()
    folders = [
        records.stored_predictions(r, os.path.join(out_dir, f"member{i}"))
        for i, r in enumerate(args.sources)
    ]
    writer = store.PredictionWriter(os.path.join(out_dir, "row"), "float16")
    counter = store.combine(folders, scoring.TopKCounter(), writer)
    writer.close()
    result = {
        **counter.result(),
        "num_views": int(runs[0].data.params["num_views"]),
        "num_models": sum(int(r.data.params["num_models"]) for r in runs),
    }
    params = {"combined": ",".join(args.sources)}
    fraction = None if fraction is None else float(fraction)
    return result, writer.folder, params, fraction


def main(argv=None):
    """CLI entry point; prints and returns the result dict."""
    from convnet_repro.experiments.engine import tracking
    from convnet_repro.experiments.evaluation import sources

    args = _parser().parse_args(argv)
    cfg = _compose(args)
    tracking.configure_cli(
        cfg.tracking, args.experiment_name, args.tracking_uri
    )
    with tempfile.TemporaryDirectory(prefix="evaluate_") as tmp:
        if args.combine:
            result, predictions, params, fraction = _combine(args, tmp)
        else:
            predictions = os.path.join(tmp, "predictions")
            result, params = _score(args, cfg, predictions)
            fraction = sources.training_fraction(args.sources)
        tags = {"table": args.table, "scale": args.scale, "family": args.family}
        if fraction is not None:  # a table never mixes training lengths
            tags["fraction"] = fraction
        if args.paper_top1_error is not None:
            tags["paper_top1_error"] = args.paper_top1_error
        if args.paper_top5_error is not None:
            tags["paper_top5_error"] = args.paper_top5_error
        result["run_id"] = records.log_evaluation(
            result,
            args.sources,
            args.protocol,
            experiment_name=args.experiment_name,
            row=args.row,
            tags=tags,
            params=params,
            predictions=predictions,
        )
    print(result)
    return result


if __name__ == "__main__":
    try:
        sys.exit(0 if main() else 1)
    except ValueError as error:  # bad input: one line, not a traceback
        print(
            f"convnet_repro.experiments.evaluate: error: {error}",
            file=sys.stderr,
        )
        sys.exit(2)
