"""Evaluation library: the papers' test protocols scored with memory that
does not grow with the data set.

Modules (flow: sources -> predict -> scoring/store -> records):
- `sources`: models from MLflow runs, `.keras` files or `keras:<arch>`
  (`keras.applications` weights); the run-vs-requested data check.
- `predict`: validation images of a data config; protocol views streamed
  through the models, softmax averaged per image as produced.
- `scoring`: softmax, view/model averaging, running top-k counts.
- `store`: per-image probabilities on disk (`.npy`), written and combined
  chunk by chunk.
- `records`: evaluation runs in MLflow (metrics, tags, stored predictions).
- `report_hook`: the experiments' `report:` hook (table rows, ensembles).

The command line is `python -m convnet_repro.experiments.evaluate` (a thin
shell).
"""

from convnet_repro.experiments.data.protocol_views import PROTOCOLS
from convnet_repro.experiments.evaluation.predict import eval_dataset
from convnet_repro.experiments.evaluation.predict import evaluate
from convnet_repro.experiments.evaluation.records import log_evaluation
from convnet_repro.experiments.evaluation.report_hook import evaluate_experiment
from convnet_repro.experiments.evaluation.sources import load_model

__all__ = [
    "PROTOCOLS",
    "eval_dataset",
    "evaluate",
    "evaluate_experiment",
    "load_model",
    "log_evaluation",
]
