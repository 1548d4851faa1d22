"""The energy distance agrees with scipy's 1-D reference and separates distributions."""

import pytest
import torch
from scipy.stats import energy_distance as scipy_energy_distance

from genbench.evaluation.distances import energy_distance


def test_energy_distance_matches_scipy_in_one_dimension():
    torch.manual_seed(0)
    x, y = torch.randn(300, 1), 0.5 + 2 * torch.randn(200, 1)
    # scipy returns sqrt(2 E|X-Y| - E|X-X'| - E|Y-Y'|) for 1-D samples.
    assert energy_distance(x, y) == pytest.approx(scipy_energy_distance(x[:, 0], y[:, 0]) ** 2, rel=1e-9)


def test_energy_distance_is_small_for_equal_laws_and_grows_with_a_shift():
    torch.manual_seed(0)
    x, x2 = torch.randn(1000, 2), torch.randn(1000, 2)
    shifts = [energy_distance(x, x2 + torch.tensor([s, 0.0])) for s in (0.0, 0.5, 1.0, 2.0)]
    assert shifts[0] < 0.01 and shifts == sorted(shifts) and shifts[-1] > 1.0
