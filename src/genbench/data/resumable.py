"""A training loader that a resumed run continues exactly where its checkpoint left off (Lightning's
stateful-loader interface: ``state_dict`` / ``load_state_dict``), on one process or under DDP.

With a plain shuffling loader Lightning restarts an interrupted epoch on a fresh iterator: a new random
order, of which it takes as many batches as the epoch had left, so the resumed run trained on other
examples than the run that was never stopped (0.010 apart after 12 steps, resumed at step 3 of a 5-batch
epoch). Each epoch's order also came from the global random stream when the epoch's iterator was made,
which a resumed run makes before its checkpoint's random state is put back (0.010 apart again, resumed at
an epoch's end, in a run bounded by ``max_epochs``). Under DDP, Lightning's ``DistributedSampler`` begins
the interrupted epoch's order again, so the resumed run trained on its first examples twice. Here each
epoch's order is ``DistributedSampler``'s, from the seed ``base_seed + epoch`` (one process is one replica
of one), and the checkpoint holds the base seed, the epoch and how many of its batches training took.
"""

import itertools
import logging
from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

log = logging.getLogger(__name__)


class EpochOrder(DistributedSampler):
    """``DistributedSampler``'s shuffled shard of the data per epoch, ``replicas`` processes' ``rank``-th,
    that goes on inside an epoch. The base seed is drawn from torch's global stream when the sampler is
    made, so the run's seed decides it (under DDP every process must take the same: the data module takes
    rank zero's, and makes the sampler once). Each iteration is the next epoch. The first comes from a
    resumed state (:meth:`resume`), else from the epoch Lightning gives (``set_epoch``); the sampler
    counts on by itself, as Lightning's count runs one ahead after a resume inside an epoch. A
    ``DistributedSampler``, so Lightning keeps it under DDP."""

    def __init__(self, data: Sized, replicas: int = 1, rank: int = 0) -> None:
        seed = int(torch.empty((), dtype=torch.int64).random_().item())
        super().__init__(data, num_replicas=replicas, rank=rank, shuffle=True,  # type: ignore[arg-type]
                         seed=seed)
        self.epoch = -1  # of the iteration under way
        self._next: tuple[int, int] | None = None  # the next iteration's epoch and examples to skip

    def set_epoch(self, epoch: int) -> None:
        if self._next is None:
            self._next = (epoch, 0)

    def resume(self, base_seed: int, epoch: int, skip: int | None) -> None:
        """Make the next iteration ``epoch``'s order after its first ``skip`` examples (of this shard);
        ``skip=None``: the epoch was over, so the next epoch's whole order."""
        self.seed = base_seed
        self._next = (epoch + 1, 0) if skip is None else (epoch, skip)

    def __iter__(self) -> Iterator[int]:
        self.epoch, skip = self._next or (0, 0)
        self._next = (self.epoch + 1, 0)
        yield from itertools.islice(super().__iter__(), skip, None)


class ResumableLoader(DataLoader):
    """A shuffling loader over :class:`EpochOrder` whose state is that order's and ``progress()``: the
    batches of the current epoch training has taken (the loader cannot tell them from the ones Lightning
    fetched ahead), and whether that epoch is over (it may end before the data do:
    ``trainer.limit_train_batches``). Its worker seeds come from a generator of its own, so no iterator
    takes anything from the global stream. With another ``sampler`` (Lightning rebuilds the loader with a
    ``SequentialSampler`` to overfit a few batches) its state is empty and a checkpoint's is ignored, with
    a warning: still a stateful loader, so a checkpoint of either kind loads into a run of the other."""

    def __init__(self, dataset: Dataset, progress: Callable[[], tuple[int, bool]],
                 sampler: Sampler | None = None, **kwargs: Any) -> None:
        sampler = EpochOrder(dataset) if sampler is None else sampler  # type: ignore[arg-type]
        kwargs.setdefault("generator", torch.Generator().manual_seed(0))
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.progress = progress

    def __iter__(self) -> Iterator[Any]:
        """Torch's iterator, made at its first batch: with workers it draws the sampler's indices as soon as
        it exists, and Lightning makes one that it never uses when a run resumes at an epoch's end, which
        would count as an epoch."""
        return _MadeAtFirstBatch(super().__iter__)

    def state_dict(self) -> dict[str, int | bool]:
        if not isinstance(self.sampler, EpochOrder):
            return {}
        batches, over = self.progress()
        return {"base_seed": self.sampler.seed, "epoch": self.sampler.epoch, "batches_done": batches,
                "epoch_over": over, "replicas": self.sampler.num_replicas}

    def load_state_dict(self, state: dict[str, int | bool]) -> None:
        if not state:
            log.warning("the checkpoint holds no place in the training data (written with overfit_batches, "
                        "or under DDP before the place was kept there): resumed inside an epoch, this run "
                        "trains the rest of it on other examples than the run that was not stopped")
            return
        if not isinstance(self.sampler, EpochOrder):
            log.warning("the checkpoint's place in the training data is not kept with a %s "
                        "(overfit_batches): this run's data order differs from the run that was not stopped",
                        type(self.sampler).__name__)
            return
        replicas = int(state.get("replicas", 1))
        if replicas != self.sampler.num_replicas and not state["epoch_over"]:
            log.warning("the checkpoint was written by %d training processes and this run has %d: it goes on "
                        "with the same epoch's order and skips the batches each process took, which are "
                        "not the examples the first run took", replicas, self.sampler.num_replicas)
        skip = None if state["epoch_over"] else int(state["batches_done"]) * (self.batch_size or 1)
        self.sampler.resume(int(state["base_seed"]), int(state["epoch"]), skip)


class _MadeAtFirstBatch:
    """An iterator that makes the one it stands for, with ``make``, when its first item is asked for."""

    def __init__(self, make: Callable[[], Iterator[Any]]) -> None:
        self._make, self._iterator = make, None

    def __iter__(self) -> "_MadeAtFirstBatch":
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._make()
        return next(self._iterator)
