"""Progress for the long evaluation steps (sampling, feature extraction): a rich bar on a terminal,
nothing in non-interactive runs (CI, SLURM logs)."""

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import track

T = TypeVar("T")


def interactive() -> bool:
    """Whether progress bars are wanted: stderr is a terminal, not a log file."""
    return sys.stderr.isatty()


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    if not interactive():
        yield from items
        return
    yield from track(items, description=description, total=total, transient=True)
