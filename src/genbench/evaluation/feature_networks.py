"""The feature networks image metrics are computed with, as a registry (torch-fidelity's pattern): each
entry says what its features are called for a dataset, whether the run's ``eval`` config asks for it,
how to load it, and whether it also gives class logits. The evaluation stage scores with every entry
the config asks for; a new network is one entry here and its switch in ``EvalConfig``."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from genbench.data.base import GenerativeDataModule
from genbench.evaluation.feature_net import feature_net_path, load_feature_net
from genbench.evaluation.inception import load_inception


@dataclass(frozen=True)
class FeatureNetwork:
    name: Callable[[GenerativeDataModule], str]  # its metrics' suffix: fid_inception, fd_digits_cnn
    wanted: Callable[[Any, GenerativeDataModule], bool]  # (eval config, data): score with it?
    load: Callable[[Any, GenerativeDataModule, torch.device], Any]  # raises FeatureExtractorUnavailable
    classifier: bool  # its logits are the dataset's classes: classifier score, coverage, conditional accuracy


FEATURE_NETWORKS: dict[str, FeatureNetwork] = {
    "inception": FeatureNetwork(
        name=lambda dm: "inception",
        wanted=lambda cfg, dm: cfg.inception,
        load=lambda cfg, dm, device: load_inception(cfg.inception_weights, cfg.inception_download, device),
        classifier=False),
    "dataset_classifier": FeatureNetwork(  # scripts/train_feature_net.py trains it
        name=lambda dm: f"{dm.name}_cnn",
        wanted=lambda cfg, dm: cfg.feature_net and bool(dm.num_classes),
        load=lambda cfg, dm, device: load_feature_net(feature_net_path(cfg.feature_net_dir, dm.name), device,
                                                      dm.selection_args()),
        classifier=True),
}
