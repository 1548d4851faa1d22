"""Datasets: 2-D toy distributions and image sets behind one datamodule interface."""

from genbench.data.base import GenerativeDataModule
from genbench.data.images import (
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
)
from genbench.data.toy import DISTRIBUTIONS, ToyDataModule, ToyDistribution

__all__ = [
    "DISTRIBUTIONS",
    "CIFAR10DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "GenerativeDataModule",
    "MNISTDataModule",
    "ToyDataModule",
    "ToyDistribution",
]
