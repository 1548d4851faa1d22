"""Config composition for every dataset, and wrong values rejected with the key named."""

import hydra
import pytest
from hydra.errors import ConfigCompositionException

from genbench.config import validate
from genbench.errors import ConfigError
from tests.helpers import DATASETS, compose_train


def test_every_dataset_config_is_present():
    expected = {"gaussians8", "gaussians25", "moons", "swissroll", "checkerboard", "rings", "digits", "mnist",
                "fashion_mnist", "cifar10"}
    assert expected <= set(DATASETS)


@pytest.mark.parametrize("dataset", DATASETS)
def test_vae_composes_and_builds_on_every_dataset(dataset):
    cfg = compose_train([f"dataset={dataset}", "model=vae"])
    validate(cfg)
    dm = hydra.utils.instantiate(cfg.dataset, _convert_="all")  # reads no files until setup()
    model = hydra.utils.instantiate(cfg.model, data_shape=dm.data_shape, num_classes=dm.num_classes,
                                    _convert_="all")
    assert model.data_shape == dm.data_shape
    assert model.likelihood_kind == "bound" and model.has_latent
    assert model.sample(3).shape == (3, *dm.data_shape)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.latent_dim=0", "model.latent_dim"),
        ("model.lr=-0.001", "model.lr"),
        ("dataset.batch_size=0", "dataset.batch_size"),
        ("model.latent_dim=many", "model.latent_dim"),
        ("model.hidden_dims=[64,0]", "model.hidden_dims"),
        ("model.sample_mode=median", "model.sample_mode"),
        ("+model.latnet_dim=4", "model.latnet_dim"),
        ("seed=-3", "seed"),
        ("eval.speed_repeats=0", "eval.speed_repeats"),
    ],
)
def test_wrong_values_are_rejected_naming_the_key(override, key):
    cfg = compose_train([override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_unknown_key_without_plus_fails_at_composition_naming_it():
    with pytest.raises(ConfigCompositionException, match="latnet_dim"):
        compose_train(["model.latnet_dim=4"])


def test_unknown_option_fails_listing_the_available_ones():
    with pytest.raises(ConfigCompositionException, match=r"(?s)mnisst.*Available options.*mnist"):
        compose_train(["dataset=mnisst"])
