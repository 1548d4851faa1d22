"""Shared test utilities: composing the real configs in-process, and running the entry points as a user
does, in a subprocess."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(ROOT / "configs")
DATASETS = sorted(p.stem for p in (ROOT / "configs" / "dataset").glob("*.yaml"))
FAMILIES = sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml"))
FILE_DATASETS = ("mnist", "fashion_mnist", "cifar10")


def learning_seeds() -> list[int]:
    """Seeds the learning tests train with: ``GENBENCH_TEST_SEEDS=0,1,2,3,4`` checks a margin over several
    seeds (as the margins were measured); 0 alone by default, to keep the suite short."""
    return [int(s) for s in os.environ.get("GENBENCH_TEST_SEEDS", "0").split(",")]


def compose_train(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@contextmanager
def in_a_hydra_run(overrides: list[str], config_name: str = "train") -> Iterator[DictConfig]:
    """A run's config with Hydra's own set as inside a run (what callbacks and the preset lookups read), in
    this process: a train.py of its own takes 15-25 s to start on a slow machine. Hydra's is unset after."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        hydra_config = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        job = compose(config_name=config_name, overrides=overrides)
    HydraConfig.instance().set_config(hydra_config)
    try:
        yield job
    finally:
        HydraConfig.instance().cfg = None


def compose_quiet_run(out_dir: Path, overrides: list[str]) -> DictConfig:
    """A run config writing into ``out_dir`` with no logger and no progress bar (the learning tests)."""
    return compose_train(["logger=none", f"paths.output_dir={out_dir}", "trainer.enable_progress_bar=false",
                          *overrides])


def _env(root: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "GENBENCH_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_API_KEY", None)
    return env


def run_script(script: str, args: list[str], root: Path) -> subprocess.CompletedProcess:
    """``python <script> <args>`` from the repository (``train.py``, ``scripts/...``), run in ``root`` with
    GENBENCH_ROOT=root so every output stays there; one torch thread, and W&B offline (no API key)."""
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=root, env=_env(root),
                          capture_output=True, text=True, timeout=600)


def train_py(args: list[str], root: Path) -> subprocess.CompletedProcess:
    return run_script("train.py", args, root)


def start_train_py(args: list[str], root: Path) -> subprocess.Popen:
    """``train.py`` started as :func:`train_py` runs it, without waiting: for tests that signal or kill it.
    Its output goes to ``root/train_py.log`` (a pipe nobody reads could fill up and stall it)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "train_py.log").open("w") as log:
        return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=root, env=_env(root),
                                stdout=log, stderr=subprocess.STDOUT)


def wait_for(predicate: Callable[[], object], timeout: float = 120.0, what: str = "a condition") -> object:
    """Poll ``predicate`` every 0.1 s until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def grid_mass(log_prob: Callable[[torch.Tensor], torch.Tensor], xmin: float, xmax: float, ymin: float,
              ymax: float, cells: int, chunk: int = 65536, dtype: torch.dtype = torch.float32) -> float:
    """Midpoint rule of exp(log_prob) over a rectangle cut into cells x cells: the mass a 2D density puts
    there (1 for a normalized density on a box holding its support)."""
    hx, hy = (xmax - xmin) / cells, (ymax - ymin) / cells
    xs = xmin + hx * (torch.arange(cells, dtype=dtype) + 0.5)
    ys = ymin + hy * (torch.arange(cells, dtype=dtype) + 0.5)
    with torch.no_grad():
        density = torch.cat([log_prob(p).exp() for p in torch.cartesian_prod(xs, ys).split(chunk)])
    return float(density.sum()) * hx * hy
