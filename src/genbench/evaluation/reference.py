"""Features of real reference images, computed once per (data, extractor, count) and cached on disk.

Real features dominate the cost of image metrics (Inception on 50,000 CIFAR-10 images), and they are the
same for every run of a sweep. The cache key names the dataset, split, extractor with its weight checksum
(and the version of the code that resizes and normalises for it, where an extractor names one, and TF32
where it runs on a GPU with TF32) and the number of images, plus a hash of the image bytes themselves, so
a changed split seed, slice, file or library can never reuse stale features. Entries are plain tensors,
loaded with ``weights_only=True`` and checked against the images and the extractor before use (an entry
of the wrong shape is recomputed), and written under a unique temporary name then renamed, so concurrent
runs never read half an entry.
"""

import hashlib
import logging
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from genbench.files import save_atomically

log = logging.getLogger(__name__)
SUBSET_SEED = 0  # which real images form a reference subset: fixed, so every run scores against the same


class FeatureExtractor(Protocol):
    name: str
    checksum: str
    feature_dim: int

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
    code = getattr(extractor, "code_version", "")  # e.g. torch-fidelity's, whose code resizes for Inception
    code = f"-code{hashlib.sha256(code.encode()).hexdigest()[:8]}" if code else ""
    name = (f"{dataset}-{split}-{extractor.name}-{extractor.checksum[:12]}{code}{_numerics(extractor)}"
            f"-n{len(images)}-data{data_hash}.pt")
    return cache_dir / name


def _numerics(extractor: FeatureExtractor) -> str:
    """``-tf32`` where the extractor's network (``.net``) runs on a GPU with TF32 on: its features differ
    from float32's (about 1e-3 of an FD), so a float32 run must not compare against them."""
    net = getattr(extractor, "net", None)
    weight = next(iter(net.parameters()), None) if net is not None else None
    on_gpu = weight is not None and weight.device.type == "cuda"
    tf32 = torch.get_float32_matmul_precision() != "highest" or torch.backends.cudnn.allow_tf32
    return "-tf32" if on_gpu and tf32 else ""


def _check_entry(entry: object, extractor: FeatureExtractor, n: int) -> tuple[Tensor, Tensor]:
    """(features, logits) of a cache entry, or ValueError saying how it does not fit ``n`` images."""
    if not isinstance(entry, dict):
        raise ValueError(f"an entry is a dict of tensors, found {type(entry).__name__}")
    features, logits = entry.get("features"), entry.get("logits")
    for name, value in (("features", features), ("logits", logits)):
        fits = isinstance(value, Tensor) and value.is_floating_point() and value.ndim == 2 and len(value) == n
        if not fits:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a float tensor of {n} rows, found {shape}")
    if features.shape[1] != extractor.feature_dim:
        raise ValueError(f"features have {features.shape[1]} dimensions, {extractor.name} gives "
                         f"{extractor.feature_dim}")
    return features, logits


def reference_features(extractor: FeatureExtractor, images: Tensor, *, dataset: str, split: str,
                       cache_dir: Path | None, batch_size: int) -> tuple[Tensor, Tensor, dict]:
    """(features, logits, provenance) of real ``images``, read from the cache when it holds them."""
    path = cache_file(cache_dir, dataset, split, extractor, images) if cache_dir else None
    prov = {"dataset": dataset, "split": split, "n_real": len(images),
            "cache_file": str(path) if path else None}
    if path is not None and path.is_file():
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            features, logits = _check_entry(entry, extractor, len(images))
            log.info("real %s features of %s/%s from cache %s", extractor.name, dataset, split, path)
            return features, logits, {**prov, "from_cache": True}
        except Exception as e:  # a truncated, foreign or misshapen file: recompute and overwrite it
            log.warning("ignoring unusable feature cache %s (%s); recomputing", path, e)
    features, logits = extractor.extract(images, batch_size)
    if path is not None:
        try:  # renamed into place once whole: concurrent runs never share a half entry
            path.parent.mkdir(parents=True, exist_ok=True)
            save_atomically({"features": features, "logits": logits}, path)
        except OSError as e:  # a cache saves later runs this work; a full disk must not cost this run's
            log.warning("could not write the feature cache %s (%s); this run goes on without it (free space "
                        "there, or point eval.cache_dir elsewhere)", path, e)
            prov["cache_file"] = None
    return features, logits, {**prov, "from_cache": False}
