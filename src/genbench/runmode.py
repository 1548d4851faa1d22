"""How this process runs: whether it is a job of a Hydra multirun, and environment variables kept across a
sweep's jobs in one process. A leaf module, so the loggers and the run can ask without importing the config
machinery."""

import os
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def is_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (``-m``), which one failure must not stop."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextmanager
def kept_environment(*names: str) -> Iterator[None]:
    """The environment variables ``names`` as they were before the block once it ends (set, or unset): a
    sweep's next job in this process must not inherit what a run or Lightning's launcher set in one job."""
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
