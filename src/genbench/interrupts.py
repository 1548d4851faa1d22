"""SIGINT (Ctrl-C) and SIGTERM (what SLURM and Kubernetes send before a kill) end a run with a record.

Left alone, Lightning turns SIGINT into ``SystemExit(1)`` and SIGTERM into an exit with status 0 at the
end of the batch, and outside ``Trainer.fit`` SIGTERM kills the process outright: no ``metrics.json``
either way. Inside :func:`signals_raise` both raise :class:`Interrupted` wherever the run is (Lightning
passes it through its own handlers), so the run can write an ``interrupted`` record naming its last
checkpoint and exit with the conventional status 128 + signal number (130, 143).

A DDP run whose other training process dies ends with a record naming that process too. Lightning's
launcher watches the processes it started (ranks 1..n-1 of the node) from a thread of rank zero's process;
when one has exited with an error it SIGKILLed the others and rank zero itself, so nothing wrote
``metrics.json``. :func:`watch_training_processes` makes that watcher SIGKILL the others as before, then
signal rank zero (:data:`RANK_FAILED`, which :func:`signals_raise` turns into :class:`RankFailed`), and
kill it only if it has not recorded the failure within :data:`GRACE_SECONDS`: stuck where no Python runs
(the processes' rendezvous, which waits for a rank that died before it; a collective). The watcher then
writes the record itself first (:func:`record_if_stuck`), from its own thread.
"""

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
RANK_FAILED = signal.SIGUSR2  # SLURM's --signal and Lightning's requeue use SIGUSR1


def _grace_seconds() -> float:
    """How long rank zero has to record a dead rank before the watcher records the run and stops it:
    ``GENBENCH_RANK_GRACE_SECONDS``, 60 by default."""
    text = os.environ.get("GENBENCH_RANK_GRACE_SECONDS", "60")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not (0 <= seconds < float("inf")):
        raise ValueError(f"GENBENCH_RANK_GRACE_SECONDS={text!r} is not a number of seconds: set it to a "
                         "finite number >= 0 (60 if unset)")
    return seconds


GRACE_SECONDS = _grace_seconds()

# An interrupt's exit status in a process of another rank that had the signal too (its process group's)
INTERRUPTED_CODES = {128 + s for s in SIGNALS} | {-s for s in SIGNALS}


class _Watch:
    """One run's DDP processes, as Lightning's watcher sees them, and whether rank zero has recorded the
    run (then the watcher neither signals nor kills it)."""

    def __init__(self) -> None:
        self.processes: list = []  # subprocess.Popen of ranks 1..n-1 on this node
        self.failure = "another training process of this run died"
        self.recorded = threading.Event()
        self.writing = threading.Lock()  # held while the run's record is written, by rank zero or the watcher
        self.record_stuck: Callable[[str, str], None] | None = None  # (status, error) -> the run's record


_watch = _Watch()


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


class RankFailed(BaseException):
    """Another training process of this DDP run died. A BaseException, as :class:`Interrupted`: no ``except
    Exception`` on the way (a cache read, a metric) swallows it; the run records it as failed."""


def _raise_rank_failed(signum: int, frame: FrameType | None) -> None:
    raise RankFailed(_watch.failure)


def _late_rank_failure(signum: int, frame: FrameType | None) -> None:
    """A dead rank's signal after its run was recorded: nothing to do."""


def record_if_stuck(write: Callable[[str, str], None] | None) -> None:
    """How the watcher records the run, ``write(status, error)``, where rank zero has not recorded a dead
    rank within :data:`GRACE_SECONDS`; it then kills rank zero. None: it does not."""
    _watch.record_stuck = write


@contextmanager
def recording() -> Iterator[None]:
    """Rank zero writes the run's record inside: the watcher neither writes its own nor kills rank zero
    meanwhile, and once the block is done the run counts as recorded (the watcher leaves it alone)."""
    with _watch.writing:
        yield
        _watch.recorded.set()


def dead_training_processes(wait: float) -> list[tuple[int, int, int]]:
    """(local rank, pid, exit code) of the run's other training processes that exited with an error, after
    waiting up to ``wait`` seconds for one to (a process that raised takes a moment to exit); none outside
    a DDP run started from this process."""
    deadline = time.monotonic() + wait
    while True:
        dead = _exited_with_error(_watch.processes)
        running = any(p.poll() is None for p in _watch.processes)
        if dead or not running or time.monotonic() >= deadline:  # none left running: none will die
            return dead
        time.sleep(0.1)


def _exited_with_error(processes: list) -> list[tuple[int, int, int]]:
    """(local rank, pid, exit code) of the processes (ranks 1..n-1, in order) that exited with an error."""
    return [(rank, p.pid, p.poll()) for rank, p in enumerate(processes, start=1) if p.poll()]


def describe(dead: list[tuple[int, int, int]]) -> str:
    return "; ".join(f"the training process of local rank {rank} (pid {pid}) exited with code {code}"
                     for rank, pid, code in dead)


def watch_training_processes() -> None:
    """Start a run's watch: make Lightning's watcher of a DDP run's processes (``lightning_fabric``'s
    ``_ChildProcessObserver``) let rank zero record their failure before it ends the run, and keep the
    processes for :func:`dead_training_processes`. An earlier run's watch is left behind."""
    from lightning_fabric.strategies.launchers import subprocess_script

    global _watch
    _watch = _Watch()
    watcher = subprocess_script._ChildProcessObserver
    if getattr(watcher, "lets_rank_zero_record", False):
        return

    class RecordingWatcher(watcher):  # type: ignore[misc, valid-type]
        lets_rank_zero_record = True

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._watch = _watch
            self._watch.processes = self._child_processes

        def _terminate_all(self) -> None:
            dead = _exited_with_error(self._child_processes)
            for p in self._child_processes:  # as Lightning: a process hung in a collective ignores SIGTERM
                p.send_signal(signal.SIGKILL)
            interrupted = all(code in INTERRUPTED_CODES for _, _, code in dead)  # rank zero had it too
            if not (self._watch.recorded.is_set() or interrupted):
                self._watch.failure = describe(dead) + "; the other processes were stopped"
                os.kill(self._main_pid, RANK_FAILED)
            if self._watch.recorded.wait(GRACE_SECONDS):
                return
            with self._watch.writing:  # rank zero may be writing its record right now: let it finish
                if self._watch.recorded.is_set():
                    return
                self._record_stuck(dead, interrupted)  # stuck where no Python runs
                self._watch.recorded.set()
                os.kill(self._main_pid, signal.SIGKILL)  # as Lightning did; before it starts a record

        def _record_stuck(self, dead: list[tuple[int, int, int]], interrupted: bool) -> None:
            write = self._watch.record_stuck
            if write is None:
                return
            status = "interrupted" if interrupted else "failed"
            cause = "Interrupted: a signal stopped the run; " if interrupted else "RankFailed: "
            error = (f"{cause}{describe(dead)}; rank zero did not answer within {GRACE_SECONDS:g} s "
                     "(waiting where no Python runs: the processes' rendezvous or a collective), so the "
                     "watcher of the processes wrote this record and stopped it")
            try:
                write(status, error)
            except Exception:  # the kill must come all the same
                log.exception("could not record the run before stopping rank zero")

    subprocess_script._ChildProcessObserver = RecordingWatcher


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise :class:`Interrupted` and a dead rank's signal
    :class:`RankFailed`; the previous handlers come back after it, but a dead rank's signal does nothing
    from then on (its run has ended; by default the signal would kill the process). A handler that does
    nothing, not SIG_IGN, which the processes started later would inherit. Signal handlers belong to the
    main thread: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    signal.signal(RANK_FAILED, _raise_rank_failed)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        signal.signal(RANK_FAILED, _late_rank_failure)


def ignore_signals() -> None:
    """Ignore further SIGINT/SIGTERM (and a dead rank's signal) while the record of an interrupted run is
    written (a second Ctrl-C must not cut it short); :func:`signals_raise` restores the previous handlers
    when its block ends."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        signal.signal(RANK_FAILED, _late_rank_failure)


def exit_code(error: BaseException) -> int:
    """The exit status of a run stopped by ``error``: 128 + signal for a signal, 130 for a bare
    KeyboardInterrupt, else 1."""
    if isinstance(error, Interrupted):
        return error.exit_code
    return 128 + signal.SIGINT if isinstance(error, KeyboardInterrupt) else 1
