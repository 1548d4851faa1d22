"""The run's config as a whole: the top-level options, the groups, and :func:`validate`, the one check a
composed config goes through before anything is built (each group against its own schema, see
:mod:`genbench.schema`)."""

import difflib
import inspect
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from genbench.errors import ConfigError
from genbench.evaluation.stage import EvalConfig
from genbench.performance import PerformanceConfig
from genbench.results import under
from genbench.schema import ABSENT, Schema, check_params, check_top_level, param, validate_group


@dataclass
class RunSchema(Schema):
    """Top-level options of one run (the groups are checked by their own schemas)."""

    seed: int = param(0, ge=0)
    train: bool = True
    evaluate: bool = True
    ckpt_path: str | None = None
    task_name: str = "train"
    tags: list[str] = param([])
    torch_threads: int | None = param(None, ge=1)  # intra-op threads per run; 1 for parallel sweep jobs
    optimized_metric: str | None = None  # what train.py returns to a sweeper such as Optuna
    # Per-family training budgets (family -> optimizer steps) that replace trainer.max_steps for that family:
    # a landscape gives each family the budget at which its quality curve has flattened (genbench.train)
    budget_steps: dict[str, int] | None = None
    # With -m and a stopped sweep's hydra.sweep.dir: finish that sweep (genbench.sweeps)
    resume_sweep: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = {family: steps for family, steps in (self.budget_steps or {}).items() if steps < 1}
        if bad:
            raise ConfigError(f"budget_steps {bad}: a family's budget is a number of optimizer steps >= 1")
        if not self.train and not self.ckpt_path:
            raise ConfigError("train=false evaluates a trained model: give it ckpt_path=<a checkpoint> "
                              "(without one the model would be untrained)")
        if self.ckpt_path and not Path(self.ckpt_path).is_file():
            what = "a folder, not a file" if Path(self.ckpt_path).is_dir() else "no such file"
            raise ConfigError(f"ckpt_path={self.ckpt_path}: {what}; give a run's checkpoint (its "
                              "metrics.json names it under checkpoint: <run>/checkpoints/last.ckpt)")


PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed")  # bf16-true and 16-true fail at the first step

GROUPS = ("dataset", "model", "trainer", "logger", "callbacks", "eval", "paths", "hydra", "experiment",
          "hparams_search", "extras", "debug", "performance")


@dataclass
class ExtrasSchema(Schema):
    """``extras``: what a run does around its work (see :mod:`genbench.extras`)."""

    print_config: bool = True
    ignore_warnings: bool = False


PRESETS = ("experiment", "hparams_search", "debug")  # groups whose files set keys of other groups


def validate(cfg: DictConfig) -> dict[str, Schema | None]:
    """Validate a composed run config before anything is built; returns the checked schemas by group.

    Raises :class:`ConfigError` naming the offending key and, where the command line did not set it, the
    preset that did.
    """
    try:
        return _validate(cfg)
    except ConfigError as e:
        origin = preset_setting(e.key) if hasattr(e, "key") else ""
        if origin:
            raise ConfigError(f"{e} {origin}") from None
        raise


def refuse_chdir() -> None:
    """``hydra.job.chdir=true`` starts the job inside its new run directory, where the relative paths a run
    reads (``paths.root_dir`` is ``.``: the data, feature nets and cache under it; a relative ``ckpt_path``
    or ``dataset.root``) hold nothing: a run read no data and no feature net, and its hints named paths in
    the run directory. Every file of a run is written there by its absolute path already, so the option adds
    nothing; it is refused, before anything is read."""
    if HydraConfig.initialized() and HydraConfig.get().job.get("chdir"):
        raise ConfigError("hydra.job.chdir=true is not supported: the run would start inside its run "
                          "directory, and the relative paths it reads and writes (paths.root_dir=.: data/, "
                          "feature_nets/, cache/; any other relative path it is given) would point in there. "
                          "Every file of the run goes into that directory already: leave hydra.job.chdir out")


def preset_setting(key: str) -> str:
    """Where a key the user did not type comes from: the preset (``experiment=vae_mnist_test_files``) whose
    file sets it and, where that preset chooses another model than the run's, which. "Fix the spelling"
    of a key the command line never gave read as a puzzle (``experiment=vae_mnist_test_files model=flow``:
    the preset's ``model.latent_dim``). Empty outside a Hydra run and for a key on the command line."""
    if not HydraConfig.initialized() or key in command_line_keys():
        return ""
    for preset in _presets():
        if OmegaConf.select(preset.content, key, default=ABSENT) is ABSENT:
            continue
        origin = f"({key} is not on the command line: {preset.name} sets it"
        chosen = preset.chosen_model
        if preset.model not in (None, chosen):
            origin += (f", a preset for model={preset.model}, not model={chosen}: run the preset with its "
                       f"own model, or leave {preset.group}= out and give the settings of {preset.path} that "
                       f"{chosen} takes on the command line")
        return origin + ")"
    return ""


def presets_for_other_models() -> str:
    """A warning naming the model options a preset for another model sets on this run's model, which takes
    them silently where it has them, unless they are its own defaults; empty where there are none, and
    outside a Hydra run."""
    if not HydraConfig.initialized():
        return ""
    typed = command_line_keys()
    for preset in _presets():
        if preset.model in (None, preset.chosen_model):
            continue
        own_file = _config_file("model", preset.chosen_model)
        own = OmegaConf.load(own_file) if own_file else OmegaConf.create({})
        options = {f"model.{k}": v for k, v in (preset.content.get("model") or {}).items()
                   if not any(under(t, (f"model.{k}",)) for t in typed)
                   and OmegaConf.select(own, k, default=ABSENT) != v}
        if options:
            listed = ", ".join(f"{k}={OmegaConf.to_container(v) if isinstance(v, DictConfig) else v}"
                               for k, v in options.items())
            chosen = preset.chosen_model
            return (f"{preset.name} is a preset for model={preset.model}; this run's model={chosen} takes "
                    f"its model options {listed}, not {chosen}'s own defaults (leave {preset.group}= out "
                    "for those)")
    return ""


@dataclass
class _Preset:
    group: str
    choice: str
    path: Path
    content: DictConfig
    model: str | None  # the model the preset chooses (``override /model``), if any
    chosen_model: str | None  # the run's

    @property
    def name(self) -> str:
        return f"{self.group}={self.choice}"


def command_line_keys() -> set[str]:
    """The keys the run's command line sets (inside a Hydra run)."""
    return {override.lstrip("+~").split("=", 1)[0] for override in HydraConfig.get().overrides.task}


def _config_file(group: str, choice: str | None) -> Path | None:
    """The file Hydra read for ``group=choice``: the first of its search path's folders that holds it."""
    roots = [Path(source.path.removeprefix("file://")) for source in HydraConfig.get().runtime.config_sources
             if source.schema == "file"]
    return next((f for root in roots if choice and (f := root / group / f"{choice}.yaml").is_file()), None)


def _presets() -> list[_Preset]:
    """The run's chosen presets (``experiment``, ``hparams_search``, ``debug``) as their files read."""
    choices = HydraConfig.get().runtime.choices
    found = []
    for group in PRESETS:
        path = _config_file(group, choices.get(group))
        if path is None:
            continue
        content = OmegaConf.load(path)
        models = [d["override /model"] for d in content.get("defaults") or []
                  if isinstance(d, DictConfig) and "override /model" in d]
        found.append(_Preset(group, choices[group], path, content, models[0] if models else None,
                             choices.get("model")))
    return found


def _validate(cfg: DictConfig) -> dict[str, Schema | None]:
    refuse_chdir()
    checked: dict[str, Schema | None] = {"run": check_top_level(cfg, RunSchema, GROUPS)}
    for group in ("dataset", "model"):
        if group not in cfg:
            raise ConfigError(f"config has no '{group}' group; pick one with {group}=<name>.")
        checked[group] = validate_group(cfg[group], group)
    checked["performance"] = check_params(PerformanceConfig,
                                          OmegaConf.to_container(cfg.get("performance") or {}), "performance")
    checked["extras"] = check_params(ExtrasSchema, OmegaConf.to_container(cfg.get("extras") or {}), "extras")
    checked["eval"] = check_params(EvalConfig, OmegaConf.to_container(cfg.eval, resolve=True), "eval")
    _check_targets(cfg)
    _check_manual_optimization(cfg)
    return checked


def _check_manual_optimization(cfg: DictConfig) -> None:
    """A family that steps its own optimizers (a GAN) takes none of Lightning's gradient clipping or
    accumulation, which Lightning refused only once the run had started, with a traceback."""
    model = hydra.utils.get_class(cfg.model._target_)  # validate_group imported it
    if not getattr(model, "steps_own_optimizers", False) or "trainer" not in cfg:
        return
    neutral = {"gradient_clip_val": ((None, 0), "null"), "accumulate_grad_batches": ((None, 1), "1")}
    for key, (values, off) in neutral.items():
        value = cfg.trainer.get(key)
        if value not in values:
            raise ConfigError(f"trainer.{key}={value}: model={model.family} steps its own optimizers in each "
                              f"training step (Lightning's manual optimization), to which Lightning does not "
                              f"apply trainer.{key}: leave it out (trainer.{key}={off}) for {model.family}")


def _check_targets(cfg: DictConfig) -> None:
    """The trainer, callbacks and loggers are Lightning's or genbench's classes built by Hydra: a key their
    class does not take is named here, with the nearest valid one, before anything is built; a budget of
    0 steps (an untrained model recorded as ok) is refused."""
    nodes = [("trainer", cfg.get("trainer"))]
    for group in ("callbacks", "logger"):
        nodes += [(f"{group}.{name}", node) for name, node in (cfg.get(group) or {}).items()]
    for name, node in nodes:
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        try:
            target = hydra.utils.get_object(node._target_)
        except Exception as e:  # Hydra's own message names the module or class it could not find
            raise ConfigError(f"{name}._target_={node._target_} cannot be found: {e}") from None
        parameters = inspect.signature(target).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            continue  # takes any keyword: its own checks apply
        for key in node:
            if not key.startswith("_") and key not in parameters:
                near = difflib.get_close_matches(key, list(parameters), n=1)
                hint = f"did you mean {name}.{near[0]}? " if near else ""
                raise ConfigError(f"unknown config key '{name}.{key}': {node._target_} takes no {key}; "
                                  f"{hint}valid keys are: {', '.join(p for p in parameters if p != 'self')}")
    precision = str(cfg.trainer.get("precision", "32-true")) if "trainer" in cfg else "32-true"
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision}: genbench's data and models are float32, trained "
                          f"in full or mixed precision; use one of {', '.join(PRECISIONS)}")
    steps = cfg.trainer.get("max_steps", -1) if "trainer" in cfg else -1
    if type(steps) is not int or (steps < 1 and steps != -1):
        raise ConfigError(f"trainer.max_steps={steps!r}: a number of optimizer steps >= 1 (or -1: until "
                          "trainer.max_epochs)")
    epochs = cfg.trainer.get("max_epochs") if "trainer" in cfg else None
    if epochs is not None and (type(epochs) is not int or (epochs < 1 and epochs != -1)):
        raise ConfigError(f"trainer.max_epochs={epochs!r}: a number of epochs >= 1 (or null or -1: bounded "
                          "by trainer.max_steps alone)")
