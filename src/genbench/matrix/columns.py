"""The matrix's columns: a family's runs are pooled only when they ran the same config.

Seeds of one setup belong together; a 200-step debug run does not belong with 2,000-step runs. Each run's
config (``provenance.config`` of its record) less the keys that cannot change what is measured (the seed,
output paths, loggers, callbacks, progress bars) is its setup; a family with several setups gets one
column per setup, named by the keys that differ, and a warning says so.
"""

import json
import re
from dataclasses import dataclass, field

from genbench.matrix.rules import FOUNDING_FAMILIES, NOT_SETUP
from genbench.matrix.runs import Run
from genbench.nfe_record import Curve
from genbench.results import dotted, under

NAMED_DIFFERENCES = 3  # keys named in a column's title; the warning names them all
BUDGET = ("trainer.max_steps", "trainer.max_epochs", "trainer.max_time", "trainer.min_steps",
          "trainer.min_epochs", "budget_steps")  # how long a run trains
# what else can end training before trainer.max_steps
TRAINING_LIMITS = ("trainer.max_epochs", "trainer.max_time", "trainer.fast_dev_run",
                   "trainer.limit_train_batches", "trainer.overfit_batches")


@dataclass
class Column:
    name: str  # the family, or "family [key=value, ...]" when the family ran under several configs
    family: str
    runs: list[Run] = field(default_factory=list)
    setup: dict[str, str] = field(default_factory=dict)  # dotted config key -> JSON value

    @property
    def evaluated_only(self) -> bool:
        """Records of eval.py (``train=false``): checkpoints evaluated, not trained by these runs."""
        return self.setup.get("train") == "false"

    @property
    def ok(self) -> list[Run]:
        return [r for r in self.runs if r.ok]

    def nfe_curve(self) -> Curve | None:
        """The quality-against-NFE curve of the column's lowest seed that has one."""
        return next((c for r in sorted(self.ok, key=lambda r: r.seed) if (c := r.nfe_curve()) is not None),
                    None)


def setup_of(run: Run) -> dict[str, str]:
    """The run's config as dotted keys, less the ones that cannot change its measurements. A record of
    eval.py (``train=false``) trained nothing: its trainer's budget is the evaluation command's (2000 steps
    by default), and the steps its checkpoint trained (``train_steps``) stand for ``trainer.max_steps``, so
    checkpoints of different lengths are not pooled as seeds, nor titled with a budget they never had."""
    setup = {k: json.dumps(v, sort_keys=True, default=str) for k, v in dotted(run.config).items()
             if not under(k, NOT_SETUP)}
    if setup.get("train") == "false":  # its budget keys stay, as null: a training run's are mostly null too
        setup = {k: "null" if under(k, BUDGET) else v for k, v in setup.items()}
        steps = run.metrics.get("train_steps")
        setup["trainer.max_steps"] = json.dumps(int(steps) if isinstance(steps, (int, float)) else None)
    return setup


def family_key(family: str) -> tuple[int, str]:
    """The founding comparison's families first, in its order, then the others by name (rules, Columns)."""
    order = list(FOUNDING_FAMILIES.values())
    return (order.index(family) if family in order else len(order), family)


def build_columns(runs: list[Run]) -> tuple[list[Column], list[str]]:
    """Columns in family order (unknown families last), and a warning per family split by config."""
    columns: list[Column] = []
    warnings: list[str] = []
    for family in sorted({r.family for r in runs}, key=family_key):
        setups: dict[str, Column] = {}
        for run in (r for r in runs if r.family == family):
            setup = setup_of(run)
            key = json.dumps(setup, sort_keys=True)
            setups.setdefault(key, Column(family, family, setup=setup)).runs.append(run)
        numbered = False
        if len(setups) > 1:
            differ = _differing_keys([c.setup for c in setups.values()])
            more = ", ..." if len(differ) > NAMED_DIFFERENCES else ""
            names = [", ".join(f"{k}={shown(c.setup.get(k))}" for k in differ[:NAMED_DIFFERENCES])
                     for c in setups.values()]
            numbered = bool(more) or len(set(names)) < len(names)  # 200 and "200", or 0.12341 and 0.12344
            for column, named in zip(setups.values(), names, strict=True):
                column.name = f"{family} [{named}{more}]"
            warnings.append(f"{family}: runs under {len(setups)} different configs are not pooled; each has "
                            f"its own column (they differ in {', '.join(differ)})")
        ordered = sorted(setups.values(), key=lambda c: _natural(c.name))
        if numbered:
            for i, column in enumerate(ordered):
                column.name += f" #{i + 1}"
        columns += ordered
    return columns, warnings


def _differing_keys(setups: list[dict[str, str]]) -> list[str]:
    keys = sorted({k for s in setups for k in s})
    return [k for k in keys if len({s.get(k) for s in setups}) > 1]


NUMBER = re.compile(r"(\d+(?:\.\d+)?(?:e[+-]?\d+)?)")


def _natural(name: str) -> list:
    """Sort key that puts max_steps=200 before max_steps=2000, and lr=0.002837 before lr=0.01 and 1e-05
    before both."""
    return [(0, float(part), "") if NUMBER.fullmatch(part) else (1, 0.0, part) for part in NUMBER.split(name)]


def shown(value: str | None) -> str:
    """A config value as a person writes it on the command line: 200, debug, [1, 2]; unset when absent; a
    float at 4 significant digits (an Optuna trial's 0.0028369961259166574 reads 0.002837)."""
    if value is None:
        return "unset"
    decoded = json.loads(value)
    if isinstance(decoded, float):
        return f"{decoded:.4g}"
    return decoded if isinstance(decoded, str) else value
