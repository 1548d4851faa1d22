"""Typed config schemas, the one way every option is checked.

Every configurable class (a model family, a datamodule, the evaluation stage) names a dataclass in its
``config_schema`` attribute (or is one); the dataclass is the single list of its options and their bounds.
:func:`check_params` merges given values onto it, so an unknown key, a wrong type or an impossible value
stops the run with a message that names the full key (``model.latent_dim``) before anything is built.
A leaf module: it imports nothing of genbench's but the errors, so any module may use it.
"""

import copy
import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

import hydra.utils
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from genbench.errors import ConfigError

ABSENT = object()  # a key a config lacks, told apart from one set to None (OmegaConf.select's default)

_BOUNDS = {
    "ge": (lambda v, b: v >= b, "must be >= {}"),
    "gt": (lambda v, b: v > b, "must be > {}"),
    "le": (lambda v, b: v <= b, "must be <= {}"),
    "lt": (lambda v, b: v < b, "must be < {}"),
    "choices": (lambda v, b: v in b, "must be one of {}"),
}


EVALUATION = "evaluation"  # a field's metadata key: see param's ``evaluation``


def param(default: Any, *, evaluation: bool = False, **bounds: Any) -> Any:
    """A schema field whose value (or each item, for a list) is checked against ``bounds``.

    Bounds: ``ge``, ``gt``, ``le``, ``lt`` (numbers), ``choices`` (a list of allowed values), for a
    list ``length`` (its number of items), and ``check``: a function of the whole value that returns what
    is wrong with it, or None (for a node such as ``model.optimizer``). ``evaluation=True`` marks a model
    option that no training step reads, only sampling or scoring (a sampler, its steps, a likelihood's
    resolution): a trained checkpoint is evaluated under the config's value (:func:`evaluation_options`).
    """
    unknown = set(bounds) - set(_BOUNDS) - {"length", "check"}
    if unknown:
        raise TypeError(f"unknown bound(s) {sorted(unknown)}; use {sorted(_BOUNDS)}")
    metadata = {**bounds, EVALUATION: True} if evaluation else bounds
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def field_default(f: dataclasses.Field) -> Any:
    """A schema field's default value (a fresh one for a list or dict :func:`param` copies)."""
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def evaluation_options(schema: type) -> frozenset[str]:
    """The options of ``schema`` marked ``evaluation=True``: read only when sampling or scoring."""
    return frozenset(f.name for f in fields(schema) if f.metadata.get(EVALUATION))


NOT_FINITE = "must be a finite number, not NaN or inf"


def finite(value: Any) -> bool:
    """False for a float NaN or +-inf, or a list or tuple holding one; True for anything else (ints,
    strings, None)."""
    if isinstance(value, list | tuple):
        return all(finite(item) for item in value)
    return not isinstance(value, float) or math.isfinite(value)


def _problem(value: Any, bounds: dict[str, Any]) -> str | None:
    bounds = {k: v for k, v in bounds.items() if k != EVALUATION}
    length = bounds.pop("length", None)
    check = bounds.pop("check", None)
    if check is not None:
        return check(value)
    if length is not None and value is not None and len(value) != length:
        return f"must have {length} items"
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if item is None:
            continue
        if not finite(item):  # inf passes lower bounds, NaN unbounded options; no option means either
            return NOT_FINITE
        for name, bound in bounds.items():
            ok, message = _BOUNDS[name]
            if not ok(item, bound):
                return message.format(bound)
    return None


@dataclass
class Schema:
    """Base of every config schema: checks the bounds declared with :func:`param` on construction."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            problem = _problem(value, dict(f.metadata))
            if problem:
                raise key_error(f.name, f"bad config value {{key}}={value!r}: {problem}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _key(prefix: str, key: object) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def key_error(key: str, template: str) -> ConfigError:
    """A ConfigError about one key (``{key}`` in ``template``). It keeps both, so a schema nested in
    another (a toy dataset's ``params``) re-keys it on the way up and the message always names the full
    key (``dataset.params.std``)."""
    error = ConfigError(template.replace("{key}", key))
    error.key, error.template = key, template
    return error


def check_params(schema: type[Schema], params: dict[str, Any], prefix: str) -> Schema:
    """Build ``schema`` from ``params`` with OmegaConf's type checks; errors name ``prefix.key``.

    A node checked as a whole (a ``check`` bound, such as ``model.optimizer``) is taken as given, not
    merged onto the schema's default: its keys belong to the class it names, and one a user removed
    (``~model.optimizer.betas``) stays removed."""
    whole = {f.name for f in fields(schema) if "check" in f.metadata} & set(params)
    try:
        base = OmegaConf.structured(schema)
        for key in whole:
            base[key] = params[key]  # assigned, which replaces the default node: not merged onto it
        merged = OmegaConf.merge(base, {k: v for k, v in params.items() if k not in whole})
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except ConfigKeyError as e:
        valid = ", ".join(f.name for f in fields(schema))
        where = f" of {prefix}" if prefix else ""
        raise key_error(_key(prefix, e.full_key), f"unknown config key '{{key}}'. Valid keys{where} are: "
                        f"{valid}. Fix the spelling or remove it.") from None
    except OmegaConfBaseException as e:
        raise _type_error(prefix, e) from None
    except ConfigError as e:
        if hasattr(e, "key"):  # about one key of a nested schema: the same message, the full key
            raise key_error(_key(prefix, e.key), e.template) from None
        raise ConfigError(f"bad config value {_key(prefix, e)}") from None  # a schema's own check


def _type_error(prefix: str, e: OmegaConfBaseException) -> ConfigError:
    reason = e.msg.split("\n")[0]  # OmegaConf appends its own full_key (unprefixed) and object_type
    if reason.endswith("is not a ListConfig, list or tuple."):  # OmegaConf's words for a list option
        reason = f"{e.value!r} is not a list: give one in brackets ({{key}}=[...])"
    elif "is not a valid bool" in reason:
        reason = f"{e.value!r} is not a bool: give {{key}}=true or {{key}}=false"
    return key_error(_key(prefix, e.full_key), f"bad config value for '{{key}}': {reason}")


def typed_option(schema: type[Schema], cfg: DictConfig, key: str) -> Any:
    """One option of ``cfg`` converted to its type in ``schema`` (``'3'`` for an int is 3; its default where
    unset), bounds unchecked: for an option read before the whole config is checked. ConfigError as
    :func:`check_params` words it where the value cannot have that type."""
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), {key: cfg[key]} if key in cfg else {})[key]
    except OmegaConfBaseException as e:
        raise _type_error("", e) from None


def check_top_level(cfg: DictConfig, schema: type[Schema], groups: set[str] | tuple[str, ...]) -> Schema:
    """Check a composed config's top level: every key is an option of ``schema`` or one of ``groups``
    (checked on their own), and the options against ``schema``."""
    names = [f.name for f in fields(schema)]
    allowed = set(names) | set(groups)
    unknown = sorted(set(cfg.keys()) - allowed)
    if unknown:
        raise ConfigError(f"unknown top-level config key(s) {unknown}; valid ones are {sorted(allowed)}")
    top = {k: cfg[k] for k in names if k in cfg}
    return check_params(schema, OmegaConf.to_container(OmegaConf.create(top), resolve=True), "")


def validate_group(node: DictConfig, prefix: str) -> Schema | None:
    """Check one instantiable config group (``model``, ``dataset``) against its class's schema."""
    target = node.get("_target_")
    if target is None:
        raise ConfigError(f"config group '{prefix}' has no _target_; name the class it builds.")
    try:
        cls = hydra.utils.get_class(target)
    except Exception as e:  # hydra wraps import errors in its own types
        raise ConfigError(f"{prefix}._target_={target!r} cannot be imported: {e}") from None
    schema = getattr(cls, "config_schema", None)
    if schema is None:
        return None
    params = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if not k.startswith("_")}
    return check_params(schema, params, prefix)
