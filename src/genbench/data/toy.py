"""Two-dimensional toy distributions and their datamodule.

Each distribution is a small :class:`~genbench.schema.Schema` dataclass: its fields are the
``dataset.params`` a config may set, checked on construction. The two Gaussian mixtures and the
checkerboard have a closed-form density (``has_density``), which the metrics use as ground truth;
the mixtures also expose their ``modes`` and ``std`` for mode-coverage metrics.
"""

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from genbench.data.base import SPLITS, GenerativeDataModule, split_generator
from genbench.schema import Schema, check_params, param

Bounds = tuple[float, float, float, float]
NO_LABEL = -1


def _box(half_width: float, half_height: float | None = None) -> Bounds:
    half_height = half_width if half_height is None else half_height
    return (-half_width, half_width, -half_height, half_height)


@dataclass
class ToyDistribution(Schema):
    """A 2-D distribution: ``sample`` always, ``log_prob`` where ``has_density``.

    ``modes`` (K, 2) and ``std`` are set by the isotropic Gaussian mixtures and None elsewhere;
    ``bounds`` = (xmin, xmax, ymin, ymax) covers the data with a margin, for plots and integration grids.
    """

    has_density: ClassVar[bool] = False
    # Not annotated, so not dataclass fields: the mixtures make ``std`` a parameter, set ``modes``.
    modes = None
    std = None

    @property
    def bounds(self) -> Bounds:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` points, float32 (n, 2), and int64 labels (n,) (component, class or -1)."""
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} has no closed-form density; density metrics need gaussians8, "
            "gaussians25 or checkerboard"
        )


@dataclass
class _IsotropicMixture(ToyDistribution):
    """Equal-weight mixture of N(mode_k, std^2 I); subclasses place the modes in ``_place_modes``."""

    has_density: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.modes = self._place_modes()

    def _place_modes(self) -> Tensor:
        raise NotImplementedError

    @property
    def bounds(self) -> Bounds:
        reach = float(self.modes.abs().max()) + 6 * self.std
        return _box(reach + 0.1 * reach)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        component = torch.randint(len(self.modes), (n,), generator=generator)
        noise = torch.randn(n, 2, generator=generator)
        return self.modes[component] + self.std * noise, component

    def log_prob(self, x: Tensor) -> Tensor:
        sq_dist = (x.unsqueeze(1) - self.modes.to(x)).pow(2).sum(-1)  # (n, K)
        log_norm = math.log(2 * math.pi * self.std**2) + math.log(len(self.modes))
        return torch.logsumexp(-0.5 * sq_dist / self.std**2, dim=1) - log_norm


@dataclass
class GaussianRing(_IsotropicMixture):
    """``n_modes`` Gaussians evenly spaced on a circle (gaussians8: the PacGAN/VEEGAN setting)."""

    n_modes: int = param(8, ge=1)
    radius: float = param(1.0, gt=0)
    std: float = param(0.01, gt=0)

    def _place_modes(self) -> Tensor:
        angle = 2 * math.pi * torch.arange(self.n_modes) / self.n_modes
        return self.radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


@dataclass
class GaussianGrid(_IsotropicMixture):
    """``grid_size``^2 Gaussians on a centred square grid (gaussians25: modes at {-4,-2,0,2,4}^2)."""

    grid_size: int = param(5, ge=1)
    spacing: float = param(2.0, gt=0)
    std: float = param(0.05, gt=0)

    def _place_modes(self) -> Tensor:
        coords = (torch.arange(self.grid_size) - (self.grid_size - 1) / 2) * self.spacing
        return torch.cartesian_prod(coords, coords)


@dataclass
class Checkerboard(ToyDistribution):
    """Uniform on the black squares of an ``n_squares`` x ``n_squares`` board over [-h, h]^2.

    A square (column i, row j, counted from the lower left) is black when i + j is even. With the
    defaults (4 x 4 over [-4, 4]^2) the density is 1/32 on 8 black squares of area 4, zero elsewhere.
    """

    has_density: ClassVar[bool] = True
    n_squares: int = param(4, ge=1)
    half_width: float = param(4.0, gt=0)

    @property
    def _cell(self) -> float:
        return 2 * self.half_width / self.n_squares

    @property
    def _black(self) -> Tensor:
        cells = torch.cartesian_prod(torch.arange(self.n_squares), torch.arange(self.n_squares))
        return cells[cells.sum(1) % 2 == 0]  # (n_black, 2) of (i, j)

    @property
    def bounds(self) -> Bounds:
        return _box(1.05 * self.half_width)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        black = self._black
        square = black[torch.randint(len(black), (n,), generator=generator)]
        offset = torch.rand(n, 2, generator=generator)
        x = (square + offset) * self._cell - self.half_width
        return x, torch.full((n,), NO_LABEL, dtype=torch.int64)

    def log_prob(self, x: Tensor) -> Tensor:
        cell = torch.floor((x + self.half_width) / self._cell)
        inside = ((cell >= 0) & (cell < self.n_squares)).all(1)
        on_black = inside & (cell.sum(1) % 2 == 0)
        log_density = -math.log(len(self._black) * self._cell**2)
        return torch.where(on_black, torch.full_like(x[:, 0], log_density), -math.inf)


@dataclass
class Moons(ToyDistribution):
    """Two interleaved half circles (scikit-learn's make_moons geometry, centred at the origin).

    Without noise the data spans [-1.5, 1.5] x [-0.75, 0.75]; the label is the moon (0 upper, 1 lower).
    """

    noise: float = param(0.1, ge=0)

    @property
    def bounds(self) -> Bounds:
        margin = 4 * self.noise + 0.25
        return _box(1.5 + margin, 0.75 + margin)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        moon = torch.randint(2, (n,), generator=generator)
        t = math.pi * torch.rand(n, generator=generator)
        upper = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
        lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)
        x = torch.where(moon.unsqueeze(1) == 0, upper, lower) - torch.tensor([0.5, 0.25])
        return x + self.noise * torch.randn(n, 2, generator=generator), moon


@dataclass
class SwissRoll(ToyDistribution):
    """The 2-D swiss roll t (cos t, sin t) / 5, t ~ U[1.5 pi, 4.5 pi], plus N(0, noise^2) noise.

    The scale puts the noiseless roll in [-1.9, 2.6] x [-2.2, 2.9]; ``noise=0.2`` equals scikit-learn's
    ``make_swiss_roll(noise=1.0)`` divided by 5, the common FFJORD setting.
    """

    noise: float = param(0.2, ge=0)

    @property
    def bounds(self) -> Bounds:
        return _box(4.5 * math.pi / 5 + 4 * self.noise + 0.25)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
        x = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) / 5
        x = x + self.noise * torch.randn(n, 2, generator=generator)
        return x, torch.full((n,), NO_LABEL, dtype=torch.int64)


@dataclass
class Rings(ToyDistribution):
    """``n_rings`` concentric circles with radii max_radius * k / n_rings, equally many points on each.

    Points get N(0, noise^2) noise; the label is the ring index (0 innermost).
    """

    n_rings: int = param(4, ge=1)
    max_radius: float = param(3.0, gt=0)
    noise: float = param(0.08, ge=0)

    @property
    def bounds(self) -> Bounds:
        return _box(1.1 * self.max_radius + 4 * self.noise)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        ring = torch.randint(self.n_rings, (n,), generator=generator)
        radius = self.max_radius * (ring + 1).float() / self.n_rings
        angle = 2 * math.pi * torch.rand(n, generator=generator)
        x = radius.unsqueeze(1) * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        return x + self.noise * torch.randn(n, 2, generator=generator), ring


DISTRIBUTIONS: dict[str, type[ToyDistribution]] = {
    "gaussians8": GaussianRing,
    "gaussians25": GaussianGrid,
    "moons": Moons,
    "swissroll": SwissRoll,
    "checkerboard": Checkerboard,
    "rings": Rings,
}


def make_distribution(name: str, params: dict[str, Any]) -> ToyDistribution:
    """Build toy distribution ``name``; a wrong parameter raises ConfigError naming ``params.<key>``."""
    return check_params(DISTRIBUTIONS[name], params, "params")


@dataclass
class ToyDataConfig(Schema):
    """Options of a toy dataset; ``params`` is completed with the distribution's defaults."""

    name: str = param("gaussians8", choices=list(DISTRIBUTIONS))
    params: dict[str, Any] = param({})
    n_train: int = param(20000, ge=1)
    n_val: int = param(2000, ge=0)
    n_test: int = param(5000, ge=1)
    batch_size: int = param(256, ge=1)
    num_workers: int = param(0, ge=0)
    split_seed: int = param(0, ge=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.params = asdict(make_distribution(self.name, self.params))


class ToyDataModule(GenerativeDataModule):
    """Fresh draws from a toy distribution: each split from its own generator seeded by split_seed."""

    config_schema = ToyDataConfig
    data_shape = (2,)
    num_classes = None

    def __init__(self, **hparams: Any) -> None:
        super().__init__(**hparams)
        self.name = self.hp.name
        self.distribution = DISTRIBUTIONS[self.name](**self.hp.params)

    def build_splits(self) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
        sizes = {"train": self.hp.n_train, "val": self.hp.n_val, "test": self.hp.n_test}
        train, val, test = (
            TensorDataset(*self.distribution.sample(sizes[s], split_generator(self.hp.split_seed, s)))
            for s in SPLITS
        )
        return train, val, test
