"""Structured (typed) schema of the root training config (`TrainConfig`).

`conf/train.yaml` starts its defaults list with `train_schema`, the
`TrainConfig` dataclass below, so Hydra composes every YAML file *into* the
schema: an unknown key (`trainer.stepz=5`) or a value of the wrong type
(`trainer.steps=abc`, `trainer.strategy=gpu`) fails at composition time, before
any work, with OmegaConf's one-line message naming the key. Relations between
values (divisibility of step intervals, variant overrides that name existing
keys, ...) are checked by `experiments.engine.config_checks`, which raises
`ConfigError` (a `ValueError`) with a one-line message.

Every value lives in one place, the YAML of `conf/` (`conf/train.yaml`
and its groups); the dataclasses here hold only the types (`MISSING`
defaults), so a value is never stated twice. `data`, `model`, `optimizer`
and `schedule` stay free-form (`Any`): their keys are the keyword
arguments of the `_target_` they name. Free-form extra settings that
experiments need go under the root key `extras`.

Reference: Hydra docs, "Structured Configs" / "Config Store API"; the layout
follows ashleve/lightning-hydra-template `configs/train.yaml`.
"""

import dataclasses
import enum
import logging
import pathlib
from typing import Any
from typing import Dict
from typing import List
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING
from omegaconf import OmegaConf

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config value is wrong; the message names the key and the fix."""


class Strategy(enum.Enum):
    default = "default"
    mirrored = "mirrored"
    multi_worker = "multi_worker"
    tpu = "tpu"


class Progress(enum.Enum):
    auto = "auto"  # a live bar in a terminal, else plain lines
    bar = "bar"
    lines = "lines"  # a plain line every few percent (CI, tee, pipes)
    none = "none"


class MixedPrecision(enum.Enum):
    none = "none"
    float16 = "mixed_float16"
    bfloat16 = "mixed_bfloat16"


@dataclasses.dataclass
class TrainerConfig:
    # Total optimizer steps. Training is step-based: Keras "epochs" are the
    # intervals between evaluations/checkpoints, not passes over the data.
    steps: int = MISSING
    # Steps run inside one compiled call; log/eval/checkpoint intervals must
    # be multiples of it (callbacks only see every `steps_per_execution`).
    steps_per_execution: int = MISSING
    eval_every_steps: int = MISSING
    log_every_steps: int = MISSING
    # 0 -> checkpoint at every evaluation.
    checkpoint_every_steps: int = MISSING
    # Keep this many old checkpoints beside the latest (0 = only the latest).
    keep_checkpoints: int = MISSING
    strategy: Strategy = MISSING
    # Split the host CPU into this many logical devices (mirrored on CPU).
    logical_cpu_devices: int = MISSING
    # None -> Keras "auto".
    jit_compile: Optional[bool] = MISSING
    mixed_precision: MixedPrecision = MISSING
    # One weight per model output (main first) for models with aux heads.
    loss_weights: Optional[List[float]] = MISSING
    top_k: int = MISSING
    # Recompute BN population statistics after training (BN paper Alg. 2).
    bn_population_stats: bool = MISSING
    bn_population_batches: Optional[int] = MISSING
    # Validation batches per evaluation (None = the whole `val_ds`).
    eval_steps: Optional[int] = MISSING
    # Same seed -> same metrics (tf.config.experimental op determinism).
    deterministic: bool = MISSING
    # One line of progress for the whole experiment on stderr
    # (`experiments.engine.progress`): auto | bar | lines | none.
    progress: Progress = MISSING


@dataclasses.dataclass
class TrackingConfig:
    # Default: embedded SQLite store, no server (`make ui` reads it).
    uri: str = MISSING
    # Artifact folder for experiments created by a local store (None for
    # remote servers: the server decides).
    artifact_location: Optional[str] = MISSING
    # Restarting the same command resumes the unfinished run with the same
    # run key (config hash) and skips finished child runs.
    resume: bool = MISSING
    # Overrides the config-hash run key.
    run_key: Optional[str] = MISSING
    log_model: bool = MISSING
    log_figures: bool = MISSING
    # Seconds to wait for a remote server in the reachability check.
    connect_timeout_s: float = MISSING
    # A server that dies mid-run: MLflow's HTTP timeout (s) and retries
    # per request (env MLFLOW_HTTP_REQUEST_TIMEOUT / _MAX_RETRIES; null
    # keeps the environment's). Metrics stay in memory while it is away.
    request_timeout_s: Optional[int] = MISSING
    max_retries: Optional[int] = MISSING
    # Seconds between tries while the server is away (training goes on).
    retry_every_s: float = MISSING
    # At the end of a run, seconds to keep trying before the unsent metrics
    # go to `unsent_metrics.jsonl` in the checkpoint folder (sent by the
    # rerun of the same command, which also sets the final status).
    final_wait_s: float = MISSING


@dataclasses.dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
    checkpoint_dir: str = MISSING
    results_dir: str = MISSING
    output_dir: str = MISSING


@dataclasses.dataclass
class FinetuneConfig:
    # Start from these weights (`experiments.engine.finetune`): a run id,
    # runs:/<id>, models:/<name>/<version> or a .keras path. null = no
    # fine-tuning (train from the builder's initialisation).
    source: Optional[str] = MISSING
    # Layers re-initialised for the new label set; null = the layers that
    # make the model's outputs (e.g. AlexNet's fc8).
    head: Optional[List[str]] = MISSING
    # false: copy the head too (same num_classes as the source).
    reinit_head: bool = MISSING
    # The head's learning rate times this (SGD only); null = same lr.
    head_lr_multiplier: Optional[float] = MISSING


@dataclasses.dataclass
class TrainConfig:
    experiment_name: str = MISSING
    run_name: Optional[str] = MISSING
    tags: List[str] = MISSING
    seed: int = MISSING
    # A child run per seed (x variant) under one parent run.
    # (Typed `Any`: OmegaConf cannot merge a dict into a None typed dict;
    # `validate_config` checks them.)
    seeds: Any = MISSING
    # name -> {dotted.key: value} overrides; a child run per variant.
    variants: Any = MISSING
    # Reference numbers of the paper (logged as `paper.*` tags).
    paper: Dict[str, Any] = MISSING
    optimized_metric: str = MISSING
    # name -> {_target_: a keras.callbacks.Callback, ...}.
    callbacks: Dict[str, Any] = MISSING
    # {_target_: fn(cfg, parent_run_id)} called after all runs.
    report: Optional[Any] = MISSING
    # Free-form settings for experiment-specific code (reports, callbacks).
    extras: Dict[str, Any] = MISSING
    data: Any = MISSING
    model: Any = MISSING
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    # `_target_` nodes (conf/optimizer/, conf/schedule/): free-form, their
    # keys are the target's arguments (`config_checks` checks the names).
    optimizer: Any = MISSING
    schedule: Any = MISSING
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    paths: PathsConfig = dataclasses.field(default_factory=PathsConfig)


def register_configs():
    """Registers `train_schema` (idempotent; called on import)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)


register_configs()
OmegaConf.register_new_resolver(
    "repro_root", lambda: str(REPO_ROOT), replace=True
)
