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


def saved_sweep_config(sweep_dir: Path) -> dict:
    """The config Hydra saved for the sweep that ran in ``sweep_dir``; {} where there is none to read."""
    try:
        saved = yaml.safe_load(read_regular_file(sweep_dir / MULTIRUN_FILE, MAX_MULTIRUN_BYTES))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return saved if isinstance(saved, dict) else {}


def resume_command(sweep_dir: Path) -> str | None:
    """The command that finishes the sweep in ``sweep_dir``, with its launcher (None where it holds no
    sweep's config)."""
    overrides = (saved_sweep_config(sweep_dir).get("hydra") or {}).get("overrides") or {}
    if overrides.get("task") is None:
        return None
    hydra = [o for o in overrides.get("hydra") or []
             if o.split("=", 1)[0] not in ("hydra.sweep.dir", "hydra.mode")]  # the launcher's, say
    return shlex.join(["python", "train.py", "-m", *hydra, *without_resume(list(overrides["task"])),
                       f"hydra.sweep.dir={sweep_dir}", f"{RESUME_KEY}=true"])
