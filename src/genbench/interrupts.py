"""SIGINT (Ctrl-C) and SIGTERM (what SLURM and Kubernetes send before a kill) end a run with a record.

Left alone, Lightning turns SIGINT into ``SystemExit(1)`` and SIGTERM into an exit with status 0 at the
end of the batch, and outside ``Trainer.fit`` SIGTERM kills the process outright: no ``metrics.json``
either way. Inside :func:`signals_raise` both raise :class:`Interrupted` wherever the run is (Lightning
passes it through its own handlers), so the run can write an ``interrupted`` record naming its last
checkpoint and exit with the conventional status 128 + signal number (130, 143).
"""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A signal asked the run to stop. A BaseException, like KeyboardInterrupt: no ``except Exception``
    on the way swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise :class:`Interrupted`; the previous handlers come back
    after it. Signal handlers belong to the main thread: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def ignore_signals() -> None:
    """Ignore further SIGINT/SIGTERM while the record of an interrupted run is written (a second Ctrl-C
    must not cut it short); :func:`signals_raise` restores the previous handlers when its block ends."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)


def exit_code(error: BaseException) -> int:
    """The exit status of a run stopped by ``error``: 128 + signal for a signal, 130 for a bare
    KeyboardInterrupt, else 1."""
    if isinstance(error, Interrupted):
        return error.exit_code
    return 128 + signal.SIGINT if isinstance(error, KeyboardInterrupt) else 1
