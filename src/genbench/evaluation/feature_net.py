"""Classifier feature nets: a SmallCNN per labelled image dataset, trained here because Inception weights
cannot be downloaded offline.

Its penultimate activations are the space of the Fréchet distance (``fd_<dataset>_cnn``, never called FID)
and its logits give the classifier score and class coverage. A net is stored as ``<name>.pt`` (the
state_dict only, loaded with ``weights_only=True``) next to ``<name>.json`` (architecture, test accuracy,
SHA-256 of the .pt, training config), so every metric can say exactly which weights made it.
"""

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from genbench.checksums import sha256_file
from genbench.data.base import GenerativeDataModule
from genbench.data.pixels import to_unit
from genbench.errors import ConfigError, FeatureExtractorUnavailable
from genbench.evaluation.device import device_problem
from genbench.files import save_atomically, write_text_atomically
from genbench.nets.classifier import SmallCNN
from genbench.progress import progress
from genbench.results import package_versions
from genbench.schema import Schema, param

log = logging.getLogger(__name__)


def _device_problem(name: str) -> str | None:
    problem = device_problem(name)
    return f"{name!r}{problem}; use device=cpu or a GPU this machine has" if problem else None


@dataclass
class FeatureNetSchema(Schema):
    """Top-level options of ``scripts/train_feature_net.py`` (``configs/feature_net.yaml``; the dataset
    group is checked by its own schema)."""

    task_name: str = "feature_net"
    seed: int = param(0, ge=0)
    epochs: int = param(10, ge=1)
    lr: float = param(3e-3, gt=0)
    weight_decay: float = param(5e-4, ge=0)
    width: int = param(32, ge=1)
    feature_dim: int = param(128, ge=1)
    device: str = param("cpu", check=_device_problem)
    out_path: str | None = None


def feature_net_path(directory: str | Path, dataset: str) -> Path:
    """Where the net of ``dataset`` lives in ``directory`` (``paths.feature_net_dir``)."""
    return Path(directory) / f"{dataset}_cnn.pt"


@dataclass
class FeatureNet:
    """A trained SmallCNN and the record that identifies it."""

    net: SmallCNN
    path: Path
    name: str
    dataset: str
    checksum: str
    test_accuracy: float
    config: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return self.net.arch["num_classes"]

    @property
    def feature_dim(self) -> int:
        return self.net.arch["feature_dim"]

    @property
    def data_shape(self) -> tuple[int, int, int]:
        arch = self.net.arch
        return arch["in_channels"], arch["image_size"], arch["image_size"]

    @torch.no_grad()
    def extract(self, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
        """Features (N, F) and logits (N, K), float32 on the CPU, of uint8 images (N, C, H, W)."""
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != self.data_shape:
            raise ValueError(f"{self.name} takes uint8 images of shape (N, {self.data_shape}), "
                             f"got {images.dtype} {tuple(images.shape)}")
        self.net.eval()
        device = next(self.net.parameters()).device
        features, logits = [], []
        batches = images.split(batch_size)
        for batch in progress(batches, f"{self.name} features of {len(images)} images", total=len(batches)):
            f = self.net.features(to_unit(batch.to(device)))
            features.append(f.cpu())
            logits.append(self.net.head(f).cpu())
        return torch.cat(features), torch.cat(logits)

    def provenance(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "sha256": self.checksum,
                "test_accuracy": self.test_accuracy, "dataset": self.dataset,
                "feature_dim": self.feature_dim, "config": self.config}  # fmt: skip


@torch.no_grad()
def accuracy(net: SmallCNN, loader: DataLoader) -> float:
    """Top-1 accuracy of ``net`` (in eval mode) over a loader of (uint8 images, labels)."""
    net.eval()
    device = next(net.parameters()).device
    correct = total = 0
    for x, y in loader:
        correct += (net(to_unit(x.to(device))).argmax(1).cpu() == y).sum().item()
        total += len(y)
    return correct / total


def train_feature_net(
    dm: GenerativeDataModule,
    *,
    epochs: int,
    lr: float,
    seed: int,
    weight_decay: float = 5e-4,
    width: int = 32,
    feature_dim: int = 128,
    device: str = "cpu",
) -> tuple[SmallCNN, float]:
    """Train a SmallCNN on the train split (AdamW, one-cycle schedule); return it and its test accuracy."""
    if dm.num_classes is None or not dm.is_image:
        raise ConfigError(f"dataset={dm.name} has no labelled images, and a feature net is an image "
                          "classifier: use dataset=digits, mnist, fashion_mnist or cifar10")
    torch.manual_seed(seed)  # initialisation, dropout and the loader's shuffling
    dm.setup()
    c, h, _ = dm.data_shape
    net = SmallCNN(c, h, dm.num_classes, width=width, feature_dim=feature_dim).to(device)
    loader = dm.train_dataloader()
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * len(loader))
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        total = 0.0
        for x, y in loader:
            loss = F.cross_entropy(net(to_unit(x.to(device))), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(y)
        log.info("epoch %d/%d: train loss %.4f (%.0f s)", epoch + 1, epochs, total / len(loader.dataset),
                 time.perf_counter() - start)
    return net, accuracy(net, dm.test_dataloader())


def save_feature_net(net: SmallCNN, path: str | Path, meta: dict[str, Any]) -> FeatureNet:
    """Write ``path`` (state_dict) and its JSON record; ``meta`` holds dataset, test_accuracy and config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomically({k: v.cpu() for k, v in net.state_dict().items()}, path)  # never half a file
    record = {
        "name": f"{meta['dataset']}_cnn",
        "dataset": meta["dataset"],
        "arch": net.arch,
        "test_accuracy": float(meta["test_accuracy"]),
        "sha256": sha256_file(path),
        "config": meta.get("config", {}),
        "created_at": datetime.now(timezone.utc).isoformat(),
        "versions": package_versions(),
    }
    write_text_atomically(path.with_suffix(".json"), json.dumps(record, indent=2, default=str))
    return _feature_net(net, path, record)


def _feature_net(net: SmallCNN, path: Path, record: dict[str, Any]) -> FeatureNet:
    return FeatureNet(net=net.eval(), path=path, name=record["name"], dataset=record["dataset"],
                      checksum=record["sha256"], test_accuracy=record["test_accuracy"],
                      config=record["config"])  # fmt: skip


def load_feature_net(path: str | Path, map_location: str | torch.device = "cpu",
                     dataset_args: Sequence[str] = ()) -> FeatureNet:
    """Load a net saved by :func:`save_feature_net`, refusing a file that does not match its record.

    ``dataset_args`` (``GenerativeDataModule.selection_args``) go into the command the refusal names, so
    it trains on the data the run reads (a ``dataset.root``, the slices of a run on test files only)."""
    path = Path(path)
    json_path = path.with_suffix(".json")
    dataset = path.stem.removesuffix("_cnn")  # replaced by the record's once it is read

    def unavailable(problem: str) -> FeatureExtractorUnavailable:
        args = " ".join([f"dataset={dataset}", *dataset_args, f"out_path={path}"])
        return FeatureExtractorUnavailable(
            f"feature net {path}: {problem}. Train it with: python scripts/train_feature_net.py {args}"
        )

    if not path.is_file():
        raise unavailable("no such file")
    try:
        record = json.loads(json_path.read_text())
        dataset = record["dataset"]
        arch, expected = record["arch"], record["sha256"]
    except (OSError, ValueError, KeyError) as e:
        raise unavailable(f"its record {json_path} is missing or unreadable ({type(e).__name__}: {e})") from e
    actual = sha256_file(path)
    if actual != expected:
        raise unavailable(f"sha256 {actual} differs from {expected} recorded in {json_path.name}; "
                          "the file changed after training")
    try:  # the checksum matched, but both files may have been replaced together: trust neither
        net = SmallCNN(**arch)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        loaded = _feature_net(net, path, record)
    except Exception as e:  # not a tensor file, a foreign pickle, weights or record that do not fit
        raise unavailable(f"it does not load as the net described by {json_path.name} "
                          f"({type(e).__name__}: {e})") from e
    loaded.net.to(map_location)
    return loaded
