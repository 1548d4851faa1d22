"""Progress a user can trust: one training bar over the run's ``max_steps`` with an ETA, and a bar or a
log line for every evaluation phase that can take more than a few seconds.

On a terminal these are rich bars; in non-interactive runs (CI, SLURM logs) they are log lines: the start
and end of each phase with its duration, and training progress every tenth of the budget with an ETA.
"""

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytorch_lightning as pl
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    track,
)

T = TypeVar("T")
log = logging.getLogger("genbench")


def logs_this_step(trainer: pl.Trainer) -> bool:
    """Whether Lightning's loggers write the current training step: every ``trainer.log_every_n_steps``,
    and every step of a ``fast_dev_run``. Training values are handed to Lightning, and read back, on these
    steps only (:meth:`genbench.models.base.GenerativeModel.log_training`)."""
    return trainer._logger_connector.should_update_logs or bool(trainer.fast_dev_run)


def interactive() -> bool:
    """Whether progress bars are wanted: stderr is a terminal, not a log file."""
    return sys.stderr.isatty()


ALIVE_SECONDS = 30.0  # a long loop's log lines: at a tenth of its items, at most this often


def progress(items: Iterable[T], description: str, total: int | None = None,
             announce: bool = False) -> Iterator[T]:
    """``items`` with a bar on a terminal; elsewhere one log line when done, with the time it took, and
    (given ``total``) a line with an ETA at each tenth of the items but the last that ends
    ``ALIVE_SECONDS`` or more after the last line: a likelihood pass of a flow-matching model on 2,000
    MNIST test images ran many minutes with no line. ``announce`` logs its start too, as :func:`phase`
    does."""
    start = time.perf_counter()
    if interactive():
        yield from track(items, description=description, total=total, transient=True)
    else:
        if announce:
            log.info("%s ...", description)
        last = start
        for i, item in enumerate(items, 1):
            yield item
            now = time.perf_counter()
            tenth = bool(total) and i < total and 10 * i // total > 10 * (i - 1) // total
            if tenth and now - last >= ALIVE_SECONDS:
                log.info("%s: %d/%d (%.0f%%), %s elapsed, ETA %s", description, i, total, 100 * i / total,
                         _clock(now - start), _clock((now - start) / i * (total - i)))
                last = now
    log.info("%s: done in %.1f s", description, time.perf_counter() - start)


@contextmanager
def phase(description: str) -> Iterator[None]:
    """A step with no loop to show (a timing, a likelihood pass): a log line when it starts and ends."""
    log.info("%s ...", description)
    start = time.perf_counter()
    yield
    log.info("%s: done in %.1f s", description, time.perf_counter() - start)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class StepProgress(pl.Callback):
    """Training progress over the run's whole budget of optimizer steps (not per epoch), with an ETA.

    The budget is ``trainer.max_steps`` or, when epochs bind first (``trainer=debug``), the epochs' batches;
    a GAN's ``global_step`` moves by two per batch, which the first batch shows and the budget follows.
    """

    def __init__(self, bar: bool | None = None, log_every_fraction: float = 0.1,
                 watching: Callable[[], tuple[float, float, int]] | None = None) -> None:
        self.bar = interactive() if bar is None else bar
        self.log_every_fraction = log_every_fraction
        # Seconds the loop spent watching the training so far, those its watchers expect still (the
        # quality curve's points, log-spaced: most come early) and the points ahead not yet timed: the ETA
        # takes the training's own rate and adds them, where the elapsed time's rate said 11 min at step
        # 80 of 200 with 5 left; points it cannot time yet it names.
        self.watching = watching or (lambda: (0.0, 0.0, 0))
        self._watched_before = 0.0
        self._progress: Progress | None = None
        self._task: Any = None
        self._start_time = 0.0
        self._start_step = 0
        self._steps_per_batch = 1
        self._batches = 0
        self._next_log = 0.0
        self._loss = ""  # the text of the last logged loss

    def total(self, trainer: pl.Trainer) -> int | None:
        """Optimizer steps this run will reach: the first of ``max_steps`` and the end of ``max_epochs``."""
        caps = [trainer.max_steps] if trainer.max_steps and trainer.max_steps > 0 else []
        batches = trainer.num_training_batches
        if trainer.max_epochs is not None and trainer.max_epochs >= 0 and math.isfinite(batches):
            caps.append(self._steps_per_batch * trainer.max_epochs * int(batches))
        return int(min(caps)) if caps else None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._start_time, self._start_step, self._batches = time.perf_counter(), trainer.global_step, 0
        self._watched_before = self.watching()[0]
        self._next_log = self.log_every_fraction
        total = self.total(trainer)
        log.info("training %s for %s optimizer steps", pl_module.__class__.__name__, total or "unbounded")
        if self.bar:
            columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                       TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                       TextColumn("{task.fields[loss]}"))
            self._progress = Progress(*columns, transient=True)
            self._progress.start()
            self._task = self._progress.add_task("train", total=total, completed=trainer.global_step, loss="")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if not trainer.is_global_zero:
            return
        self._batches += 1
        step = trainer.global_step
        if self._batches == 1:  # now known: optimizer steps per batch (2 for a GAN with n_critic=1)
            self._steps_per_batch = max(1, step - self._start_step)
        total = self.total(trainer)
        if self._progress is not None:
            self._progress.update(self._task, total=total, completed=step, loss=self._loss_text(trainer))
        elif total and step / total >= self._next_log:
            elapsed = time.perf_counter() - self._start_time
            spent, to_come, untimed = self.watching()
            aside = min(spent - self._watched_before, elapsed)
            done = step - self._start_step
            eta = (elapsed - aside) / done * (total - step) + to_come if done else 0.0
            of_it = f" ({_clock(aside)} of it the quality curve's)" if aside >= 1 else ""
            more = (f" + the quality curve's {untimed} point{'s' * (untimed > 1)} ahead, untimed" if untimed
                    else "")
            log.info("training: step %d/%d (%.0f%%), %s elapsed%s, ETA %s%s%s", step, total,
                     100 * step / total, _clock(elapsed), of_it, _clock(eta), more, self._last_loss(trainer))
            while self._next_log <= step / total:
                self._next_log += self.log_every_fraction

    def _loss_text(self, trainer: pl.Trainer, read: bool = False) -> str:
        """The last logged training loss, read on the host only on the steps the loggers write (every
        ``trainer.log_every_n_steps``, when :meth:`GenerativeModel.log_training` hands Lightning a new
        one) or, for a log line (``read``), once a tenth of the run: reading a GPU value makes the host wait
        for every queued kernel, and a read at every step kept a GPU run from running ahead. A log line
        without it left a run under ``debug=overfit``, which has no logger, no way to show it overfits."""
        if read or logs_this_step(trainer):
            loss = trainer.callback_metrics.get("train/loss")
            self._loss = "" if loss is None else f"loss {float(loss):.4g}"
        return self._loss

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.teardown(trainer, pl_module, "fit")
        if trainer.is_global_zero:
            elapsed = time.perf_counter() - self._start_time
            step, done = trainer.global_step, trainer.global_step - self._start_step
            resumed = f" (steps {self._start_step + 1} to {step}: resumed)" if self._start_step else ""
            log.info("training: %d steps%s in %.1f s%s", done, resumed, elapsed, self._last_loss(trainer))

    def _last_loss(self, trainer: pl.Trainer) -> str:
        """``; last logged loss <value>`` for a log line, read now (a tenth of the run, its end); empty before
        any loss was logged."""
        loss = self._loss_text(trainer, read=True)
        return f"; last logged {loss}" if loss else ""

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
