"""The run record ``metrics.json``: versioned, flat-ish, one file per run.

Schema version 2::

    {"schema": 2, "status": "ok" | "failed" | "diverged", "family": str, "dataset": str, "seed": int,
     "metrics": {name: number | str},
     "unavailable": {name: reason}  (metrics that could not be measured, e.g. FID offline),
     "metric_provenance": {group: {"metrics": [names], extractor, weights sha256, reference split,
                                   n_real, n_generated, seed, ...}},
     "capabilities": {"likelihood_kind", "has_latent", "latent_space", "supports_labels", "conditioning",
                      "is_conditional"}  (the model's interface flags; empty when no model was built),
     "error": str (only when status != "ok"),
     "provenance": {"config", "seed", "versions", "git_commit", "command", "host", "started_at"}}

Every metric name says what it is (``nll_bpd``, ``sample_ms_per_sample``, ...); README lists them.
"""

import json
import math
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
STATUSES = ("ok", "failed", "diverged")
_PACKAGES = ("torch", "torchvision", "pytorch-lightning", "hydra-core", "omegaconf", "numpy", "torchmetrics",
             "torch-fidelity", "genbench")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the code that ran, with ``-dirty`` when the tree had uncommitted changes."""
    repo = cwd or Path(__file__).resolve().parent
    try:
        sha = _git(["rev-parse", "HEAD"], repo)
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], repo)
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("-dirty" if dirty else "")


def _git(args: list[str], cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def provenance(config: dict[str, Any], seed: int, started_at: datetime) -> dict[str, Any]:
    return {
        "config": config,
        "seed": seed,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
        "host": platform.node(),
        "pid": os.getpid(),
        "started_at": started_at.astimezone(timezone.utc).isoformat(),
    }


def _jsonable(value: Any) -> Any:
    """NaN and inf are not JSON: store them as strings so the file stays valid."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_record(path: Path, *, status: str, family: str, dataset: str, seed: int, metrics: dict,
                 provenance: dict, error: str | None = None, unavailable: dict | None = None,
                 metric_provenance: dict | None = None, capabilities: dict | None = None) -> dict:
    """Write ``metrics.json`` atomically (a killed run never leaves half a file) and return the record."""
    assert status in STATUSES, status
    record = {"schema": SCHEMA_VERSION, "status": status, "family": family, "dataset": dataset, "seed": seed,
              "metrics": metrics, "unavailable": unavailable or {},
              "metric_provenance": metric_provenance or {}, "capabilities": capabilities or {}}
    if error is not None:
        record["error"] = error
    record["provenance"] = provenance
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(record), indent=2, default=str))
    tmp.replace(path)
    return record


def read_record(path: Path) -> dict:
    record = json.loads(Path(path).read_text())
    if record.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"{path}: metrics.json schema {record.get('schema')!r}, expected {SCHEMA_VERSION}")
    return record
