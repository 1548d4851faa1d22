"""Finding the runs of a sweep: every ``metrics.json`` under some directories, plus its training curve.

Every record is read with :func:`genbench.results.read_record`, which checks the schema and the types of
its fields and refuses FIFOs, huge or deeply nested files. A directory that should hold a run but has no
usable record (a killed job, a corrupt or hostile file) is skipped with a warning that names it and kept
in :attr:`Found.skipped`, so the matrix names it too and one broken job never hides the rest of a sweep.
"""

import csv
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genbench.files import read_regular_file
from genbench.matrix.rules import CONFIG_ERROR
from genbench.nfe_record import Curve, read_curve
from genbench.results import CURVES_FILE, REAL_SAMPLES_PNG, read_record
from genbench.sweep_config import EARLIER_RECORD

log = logging.getLogger(__name__)
MAX_CURVE_BYTES = 64 << 20  # a CSV log of a long run is a few MB
MAX_CONFIG_BYTES = 1 << 20  # a run's composed config is a few KB


@dataclass
class Run:
    path: Path  # the run directory
    family: str
    dataset: str
    seed: int | None  # None: a failed run whose config gave no integer seed
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    capabilities: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)  # config, versions, commit, host, date
    metric_provenance: dict[str, Any] = field(default_factory=dict)  # how each group of metrics was made
    _unreadable: set[Path] = field(default_factory=set, repr=False, compare=False)  # warned about once

    @property
    def config(self) -> dict[str, Any]:
        config = self.provenance.get("config")
        return config if isinstance(config, dict) else {}

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def crashed_in_training(self) -> bool:
        """Failed while training (not on its config, not in evaluation, not by a dead worker); a record
        that does not say where it failed (written before ``failed_in``) counts as such."""
        return (self.status == "failed" and not self.config_error
                and self.provenance.get("failed_in", "training") == "training")

    @property
    def is_outcome(self) -> bool:
        """What the family did under its config: ok, diverged or crashed in training (what the matrix
        measures), not a failure of its config, data, evaluation or worker, nor an interrupt."""
        return self.ok or self.status == "diverged" or self.crashed_in_training

    @property
    def floor_has_fewer_images(self) -> bool:
        """Its held-out real images were fewer than its generated ones: a record from before the
        ``at_real_n_`` metrics compares its floor with values at another sample size."""
        groups = {name: g for name, g in self.metric_provenance.items() if isinstance(g, dict)}
        held_out = groups.get("real_data", {}).get("n_real_held_out")
        generated = [g["n_generated"] for g in groups.values() if type(g.get("n_generated")) is int]
        return type(held_out) is int and bool(generated) and held_out < max(generated)

    @property
    def config_error(self) -> bool:
        """Failed on its config before training: an error of the setup, not of the family."""
        return self.status == "failed" and (self.error or "").startswith(CONFIG_ERROR)

    def nfe_curve(self) -> Curve | None:
        """The run's quality-against-NFE curve (scripts/nfe_sweep.py), None where there is none or it is
        unreadable (warned about, as a bad record is)."""
        try:
            return read_curve(self.path)
        except ValueError as e:
            log.warning("%s", e)
            return None

    def _csv_rows(self, path: Path) -> list[dict[str, str]]:
        """The rows of a CSV file of this run; an unreadable file gives none, with one warning however often
        the matrix reads it (a curve's metric, then its floor)."""
        if not path.is_file():
            return []
        try:
            return list(csv.DictReader(io.StringIO(read_regular_file(path, MAX_CURVE_BYTES).decode())))
        except (OSError, ValueError, csv.Error) as e:  # UnicodeDecodeError is a ValueError
            if path not in self._unreadable:
                self._unreadable.add(path)
                log.warning("ignoring %s: %s", path, e)
            return []

    def quality_curve(self, metric: str) -> list[tuple[int, float, float]]:
        """(step, train_flops, value of ``metric``) from ``curves.csv`` (a resumed run's holds its
        checkpoint's points too); rows that do not parse are skipped."""
        curve = []
        for row in self._csv_rows(self.path / CURVES_FILE):
            try:
                point = (int(row["step"]), float(row["train_flops"]), float(row[metric]))
            except (KeyError, TypeError, ValueError):
                continue
            if all(math.isfinite(v) for v in point[1:]):
                curve.append(point)
        return curve

    def _history(self, name: str) -> list[dict[str, str]]:
        """The rows of this run's CSV log ``name`` (with a ``step`` column). A run resumed from a
        checkpoint logs only the steps after it: its rows are preceded by those of the run whose
        checkpoint it took (``<that run>/checkpoints/``, from its config's ``ckpt_path``) with earlier steps,
        and so back, so a curve covers the model's whole training. A run that is not found (moved, a
        relative ``ckpt_path`` read from another directory) ends the history there."""
        rows = own = self._csv_rows(self.path / name)
        directory, config, seen = self.path, self.config, {self.path.resolve()}
        # Each earlier run is cut at the first step of the run that resumed from it. A run without a step
        # gives no cut (the earlier one may have logged past the checkpoint, on a trajectory the resumed
        # run left): the history stops there.
        while ((first := min(map(_step, own), default=math.inf)) < math.inf
               and (directory := _resumed_from(config)) is not None and directory.resolve() not in seen):
            seen.add(directory.resolve())
            own = self._csv_rows(directory / name)
            rows = [row for row in own if _step(row) < first] + rows
            config = _config_of(directory)
        return rows

    def loss_curve(self) -> list[tuple[int, float]]:
        """(step, train/loss) pairs from the CSV logger, over the whole training of a resumed run too
        (:meth:`_history`); rows whose step or loss do not parse are skipped, and an unreadable log gives
        an empty curve."""
        rows = self._history("csv/metrics.csv")
        curve = []
        for row in rows:
            try:
                curve.append((int(row["step"]), float(row["train/loss"])))
            except (KeyError, TypeError, ValueError):  # no loss on this row, or a step like "12x"
                continue
        return curve

    def samples_png(self) -> Path | None:
        path = self.path / "samples.png"
        return path if path.is_file() else None

    def real_samples_png(self) -> Path | None:
        path = self.path / REAL_SAMPLES_PNG
        return path if path.is_file() else None


def _step(row: dict[str, str]) -> float:
    """A CSV row's step; infinity where it does not parse (so no earlier run's row of that kind is kept)."""
    try:
        return int(row["step"])
    except (KeyError, TypeError, ValueError):
        return math.inf


def _resumed_from(config: dict[str, Any]) -> Path | None:
    """The directory of the run whose checkpoint a training run with ``config`` resumed from: train.py
    keeps a run's checkpoints in ``<run dir>/checkpoints/``. None for a fresh run or an evaluation."""
    ckpt = config.get("ckpt_path")
    if not isinstance(ckpt, str) or not ckpt or config.get("train") is False:
        return None
    checkpoints = Path(ckpt).parent
    return checkpoints.parent if checkpoints.name == "checkpoints" and checkpoints.parent.is_dir() else None


def _config_of(directory: Path) -> dict[str, Any]:
    """The config a run directory's record says it ran with, else Hydra's copy of it (a killed run has no
    record); {} where neither can be read."""
    for name in ("metrics.json", EARLIER_RECORD):  # the latter: an attempt a resumed sweep moved aside
        try:
            config = read_record(directory / name).get("provenance", {}).get("config")
            break
        except (OSError, ValueError, AttributeError):
            continue
    else:
        config = _hydra_config(directory)
    return config if isinstance(config, dict) else {}


@dataclass
class Skipped:
    """A job directory without a usable record, and why."""

    path: Path
    reason: str


@dataclass
class Found:
    runs: list[Run]
    skipped: list[Skipped]


def read_run(path: Path) -> Run:
    """The run whose record is ``path`` (:func:`genbench.results.read_record`'s errors)."""
    return run_of(read_record(path), path.parent)


def run_of(record: dict, directory: Path) -> Run:
    """The run of a record read from ``directory``."""
    return Run(path=directory, family=record["family"], dataset=record["dataset"], seed=record["seed"],
               status=record["status"], metrics=record.get("metrics", {}),
               capabilities=record.get("capabilities", {}), error=record.get("error"),
               provenance=record.get("provenance") if isinstance(record.get("provenance"), dict) else {},
               metric_provenance=record.get("metric_provenance", {}))


def _skip(skipped: list[Skipped], path: Path, reason: str) -> None:
    log.warning("skipping run %s: %s", path, reason)
    skipped.append(Skipped(path, reason))


def _hydra_config(job: Path) -> Any:
    """A Hydra job's composed config (``<job>/.hydra/config.yaml``); None where it cannot be read."""
    try:
        return yaml.safe_load(read_regular_file(job / ".hydra" / "config.yaml", MAX_CONFIG_BYTES))
    except (OSError, ValueError, yaml.YAMLError):
        return None


def _trains_a_model(job: Path) -> bool:
    """Whether a Hydra job was a run of train.py or eval.py (its config has a ``model``), not another
    script's (``train_feature_net.py`` writes no record); an unreadable config counts as a run."""
    config = _hydra_config(job)
    return not isinstance(config, dict) or "model" in config


def find_runs(dirs: list[Path]) -> Found:
    """All valid runs under ``dirs``, and the job directories skipped (bad record, or none)."""
    runs: list[Run] = []
    skipped: list[Skipped] = []
    for root in dirs:
        if not Path(root).is_dir():
            log.warning("skipping %s: not a directory", root)
            continue
        for path in sorted(Path(root).rglob("metrics.json")):
            try:
                runs.append(read_run(path))
            except (OSError, ValueError) as e:
                _skip(skipped, path.parent, f"unusable metrics.json ({e})")
        for job in sorted(Path(root).rglob(".hydra")):  # a Hydra job that never wrote its record
            if not (job.parent / "metrics.json").exists() and _trains_a_model(job.parent):
                _skip(skipped, job.parent, "no metrics.json (killed before it finished?)")
    return Found(runs, skipped)
