"""The VAE learns, and its bounds behave as the theory says."""

import pytorch_lightning as pl
import torch

from genbench.data.toy import ToyDataModule
from genbench.models.vae import VAE


def _moons(n_train: int = 4000) -> ToyDataModule:
    dm = ToyDataModule(name="moons", n_train=n_train, n_val=500, n_test=1000, batch_size=128)
    dm.setup()
    return dm


def _test_elbo(model: VAE, x: torch.Tensor, draws: int = 20) -> float:
    with torch.no_grad():
        return torch.stack([model.elbo(x) for _ in range(draws)]).mean().item()


def test_vae_trained_on_moons_improves_test_elbo_by_a_clear_margin():
    pl.seed_everything(0)
    dm = _moons()
    model = VAE(dm.data_shape, latent_dim=4, hidden_dims=[64, 64])
    x_test = dm.split_tensor("test")
    before = _test_elbo(model, x_test)
    trainer = pl.Trainer(max_epochs=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    after = _test_elbo(model, x_test)
    # An untrained decoder sits near -2.6 nats; a fitted one is well above -2.0 on moons.
    assert after > before + 0.5, (before, after)
    assert trainer.callback_metrics["val/nll_nats"].item() < -after + 0.1


def test_iwae_bound_is_at_least_the_elbo_on_the_same_batch():
    pl.seed_everything(1)
    dm = _moons(2000)
    model = VAE(dm.data_shape, latent_dim=2, hidden_dims=[32, 32])
    opt = model.configure_optimizers()
    for x, _ in dm.train_dataloader():
        loss = -model.elbo(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = dm.split_tensor("test")[:256]
    with torch.no_grad():
        elbos = torch.stack([model.elbo(x) for _ in range(64)])  # (draws, B)
        iwae = model.iwae(x, k=64)
    elbo_mean = elbos.mean().item()
    stderr = (elbos.mean(0).std() / len(x) ** 0.5).item()
    assert iwae.mean().item() > elbo_mean + stderr, (iwae.mean().item(), elbo_mean, stderr)
    # The importance-weighted bound with one sample is the ELBO itself (same expectation).
    iwae1 = torch.stack([model.iwae(x, k=1) for _ in range(64)]).mean().item()
    assert abs(iwae1 - elbo_mean) < 0.05


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
    mu, log_std = model.encode(x)
    assert mu.shape == (6, 4) and model.decode(mu).shape == (6, 1, 8, 8)
