"""Finding the runs of a sweep: every ``metrics.json`` under some directories, plus its training curve.

A directory that should hold a run but has no readable record (a killed job, a corrupt file) is skipped
with a warning that names it, so one broken job never hides the rest of a sweep.
"""

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
FAILED = ("failed", "diverged")


@dataclass
class Run:
    path: Path  # the run directory
    family: str
    dataset: str
    seed: int
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    capabilities: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def loss_curve(self) -> list[tuple[int, float]]:
        """(step, train/loss) pairs from the CSV logger, empty when the run logged none."""
        path = self.path / "csv" / "metrics.csv"
        if not path.is_file():
            return []
        with path.open(newline="") as f:
            return [(int(row["step"]), float(row["train/loss"])) for row in csv.DictReader(f)
                    if row.get("train/loss")]

    def samples_png(self) -> Path | None:
        path = self.path / "samples.png"
        return path if path.is_file() else None


def _read(path: Path) -> Run:
    record = json.loads(path.read_text())
    return Run(path=path.parent, family=record["family"], dataset=record["dataset"], seed=int(record["seed"]),
               status=record["status"], metrics=record.get("metrics", {}),
               capabilities=record.get("capabilities", {}), error=record.get("error"))


def find_runs(dirs: list[Path]) -> list[Run]:
    """All readable runs under ``dirs``; unreadable records and job directories without one are warned
    about and skipped."""
    runs: list[Run] = []
    for root in dirs:
        if not Path(root).is_dir():
            log.warning("skipping %s: not a directory", root)
            continue
        for path in sorted(Path(root).rglob("metrics.json")):
            try:
                runs.append(_read(path))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("skipping run %s: unreadable metrics.json (%s: %s)", path.parent,
                            type(e).__name__, e)
        for job in sorted(Path(root).rglob(".hydra")):  # a Hydra job that never wrote its record
            if not (job.parent / "metrics.json").exists():
                log.warning("skipping run %s: no metrics.json (killed before it finished?)", job.parent)
    return runs
