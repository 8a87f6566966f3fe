"""Compose `conf/train.yaml` outside `@hydra.main` (tools, reports, tests).

`compose` is Hydra's Compose API (`hydra.initialize_config_dir` +
`hydra.compose`) on the project's `conf/`, optionally pointed at a fresh
MLflow store under a temporary folder. `fresh_sqlite_store` copies an empty
MLflow SQLite store from a template instead of migrating a new one.
"""

import os
import pathlib
import shutil
import tempfile

CONF_DIR = pathlib.Path(__file__).resolve().parents[2] / "conf"


def fresh_sqlite_store(path):
    """Creates an empty MLflow SQLite store at `path` by copying a template.

    Creating the tables runs MLflow's database migrations (5-15 s on a busy
    2-core machine); the template is built once per MLflow version and
    copied, which takes milliseconds. An existing `path` is left alone.

    Args:
        path: the `.db` file to create.

    Returns:
        `path`.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    path = pathlib.Path(path)
    if path.exists():
        return path
    template = pathlib.Path(tempfile.gettempdir()) / (
        f"convnet-repro-mlflow-{mlflow.__version__}-template.db"
    )
    if not template.exists():
        tmp = template.with_suffix(f".{os.getpid()}.tmp")
        MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments()
        os.replace(tmp, template)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)
    return path


def compose(overrides=(), tmp_path=None, return_hydra_config=False):
    """Composes `conf/train.yaml` with Hydra `overrides`.

    Args:
        overrides: Hydra override strings, e.g. `["experiment=smoke"]`.
        tmp_path: if set, the MLflow store, artifacts, checkpoints and
            outputs go under this folder (a fresh SQLite store).
        return_hydra_config: keep the `hydra` node (to check launcher and
            sweeper configs).

    Returns:
        The composed `DictConfig`.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import convnet_repro.experiments.engine.config_schema  # noqa: F401  (schema, resolver)

    overrides = list(overrides)
    if tmp_path is not None:
        tmp = pathlib.Path(tmp_path)
        fresh_sqlite_store(tmp / "mlruns.db")
        overrides += [
            f"tracking.uri=sqlite:///{tmp}/mlruns.db",
            f"tracking.artifact_location={tmp}/mlartifacts",
            f"paths.checkpoint_dir={tmp}/checkpoints",
            f"paths.output_dir={tmp}/outputs",
        ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose(
            "train",
            overrides=overrides,
            return_hydra_config=return_hydra_config,
        )
