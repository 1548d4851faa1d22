"""Samplers on a case with a known answer: Gaussian data N(m, s^2 I), whose exact noise prediction and
velocity are closed-form, so every error below is the sampler's own."""

import pytest
import torch

from genbench.errors import ConfigError
from genbench.models.diffusion import Diffusion
from genbench.models.diffusion_schedule import NoiseSchedule
from genbench.models.ebm import EBM
from genbench.models.flow_matching import FlowMatching
from genbench.models.samplers import (
    DIFFUSION_SAMPLERS,
    FLOW_SAMPLERS,
    FlowSampler,
    ddim_timesteps,
    diffusion_sampler,
    even_timesteps,
)

MEAN, STD = torch.tensor([1.0, -2.0]), 0.5
SCHEDULE = NoiseSchedule(1000, "linear")


def exact_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[eps | x_t] for data N(MEAN, STD^2 I)."""
    abar = SCHEDULE.at(SCHEDULE.alphas_cumprod, t, x)
    return (1 - abar).sqrt() * (x - abar.sqrt() * MEAN) / (abar * STD**2 + 1 - abar)


def exact_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[x_1 - x_0 | x_t] on the straight path x_t = (1 - t) x_0 + t x_1, x_0 ~ N(0, I), x_1 ~ data."""
    t = t[:, None]
    var = (1 - t) ** 2 + t**2 * STD**2
    return MEAN + (t * STD**2 - (1 - t)) / var * (x - t * MEAN)


@pytest.fixture(scope="module")
def noise() -> torch.Tensor:
    return torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).pow(2).sum(1).mean().sqrt().item()


def test_deterministic_diffusion_samplers_converge_to_the_probability_flow_map(noise):
    """With the exact eps, the probability-flow ODE maps x_T to m + s x_T (up to abar_T > 0): each
    deterministic sampler's error against that map falls as its NFE grows."""
    target = MEAN + STD * noise
    for name in ("ddim", "dpmpp_2m", "heun"):
        errors = {}
        for steps in (5, 10, 20, 50):
            sampler = diffusion_sampler(name, SCHEDULE, steps)
            errors[sampler.nfe()] = _rms(sampler.sample(exact_eps, noise), target)
        values = [errors[n] for n in sorted(errors)]
        print(name, {n: round(e, 4) for n, e in errors.items()})
        # Measured RMS at the most steps: ddim 0.040 (NFE 50), dpmpp_2m 0.0073 (49), heun 0.0086 (99).
        assert all(b < a for a, b in zip(values, values[1:], strict=False)), (name, errors)
        assert values[-1] < 0.05, (name, errors)


def test_dpm_solver_at_10_nfe_beats_ddim_at_10_nfe(noise):
    """Lu et al.'s claim on the exact model: measured RMS error 0.024 against DDIM's 0.18."""
    target = MEAN + STD * noise
    dpm, ddim = diffusion_sampler("dpmpp_2m", SCHEDULE, 10), diffusion_sampler("ddim", SCHEDULE, 10)
    dpm_error = _rms(dpm.sample(exact_eps, noise), target)
    ddim_error = _rms(ddim.sample(exact_eps, noise), target)
    assert dpm.nfe() == ddim.nfe() == 10
    assert dpm_error < ddim_error / 3, (dpm_error, ddim_error)


def test_ddpm_reaches_the_data_distribution_with_all_steps_and_respaced():
    """Ancestral sampling is stochastic: check the distribution. Measured std error 0.003 with all 1000
    steps, 0.03 with 100 respaced ones, 0.29 with 5."""
    torch.manual_seed(0)
    x_T = torch.randn(20000, 2)
    for steps, tolerance in ((1000, 0.015), (100, 0.05)):
        x = diffusion_sampler("ddpm", SCHEDULE, steps).sample(exact_eps, x_T)
        assert (x.mean(0) - MEAN).abs().max() < 0.02, (steps, x.mean(0))
        assert (x.std(0) - STD).abs().max() < tolerance, (steps, x.std(0))
    few = diffusion_sampler("ddpm", SCHEDULE, 5).sample(exact_eps, x_T)
    assert (few.std(0) - STD).abs().max() > 0.1  # few ancestral steps leave too much noise


def test_one_step_of_every_diffusion_sampler_predicts_x0_from_x_T(noise):
    """One network call at T-1, where x_T was drawn: with the exact eps it returns E[x_0 | x_T], which is
    MEAN up to sqrt(abar_T) (measured RMS 0.002). DDIM once called at t = 0 and returned the noise
    (RMS 2.6 from MEAN)."""
    for name in DIFFUSION_SAMPLERS:
        sampler = diffusion_sampler(name, SCHEDULE, 1)
        x = sampler.sample(exact_eps, noise)
        assert sampler.calls == 1 and _rms(x, MEAN.expand_as(x)) < 0.01, (name, _rms(x, MEAN.expand_as(x)))


def test_respacing_keeps_the_chosen_marginals_and_all_steps_is_the_schedule_itself():
    seq = even_timesteps(1000, 7)
    assert seq[0] == 0 and seq[-1] == 999 and len(set(seq)) == 7 and even_timesteps(1000, 1) == [999]
    assert SCHEDULE.respaced(list(range(1000))) is SCHEDULE
    spaced = SCHEDULE.respaced(seq)
    assert spaced.timesteps == 7
    assert torch.allclose(spaced.alphas_cumprod, SCHEDULE.alphas_cumprod[seq], rtol=1e-5)
    assert ddim_timesteps(50, 7) == [0, 7, 14, 21, 28, 35, 42] and ddim_timesteps(50, 50) == list(range(50))
    assert ddim_timesteps(50, 1) == [49]


def test_flow_samplers_converge_at_their_order(noise):
    """The exact velocity's ODE maps x_0 to m + s x_0 exactly. Doubling the steps halves Euler's error
    (first order; measured ratios 1.92, 1.96 from 8 to 16 to 32 steps) and divides midpoint's and Heun's by
    more (measured 7.9 and 3.6 from 16 to 32 steps; RMS at 32 steps: Euler 0.032, midpoint 5e-6, Heun
    3e-4)."""
    target = MEAN + STD * noise
    errors = {name: [_rms(FlowSampler(name, n).sample(exact_velocity, noise), target) for n in (8, 16, 32)]
              for name in FLOW_SAMPLERS}
    euler = errors["euler"]
    assert all(1.7 < a / b < 2.3 for a, b in zip(euler, euler[1:], strict=False)), euler
    assert euler[-1] < 0.04, euler
    for name in ("midpoint", "heun"):
        assert errors[name][1] / errors[name][2] > 3 and errors[name][2] < euler[2] / 50, errors


@pytest.mark.parametrize("steps", [1, 2, 7, 25])
def test_every_sampler_makes_the_calls_it_states(steps, noise):
    x = noise[:8]
    for name in DIFFUSION_SAMPLERS:
        sampler = diffusion_sampler(name, SCHEDULE, steps)
        sampler.sample(exact_eps, x)
        assert sampler.calls == sampler.nfe() >= 1, name
        if name == "heun":
            assert sampler.nfe() == 2 * steps - 1  # at these counts no two levels meet one timestep
    for name in FLOW_SAMPLERS:
        sampler = FlowSampler(name, steps)
        sampler.sample(exact_velocity, x)
        assert sampler.calls == sampler.nfe() == (1 if name == "euler" else 2) * steps, name


def _count_calls(net: torch.nn.Module) -> list[int]:
    calls = [0]
    net.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("family", ["diffusion", "flow_matching"])
def test_models_switch_samplers_and_their_nfe_is_the_networks_calls(family):
    torch.manual_seed(0)
    model = (Diffusion((2,), timesteps=50, sampling_steps=10, hidden_dim=16, depth=1) if family == "diffusion"
             else FlowMatching((2,), hidden_dim=16, depth=1)).eval()
    calls = _count_calls(model.ema)
    for name in model.samplers:
        for steps in (3, 10):
            model.use_sampler(name, steps)
            calls[0] = 0
            samples = model.sample(5)
            assert samples.shape == (5, 2) and torch.isfinite(samples).all()
            assert calls[0] == model.nfe(), (name, steps)
    with pytest.raises(ConfigError, match="sampler"):
        model.use_sampler("no_such_sampler", 3)
    if family == "diffusion":
        with pytest.raises(ConfigError, match="sampling_steps=51 must be <= timesteps=50"):
            model.use_sampler("ddim", 51)


def test_ebm_langevin_steps_at_sampling_are_its_sampler_knob_apart_from_training():
    model = EBM((2,), hidden_dims=[8], langevin_steps=10, sample_steps=100)
    model.use_sampler("langevin", 25)
    assert model.nfe() == 25 and model.hp.langevin_steps == 10
    with pytest.raises(ConfigError, match="Langevin"):
        model.use_sampler("ddim", 5)
