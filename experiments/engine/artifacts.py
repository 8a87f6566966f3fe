"""What a finished run uploads to MLflow: its model and learning curves.

The model is the `.keras` file under the run's `model/` artifact folder
(what `experiments.evaluation.sources` loads from `runs:/<id>`). We write
the file ourselves rather than `mlflow.keras.log_model`: that adds an
MLmodel/conda/pip wrapper around the same `.keras` file and a pip
resolution per run, none of which the evaluation reads.
"""

import pathlib
import tempfile

import mlflow
from mlflow.tracking import MlflowClient

from convnet_repro.experiments.engine import metric_keys as mk

MODEL_ARTIFACT_DIR = "model"
LEARNING_CURVES = "figures/learning_curves.png"


def log_learning_curves(run_id):
    """A learning-curve figure (train loss, val top-1 error) from MLflow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    client = MlflowClient()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key in zip(axes, (mk.TRAIN_LOSS, mk.VAL_TOP1_ERROR)):
        history = sorted(
            client.get_metric_history(run_id, key), key=lambda m: m.step
        )
        ax.plot([m.step for m in history], [m.value for m in history])
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    mlflow.log_figure(fig, LEARNING_CURVES)
    plt.close(fig)


def log_run_artifacts(cfg, model, run_id):
    """Logs the model (`tracking.log_model`) and figures (`log_figures`)."""
    if cfg.tracking.log_model:
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / "model.keras"
            model.save(path)
            mlflow.log_artifact(str(path), artifact_path=MODEL_ARTIFACT_DIR)
    if cfg.tracking.log_figures:
        log_learning_curves(run_id)
