"""Samplers apart from any network (diffusers' separation of model and scheduler): a sampler steps a state
from noise to data given the model's prediction, and counts the network evaluations (NFE) it makes.

Diffusion (``predict(x_t, t)`` = the predicted noise eps, ``t`` a (B,) tensor of integer timesteps of a
:class:`~genbench.models.diffusion_schedule.NoiseSchedule`):

- ``ddpm``: ancestral sampling (Ho et al., 2020); with fewer steps than T, on the respaced process of
  evenly spaced timesteps (Nichol & Dhariwal, 2021). NFE = steps.
- ``ddim``: DDIM (Song et al., 2021, eq. 12) on Song et al.'s uniform skip 0, T/S, 2T/S, ...; ``eta = 0``
  is deterministic given x_T, ``eta = 1`` has DDPM's noise level. NFE = steps.
- ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al., 2022), the multistep second-order solver of the
  probability-flow ODE in data prediction, at ``steps`` levels evenly spaced in log-SNR from timestep T-1
  to 0 (DPM-Solver's ``logSNR`` spacing; evenly spaced timesteps make the last steps, in log-SNR, many
  times longer than the ones before, and the multistep extrapolation then loses to DDIM); first order on the
  first step and on the last (to the clean data). NFE = steps.
- ``heun``: Karras et al.'s (2022, EDM) Algorithm 1 on the VP schedule seen as sigma = sqrt(1 - abar) /
  sqrt(abar): Heun's method on dx/dsigma = eps in x / sqrt(abar), at ``steps`` noise levels spaced with
  rho = 7, then one Euler step to sigma = 0. NFE = 2 steps - 1.

Both put their levels on the network's nearest timesteps (as EDM does for discrete models); where two
levels meet one timestep they count once, so the NFE can fall below the figures above (``nfe`` says).

Flow matching (``predict(x, t)`` = the velocity, ``t`` a (B,) tensor of times in [0, 1], noise at 0):
``euler`` (NFE = steps), ``midpoint`` and ``heun`` (2 per step) on ``steps`` equal steps of [0, 1].
The same fixed-grid integrator (:func:`integrate`, also RK4) solves flow matching's likelihood ODE.
"""

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import Tensor

from genbench.models.diffusion_schedule import NoiseSchedule
from genbench.randomness import normal_like

Predict = Callable[[Tensor, Tensor], Tensor]  # (state (B, ...), time (B,)) -> the network's prediction
Derivative = Callable[[Tensor, float], Tensor]  # (state, time) -> d state / d time

DIFFUSION_SAMPLERS = ("ddpm", "ddim", "dpmpp_2m", "heun")
FLOW_SAMPLERS = ("euler", "midpoint", "heun")
ODE_METHODS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}  # method -> evaluations per step


def ode_step(f: Derivative, x: Tensor, s: float, s_next: float, method: str) -> Tensor:
    """One explicit Runge-Kutta step of dx/ds = f(x, s) from s to s_next."""
    h = s_next - s
    k1 = f(x, s)
    if method == "euler":
        return x + h * k1
    if method == "midpoint":
        return x + h * f(x + h / 2 * k1, s + h / 2)
    if method == "heun":
        return x + h / 2 * (k1 + f(x + h * k1, s_next))
    if method == "rk4":
        k2 = f(x + h / 2 * k1, s + h / 2)
        k3 = f(x + h / 2 * k2, s + h / 2)
        k4 = f(x + h * k3, s_next)
        return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    raise ValueError(f"unknown ODE method {method!r}; use one of {sorted(ODE_METHODS)}")


def integrate(f: Derivative, x: Tensor, grid: Sequence[float], method: str) -> Tensor:
    """x at grid[-1] from x at grid[0], one ``method`` step between consecutive points of ``grid``."""
    for s, s_next in zip(grid[:-1], grid[1:], strict=True):
        x = ode_step(f, x, s, s_next, method)
    return x


class Sampler(ABC):
    """Turns noise into a sample with a fixed number of ``steps``; ``calls`` counts the predictions the last
    :meth:`sample` asked for, which :meth:`nfe` states in advance."""

    def __init__(self, steps: int) -> None:
        if steps < 1:
            raise ValueError(f"a sampler needs steps >= 1, got {steps}")
        self.steps = steps
        self.calls = 0

    @abstractmethod
    def nfe(self) -> int:
        """Network evaluations of one :meth:`sample`."""

    @abstractmethod
    def _run(self, predict: Predict, x: Tensor) -> Tensor: ...

    @torch.no_grad()
    def sample(self, predict: Predict, x: Tensor) -> Tensor:
        """Step the starting noise ``x`` to a sample, calling ``predict`` :meth:`nfe` times."""
        self.calls = 0

        def counted(state: Tensor, time: Tensor) -> Tensor:
            self.calls += 1
            return predict(state, time)

        return self._run(counted, x)


# ---- diffusion ----------------------------------------------------------------------------------------
def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` evenly spaced timesteps from 0 (Song et al.'s uniform skip); all of 0..T-1 when steps = T.
    One step is at T-1, where x_T was drawn: the skip's only timestep, 0, would take the noise for x_0."""
    if steps == 1:
        return [timesteps - 1]
    return [i * timesteps // steps for i in range(steps)]


def even_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` increasing timesteps evenly spaced over 0..T-1, both ends included (T-1 alone for one step):
    the first network call then sees x_T at the timestep it was drawn for."""
    if steps == 1:
        return [timesteps - 1]
    return [round(i * (timesteps - 1) / (steps - 1)) for i in range(steps)]


class DiffusionSampler(Sampler):
    """A sampler of a diffusion with ``schedule``; ``clip`` bounds the predicted x_0 (images: 1)."""

    name: ClassVar[str]

    def __init__(self, schedule: NoiseSchedule, steps: int, clip: float | None = None) -> None:
        super().__init__(steps)
        if steps > schedule.timesteps:
            raise ValueError(f"{steps} sampling steps exceed the schedule's {schedule.timesteps} timesteps")
        self.schedule, self.clip = schedule, clip

    def nfe(self) -> int:
        return self.steps

    def _x0(self, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        x0 = self.schedule.predict_x0(x, t, eps)
        return x0.clamp(-self.clip, self.clip) if self.clip is not None else x0

    @staticmethod
    def _t(x: Tensor, timestep: int) -> Tensor:
        return torch.full((len(x),), timestep, device=x.device, dtype=torch.long)


class DDPM(DiffusionSampler):
    name = "ddpm"

    def _run(self, predict: Predict, x: Tensor) -> Tensor:
        seq = even_timesteps(self.schedule.timesteps, self.steps)
        spaced = self.schedule.respaced(seq)
        for k in reversed(range(len(seq))):
            mean = spaced.reverse_mean(x, self._t(x, k), predict(x, self._t(x, seq[k])), self.clip)
            x = mean + spaced.reverse_variance[k].sqrt() * normal_like(x) if k > 0 else mean
        return x


class DDIM(DiffusionSampler):
    name = "ddim"

    def __init__(self, schedule: NoiseSchedule, steps: int, clip: float | None = None,
                 eta: float = 0.0) -> None:
        super().__init__(schedule, steps, clip)
        self.eta = eta

    def _run(self, predict: Predict, x: Tensor) -> Tensor:
        seq = ddim_timesteps(self.schedule.timesteps, self.steps)
        abar = self.schedule.alphas_cumprod
        for i in reversed(range(len(seq))):
            t = self._t(x, seq[i])
            a_t = abar[seq[i]]
            a_prev = abar[seq[i - 1]] if i > 0 else torch.ones_like(a_t)
            eps = predict(x, t)
            x0 = self._x0(x, t, eps)
            sigma = self.eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp_min(0).sqrt() * eps
            if self.eta > 0 and i > 0:
                x = x + sigma * normal_like(x)
        return x


def log_sigmas(schedule: NoiseSchedule) -> Tensor:
    """log sigma_t = log sqrt((1 - abar_t) / abar_t) = -log-SNR / 2 of each timestep (float64, increasing)."""
    abar = schedule.alphas_cumprod.double().cpu()
    return 0.5 * (torch.log1p(-abar) - torch.log(abar))


def nearest_timesteps(schedule: NoiseSchedule, levels: Sequence[float]) -> list[int]:
    """The distinct timesteps whose log sigma is nearest to each of ``levels``, decreasing."""
    table = log_sigmas(schedule)
    return sorted({int((table - level).abs().argmin()) for level in levels}, reverse=True)


class DPMSolverPP2M(DiffusionSampler):
    """Lu et al. (2022), Algorithm 2: x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (e^{-h} - 1) D,
    h = lambda_{i+1} - lambda_i (lambda = log alpha / sigma), D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1} with
    r = h_{i-1} / h (D = x0_i on the first step). The last step, to sigma = 0, returns x0."""

    name = "dpmpp_2m"

    def timesteps(self) -> list[int]:
        table = log_sigmas(self.schedule)
        hi, lo = table[-1].item(), table[0].item()
        steps = max(self.steps - 1, 1)
        return nearest_timesteps(self.schedule, [hi + i / steps * (lo - hi) for i in range(self.steps)])

    def nfe(self) -> int:
        return len(self.timesteps())

    def _run(self, predict: Predict, x: Tensor) -> Tensor:
        seq = self.timesteps()
        abar = self.schedule.alphas_cumprod[seq]
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        lam = torch.log(alpha) - torch.log(sigma)
        previous, h_previous = None, None
        for i, timestep in enumerate(seq):
            x0 = self._x0(x, self._t(x, timestep), predict(x, self._t(x, timestep)))
            if i + 1 == len(seq):
                break  # the step to sigma = 0 lands on x0
            h = lam[i + 1] - lam[i]
            d = x0
            if previous is not None:
                r = h_previous / h
                d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * previous
            x = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * torch.expm1(-h) * d
            previous, h_previous = x0, h
        return x0


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> list[float]:
    """Karras et al.'s noise levels: (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho."""
    if steps == 1:
        return [sigma_max]
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(hi + i / (steps - 1) * (lo - hi)) ** rho for i in range(steps)]


class EDMHeun(DiffusionSampler):
    """Heun's method on x^ = x / sqrt(abar) = x0 + sigma eps, whose probability-flow ODE is dx^/dsigma = eps
    (Karras et al., eq. 4 with s = 1); the network sees x = x^ / sqrt(1 + sigma^2) at its timestep."""

    name = "heun"

    def timesteps(self) -> list[int]:
        table = log_sigmas(self.schedule)
        levels = karras_sigmas(table[0].exp().item(), table[-1].exp().item(), self.steps)
        return nearest_timesteps(self.schedule, [math.log(level) for level in levels])

    def nfe(self) -> int:
        return 2 * len(self.timesteps()) - 1

    def _run(self, predict: Predict, x: Tensor) -> Tensor:
        seq = self.timesteps()
        abar = self.schedule.alphas_cumprod
        sigmas = [((1 - abar[t]) / abar[t]).sqrt().item() for t in seq] + [0.0]
        timestep = dict(zip(sigmas, seq, strict=False))

        def dx_dsigma(x_hat: Tensor, s: float) -> Tensor:
            t = self._t(x_hat, timestep[s])
            x_t = x_hat / math.sqrt(1 + s * s)
            eps = predict(x_t, t)
            if self.clip is None:
                return eps
            return (x_hat - self._x0(x_t, t, eps)) / s  # the slope towards the clipped x0

        x_hat = x * math.sqrt(1 + sigmas[0] ** 2)
        x_hat = integrate(dx_dsigma, x_hat, sigmas[:-1], "heun")
        return integrate(dx_dsigma, x_hat, sigmas[-2:], "euler")


def diffusion_sampler(name: str, schedule: NoiseSchedule, steps: int, clip: float | None = None,
                      eta: float = 0.0) -> DiffusionSampler:
    """The diffusion sampler called ``name`` (one of :data:`DIFFUSION_SAMPLERS`)."""
    if name == "ddim":
        return DDIM(schedule, steps, clip, eta)
    classes = {cls.name: cls for cls in (DDPM, DPMSolverPP2M, EDMHeun)}
    if name not in classes:
        raise ValueError(f"unknown diffusion sampler {name!r}; use one of {list(DIFFUSION_SAMPLERS)}")
    return classes[name](schedule, steps, clip)


# ---- flow matching ------------------------------------------------------------------------------------
class FlowSampler(Sampler):
    """Integrates dx/dt = v(x, t) from the noise at t = 0 to data at t = 1 with ``steps`` equal steps."""

    def __init__(self, method: str, steps: int) -> None:
        super().__init__(steps)
        if method not in FLOW_SAMPLERS:
            raise ValueError(f"unknown flow sampler {method!r}; use one of {list(FLOW_SAMPLERS)}")
        self.name = self.method = method

    def nfe(self) -> int:
        return ODE_METHODS[self.method] * self.steps

    def _run(self, predict: Predict, x: Tensor) -> Tensor:
        grid = [i / self.steps for i in range(self.steps + 1)]
        return integrate(lambda z, t: predict(z, torch.full((len(z),), t, device=z.device)), x, grid,
                         self.method)
