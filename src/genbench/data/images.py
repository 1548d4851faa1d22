"""Image datamodules: scikit-learn digits (bundled), MNIST, Fashion-MNIST and CIFAR-10 (raw files).

Images stay uint8 (N, C, H, W); models convert them with :mod:`genbench.data.pixels`. The file-based
sets read torchvision's raw layout under ``root`` and only in ``setup``; ``train_split``/``test_split``
and the slices choose which rows of which file split each stage uses, so a run can train and test on
disjoint parts of the test files when the training files are absent.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from genbench.data.base import GenerativeDataModule, split_generator
from genbench.data.formats import (
    download_cifar10,
    download_mnist_like,
    find_raw_file,
    load_cifar_batch,
    read_idx,
)
from genbench.errors import ConfigError, DatasetError
from genbench.schema import Schema, param

FILE_SPLITS = ["train", "test"]


def _check_slice(key: str, rows: list[int] | None) -> None:
    if rows is not None and (len(rows) != 2 or rows[0] >= rows[1]):
        raise ConfigError(f"{key}={rows}: give [start, stop) rows with start < stop, e.g. [0, 8000]")


def _overlaps(a: list[int] | None, b: list[int] | None) -> bool:
    a_start, a_stop = a or (0, float("inf"))
    b_start, b_stop = b or (0, float("inf"))
    return a_start < b_stop and b_start < a_stop


@dataclass
class ImageDataConfig(Schema):
    """Options of a file-based image dataset. Slices are [start, stop) rows of the chosen file split."""

    root: str = "data"
    download: bool = False
    batch_size: int = param(128, ge=1)
    num_workers: int = param(0, ge=0)
    split_seed: int = param(0, ge=0)
    val_fraction: float = param(0.1, ge=0, lt=1)
    train_split: str = param("train", choices=FILE_SPLITS)
    test_split: str = param("test", choices=FILE_SPLITS)
    train_slice: list[int] | None = param(None, ge=0)
    test_slice: list[int] | None = param(None, ge=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_slice("train_slice", self.train_slice)
        _check_slice("test_slice", self.test_slice)
        if self.train_split == self.test_split and _overlaps(self.train_slice, self.test_slice):
            raise ConfigError(
                f"test_slice={self.test_slice} overlaps dataset.train_slice={self.train_slice} and both "
                f"read the {self.test_split} files (dataset.train_split = dataset.test_split = "
                f"{self.test_split}): test images would leak into training. Give disjoint slices "
                "(null means all rows)."
            )


def _as_dataset(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))


def _carve(n: int, fractions: list[float], generator: torch.Generator) -> list[torch.Tensor]:
    """Split range(n) at random into parts of the given fractions plus the rest (each part sorted)."""
    order = torch.randperm(n, generator=generator)
    parts, start = [], 0
    for fraction in fractions:
        stop = start + round(fraction * n)
        parts.append(order[start:stop])
        start = stop
    parts.append(order[start:])
    return [part.sort().values for part in parts]


class FileImageDataModule(GenerativeDataModule):
    """Shared logic of the raw-file datasets; subclasses read one file split in :meth:`read_split`."""

    config_schema = ImageDataConfig
    num_classes = 10

    def read_split(self, split: str) -> tuple[np.ndarray, np.ndarray, str]:
        """Images uint8 (N, C, H, W), labels (N,) and a description of the files, of 'train' or 'test'."""
        raise NotImplementedError

    @property
    def root(self) -> Path:
        return Path(self.hp.root).expanduser()

    def _rows(self, read: tuple[np.ndarray, np.ndarray, str], key: str) -> tuple[np.ndarray, np.ndarray]:
        images, labels, source = read
        if len(images) != len(labels):
            raise DatasetError(f"{source}: {len(images)} images but {len(labels)} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise DatasetError(f"{source}: labels outside 0..{self.num_classes - 1}")
        rows = getattr(self.hp, key)
        if rows is None:
            return images, labels
        if rows[1] > len(images):
            raise ConfigError(
                f"dataset.{key}={rows} reaches past the {len(images)} rows of {source}; "
                f"use a stop of at most {len(images)}"
            )
        return images[rows[0] : rows[1]], labels[rows[0] : rows[1]]

    def build_splits(self) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
        hp = self.hp
        files = {split: self.read_split(split) for split in dict.fromkeys([hp.train_split, hp.test_split])}
        train_x, train_y = self._rows(files[hp.train_split], "train_slice")
        test_x, test_y = self._rows(files[hp.test_split], "test_slice")
        val_idx, train_idx = _carve(len(train_x), [hp.val_fraction], split_generator(hp.split_seed, "val"))
        return (
            _as_dataset(train_x[train_idx.numpy()], train_y[train_idx.numpy()]),
            _as_dataset(train_x[val_idx.numpy()], train_y[val_idx.numpy()]),
            _as_dataset(test_x, test_y),
        )


class MNISTDataModule(FileImageDataModule):
    """MNIST from torchvision's raw IDX files in ``root/MNIST/raw`` (plain or gzipped)."""

    name = "mnist"
    data_shape = (1, 28, 28)
    folder = "MNIST"
    stems = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }

    @property
    def raw_dir(self) -> Path:
        return self.root / self.folder / "raw"

    def prepare_data(self) -> None:
        if self.hp.download:
            import torchvision.datasets  # only a download needs torchvision's mirror and md5 lists

            source = getattr(
                torchvision.datasets, self.folder
            )  # torchvision names the folder after the class
            download_mnist_like(self.raw_dir, source.resources, source.mirrors)

    def read_split(self, split: str) -> tuple[np.ndarray, np.ndarray, str]:
        image_path, label_path = (find_raw_file(self.raw_dir, stem) for stem in self.stems[split])
        images = read_idx(image_path, ndim=3)
        if images.shape[1:] != self.data_shape[1:]:
            raise DatasetError(f"{image_path}: images are {images.shape[1:]}, expected {self.data_shape[1:]}")
        return images[:, None], read_idx(label_path, ndim=1), f"{image_path} and {label_path}"


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: MNIST's file format and names, in ``root/FashionMNIST/raw``."""

    name = "fashion_mnist"
    folder = "FashionMNIST"


class CIFAR10DataModule(FileImageDataModule):
    """CIFAR-10 from the python batches in ``root/cifar-10-batches-py`` (read without running code)."""

    name = "cifar10"
    data_shape = (3, 32, 32)
    batch_files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

    def prepare_data(self) -> None:
        if self.hp.download:
            download_cifar10(self.root)

    def read_split(self, split: str) -> tuple[np.ndarray, np.ndarray, str]:
        folder = self.root / "cifar-10-batches-py"
        paths = [folder / name for name in self.batch_files[split]]
        for path in paths:
            if not path.is_file():
                from torchvision.datasets import CIFAR10  # where torchvision downloads it from

                first = ("The folder is incomplete: delete it, then train.py with dataset.download=true "
                         "fetches and extracts it again" if self.hp.download
                         else "Set dataset.download=true on a machine with network")
                raise DatasetError(
                    f"missing dataset file: expected {path}. {first}, or download {CIFAR10.url} and extract "
                    f"it into {self.root}, or point dataset.root=<dir> at the folder that holds "
                    "cifar-10-batches-py/."
                )
        batches = [load_cifar_batch(path) for path in paths]
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        return images, labels, f"{folder}/{'|'.join(self.batch_files[split])}"


@dataclass
class DigitsDataConfig(Schema):
    """Options of the bundled 8x8 digits; the splits are random fractions of its 1797 images."""

    batch_size: int = param(128, ge=1)
    num_workers: int = param(0, ge=0)
    split_seed: int = param(0, ge=0)
    val_fraction: float = param(0.1, ge=0, lt=1)
    test_fraction: float = param(0.2, gt=0, lt=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(
                f"val_fraction={self.val_fraction} plus dataset.test_fraction={self.test_fraction} leaves "
                "no training images; keep their sum below 1"
            )


class DigitsDataModule(GenerativeDataModule):
    """scikit-learn's 8x8 digits: no download, small enough for CPU tests of the image code paths.

    Pixel values 0..16 become uint8 as round(v * 255 / 16), so they use the same 0..255 scale as the
    other image sets (17 distinct levels).
    """

    config_schema = DigitsDataConfig
    name = "digits"
    data_shape = (1, 8, 8)
    num_classes = 10

    def build_splits(self) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
        from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

        digits = load_digits()
        images = np.round(digits.images * 255 / 16).astype(np.uint8)[:, None]
        labels = digits.target.astype(np.int64)
        hp = self.hp
        generator = split_generator(hp.split_seed, "train")
        test_idx, val_idx, train_idx = _carve(len(images), [hp.test_fraction, hp.val_fraction], generator)
        train, val, test = (
            _as_dataset(images[i.numpy()], labels[i.numpy()]) for i in (train_idx, val_idx, test_idx)
        )
        return train, val, test
