"""scripts/bench_tf32_likelihood.py: its TF32 emulation reads float32 as tensor cores do, and on a CPU
(where torch's TF32 flags change nothing) it scores the same noise twice."""


import pytest
import torch


@pytest.fixture
def bench(script):
    return script("bench_tf32_likelihood")


def test_tf32_keeps_ten_mantissa_bits_rounded_to_even_or_truncated(bench):
    ulp = 2.0**-10  # of a TF32 value in [1, 2)
    x = torch.tensor([1 + ulp / 2, 1 + 1.5 * ulp, 1 + 0.75 * ulp, -(1 + 1.5 * ulp), 3.0, 0.0])
    assert bench.to_tf32(x, "round").tolist() == [1.0, 1 + 2 * ulp, 1 + ulp, -(1 + 2 * ulp), 3.0, 0.0]
    assert bench.to_tf32(x, "truncate").tolist() == [1.0, 1 + ulp, 1.0, -(1 + ulp), 3.0, 0.0]


def test_the_emulation_moves_a_flows_likelihood_and_torchs_flags_on_a_cpu_do_not(bench, tmp_path):
    (emulated,) = bench.main(["--datasets", "moons", "--steps", "30", "--emulate", "round",
                              "--out", str(tmp_path / "emulated")])
    assert emulated["emulated_calls"] > 0 and emulated["test_examples"] == 5000
    assert 0 < emulated["median_abs_change_bpd"] < 1e-2  # measured: 1.0e-3 after 1000 steps
    (flags,) = bench.main(["--datasets", "moons", "--steps", "30", "--out", str(tmp_path / "flags")])
    assert flags["max_abs_change_bpd"] == 0 and flags["fp32_bpd"] == emulated["fp32_bpd"]
