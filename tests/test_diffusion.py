"""DDPM learns; its schedules, samplers, bound and classifier-free guidance behave as the papers say."""

import math

import hydra
import numpy
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from genbench.callbacks import DivergenceGuard
from genbench.config import validate
from genbench.errors import DivergedError
from genbench.evaluation.distances import energy_distance
from genbench.models.diffusion import Diffusion, log_spaced_strata
from genbench.models.diffusion_schedule import NoiseSchedule, cosine_betas, linear_betas
from genbench.models.optim import adam_node
from genbench.train import run
from tests.helpers import compose_quiet_run, compose_train, learning_seeds


def _count_calls(net: torch.nn.Module) -> list[int]:
    calls = [0]
    net.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.fixture(scope="module", params=learning_seeds())
def trained_on_gaussians8(tmp_path_factory, request):
    """The default config trained on gaussians8 for 600 steps (the default budget is 2000), with the energy
    distance and the bound of the untrained model of the same seed."""
    out = tmp_path_factory.mktemp("g8")
    cfg = compose_quiet_run(out, ["model=diffusion", "dataset=gaussians8", "trainer.max_steps=600",
                                  "evaluate=false", f"seed={request.param}"])
    pl.seed_everything(request.param)
    untrained = hydra.utils.instantiate(cfg.model, data_shape=(2,), num_classes=None, _convert_="all")
    result = run(cfg, out)
    model, dm = result.model, result.dm
    test = dm.split_tensor("test")[:2000]
    torch.manual_seed(1)
    before = energy_distance(untrained.sample(2000), test), untrained.negative_elbo(test, 100).mean().item()
    return model.eval(), test, before, dm.distribution.modes


def test_default_diffusion_learns_gaussians8(trained_on_gaussians8):
    model, test, (ed_before, _), modes = trained_on_gaussians8
    torch.manual_seed(1)
    samples = model.sample(2000)
    ed_after = energy_distance(samples, test)
    # Every mode keeps its share (250 each of 2000); most samples sit on the circle (the modes' std 0.01
    # needs longer training: about 22% within 0.1 of a mode after 600 steps, 62% after 2000).
    counts = torch.cdist(samples, modes).argmin(1).bincount(minlength=8)
    on_circle = ((samples.norm(dim=1) - 1).abs() < 0.1).float().mean().item()
    assert ((counts > 150) & (counts < 350)).all() and on_circle > 0.7, (counts, on_circle)
    # Measured: about 120 -> 0.018 (2000 samples vs 2000 test points, 600 steps; the untrained network's
    # DDIM samples fly far off; 0.007 after the default 2000 steps).
    assert ed_after < ed_before / 20 and ed_after < 0.03, (ed_before, ed_after)


def test_bound_is_finite_and_falls_with_training(trained_on_gaussians8):
    model, test, (_, nelbo_before), _ = trained_on_gaussians8
    torch.manual_seed(1)
    nelbo = model.negative_elbo(test, 100)
    assert torch.isfinite(nelbo).all()
    # Measured: about 16.7 -> 1.1 nats per point after 600 steps (-0.9 after 2000; data entropy: -4.3).
    assert nelbo.mean().item() < min(nelbo_before - 5.0, 3.0), (nelbo_before, nelbo.mean().item())


def _small(**kw) -> Diffusion:
    torch.manual_seed(0)
    kw = {"timesteps": 50, "sampling_steps": 5, "hidden_dim": 32, "depth": 2, **kw}
    return Diffusion((2,), **kw)


@pytest.mark.parametrize("bound_timesteps", [1, 3])
def test_monte_carlo_bound_with_all_timesteps_is_the_exact_sum_and_unbiased_with_fewer(bound_timesteps):
    model = _small()
    x0 = torch.randn(64, 2)
    noise = torch.randn(50, 64, 2)  # noise[t] draws x_t (the estimator: noise[0] for t = 0, then per stratum)
    exact = model.exact_negative_elbo(x0, noise)
    assert torch.isfinite(exact).all()
    for all_timesteps in (49, 50):  # T - 1 strata of one timestep each, beside t = 0, is the exact sum
        estimate = model.negative_elbo(x0, all_timesteps, noise=noise)
        assert torch.allclose(estimate, exact, rtol=1e-5, atol=1e-5)
    # Fewer timesteps: unbiased, so the mean over repeated estimates matches the exact sum's mean.
    torch.manual_seed(3)
    exact = torch.stack([model.exact_negative_elbo(x0, torch.randn(50, 64, 2)) for _ in range(20)])
    exact_mean, exact_stderr = exact.mean(), exact.mean(1).std() / len(exact) ** 0.5
    estimates = torch.stack([model.negative_elbo(x0, bound_timesteps).mean() for _ in range(300)])
    stderr = estimates.std() / len(estimates) ** 0.5
    stderr = (stderr**2 + exact_stderr**2).sqrt()
    assert abs(estimates.mean() - exact_mean) < 4 * stderr, (estimates.mean(), exact_mean, stderr)


class _GaussianOracle(torch.nn.Module):
    """The exact noise prediction E[eps | x_t] for data N(mean, std^2 I): a stand-in for a well-trained
    network, whose bound is dominated, as on gaussians8, by the decoder term L_0."""

    def __init__(self, schedule: NoiseSchedule, mean: torch.Tensor, std: float) -> None:
        super().__init__()
        self.schedule, self.mean, self.std = schedule, mean, std

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels=None) -> torch.Tensor:
        abar = self.schedule.at(self.schedule.alphas_cumprod, t, x)
        return (1 - abar).sqrt() * (x - abar.sqrt() * self.mean) / (abar * self.std**2 + 1 - abar)


def _decoder_term_drawn_like_the_rest(model: Diffusion, x0: torch.Tensor, k: int) -> torch.Tensor:
    """The earlier estimator: K strata over all T timesteps, so t = 0 is drawn with probability K / T and
    weighted T / K."""
    edges = torch.tensor([i * model.hp.timesteps // k for i in range(k + 1)])
    sizes = edges[1:] - edges[:-1]
    t = edges[:-1] + (torch.rand(len(x0), k) * sizes).long()
    terms = [sizes[i] * model._bound_term(x0, t[:, i], torch.randn_like(x0)) for i in range(k)]
    return model._prior_term(x0) + sum(terms)


def test_bound_computes_the_decoder_term_for_every_example_and_has_a_fraction_of_the_variance():
    model = _small()
    mean = torch.tensor([1.0, 0.0])
    model.ema = _GaussianOracle(model.schedule, mean, 0.01)
    torch.manual_seed(0)
    x0 = mean + 0.01 * torch.randn(32, 2)
    with torch.no_grad():
        ours = torch.stack([model.negative_elbo(x0, 3) for _ in range(200)])  # (draws, examples)
        earlier = torch.stack([_decoder_term_drawn_like_the_rest(model, x0, 3) for _ in range(200)])
        exact = model.exact_negative_elbo(x0, torch.randn(50, 32, 2))
    # Both unbiased: measured means -4.44 (ours) and -4.52 (earlier, +- 0.22) against the exact -4.44.
    assert abs(ours.mean() - exact.mean()) < 0.05
    assert abs(earlier.mean() - exact.mean()) < 4 * earlier.std() / earlier.numel() ** 0.5
    # Per-example standard deviation over draws: measured 0.036 vs 18 nats (0.17 with equal strata of
    # t = 1..T-1 instead of log-spaced ones).
    ratio = ours.std(0).median() / earlier.std(0).median()
    assert ratio < 0.01, ratio


def _ho_et_al_closed_form(betas: torch.Tensor, variance: str, mean: float, std: float,
                          x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per dimension, in float64, written from Ho et al. (2020) eq. 5 apart from the model's code: the
    negative ELBO in expectation over x_1..x_T, and the exact NLL of the reverse process whose noise
    prediction is E[eps | x_t] of data N(mean, std^2). That prediction is linear in x_t, so each reverse
    step is x_{t-1} = a_t x_t + b_t + sigma_t z and everything is Gaussian. Paper indices: t = 1..T."""
    T = len(betas)
    beta = [0.0] + betas.tolist()
    abar = [1.0]
    for t in range(1, T + 1):
        abar.append(abar[-1] * (1 - beta[t]))
    post_var = [0.0] + [beta[t] * (1 - abar[t - 1]) / (1 - abar[t]) for t in range(1, T + 1)]
    # sigma_t^2: beta_t ("large") or beta~_t ("small"), beta~_1 = 0 replaced by beta~_2
    sigma2 = [0.0] + [beta[t] if variance == "large" else post_var[max(t, 2)] for t in range(1, T + 1)]
    a, b = [0.0], [0.0]
    for t in range(1, T + 1):  # eq. 11 with eps_hat = g (x_t - sqrt(abar_t) mean)
        g = math.sqrt(1 - abar[t]) / (abar[t] * std**2 + 1 - abar[t])
        a.append((1 - beta[t] / math.sqrt(1 - abar[t]) * g) / math.sqrt(1 - beta[t]))
        b.append(beta[t] / math.sqrt(1 - abar[t]) * g * math.sqrt(abar[t]) * mean / math.sqrt(1 - beta[t]))
    # L_T = KL(N(sqrt(abar_T) x0, 1 - abar_T) || N(0, 1))
    bound = 0.5 * (abar[T] * x0**2 + (1 - abar[T]) - 1 - math.log(1 - abar[T]))
    for t in range(1, T + 1):  # x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
        if t == 1:  # L_0 = E[-log N(x0; a_1 x_1 + b_1, sigma_1^2)]
            gap2 = ((1 - a[1] * math.sqrt(abar[1])) * x0 - b[1]) ** 2 + a[1] ** 2 * (1 - abar[1])
            bound = bound + 0.5 * math.log(2 * math.pi * sigma2[1]) + gap2 / (2 * sigma2[1])
            continue
        # L_{t-1} = E[KL(N(c0 x0 + c1 x_t, beta~_t) || N(a_t x_t + b_t, sigma_t^2))]
        c0 = math.sqrt(abar[t - 1]) * beta[t] / (1 - abar[t])
        c1 = math.sqrt(1 - beta[t]) * (1 - abar[t - 1]) / (1 - abar[t])
        gap2 = ((c0 + (c1 - a[t]) * math.sqrt(abar[t])) * x0 - b[t]) ** 2 + (c1 - a[t]) ** 2 * (1 - abar[t])
        bound = bound + 0.5 * (math.log(sigma2[t] / post_var[t]) + (post_var[t] + gap2) / sigma2[t] - 1)
    m, v = 0.0, 1.0  # x_T ~ N(0, 1) through the T reverse steps
    for t in range(T, 0, -1):
        m, v = a[t] * m + b[t], a[t] ** 2 * v + sigma2[t]
    nll = 0.5 * math.log(2 * math.pi * v) + (x0 - m) ** 2 / (2 * v)
    return bound, nll


@pytest.mark.parametrize("variance", ["small", "large"])
@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("timesteps", [10, 1000])
def test_the_bound_is_ho_et_als_in_closed_form_and_lies_above_the_exact_nll(timesteps, kind, variance):
    """With the exact noise prediction of Gaussian data every term is a quadratic in each x_t's noise, so
    three Gauss-Hermite nodes give the bound's exact expectation; it must equal the closed form above
    (each term, its weights and the network's timestep), and exceed the model's exact NLL."""
    mean, std = 0.3, 0.2
    model = Diffusion((1,), timesteps=timesteps, schedule=kind, variance=variance, sampling_steps=1)
    model.ema = _GaussianOracle(model.schedule, torch.tensor(mean), std)
    x0 = torch.tensor([-1.0, -0.2, 0.1, 0.3, 0.35, 0.6, 1.0, 2.0], dtype=torch.float64)
    nodes, weights = numpy.polynomial.hermite_e.hermegauss(3)
    expected = sum(w / weights.sum() * model.exact_negative_elbo(
        x0.float()[:, None], torch.full((timesteps, len(x0), 1), float(e))).double()
        for e, w in zip(nodes, weights, strict=True))
    betas = {"linear": linear_betas, "cosine": cosine_betas}[kind](timesteps)
    bound, nll = _ho_et_al_closed_form(betas, variance, mean, std, x0)
    # Measured: within 7e-4 nats (cosine, small, T = 1000: the schedule's float32 buffers); a network
    # called at t + 1, or a decoder with variance beta_1 instead of beta~_2, misses by 0.16 or more.
    assert (expected - bound).abs().max() < 2e-3, (expected - bound)
    assert (bound - nll).min() > 0 and (expected - nll).min() > 0  # smallest margin measured: 0.0039


def test_the_prior_term_is_the_kl_from_q_x_T_to_the_standard_normal():
    model = _small(schedule="cosine")
    x0 = torch.tensor([[-1.0, 0.5], [2.0, 0.0]])
    abar = model.schedule.alphas_cumprod[-1]
    q = torch.distributions.Normal(abar.sqrt() * x0, (1 - abar).sqrt())
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(model._prior_term(x0), kl, rtol=1e-5, atol=1e-7)


def test_log_spaced_strata_partition_the_timesteps_after_zero():
    assert log_spaced_strata(1000, 4) == [1, 6, 32, 178, 1000]
    assert log_spaced_strata(50, 49) == list(range(1, 51))  # one timestep each: the exact sum
    for timesteps in range(2, 60):
        for strata in range(1, timesteps):
            edges = log_spaced_strata(timesteps, strata)
            assert edges[0] == 1 and edges[-1] == timesteps and len(edges) == strata + 1
            assert all(b > a for a, b in zip(edges, edges[1:], strict=False))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_is_decreasing_in_the_unit_interval_and_q_sample_has_the_right_marginal(kind):
    s = NoiseSchedule(1000, kind)
    abar = s.alphas_cumprod
    assert (abar > 0).all() and (abar < 1).all() and (abar[1:] < abar[:-1]).all()
    assert abar[0] > 0.999 and abar[-1] < 1e-3  # starts at the data, ends at (nearly) pure noise
    if kind == "linear":
        assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    else:  # cos^2 shape: near half-way through at T/2, and slower to destroy information than linear
        assert 0.4 < abar[500] < 0.6
        assert abar[500] > NoiseSchedule(1000, "linear").alphas_cumprod[500] * 5  # 0.49 vs 0.078
    torch.manual_seed(0)
    x0 = torch.tensor([2.0, -1.0, 0.5])
    t = torch.full((200_000,), 300)
    xt = s.q_sample(x0.expand(len(t), 3), t, torch.randn(len(t), 3))
    assert torch.allclose(xt.mean(0), abar[300].sqrt() * x0, atol=0.01)
    assert torch.allclose(xt.var(0), (1 - abar[300]).expand(3), atol=0.01)


def test_ddim_eta0_is_deterministic_and_samplers_make_the_stated_number_of_calls():
    model = _small(timesteps=50, sampler="ddim", sampling_steps=7, eta=0.0)
    calls = _count_calls(model.ema)
    z, other = torch.randn(16, 2), torch.randn(16, 2)
    a, b = model.sample(16, noise=z), model.sample(16, noise=z.clone())
    assert torch.equal(a, b) and not torch.allclose(a, model.sample(16, noise=other))
    assert calls[0] == 3 * 7 == 3 * model.nfe()
    model.hp.eta = 1.0  # stochastic DDIM: the same x_T no longer fixes the sample
    assert not torch.allclose(model.sample(16, noise=z), a)
    model.use_sampler("ddpm", 50)  # Ho et al.'s ancestral sampler: all T steps
    calls[0] = 0
    model.sample(16, noise=z)
    assert calls[0] == 50 == model.nfe()


def _two_class_images(n: int) -> TensorDataset:
    """Digits-shaped (1x8x8) images whose label is their brightness: class 0 dark, class 1 bright."""
    y = torch.arange(n) % 2
    x = torch.where(y[:, None, None, None] == 1, 220, 30) + torch.randint(-20, 21, (n, 1, 8, 8))
    return TensorDataset(x.clamp(0, 255).to(torch.uint8), y)


def test_classifier_free_guidance_labels_change_samples_and_scale_one_is_the_conditional_model(tmp_path):
    pl.seed_everything(0)
    model = Diffusion((1, 8, 8), num_classes=2, conditional=True, timesteps=100, unet_channels=16,
                      channel_mults=[1], optimizer=adam_node(lr=2e-3), ema_decay=0.0, sampling_steps=20,
                      p_uncond=0.2)
    trainer = pl.Trainer(max_steps=150, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(_two_class_images(512), batch_size=64, shuffle=True))
    model.eval()
    assert trainer.callback_metrics["train/loss"].item() < 0.5
    z = torch.randn(8, 1, 8, 8)
    dark = model.sample(8, labels=torch.zeros(8, dtype=torch.long), noise=z).float().mean()
    bright = model.sample(8, labels=torch.ones(8, dtype=torch.long), noise=z).float().mean()
    # Measured: about 40 vs 204 (the classes' brightnesses are 30 and 220).
    assert dark < 80 and bright > 170, (dark, bright)
    # guidance_scale 1 is the plain conditional prediction (one call); s != 1 extrapolates (two calls).
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([5, 20, 50, 99]), torch.tensor([0, 1, 0, 1])
    null = torch.full((4,), 2)
    calls = _count_calls(model.ema)
    with torch.no_grad():
        cond, uncond = model.ema(x, t, y), model.ema(x, t, null)
        calls[0] = 0
        assert torch.equal(model.denoiser(y, 1.0)(x, t), cond) and calls[0] == 1
        assert torch.allclose(model.denoiser(y, 3.0)(x, t), uncond + 3 * (cond - uncond), atol=1e-6)
        assert calls[0] == 3
        assert torch.equal(model.denoiser()(x, t), uncond)  # no labels: the unconditional model
    model.hp.guidance_scale = 3.0
    assert model.nfe(guided=True) == 40 and model.nfe() == 20
    # The EMA weights travel with the checkpoint (loaded as train.py does, weights_only).
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = Diffusion.load_from_checkpoint(tmp_path / "m.ckpt", map_location="cpu", weights_only=True).eval()
    with torch.no_grad():
        assert torch.equal(loaded.denoiser(y)(x, t), cond)


def test_with_gradient_accumulation_the_ema_averages_once_per_optimizer_step():
    """accumulate_grad_batches=4: the network changes after batches 3 and 7, and so must the average (it
    was pulled towards the same weights after every batch, 18% of the net-EMA gap off)."""
    model = _small()
    changed: list[tuple[bool, bool]] = []

    class Watch(pl.Callback):  # compare at each batch's start: both change in the optimizer's step
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._compare(pl_module)

        def on_train_end(self, trainer, pl_module):
            self._compare(pl_module)

        def _compare(self, pl_module):
            now = [torch.cat([p.flatten() for p in m.parameters()]).clone() for m in (pl_module.net,
                                                                                      pl_module.ema)]
            if hasattr(self, "before"):
                changed.append(tuple(not torch.equal(a, b) for a, b in zip(self.before, now, strict=True)))
            self.before = now

    data = DataLoader(TensorDataset(torch.randn(32, 2), torch.zeros(32)), batch_size=4)
    trainer = pl.Trainer(max_steps=2, accumulate_grad_batches=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Watch()])
    trainer.fit(model, data)
    assert changed == [(False, False)] * 3 + [(True, True)] + [(False, False)] * 3 + [(True, True)]


def test_nan_loss_still_stops_training_with_the_ema_hook(tmp_path):
    """The family's own hook (its EMA update after each optimizer step, once in on_train_batch_end) cannot
    bypass the run's divergence guard."""
    model = _small()
    training_step = model.training_step
    model.training_step = lambda batch, batch_idx: training_step(batch, batch_idx) * float("nan")
    data = DataLoader(TensorDataset(torch.randn(8, 2), torch.zeros(8)), batch_size=4)
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         callbacks=[DivergenceGuard()], enable_model_summary=False)
    with pytest.raises(DivergedError, match="training loss became nan at step 0"):
        trainer.fit(model, data)


def test_a_nan_loss_at_the_last_step_is_caught_too(tmp_path):
    """The guard reads each step's check one step late (no GPU wait per step): the last is read at the end."""
    model = _small()
    training_step = model.training_step
    model.training_step = lambda batch, batch_idx: training_step(batch, batch_idx) * (
        float("nan") if model.global_step == 2 else 1.0)
    data = DataLoader(TensorDataset(torch.randn(8, 2), torch.zeros(8)), batch_size=4)
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         callbacks=[DivergenceGuard()], enable_model_summary=False)
    with pytest.raises(DivergedError, match="training loss became nan at step 2"):
        trainer.fit(model, data)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_image_samples_are_uint8_and_the_bound_is_a_density_on_0_256(shape):
    torch.manual_seed(0)
    model = Diffusion(shape, num_classes=10, conditional=True, timesteps=100, sampling_steps=3,
                      bound_timesteps=2)
    samples = model.sample(2)
    assert samples.dtype == torch.uint8 and samples.shape == (2, *shape)
    x = torch.randint(0, 256, (8, *shape), dtype=torch.uint8)
    ll = model.log_likelihood(x)
    assert ll.shape == (8,) and torch.isfinite(ll).all()
    # Uniform random pixels have entropy 8 bits/dim: no density on [0, 256)^D can beat it on average.
    # (Forgetting the Jacobian of the map to [-1, 1] would give about 8 - log2(127.5) = 1 bit less.)
    bpd = -ll.mean().item() / (model.data_dim * torch.log(torch.tensor(2.0)).item())
    assert 8.0 < bpd < 40.0, bpd  # measured: 17.7, 18.4, 31.0 untrained


def test_cifar10_experiment_composes_and_validates():
    cfg = compose_train(["experiment=diffusion_cifar10"])
    model_cfg = validate(cfg)["model"]
    assert model_cfg.channel_mults == [1, 2, 2, 2] and model_cfg.attention
    assert cfg.dataset._target_.endswith("CIFAR10DataModule")


@pytest.mark.parametrize("family", ["diffusion", "flow_matching"])
def test_the_backbone_is_chosen_by_config(family):
    """model.backbone: the U-Net (images) or the TimeMLP (any data; images flattened), auto by data shape."""
    from genbench.errors import ConfigError
    from genbench.models.registry import families
    from genbench.nets.time_mlp import TimeMLP
    from genbench.nets.unet import UNet

    cls = families()[family]
    assert isinstance(cls((1, 8, 8)).net, UNet) and isinstance(cls((2,)).net, TimeMLP)
    torch.manual_seed(0)
    mlp = cls((1, 8, 8), backbone="mlp", hidden_dim=32, depth=1, sampling_steps=4).eval()
    assert isinstance(mlp.net, TimeMLP)
    x = mlp.sample(3)
    assert x.shape == (3, 1, 8, 8) and x.dtype == torch.uint8
    assert torch.isfinite(mlp.log_likelihood(x)).all()
    with pytest.raises(ConfigError, match="backbone=unet needs image data"):
        cls((2,), backbone="unet")
