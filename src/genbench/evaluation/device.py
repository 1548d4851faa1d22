"""Where the evaluation stage runs: on the device the model trained on, unless ``eval.device`` names one."""

import torch

from genbench.errors import ConfigError


def evaluation_device(setting: str, trained_on: torch.device) -> torch.device:
    """``auto``: ``trained_on`` (the trainer's root device, so a GPU run is also evaluated on its GPU);
    otherwise the named device (``cpu``, ``cuda``, ``cuda:1``), which must exist here."""
    if setting == "auto":
        return trained_on
    try:
        device = torch.device(setting)
    except RuntimeError as e:
        raise ConfigError(f"eval.device={setting!r} is not a device: {e}; use auto, cpu, cuda or "
                          "cuda:<i>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"eval.device={setting!r} but CUDA is not available here; use eval.device=auto "
                          "or cpu")
    return device
