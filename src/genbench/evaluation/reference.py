"""Features of real reference images, computed once per (data, extractor, count) and cached on disk.

Real features dominate the cost of image metrics (Inception on 50,000 CIFAR-10 images), and they are the
same for every run of a sweep. The cache key names the dataset, split, extractor with its weight checksum
and the number of images, plus a hash of the image bytes themselves, so a changed split seed, slice or
file can never reuse stale features. Entries are plain tensors, loaded with ``weights_only=True``.
"""

import hashlib
import logging
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

log = logging.getLogger(__name__)
SUBSET_SEED = 0  # which real images form a reference subset: fixed, so every run scores against the same


class FeatureExtractor(Protocol):
    name: str
    checksum: str

    def extract(self, images: Tensor, batch_size: int = ...) -> tuple[Tensor, Tensor]: ...

    def provenance(self) -> dict: ...


def reference_images(images: Tensor, count: int | None) -> Tensor:
    """All ``images``, or a fixed random subset of ``count`` of them."""
    if count is None or count >= len(images):
        return images
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SUBSET_SEED))
    return images[order[:count].sort().values]


def cache_file(cache_dir: Path, dataset: str, split: str, extractor: FeatureExtractor,
               images: Tensor) -> Path:
    data_hash = hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:12]
    name = f"{dataset}-{split}-{extractor.name}-{extractor.checksum[:12]}-n{len(images)}-data{data_hash}.pt"
    return cache_dir / name


def reference_features(extractor: FeatureExtractor, images: Tensor, *, dataset: str, split: str,
                       cache_dir: Path | None, batch_size: int) -> tuple[Tensor, Tensor, dict]:
    """(features, logits, provenance) of real ``images``, read from the cache when it holds them."""
    path = cache_file(cache_dir, dataset, split, extractor, images) if cache_dir else None
    prov = {"dataset": dataset, "split": split, "n_real": len(images),
            "cache_file": str(path) if path else None}
    if path is not None and path.is_file():
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            log.info("real %s features of %s/%s from cache %s", extractor.name, dataset, split, path)
            return entry["features"], entry["logits"], {**prov, "from_cache": True}
        except Exception as e:  # a truncated or foreign file: recompute and overwrite it
            log.warning("ignoring unreadable feature cache %s (%s); recomputing", path, e)
    features, logits = extractor.extract(images, batch_size)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"features": features, "logits": logits}, tmp)
        tmp.replace(path)  # atomic: a killed run never leaves half a cache entry
    return features, logits, {**prov, "from_cache": False}
