"""A search's keys checked against the config before any trial: ``hparams_search=vae_optuna model=gan``
stopped at its first trial with Hydra's "Could not override 'model.beta'", which names neither the search
nor the model that lacks the option."""

import dataclasses
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from genbench.errors import refuse
from genbench.schema import ABSENT


class RefuseSearchesOfMissingKeys(Callback):
    """Hydra callback: refuse a sweep whose sweeper searches an option the composed config does not have,
    naming the option, the group's choice that lacks it, the preset that set the search and, for a model
    option, the families that have it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if problem := missing_searched_key(config):
            refuse(problem)


def missing_searched_key(config: DictConfig) -> str | None:
    """Why the searched keys this config lacks cannot be searched, or None: the sweeper's parameters first,
    then the command line's sweeps (``model=gan model.beta=0.5,1``). A key whose group is itself swept
    (``model: glob(*)`` beside ``model.beta``) is left to each job's own config check."""
    choices = config.hydra.runtime.choices
    params = list(OmegaConf.select(config, "hydra.sweeper.params", default=None) or {})
    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    swept_on_the_line = [o.key_or_group for o in overrides if o.is_sweep_override()
                         and not (o.is_add() or o.is_force_add() or o.is_delete())]
    swept = set(params) | set(swept_on_the_line)
    preset = next((f"{g}={choices[g]}" for g in ("hparams_search", "experiment") if choices.get(g)),
                  "hydra.sweeper.params")
    for search, keys in ((preset, params), ("the command line", swept_on_the_line)):
        missing = [key for key in keys if "." in key and not key.startswith(("+", "~"))
                   and key.split(".")[0] not in swept
                   and OmegaConf.select(config, key, default=ABSENT) is ABSENT]
        if missing:
            return _problem(search, missing, choices)
    return None


def _problem(search: str, missing: list[str], choices: DictConfig) -> str:
    groups = sorted({key.split(".")[0] for key in missing})
    lacking = " and ".join(f"{g}={choices[g]}" if choices.get(g) else f"this config's {g}" for g in groups)
    problem = f"{search} sweeps {', '.join(missing)}, which {lacking} does not have"
    having = _families_with({key.split(".")[1] for key in missing}) if groups == ["model"] else []
    if having:
        problem += (f": search a model that has {'them' if len(missing) > 1 else 'it'} ("
                    f"{', '.join(f'model={f}' for f in having)}), or options of {choices.model}'s own")
    return problem


def _families_with(options: set[str]) -> list[str]:
    from genbench.models.registry import families  # imports every model: only for a search that fails

    return [name for name, cls in families().items()
            if options <= {f.name for f in dataclasses.fields(cls.config_schema)}]
