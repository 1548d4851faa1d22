"""The EBM learns 2D data, its quadrature density is normalized, and Langevin sampling goes downhill."""

import pytest
import pytorch_lightning as pl
import torch

from genbench.config import validate
from genbench.evaluation.distances import energy_distance
from genbench.models.ebm import EBM
from genbench.train import run
from tests.helpers import compose_quiet_run, compose_train, learning_seeds


@pytest.fixture(scope="module", params=learning_seeds())
def trained_on_gaussians8(tmp_path_factory, request):
    """The default EBM run on gaussians8 through the full pipeline, with an untrained twin."""
    out = tmp_path_factory.mktemp("ebm_gaussians8")
    overrides = ["model=ebm", "dataset=gaussians8", "eval.speed_batch_size=16", "eval.speed_repeats=1",
                 "eval.speed_warmup=0", "eval.plot_samples_vector=200", "eval.mode_samples=200",
                 f"seed={request.param}"]
    cfg = compose_quiet_run(out, overrides)
    result = run(cfg, out)
    metrics, model, dm = result.metrics, result.model, result.dm
    pl.seed_everything(0)
    untrained = EBM(dm.data_shape, **model.hp.to_dict())
    untrained.fit_data_stats(dm.split_tensor("train"))
    return metrics, model, untrained, dm


def test_ebm_learns_gaussians8_by_energy_distance(trained_on_gaussians8):
    _, model, untrained, dm = trained_on_gaussians8
    test = dm.split_tensor("test")[:2000]
    torch.manual_seed(1)
    before = energy_distance(untrained.sample(2000), test)
    after = energy_distance(model.sample(2000), test)
    # Measured: about 0.057 -> 0.005 (samples of the untrained net are nearly uniform on the box).
    assert after < before / 5 and after < 0.015, (before, after)


def test_quadrature_nll_falls_with_training(trained_on_gaussians8):
    metrics, model, untrained, dm = trained_on_gaussians8
    test = dm.split_tensor("test")
    with torch.no_grad():
        before = -untrained.log_likelihood(test).mean().item()
        after = -model.log_likelihood(test).mean().item()
    assert metrics["likelihood_kind"] == "quadrature"
    assert metrics["nll_nats"] == pytest.approx(after, abs=1e-3)
    assert metrics["nfe"] == model.hp.sample_steps
    # Measured: about 2.27 -> 0.39 nats (uniform on the 3.1 x 3.1 box would be 2.28); demand 0.7 nats.
    assert after < before - 0.7, (before, after)


@pytest.mark.parametrize("resolution", [64, 200])
def test_quadrature_density_integrates_to_one_on_its_grid(resolution):
    torch.manual_seed(0)
    model = EBM((2,), hidden_dims=[32, 32], grid_resolution=resolution)
    data = torch.randn(500, 2) * torch.tensor([3.0, 0.5]) + torch.tensor([5.0, -2.0])
    model.fit_data_stats(data)
    grid, area = model.quadrature_grid()
    assert grid.shape == (resolution**2, 2)
    # The grid lies in data space: it covers the (shifted, anisotropic) training data, with a margin.
    lo, hi = grid.min(0).values, grid.max(0).values
    assert (lo < data.min(0).values).all() and (hi > data.max(0).values).all()
    assert (hi - lo)[1] < (hi - lo)[0] / 3
    with torch.no_grad():
        mass = (model.log_likelihood(grid).double().exp().sum() * area).item()
    assert mass == pytest.approx(1.0, abs=1e-3)


def test_quadrature_normalizer_converges_with_resolution():
    torch.manual_seed(0)
    model = EBM((2,), hidden_dims=[32, 32], grid_resolution=100)
    model.fit_data_stats(torch.randn(500, 2))
    coarse = model.log_partition().item()
    model.hp.grid_resolution = 400
    assert model.log_partition().item() == pytest.approx(coarse, abs=1e-3)


def test_log_z_is_integrated_once_per_state_of_the_weights(monkeypatch):
    """The evaluation calls log_likelihood batch by batch: at dataset.batch_size=1 it integrated the grid
    5,000 times. Once per state of the weights gives the same values; a change of the weights, the data's
    box or the resolution integrates anew."""
    torch.manual_seed(0)
    model = EBM((2,), hidden_dims=[32, 32], grid_resolution=64).eval()
    model.fit_data_stats(torch.randn(500, 2))
    integrations = []
    integrate = model.log_partition
    monkeypatch.setattr(model, "log_partition", lambda: integrations.append(1) or integrate())
    x = torch.randn(8, 2)
    with torch.no_grad():
        one_by_one = torch.cat([model.log_likelihood(row[None]) for row in x])
        assert len(integrations) == 1
        assert torch.equal(one_by_one, -model.energy(model.to_model(x)) - integrate())
        next(model.parameters()).add_(0.1)  # an optimizer step
        model.log_likelihood(x)
        model.fit_data_stats(torch.randn(500, 2) * 2)  # another box
        model.log_likelihood(x)
        model.hp.grid_resolution = 32
        model.log_likelihood(x)
        model.log_likelihood(x)
    assert len(integrations) == 4


def test_langevin_sampling_moves_down_the_energy_and_counts_nfe():
    torch.manual_seed(0)
    model = EBM((2,), hidden_dims=[32, 32], sample_steps=30, step_size=0.1)
    model.fit_data_stats(torch.randn(500, 2))
    start = model.noise(512)
    calls = []
    model.energy_net.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        end = model.langevin(start, model.nfe())
        e_start, e_end = model.energy(start).mean().item(), model.energy(end).mean().item()
    assert len(calls) == model.nfe() + 2 == 32
    assert e_end < e_start - 0.01, (e_start, e_end)
    assert ((end >= model.box_lo) & (end <= model.box_hi)).all()
    calls.clear()
    samples = model.sample(7)
    assert samples.shape == (7, 2) and samples.dtype == torch.float32 and len(calls) == 30


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_image_ebm_has_no_likelihood_and_samples_uint8(shape):
    torch.manual_seed(0)
    model = EBM(shape, conv_channels=[8, 16], sample_steps=3)
    assert model.likelihood_kind == "none" and EBM.likelihood_kind == "none"
    samples = model.sample(3)
    assert samples.dtype == torch.uint8 and samples.shape == (3, *shape)
    assert samples.min() >= 0 and samples.max() <= 255 and samples.float().std() > 0
    with pytest.raises(NotImplementedError, match="no likelihood"):
        model.log_likelihood(torch.zeros(2, *shape, dtype=torch.uint8))
    loss = model.training_step((torch.randint(0, 256, (4, *shape), dtype=torch.uint8), torch.zeros(4)), 0)
    assert torch.isfinite(loss) and len(model.replay_buffer) == 4


def test_box_is_checkpointed_and_vectors_of_other_sizes_have_no_likelihood():
    model = EBM((2,), hidden_dims=[16])
    model.fit_data_stats(torch.randn(100, 2) * 4 + 1)
    clone = EBM((2,), hidden_dims=[16])
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone.box_lo, model.box_lo)
    assert torch.equal(clone.standardize.std, model.standardize.std)
    assert EBM((5,), hidden_dims=[16]).likelihood_kind == "none"


def test_cifar10_experiment_composes():
    cfg = compose_train(["experiment=ebm_cifar10"])
    checked = validate(cfg)
    assert checked["model"].spectral_norm and checked["model"].langevin_steps == 60
    assert cfg.dataset._target_.endswith("CIFAR10DataModule")


def test_a_checkpoint_keeps_the_replay_buffer_for_an_evaluation_that_samples_from_it(tmp_path):
    """With sample_init=buffer, sample() continues the replay buffer's chains; the checkpoint had no buffer,
    so train=false sampled fresh noise chains: another sampler than the evaluation after training."""
    from genbench.trained_run import load_checkpoint

    cfg = compose_quiet_run(tmp_path, ["model=ebm", "dataset=gaussians8", "trainer=debug", "evaluate=false",
                                       "model.sample_init=buffer"])
    trained = run(cfg, tmp_path).model
    loaded = load_checkpoint(EBM, tmp_path / "checkpoints" / "last.ckpt", torch.device("cpu"))
    assert len(trained.replay_buffer) == 5 * 256  # trainer=debug: 5 batches of 256 chains
    assert torch.equal(loaded.replay_buffer, trained.replay_buffer)
    torch.manual_seed(0)
    again = loaded.sample(64)
    torch.manual_seed(0)
    assert torch.equal(again, trained.sample(64))
