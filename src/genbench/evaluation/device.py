"""Where the evaluation stage runs: on the device the model trained on, unless ``eval.device`` names one;
and what that device is, for the record beside every timing."""

import platform
from pathlib import Path

import torch

from genbench.errors import ConfigError

CPUINFO = Path("/proc/cpuinfo")  # Linux's; elsewhere the platform names the CPU
DEVICE_TYPES = ("cpu", "cuda", "mps")  # what a device option may name (meta holds no data: it failed late)


def evaluation_device(setting: str, trained_on: torch.device) -> torch.device:
    """``auto``: ``trained_on`` (the trainer's root device, so a GPU run is also evaluated on its GPU);
    otherwise the named device (``cpu``, ``cuda``, ``cuda:1``), which must exist here."""
    if setting == "auto":
        return trained_on
    if problem := device_problem(setting):
        raise ConfigError(f"eval.device={setting!r}{problem}; use eval.device=auto, cpu or a device this "
                          "machine has")
    return torch.device(setting)


def device_problem(name: str) -> str | None:
    """What keeps ``name`` from naming a device genbench can run on here, as words that follow the name
    (`` is not a device: ...``, `` but CUDA is not available here``); None where it names one."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        return f" is not a device: {e}"
    if device.type not in DEVICE_TYPES:
        return f": not a kind of device genbench runs on ({', '.join(DEVICE_TYPES)})"
    if device.type == "cuda" and not torch.cuda.is_available():
        return " but CUDA is not available here"
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        return f" but this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return " but MPS is not available here"
    return None


def device_name(device: torch.device) -> str:
    """The hardware behind ``device``: the GPU's model (``NVIDIA H200``), the CPU's (``model name`` in
    /proc/cpuinfo, else what the platform says), or the device itself for any other kind. ``cuda:0`` alone
    does not say which GPU a timing came from."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":
        return str(device)
    if CPUINFO.is_file():
        for line in CPUINFO.read_text(errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"
