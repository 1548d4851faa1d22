"""The run record ``metrics.json``: versioned, flat-ish, one file per run.

Schema version 2::

    {"schema": 2, "status": "ok" | "failed" | "diverged" | "interrupted", "family": str, "dataset": str,
     "seed": int (null only in a failed record of a config whose seed is not an integer),
     "metrics": {name: number | str},
     "unavailable": {name: reason}  (metrics that could not be measured, e.g. FID offline),
     "metric_provenance": {group: {"metrics": [names], extractor, weights sha256, reference split,
                                   n_real, n_generated, seed, ...}},
     "capabilities": {"likelihood_kind", "latent", "has_latent", "latent_space", "supports_labels",
                      "conditioning", "is_conditional"}
                     (the model's interface flags; empty when no model was built),
     "error": str (only when status != "ok"),
     "checkpoint": str  (the run's last checkpoint, when it has one: resume or re-evaluate from it),
     "provenance": {"config", "seed", "versions", "git_commit", "command", "host", "started_at"}}

Every metric name says what it is (``nll_bpd``, ``sample_ms_per_sample``, ...); README lists them.
Records are written atomically under a unique temporary name, and read back only after checking that they
are regular files of bounded size holding this schema with the right types (:func:`read_record`).
"""

import fcntl
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from genbench.errors import ConfigError
from genbench.files import read_regular_file, write_text_atomically

# Files of a run directory beside metrics.json that reports read (the evaluation writes them).
CURVES_FILE = "curves.csv"  # quality against training compute, at log-spaced steps
REAL_SAMPLES_PNG = "real_samples.png"  # held-out real data, the picture beside samples.png
REAL_PREFIX = "real_"  # metrics of held-out real data scored like the samples: real_<metric>
# The samples' metrics recomputed on as many samples as held-out real images, where those are fewer:
# what real_<metric> is compared with (finite-sample bias depends on the sample size)
AT_REAL_N_PREFIX = "at_real_n_"
SCHEMA_VERSION = 2
STATUSES = ("ok", "failed", "diverged", "interrupted")
MAX_RECORD_BYTES = 4 << 20  # a real record is a few KB; anything this large is not one
_PACKAGES = ("torch", "torchvision", "pytorch-lightning", "hydra-core", "omegaconf", "numpy", "torchmetrics",
             "torch-fidelity", "genbench")


def dotted(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config (a record's ``provenance.config``, a model's options) as ``{dotted key: value}``, the
    keys as a command line names them (``model.optimizer.lr``); an empty mapping is a value of its own."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(dotted(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node} if prefix else {}


def under(key: str, prefixes: tuple[str, ...]) -> bool:
    """Whether the dotted ``key`` is one of ``prefixes`` or inside one (``paths.output_dir`` in ``paths``)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


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


def provenance(config: dict[str, Any], seed: int | None, started_at: datetime) -> dict[str, Any]:
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


def write_record(path: Path, *, status: str, family: str, dataset: str, seed: int | None, metrics: dict,
                 provenance: dict, error: str | None = None, unavailable: dict | None = None,
                 metric_provenance: dict | None = None, capabilities: dict | None = None,
                 checkpoint: str | None = None) -> dict:
    """Write ``metrics.json`` atomically under a unique temporary name (concurrent writers and readers
    never see half a file) and return the record."""
    assert status in STATUSES, status
    record = {"schema": SCHEMA_VERSION, "status": status, "family": family, "dataset": dataset, "seed": seed,
              "metrics": metrics, "unavailable": unavailable or {},
              "metric_provenance": metric_provenance or {}, "capabilities": capabilities or {}}
    if error is not None:
        record["error"] = error
    if checkpoint is not None:
        record["checkpoint"] = checkpoint
    record["provenance"] = provenance
    write_text_atomically(Path(path), json.dumps(_jsonable(record), indent=2, default=str))
    return record


def _check(record: Any) -> None:
    """Raise ValueError naming the first field of ``record`` that does not fit the schema."""
    if not isinstance(record, dict):
        raise ValueError(f"a record is a JSON object, found {type(record).__name__}")
    if record.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"schema {record.get('schema')!r}, expected {SCHEMA_VERSION}")
    if record.get("status") not in STATUSES:
        raise ValueError(f"status {record.get('status')!r} is not one of {STATUSES}")
    for key in ("family", "dataset"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise ValueError(f"{key} must be a non-empty string, found {record.get(key)!r}")
    seedless_failure = record.get("seed") is None and record["status"] == "failed"  # seed=abc
    if type(record.get("seed")) is not int and not seedless_failure:
        raise ValueError(f"seed must be an integer, found {record.get('seed')!r}")
    for key in ("metrics", "capabilities", "unavailable", "metric_provenance"):
        if not isinstance(record.get(key, {}), dict):
            raise ValueError(f"{key} must be an object, found {type(record[key]).__name__}")
    for name, value in record.get("metrics", {}).items():
        if not isinstance(value, (int, float, str, type(None))):
            raise ValueError(f"metric {name!r} must be a number or a string, found {type(value).__name__}")
    for key in ("error", "checkpoint"):
        if not isinstance(record.get(key, ""), str):
            raise ValueError(f"{key} must be a string, found {type(record[key]).__name__}")


def read_record(path: Path) -> dict:
    """A ``metrics.json`` checked against the schema; ValueError naming the file and the problem (a FIFO,
    a huge or deeply nested file, a future schema, a field of the wrong type), OSError if unreadable."""
    try:
        record = json.loads(read_regular_file(Path(path), MAX_RECORD_BYTES))
        _check(record)
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to be a run record") from None
    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path}: not a valid run record: {e}") from None
    return record


class RunDirTaken(ConfigError):
    """The run directory already holds a record, or another live run."""


@contextmanager
def claim_run_dir(out_dir: Path, settle: Callable[[], dict | None] | None = None) -> Iterator[dict | None]:
    """Hold ``out_dir`` for one run: refuse it (:class:`RunDirTaken`) when it already holds a record or
    another live run holds it, so two runs never write one ``metrics.json``. ``settle`` (a job of a resumed
    sweep, :func:`genbench.sweeps.settle_earlier_attempt`) first decides, under the hold, what an earlier
    attempt left there: the record to keep, which the context yields (the job is done), or None once it
    has moved that attempt aside.

    The hold is an advisory ``flock`` on the directory, released by the kernel when the process ends
    (a killed run never leaves a stale lock).
    """
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirTaken(f"run directory {out_dir} is in use by another run that is still going; give "
                              "each run its own hydra.run.dir (or leave it unset for a fresh one)") from None
        kept = settle() if settle is not None else None
        if kept is None and (out_dir / "metrics.json").exists():
            raise RunDirTaken(taken_message(out_dir, "run", "hydra.run.dir"))
        yield kept
    finally:
        os.close(fd)


def taken_message(directory: Path, what: str, key: str) -> str:
    return (f"{what} directory {directory} already holds the record of another run (metrics.json); give this "
            f"{what} its own {key} (or leave it unset for a fresh one), or delete that directory")
