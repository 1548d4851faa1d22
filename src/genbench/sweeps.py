"""Sweep directories: a run or sweep never writes over another's records, and a sweep that stopped (Ctrl-C,
a killed process, a cluster's time limit, a job that failed on its data) can be finished in its own
directory with ``resume_sweep=true`` instead of run again from nothing.

Finishing a sweep: ``python train.py -m <the same overrides> hydra.sweep.dir=<its directory>
resume_sweep=true``. Hydra numbers the jobs as before; each job then looks at what its directory holds
(:func:`settle_earlier_attempt`). A record that is an outcome of the family (``ok``, ``diverged``, a crash
in training: what the matrix measures) is kept and the job does not run. Anything else (an interrupt, a
failure of the setup, of the evaluation or of a dead worker, a job killed before it wrote a record, a record
of another config) is moved into ``<job>/attempt_<k>/`` (its record renamed :data:`EARLIER_RECORD`, so no
reader of ``metrics.json`` counts it twice) and the job runs again: from that attempt's last checkpoint
where it left one under the same config (bit-exact on one process, :mod:`genbench.train`), else from the
start. The matrix is then written over every job, as at the end of any sweep.
"""

import importlib.machinery
import logging
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from genbench.config import RunSchema
from genbench.errors import ConfigError, refuse
from genbench.matrix.rules import NOT_SETUP
from genbench.matrix.runs import run_of
from genbench.results import dotted, read_record, taken_message, under
from genbench.runmode import is_multirun, kept_environment
from genbench.schema import typed_option
from genbench.sweep_config import (
    ATTEMPT_PREFIX,
    EARLIER_RECORD,
    MULTIRUN_FILE,
    RESUME_KEY,
    saved_hydra_config,
    saved_script,
    saved_task_overrides,
    without_resume,
)

log = logging.getLogger(__name__)
# What Lightning's launcher of DDP processes sets in its own process's environment
LAUNCHER_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
ENTRY_VARIABLE = "GENBENCH_SWEEP_ENTRY"  # how the sweep's process was started, for its jobs' DDP processes


class KeepSweepEntry(Callback):
    """Hydra callback: keep how the sweep's process was started (``train.py``'s path, or ``-m`` and a
    module) in the environment its jobs inherit. A launcher may run a job in a process of its own (a joblib
    worker, a submitit job) whose command line is the launcher's: Lightning started a DDP job's other
    processes with it (``python -m loky.backend.popen_loky_posix <the job's overrides>``, which stopped at
    its arguments), and the job failed after the rendezvous' wait (:func:`ddp_processes_run_this_job`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[ENTRY_VARIABLE] = shlex.join(_this_process_entry())


def _this_process_entry() -> list[str]:
    """This process's start as Lightning's launcher reads it: ``-m`` and ``__main__``'s module, else the
    script ``sys.argv[0]``."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    return ["-m", spec.name] if spec is not None else [os.path.abspath(sys.argv[0])]


class RefuseDirsWithRecords(Callback):
    """Hydra callback: refuse a run or sweep directory that holds a record before Hydra writes its
    ``.hydra/`` files there (they would describe this run beside another run's record) and before any job
    starts (a sweep run again into its directory had each job refused, then a matrix of the old records,
    and exit 0); with ``resume_sweep=true``, accept the directory of the same sweep only."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _resume_asked(config):
            refuse(f"{RESUME_KEY}=true finishes a sweep that stopped: run it as that sweep ran (-m and its "
                   "overrides) with hydra.sweep.dir=<its directory>; a single run resumes with "
                   "ckpt_path=<run>/checkpoints/last.ckpt")
        run_dir = Path(config.hydra.run.dir)
        if (run_dir / "metrics.json").exists():
            refuse(taken_message(run_dir, "run", "hydra.run.dir"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if _resume_asked(config):
            if problem := _not_the_same_sweep(config, sweep_dir):
                refuse(problem)
            log.info("finishing the sweep in %s: jobs that ended ok, diverged or crashed in training keep "
                     "their records; the others run again (from their last checkpoint where they left one)",
                     sweep_dir)
        elif sweep_dir.is_dir() and next(sweep_dir.rglob("metrics.json"), None) is not None:
            refuse(taken_message(sweep_dir, "sweep", "hydra.sweep.dir")
                   + f"; or, to finish that sweep, run it again with {RESUME_KEY}=true")


def _resume_asked(config: DictConfig) -> bool:
    """``resume_sweep`` as the run's schema reads it. Any other value is refused here, before any job:
    ``resume_sweep=abc`` had been read as true, and a sweep's earlier attempts moved aside for it."""
    try:
        return typed_option(RunSchema, config, RESUME_KEY)
    except ConfigError as e:
        refuse(str(e))


def _not_the_same_sweep(config: DictConfig, sweep_dir: Path) -> str | None:
    """Why ``sweep_dir`` cannot be finished by this sweep, or None: it must hold a sweep's config of the same
    script (``train.py`` would train the jobs of an ``eval.py`` sweep) with the same overrides and sweeper
    parameters, which number the jobs (the launcher may differ)."""
    saved = saved_hydra_config(sweep_dir)
    if not saved:
        return (f"{RESUME_KEY}=true: {sweep_dir} holds no sweep to finish (no readable {MULTIRUN_FILE}, "
                "which Hydra's basic sweeper writes as a sweep starts); give hydra.sweep.dir=<the directory "
                "of the sweep that stopped>")
    script_then, name_now = saved_script(saved), OmegaConf.select(config, "hydra.job.name")
    if script_then and name_now and script_then != f"{name_now}.py":
        return (f"{RESUME_KEY}=true: the sweep in {sweep_dir} ran {script_then}, this one is {name_now}.py; "
                f"finish it with {script_then} and the same overrides")
    then = saved_task_overrides(saved) or []
    now = without_resume(OmegaConf.to_container(config.hydra.overrides.task))
    if _what_the_jobs_are(then) != _what_the_jobs_are(now):
        return (f"{RESUME_KEY}=true: the sweep in {sweep_dir} ran with the overrides {shlex.join(then)!r}, "
                f"this one has {shlex.join(now)!r}; finish it with the same overrides (they number its "
                f"jobs and say what each measures; one value of an option that changes no measurement, "
                f"such as dataset.num_workers or logger, may differ), or give this sweep a directory of "
                "its own")
    params_then = (saved.get("sweeper") or {}).get("params")
    params_now = OmegaConf.to_container(config.hydra.sweeper).get("params")
    if params_then != params_now:
        return (f"{RESUME_KEY}=true: the sweep in {sweep_dir} swept hydra.sweeper.params={params_then}, this "
                f"one {params_now} (an experiment preset changed?); finish it with the same parameters, or "
                "give this sweep a directory of its own")
    return None


FREE_ON_RESUME = tuple(k for k in NOT_SETUP if k not in ("seed", "ckpt_path"))  # a job measures the same


def _what_the_jobs_are(overrides: list[str]) -> list[str]:
    """``overrides`` less those a finishing sweep may change: one value (not a sweep) of an option that
    changes no measurement (``dataset.num_workers=0`` after a loader process was killed, ``logger=none``).
    The seed is not among them: it is what a job trains."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [text for text, override in zip(overrides, parsed, strict=True)
            if override.is_sweep_override() or not under(override.key_or_group, FREE_ON_RESUME)]


@contextmanager
def ddp_processes_run_this_job(cfg: DictConfig) -> Iterator[None]:
    """In a sweep's job, have the DDP processes Lightning starts run this job, and leave none of its DDP
    state to the sweep's next job in this process.

    Lightning starts each process with this process's command line (the sweep's: ``-m`` and its lists)
    plus ``hydra.run.dir=<hydra.run.dir>`` (the pattern of a single run's directory), so every process ran
    the whole sweep, each job's DDP group joined by processes of other jobs. Here the command line is this
    job's own overrides as a single run (with the checkpoint a resumed sweep's job goes on from, which no
    override names) and ``hydra.run.dir`` this job's directory. After the job, the command line, the
    environment Lightning's launcher set (``LOCAL_RANK`` in it made the next job wait for processes nobody
    started) and the process group (the next job would have reused the last's, whose other processes are
    gone) are as before it. The processes start as the sweep's process did (:class:`KeepSweepEntry`), also
    where the job runs in a launcher's process."""
    if not is_multirun():
        yield
        return
    hydra_cfg = HydraConfig.get()
    job = without_resume(list(hydra_cfg.overrides.task))  # resume_sweep belongs to the sweep
    resumed = [f'ckpt_path="{cfg.ckpt_path}"'] if cfg.get("ckpt_path") else []
    entry = shlex.split(os.environ.get(ENTRY_VARIABLE, "")) or _this_process_entry()
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        with kept_environment(*LAUNCHER_ENVIRONMENT), _started_as(entry, [*job, *resumed, "hydra.mode=RUN"]):
            yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@contextmanager
def _started_as(entry: list[str], args: list[str]) -> Iterator[None]:
    """Inside the block this process reads as started by ``python <entry> <args>`` to Lightning's launcher,
    which starts the other DDP processes with ``sys.argv[1:]`` after ``-m <__main__.__spec__.name>``, or
    after the script ``sys.argv[0]`` where there is no spec. ``__main__``'s spec changes only where
    ``entry`` is not this process's own (a launcher's worker); both are put back after."""
    import __main__

    argv, spec = sys.argv, getattr(__main__, "__spec__", None)
    if entry != _this_process_entry():
        __main__.__spec__ = importlib.machinery.ModuleSpec(entry[1], None) if entry[0] == "-m" else None
    sys.argv = [argv[0] if entry[0] == "-m" else entry[0], *args]
    try:
        yield
    finally:
        sys.argv, __main__.__spec__ = argv, spec


def resuming_sweep(cfg: DictConfig) -> bool:
    return typed_option(RunSchema, cfg, RESUME_KEY) and is_multirun()


def _this_attempts_files() -> set[str]:
    """What Hydra writes into a job's directory before the job runs: its config and its log."""
    hydra_cfg = HydraConfig.get()
    return {str(hydra_cfg.output_subdir or ".hydra"), f"{hydra_cfg.job.name}.log"}


def _setup(config: Any) -> dict[str, Any]:
    """A config as dotted keys, less those that cannot change what a run measures (the matrix pools runs
    that differ there; ``resume_sweep`` among them) but with its seed."""
    return {k: v for k, v in dotted(config).items() if k == "seed" or not under(k, NOT_SETUP)}


def settle_earlier_attempt(cfg: DictConfig, out_dir: Path, config_as_it_runs: dict) -> dict | None:
    """A job of a resumed sweep: the record to keep from the sweep's earlier attempt (the job is done), or
    None once that attempt's files (if any) are in ``attempt_<k>/`` and ``cfg.ckpt_path`` names its last
    checkpoint where the job can go on from it. ``config_as_it_runs``: ``cfg`` with its family's budget
    applied, as records hold it."""
    left = sorted(p for p in out_dir.iterdir()
                  if p.name not in _this_attempts_files() and not p.name.startswith(ATTEMPT_PREFIX))
    if not left:
        return None
    job = out_dir.name
    why, resumable, earlier = "it left no metrics.json (killed?)", True, None
    if (out_dir / "metrics.json").exists():
        try:
            record = read_record(out_dir / "metrics.json")
        except (OSError, ValueError) as e:
            why = f"its metrics.json is unusable ({e})"
        else:
            run, earlier = run_of(record, out_dir), record.get("checkpoint")
            then, now = _setup(run.config), _setup(config_as_it_runs)
            differ = sorted(k for k in then.keys() | now.keys() if then.get(k) != now.get(k))
            if differ:
                resumable = False  # its checkpoint trained another config
                why = f"its record is of another config (differing in {', '.join(differ[:5])})"
            elif run.is_outcome:
                log.info("job %s: kept the record of the sweep's earlier attempt (%s)", job, run.status)
                return record
            else:
                where = run.provenance.get("failed_in")
                why = f"it ended {run.status}" + (f" in {where}" if run.status == "failed" and where else "")
    attempt = _move_aside(out_dir, left)
    checkpoint = attempt / "checkpoints" / "last.ckpt"
    if not checkpoint.is_file() and isinstance(earlier, str):  # it went on from an earlier attempt's, and
        checkpoint = Path(earlier)                             # was stopped before it wrote one of its own
    if resumable and checkpoint.is_file():
        cfg.ckpt_path = str(checkpoint)
        log.info("job %s: %s; moved to %s, going on from its checkpoint %s", job, why, attempt, checkpoint)
    else:
        log.info("job %s: %s; moved to %s, running it again from the start", job, why, attempt)
    return None


def _move_aside(out_dir: Path, files: list[Path]) -> Path:
    """Move an earlier attempt's ``files`` into the job's next ``attempt_<k>/``, its record renamed."""
    k = 1 + sum(1 for p in out_dir.glob(f"{ATTEMPT_PREFIX}*") if p.is_dir())
    attempt = out_dir / f"{ATTEMPT_PREFIX}{k}"
    attempt.mkdir()
    for path in files:
        path.rename(attempt / (EARLIER_RECORD if path.name == "metrics.json" else path.name))
    return attempt
