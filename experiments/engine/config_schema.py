"""Structured (typed) schema of the root training config (`TrainConfig`).

`conf/train.yaml` starts its defaults list with `train_schema`, the
`TrainConfig` dataclass below, so Hydra composes every YAML file *into* the
schema: an unknown key (`trainer.stepz=5`) or a value of the wrong type
(`trainer.steps=abc`, `trainer.strategy=gpu`) fails at composition time, before
any work, with OmegaConf's one-line message naming the key. Relations between
values (divisibility of step intervals, variant overrides that name existing
keys, ...) are checked by `experiments.engine.config_checks`, which raises
`ConfigError` (a `ValueError`) with a one-line message.

`data` and `model` stay free-form (`Any`): their keys are the keyword
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


class OptimizerName(enum.Enum):
    sgd = "sgd"
    adam = "adam"
    rmsprop = "rmsprop"


class WeightDecayStyle(enum.Enum):
    # Paper-style: `weight_decay / 2 * ||w||^2` added to the loss, so the
    # gradient gets `+ weight_decay * w` (AlexNet Sec. 5, Caffe `weight_decay`).
    l2 = "l2"
    # Decoupled (Loshchilov & Hutter): Keras optimizers' `weight_decay` arg.
    decoupled = "decoupled"


class ScheduleName(enum.Enum):
    constant = "constant"
    step = "step"
    exponential = "exponential"
    plateau = "plateau"


@dataclasses.dataclass
class TrainerConfig:
    # Total optimizer steps. Training is step-based: Keras "epochs" are the
    # intervals between evaluations/checkpoints, not passes over the data.
    steps: int = 1000
    # Steps run inside one compiled call; log/eval/checkpoint intervals must
    # be multiples of it (callbacks only see every `steps_per_execution`).
    steps_per_execution: int = 1
    eval_every_steps: int = 500
    log_every_steps: int = 100
    # 0 -> checkpoint at every evaluation.
    checkpoint_every_steps: int = 0
    # Keep this many old checkpoints beside the latest (0 = only the latest).
    keep_checkpoints: int = 0
    strategy: Strategy = Strategy.default
    # Split the host CPU into this many logical devices (mirrored on CPU).
    logical_cpu_devices: int = 0
    # None -> Keras "auto".
    jit_compile: Optional[bool] = None
    mixed_precision: MixedPrecision = MixedPrecision.none
    # One weight per model output (main first) for models with aux heads.
    loss_weights: Optional[List[float]] = None
    top_k: int = 5
    # Recompute BN population statistics after training (BN paper Alg. 2).
    bn_population_stats: bool = False
    bn_population_batches: Optional[int] = None
    # Validation batches per evaluation (None = the whole `val_ds`).
    eval_steps: Optional[int] = None
    # Same seed -> same metrics (tf.config.experimental op determinism).
    deterministic: bool = True
    # One line of progress for the whole experiment on stderr
    # (`experiments.engine.progress`): auto | bar | lines | none.
    progress: Progress = Progress.auto


@dataclasses.dataclass
class TrackingConfig:
    # Default: embedded SQLite store, no server (`make ui` reads it).
    uri: str = "sqlite:///${paths.root_dir}/mlruns.db"
    # Artifact folder for experiments created by a local store (None for
    # remote servers: the server decides).
    artifact_location: Optional[str] = "${paths.root_dir}/mlartifacts"
    # Restarting the same command resumes the unfinished run with the same
    # run key (config hash) and skips finished child runs.
    resume: bool = True
    # Overrides the config-hash run key.
    run_key: Optional[str] = None
    log_model: bool = True
    log_figures: bool = True
    # Seconds to wait for a remote server in the reachability check.
    connect_timeout_s: float = 5.0
    # A server that dies mid-run: MLflow's HTTP timeout (s) and retries
    # per request (env MLFLOW_HTTP_REQUEST_TIMEOUT / _MAX_RETRIES; null
    # keeps the environment's). Metrics stay in memory while it is away.
    request_timeout_s: Optional[int] = 10
    max_retries: Optional[int] = 1
    # Seconds between tries while the server is away (training goes on).
    retry_every_s: float = 30.0
    # At the end of a run, seconds to keep trying before the unsent metrics
    # go to `unsent_metrics.jsonl` in the checkpoint folder (sent by the
    # rerun of the same command, which also sets the final status).
    final_wait_s: float = 60.0


@dataclasses.dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.sgd
    learning_rate: float = 0.01
    # sgd / rmsprop
    momentum: float = 0.0
    # sgd
    nesterov: bool = False
    # adam
    beta_1: float = 0.9
    beta_2: float = 0.999
    amsgrad: bool = False
    # rmsprop
    rho: float = 0.9
    centered: bool = False
    # adam / rmsprop
    epsilon: float = 1e-7
    weight_decay: float = 0.0
    weight_decay_style: WeightDecayStyle = WeightDecayStyle.l2
    clipnorm: Optional[float] = None
    global_clipnorm: Optional[float] = None


@dataclasses.dataclass
class ScheduleConfig:
    name: ScheduleName = ScheduleName.constant
    # step: lr = learning_rate * prod(gammas of passed boundaries).
    boundaries: List[int] = dataclasses.field(default_factory=list)
    gamma: float = 0.1
    # exponential: lr = learning_rate * decay_rate ** (step / decay_steps).
    decay_steps: int = 1000
    decay_rate: float = 0.96
    staircase: bool = False
    # plateau (ReduceLROnPlateau, checked at every evaluation).
    monitor: str = "val_loss"
    factor: float = 0.1
    patience: int = 2
    cooldown: int = 0
    min_delta: float = 1e-4
    min_lr: float = 0.0


@dataclasses.dataclass
class PathsConfig:
    root_dir: str = str(REPO_ROOT)
    data_dir: str = "${oc.env:CONVNET_REPRO_DATA_DIR,${paths.root_dir}/data}"
    checkpoint_dir: str = "${paths.root_dir}/checkpoints"
    results_dir: str = "${paths.root_dir}/results"
    output_dir: str = "${paths.root_dir}/outputs"


@dataclasses.dataclass
class FinetuneConfig:
    # Start from these weights (`experiments.engine.finetune`): a run id,
    # runs:/<id>, models:/<name>/<version> or a .keras path. null = no
    # fine-tuning (train from the builder's initialisation).
    source: Optional[str] = None
    # Layers re-initialised for the new label set; null = the layers that
    # make the model's outputs (e.g. AlexNet's fc8).
    head: Optional[List[str]] = None
    # false: copy the head too (same num_classes as the source).
    reinit_head: bool = True
    # The head's learning rate times this (SGD only); null = same lr.
    head_lr_multiplier: Optional[float] = None


@dataclasses.dataclass
class TrainConfig:
    experiment_name: str = "default"
    run_name: Optional[str] = None
    tags: List[str] = dataclasses.field(default_factory=list)
    seed: int = 0
    # A child run per seed (x variant) under one parent run.
    # (Typed `Any`: OmegaConf cannot merge a dict into a None typed dict;
    # `validate_config` checks them.)
    seeds: Any = None
    # name -> {dotted.key: value} overrides; a child run per variant.
    variants: Any = None
    # Reference numbers of the paper (logged as `paper.*` tags).
    paper: Dict[str, Any] = dataclasses.field(default_factory=dict)
    optimized_metric: str = "val/top1_error"
    # name -> {_target_: a keras.callbacks.Callback, ...}.
    callbacks: Dict[str, Any] = dataclasses.field(default_factory=dict)
    # {_target_: fn(cfg, parent_run_id)} called after all runs.
    report: Optional[Any] = None
    # Free-form settings for experiment-specific code (reports, callbacks).
    extras: Dict[str, Any] = dataclasses.field(default_factory=dict)
    data: Any = None
    model: Any = None
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    optimizer: OptimizerConfig = dataclasses.field(
        default_factory=OptimizerConfig
    )
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
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
