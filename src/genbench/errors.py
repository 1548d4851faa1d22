"""Errors that carry a message a user can act on: what is wrong and how to fix it."""

import sys
from typing import NoReturn


class GenbenchError(Exception):
    """Base class of every error genbench raises on purpose."""


class ConfigError(GenbenchError, ValueError):
    """A config key is unknown, has the wrong type or an impossible value."""


class DatasetError(GenbenchError):
    """A dataset file is missing, truncated or corrupt."""


class DivergedError(GenbenchError):
    """Training produced a NaN or infinite loss."""


class FeatureExtractorUnavailable(GenbenchError):
    """A feature network's weights are missing, cannot be downloaded or fail their checksum.

    The evaluation stage records the metrics that need it as unavailable, with this message, and goes on.
    """


def refuse(message: str) -> NoReturn:
    """Stop a command before it starts any work (a sweep that cannot run as asked): ``error: <message>``
    on stderr, exit status 1, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)
