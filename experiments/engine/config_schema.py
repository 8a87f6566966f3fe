"""Structured (typed) schema of the root training config, and its checks.

`conf/train.yaml` starts its defaults list with `train_schema`, the
`TrainConfig` dataclass below, so Hydra composes every YAML file *into* the
schema: an unknown key (`trainer.stepz=5`) or a value of the wrong type
(`trainer.steps=abc`, `trainer.strategy=gpu`) fails at composition time, before
any work, with OmegaConf's one-line message naming the key. Relations between
values (divisibility of step intervals, variant overrides that name existing
keys, ...) are checked by `validate_config`, which raises `ConfigError` (a
`ValueError`) with a one-line message in the `Received: x=...` style.

`data` and `model` stay free-form (`Any`): their keys are the keyword
arguments of the `_target_` they name. Free-form extra settings that
experiments need go under the root key `extras`.

Reference: Hydra docs, "Structured Configs" / "Config Store API"; the layout
follows ashleve/lightning-hydra-template `configs/train.yaml`.
"""

import dataclasses
import enum
import logging
import math
import pathlib
from typing import Any
from typing import Dict
from typing import List
from typing import Optional

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig
from omegaconf import ListConfig
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


def _fail(message, **received):
    got = ", ".join(f"{k}={v!r}" for k, v in received.items())
    raise ConfigError(f"{message} Received: {got}")


def _is_target_node(node):
    return isinstance(node, (dict, DictConfig)) and "_target_" in node


def validate_config(cfg):
    """Checks relations between config values; raises `ConfigError`.

    Types and key names are already enforced by the `TrainConfig` schema;
    this checks what a schema cannot express. Runs before any work.

    Args:
        cfg: the composed root `DictConfig`.

    Raises:
        ConfigError: one line naming the key, the rule and the received value.
    """
    _check_finite(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    t = cfg.trainer
    for key in ("steps", "steps_per_execution", "eval_every_steps"):
        if t[key] <= 0:
            _fail(f"trainer.{key} must be > 0.", **{f"trainer.{key}": t[key]})
    if t.eval_every_steps > t.steps:
        # Warned, not rejected: the run still evaluates once, at its last
        # step ("train, then score", used by short runs and tests); only the
        # learning curve has no validation points.
        log.warning(
            "trainer.eval_every_steps=%d > trainer.steps=%d: no evaluation "
            "during training, only the final one; lower eval_every_steps "
            "for a validation curve.",
            t.eval_every_steps,
            t.steps,
        )
    for key in ("log_every_steps", "checkpoint_every_steps", "top_k"):
        if t[key] < 0:
            _fail(f"trainer.{key} must be >= 0.", **{f"trainer.{key}": t[key]})
    spe = t.steps_per_execution
    for key in (
        "eval_every_steps",
        "log_every_steps",
        "checkpoint_every_steps",
    ):
        if t[key] % spe:
            _fail(
                f"trainer.{key} must be a multiple of "
                f"trainer.steps_per_execution={spe}; change either.",
                **{f"trainer.{key}": t[key]},
            )
    chunk = fit_chunk_steps(t)
    if t.steps % chunk:
        _fail(
            f"trainer.steps must be a multiple of {chunk} (the gcd of "
            "eval_every_steps and checkpoint_every_steps).",
            **{"trainer.steps": t.steps},
        )
    if t.logical_cpu_devices < 0:
        _fail(
            "trainer.logical_cpu_devices must be >= 0.",
            **{"trainer.logical_cpu_devices": t.logical_cpu_devices},
        )
    o = cfg.optimizer
    if o.learning_rate <= 0:
        _fail(
            "optimizer.learning_rate must be > 0.",
            **{"optimizer.learning_rate": o.learning_rate},
        )
    if o.weight_decay < 0:
        _fail(
            "optimizer.weight_decay must be >= 0.",
            **{"optimizer.weight_decay": o.weight_decay},
        )
    _check_optimizer_fields(o)
    m = cfg.finetune.head_lr_multiplier
    if m is not None and m <= 0:
        _fail(
            "finetune.head_lr_multiplier must be > 0 (or null).",
            **{"finetune.head_lr_multiplier": m},
        )
    s = cfg.schedule
    if s.name == ScheduleName.step and list(s.boundaries) != sorted(
        set(s.boundaries)
    ):
        _fail(
            "schedule.boundaries must be strictly increasing steps.",
            **{"schedule.boundaries": list(s.boundaries)},
        )
    if s.name == ScheduleName.exponential and s.decay_steps <= 0:
        _fail(
            "schedule.decay_steps must be > 0.",
            **{"schedule.decay_steps": s.decay_steps},
        )
    for group in ("data", "model"):
        if not _is_target_node(cfg[group]):
            _fail(
                f"`{group}` needs a `_target_`; pick a config with "
                f"{group}=<name> (see conf/{group}/).",
                **{group: cfg[group]},
            )
    for name, node in (cfg.callbacks or {}).items():
        if not _is_target_node(node):
            _fail(
                "each callbacks entry needs a `_target_`.",
                **{f"callbacks.{name}": node},
            )
    if cfg.report is not None and not _is_target_node(cfg.report):
        _fail("report must be null or have a `_target_`.", report=cfg.report)
    if cfg.seeds is not None:
        if not isinstance(cfg.seeds, ListConfig) or not all(
            isinstance(s, int) for s in cfg.seeds
        ):
            _fail("seeds must be null or a list of ints.", seeds=cfg.seeds)
        if len(set(cfg.seeds)) != len(cfg.seeds):
            _fail("seeds must be distinct.", seeds=list(cfg.seeds))
    if cfg.variants is not None and not isinstance(cfg.variants, DictConfig):
        _fail(
            "variants must be null or a dict name -> overrides.",
            variants=cfg.variants,
        )
    for name, overrides in (cfg.variants or {}).items():
        for key, value in variant_items(name, overrides):
            if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
                _fail(
                    f"variant {name!r} overrides a key that does not exist; "
                    "use a dotted path of the composed config.",
                    **{f"variants.{name}.{key}": value},
                )


def _check_finite(node, prefix=""):
    """Rejects NaN/Inf anywhere in the config (`optimizer.learning_rate=nan`
    would otherwise train and diverge, or silently do nothing)."""
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, float) and not math.isfinite(value):
            _fail(
                f"{name} must be a finite number; give a real value.",
                **{name: value},
            )
        _check_finite(value, name)


_OPTIMIZER_FIELDS = {
    OptimizerName.sgd: {"momentum", "nesterov"},
    OptimizerName.adam: {"beta_1", "beta_2", "amsgrad", "epsilon"},
    OptimizerName.rmsprop: {"rho", "momentum", "centered", "epsilon"},
}
_COMMON_FIELDS = {
    "name",
    "learning_rate",
    "weight_decay",
    "weight_decay_style",
    "clipnorm",
    "global_clipnorm",
}


def _check_optimizer_fields(o):
    defaults = OptimizerConfig()
    used = _OPTIMIZER_FIELDS[o.name] | _COMMON_FIELDS
    for field in dataclasses.fields(OptimizerConfig):
        if field.name in used:
            continue
        if o[field.name] != getattr(defaults, field.name):
            _fail(
                f"optimizer.{field.name} is not used by "
                f"optimizer.name={o.name.value}; remove it.",
                **{f"optimizer.{field.name}": o[field.name]},
            )


def optimizer_kwargs(o):
    """The Keras constructor arguments of optimizer config `o`."""
    keys = _OPTIMIZER_FIELDS[o.name] | {"clipnorm", "global_clipnorm"}
    kwargs = {k: o[k] for k in sorted(keys)}
    if (
        o.weight_decay_style == WeightDecayStyle.decoupled
        and o.weight_decay > 0
    ):
        kwargs["weight_decay"] = o.weight_decay
    return kwargs


def variant_items(name, overrides):
    """Yields `(dotted_key, value)` of one variant.

    A variant is a dict `{dotted.key: value}` or a list of `"key=value"`
    strings (values parsed as YAML).
    """
    if isinstance(overrides, (list, ListConfig)):
        for item in overrides:
            if not isinstance(item, str) or "=" not in item:
                _fail(
                    "variant list items must be 'dotted.key=value' strings.",
                    **{f"variants.{name}": item},
                )
            key, value = item.split("=", 1)
            yield key.strip(), yaml.safe_load(value)
    elif isinstance(overrides, (dict, DictConfig)):
        for key, value in overrides.items():
            yield str(key), value
    elif overrides is None:
        return
    else:
        _fail(
            "a variant is a dict of dotted overrides or a list of 'k=v'.",
            **{f"variants.{name}": overrides},
        )


def fit_chunk_steps(trainer):
    """Steps per Keras "epoch": gcd of the eval and checkpoint intervals."""
    ckpt = trainer.checkpoint_every_steps or trainer.eval_every_steps
    return math.gcd(trainer.eval_every_steps, ckpt)
