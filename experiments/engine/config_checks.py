"""Checks of a composed config that its typed schema cannot express.

The `TrainConfig` schema (`experiments.engine.config_schema`) already
enforces key names and value types at composition. `validate_config` checks
the relations between values before any work (divisible step intervals,
`_target_` nodes, variants that name existing keys, no NaN anywhere, no
optimizer key the chosen optimizer ignores) and raises `ConfigError` with a
one-line message in the `Received: x=...` style.
"""

import dataclasses
import logging
import math

import yaml
from omegaconf import DictConfig
from omegaconf import ListConfig
from omegaconf import OmegaConf

from experiments.engine.config_schema import ConfigError
from experiments.engine.config_schema import OptimizerConfig
from experiments.engine.config_schema import OptimizerName
from experiments.engine.config_schema import ScheduleName
from experiments.engine.config_schema import WeightDecayStyle

log = logging.getLogger(__name__)


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
