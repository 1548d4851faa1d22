"""A sweep directory's saved config (Hydra's ``multirun.yaml``) and the command that finishes the sweep that
stopped there (``resume_sweep=true``, :mod:`genbench.sweeps`): for the jobs, which name it when interrupted,
and for the matrix, which names it when a job did not succeed."""

import shlex
from pathlib import Path

import yaml

from genbench.files import read_regular_file

RESUME_KEY = "resume_sweep"
MULTIRUN_FILE = "multirun.yaml"  # Hydra's record of a sweep's config, in its directory
MAX_MULTIRUN_BYTES = 1 << 20
ATTEMPT_PREFIX = "attempt_"  # <job>/attempt_<k>/: an earlier attempt of a resumed sweep's job
EARLIER_RECORD = "metrics.earlier.json"  # that attempt's record: kept, no longer counted as a run's


def without_resume(overrides: list[str]) -> list[str]:
    """A sweep's overrides less ``resume_sweep``: what numbers its jobs."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != RESUME_KEY]


def saved_hydra_config(sweep_dir: Path) -> dict:
    """The ``hydra`` part of the config Hydra saved for the sweep that ran in ``sweep_dir``; {} where there
    is none to read."""
    try:
        saved = yaml.safe_load(read_regular_file(sweep_dir / MULTIRUN_FILE, MAX_MULTIRUN_BYTES))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    hydra = saved.get("hydra") if isinstance(saved, dict) else None
    return hydra if isinstance(hydra, dict) else {}


def saved_task_overrides(hydra: dict) -> list[str] | None:
    """A saved sweep's own overrides less ``resume_sweep``, those that number its jobs (``hydra``: from
    :func:`saved_hydra_config`); None where it holds none."""
    task = (hydra.get("overrides") or {}).get("task")
    return None if task is None else without_resume(list(task))


def saved_script(hydra: dict) -> str | None:
    """The script a saved sweep ran (``train.py``, ``eval.py``): Hydra names a job after its script
    (``hydra``: from :func:`saved_hydra_config`); None where it holds no job name."""
    name = (hydra.get("job") or {}).get("name")
    return f"{name}.py" if name else None


def resume_command(sweep_dir: Path) -> str | None:
    """The command that finishes the sweep in ``sweep_dir``: its script (``eval.py`` for a sweep of
    evaluations, which ``train.py`` would have trained) and its launcher (None where it holds no sweep's
    config)."""
    hydra = saved_hydra_config(sweep_dir)
    task = saved_task_overrides(hydra)
    if task is None:
        return None
    launcher = [o for o in (hydra.get("overrides") or {}).get("hydra") or []
                if o.split("=", 1)[0] not in ("hydra.sweep.dir", "hydra.mode")]
    return shlex.join(["python", saved_script(hydra) or "train.py", "-m", *launcher, *task,
                       f"hydra.sweep.dir={sweep_dir}", f"{RESUME_KEY}=true"])
