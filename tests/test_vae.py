"""The VAE learns, and its bounds behave as the theory says."""

import math

import pytest
import pytorch_lightning as pl
import torch

from genbench.data.toy import ToyDataModule
from genbench.models.likelihoods import standard_normal_log_prob
from genbench.models.vae import VAE
from tests.helpers import learning_seeds


def _test_elbo(model: VAE, x: torch.Tensor, draws: int = 20) -> float:
    with torch.no_grad():
        return torch.stack([model.elbo(x) for _ in range(draws)]).mean().item()


@pytest.fixture(scope="module")
def trained_on_moons():
    """A small VAE fitted to moons for 10 epochs (about 3 s on 2 CPU cores), with its ELBO before."""
    pl.seed_everything(0)
    dm = ToyDataModule(name="moons", n_train=4000, n_val=500, n_test=1000, batch_size=128)
    dm.setup()
    model = VAE(dm.data_shape, latent_dim=4, hidden_dims=[128, 128])
    before = _test_elbo(model, dm.split_tensor("test"))
    trainer = pl.Trainer(max_epochs=10, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    return model, dm, before, trainer


def test_vae_trained_on_moons_improves_test_elbo_by_a_clear_margin(trained_on_moons):
    model, dm, before, trainer = trained_on_moons
    after = _test_elbo(model, dm.split_tensor("test"))
    # Measured: about -2.33 -> -1.75 nats per example; demand at least 0.4 nats of it.
    assert after > before + 0.4, (before, after)
    assert trainer.callback_metrics["val/nll_nats"].item() < -after + 0.1


def test_iwae_bound_is_at_least_the_elbo_on_the_same_batch(trained_on_moons):
    model, dm, _, _ = trained_on_moons
    torch.manual_seed(2)
    x = dm.split_tensor("test")[:256]
    with torch.no_grad():
        elbo = torch.stack([model.elbo(x) for _ in range(64)]).mean(0)  # per example, MC noise averaged out
        iwae = model.iwae(x, k=64)
        iwae1 = torch.stack([model.iwae(x, k=1) for _ in range(64)]).mean(0)
    gap = iwae - elbo
    stderr = gap.std() / len(x) ** 0.5
    assert gap.mean() > 3 * stderr, (gap.mean().item(), stderr.item())
    # With one importance sample the bound is the ELBO itself (same expectation).
    assert abs((iwae1 - elbo).mean().item()) < 0.05


def test_image_vae_sample_and_likelihood_in_data_space():
    torch.manual_seed(0)
    model = VAE((1, 8, 8), latent_dim=4, conv_channels=[8, 16])
    samples = model.sample(5)
    assert samples.dtype == torch.uint8 and samples.shape == (5, 1, 8, 8)
    x = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    ll = model.log_likelihood(x)
    assert ll.shape == (6,) and torch.isfinite(ll).all()
    # A bound on a pmf over 256 levels per pixel is at most 0 nats.
    assert (model.iwae(x, k=8) <= 0).all()
    mu, _ = model.encode(x)
    assert mu.shape == (6, 4) and model.decode(mu).shape == (6, 1, 8, 8)


def test_conditional_vae_samples_follow_the_labels_and_bounds_marginalize_them():
    torch.manual_seed(0)
    model = VAE((1, 8, 8), num_classes=10, latent_dim=4, conv_channels=[8, 16], conditional=True)
    assert model.is_conditional
    assert not VAE((1, 8, 8), num_classes=10, latent_dim=4, conv_channels=[8, 16]).is_conditional
    torch.manual_seed(1)
    a = model.sample(6, labels=torch.zeros(6, dtype=torch.long))
    torch.manual_seed(1)
    b = model.sample(6, labels=torch.full((6,), 7))
    assert a.shape == (6, 1, 8, 8) and not torch.equal(a, b)  # same z, different labels
    x = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    # The marginal bound is logsumexp over labels of the per-label bound minus log K: check it by hand.
    torch.manual_seed(2)
    marginal = model.log_likelihood(x)
    torch.manual_seed(2)
    per_label = torch.stack([model.elbo(x, torch.full((5,), c)) for c in range(10)])
    torch.testing.assert_close(marginal, torch.logsumexp(per_label, 0) - torch.log(torch.tensor(10.0)))


def test_conditional_vae_learns_to_use_the_labels_on_moons():
    """On moons (label = which moon) samples of one label land on that moon."""
    pl.seed_everything(0)
    dm = ToyDataModule(name="moons", n_train=4000, n_val=500, n_test=1000, batch_size=128)
    dm.setup()
    model = VAE(dm.data_shape, num_classes=2, latent_dim=2, hidden_dims=[128, 128], conditional=True)
    pl.Trainer(max_epochs=10, accelerator="cpu", logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False).fit(model, datamodule=dm)
    upper = model.sample(500, labels=torch.zeros(500, dtype=torch.long))
    lower = model.sample(500, labels=torch.ones(500, dtype=torch.long))
    # The upper moon (label 0) has mean y of about +0.39, the lower one about -0.39.
    assert upper[:, 1].mean() > lower[:, 1].mean() + 0.4


@pytest.mark.parametrize("seed", learning_seeds())
def test_default_vae_samples_move_to_gaussians8(tmp_path, seed):
    """The default config and budget (2000 steps) on the ring of 8 Gaussians, std 0.01."""
    from genbench.evaluation.distances import energy_distance
    from genbench.train import run
    from tests.helpers import compose_quiet_run

    cfg = compose_quiet_run(tmp_path, ["model=vae", "dataset=gaussians8", "eval.speed_repeats=1",
                                       f"seed={seed}"])
    result = run(cfg, tmp_path)
    metrics, model, dm = result.metrics, result.model, result.dm
    test = dm.split_tensor("test")[:2000]
    torch.manual_seed(1)
    before = energy_distance(VAE(dm.data_shape).sample(2000), test)
    after = energy_distance(model.sample(2000), test)
    # Measured over seeds 0-4, with and without validation drawing from the training's random stream (10
    # runs): 0.068 -> 0.020 to 0.045 (median 0.025). The VAE learns the ring but blurs its std-0.01 modes
    # along it (the usual VAE weakness, visible in samples.png), and at a constant learning rate its last
    # iterate wanders, so the margin is 1.25x the worst run rather than the sharper families' 5x.
    assert after < 0.8 * before and after < 0.055, (before, after)
    assert metrics["likelihood_kind"] == "bound" and metrics["train_steps"] == 2000


def _log_p_by_quadrature(model: VAE, x: torch.Tensor, half_width: float = 9.0, points: int = 2000):
    """log p(x) = log of the integral of p(x|z) N(z; 0, 1) over a one-dimensional latent, midpoint rule."""
    step = 2 * half_width / points
    z = (-half_width + step * (torch.arange(points) + 0.5))[:, None]
    joint = [model._log_px_given_z(xi.expand(points, *xi.shape), z, None) + standard_normal_log_prob(z)
             for xi in x]
    return torch.stack([row.logsumexp(0) for row in joint]) + math.log(step)


@pytest.mark.parametrize("shape", [(2,), (1, 4, 4)])
def test_the_bounds_are_below_and_iwae_converges_to_the_log_likelihood_over_a_one_dimensional_latent(shape):
    """log p(x) by quadrature over z (the Gaussian decoder on vectors, the discretized logistic on images)
    against the ELBO and the IWAE bound; weights perturbed so that q(z|x) is a poor posterior. The mean of
    ``draws`` IWAE_256 weights is IWAE with 256 x ``draws`` samples, which must reach log p."""
    torch.manual_seed(0)
    model = VAE(shape, latent_dim=1, hidden_dims=[16, 16], conv_channels=[8, 8]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
        is_image = len(shape) == 3
        x = torch.randint(0, 256, (8, *shape), dtype=torch.uint8) if is_image else 1.5 * torch.randn(8, 2)
        exact = _log_p_by_quadrature(model, x)
        draws = 64
        repeated = x.repeat(draws, *[1] * (x.dim() - 1))
        elbo = model.elbo(repeated).view(draws, -1).mean(0)
        iwae = model.iwae(repeated, 256).view(draws, -1)
    pooled = iwae.logsumexp(0) - math.log(draws)  # IWAE_16384
    # Measured over seeds 0-19, both shapes (median over the 8 examples, nats): log p - ELBO -0.001 to
    # 0.65; log p - IWAE_256 -0.007 to 0.035; log p - IWAE_16384 -0.008 to 0.022. A bound that missed a
    # constant (log K, the prior's or q's normalizer) or averaged the weights' logs would be off by more.
    assert (exact - elbo).median() > -0.02
    assert (exact - iwae.mean(0)).median() > -0.02
    assert (exact - pooled).median().abs() < 0.03, exact - pooled
