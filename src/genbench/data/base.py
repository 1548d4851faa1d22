"""The datamodule interface every dataset implements, and the split seeding they share.

Models, metrics and plots only rely on what :class:`GenerativeDataModule` promises: ``data_shape`` and
``num_classes`` before any file is read, and three ``TensorDataset(x, y)`` splits after ``setup``.
Splits depend on the dataset's own ``split_seed`` only, never on the run's training seed, so every run
of a seed sweep trains and is scored on the same examples.
"""

import shlex
from dataclasses import fields
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset, default_collate

from genbench.data.resumable import EpochOrder, ResumableLoader
from genbench.errors import ConfigError
from genbench.schema import Schema, check_params, field_default

SPLITS = ("train", "val", "test")
LOADER_OPTIONS = ("batch_size", "num_workers", "download")  # how the data is read, not which data
# What no training step depends on: where and how the files are read, and the splits only validation and
# the evaluation read. A resumed run may change these; the others are its training's (training_options).
NOT_THE_TRAINING = frozenset({"root", "download", "num_workers", "n_val", "n_test", "test_split",
                              "test_slice"})
# A split's parts: train_full is the training images before the validation hold-out (CIFAR-10's 50,000, the
# reference papers' FIDs use, against the 45,000 of train at val_fraction 0.1).
SPLIT_PARTS = {**{s: (s,) for s in SPLITS}, "train_full": ("train", "val")}


class Examples(TensorDataset):
    """A split's tensors, which a loader reads a batch at a time: one indexing of each tensor instead of a
    tuple per example stacked again (256 points of a 2-D set: 0.17 ms against 2.4 ms per batch on the
    development machine), the same batches."""

    def __getitems__(self, indices: list[int]) -> "Batch":
        index = torch.as_tensor(indices, dtype=torch.long)
        return Batch(tensor[index] for tensor in self.tensors)


class Batch(tuple):
    """A batch :class:`Examples` has put together already."""


def collate(data: Any) -> Any:
    """The loaders' collate: a :class:`Batch` as the list torch's collate makes of the examples' tuples,
    anything else by torch's."""
    return list(data) if isinstance(data, Batch) else default_collate(data)


def split_generator(split_seed: int, split: str) -> torch.Generator:
    """A generator for one split: distinct, well-mixed streams per (seed, split) pair."""
    state = np.random.SeedSequence([split_seed, SPLITS.index(split)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class GenerativeDataModule(pl.LightningDataModule):
    """Base of all datamodules: validated options in ``self.hp``, fixed splits, plain loaders.

    Subclasses set ``config_schema``, ``name``, ``data_shape`` and ``num_classes`` (as class attributes or
    in ``__init__``) and implement :meth:`build_splits`.
    """

    config_schema: ClassVar[type[Schema]]
    name: str
    data_shape: tuple[int, ...]
    num_classes: int | None = None

    def __init__(self, **hparams: Any) -> None:
        super().__init__()
        # check_params (not the bare dataclass) so a wrong key or type names ``dataset.<key>``.
        self.hp: Any = check_params(self.config_schema, hparams, "dataset")
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None
        self._order: EpochOrder | None = None  # the training loader's, once made
        self.pin_memory = False  # training batches in page-locked memory: the performance switch, for a GPU

    def selection_args(self) -> list[str]:
        """The ``dataset.<key>=<value>`` overrides (shell-quoted) of the options that choose this module's
        examples and differ from the schema's defaults: what a hint's command needs to read the same data
        (a classifier to train on the files a user has), loader options left out."""
        args = []
        for f in fields(self.hp):
            value = getattr(self.hp, f.name)
            if f.name not in LOADER_OPTIONS and value != field_default(f):
                shown = "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else value
                args.append(shlex.quote(f"dataset.{f.name}={shown}"))
        return args

    def training_options(self) -> dict[str, Any]:
        """The options that choose the training's examples and batches, as a checkpoint keeps them
        (:class:`~genbench.trained_run.NamesTraining`) for the run that resumes it."""
        return {f.name: getattr(self.hp, f.name) for f in fields(self.hp) if f.name not in NOT_THE_TRAINING}

    @property
    def is_image(self) -> bool:
        return len(self.data_shape) == 3

    def build_splits(self) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
        """Return the (train, val, test) datasets; called once, by :meth:`setup`."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = (Examples(*split.tensors)
                                                           for split in self.build_splits())

    def require_examples(self, split: str, wanted_by: str, fix: str) -> None:
        """ConfigError where ``split`` holds no examples and ``wanted_by`` needs them, with the splits' sizes
        and ``fix``; a run checks before it trains (an empty test split, dataset.test_fraction=0.0002 on
        digits, failed the evaluation after the training with "KeyError: 'nll'")."""
        self.setup()
        if len(self.split_tensor(split)):
            return
        sizes = ", ".join(f"{s} {len(self.split_tensor(s))}" for s in SPLITS)
        raise ConfigError(f"{wanted_by}, but dataset={self.name} holds no {split} examples ({sizes}): {fix}")

    def split_tensor(self, split: str) -> Tensor:
        """The examples (x) of ``split`` ('train', 'val', 'test', or 'train_full': train then val), for
        plots and metrics."""
        if split not in SPLIT_PARTS:
            raise ValueError(f"unknown split {split!r}; use one of {tuple(SPLIT_PARTS)}")
        datasets = [getattr(self, f"{part}_set") for part in SPLIT_PARTS[split]]
        if any(dataset is None for dataset in datasets):
            raise RuntimeError(f"{type(self).__name__}.split_tensor called before setup()")
        tensors = [dataset.tensors[0] for dataset in datasets]
        return tensors[0] if len(tensors) == 1 else torch.cat(tensors)

    def _loader(self, dataset: TensorDataset | None, shuffle: bool, pin_memory: bool = False) -> DataLoader:
        """A shuffling loader (for training, outside a Trainer) draws its order from the global random stream
        (the seed); the others keep in order and draw their iterators' worker seeds from a generator of
        their own, so validating during training takes nothing from that stream."""
        generator = None if shuffle else torch.Generator().manual_seed(0)
        return DataLoader(dataset, shuffle=shuffle, generator=generator, pin_memory=pin_memory,
                          **self._loader_options(dataset))

    def _loader_options(self, dataset: TensorDataset | None) -> dict[str, Any]:
        """What every loader of the data module takes from its config: batches and worker processes."""
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a dataloader")
        workers = self.hp.num_workers
        return {"batch_size": self.hp.batch_size, "drop_last": False, "num_workers": workers,
                "persistent_workers": workers > 0, "collate_fn": collate}

    def train_dataloader(self) -> DataLoader:
        """Shuffled, by a loader whose place a checkpoint keeps (:class:`~genbench.data.resumable.
        ResumableLoader`); under DDP each process takes its shard of rank zero's order where Lightning's
        ``DistributedSampler`` would shard it (:meth:`_train_order`)."""
        trainer = self.trainer
        if trainer is None:  # outside a Trainer: no training progress to keep
            return self._loader(self.train_set, shuffle=True, pin_memory=self.pin_memory)
        options = self._loader_options(self.train_set)

        def progress() -> tuple[int, bool]:  # the epoch's batches as Lightning counts them, and if it is over
            done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
            return done, done >= trainer.num_training_batches

        return ResumableLoader(self.train_set, progress, sampler=self._train_order(trainer),
                               pin_memory=self.pin_memory, **options)

    def _train_order(self, trainer: pl.Trainer) -> EpochOrder:
        """The training order, made once: a loader made again (``reload_dataloaders_every_n_epochs``) goes
        on with it. A new order there drew a new seed from the global random stream, where a run resumed
        at that epoch, which does not make its loader again, did not: 0.009 apart after 3 epochs. Sharded
        as Lightning shards data (``distributed_sampler_kwargs``), from rank zero's seed; with
        ``trainer.use_distributed_sampler=false`` Lightning leaves loaders whole, and so does this one."""
        sharded = trainer._accelerator_connector.use_distributed_sampler  # where Lightning reads it
        shard = (trainer.distributed_sampler_kwargs or {}) if sharded else {}
        replicas, rank = shard.get("num_replicas", 1), shard.get("rank", 0)
        order = self._order
        if order is None or (order.num_replicas, order.rank, len(order.dataset)) != (  # type: ignore[arg-type]
                replicas, rank, len(self.train_set)):  # type: ignore[arg-type]
            order = EpochOrder(self.train_set, replicas, rank)  # type: ignore[arg-type]
            order.seed = trainer.strategy.broadcast(order.seed, src=0)
            self._order = order
        return order

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)


class RequiredSplits(pl.Callback):
    """Checks, once Lightning has prepared the data (downloads included) and before the first step, that
    each split a run needs holds examples: ``needs`` are :meth:`GenerativeDataModule.require_examples`'s
    arguments. :meth:`check` does it outside a fit (a run that only evaluates)."""

    def __init__(self, needs: list[tuple[str, str, str]]) -> None:
        self.needs = needs

    def check(self, dm: GenerativeDataModule) -> None:
        for split, wanted_by, fix in self.needs:
            dm.require_examples(split, wanted_by, fix)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.check(trainer.datamodule)
