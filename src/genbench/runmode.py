"""Whether this process is a job of a Hydra multirun: a leaf module, so the loggers and the run can ask
without importing the config machinery."""

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def is_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (``-m``), which one failure must not stop."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
