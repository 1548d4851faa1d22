"""scripts/bench_likelihood_grid.py: every grid scores the same examples from the same noise, so its
differences from the reference are the ODE solver's alone, and the model keeps its own grid."""

import argparse
import math
from dataclasses import replace

import pytest
import torch

from genbench.models.flow_matching import FlowMatching
from genbench.train import run
from tests.helpers import compose_train


@pytest.fixture
def bench(script):
    return script("bench_likelihood_grid")


def test_each_grid_scores_what_the_model_scores_on_that_grid_from_the_same_seed(bench):
    torch.manual_seed(0)
    model = FlowMatching((1, 8, 8), unet_channels=8, channel_mults=[1]).eval()
    with torch.no_grad():
        for p in model.ema.parameters():  # a velocity field far from zero, so the grids differ
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    kept = model.hp
    rows = bench.compare(model, x, [(2, 1.0), (2, 3.0)], reference=(4, 3.0), seed=5, batch=4)
    assert model.hp is kept
    assert [r["grid"] for r in rows] == ["2:1", "2:3", "4:3"] and [r["calls"] for r in rows] == [8, 8, 16]
    for row, power in zip(rows[:2], [1.0, 3.0], strict=True):
        model.hp = replace(kept, likelihood_steps=2, likelihood_step_power=power)
        torch.manual_seed(5)
        with torch.no_grad():
            direct = torch.cat([model.log_likelihood(b) for b in x.split(4)]).double()
        assert row["mean"] == pytest.approx((-direct / (64 * math.log(2))).mean().item(), abs=1e-9)
    assert rows[0]["mean"] != pytest.approx(rows[1]["mean"], abs=1e-6)  # the grid changed the solution
    with pytest.raises(ValueError, match="each grid once"):
        bench.compare(model, x, [(2, 1.0), (4, 3.0)], reference=(4, 3.0))


def test_the_script_reads_a_checkpoint_and_prints_a_table(bench, tmp_path, capsys):
    run(compose_train(["model=flow_matching", "dataset=digits", "trainer=debug", "logger=none",
                       "evaluate=false", f"paths.output_dir={tmp_path}"]), tmp_path)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    args = [f"ckpt_path={ckpt}", "model=flow_matching", "dataset=digits", f"paths.root_dir={tmp_path}",
            "--examples", "4", "--grids", "2:1", "2:3", "--reference", "4:3"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "4 test examples" in out and "mean bits/dim" in out and "minus the reference's (4:3)" in out
    assert "| 2:1 | 8 |" in out and "| 4:3 | 16 |" in out


@pytest.mark.parametrize("text", ["0:3", "32:0.5", "a:b"])
def test_a_grid_is_steps_and_a_power_of_at_least_one(bench, text):
    assert bench.parse_grid("32") == (32, 1.0) and bench.parse_grid("24:3") == (24, 3.0)
    with pytest.raises(argparse.ArgumentTypeError, match="32:3|>= 1"):
        bench.parse_grid(text)
