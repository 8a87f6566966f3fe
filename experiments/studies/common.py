"""Helpers shared by the concept studies (issue #8).

Each study module exposes `run(cfg) -> dict` (testable, returns the table rows
and headline metrics) and a Hydra `main`. This module holds what they share:
offline data readers (MNIST IDX, an Imagenette photo), MNIST composites,
Markdown tables, figure saving and the MLflow run wrapper.

Reference:
- Goodfellow, Bengio, Courville, "Deep Learning", MIT Press 2016, ch. 9.
"""

import contextlib
import os
import pathlib
import time

import numpy as np

from convnet_repro.experiments.data import read_idx

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def data_dir():
    """Returns the offline data root (`$CONVNET_REPRO_DATA_DIR`)."""
    env = os.environ.get("CONVNET_REPRO_DATA_DIR")
    if env:
        return pathlib.Path(env)
    return REPO_ROOT.parent / "shared" / "data"


def load_mnist(split="train", limit=None):
    """Reads real MNIST from the IDX `.gz` files under `data_dir()/mnist`.

    Args:
        split: `"train"` (60k) or `"test"` (10k).
        limit: keep only the first `limit` examples (None keeps all).

    Returns:
        `(images, labels)`: uint8 `(N, 28, 28)` and int32 `(N,)`.
    """
    if split not in _MNIST_FILES:
        raise ValueError(
            f"`split` must be one of {sorted(_MNIST_FILES)}. "
            f"Received: split={split!r}"
        )
    root = data_dir() / "mnist"
    image_file, label_file = _MNIST_FILES[split]
    if not (root / image_file).exists():
        raise ValueError(
            f"MNIST IDX files not found; set CONVNET_REPRO_DATA_DIR to the "
            f"folder holding mnist/. Received: path={str(root)!r}"
        )
    images = read_idx(root / image_file)
    labels = read_idx(root / label_file).astype(np.int32)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def load_gray_image(relative_path, size=None):
    """Loads one Imagenette photo as a float64 greyscale image in [0, 1].

    Args:
        relative_path: path under `data_dir()/imagenette2-224`.
        size: optional `(height, width)` to resize to (bilinear).

    Returns:
        A float64 array `(H, W)`.
    """
    from PIL import Image

    path = data_dir() / "imagenette2-224" / relative_path
    if not path.exists():
        raise ValueError(
            f"Image not found; pick a file under imagenette2-224/. "
            f"Received: relative_path={relative_path!r}"
        )
    img = Image.open(path).convert("L")
    if size is not None:
        img = img.resize((int(size[1]), int(size[0])), Image.BILINEAR)
    return np.asarray(img, dtype=np.float64) / 255.0


def shrink_digits(images, size):
    """Crops MNIST digits to their central 20x20 box and resizes them.

    Args:
        images: uint8 `(N, 28, 28)`.
        size: output side in pixels.

    Returns:
        float32 `(N, size, size)` in [0, 1].
    """
    from PIL import Image

    out = np.empty((len(images), size, size), np.float32)
    for i, img in enumerate(images):
        pil = Image.fromarray(img[4:24, 4:24])
        out[i] = np.asarray(pil.resize((size, size), Image.BILINEAR))
    return out / 255.0


def markdown_table(rows, columns, floatfmt=".4g"):
    """Formats a list of dicts as a GitHub Markdown table.

    Args:
        rows: list of dicts; each holds every key of `columns`.
        columns: column names, in order.
        floatfmt: format spec for floats.

    Returns:
        The table as a string (ends with a newline).
    """

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return format(float(v), floatfmt)
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return f"{int(v):,}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(fmt(c) for c in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(fmt(row[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def output_dir(cfg):
    """Returns (and creates) the study's output folder `cfg.out_dir`.

    A relative `out_dir` is taken relative to the repository root, so the
    committed `results/studies/<name>/` is written whatever the cwd.
    """
    path = pathlib.Path(str(cfg.out_dir))
    if not path.is_absolute():
        path = REPO_ROOT / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_outputs(out_dir, name, tables, figures, header=""):
    """Writes `<name>.md` (all tables) and returns the paths written.

    Args:
        out_dir: output folder.
        name: study name, used for the Markdown file name.
        tables: list of `(title, rows, columns)`.
        figures: list of already saved figure paths (linked in the file).
        header: Markdown text put before the tables.

    Returns:
        List of paths (the Markdown file and the figures).
    """
    parts = [f"# Study: {name}\n", header]
    for title, rows, columns in tables:
        parts.append(f"\n## {title}\n\n" + markdown_table(rows, columns))
    for fig in figures:
        parts.append(f"\n![{fig.stem}]({fig.name})\n")
    md = out_dir / f"{name}.md"
    md.write_text("".join(parts))
    return [md, *figures]


def save_figure(fig, path):
    """Saves a matplotlib figure as PNG and closes it; returns the path."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return pathlib.Path(path)


def _configure_tracking(cfg, experiment_name):
    """`experiments.engine.tracking.configure` with the default store."""
    from omegaconf import OmegaConf

    from convnet_repro.experiments.engine import tracking

    tcfg = OmegaConf.to_container(cfg.get("tracking") or {}, resolve=True)
    tcfg["uri"] = tcfg.get("uri") or f"sqlite:///{REPO_ROOT / 'mlruns.db'}"
    tcfg["artifact_location"] = tcfg.get("artifact_location") or str(
        REPO_ROOT / "mlartifacts"
    )
    tracking.configure(tcfg, experiment_name)


@contextlib.contextmanager
def tracked_run(cfg, name):
    """MLflow run `study-<name>` around a study; yields a logger object.

    With `cfg.tracking.enabled=false` nothing is logged (tests use a
    temporary store instead, so they exercise this path too).
    """
    enabled = bool((cfg.get("tracking") or {}).get("enabled", True))
    if not enabled:
        yield _NullLogger()
        return
    import mlflow

    _configure_tracking(cfg, f"study-{name}")
    with mlflow.start_run(run_name=cfg.get("run_name") or name) as run:
        from convnet_repro.experiments.engine import tracking

        tracking.log_config(cfg)
        mlflow.set_tag("study", name)
        yield _MlflowLogger(run)


class _NullLogger:
    run_id = None

    def metrics(self, values, step=None):
        pass

    def artifacts(self, paths):
        pass


class _MlflowLogger:
    def __init__(self, run):
        self.run_id = run.info.run_id

    def metrics(self, values, step=None):
        import mlflow

        clean = {k: float(v) for k, v in values.items() if np.isfinite(v)}
        mlflow.log_metrics(clean, step=step)

    def artifacts(self, paths):
        import mlflow

        for p in paths:
            mlflow.log_artifact(str(p))


def hydra_main(name, run, objective=None):
    """The `python -m convnet_repro.experiments.studies.<name>` entry point.

    The returned function composes `conf/study/<name>.yaml` (plus CLI
    overrides), runs `run(cfg)` inside `tracked_run`, logs its metrics and
    files, and returns the value sweeps optimise: `metrics[objective]` for
    a string, `objective(result)` for a callable, NaN for None.
    """
    import hydra

    # An absolute path: Hydra resolves a relative one against this module,
    # not the study module run with `python -m`.
    @hydra.main(
        version_base="1.3",
        config_path=str(REPO_ROOT / "conf" / "study"),
        config_name=name,
    )
    def main(cfg):
        with tracked_run(cfg, name) as log:
            result = run(cfg)
            log.metrics(result["metrics"])
            log.artifacts(result["paths"])
        if callable(objective):
            return float(objective(result))
        return float(result["metrics"].get(objective, float("nan")))

    return main


def single_thread():
    """Context limiting BLAS/OpenMP pools to one thread (if threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


class Timer:
    """Context manager measuring wall time in seconds (`.seconds`)."""

    def __enter__(self):
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
