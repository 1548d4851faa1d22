"""The GPU speed switches: off on a CPU unless asked for, the same math when on, recorded with the run."""

import pytest
import torch

from genbench.performance import resolve
from genbench.train import run
from tests.helpers import compose_train

SWITCHES_ON = ["performance.tf32=true", "performance.channels_last=true", "performance.fused_optimizer=true"]


def test_auto_turns_a_switch_on_for_cuda_only_and_compile_stays_off():
    assert resolve("auto", torch.device("cuda", 0)) and not resolve("auto", torch.device("cpu"))
    assert resolve("true", torch.device("cpu")) and not resolve("false", torch.device("cuda"))
    assert not resolve("auto", torch.device("cuda"), auto=False)


def _digits_vae(tmp_path, *overrides: str):
    cfg = compose_train(["dataset=digits", "debug=default", "evaluate=false", "trainer.max_epochs=null",
                         "trainer.limit_train_batches=1.0", "trainer.max_steps=6",
                         f"paths.output_dir={tmp_path}", *overrides])
    return run(cfg, tmp_path)


def test_speed_switches_train_the_same_model_and_are_recorded(tmp_path):
    plain = _digits_vae(tmp_path / "plain")
    fast = _digits_vae(tmp_path / "fast", *SWITCHES_ON)
    assert plain.metrics["train_speedups"] == "none" and plain.metrics["train_precision"] == "32-true"
    assert fast.metrics["train_speedups"] == "tf32,channels_last,fused_optimizer"
    conv = next(m for m in fast.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # NHWC kernels and one fused Adam step per group instead of a loop: the same updates up to rounding,
    # which Adam's normalization can blow up to a fraction of a step (lr 1e-3) where a gradient is near 0.
    # Measured after 6 steps: at most 2.8e-4 with channels_last, 2.3e-7 with the fused Adam alone.
    for (name, p), q in zip(plain.model.named_parameters(), fast.model.parameters(), strict=True):
        assert (p - q).abs().max() < 1e-3, name


@pytest.mark.parametrize("family", ["vae", "diffusion"])
def test_compile_wraps_each_network_in_place(family, tmp_path, monkeypatch):
    compiled = []
    record = lambda self, *args, **kwargs: compiled.append(type(self).__name__)  # noqa: E731
    monkeypatch.setattr(torch.nn.Module, "compile", record)
    result = _digits_vae(tmp_path, f"model={family}", "performance.compile=true", "trainer.max_steps=1")
    assert result.metrics["train_speedups"] == "compile"
    assert compiled == [type(child).__name__ for child in result.model.children()]
