"""Checks of a composed config that its typed schema cannot express.

The `TrainConfig` schema (`experiments.engine.config_schema`) already
enforces key names and value types at composition. `validate_config` checks
the relations between values before any work (divisible step intervals,
`_target_` nodes, variants that name existing keys, no NaN anywhere, no
optimizer or schedule key that is not an argument of its `_target_`) and
raises `ConfigError` with a one-line message in the `Received: x=...`
style.
"""

import inspect
import math

import yaml
from hydra.utils import get_object as _locate
from omegaconf import DictConfig
from omegaconf import ListConfig
from omegaconf import OmegaConf

from convnet_repro.experiments.engine.config_schema import ConfigError


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

    Returns:
        The warnings (one-line strings) about values that are allowed but
        likely unintended; the caller logs them (once for a whole sweep).

    Raises:
        ConfigError: one line naming the key, the rule and the received value.
    """
    _check_finite(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    t = cfg.trainer
    for key in ("steps", "steps_per_execution", "eval_every_steps"):
        if t[key] <= 0:
            _fail(f"trainer.{key} must be > 0.", **{f"trainer.{key}": t[key]})
    warnings = []
    if t.eval_every_steps > t.steps:
        # Warned, not rejected: the run still evaluates once, at its last
        # step ("train, then score", used by short runs and tests); only the
        # learning curve has no validation points.
        warnings.append(
            f"trainer.eval_every_steps={t.eval_every_steps} > "
            f"trainer.steps={t.steps}: no evaluation during training, only "
            "the final one; lower eval_every_steps for a validation curve."
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
    _check_optimizer(cfg.optimizer)
    m = cfg.finetune.head_lr_multiplier
    if m is not None and m <= 0:
        _fail(
            "finetune.head_lr_multiplier must be > 0 (or null).",
            **{"finetune.head_lr_multiplier": m},
        )
    _check_schedule(cfg.schedule)
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
    for name, overrides in active_variants(cfg).items():
        for key, value in variant_items(name, overrides):
            if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
                _fail(
                    f"variant {name!r} overrides a key that does not exist; "
                    "use a dotted path of the composed config.",
                    **{f"variants.{name}.{key}": value},
                )
    return warnings


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


def active_variants(cfg):
    """`cfg.variants` without the ones set to null.

    A variant set to null is dropped, so that a derived experiment (e.g.
    `bn_inception_long`) can leave out some of its parent's variants in its
    own YAML rather than in a `~variants.x` command-line override.
    """
    return {
        name: overrides
        for name, overrides in (cfg.variants or {}).items()
        if overrides is not None
    }


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


# Keys the engine reads from `optimizer` besides the target's arguments.
_ENGINE_OPTIMIZER_KEYS = ("weight_decay_style",)
_WEIGHT_DECAY_STYLES = ("l2", "decoupled")


def _check_arguments(group, node, engine_keys=()):
    """Every key of a `_target_` node is an argument of its target."""
    if not _is_target_node(node):
        _fail(
            f"`{group}` needs a `_target_`; pick a config with "
            f"{group}=<name> (see conf/{group}/).",
            **{group: node},
        )
    try:
        target = _locate(node._target_)
    except ImportError as e:
        _fail(
            f"{group}._target_ cannot be imported ({e}).",
            **{f"{group}._target_": node._target_},
        )
    names = _argument_names(target)
    for key in node:
        if key.startswith("_") or key in engine_keys or names is None:
            continue
        if key in names:
            continue
        _fail(
            f"{group}.{key} is not an argument of {node._target_}; remove it.",
            **{f"{group}.{key}": node[key]},
        )


def _argument_names(target):
    """Named arguments of a function or class (None: it takes any keyword).

    A class's `**kwargs` are followed up its bases (Keras optimizers pass
    them on to `BaseOptimizer`, which accepts only its named ones).
    """
    if not inspect.isclass(target):
        params = inspect.signature(target).parameters.values()
        if any(p.kind == p.VAR_KEYWORD for p in params):
            return None
        return {p.name for p in params}
    names = set()
    for cls in target.__mro__:
        if "__init__" not in vars(cls) or cls is object:
            continue
        params = inspect.signature(cls.__init__).parameters.values()
        names |= {p.name for p in params if p.kind != p.VAR_KEYWORD}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def _number(group, key, value, low, strict):
    bad = not isinstance(value, (int, float)) or isinstance(value, bool)
    if bad or (value <= low if strict else value < low):
        rule = f"> {low}" if strict else f">= {low}"
        _fail(
            f"{group}.{key} must be a number {rule}.",
            **{f"{group}.{key}": value},
        )


def _check_optimizer(o):
    _check_arguments("optimizer", o, _ENGINE_OPTIMIZER_KEYS)
    _number("optimizer", "learning_rate", o.get("learning_rate"), 0, True)
    _number("optimizer", "weight_decay", o.get("weight_decay", 0.0), 0, False)
    style = o.get("weight_decay_style", "l2")
    if style not in _WEIGHT_DECAY_STYLES:
        _fail(
            f"optimizer.weight_decay_style must be one of "
            f"{_WEIGHT_DECAY_STYLES}.",
            **{"optimizer.weight_decay_style": style},
        )


def _check_schedule(s):
    if "_target_" not in s:  # constant learning rate
        if len(s):
            _fail(
                "a schedule without `_target_` (constant) takes no keys; "
                "pick one with schedule=<name> (see conf/schedule/).",
                schedule=OmegaConf.to_container(s),
            )
        return
    _check_arguments("schedule", s)
    if "boundaries" in s and list(s.boundaries) != sorted(set(s.boundaries)):
        _fail(
            "schedule.boundaries must be strictly increasing steps.",
            **{"schedule.boundaries": list(s.boundaries)},
        )
    if "decay_steps" in s and s.decay_steps <= 0:
        _fail(
            "schedule.decay_steps must be > 0.",
            **{"schedule.decay_steps": s.decay_steps},
        )
